//! Steps 5 and 6b: grow the data partition (GPT or MBR) to the end of its disk, then the
//! ext4 on it to the partition. Both check first and do nothing when there
//! is nothing to do, so every boot runs them.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::console::{debug, say, Failure, OrFail, Step};
use super::sysfs::{self, BlockDev};
use super::{ext4, sys, MIB};
use crate::{gpt, mbr};

/// Step 5: grow the data partition in the GPT, then in the kernel.
pub fn data_partition(data: &BlockDev, name: &str) -> Step<()> {
    let class = Path::new(sysfs::CLASS_BLOCK);
    let part_dir = class.join(&data.sys_name);
    let sysfs_check = "is /sys mounted and the partition still there?";
    let disk = sysfs::parent_disk(class, &data.sys_name).or_fail(
        format!("finding the disk of {}", data.dev_path()),
        sysfs_check,
    )?;
    let disk_dir = class.join(&disk);
    let disk_dev = fs::read_to_string(disk_dir.join("uevent"))
        .ok()
        .and_then(|t| sysfs::parse_uevent(&disk, &t))
        .map_or_else(|| format!("/dev/{disk}"), |d| d.dev_path());
    let sector_size = sysfs::read_number(&disk_dir.join("queue/logical_block_size")).or_fail(
        format!("reading the sector size of {disk_dev}"),
        sysfs_check,
    )?;
    if sector_size != gpt::SECTOR {
        return Err(Failure::new(
            format!("checking {disk_dev}"),
            format!("its logical sectors are {sector_size} bytes"),
            "kiln images are written for 512-byte sectors; use another medium",
        ));
    }
    let disk_sectors = sysfs::read_number(&disk_dir.join("size"))
        .or_fail(format!("reading the size of {disk_dev}"), sysfs_check)?;
    let pno = sysfs::read_number(&part_dir.join("partition")).or_fail(
        format!("reading the number of {}", data.dev_path()),
        sysfs_check,
    )?;

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(&disk_dev)
        .or_fail(
            format!("opening {disk_dev} to grow partition {name}"),
            "is the medium write-protected?",
        )?;
    let table_check = "the disk must hold the partition table the kiln builder wrote, \
                       with the data partition last";
    // An MBR disk (a Raspberry Pi card) has no partition names: grow the
    // data partition by its number. A GPT disk's sector 0 is a protective
    // MBR, which `mbr::read` refuses.
    let is_mbr = mbr::read(&mut file).is_ok();
    let grown = if is_mbr {
        mbr::grow_last_partition(&mut file, disk_sectors, pno)
            .and_then(|g| Ok((g, mbr::read(&mut file)?.get(pno).cloned())))
            .map(|(g, p)| (g, p.map(|p| (p.first_lba, p.last_lba))))
    } else {
        gpt::grow_last_partition(&mut file, disk_sectors, name)
            .and_then(|g| Ok((g, gpt::read(&mut file, disk_sectors)?)))
            .map(|(g, t)| {
                let part = t.partitions.into_iter().find(|p| p.name == name);
                (g, part.map(|p| (p.first_lba, p.last_lba)))
            })
    };
    let (grow, part) = grown.or_fail(
        format!(
            "growing partition {name} on {disk_dev} ({})",
            if is_mbr { "MBR" } else { "GPT" }
        ),
        table_check,
    )?;
    let Some((first_lba, last_lba)) = part else {
        return Err(Failure::new(
            format!("reading back the partition table of {disk_dev}"),
            format!("no partition {name}"),
            table_check,
        ));
    };

    let kernel_start = sysfs::read_number(&part_dir.join("start"))
        .or_fail("reading the partition start", sysfs_check)?;
    let kernel_size = sysfs::read_number(&part_dir.join("size"))
        .or_fail("reading the partition size", sysfs_check)?;
    let resize = kernel_resize(kernel_start, kernel_size, first_lba, last_lba).or_fail(
        format!("comparing {} with the partition table", data.dev_path()),
        "reboot to let the kernel read the table again",
    )?;
    if let Some(sectors) = resize {
        debug(format_args!(
            "telling the kernel {} now has {sectors} sectors (was {kernel_size})",
            data.dev_path()
        ));
        sys::resize_partition(&file, pno, first_lba * gpt::SECTOR, sectors * gpt::SECTOR).or_fail(
            format!("telling the kernel that {} grew (BLKPG)", data.dev_path()),
            "reboot: the kernel reads the grown table at boot",
        )?;
    }
    let mib = |last: u64| (last + 1 - first_lba) * gpt::SECTOR / MIB;
    match grow {
        gpt::Grow::Grown {
            old_last_lba,
            new_last_lba,
        } => say(format_args!(
            "data partition grown from {} MiB to {} MiB",
            mib(old_last_lba),
            mib(new_last_lba)
        )),
        gpt::Grow::AlreadyFull => say(format_args!(
            "data partition already fills the disk ({} MiB)",
            mib(last_lba)
        )),
    }
    Ok(())
}

/// Whether the kernel's view of a partition (sysfs `start` and `size`, in
/// 512-byte sectors) must be updated to the table's: the new length.
fn kernel_resize(
    kernel_start: u64,
    kernel_size: u64,
    first_lba: u64,
    last_lba: u64,
) -> Result<Option<u64>, String> {
    let len = last_lba + 1 - first_lba;
    if kernel_start != first_lba {
        Err(format!(
            "the kernel has it at sector {kernel_start}, the partition table at {}",
            first_lba
        ))
    } else if kernel_size == len {
        Ok(None)
    } else {
        Ok(Some(len))
    }
}

/// Step 6, second half: grow the ext4 mounted at `mount_point` to its
/// partition.
pub fn data_filesystem(data: &BlockDev, mount_point: &str) -> Step<()> {
    let dev = data.dev_path();
    let check = "check the kernel log (EXT4-fs lines) above";
    let sectors = sysfs::read_number(
        &Path::new(sysfs::CLASS_BLOCK)
            .join(&data.sys_name)
            .join("size"),
    )
    .or_fail(format!("reading the size of {dev}"), "is /sys mounted?")?;
    let before = ext4::read_superblock(Path::new(&dev))
        .or_fail(format!("reading the ext4 superblock of {dev}"), check)?;
    let target = ext4::target_blocks(sectors * gpt::SECTOR, before.block_size);
    if before.blocks >= target {
        say(format_args!(
            "data filesystem already fills its partition ({} MiB)",
            before.bytes() / MIB
        ));
        return Ok(());
    }
    ext4::resize(Path::new(mount_point), target).or_fail(
        format!(
            "growing the data filesystem on {dev} from {} to {target} blocks",
            before.blocks
        ),
        check,
    )?;
    let after = ext4::read_superblock(Path::new(&dev))
        .or_fail(format!("reading the ext4 superblock of {dev}"), check)?;
    if after.blocks > before.blocks {
        say(format_args!(
            "data filesystem grown from {} MiB to {} MiB",
            before.bytes() / MIB,
            after.bytes() / MIB
        ));
    } else {
        // The kernel keeps a tail too small for a block group's metadata.
        say(format_args!(
            "data filesystem already fills its partition ({} MiB)",
            after.bytes() / MIB
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_resize_only_when_sizes_differ() {
        assert_eq!(kernel_resize(2048, 2048, 2048, 4095), Ok(None));
        assert_eq!(kernel_resize(2048, 1024, 2048, 4095), Ok(Some(2048)));
        assert!(kernel_resize(4096, 2048, 2048, 4095)
            .unwrap_err()
            .contains("sector 4096"));
    }
}
