#!/usr/bin/env bash
# Installs what scripts/build-node-binaries.sh needs to cross-build the
# in-image binaries (kiln-init, kiln-firstboot, k3s-double) as static
# executables for aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf
# on a Debian bookworm amd64 host. Idempotent: safe to run again.
#
#   scripts/setup-cross.sh [--with-qemu]
#
# --with-qemu also installs qemu-user, to run the cross binaries here.
#
# Why Debian's Rust and not rustup's: rustup can only fetch the host target
# here, while Debian ships the standard library for arm64 and armhf as
# multi-arch packages (libstd-rust-web-dev:arm64 / :armhf, installed under
# /usr/lib/rustlib/<triple>/lib). They must match the compiler exactly, so the
# script pins one version of rustc-web, cargo-web and the three
# libstd-rust-web-dev packages: the newest $KILN_CROSS_RUST_SERIES.* (default
# 1.85) that exists for amd64, arm64 and armhf alike. The security suite
# carries newer versions for amd64 only, so apt's own candidate is not used.
# KILN_CROSS_RUST_VERSION=<exact Debian version> overrides the choice.
#
# Debian's rustc-web/cargo-web put /usr/bin/rustc and /usr/bin/cargo in
# place; rustup's ~/.cargo/bin comes first on PATH and keeps being the
# default. build-node-binaries.sh calls /usr/bin/cargo with RUSTC set.
#
# Multi-arch libraries must have the same version on every architecture.
# When an amd64 library has a security update that arm64/armhf lack (today:
# liblzma5), the amd64 package is moved to the version all arches share
# (a downgrade, so --allow-downgrades), with any installed package of the
# same source that depends on exactly that version (liblzma-dev).
set -euo pipefail
export LC_ALL=C

SERIES=${KILN_CROSS_RUST_SERIES:-1.85}
PIN=${KILN_CROSS_RUST_VERSION:-}
FOREIGN_ARCHES=(arm64 armhf)
TRIPLES=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
LINKERS=(aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc)
WITH_QEMU=0

for arg in "$@"; do
  case "$arg" in
    --with-qemu) WITH_QEMU=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-cross: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { echo "setup-cross: $*" >&2; }
die() { echo "setup-cross: error: $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo)"
  SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
  || die "needs a Debian host with dpkg and apt-get"
NATIVE=$(dpkg --print-architecture)
[ "$NATIVE" = amd64 ] || die "expects an amd64 host, this one is $NATIVE"
if [ -r /etc/os-release ]; then
  . /etc/os-release
  [ "${VERSION_CODENAME:-}" = bookworm ] \
    || say "warning: written for Debian bookworm, this is ${PRETTY_NAME:-unknown}"
fi
if dpkg-query -W -f='${Status}' rustup 2>/dev/null | grep -q 'install ok installed'; then
  die "Debian's rustup package is installed and conflicts with rustc-web; remove it (a rustup in ~/.cargo is fine)"
fi

# 1. Foreign architectures, then indexes for them.
added=0
for a in "${FOREIGN_ARCHES[@]}"; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    say "adding dpkg architecture $a"
    as_root dpkg --add-architecture "$a"
    added=1
  fi
done

# A mirror may serve one index mid-sync (e.g. bookworm-security armhf:
# "File has unexpected size"), and apt-get update then exits 100 although it
# fetched and uses every other index. Retry once, then go on with a warning
# naming the failed indexes; what is really missing is caught below.
update_log=$(mktemp)
trap 'rm -f "$update_log"' EXIT
apt_update() {
  local try
  for try in 1 2; do
    if apt_get update -q >"$update_log" 2>&1; then return 0; fi
    [ "$try" = 1 ] && { say "apt-get update failed, retrying in 5 s"; sleep 5; }
  done
  say "warning: apt-get update reported errors; going on with the indexes it fetched:"
  grep -E '^(Err:|E: Failed to fetch)' "$update_log" | sed 's/^/  /' >&2 || true
}
say "apt-get update$([ $added = 1 ] && echo ' (new architectures)')"
apt_update

# 2. Pick the Rust version every architecture has. apt-cache takes a second
# or two per call with three architectures, so ask once for everything and
# keep a table of "name arch version" lines.
madison_table() { # pkg:arch... -> "name arch version", one a line
  apt-cache madison "$@" 2>/dev/null | awk -F'|' '{
    n = $1; gsub(/ /, "", n); sub(/:.*/, "", n)
    v = $2; gsub(/ /, "", v)
    k = split($3, w, " ")
    if (w[k] == "Packages") print n, w[k-1], v
  }' | sort -u
}
versions_in() { # table name arch -> the versions apt knows, one a line
  awk -v n="$2" -v a="$3" '$1 == n && $2 == a { print $3 }' <<<"$1" | sort -u
}
common_versions() { # table name arch... -> versions that every arch has
  local table=$1 name=$2 common a
  shift 2
  common=$(versions_in "$table" "$name" "$1")
  shift
  for a in "$@"; do
    common=$(comm -12 <(printf '%s\n' "$common") <(versions_in "$table" "$name" "$a"))
  done
  printf '%s\n' "$common" | sed '/^$/d'
}
newest() { # versions on stdin -> the newest by dpkg's order
  local best="" v
  while read -r v; do
    [ -n "$v" ] || continue
    if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done
  printf '%s\n' "$best"
}
ALL_ARCHES=("$NATIVE" "${FOREIGN_ARCHES[@]}")
specs=(rustc-web:"$NATIVE" cargo-web:"$NATIVE")
for a in "${ALL_ARCHES[@]}"; do specs+=("libstd-rust-web-dev:$a"); done
rust_table=$(madison_table "${specs[@]}")
common=$(comm -12 <(versions_in "$rust_table" rustc-web "$NATIVE") \
                  <(versions_in "$rust_table" cargo-web "$NATIVE"))
