//! Which disk the installer writes to, from what sysfs says about the
//! disks (read under a root directory, so tests use a fake tree).
//!
//! The rule: the disk `kiln.install.device=` names; otherwise the largest
//! disk that is not removable and not on USB. Never the disk the installer
//! booted from, never one too small for the image, and never one that has
//! partitions unless `kiln.install.wipe` says so.

use std::fs;
use std::io;
use std::path::Path;

use crate::init::sysfs::{self, CLASS_BLOCK};

/// One whole disk as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// `nvme0n1`, `sda`.
    pub name: String,
    /// `/dev/nvme0n1`.
    pub dev: String,
    pub bytes: u64,
    /// sysfs `removable`: the medium can be taken out (card readers, most
    /// USB sticks).
    pub removable: bool,
    /// Attached through USB (its sysfs path runs through a USB device).
    pub usb: bool,
    pub read_only: bool,
    /// Its partitions, as the kernel sees them (`nvme0n1p1`, ...).
    pub partitions: Vec<String>,
}

/// What the user asked for (kernel command line of the installer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// `kiln.install.device=/dev/nvme0n1`.
    pub device: Option<String>,
    /// `kiln.install.wipe`: a disk with partitions may be overwritten.
    pub wipe: bool,
}

/// Why a disk is or is not the target, for the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Target,
    BootMedium,
    Virtual,
    NoMedium,
    ReadOnly,
    Removable,
    Usb,
    TooSmall,
    HasPartitions,
    /// A candidate, but another one is larger.
    Smaller,
    /// Not the device the rules name.
    NotNamed,
}

impl Verdict {
    pub fn describe(&self, d: &Disk) -> String {
        match self {
            Verdict::Target => "the target".into(),
            Verdict::BootMedium => "the installer's own disk, never written".into(),
            Verdict::Virtual => "not a physical disk".into(),
            Verdict::NoMedium => "no medium".into(),
            Verdict::ReadOnly => "read-only".into(),
            Verdict::Removable => "removable; name it in kiln.install.device= to use it".into(),
            Verdict::Usb => "on USB; name it in kiln.install.device= to use it".into(),
            Verdict::TooSmall => "smaller than the image".into(),
            Verdict::HasPartitions => format!(
                "has partitions ({}); set kiln.install.wipe to overwrite it",
                d.partitions.join(", ")
            ),
            Verdict::Smaller => "a candidate, but not the largest".into(),
            Verdict::NotNamed => "not the disk kiln.install.device= names".into(),
        }
    }
}

/// `nvme0n1 (2048 MiB): the target` for each disk, for the console.
pub fn report(assessed: &[(Disk, Verdict)]) -> Vec<String> {
    assessed
        .iter()
        .map(|(d, v)| format!("{} ({} MiB): {}", d.dev, d.bytes >> 20, v.describe(d)))
        .collect()
}

/// Kernel names of block devices that are not disks a node boots from.
const VIRTUAL: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Every whole disk under `root`'s `/sys/class/block`, sorted by name.
pub fn scan(root: &Path) -> io::Result<Vec<Disk>> {
    let class = root.join(CLASS_BLOCK.trim_start_matches('/'));
    let devs = sysfs::scan(&class)?;
    let mut disks = Vec::new();
    for d in devs.iter().filter(|d| d.devtype == "disk") {
        let dir = class.join(&d.sys_name);
        let flag = |f: &str| {
            sysfs::read_number(&dir.join(f))
                .map(|n| n == 1)
                .unwrap_or(false)
        };
        let real = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let partitions = devs
            .iter()
            .filter(|p| p.devtype == "partition")
            .filter(|p| sysfs::parent_disk(&class, &p.sys_name).ok().as_ref() == Some(&d.sys_name))
            .map(|p| p.sys_name.clone())
            .collect();
        disks.push(Disk {
            name: d.sys_name.clone(),
            dev: d.dev_path(),
            bytes: sysfs::read_number(&dir.join("size")).unwrap_or(0) * 512,
            removable: flag("removable"),
            usb: real.components().any(|c| {
                let c = c.as_os_str().to_string_lossy();
                c.starts_with("usb") && c[3..].chars().all(|ch| ch.is_ascii_digit())
            }),
            read_only: flag("ro"),
            partitions,
        });
    }
    Ok(disks)
}

