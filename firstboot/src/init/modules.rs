//! Loading the kernel modules listed in the initramfs
//! ([`layout::INITRAMFS_MODULE_LIST`](crate::layout::INITRAMFS_MODULE_LIST)).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

/// `finit_module` flag: the file is compressed, the kernel decompresses it
/// (needs `CONFIG_MODULE_DECOMPRESS`, Linux 5.17+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// The module paths in a list file: one per line, relative to the initramfs
/// root, already in dependency order; blank lines and `#` comments skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub loaded: usize,
    /// Already in the kernel (`EEXIST`).
    pub already: usize,
    /// Loaded, but only on a later pass: listed before a module it needs.
    pub out_of_order: Vec<String>,
    /// Path and error of each module that failed for good.
    pub failed: Vec<(String, Errno)>,
}

/// Loads each module of `list` (relative to `root`) with `load`, in order,
/// going on after failures. Modules that failed are tried again, pass after
/// pass, as long as a pass loads something: a list out of dependency order
/// still boots (and [`Report::out_of_order`] says so).
pub fn load_all(
    root: &Path,
    list: &[&str],
    mut load: impl FnMut(&Path) -> Result<(), Errno>,
) -> Report {
    let mut r = Report::default();
    let mut pending: Vec<&str> = list.to_vec();
    let mut first_pass = true;
    loop {
        let mut failed = Vec::new();
        for rel in &pending {
            match load(&root.join(rel.trim_start_matches('/'))) {
                Ok(()) if first_pass => r.loaded += 1,
                Ok(()) => {
                    r.loaded += 1;
                    r.out_of_order.push(rel.to_string());
                }
                Err(Errno::EEXIST) => r.already += 1,
                Err(e) => failed.push((*rel, e)),
            }
        }
        let progress = failed.len() < pending.len();
        pending = failed.iter().map(|(rel, _)| *rel).collect();
        if pending.is_empty() || !progress {
            r.failed = failed
                .into_iter()
                .map(|(rel, e)| (rel.to_string(), e))
                .collect();
            return r;
        }
        first_pass = false;
    }
}

/// What a `finit_module` error means, for the console.
pub fn explain(errno: Errno, file_exists: bool) -> String {
    match errno {
        Errno::ENOENT if !file_exists => "ENOENT: the file is not in the initramfs".into(),
        Errno::ENOENT => {
            "ENOENT: unknown symbol: a module it needs is not in the list (see the kernel log)"
                .into()
        }
        Errno::ENOEXEC => "ENOEXEC: not a module for this kernel (see the kernel log)".into(),
        e => e.to_string(),
    }
}

/// Loads one module file with `finit_module(2)`.
pub fn finit_module(path: &Path) -> Result<(), Errno> {
    let file =
        File::open(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let name = path.to_string_lossy();
    let flags = if [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: a valid fd, a NUL-terminated empty parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_list() {
        let text = "# storage\nlib/modules/6.1.0/kernel/drivers/virtio/virtio.ko\n\n  lib/modules/6.1.0/kernel/fs/ext4/ext4.ko  \n";
        assert_eq!(
            parse_list(text),
            [
                "lib/modules/6.1.0/kernel/drivers/virtio/virtio.ko",
                "lib/modules/6.1.0/kernel/fs/ext4/ext4.ko"
            ]
        );
    }

    #[test]
    fn loads_in_order_and_goes_on_after_failures() {
        let mut seen = Vec::new();
        let r = load_all(Path::new("/"), &["a.ko", "/b.ko", "c.ko"], |p| {
            seen.push(p.to_path_buf());
            match p.to_str() {
                Some("/a.ko") => Ok(()),
                Some("/b.ko") => Err(Errno::EEXIST),
                _ => Err(Errno::ENOENT),
            }
        });
        // a.ko loaded, so c.ko gets a second pass; then nothing moves.
        assert_eq!(seen, ["/a.ko", "/b.ko", "/c.ko", "/c.ko"].map(Path::new));
        assert_eq!(
            r,
            Report {
                loaded: 1,
                already: 1,
                out_of_order: vec![],
                failed: vec![("c.ko".into(), Errno::ENOENT)]
            }
        );
    }

    #[test]
    fn retries_a_list_out_of_order() {
        let mut loaded: Vec<String> = Vec::new();
        // virtio needs virtio_ring; missing needs something absent.
        let r = load_all(
            Path::new("/m"),
            &["virtio.ko", "missing.ko", "virtio_ring.ko"],
            |p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let ok = match name.as_str() {
                    "virtio.ko" => loaded.iter().any(|m| m == "virtio_ring.ko"),
                    "missing.ko" => false,
                    _ => true,
                };
                if ok {
                    loaded.push(name);
                    Ok(())
                } else {
                    Err(Errno::ENOENT)
                }
            },
        );
        assert_eq!(loaded, ["virtio_ring.ko", "virtio.ko"]);
        assert_eq!(r.loaded, 2);
        assert_eq!(r.out_of_order, ["virtio.ko"]);
        assert_eq!(r.failed, [("missing.ko".to_string(), Errno::ENOENT)]);
    }

    #[test]
    fn explains_errors() {
        assert!(explain(Errno::ENOENT, true).starts_with("ENOENT: unknown symbol"));
        assert!(explain(Errno::ENOENT, false).contains("not in the initramfs"));
        assert!(explain(Errno::EINVAL, true).starts_with("EINVAL"));
    }

    #[test]
    fn a_missing_file_is_enoent() {
        assert_eq!(
            finit_module(Path::new("/nonexistent/x.ko")),
            Err(Errno::ENOENT)
        );
    }
}