common=$(comm -12 <(printf '%s\n' "$common") \
                  <(common_versions "$rust_table" libstd-rust-web-dev "${ALL_ARCHES[@]}"))
if [ -z "$PIN" ]; then
  PIN=$(printf '%s\n' "$common" | grep -E "^${SERIES//./\\.}\." | newest || true)
  if [ -z "$PIN" ]; then
    say "versions apt knows (package arch version):"
    printf '  %s\n' "$rust_table" >&2
    die "no version $SERIES.* of Debian's Rust exists for ${ALL_ARCHES[*]} alike (did apt-get update fetch the arm64/armhf indexes?)"
  fi
elif ! printf '%s\n' "$common" | grep -qxF "$PIN"; then
  die "KILN_CROSS_RUST_VERSION=$PIN is not available for rustc-web, cargo-web and libstd-rust-web-dev on ${ALL_ARCHES[*]}"
fi
say "Debian Rust version: $PIN"

# 3. Align multi-arch libraries whose amd64 version the foreign arches lack.
installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
ALIGN=()
foreign_specs=()
for a in "${FOREIGN_ARCHES[@]}"; do foreign_specs+=("libstd-rust-web-dev:$a=$PIN"); done
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${foreign_specs[@]}" 2>/dev/null \
  | grep -E '^[^ <][^ ]*:[a-z0-9]+$' | sed 's/:[^:]*$//' | sort -u)
# Only libraries installed for the host arch can clash.
native_libs=()
for n in $closure; do
  [ -n "$(installed_version "$n:$NATIVE")" ] && native_libs+=("$n")
done
lib_specs=()
for n in ${native_libs[@]+"${native_libs[@]}"}; do
  for a in "${ALL_ARCHES[@]}"; do lib_specs+=("$n:$a"); done
