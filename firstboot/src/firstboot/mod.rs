//! `kiln-firstboot`: turns the node config into a k3s node, at every boot.
//!
//! - [`apply`] (the `kiln-firstboot.service` oneshot): on the first boot,
//!   find the config (datasources, first match wins), validate it, pick this
//!   node's entry of a rack file ([`identity`]), apply it (hostname, k3s
//!   config, registries, manifests, network, NTP, SSH keys, timezone,
//!   air-gap images ([`airgap`]), role for `k3s.service`), save the effective config to the data partition
//!   (0600) and mark the first boot done. Later boots re-apply the saved
//!   copy, so they do not depend on the datasource any more. Nothing is
//!   written before the whole config has been checked.
//! - [`wait_ready`] (`kiln-ready.service`): waits for the files k3s writes
//!   once it runs.
//!
//! Every path is taken under [`Options::root`], so tests run on a temp dir.
//! Each step prints one `kiln: ...` line and checks before it writes.

mod airgap;
mod apply;
mod files;
pub mod fsutil;
pub mod identity;
mod ready;
pub mod vitals;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_pi_imager;
#[cfg(test)]
mod tests_secrets;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ConfigError, ErrorKind};
use crate::datasource::{self, FetchError};

pub use apply::apply;
pub use ready::wait_ready;

/// The config k3s reads (`k3s server --config ...`).
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// `K3S_ROLE=server|agent`, read by `k3s.service` (tmpfs: written each boot).
pub const K3S_ENV: &str = "/run/kiln/k3s.env";
/// The static hostname.
pub const HOSTNAME_FILE: &str = "/etc/hostname";
/// k3s's private registries (0600: may hold passwords).
pub const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// systemd-networkd unit for `network:` (sorts before the image's default).
pub const NETWORKD_UNIT: &str = "/etc/systemd/network/10-kiln.network";
/// systemd-timesyncd drop-in for `ntp:`.
pub const TIMESYNCD_DROPIN: &str = "/etc/systemd/timesyncd.conf.d/kiln.conf";
/// root's SSH keys (0600, in a 0700 directory).
pub const AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";
/// The timezone: a link into [`ZONEINFO`], and its name.
pub const LOCALTIME: &str = "/etc/localtime";
pub const TIMEZONE_FILE: &str = "/etc/timezone";
pub const ZONEINFO: &str = "/usr/share/zoneinfo";
/// k3s's data directory unless the config sets `data-dir`.
pub const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s";
/// The admin kubeconfig a k3s server writes unless `write-kubeconfig` says.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// How long rack mode waits for a first NIC on a live system.
const NIC_WAIT: Duration = Duration::from_secs(30);

/// Where `kiln-firstboot` works.
#[derive(Debug, Clone)]
pub struct Options {
    /// `/` on a node; a temp dir in tests.
    pub root: PathBuf,
    /// Also change the running system (`sethostname`), not only files.
    /// Only when `root` is `/`.
    pub live: bool,
    /// Rack mode: how long to wait for a NIC to show up when the node has
    /// none yet (USB NICs probe late). Zero in tests.
    pub nic_wait: Duration,
}

impl Options {
    /// Works on the running system.
    pub fn system() -> Self {
        Options::with_root(Path::new("/"))
    }

    /// Works under `root`; live only when `root` is `/`.
    pub fn with_root(root: &Path) -> Self {
        let live = root == Path::new("/");
        Options {
            root: root.to_owned(),
            live,
            nic_wait: if live { NIC_WAIT } else { Duration::ZERO },
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
    #[error("no node config found (looked in: {}); put a node.yaml on the boot partition, pass one with kiln boot --node, fill in the vApp properties on vSphere, or bake one in the spec", .0.join(", "))]
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

impl Error {
    /// Whether running again later may succeed without a new image: a rack
    /// file with no entry for this node yet (`wait-for-config: true`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Config(e) if e.kind == ErrorKind::NoEntry)
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
