#!/usr/bin/env bash
# Builds the in-image binaries -- kiln-init, kiln-firstboot (package
# kiln-node, firstboot/) and k3s-double (tests/k3s-double) -- as fully static
# executables for one target, with the workspace's `node` profile (the one
# builder/src/nodebin.rs uses; plain release if Cargo.toml has none).
#
#   scripts/build-node-binaries.sh TARGET [OUT_DIR]
#
# TARGET: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu or
# armv7-unknown-linux-gnueabihf (or the Debian names amd64, arm64, armhf).
# OUT_DIR: the cargo target directory; default ${CARGO_TARGET_DIR:-target}/node
# (relative to the workspace root when CARGO_TARGET_DIR is unset).
# The binaries land in OUT_DIR/TARGET/node/, the same place kiln's own build
# of them uses, and that directory can be given to kiln as KILN_NODE_BIN_DIR.
# Prints the three binaries' absolute paths on stdout, one a line; progress
# and timing go to stderr.
#
# x86_64 uses $CARGO or the cargo on PATH (rustup). aarch64 and armv7 use
# Debian's /usr/bin/cargo and /usr/bin/rustc 1.85, whose standard library for
# those targets comes from libstd-rust-web-dev:arm64/:armhf: run
# scripts/setup-cross.sh once first. rustup's cargo cannot do it: only the
# host target's std is available to it here. KILN_CROSS_RUST_BIN names
# another directory holding Debian's cargo, rustc and rustdoc.
#
# This script is the one place that knows the per-target environment:
# `kiln build` (builder/src/nodebin.rs) runs it too. Exit status 3 means the
# cross toolchain is missing (the last line says what is missing and to run
# scripts/setup-cross.sh); any other failure is the build's own.
#
# Linker and flags are passed as CARGO_TARGET_<TRIPLE>_LINKER/_RUSTFLAGS
# environment variables rather than a .cargo/config.toml: the cross build
# needs environment anyway (RUSTC=/usr/bin/rustc, since rustup's proxies come
# first on PATH), and a workspace config file would also change every other
# cargo run in the tree. Target-specific rustflags apply to the target's
# artifacts only (cargo builds with --target), so proc-macros and build
# scripts stay ordinary host code. "-C target-feature=+crt-static" links glibc
# statically (static-pie on x86_64).
#
# The build is --locked: cargo never rewrites Cargo.lock here.
set -euo pipefail

die() { echo "build-node-binaries: error: $*" >&2; exit 1; }
missing() { echo "build-node-binaries: error: $*; run scripts/setup-cross.sh (as root) first" >&2; exit 3; }
say() { echo "build-node-binaries: $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 TARGET [OUT_DIR]"

case "$1" in
  x86_64-unknown-linux-gnu|x86_64|amd64) TARGET=x86_64-unknown-linux-gnu ;;
  aarch64-unknown-linux-gnu|aarch64|arm64) TARGET=aarch64-unknown-linux-gnu ;;
  armv7-unknown-linux-gnueabihf|armv7|armhf) TARGET=armv7-unknown-linux-gnueabihf ;;
  *) die "unsupported target '$1' (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
if [ $# -ge 2 ]; then
  TARGET_DIR=$(abspath "$2")
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
  TARGET_DIR=$(abspath "$CARGO_TARGET_DIR")/node
else
  TARGET_DIR=$ROOT/target/node
fi

PROFILE=release
grep -q '^\[profile\.node\]' "$ROOT/Cargo.toml" && PROFILE=node
TRIPLE_ENV=$(printf '%s' "$TARGET" | tr 'a-z-' 'A-Z_')
STATIC_FLAGS="-C target-feature=+crt-static"

# Flags that would override the target-specific ones.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET

case "$TARGET" in
  x86_64-unknown-linux-gnu)
    CARGO=${CARGO:-$(command -v cargo)} || die "no cargo on PATH (install rustup)"
    ;;
  *)
    case "$TARGET" in
      aarch64-*) LINKER=aarch64-linux-gnu-gcc GNU_TRIPLE=aarch64-linux-gnu ;;
      armv7-*) LINKER=arm-linux-gnueabihf-gcc GNU_TRIPLE=arm-linux-gnueabihf ;;
    esac
    BIN=${KILN_CROSS_RUST_BIN:-/usr/bin}
    CARGO=$BIN/cargo
    [ -x "$BIN/cargo" ] || missing "$BIN/cargo (Debian's cargo-web) is missing"
    [ -x "$BIN/rustc" ] || missing "$BIN/rustc (Debian's rustc-web) is missing"
    sysroot=$("$BIN/rustc" --print sysroot)
    ls "$sysroot/lib/rustlib/$TARGET/lib"/libstd-*.rlib >/dev/null 2>&1 \
      || missing "no standard library for $TARGET in $sysroot/lib/rustlib/$TARGET/lib"
    command -v "$LINKER" >/dev/null 2>&1 || missing "linker $LINKER is missing"
    [ -f "/usr/$GNU_TRIPLE/lib/libc.a" ] || missing "static glibc /usr/$GNU_TRIPLE/lib/libc.a is missing"
    # Debian's cargo must drive Debian's rustc, not rustup's proxy on PATH.
    export RUSTC=$BIN/rustc RUSTDOC=$BIN/rustdoc
    unset RUSTUP_TOOLCHAIN
    export "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$LINKER"
    ;;
esac
export "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=$STATIC_FLAGS"
export CARGO_TARGET_DIR=$TARGET_DIR

say "$("$CARGO" --version) with $(${RUSTC:-rustc} --version), target $TARGET, profile $PROFILE, into $TARGET_DIR"
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
(cd "$ROOT" && "$CARGO" build --locked --profile "$PROFILE" --target "$TARGET" \
   -p kiln-node -p k3s-double --bins) 2>&1 | tee "$log" >&2
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  if grep -q 'requires rustc' "$log"; then
    say "a package above needs a newer rustc than $(${RUSTC:-rustc} --version);"
    say "the in-image crates must stay buildable with Debian's 1.85: pin a dependency"
    say "to its newest version with rust-version <= 1.85 (cargo update -p NAME --precise VER)"
  fi
  die "cargo build failed for $TARGET (exit $rc)"
fi
elapsed=$(( $(date +%s) - start ))

BINS=()
for b in kiln-init kiln-firstboot k3s-double; do
  BINS+=("$TARGET_DIR/$TARGET/$PROFILE/$b")
done

# Check that the result is what the images need: no interpreter, no shared
# libraries.
for f in "${BINS[@]}"; do
  [ -x "$f" ] || die "expected $f after the build"
  if command -v readelf >/dev/null 2>&1; then
    if readelf -lW "$f" | grep -q 'INTERP' || readelf -dW "$f" | grep -q '(NEEDED)'; then
      die "$f is dynamically linked"
    fi
  elif command -v file >/dev/null 2>&1; then
    file -b "$f" | grep -qE 'statically linked|static-pie linked' || die "$f is not static: $(file -b "$f")"
  fi
done

say "built in ${elapsed}s (KILN_NODE_BIN_DIR=$TARGET_DIR/$TARGET/$PROFILE):"
for f in "${BINS[@]}"; do
  if command -v file >/dev/null 2>&1; then say "  $(file "$f")"; fi
done
printf '%s\n' "${BINS[@]}"