done
lib_table=""
[ ${#lib_specs[@]} -gt 0 ] && lib_table=$(madison_table "${lib_specs[@]}")
for n in ${native_libs[@]+"${native_libs[@]}"}; do
  have=$(installed_version "$n:$NATIVE")
  shared=$(common_versions "$lib_table" "$n" "${ALL_ARCHES[@]}")
  printf '%s\n' "$shared" | grep -qxF "$have" && continue
  want=$(printf '%s\n' "$shared" | newest)
  [ -n "$want" ] || die "$n: $have is installed for $NATIVE, and no version exists for ${ALL_ARCHES[*]} alike"
  say "aligning $n: $NATIVE has $have, ${FOREIGN_ARCHES[*]} have $want"
  ALIGN+=("$n:$NATIVE=$want")
  # Installed packages of the same source that depend on exactly $have
  # (liblzma-dev on liblzma5) follow, or apt would remove them.
  src=$(dpkg-query -W -f='${source:Package}' "$n:$NATIVE")
  while read -r b bsrc bver; do
    [ "$bsrc" = "$src" ] && [ "$bver" = "$have" ] || continue
    [ "${b%%:*}" = "$n" ] && continue
    dpkg-query -W -f='${Depends}' "$b" | grep -qF "$n (= $have)" || continue
    if apt-cache madison "${b%%:*}:$NATIVE" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -qxF "$want"; then
      say "  and ${b%%:*}: $have -> $want"
      ALIGN+=("${b%%:*}:$NATIVE=$want")
    fi
  done < <(dpkg-query -W -f='${binary:Package} ${source:Package} ${Version}\n' 2>/dev/null \
             | awk -v arch=":$NATIVE" '$1 !~ /:/ || $1 ~ arch"$"')
done

# 4. Install.
PKGS=(
  "rustc-web=$PIN" "cargo-web=$PIN" "libstd-rust-web-dev:$NATIVE=$PIN"
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
  libc6-dev-arm64-cross libc6-dev-armhf-cross
  file
)
for a in "${FOREIGN_ARCHES[@]}"; do PKGS+=("libstd-rust-web-dev:$a=$PIN"); done
[ "$WITH_QEMU" = 1 ] && PKGS+=(qemu-user)
PKGS+=(${ALIGN[@]+"${ALIGN[@]}"})
say "apt-get install ${PKGS[*]}"
apt_get install -y -q --no-install-recommends --allow-downgrades "${PKGS[@]}" \
  || die "apt-get install failed (see above)"

# 5. Check what the build needs, and print the versions.
missing=()
for f in /usr/bin/cargo /usr/bin/rustc; do [ -x "$f" ] || missing+=("$f"); done
rustc_v=$(/usr/bin/rustc --version 2>/dev/null || true)
case "$rustc_v" in "rustc $SERIES."*) ;; *) missing+=("/usr/bin/rustc $SERIES.* (got: ${rustc_v:-none})") ;; esac
sysroot=$(/usr/bin/rustc --print sysroot 2>/dev/null || echo /usr)
for i in "${!TRIPLES[@]}"; do
  t=${TRIPLES[$i]}
  libdir="$sysroot/lib/rustlib/$t/lib"
  ls "$libdir"/libstd-*.rlib >/dev/null 2>&1 || missing+=("$libdir/libstd-*.rlib")
  command -v "${LINKERS[$i]}" >/dev/null 2>&1 || missing+=("${LINKERS[$i]}")
done
for d in /usr/aarch64-linux-gnu/lib/libc.a /usr/arm-linux-gnueabihf/lib/libc.a; do
  [ -f "$d" ] || missing+=("$d (static glibc)")
done

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
echo "Debian Rust for cross builds:"
echo "  $(/usr/bin/rustc --version 2>/dev/null || echo 'rustc: missing')  (/usr/bin/rustc)"
echo "  $(/usr/bin/cargo --version 2>/dev/null || echo 'cargo: missing')  (/usr/bin/cargo)"
for p in rustc-web cargo-web "libstd-rust-web-dev:amd64" "libstd-rust-web-dev:arm64" \
         "libstd-rust-web-dev:armhf" gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
         libc6-dev-arm64-cross libc6-dev-armhf-cross "liblzma5:amd64"; do
  printf '  %-28s %s\n' "$p" "$(pkgver "$p")"
done
[ "$WITH_QEMU" = 1 ] && printf '  %-28s %s\n' qemu-user "$(pkgver qemu-user)"
for l in "${LINKERS[@]}"; do
  echo "  $l: $("$l" --version 2>/dev/null | head -1 || echo missing)"
done
for t in "${TRIPLES[@]}"; do echo "  std for $t: $sysroot/lib/rustlib/$t/lib"; done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-cross: error: the cross build still lacks:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
say "ready: scripts/build-node-binaries.sh aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf"
