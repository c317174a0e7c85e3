//! What `kiln flash` writes to, and whether it may.
//!
//! Two halves, so every refusal is tested without a disk: [`inspect`] reads
//! the facts about a target from `/sys` and `/proc` under a root (a fake
//! tree in tests), and [`check`] decides on those facts alone.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::progress::mib;

/// Where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A whole disk, by its kernel name (`sdb`, `mmcblk0`).
    Disk(String),
    /// A regular file that already exists (a disk image, a test's card).
    File,
}

/// The facts [`check`] decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    /// Vendor and model as the kernel reports them.
    pub model: Option<String>,
    /// The kernel's `removable` flag (SD readers and USB sticks set it).
    pub removable: bool,
    /// Why the disk is in use right now: `sdb1 is mounted at /media/boot`,
    /// `sdb2 is swap`, `sdb3 is held by dm-0`.
    pub in_use: Vec<String>,
    /// The disk holds the running system's `/`.
    pub holds_root: bool,
}

impl Target {
    /// One line for the confirmation and the summary.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::File => format!("{} (a file of {})", self.path.display(), mib(self.size)),
            Kind::Disk(_) => format!(
                "{} ({}, {}, {})",
                self.path.display(),
                self.model.as_deref().unwrap_or("unknown model"),
                size_text(self.size),
                if self.removable {
                    "removable"
                } else {
                    "not removable"
                }
            ),
        }
    }
}

/// `29.7 GiB` for disks, where MiB would be a long number.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        mib(bytes)
    }
}

/// Facts about `path`. Only `/sys` and `/proc` are read under `root`; the
/// path itself is looked at where it is.
pub fn inspect(path: &Path, root: &Path) -> Result<Target> {
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist; name a disk (/dev/sdX, /dev/mmcblkN) or make an image \
             file first (truncate -s 2G {})",
            path.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
    };
    let ft = md.file_type();
    if ft.is_file() {
        return Ok(Target {
            path: path.to_path_buf(),
            kind: Kind::File,
            size: md.len(),
            model: None,
            removable: true,
            in_use: Vec::new(),
            holds_root: false,
        });
    }
    if !ft.is_block_device() {
        bail!(
            "{} is neither a disk nor a regular file; name a disk such as /dev/sdX",
            path.display()
        );
    }
    let rdev = md.rdev();
    let number = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    disk_facts(path, &number, root)
}

/// Facts about the block device `number` (`major:minor`) from the sysfs
/// and procfs under `root`.
pub fn disk_facts(path: &Path, number: &str, root: &Path) -> Result<Target> {
    let sys = sys_dir(root, number)
        .with_context(|| format!("finding {} in /sys (is /sys mounted?)", path.display()))?;
    let name = file_name(&sys);
    if sys.join("partition").exists() {
        let disk = sys.parent().map(file_name).unwrap_or_default();
        bail!(
            "{} is partition {name} of /dev/{disk}; name the whole disk: /dev/{disk}",
            path.display()
        );
    }
    let read = |p: &Path| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let sectors: u64 = read(&sys.join("size"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("reading the size of {name} in /sys"))?;
    let model = [
        read(&sys.join("device/vendor")),
        read(&sys.join("device/model")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");

    // The disk and its partitions: name and device number.
    let mut members = vec![(name.clone(), read(&sys.join("dev")).unwrap_or_default())];
    for entry in fs::read_dir(&sys).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.join("partition").exists() {
            members.push((file_name(&p), read(&p.join("dev")).unwrap_or_default()));
        }
    }
    let mut in_use = Vec::new();
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(dev), Some(at)) = (f.get(2), f.get(4)) {
            if let Some((member, _)) = members.iter().find(|(_, n)| n == dev) {
                in_use.push(format!("{member} is mounted at {at}"));
            }
        }
    }
    let swaps = fs::read_to_string(root.join("proc/swaps")).unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let dev = line.split_whitespace().next().unwrap_or_default();
        let base = dev.rsplit('/').next().unwrap_or_default();
        if members.iter().any(|(m, _)| m == base) {
            in_use.push(format!("{base} is swap"));
        }
    }
    for (member, _) in &members {
        let dir = if *member == name {
            sys.clone()
        } else {
            sys.join(member)
        };
        for holder in fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            in_use.push(format!(
                "{member} is held by {} (LVM, RAID or dm-crypt)",
                holder.file_name().to_string_lossy()
            ));
        }
    }
    let holds_root = root_disk(root).is_some_and(|d| d == name);
    Ok(Target {
        path: path.to_path_buf(),
        kind: Kind::Disk(name.clone()),
        size: sectors * 512,
        model: (!model.is_empty()).then_some(model),
        removable: read(&sys.join("removable")).as_deref() == Some("1"),
        in_use,
        holds_root,
    })
}

