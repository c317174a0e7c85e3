//! Boot flavors: what goes on the boot partition for the firmware to find
//! the kernel. Code knows flavors, not boards; boards pick one.

pub mod uefi;

use crate::fs::fat::FatFile;

/// What every flavor needs to lay out its boot partition.
pub struct BootInput<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    /// Kernel command line: the board's, plus kiln's keys.
    pub cmdline: String,
}

/// Boot partition files, sorted by path.
pub type BootFiles = Vec<FatFile>;
