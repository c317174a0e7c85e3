//! `node.yaml` on the boot partition: the ESP (GPT name `kiln-esp`), or on
//! an MBR disk a FAT filesystem labelled `KILN-ESP` or `KILN-BOOT` (the
//! Raspberry Pi's boot partition). Someone flashing a card drops the file
//! there from any computer.
//!
//! Two halves, so tests need no device: [`locate`] finds the partition in
//! sysfs and `/dev` under a root; [`read_config`] reads the file from a
//! directory. In between, [`mount::read_from`] reads the partition where it
//! is already mounted, or mounts it read-only on a private directory under
//! `/run` and unmounts it again (through a [`Mounter`], faked in tests).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::mount::{self, Mounter, SystemMounter, Volume};
use super::pi_imager::{self, Customisation};
use super::{fetch_err, under, Datasource, FetchError};
use crate::init::sysfs::{self, BlockDev, CLASS_BLOCK};
use crate::layout::ESP_PARTITION;

/// FAT volume labels that mark a kiln boot partition on an MBR disk.
pub const BOOT_LABELS: &[&str] = &["KILN-ESP", "KILN-BOOT"];
/// The file looked for (any case: FAT does not keep it).
pub const NODE_FILE: &str = "node.yaml";
/// Raspberry Pi Imager's customisation, in cloud-init's file names.
pub const USER_DATA: &str = "user-data";
pub const NETWORK_CONFIG: &str = "network-config";

/// The node config on the boot partition.
pub struct BootPartition {
    pub mounter: Box<dyn Mounter>,
}

impl BootPartition {
    pub fn system() -> Self {
        BootPartition {
            mounter: Box::new(SystemMounter),
        }
    }
}

/// A partition [`locate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `/dev/vda1`.
    pub dev: String,
    /// `major:minor`, to find it in mountinfo.
    pub dev_number: Option<String>,
}

impl Datasource for BootPartition {
    fn name(&self) -> &str {
        "boot partition node.yaml"
    }

    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        self.read(root, read_config)
    }

    fn customisation(&self, root: &Path) -> Result<Option<Customisation>, FetchError> {
        self.read(root, read_pi_imager)
    }
}

impl BootPartition {
    /// `read(dir, dev)` on the mounted boot partition; `Ok(None)` when the
    /// disk has none.
    fn read<T>(
        &self,
        root: &Path,
        read: impl FnOnce(&Path, &str) -> Result<Option<T>, FetchError>,
    ) -> Result<Option<T>, FetchError> {
        let Some(part) = locate(root)? else {
            return Ok(None);
        };
        let vol = Volume {
            dev: &part.dev,
            dev_number: part.dev_number.as_deref(),
            fstype: "vfat",
            what: "the boot partition",
            mount_name: "boot-partition",
        };
        mount::read_from(root, &vol, self.mounter.as_ref(), |dir| {
            read(dir, &part.dev)
        })
    }
}

/// Pi Imager's `user-data` and `network-config` in `dir`, read and parsed.
pub fn read_pi_imager(dir: &Path, dev: &str) -> Result<Option<Customisation>, FetchError> {
    let what = |name: &str| format!("{name} on the boot partition {dev}");
    let user_data = mount::read_named(dir, &[USER_DATA], &what(USER_DATA))?;
    let network = mount::read_named(dir, &[NETWORK_CONFIG], &what(NETWORK_CONFIG))?;
    pi_imager::parse(user_data.as_deref(), network.as_deref()).map_err(|e| {
        fetch_err(
            format!("Raspberry Pi Imager's settings on {dev}"),
            io::Error::other(format!("{e}; fix or delete the file")),
        )
    })
}

/// The boot partition: by GPT name, else by FAT label. `Ok(None)` when the
/// disk has neither; an error when two partitions claim to be it.
pub fn locate(root: &Path) -> Result<Option<Partition>, FetchError> {
    let class_block = under(root, CLASS_BLOCK);
    let devs = match sysfs::scan(&class_block) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fetch_err(CLASS_BLOCK, e)),
    };
    let parts: Vec<&BlockDev> = devs.iter().filter(|d| d.devtype == "partition").collect();
    let mut found: Vec<&BlockDev> = parts
        .iter()
        .copied()
        .filter(|d| d.partname.as_deref() == Some(ESP_PARTITION))
        .collect();
    if found.is_empty() {
        found = parts
            .iter()
            .copied()
            .filter(|d| {
                fat_label(&under(root, &d.dev_path()))
                    .is_some_and(|l| BOOT_LABELS.contains(&l.as_str()))
            })
            .collect();
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(Partition {
            dev: one.dev_path(),
            dev_number: fs::read_to_string(class_block.join(&one.sys_name).join("dev"))
                .ok()
                .map(|s| s.trim().to_owned()),
        })),
        many => {
            let names: Vec<String> = many.iter().map(|d| d.dev_path()).collect();
            Err(fetch_err(
                "the boot partition",
                io::Error::other(format!(
                    "{} partitions look like it ({}); remove the other kiln disk",
                    names.len(),
                    names.join(", ")
                )),
            ))
        }
    }
}

/// The volume label in a FAT boot sector, if `dev` starts with one.
pub fn fat_label(dev: &Path) -> Option<String> {
    let mut sector = [0u8; 512];
    fs::File::open(dev).ok()?.read_exact(&mut sector).ok()?;
    if sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let fat32 = u16::from_le_bytes([sector[22], sector[23]]) == 0;
    let (sig, label, kind) = if fat32 { (66, 71, 82) } else { (38, 43, 54) };
    if sector[sig] != 0x29 || !sector[kind..kind + 3].eq(b"FAT") {
        return None;
    }
    let text = String::from_utf8_lossy(&sector[label..label + 11]);
    Some(text.trim_end().to_owned())
}

/// `node.yaml` (any case) in `dir`; `Ok(None)` when there is none.
pub fn read_config(dir: &Path, dev: &str) -> Result<Option<Vec<u8>>, FetchError> {
    mount::read_named(dir, &[NODE_FILE], &format!("{NODE_FILE} on {dev}"))
}

#[cfg(test)]
#[path = "boot_partition_tests.rs"]
mod tests;
