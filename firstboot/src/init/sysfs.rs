//! Block devices as sysfs shows them: find partitions by GPT name, their
//! disk, their numbers. Everything takes the `/sys/class/block` directory
//! as an argument so tests can point it at a fake tree.

use std::fs;
use std::io;
use std::path::Path;

use crate::{layout, mbr};

pub const CLASS_BLOCK: &str = "/sys/class/block";

/// One entry of `/sys/class/block`, from its `uevent` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// Directory name in sysfs (`vda1`, `mmcblk0p2`).
    pub sys_name: String,
    /// `DEVNAME=`: the node under `/dev`.
    pub devname: String,
    /// `DEVTYPE=`: `disk` or `partition`.
    pub devtype: String,
    /// `PARTNAME=`: the GPT partition name, if any.
    pub partname: Option<String>,
}

impl BlockDev {
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.devname)
    }
}

/// Parses a `uevent` file; `None` without a `DEVNAME=`.
pub fn parse_uevent(sys_name: &str, text: &str) -> Option<BlockDev> {
    let mut dev = BlockDev {
        sys_name: sys_name.into(),
        devname: String::new(),
        devtype: String::new(),
        partname: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DEVNAME", v)) => dev.devname = v.into(),
            Some(("DEVTYPE", v)) => dev.devtype = v.into(),
            Some(("PARTNAME", v)) => dev.partname = Some(v.into()),
            _ => {}
        }
    }
    (!dev.devname.is_empty()).then_some(dev)
}

/// Every block device with a readable `uevent`, sorted by name.
pub fn scan(class_block: &Path) -> io::Result<Vec<BlockDev>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(class_block)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A device can vanish between read_dir and here: skip it.
        if let Ok(text) = fs::read_to_string(entry.path().join("uevent")) {
            out.extend(parse_uevent(&name, &text));
        }
    }
    out.sort_by(|a, b| a.sys_name.cmp(&b.sys_name));
    Ok(out)
}

/// Where the search for a set of partitions stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Every name found once, in the order asked.
    Found(Vec<BlockDev>),
    /// Not there yet (storage drivers probe asynchronously): names missing.
    Waiting(Vec<String>),
    /// A name on more than one device: waiting will not help.
    Ambiguous(String),
}

/// Looks up each partition name among `devs`. A match counts only once its
/// `/dev` node exists (`node_exists`).
pub fn lookup(
    devs: &[BlockDev],
    names: &[&str],
    node_exists: impl Fn(&BlockDev) -> bool,
) -> Lookup {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let matches: Vec<&BlockDev> = devs
            .iter()
            .filter(|d| d.partname.as_deref() == Some(*name))
            .collect();
        match matches[..] {
            [] => missing.push(name.to_string()),
            [one] if node_exists(one) => found.push(one.clone()),
            [_] => missing.push(format!("{name} (no /dev node yet)")),
            _ => {
                let at: Vec<String> = matches.iter().map(|d| d.dev_path()).collect();
                return Lookup::Ambiguous(format!("partition {name} is on {}", at.join(" and ")));
            }
        }
    }
    if missing.is_empty() {
        Lookup::Found(found)
    } else {
        Lookup::Waiting(missing)
    }
}

/// MBR partitions have no names: on the disk whose MBR signature is
/// `disk_id` (the builder derives it from the spec and puts it on the
/// kernel command line as `kiln.mbr=`), partition `n` gets kiln's `n`th
/// name ([`layout::MBR_PARTITIONS`]). The signature, not "the first SD
/// card", picks the disk, so a USB stick or a second card with partitions
/// of its own is never taken for it, whatever the kernel calls each disk.
/// `sector0` reads a whole disk's first sector (`None`: not readable yet).
pub fn name_mbr_partitions(
    class_block: &Path,
    devs: &mut [BlockDev],
    disk_id: u32,
    sector0: impl Fn(&BlockDev) -> Option<Vec<u8>>,
) {
    let ours: Vec<String> = devs
        .iter()
        .filter(|d| d.devtype == "disk")
        .filter(|d| {
            sector0(d)
                .and_then(|s| mbr::decode(&s).ok())
                .is_some_and(|t| t.disk_id == disk_id)
        })
        .map(|d| d.sys_name.clone())
        .collect();
    for dev in devs.iter_mut() {
        if dev.devtype != "partition" || dev.partname.is_some() {
            continue;
        }
        let Ok(disk) = parent_disk(class_block, &dev.sys_name) else {
            continue;
        };
        if !ours.contains(&disk) {
            continue;
        }
        let number = read_number(&class_block.join(&dev.sys_name).join("partition"));
        if let Some(name) = number
            .ok()
            .and_then(|n| layout::MBR_PARTITIONS.get(usize::try_from(n).ok()?.checked_sub(1)?))
        {
            dev.partname = Some(name.to_string());
        }
    }
}

/// `vda (disk), vda1 (PARTNAME=kiln-esp), ...` for error messages.
pub fn describe(devs: &[BlockDev]) -> String {
    if devs.is_empty() {
        return "none at all".into();
    }
    let all: Vec<String> = devs
        .iter()
        .map(|d| match &d.partname {
            Some(p) => format!("{} (PARTNAME={p})", d.sys_name),
            None => format!("{} ({})", d.sys_name, d.devtype),
        })
        .collect();
    all.join(", ")
}

/// The disk a partition belongs to: the parent directory of the
/// partition's device directory (`.../block/vda/vda3` → `vda`).
pub fn parent_disk(class_block: &Path, partition: &str) -> io::Result<String> {
    let real = fs::canonicalize(class_block.join(partition))?;
    real.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other(format!("{} has no parent device", real.display())))
}

