//! A fake [`Mounter`] for tests: "mounts" by copying a directory into the
//! mount point, "unmounts" by emptying it, and logs every call; and
//! [`FakeRoot`], a temp root whose `/content` is what the fake mounts.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::Mounter;
use crate::datasource::under;
use crate::init::testdir::TestDir;

/// A fake root; `/content` is what a [`FakeRoot::mounter`] mounts.
pub struct FakeRoot {
    dir: TestDir,
    log: Rc<RefCell<Vec<String>>>,
}

impl FakeRoot {
    pub fn new(tag: &str) -> FakeRoot {
        let f = FakeRoot {
            dir: TestDir::new(tag),
            log: Rc::default(),
        };
        fs::create_dir_all(f.path("/content")).unwrap();
        f
    }
    pub fn path(&self, p: &str) -> PathBuf {
        under(self.dir.path(), p)
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// Writes `bytes` to `p` (under the root), making its directories.
    pub fn put(&self, p: &str, bytes: &[u8]) {
        let p = self.path(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    /// A mounter of `/content` that logs here; with `fail`, mounts fail.
    pub fn mounter(&self, fail: bool) -> Box<FakeMounter> {
        Box::new(FakeMounter {
            content: self.path("/content"),
            log: self.log.clone(),
            fail,
        })
    }
    /// The mounters' calls so far.
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

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