/// `/dev/nvme0n1` or `nvme0n1`.
fn is_named(d: &Disk, dev: &str) -> bool {
    d.dev == dev || d.name == dev.trim_start_matches("/dev/")
}

/// Judges every disk; at most one gets [`Verdict::Target`].
pub fn assess(
    disks: &[Disk],
    boot_disk: &str,
    image_bytes: u64,
    rules: &Rules,
) -> Vec<(Disk, Verdict)> {
    let named = |d: &Disk| rules.device.as_ref().is_none_or(|dev| is_named(d, dev));
    let mut out: Vec<(Disk, Verdict)> = disks
        .iter()
        .map(|d| {
            let v = if d.name == boot_disk {
                Verdict::BootMedium
            } else if VIRTUAL.iter().any(|p| d.name.starts_with(p)) {
                Verdict::Virtual
            } else if !named(d) {
                Verdict::NotNamed
            } else if d.bytes == 0 {
                Verdict::NoMedium
            } else if d.read_only {
                Verdict::ReadOnly
            } else if rules.device.is_none() && d.removable {
                Verdict::Removable
            } else if rules.device.is_none() && d.usb {
                Verdict::Usb
            } else if d.bytes < image_bytes {
                Verdict::TooSmall
            } else if !d.partitions.is_empty() && !rules.wipe {
                Verdict::HasPartitions
            } else {
                Verdict::Smaller
            };
            (d.clone(), v)
        })
        .collect();
    // Largest first; equal sizes: the first by name (scan order).
    let best = out
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| *v == Verdict::Smaller)
        .max_by(|(i, (a, _)), (j, (b, _))| a.bytes.cmp(&b.bytes).then(j.cmp(i)))
        .map(|(i, _)| i);
    if let Some(i) = best {
        out[i].1 = Verdict::Target;
    }
    out
}

