#!/usr/bin/env bash
# Installs what kiln needs on a Debian bookworm (or Ubuntu) host to build
# images and boot them under QEMU. Idempotent: safe to run again.
#
# Why backports: this machine kind ships qemu-utils 10.0 from
# bookworm-backports, and bookworm's own qemu-system 7.2 conflicts with it.
# The backports source reuses the host's own mirror and keyring (read from
# its deb822 sources), so no mirror host is named here.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }
SUDO=$(need_root)

. /etc/os-release
codename=${VERSION_CODENAME:-}

add_backports() {
  local src=/etc/apt/sources.list.d/debian.sources
  local out=/etc/apt/sources.list.d/kiln-backports.sources
  [ "$codename" = bookworm ] || return 0
  [ -f "$out" ] && return 0
  if [ ! -f "$src" ]; then
    echo "setup: no $src; add a bookworm-backports source by hand" >&2
    return 0
  fi
  # First stanza that lists the main suite: keep its URIs and Signed-By.
  local uris keyring
  uris=$(awk '/^URIs:/{print $2; exit}' "$src")
  keyring=$(awk '/^Signed-By:/{print $2; exit}' "$src")
  $SUDO tee "$out" >/dev/null <<SRC
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SRC
}

add_backports
$SUDO apt-get update -q || echo "setup: apt-get update reported errors; continuing with the indexes it fetched" >&2

# Firmware the boards boot with under QEMU: OVMF (qemu-x86_64), AAVMF from
# qemu-efi-aarch64 (qemu-aarch64), U-Boot for QEMU's virt machine from
# u-boot-qemu (qemu-armv7). Backports has none of them; bookworm's own work
# with QEMU 10.
# The OVA tests: qemu-img (qemu-utils) checks the VMDK, xmllint
# (libxml2-utils) the descriptor, xorriso makes the OVF environment CD.
# `kiln bench --peer` times the pipelines a user would otherwise script:
# mmdebstrap and mkosi, then mksquashfs (squashfs-tools; the Pi tests list
# the images' roots with its unsquashfs).
pkgs_base="e2fsprogs kmod ca-certificates xz-utils zstd ovmf qemu-efi-aarch64 u-boot-qemu libxml2-utils xorriso"
pkgs_base="$pkgs_base mmdebstrap mkosi squashfs-tools"
# bmap-tools: the Pi tests flash their images with bmaptool and kiln's .bmap.
pkgs_base="$pkgs_base bmap-tools"
pkgs_qemu="qemu-system-x86 qemu-system-arm qemu-utils"
if [ "$codename" = bookworm ]; then
  $SUDO apt-get install -y -q --no-install-recommends $pkgs_base
  $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports $pkgs_qemu
else
  $SUDO apt-get install -y -q --no-install-recommends $pkgs_base $pkgs_qemu
fi
echo "setup: host ready"
