//! The thin layer of system calls: mounts, the partition ioctl, switching
//! root. No decisions here.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, execv};

/// `mount(2)`; `data` is the comma-separated option string.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> nix::Result<()> {
    let data = (!data.is_empty()).then_some(data);
    mount(Some(source), target, Some(fstype), flags, data)
}

/// Moves the mount at `from` to `to` (`MS_MOVE`).
pub fn move_mount(from: &str, to: &str) -> nix::Result<()> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
}

/// `mkdir -p` with mode 0755.
pub fn mkdir_p(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

// linux/blkpg.h
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
const BLKPG_DEVNAMELTH: usize = 64;
const BLKPG_VOLNAMELTH: usize = 64;

#[repr(C)]
struct BlkpgPartition {
    /// Bytes.
    start: libc::c_longlong,
    /// Bytes.
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; BLKPG_DEVNAMELTH],
    volname: [libc::c_char; BLKPG_VOLNAMELTH],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `BLKPG`, `_IO(0x12, 105)`.
const BLKPG: nix::sys::ioctl::ioctl_num_type = nix::request_code_none!(0x12, 105);

/// Tells the kernel that partition `pno` of the open disk now has
/// `length` bytes (`BLKPG_RESIZE_PARTITION`; `start` must be unchanged).
pub fn resize_partition(disk: &File, pno: u64, start: u64, length: u64) -> io::Result<()> {
    let too_big = |_| io::Error::new(io::ErrorKind::InvalidInput, "partition offset out of range");
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(too_big)?,
        length: i64::try_from(length).map_err(too_big)?,
        pno: libc::c_int::try_from(pno).map_err(too_big)?,
        devname: [0; BLKPG_DEVNAMELTH],
        volname: [0; BLKPG_VOLNAMELTH],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points to `part`, both live across the call.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &arg) };
    nix::Error::result(rc)?;
    Ok(())
}

/// `BLKRRPART`, `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: nix::sys::ioctl::ioctl_num_type = nix::request_code_none!(0x12, 95);

/// Has the kernel re-read the partition table of the open disk (none of its
/// partitions may be in use).
pub fn reread_partitions(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART, 0) };
    nix::Error::result(rc)?;
    Ok(())
}

/// Whether `/` is the initramfs (ramfs or tmpfs), i.e. safe to empty.
fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    // SAFETY: statfs writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c"/".as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between arches
    let kind = st.f_type as u32;
    rc == 0 && (kind == RAMFS_MAGIC || kind == TMPFS_MAGIC)
}

/// Deletes the initramfs contents under `dir` to give the RAM back, never
/// crossing into another filesystem (a mount point has another `st_dev`).
/// Best effort: returns how many entries it removed.
pub fn remove_tree_on_device(dir: &Path, dev: u64) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            removed += remove_tree_on_device(&path, dev);
            removed += usize::from(fs::remove_dir(&path).is_ok());
        } else {
            removed += usize::from(fs::remove_file(&path).is_ok());
        }
    }
    removed
}

/// Makes `new_root` the root and executes `init` there. Only returns on
/// failure. Mounts under `new_root` (`/proc`, `/sys`, `/dev`) must already
/// have been moved there.
pub fn switch_root(
    new_root: &str,
    init: &str,
) -> Result<std::convert::Infallible, (String, nix::Error)> {
    let step = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| (what, e)
    };
    chdir(new_root).map_err(step("changing directory to the new root"))?;
    if root_is_initramfs() {
        if let Ok(md) = fs::symlink_metadata("/") {
            let n = remove_tree_on_device(Path::new("/"), md.dev());
            super::console::debug(format_args!("freed the initramfs ({n} entries)"));
        }
    }
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("moving the new root onto /"))?;
    chroot(".").map_err(step("chroot into the new root"))?;
    chdir("/").map_err(step("changing directory to /"))?;
    let path = CString::new(Path::new(init).as_os_str().as_bytes())
        .map_err(|_| ("init path".into(), nix::Error::EINVAL))?;
    execv(&path, &[&path]).map_err(step(&format!("executing {init}")))
}

/// Stops here forever: PID 1 must never exit (the kernel would panic and,
/// with `panic=N`, reboot into the same failure in a loop).
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;

    #[test]
    fn removes_a_tree_on_one_device_only() {
        let t = TestDir::new("rm");
        let root = t.path().join("root");
        mkdir_p(&root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        fs::write(root.join("init"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let dev = fs::metadata(&root).unwrap().dev();
        // Another device: nothing is removed.
        assert_eq!(remove_tree_on_device(&root, dev.wrapping_add(1)), 0);
        assert_eq!(remove_tree_on_device(&root, dev), 5);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(Path::new("/etc").exists());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn blkpg_struct_matches_the_kernel_abi() {
        // 8 + 8 + 4 + 64 + 64, padded to 8.
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(BLKPG, 0x1269);
    }
}
