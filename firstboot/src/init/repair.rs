//! Part of step 4: a disk whose primary GPT is broken while its backup at
//! the end of the disk is good.
//!
//! That is what a power cut leaves while step 5 rewrites the primary table
//! (see [`gpt::grow_last_partition`]). Linux reads the backup only with
//! `gpt` on its command line, so without it the disk shows no partitions at
//! all and step 4 would wait in vain. kiln-init restores the primary from
//! the backup (the same call finishes the interrupted grow) and has the
//! kernel re-read the table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::console::{say, Failure, OrFail, Step};
use super::sys;
use super::sysfs::{self, BlockDev};
use crate::gpt;

/// Whether a disk needs its primary table restored: the primary does not
/// read, the backup does, and the backup holds one of kiln's partitions
/// (never touch anybody else's disk).
pub fn needs_repair(
    primary: &io::Result<gpt::Table>,
    backup: &io::Result<gpt::Table>,
    names: &[&str],
) -> bool {
    match (primary, backup) {
        (Err(_), Ok(t)) => t
            .partitions
            .iter()
            .any(|p| names.contains(&p.name.as_str())),
        _ => false,
    }
}

/// Checks one whole disk and repairs it if [`needs_repair`]. `Ok(false)`
/// if the disk is not ready to be checked yet (no size, no `/dev` node).
pub fn check_disk(disk: &BlockDev, names: &[&str], data_name: &str) -> Step<bool> {
    let dev = disk.dev_path();
    let size = Path::new(sysfs::CLASS_BLOCK)
        .join(&disk.sys_name)
        .join("size");
    let sectors = match sysfs::read_number(&size) {
        Ok(n) if n > 0 => n,
        _ => return Ok(false),
    };
    let Ok(mut file) = File::open(&dev) else {
        return Ok(false);
    };
    let primary = gpt::read(&mut file, sectors);
    if primary.is_ok() {
        return Ok(true);
    }
    let backup = gpt::read_backup(&mut file, sectors);
    if !needs_repair(&primary, &backup, names) {
        return Ok(true);
    }
    let why = primary.err().map(|e| e.to_string()).unwrap_or_default();
    let check = "the disk may be failing; a kiln image can be flashed again";
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(&dev)
        .or_fail(
            format!("opening {dev} to repair its partition table"),
            check,
        )?;
    gpt::grow_last_partition(&mut file, sectors, data_name).map_err(|e| {
        Failure::new(
            format!("restoring the primary partition table of {dev} from its backup"),
            e,
            check,
        )
    })?;
    sys::reread_partitions(&file).or_fail(
        format!("asking the kernel to re-read the partition table of {dev}"),
        "reboot",
    )?;
    say(format_args!(
        "repaired the primary partition table of {dev} from its backup (it was: {why})"
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::{types, Guid, Partition, Table};

    fn table(name: &str) -> Table {
        Table {
            disk_guid: Guid::ZERO,
            partitions: vec![Partition {
                type_guid: types::LINUX_FS,
                unique_guid: Guid::ZERO,
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
                name: name.into(),
            }],
        }
    }

    #[test]
    fn repairs_only_a_kiln_disk_with_a_broken_primary() {
        let names = ["kiln-root-a", "kiln-data"];
        let broken = || Err(io::Error::other("CRC"));
        assert!(needs_repair(&broken(), &Ok(table("kiln-data")), &names));
        assert!(!needs_repair(
            &Ok(table("kiln-data")),
            &Ok(table("kiln-data")),
            &names
        ));
        assert!(!needs_repair(&broken(), &broken(), &names));
        assert!(!needs_repair(&broken(), &Ok(table("someone-else")), &names));
    }
}
