//! Reading a file from a filesystem on a device: in place where the system
//! mounted it already, else mounted read-only on a private directory under
//! `/run/kiln` and unmounted again. The boot partition (vfat) and the OVF
//! environment CD (iso9660) share it; mounting goes through a [`Mounter`],
//! faked in tests.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{fetch_err, under, FetchError};

/// A file to read larger than this is not what it claims to be.
pub const MAX_FILE_SIZE: u64 = 1 << 20;
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mounts and unmounts; the system's, or a fake in tests.
pub trait Mounter {
    /// Mounts the `fstype` filesystem on `dev` read-only at `target`.
    fn mount_ro(&self, dev: &Path, target: &Path, fstype: &str) -> io::Result<()>;
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// `mount(2)` and `umount(2)`.
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount_ro(&self, dev: &Path, target: &Path, fstype: &str) -> io::Result<()> {
        use nix::mount::MsFlags;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        nix::mount::mount(Some(dev), target, Some(fstype), flags, None::<&str>)
            .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount(target).map_err(io::Error::from)
    }
}

/// A filesystem to read from, and how messages name it.
#[derive(Debug, Clone, Copy)]
pub struct Volume<'a> {
    /// `/dev/vda1`, `/dev/sr0`.
    pub dev: &'a str,
    /// `major:minor`, to find it in mountinfo.
    pub dev_number: Option<&'a str>,
    /// `vfat`, `iso9660`.
    pub fstype: &'a str,
    /// `the boot partition`, `the OVF environment CD`.
    pub what: &'a str,
    /// The private mount point's name under `/run/kiln` (plus the pid).
    pub mount_name: &'a str,
}

/// Runs `read` on the directory where `vol` is mounted: where the system
/// has it already, else a private read-only mount, unmounted afterwards.
pub fn read_from<T>(
    root: &Path,
    vol: &Volume,
    mounter: &dyn Mounter,
    read: impl FnOnce(&Path) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    if let Some(dir) = vol.dev_number.and_then(|n| mounted_at(root, n)) {
        return read(&dir);
    }
    let mount = TempMount::new(root, vol, mounter)?;
    let result = read(&mount.dir);
    mount.finish(vol)?;
    result
}

/// The first file in `dir` named one of `names` (any case: FAT and plain
/// ISO 9660 do not keep it); `Ok(None)` when there is none. `what` names
/// it in errors.
pub fn read_named(dir: &Path, names: &[&str], what: &str) -> Result<Option<Vec<u8>>, FetchError> {
    let entries = fs::read_dir(dir).map_err(|e| fetch_err(what, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fetch_err(what, e))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(name) = names.iter().find(|n| file_name.eq_ignore_ascii_case(n)) else {
            continue;
        };
        let mut bytes = Vec::new();
        fs::File::open(entry.path())
            .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
            .map_err(|e| fetch_err(what, e))?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            let why = io::Error::other(format!("larger than 1 MiB; is it really a {name}?"));
            return Err(fetch_err(what, why));
        }
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// Where the device `number` (`major:minor`) is mounted already (the
/// system may automount it), under `root`.
fn mounted_at(root: &Path, number: &str) -> Option<PathBuf> {
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

/// A private mount point under `/run/kiln`, mounted read-only; unmounted
/// and removed by [`TempMount::finish`] (or, on an early return, by Drop).
struct TempMount<'a> {
    dir: PathBuf,
    mounter: &'a dyn Mounter,
    mounted: bool,
}

impl<'a> TempMount<'a> {
    fn new(root: &Path, vol: &Volume, mounter: &'a dyn Mounter) -> Result<Self, FetchError> {
        let dir = under(
            root,
            &format!("/run/kiln/{}.{}", vol.mount_name, std::process::id()),
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
                let what = format!("{} (a mount point for {})", dir.display(), vol.what);
                fetch_err(what, e)
            })?;
        let mut m = TempMount {
            dir,
            mounter,
            mounted: false,
        };
        mounter
            .mount_ro(&under(root, vol.dev), &m.dir, vol.fstype)
            .map_err(|e| {
                let what = format!(
                    "{} ({}, mounted read-only as {})",
                    vol.dev, vol.what, vol.fstype
                );
                fetch_err(what, e)
            })?;
        m.mounted = true;
        Ok(m)
    }

    fn finish(mut self, vol: &Volume) -> Result<(), FetchError> {
        self.mounted = false;
        let r = self.mounter.unmount(&self.dir);
        let _ = fs::remove_dir(&self.dir);
        r.map_err(|e| {
            let what = format!("{} (unmounting {})", self.dir.display(), vol.what);
            fetch_err(what, e)
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
#[path = "mount_fake.rs"]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/boot/efi\\040dir"), "/boot/efi dir");
        assert_eq!(unescape("/a\\134b\\x"), "/a\\b\\x");
    }
}