/// A sysfs file holding one number (`size`, `start`, `partition`).
pub fn read_number(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds {:?}, not a number", path.display(), text.trim()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;

    fn dev(sys: &str, part: Option<&str>) -> BlockDev {
        BlockDev {
            sys_name: sys.into(),
            devname: sys.into(),
            devtype: if part.is_some() { "partition" } else { "disk" }.into(),
            partname: part.map(Into::into),
        }
    }

    #[test]
    fn parses_uevent() {
        let text = "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=3\nPARTNAME=kiln-data\n";
        assert_eq!(
            parse_uevent("vda3", text),
            Some(dev("vda3", Some("kiln-data")))
        );
        assert_eq!(parse_uevent("x", "MAJOR=1\n"), None);
    }

    #[test]
    fn looks_up_names() {
        let devs = [
            dev("vda", None),
            dev("vda2", Some("kiln-root-a")),
            dev("vda3", Some("kiln-data")),
        ];
        assert_eq!(
            lookup(&devs, &["kiln-root-a", "kiln-data"], |_| true),
            Lookup::Found(vec![devs[1].clone(), devs[2].clone()])
        );
        assert_eq!(
            lookup(&devs[..2], &["kiln-root-a", "kiln-data"], |_| true),
            Lookup::Waiting(vec!["kiln-data".into()])
        );
        assert_eq!(
            lookup(&devs, &["kiln-data"], |d| d.sys_name != "vda3"),
            Lookup::Waiting(vec!["kiln-data (no /dev node yet)".into()])
        );
        let two = [
            dev("vda3", Some("kiln-data")),
            dev("sda3", Some("kiln-data")),
        ];
        assert_eq!(
            lookup(&two, &["kiln-data"], |_| true),
            Lookup::Ambiguous("partition kiln-data is on /dev/vda3 and /dev/sda3".into())
        );
        assert_eq!(
            describe(&devs[..2]),
            "vda (disk), vda2 (PARTNAME=kiln-root-a)"
        );
        assert_eq!(describe(&[]), "none at all");
    }

    #[test]
    fn names_mbr_partitions_on_the_disk_with_the_signature_only() {
        let t = TestDir::new("sysfs-mbr");
        let class = t.path().join("class/block");
        fs::create_dir_all(&class).unwrap();
        let mut devs = Vec::new();
        for disk in ["mmcblk0", "sda"] {
            let dir = t.path().join("devices").join(disk);
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&dir, class.join(disk)).unwrap();
            devs.push(dev(disk, None));
            for n in 1..=5 {
                let part = if disk == "sda" {
                    format!("sda{n}")
                } else {
                    format!("{disk}p{n}")
                };
                fs::create_dir_all(dir.join(&part)).unwrap();
                fs::write(dir.join(&part).join("partition"), format!("{n}\n")).unwrap();
                std::os::unix::fs::symlink(dir.join(&part), class.join(&part)).unwrap();
                let mut p = dev(&part, None);
                p.devtype = "partition".into();
                devs.push(p);
            }
        }
        let table = |id| mbr::Table {
            disk_id: id,
            partitions: [1, 2, 3, 4].map(|n| {
                Some(mbr::Partition {
                    kind: mbr::types::LINUX,
                    bootable: false,
                    first_lba: n * 2048,
                    last_lba: n * 2048 + 2047,
                })
            }),
        };
        let sector0 = |d: &BlockDev| {
            let id = if d.sys_name == "sda" { 0x1111 } else { 0xbeef };
            Some(mbr::encode(&table(id), 1 << 20).unwrap().to_vec())
        };
        name_mbr_partitions(&class, &mut devs, 0xbeef, sector0);
        let named: Vec<(&str, &str)> = devs
            .iter()
            .filter_map(|d| Some((d.sys_name.as_str(), d.partname.as_deref()?)))
            .collect();
        assert_eq!(
            named,
            [
                ("mmcblk0p1", "kiln-esp"),
                ("mmcblk0p2", "kiln-root-a"),
                ("mmcblk0p3", "kiln-root-b"),
                ("mmcblk0p4", "kiln-data"),
            ]
        );
        assert_eq!(
            lookup(&devs, &["kiln-root-a", "kiln-data"], |_| true),
            Lookup::Found(vec![devs[2].clone(), devs[4].clone()])
        );
    }

    #[test]
    fn scans_a_sysfs_tree() {
        let t = TestDir::new("sysfs");
        let disk = t.path().join("devices/virtio0/block/vda");
        fs::create_dir_all(disk.join("vda3")).unwrap();
        fs::write(disk.join("uevent"), "DEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        fs::write(
            disk.join("vda3/uevent"),
            "DEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=kiln-data\n",
        )
        .unwrap();
        fs::write(disk.join("vda3/partition"), "3\n").unwrap();
        let class = t.path().join("class/block");
        fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink("../../devices/virtio0/block/vda", class.join("vda")).unwrap();
        std::os::unix::fs::symlink("../../devices/virtio0/block/vda/vda3", class.join("vda3"))
            .unwrap();

        assert_eq!(
            scan(&class).unwrap(),
            [dev("vda", None), dev("vda3", Some("kiln-data"))]
        );
        assert_eq!(parent_disk(&class, "vda3").unwrap(), "vda");
        assert_eq!(read_number(&class.join("vda3/partition")).unwrap(), 3);
        let err = read_number(&class.join("vda3/uevent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
    }
}