/// The sysfs directory of the block device `major:minor`.
fn sys_dir(root: &Path, number: &str) -> Result<PathBuf> {
    let link = root.join("sys/dev/block").join(number);
    Ok(fs::canonicalize(&link)?)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The disk under the running system's `/`: the mount's device, its disk if
/// it is a partition, and the disk under a device-mapper device (LVM,
/// dm-crypt) through its `slaves`.
fn root_disk(root: &Path) -> Option<String> {
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    let number = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&"/")).then(|| f.get(2).map(|s| s.to_string()))?
    })?;
    let mut dir = sys_dir(root, &number).ok()?;
    for _ in 0..8 {
        if dir.join("partition").exists() {
            dir = dir.parent()?.to_path_buf();
        }
        let slave = fs::read_dir(dir.join("slaves"))
            .ok()
            .and_then(|mut d| d.next());
        match slave {
            Some(Ok(s)) => dir = fs::canonicalize(s.path()).ok()?,
            _ => return Some(file_name(&dir)),
        }
    }
    None
}

/// Why a target is refused; each message ends with what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("{0} holds the running system (its / is on it); name another disk")]
    HoldsRoot(String),
    #[error(
        "{disk} is in use: {why}; unmount it (and swapoff, vgchange -an, cryptsetup close) first"
    )]
    InUse { disk: String, why: String },
    #[error(
        "{0} is not a removable disk (an internal disk?); check the name, and pass --force if \
         you really mean it (some USB card readers report their cards as fixed)"
    )]
    NotRemovable(String),
    #[error("{target} holds {have} but the image needs {need}; use a bigger card")]
    TooSmall {
        target: String,
        have: String,
        need: String,
    },
}

