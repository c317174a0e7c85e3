//! Console output and the error shape of every step.
//!
//! Each line starts with `kiln-init: ` and goes out in one `write` to
//! `/dev/console` (the kernel's console, a serial port on every kiln board),
//! or to stderr if that cannot be opened.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub const PREFIX: &str = "kiln-init: ";

static CONSOLE: OnceLock<Option<File>> = OnceLock::new();
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns [`debug`] lines on (`kiln.debug` on the kernel command line).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// One console line.
pub fn say(msg: impl fmt::Display) {
    let line = format!("{PREFIX}{msg}\n");
    let console = CONSOLE.get_or_init(|| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/console")
            .ok()
    });
    // Nothing to do if the console itself fails.
    let _ = match console {
        Some(f) => (&*f).write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// A console line only shown with `kiln.debug`.
pub fn debug(msg: impl fmt::Display) {
    if DEBUG.load(Ordering::Relaxed) {
        say(format_args!("debug: {msg}"));
    }
}

/// A failed step, printed as `ERROR: <what failed>: <why>; <what to check>`.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub why: String,
    pub check: String,
}

impl Failure {
    pub fn new(what: impl Into<String>, why: impl fmt::Display, check: impl Into<String>) -> Self {
        Failure {
            what: what.into(),
            why: why.to_string(),
            check: check.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR: {}: {}; {}", self.what, self.why, self.check)
    }
}

pub type Step<T> = Result<T, Failure>;

/// `result.or_fail("mounting /proc", "check ...")` turns any error into a
/// [`Failure`].
pub trait OrFail<T> {
    fn or_fail(self, what: impl Into<String>, check: &str) -> Step<T>;
}

impl<T, E: fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl Into<String>, check: &str) -> Step<T> {
        self.map_err(|e| Failure::new(what, e, check))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reads_as_one_line() {
        let f: Step<()> = Err("no such device").or_fail("mounting /sysroot", "is squashfs loaded?");
        assert_eq!(
            f.unwrap_err().to_string(),
            "ERROR: mounting /sysroot: no such device; is squashfs loaded?"
        );
    }
}