/// The target, or why there is none.
pub fn choose(
    disks: &[Disk],
    boot_disk: &str,
    image_bytes: u64,
    rules: &Rules,
) -> Result<(Disk, Vec<String>), String> {
    let assessed = assess(disks, boot_disk, image_bytes, rules);
    let lines = report(&assessed);
    if let Some((d, _)) = assessed.iter().find(|(_, v)| *v == Verdict::Target) {
        return Ok((d.clone(), lines));
    }
    let seen = if lines.is_empty() {
        "no disks at all".to_string()
    } else {
        lines.join("; ")
    };
    Err(match &rules.device {
        Some(dev) if !disks.iter().any(|d| is_named(d, dev)) => {
            format!("kiln.install.device={dev} is not a disk here; disks seen: {seen}")
        }
        Some(dev) => format!("{dev} cannot be the target: {seen}"),
        None => format!("no disk qualifies as the target: {seen}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;
    use std::os::unix::fs::symlink;

    const MIB: u64 = 1 << 20;
    const IMAGE: u64 = 700 * MIB;

    /// A fake sysfs: `devices/<bus path>/block/<disk>[/<part>]` with the
    /// `/sys/class/block` links the kernel makes.
    struct FakeSys(TestDir);

    impl FakeSys {
        fn new(tag: &str) -> FakeSys {
            let t = TestDir::new(tag);
            fs::create_dir_all(t.path().join("sys/class/block")).unwrap();
            FakeSys(t)
        }

        fn disk(&self, bus: &str, name: &str, mib: u64, removable: bool, parts: &[&str]) -> &Self {
            let sys = self.0.path().join("sys");
            let dir = sys.join("devices").join(bus).join("block").join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("uevent"),
                format!("DEVNAME={name}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            fs::write(dir.join("size"), format!("{}\n", mib * MIB / 512)).unwrap();
            fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
            fs::write(dir.join("ro"), "0\n").unwrap();
            let rel = format!("../../devices/{bus}/block/{name}");
            symlink(&rel, sys.join("class/block").join(name)).unwrap();
            for p in parts {
                fs::create_dir_all(dir.join(p)).unwrap();
                fs::write(
                    dir.join(p).join("uevent"),
                    format!("DEVNAME={p}\nDEVTYPE=partition\nPARTNAME=x\n"),
                )
                .unwrap();
                symlink(format!("{rel}/{p}"), sys.join("class/block").join(p)).unwrap();
            }
            self
        }

        fn scan(&self) -> Vec<Disk> {
            scan(self.0.path()).unwrap()
        }
    }

    const NVME: &str = "pci0000:00/0000:00:04.0/nvme/nvme0";
    const SATA: &str = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
    const USB: &str = "pci0000:00/0000:00:05.0/usb2/2-1/2-1:1.0/host2/target2:0:0/2:0:0:0";

    /// The QEMU proof's machine: the installer stick on USB, an empty NVMe.
    fn nuc() -> FakeSys {
        let s = FakeSys::new("target-nuc");
        s.disk(USB, "sda", 1300, false, &["sda1", "sda2"])
            .disk(NVME, "nvme0n1", 2048, false, &[]);
        s
    }

    #[test]
    fn scan_reads_size_usb_and_partitions() {
        let disks = nuc().scan();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].name, "nvme0n1");
        assert_eq!(disks[0].dev, "/dev/nvme0n1");
        assert_eq!(disks[0].bytes, 2048 * MIB);
        assert!(!disks[0].usb && disks[0].partitions.is_empty());
        assert_eq!(disks[1].name, "sda");
        assert!(disks[1].usb, "sda hangs off usb2");
        assert_eq!(disks[1].partitions, ["sda1", "sda2"]);
    }

    #[test]
    fn picks_the_empty_nvme_never_the_stick() {
        let (d, lines) = choose(&nuc().scan(), "sda", IMAGE, &Rules::default()).unwrap();
        assert_eq!(d.dev, "/dev/nvme0n1");
        assert_eq!(
            lines,
            [
                "/dev/nvme0n1 (2048 MiB): the target",
                "/dev/sda (1300 MiB): the installer's own disk, never written"
            ]
        );
    }

    #[test]
    fn picks_the_largest_non_removable_disk() {
        let s = FakeSys::new("target-largest");
        s.disk(USB, "sda", 1300, true, &["sda1", "sda2"])
            .disk(SATA, "sdb", 500_000, false, &[])
            .disk(NVME, "nvme0n1", 250_000, false, &[])
            .disk(
                "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host3/target3:0:0/3:0:0:0",
                "sdc",
                900_000,
                false,
                &[],
            )
            .disk(
                "pci0000:00/0000:00:1e.0/mmc0/mmc0:0001",
                "mmcblk0",
                1_000_000,
                true,
                &[],
            );
        let assessed = assess(&s.scan(), "sda", IMAGE, &Rules::default());
        let verdicts: Vec<(&str, Verdict)> = assessed
            .iter()
            .map(|(d, v)| (d.name.as_str(), v.clone()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("mmcblk0", Verdict::Removable),
                ("nvme0n1", Verdict::Smaller),
                ("sda", Verdict::BootMedium),
                ("sdb", Verdict::Target),
                ("sdc", Verdict::Usb),
            ]
        );
    }

    #[test]
    fn named_device_wins_even_on_usb() {
        let s = FakeSys::new("target-named");
        s.disk(USB, "sda", 1300, false, &["sda1", "sda2"])
            .disk(SATA, "sdb", 500_000, false, &[])
            .disk(
                "pci0000:00/0000:00:14.0/usb1/1-2/host3/target3:0:0/3:0:0:0",
                "sdc",
                2000,
                true,
                &[],
            );
        let rules = Rules {
            device: Some("/dev/sdc".into()),
            wipe: false,
        };
        let (d, _) = choose(&s.scan(), "sda", IMAGE, &rules).unwrap();
        assert_eq!(d.name, "sdc");
    }

    #[test]
    fn refuses_a_disk_with_partitions_unless_wipe() {
        let s = FakeSys::new("target-parts");
        s.disk(USB, "sda", 1300, false, &["sda1", "sda2"]).disk(
            NVME,
            "nvme0n1",
            2048,
            false,
            &["nvme0n1p1", "nvme0n1p2"],
        );
        let e = choose(&s.scan(), "sda", IMAGE, &Rules::default()).unwrap_err();
        assert_eq!(
            e,
            "no disk qualifies as the target: /dev/nvme0n1 (2048 MiB): has partitions \
             (nvme0n1p1, nvme0n1p2); set kiln.install.wipe to overwrite it; \
             /dev/sda (1300 MiB): the installer's own disk, never written"
        );
        let named = Rules {
            device: Some("/dev/nvme0n1".into()),
            wipe: false,
        };
        let e = choose(&s.scan(), "sda", IMAGE, &named).unwrap_err();
        assert!(e.starts_with("/dev/nvme0n1 cannot be the target: "), "{e}");
        assert!(e.contains("set kiln.install.wipe"), "{e}");
        let wipe = Rules {
            device: None,
            wipe: true,
        };
        assert_eq!(
            choose(&s.scan(), "sda", IMAGE, &wipe).unwrap().0.name,
            "nvme0n1"
        );
    }

    #[test]
    fn refuses_when_there_is_no_target() {
        // Only the stick.
        let s = FakeSys::new("target-none");
        s.disk(USB, "sda", 1300, false, &["sda1", "sda2"]);
        let e = choose(&s.scan(), "sda", IMAGE, &Rules::default()).unwrap_err();
        assert_eq!(
            e,
            "no disk qualifies as the target: /dev/sda (1300 MiB): the installer's own disk, never written"
        );
        // Too small, removable, no medium.
        let s = FakeSys::new("target-none-2");
        s.disk(USB, "sda", 1300, false, &["sda1", "sda2"])
            .disk(NVME, "nvme0n1", 512, false, &[])
            .disk(
                "pci0000:00/0000:00:1e.0/mmc0/mmc0:0001",
                "mmcblk0",
                0,
                true,
                &[],
            );
        let e = choose(&s.scan(), "sda", IMAGE, &Rules::default()).unwrap_err();
        assert!(
            e.contains("/dev/nvme0n1 (512 MiB): smaller than the image"),
            "{e}"
        );
        assert!(e.contains("/dev/mmcblk0 (0 MiB): no medium"), "{e}");
        // Nothing at all.
        let s = FakeSys::new("target-empty");
        let e = choose(&s.scan(), "sda", IMAGE, &Rules::default()).unwrap_err();
        assert_eq!(e, "no disk qualifies as the target: no disks at all");
    }

    #[test]
    fn a_named_device_that_is_missing_or_the_stick_is_refused() {
        let rules = |dev: &str| Rules {
            device: Some(dev.into()),
            wipe: true,
        };
        let e = choose(&nuc().scan(), "sda", IMAGE, &rules("/dev/sdz")).unwrap_err();
        assert!(
            e.starts_with("kiln.install.device=/dev/sdz is not a disk here; disks seen: "),
            "{e}"
        );
        let e = choose(&nuc().scan(), "sda", IMAGE, &rules("/dev/sda")).unwrap_err();
        assert!(e.starts_with("/dev/sda cannot be the target"), "{e}");
        assert!(
            e.contains("/dev/sda (1300 MiB): the installer's own disk"),
            "{e}"
        );
    }
}
