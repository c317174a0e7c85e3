//! Console output and the error shape of every step.
//!
//! Each line starts with `kiln-init: ` and goes out in one `write` to every
//! console the kernel prints on ([`crate::consoles`]): `/dev/console` until
//! `/sys` is mounted, then each `console=` of the command line, so the screen
//! shows what the serial port shows. Stderr if none can be opened.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::consoles::Consoles;

pub const PREFIX: &str = "kiln-init: ";

static CONSOLES: Mutex<Option<Consoles>> = Mutex::new(None);
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns [`debug`] lines on (`kiln.debug` on the kernel command line).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Opens the consoles again: once `/sys` is mounted the kernel's list of
/// active consoles replaces `/dev/console`.
pub fn reopen() {
    let mut consoles = CONSOLES.lock().unwrap_or_else(|e| e.into_inner());
    *consoles = Some(Consoles::open(Path::new("/")));
}

/// One console line.
pub fn say(msg: impl fmt::Display) {
    let line = format!("{PREFIX}{msg}\n");
    if cfg!(test) {
        // Unit tests run on a workstation: its consoles are not theirs.
        eprint!("{line}");
        return;
    }
    let mut consoles = CONSOLES.lock().unwrap_or_else(|e| e.into_inner());
    let consoles = consoles.get_or_insert_with(|| Consoles::open(Path::new("/")));
    if consoles.is_empty() {
        // Nothing to do if stderr fails too.
        let _ = std::io::stderr().write_all(line.as_bytes());
    } else {
        consoles.write_line(line.as_bytes());
    }
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
