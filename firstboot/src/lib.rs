//! Code that runs inside a kiln image, and the schemas it shares with the
//! builder.
//!
//! - [`gpt`]: read, write and grow GUID partition tables (the builder writes
//!   the image's table, `kiln-init` grows the data partition on first boot).
//! - [`mbr`]: the same for MBR tables (Raspberry Pi cards).
//! - [`config`]: the `node.yaml` schema and its validation.
//! - [`consoles`]: every console the kernel prints on (screen and serial).
//! - [`datasource`]: where a node finds its `node.yaml` (fw_cfg, baked, ...).
//! - [`firstboot`]: what `kiln-firstboot` does with it (apply, wait-ready).
//! - [`install`]: the installer `kiln-init` runs from a kiln installer stick.
//! - `kiln-init` (`src/bin/kiln-init.rs`): `/init` of the initramfs.
//! - `kiln-firstboot` (`src/bin/kiln-firstboot.rs`): turns node config into a
//!   k3s node.

pub mod config;
pub mod consoles;
pub mod datasource;
pub mod firstboot;
pub mod gpt;
pub mod init;
pub mod install;
pub mod layout;
pub mod mbr;
