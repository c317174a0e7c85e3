//! `node.yaml` on the boot partition: the ESP (GPT name `kiln-esp`), or on
//! an MBR disk a FAT filesystem labelled `KILN-ESP` or `KILN-BOOT` (the
//! Raspberry Pi's boot partition). Someone flashing a card drops the file
//! there from any computer.
//!
//! Two halves, so tests need no device: [`locate`] finds the partition in
//! sysfs and `/dev` under a root; [`read_config`] reads the file from a
//! directory. In between, the partition is read where it is already
//! mounted, or mounted read-only on a private directory under `/run` and
//! unmounted again (through a [`Mounter`], faked in tests).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{under, Datasource, FetchError};
use crate::init::sysfs::{self, BlockDev, CLASS_BLOCK};
use crate::layout::ESP_PARTITION;

/// FAT volume labels that mark a kiln boot partition on an MBR disk.
pub const BOOT_LABELS: &[&str] = &["KILN-ESP", "KILN-BOOT"];
/// The file looked for (any case: FAT does not keep it).
pub const NODE_FILE: &str = "node.yaml";
/// A node.yaml larger than this is not one.
const MAX_SIZE: u64 = 1 << 20;
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mounts and unmounts; the system's, or a fake in tests.
pub trait Mounter {
    /// Mounts the FAT filesystem on `dev` read-only at `target`.
    fn mount_ro(&self, dev: &Path, target: &Path) -> io::Result<()>;
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// `mount(2)` and `umount(2)`.
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount_ro(&self, dev: &Path, target: &Path) -> io::Result<()> {
        use nix::mount::MsFlags;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        nix::mount::mount(Some(dev), target, Some("vfat"), flags, None::<&str>)
            .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount(target).map_err(io::Error::from)
    }
}

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
        let Some(part) = locate(root)? else {
            return Ok(None);
        };
        if let Some(dir) = mounted_at(root, &part) {
            return read_config(&dir, &part.dev);
        }
        let mount = TempMount::new(root, &part, self.mounter.as_ref())?;
        let result = read_config(&mount.dir, &part.dev);
        mount.finish()?;
        result
    }
}

fn fetch_err(what: impl Into<String>, source: io::Error) -> FetchError {
    FetchError {
        what: what.into(),
        source,
    }
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

/// Where the partition is mounted already (the system may automount the
/// ESP), under `root`.
fn mounted_at(root: &Path, part: &Partition) -> Option<PathBuf> {
    let number = part.dev_number.as_deref()?;
    let info = fs::read_to_string(under(root, MOUNTINFO)).ok()?;
    info.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        (f.len() > 4 && f[2] == number && f[3] == "/").then(|| under(root, &unescape(f[4])))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `node.yaml` (any case) in `dir`; `Ok(None)` when there is none.
pub fn read_config(dir: &Path, dev: &str) -> Result<Option<Vec<u8>>, FetchError> {
    let what = format!("{NODE_FILE} on {dev}");
    let entries = fs::read_dir(dir).map_err(|e| fetch_err(&what, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fetch_err(&what, e))?;
        if !entry
            .file_name()
            .to_string_lossy()
            .eq_ignore_ascii_case(NODE_FILE)
        {
            continue;
        }
        let mut bytes = Vec::new();
        fs::File::open(entry.path())
            .and_then(|f| f.take(MAX_SIZE + 1).read_to_end(&mut bytes))
            .map_err(|e| fetch_err(&what, e))?;
        if bytes.len() as u64 > MAX_SIZE {
            let why = io::Error::other("larger than 1 MiB; is it really a node.yaml?");
            return Err(fetch_err(&what, why));
        }
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// A private mount point under `/run/kiln`, mounted read-only; unmounted
/// and removed by [`TempMount::finish`] (or, on an early return, by Drop).
struct TempMount<'a> {
    dir: PathBuf,
    mounter: &'a dyn Mounter,
    mounted: bool,
}

impl<'a> TempMount<'a> {
    fn new(root: &Path, part: &Partition, mounter: &'a dyn Mounter) -> Result<Self, FetchError> {
        let dir = under(
            root,
            &format!("/run/kiln/boot-partition.{}", std::process::id()),
        );
        if dir.exists() {
            // Left over by a run that died: it may still be mounted.
            let _ = mounter.unmount(&dir);
            let _ = fs::remove_dir(&dir);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                fetch_err(
                    format!("{} (a mount point for the boot partition)", dir.display()),
                    e,
                )
            })?;
        let mut m = TempMount {
            dir,
            mounter,
            mounted: false,
        };
        mounter
            .mount_ro(&under(root, &part.dev), &m.dir)
            .map_err(|e| {
                fetch_err(
                    format!(
                        "{} (the boot partition, mounted read-only as vfat)",
                        part.dev
                    ),
                    e,
                )
            })?;
        m.mounted = true;
        Ok(m)
    }

    fn finish(mut self) -> Result<(), FetchError> {
        self.mounted = false;
        let r = self.mounter.unmount(&self.dir);
        let _ = fs::remove_dir(&self.dir);
        r.map_err(|e| {
            fetch_err(
                format!("{} (unmounting the boot partition)", self.dir.display()),
                e,
            )
        })
    }
}

impl Drop for TempMount<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = self.mounter.unmount(&self.dir);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
#[path = "boot_partition_tests.rs"]
mod tests;
