//! A fake [`Mounter`] for tests: "mounts" by copying a directory into the
//! mount point, "unmounts" by emptying it, and logs every call.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::Mounter;

/// Copies `content` into the mount point; logs `mount <dev name> <fstype>`
/// and `unmount`; with `fail`, every mount fails with ENODEV.
pub struct FakeMounter {
    pub content: PathBuf,
    pub log: Rc<RefCell<Vec<String>>>,
    pub fail: bool,
}

impl Mounter for FakeMounter {
    fn mount_ro(&self, dev: &Path, target: &Path, fstype: &str) -> io::Result<()> {
        let name = dev.file_name().unwrap().to_string_lossy().into_owned();
        self.log.borrow_mut().push(format!("mount {name} {fstype}"));
        if self.fail {
            return Err(io::Error::from_raw_os_error(19)); // ENODEV
        }
        assert!(dev.exists(), "{}", dev.display());
        for e in fs::read_dir(&self.content)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                fs::create_dir(target.join(e.file_name()))?;
            } else {
                fs::copy(e.path(), target.join(e.file_name()))?;
            }
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.log.borrow_mut().push("unmount".into());
        for e in fs::read_dir(target)? {
            let p = e?.path();
            if p.is_dir() {
                fs::remove_dir(p)?;
            } else {
                fs::remove_file(p)?;
            }
        }
        Ok(())
    }
}
