//! Where each partition goes: 1 MiB aligned, in the order given, with room
//! for the backup GPT at the end.

use kiln_node::gpt::{Guid, SECTOR};

pub const ALIGN: u64 = 1 << 20;

/// A partition as the board and the build want it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionPlan {
    pub name: String,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// Type byte when the disk has an MBR table instead.
    pub mbr_type: u8,
    pub size_bytes: u64,
}

/// A partition placed on the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub plan: PartitionPlan,
    pub offset: u64,
    pub size_bytes: u64,
}

impl Placed {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size_bytes) / SECTOR - 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub partitions: Vec<Placed>,
    pub disk_bytes: u64,
}

/// Places partitions one after another from 1 MiB, each rounded up to 1 MiB;
/// the disk ends 1 MiB after the last one (the backup GPT needs 33 sectors).
pub fn place(plans: &[PartitionPlan]) -> Layout {
    let mut offset = ALIGN;
    let mut partitions = Vec::new();
    for plan in plans {
        let size_bytes = plan.size_bytes.div_ceil(ALIGN) * ALIGN;
        partitions.push(Placed {
            plan: plan.clone(),
            offset,
            size_bytes,
        });
        offset += size_bytes;
    }
    Layout {
        partitions,
        disk_bytes: offset + ALIGN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, size: u64) -> PartitionPlan {
        PartitionPlan {
            name: name.into(),
            type_guid: Guid([1; 16]),
            unique_guid: Guid([2; 16]),
            mbr_type: 0x83,
            size_bytes: size,
        }
    }

    #[test]
    fn partitions_are_aligned_and_packed() {
        let l = place(&[plan("a", 64 << 20), plan("b", (3 << 20) + 1)]);
        assert_eq!(l.partitions[0].offset, 1 << 20);
        assert_eq!(l.partitions[1].offset, 65 << 20);
        assert_eq!(l.partitions[1].size_bytes, 4 << 20);
        assert_eq!(l.partitions[1].last_lba(), (69 << 20) / 512 - 1);
        assert_eq!(l.disk_bytes, 70 << 20);
    }
}
