//! Every file a node config turns into, planned before anything is
//! written: [`plan`] is a pure function of the config, so a config that
//! cannot be applied fails before the first byte changes on disk.

use crate::config::{self, NodeConfig, Role};

use super::{
    AUTHORIZED_KEYS, K3S_CONFIG, K3S_DATA_DIR, K3S_ENV, NETWORKD_UNIT, REGISTRIES, TIMESYNCD_DROPIN,
};

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileWrite {
    /// What the console line says before `wrote <path>`; `None` for the
    /// k3s files whose lines the boot tests know (`wrote <path>`).
    pub label: Option<String>,
    /// Absolute path on the node.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// Mode of the directory, when it must be private (created if missing).
    pub private_dir: Option<u32>,
}

/// Every file but the hostname, the token file and the timezone (which
/// depend on the running system), in the order they are written.
pub(crate) fn plan(c: &NodeConfig) -> Vec<FileWrite> {
    let mut out = Vec::new();
    let file = |label: Option<String>, path: &str, text: String, mode: u32| FileWrite {
        label,
        path: path.to_owned(),
        contents: text.into_bytes(),
        mode,
        private_dir: None,
    };
    // Holds the token and the datastore credentials.
    out.push(file(None, K3S_CONFIG, config::render_k3s_config(c), 0o600));
    if let Some(r) = &c.registries {
        let label = format!("registries ({})", r.summary());
        out.push(file(
            Some(label),
            REGISTRIES,
            config::render_registries(r),
            0o600,
        ));
    }
    if c.role == Role::Server && !c.manifests.is_empty() {
        let dir = format!("{}/server/manifests", data_dir(c));
        for (name, text) in c.manifests.iter() {
            let path = format!("{dir}/{name}");
            let mut f = file(Some(format!("manifest {name}")), &path, text.clone(), 0o600);
            f.private_dir = Some(0o700);
            out.push(f);
        }
    }
    if let Some(n) = &c.network {
        let label = format!("network {}", network_summary(n));
        out.push(file(
            Some(label),
            NETWORKD_UNIT,
            config::render_networkd(n),
            0o644,
        ));
    }
    if let Some(text) = config::render_timesyncd(c) {
        let label = format!("ntp {}", c.ntp.join(", "));
        out.push(file(Some(label), TIMESYNCD_DROPIN, text, 0o644));
    }
    if let Some(text) = config::render_authorized_keys(c) {
        let n = c.ssh_authorized_keys.len();
        let label = format!(
            "ssh {n} authorized key{} for root",
            if n == 1 { "" } else { "s" }
        );
        let mut f = file(Some(label), AUTHORIZED_KEYS, text, 0o600);
        f.private_dir = Some(0o700);
        out.push(f);
    }
    out.push(file(None, K3S_ENV, format!("K3S_ROLE={}\n", c.role), 0o644));
    out
}

/// k3s's data dir: `data-dir` from k3s-args, else the default.
pub(crate) fn data_dir(c: &NodeConfig) -> String {
    c.k3s_args
        .get("data-dir")
        .and_then(|v| v.as_str())
        .map_or(K3S_DATA_DIR, |d| d.trim_end_matches('/'))
        .to_owned()
}

/// `eth0 static 10.0.0.5/24 via 10.0.0.1`, `MAC aa:.. dhcp`.
fn network_summary(n: &config::Network) -> String {
    let which = match (&n.interface, &n.mac) {
        (Some(i), _) => i.clone(),
        (None, Some(m)) => format!("MAC {m}"),
        (None, None) => config::DEFAULT_NETWORK_MATCH.replace(' ', ","),
    };
    let mut how = match (&n.address, n.dhcp) {
        (Some(a), false) => format!("static {a}"),
        (Some(a), true) => format!("dhcp + {a}"),
        (None, _) => "dhcp".to_owned(),
    };
    if let Some(g) = &n.gateway {
        how.push_str(&format!(" via {g}"));
    }
    if !n.dns.is_empty() {
        how.push_str(&format!(" dns {}", n.dns.join(",")));
    }
    format!("{which} {how}")
}