/// Whether `image_size` bytes may go to `target`. The checks that guard
/// the running system come first and `--force` never skips them.
pub fn check(target: &Target, image_size: u64, force: bool) -> Result<(), Refusal> {
    let shown = target.path.display().to_string();
    if target.holds_root {
        return Err(Refusal::HoldsRoot(shown));
    }
    if !target.in_use.is_empty() {
        return Err(Refusal::InUse {
            disk: shown,
            why: target.in_use.join(", "),
        });
    }
    if !target.removable && !force {
        return Err(Refusal::NotRemovable(target.describe()));
    }
    if target.size < image_size {
        return Err(Refusal::TooSmall {
            target: shown,
            have: format!("{} bytes", target.size),
            need: format!("{image_size} bytes ({})", mib(image_size)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys and /proc: disk `sdb` (8:16) with partitions sdb1 and
    /// sdb2, and the system on `sda` (8:0, / on sda2).
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let fake = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            fake.disk("sda", "8:0", &["sda1", "sda2"], "0", "ATA", "Internal SSD");
            fake.disk(
                "sdb",
                "8:16",
                &["sdb1", "sdb2"],
                "1",
                "Generic",
                "SD Reader",
            );
            fake.put("proc/swaps", "Filename Type Size Used Priority\n");
            fake.mountinfo(&[("8:2", "/")]);
            fake
        }
        fn root(&self) -> &Path {
            self.dir.path()
        }
        fn put(&self, rel: &str, text: &str) {
            let p = self.root().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        fn disk(&self, name: &str, dev: &str, parts: &[&str], removable: &str, v: &str, m: &str) {
            let d = format!("sys/devices/pci0/host0/block/{name}");
            self.put(&format!("{d}/size"), "62333952\n");
            self.put(&format!("{d}/dev"), dev);
            self.put(&format!("{d}/removable"), removable);
            self.put(&format!("{d}/device/vendor"), &format!("{v}  \n"));
            self.put(&format!("{d}/device/model"), m);
            fs::create_dir_all(self.root().join(format!("{d}/holders"))).unwrap();
            let (major, minor) = dev.split_once(':').unwrap();
            let minor: u32 = minor.parse().unwrap();
            self.link(dev, &d);
            for (i, p) in parts.iter().enumerate() {
                let pd = format!("{d}/{p}");
                let pdev = format!("{major}:{}", minor + 1 + i as u32);
                self.put(&format!("{pd}/partition"), &(i + 1).to_string());
                self.put(&format!("{pd}/dev"), &pdev);
                fs::create_dir_all(self.root().join(format!("{pd}/holders"))).unwrap();
                self.link(&pdev, &pd);
            }
        }
        fn link(&self, dev: &str, to: &str) {
            let l = self.root().join("sys/dev/block").join(dev);
            fs::create_dir_all(l.parent().unwrap()).unwrap();
            symlink(self.root().join(to), l).unwrap();
        }
        fn mountinfo(&self, mounts: &[(&str, &str)]) {
            let text: String = mounts
                .iter()
                .enumerate()
                .map(|(i, (dev, at))| format!("{i} 1 {dev} / {at} rw - ext4 /dev/x rw\n"))
                .collect();
            self.put("proc/self/mountinfo", &text);
        }
        fn facts(&self, number: &str) -> Result<Target> {
            disk_facts(Path::new("/dev/sdX"), number, self.root())
        }
    }

    const IMAGE: u64 = 700 << 20;

    #[test]
    fn an_idle_removable_card_may_be_written() {
        let fake = Fake::new();
        let t = fake.facts("8:16").unwrap();
        assert_eq!(t.kind, Kind::Disk("sdb".into()));
        assert_eq!(t.size, 62333952 * 512);
        assert_eq!(t.model.as_deref(), Some("Generic SD Reader"));
        assert!(t.removable && !t.holds_root && t.in_use.is_empty(), "{t:?}");
        assert_eq!(check(&t, IMAGE, false), Ok(()));
        assert_eq!(
            t.describe(),
            "/dev/sdX (Generic SD Reader, 29.7 GiB, removable)"
        );
    }

    #[test]
    fn the_running_systems_disk_is_refused_even_with_force() {
        let fake = Fake::new();
        let t = fake.facts("8:0").unwrap();
        assert!(t.holds_root);
        let err = check(&t, IMAGE, true).unwrap_err();
        assert!(matches!(err, Refusal::HoldsRoot(_)), "{err}");
        // Under LVM: / on dm-0, whose slave is sda2.
        fake.put("sys/devices/virtual/block/dm-0/dev", "254:0");
        fake.put("sys/devices/virtual/block/dm-0/size", "100");
        fs::create_dir_all(fake.root().join("sys/devices/virtual/block/dm-0/slaves")).unwrap();
        symlink(
            fake.root().join("sys/devices/pci0/host0/block/sda/sda2"),
            fake.root()
                .join("sys/devices/virtual/block/dm-0/slaves/sda2"),
        )
        .unwrap();
        fake.link("254:0", "sys/devices/virtual/block/dm-0");
        fake.mountinfo(&[("254:0", "/")]);
        assert!(fake.facts("8:0").unwrap().holds_root);
        assert!(!fake.facts("8:16").unwrap().holds_root);
    }

    #[test]
    fn a_mounted_swapped_or_held_card_is_refused_even_with_force() {
        let fake = Fake::new();
        fake.mountinfo(&[("8:2", "/"), ("8:17", "/media/boot")]);
        let err = check(&fake.facts("8:16").unwrap(), IMAGE, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/sdX is in use: sdb1 is mounted at /media/boot; unmount it (and swapoff, \
             vgchange -an, cryptsetup close) first"
        );
        fake.mountinfo(&[("8:2", "/")]);
        fake.put(
            "proc/swaps",
            "Filename Type Size Used Priority\n/dev/sdb2 partition 1 0 -2\n",
        );
        let t = fake.facts("8:16").unwrap();
        assert_eq!(t.in_use, ["sdb2 is swap"]);
        fake.put("proc/swaps", "Filename Type Size Used Priority\n");
        fake.put("sys/devices/pci0/host0/block/sdb/sdb1/holders/dm-3", "");
        let t = fake.facts("8:16").unwrap();
        assert_eq!(t.in_use, ["sdb1 is held by dm-3 (LVM, RAID or dm-crypt)"]);
        assert!(matches!(check(&t, IMAGE, true), Err(Refusal::InUse { .. })));
    }

    #[test]
    fn a_fixed_disk_needs_force() {
        let fake = Fake::new();
        fake.put("sys/devices/pci0/host0/block/sdb/removable", "0");
        let t = fake.facts("8:16").unwrap();
        let err = check(&t, IMAGE, false).unwrap_err();
        assert!(err.to_string().contains("not removable"), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(check(&t, IMAGE, true), Ok(()));
    }

    #[test]
    fn a_small_card_is_refused_with_both_sizes() {
        let fake = Fake::new();
        fake.put("sys/devices/pci0/host0/block/sdb/size", "1000\n");
        let err = check(&fake.facts("8:16").unwrap(), IMAGE, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/sdX holds 512000 bytes but the image needs 734003200 bytes (700.0 MiB); \
             use a bigger card"
        );
    }

    #[test]
    fn a_partition_is_refused_with_its_disk_named() {
        let fake = Fake::new();
        let err = fake.facts("8:17").unwrap_err().to_string();
        assert_eq!(
            err,
            "/dev/sdX is partition sdb1 of /dev/sdb; name the whole disk: /dev/sdb"
        );
    }

    #[test]
    fn files_missing_paths_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let card = dir.path().join("card.img");
        fs::write(&card, vec![0u8; 4096]).unwrap();
        let t = inspect(&card, dir.path()).unwrap();
        assert_eq!((t.kind, t.size), (Kind::File, 4096));
        let err = inspect(&dir.path().join("nope.img"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("truncate -s 2G"), "{err}");
        let err = inspect(dir.path(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("neither a disk nor"), "{err}");
    }
}
