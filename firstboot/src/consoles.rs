//! Every console the kernel prints on, so a `kiln` line reaches the screen
//! as well as the serial port.
//!
//! The kernel writes its own messages to each `console=` of the command
//! line, but a program writing to `/dev/console` reaches only the last one.
//! A NUC or a vSphere VM boots with `console=tty0 console=ttyS0`: through
//! `/dev/console` alone, a config error or `kiln: node ready` would go to a
//! serial port nobody watches, and the screen (the vSphere web console, the
//! NUC's monitor) would show nothing. So kiln writes each line to every
//! console in `/sys/class/tty/console/active`, the list systemd reads for the
//! same reason, and falls back to `/dev/console` when the list cannot be
//! read (early in the initramfs, before `/sys` is mounted).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The kernel's list of the consoles it prints on, separated by spaces.
pub const ACTIVE: &str = "sys/class/tty/console/active";

/// The device nodes of the active consoles under `root`
/// (`["/dev/tty0", "/dev/ttyS0"]`); `/dev/console` alone when the list is
/// missing or empty.
pub fn active(root: &Path) -> Vec<PathBuf> {
    let names = fs::read_to_string(root.join(ACTIVE)).unwrap_or_default();
    let mut paths: Vec<PathBuf> = Vec::new();
    for name in names.split_whitespace() {
        // A name is a tty in /dev; anything else is not ours to open.
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        let path = root.join("dev").join(name);
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        paths.push(root.join("dev/console"));
    }
    paths
}

/// The open consoles; a line written here goes to each of them.
#[derive(Default)]
pub struct Consoles {
    files: Vec<File>,
}

impl Consoles {
    /// Opens every active console under `root` that can be opened for
    /// writing. None at all is fine: a node must come up without a console.
    pub fn open(root: &Path) -> Consoles {
        let files = active(root)
            .iter()
            .filter_map(|path| {
                OpenOptions::new()
                    .append(true)
                    // A console must never become this process's
                    // controlling terminal (PID 1 has none).
                    .custom_flags(libc::O_NOCTTY)
                    .open(path)
                    .ok()
            })
            .collect();
        Consoles { files }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes `line` (which ends in `\n`) to each console in one `write`
    /// each, so lines from several processes do not interleave mid-line.
    /// Errors are ignored: a console that fails must not stop a boot.
    pub fn write_line(&self, line: &[u8]) {
        for mut file in &self.files {
            let _ = file.write_all(line);
        }
    }
}

/// A writer that passes everything to `inner` (the journal, through a
/// unit's stdout) and every complete line also to the consoles.
pub struct Tee<W: Write> {
    inner: W,
    consoles: Consoles,
    pending: Vec<u8>,
}

impl<W: Write> Tee<W> {
    pub fn new(inner: W, consoles: Consoles) -> Tee<W> {
        Tee {
            inner,
            consoles,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.consoles.write_line(&line);
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for Tee<W> {
    /// A last line without `\n` still reaches the consoles.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let mut line = std::mem::take(&mut self.pending);
            line.push(b'\n');
            self.consoles.write_line(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;

    /// A root whose consoles are plain files, as `active` names them.
    fn root_with(active_list: &str, ttys: &[&str]) -> TestDir {
        let dir = TestDir::new("consoles");
        let root = dir.path();
        fs::create_dir_all(root.join("sys/class/tty/console")).unwrap();
        fs::write(root.join(ACTIVE), active_list).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        for tty in ttys {
            fs::write(root.join("dev").join(tty), "").unwrap();
        }
        dir
    }

    fn read(dir: &TestDir, tty: &str) -> String {
        fs::read_to_string(dir.path().join("dev").join(tty)).unwrap()
    }

    #[test]
    fn screen_and_serial_both_get_every_line() {
        let dir = root_with("tty0 ttyS0\n", &["tty0", "ttyS0", "console"]);
        let mut journal = Vec::new();
        {
            let mut tee = Tee::new(&mut journal, Consoles::open(dir.path()));
            write!(tee, "kiln: node ").unwrap();
            writeln!(tee, "ready role=server").unwrap();
            write!(tee, "kiln: ERROR: unterminated").unwrap();
        }
        let want = "kiln: node ready role=server\nkiln: ERROR: unterminated\n";
        assert_eq!(read(&dir, "tty0"), want);
        assert_eq!(read(&dir, "ttyS0"), want);
        assert_eq!(
            read(&dir, "console"),
            "",
            "/dev/console would double a line"
        );
        assert_eq!(
            String::from_utf8(journal).unwrap(),
            "kiln: node ready role=server\nkiln: ERROR: unterminated"
        );
    }

    #[test]
    fn without_the_list_dev_console_is_used() {
        let dir = TestDir::new("consoles-none");
        fs::create_dir_all(dir.path().join("dev")).unwrap();
        fs::write(dir.path().join("dev/console"), "").unwrap();
        assert_eq!(active(dir.path()), vec![dir.path().join("dev/console")]);
        Consoles::open(dir.path()).write_line(b"kiln-init: starting\n");
        assert_eq!(read(&dir, "console"), "kiln-init: starting\n");
    }

    #[test]
    fn odd_names_and_duplicates_are_skipped_and_missing_ttys_ignored() {
        let dir = root_with("ttyS0 ../etc/passwd ttyS0 ttyAMA0\n", &["ttyS0"]);
        assert_eq!(
            active(dir.path()),
            vec![dir.path().join("dev/ttyS0"), dir.path().join("dev/ttyAMA0")]
        );
        let consoles = Consoles::open(dir.path());
        assert!(
            !consoles.is_empty(),
            "ttyS0 opens although ttyAMA0 does not"
        );
        consoles.write_line(b"x\n");
        assert_eq!(read(&dir, "ttyS0"), "x\n");
    }
}
