//! Boot flavors: what goes on the boot partition for the firmware to find
//! the kernel. Code knows flavors, not boards; boards pick one.
//!
//! To add a flavor: a variant in [`BootFlavor`], a module here with a
//! `boot_files` function, and one arm in each `match` below.

pub mod extlinux;
pub mod node_file;
pub mod raspi;
pub mod uefi;

use anyhow::{Context, Result};

use crate::board::{Board, BootFlavor};
use crate::fs::fat::FatFile;
use crate::rootfs::tree::Tree;

/// What every flavor needs to lay out its boot partition.
pub struct BootInput<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    /// `uname -r`, for flavors that name files after it.
    pub kernel_version: &'a str,
    /// Kernel command line: the board's, plus kiln's keys.
    pub cmdline: String,
    /// A device tree for the firmware to hand the kernel (boards whose
    /// firmware has none of its own, or an unsuitable one).
    pub dtb: Option<Dtb<'a>>,
}

/// A device tree blob and its path below `dtbs/` on the boot partition
/// (`nvidia/tegra210-p3450-0000.dtb`).
pub struct Dtb<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

impl Dtb<'_> {
    /// Where it lies on the boot partition.
    pub fn boot_path(&self) -> String {
        format!("dtbs/{}", self.path)
    }

    /// The boot partition file.
    pub fn file(&self) -> FatFile {
        FatFile {
            path: self.boot_path(),
            data: self.data.to_vec(),
        }
    }
}

/// Boot partition files, sorted by path.
pub type BootFiles = Vec<FatFile>;

/// Debian packages (for the board's arch) a flavor takes its loader from.
pub fn packages(flavor: BootFlavor) -> &'static [&'static str] {
    match flavor {
        BootFlavor::UefiSystemdBoot => &[uefi::LOADER_PACKAGE],
        // U-Boot is the board's firmware, not part of the image.
        BootFlavor::UbootExtlinux => &[],
        BootFlavor::RaspiFirmware => &[raspi::FIRMWARE_PACKAGE],
    }
}

/// The boot partition's files. A flavor may take what it needs out of the
/// unpacked root (the loader has no business there).
pub fn boot_files(board: &Board, tree: &mut Tree, input: &BootInput) -> Result<BootFiles> {
    match board.boot {
        BootFlavor::UefiSystemdBoot => uefi::esp_files(tree, board.arch, input),
        BootFlavor::UbootExtlinux => extlinux::boot_files(input),
        BootFlavor::RaspiFirmware => {
            let raspi = board
                .raspi
                .as_ref()
                .context("the board has no `raspi:` section")?;
            raspi::boot_files(tree, board.arch, raspi, input)
        }
    }
}

/// The boot partition's FAT volume label: the Pi's is `KILN-BOOT` (what a
/// user sees when the card is in a laptop).
pub fn volume_label(flavor: BootFlavor) -> &'static str {
    match flavor {
        BootFlavor::RaspiFirmware => "KILN-BOOT",
        _ => "KILN-ESP",
    }
}
