//! Partition layout and the raw disk image.
//!
//! Every board's disk has the same shape (boot, root A, root B, data), so a
//! root image can later be written to the idle slot and the data partition,
//! last on the disk, can grow to fill whatever medium the image lands on.

pub mod image;
pub mod layout;

use kiln_node::gpt::{self, Guid};
use kiln_node::layout as names;

use crate::board::Arch;
use crate::plan::BuildPlan;
use layout::PartitionPlan;

/// The partitions of `plan`'s disk, in order, sized by the board.
pub fn partitions(plan: &BuildPlan) -> [PartitionPlan; 4] {
    let disk = &plan.board.disk;
    let root_type = match plan.board.arch {
        Arch::Amd64 => gpt::types::ROOT_X86_64,
        Arch::Arm64 => gpt::types::ROOT_ARM64,
        Arch::Armhf => gpt::types::ROOT_ARM,
    };
    [
        (names::ESP_PARTITION, gpt::types::ESP, disk.esp_mib),
        (names::ROOT_A_PARTITION, root_type, disk.root_slot_mib),
        (names::ROOT_B_PARTITION, root_type, disk.root_slot_mib),
        (names::DATA_PARTITION, gpt::types::LINUX_FS, disk.data_mib),
    ]
    .map(|(name, type_guid, mib)| PartitionPlan {
        name: name.into(),
        type_guid,
        unique_guid: Guid::from_hash(&plan.derive(&format!("partition-{name}"))),
        mbr_type: if type_guid == gpt::types::ESP {
            kiln_node::mbr::types::FAT32_LBA
        } else {
            kiln_node::mbr::types::LINUX
        },
        size_bytes: mib << 20,
    })
}

/// Size of `plan`'s raw disk image in bytes.
pub fn image_bytes(plan: &BuildPlan) -> u64 {
    layout::place(&partitions(plan)).disk_bytes
}
