//! kiln: bakes immutable edge OS images with k3s inside.
//!
//! The stages, in build order; each takes plain data in and gives plain data
//! out, so each can be tested without the others:
//!
//! - [`spec`]: the image spec (YAML) a user writes, validated.
//! - [`board`]: a board file from `boards/` (arch, kernel, modules, disk, QEMU).
//! - [`plan`]: spec + board + CLI arguments resolved into one `BuildPlan`.
//! - [`packages`]: Debian packages resolved and fetched with the host's apt
//!   under a private configuration, cached, locked.
//! - [`rootfs`]: packages unpacked into an in-memory tree with ownership and
//!   modes, declarative fixups (what maintainer scripts would do), overlays.
//! - [`initramfs`]: `kiln-init` plus the kernel-module closure, as a cpio.
//! - [`fs`]: filesystem writers (squashfs root, FAT ESP, empty ext4 data).
//! - [`disk`]: partition layout and the raw disk image.
//! - [`build`]: runs the stages in order and reports what it made.
//! - [`installer`]: the USB installer stick image that carries the image.
//! - [`stage_cache`]: stage outputs kept between builds, keyed by the hash
//!   of their inputs.
//! - [`bench`]: `kiln bench`, kiln's build and boot figures next to the
//!   peer pipelines'.
//! - [`qemu`]: boots an image under QEMU and watches its serial console.
//! - [`flash`]: writes an image to an SD card or USB disk and reads it back.

pub mod bench;
pub mod board;
pub mod boot;
pub mod build;
pub mod cli;
pub mod disk;
pub mod flash;
pub mod fs;
pub mod initramfs;
pub mod installer;
pub mod logger;
pub mod nodebin;
pub mod output;
pub mod packages;
pub mod plan;
pub mod progress;
pub mod qemu;
pub mod rootfs;
pub mod spec;
pub mod stage_cache;
