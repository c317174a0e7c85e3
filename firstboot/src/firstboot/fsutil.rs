//! Writing files so that a power cut at any moment leaves either the old
//! file or the new one, and never rewriting a file that is already right.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file was created or replaced.
    Changed,
    /// It already had these bytes and this mode.
    Unchanged,
}

/// Replaces `path` with `contents` and `mode`, unless it already has both:
/// a temp file in the same directory, mode set before the first byte,
/// fsync, rename, fsync the directory. Missing directories are created 0755.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<Written> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && meta.len() == contents.len() as u64
            && fs::read(path)? == contents
        {
            return Ok(Written::Unchanged);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.kiln-tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have cleared bits of `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(Written::Changed)
}

/// Creates `dir` and its missing parents with `mode`; an existing `dir`
/// gets `mode` (its parents are left as they are). For `/root/.ssh` (0700).
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<Written> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(Written::Unchanged);
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            Ok(Written::Changed)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(mode).create(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            Ok(Written::Changed)
        }
        Err(e) => Err(e),
    }
}

/// Points the symlink `path` at `target`, unless it already does: a temp
/// link in the same directory, renamed over `path`, then the directory
/// synced. Whatever `path` was before (a file, another link) is replaced.
pub fn replace_symlink(path: &Path, target: &str) -> io::Result<Written> {
    if fs::read_link(path).is_ok_and(|t| t == Path::new(target)) {
        return Ok(Written::Unchanged);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "link".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.kiln-tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(Written::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_leaves_alone() {
        let dir = std::env::temp_dir().join(format!("kiln-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("a/b/file");
        assert_eq!(
            write_atomic(&path, b"x\n", 0o600).unwrap(),
            Written::Changed
        );
        assert_eq!(
            write_atomic(&path, b"x\n", 0o600).unwrap(),
            Written::Unchanged
        );
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        // A wrong mode alone is fixed.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            write_atomic(&path, b"x\n", 0o600).unwrap(),
            Written::Changed
        );
        // A stale temp file from a power cut does not get in the way.
        fs::write(dir.join("a/b/.file.kiln-tmp"), "junk").unwrap();
        assert_eq!(
            write_atomic(&path, b"y\n", 0o600).unwrap(),
            Written::Changed
        );
        assert_eq!(fs::read(&path).unwrap(), b"y\n");
        assert!(!dir.join("a/b/.file.kiln-tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dirs_and_links() {
        let dir = std::env::temp_dir().join(format!("kiln-fsutil-dl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ssh = dir.join("root/.ssh");
        assert_eq!(ensure_dir(&ssh, 0o700).unwrap(), Written::Changed);
        assert_eq!(ensure_dir(&ssh, 0o700).unwrap(), Written::Unchanged);
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_dir(&ssh, 0o700).unwrap(), Written::Changed);
        assert_eq!(
            fs::metadata(&ssh).unwrap().permissions().mode() & 0o7777,
            0o700
        );

        let link = dir.join("etc/localtime");
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        fs::write(&link, "a file the image shipped").unwrap();
        let target = "/usr/share/zoneinfo/Europe/Berlin";
        assert_eq!(replace_symlink(&link, target).unwrap(), Written::Changed);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(target));
        assert_eq!(replace_symlink(&link, target).unwrap(), Written::Unchanged);
        assert_eq!(
            replace_symlink(&link, "/usr/share/zoneinfo/UTC").unwrap(),
            Written::Changed
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
