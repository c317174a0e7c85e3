//! `kiln-firstboot`: turns the node config into a k3s node, at every boot.
//!
//! - [`apply`] (the `kiln-firstboot.service` oneshot): on the first boot,
//!   find the config (datasources, first match wins), validate it, apply it
//!   (hostname, k3s config, role for `k3s.service`), save it to the data
//!   partition and mark the first boot done. Later boots re-apply the saved
//!   copy, so they do not depend on the datasource any more.
//! - [`wait_ready`] (`kiln-ready.service`): waits for the files k3s writes
//!   once it runs.
//!
//! Every path is taken under [`Options::root`], so tests run on a temp dir.
//! Each step prints one `kiln: ...` line and checks before it writes.

mod apply;
pub mod fsutil;
mod ready;

#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::datasource::{self, FetchError};

pub use apply::apply;
pub use ready::wait_ready;

/// The config k3s reads (`k3s server --config ...`).
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// `K3S_ROLE=server|agent`, read by `k3s.service` (tmpfs: written each boot).
pub const K3S_ENV: &str = "/run/kiln/k3s.env";
/// The static hostname.
pub const HOSTNAME_FILE: &str = "/etc/hostname";
/// k3s's data directory unless the config sets `data-dir`.
pub const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s";
/// The admin kubeconfig a k3s server writes unless `write-kubeconfig` says.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Where `kiln-firstboot` works.
#[derive(Debug, Clone)]
pub struct Options {
    /// `/` on a node; a temp dir in tests.
    pub root: PathBuf,
    /// Also change the running system (`sethostname`), not only files.
    /// Only when `root` is `/`.
    pub live: bool,
}

impl Options {
    /// Works on the running system.
    pub fn system() -> Self {
        Options::with_root(Path::new("/"))
    }

    /// Works under `root`; live only when `root` is `/`.
    pub fn with_root(root: &Path) -> Self {
        Options {
            root: root.to_owned(),
            live: root == Path::new("/"),
        }
    }

    /// `path` (absolute, as on the node) under the root.
    pub fn path(&self, path: &str) -> PathBuf {
        datasource::under(&self.root, path)
    }
}

/// Why `kiln-firstboot` failed; printed as `kiln: ERROR: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node config is broken.
    #[error("{0}")]
    Config(Box<ConfigError>),
    /// No datasource had a config; the names of those tried.
    #[error("no node config found (looked in: {}); pass one with kiln boot --node or bake one in the spec", .0.join(", "))]
    NotFound(Vec<String>),
    /// A datasource has a config it cannot read.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// k3s did not write its files in time.
    #[error("k3s not ready after {secs} s (role={role}): {} missing; see journalctl -u k3s", missing_list(.missing))]
    NotReady {
        secs: u64,
        role: String,
        missing: Vec<String>,
    },
    /// A file operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Anything else, as a sentence that ends with the fix.
    #[error("{0}")]
    Other(String),
}

fn missing_list(missing: &[String]) -> String {
    match missing {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

/// Wraps an io::Error with what was being done.
pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Prints one `kiln: ...` step line. Output errors are ignored: a missing
/// console must not stop the node from coming up.
pub(crate) fn say(out: &mut dyn Write, line: impl AsRef<str>) {
    let _ = writeln!(out, "kiln: {}", line.as_ref());
    let _ = out.flush();
}
