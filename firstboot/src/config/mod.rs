//! The `node.yaml` schema: what a node is told on its first boot.
//!
//! One schema, used in three places: `kiln validate` on a workstation, the
//! builder when it bakes a config into an image, and `kiln-firstboot` on the
//! node. [`parse`] checks the YAML against the schema (unknown keys are
//! errors) and then the rules that tie keys together; every error is a
//! [`ConfigError`] with the source name, line, column and a hint, and never
//! shows a secret (tokens, passwords, datastore credentials are `***`).
//!
//! A file is either one node's config or a rack file: a common part plus
//! `nodes:` entries keyed by MAC address or `serial:<board serial>`, each
//! merged over the common part; [`select_node`] picks this node's entry.
//! The renderers turn a [`NodeConfig`] into the files the node reads:
//! [`render_k3s_config`], [`render_registries`], [`render_networkd`],
//! [`render_timesyncd`], [`render_authorized_keys`], [`render_timezone`].
//! `docs/node-config.md` describes every key.
//!
//! ```yaml
//! role: server            # server | agent (required)
//! cluster-init: true      # server only: first server, embedded etcd
//! server: https://10.0.0.1:6443   # join URL (agent: required)
//! token: "secret"         # or token-file: /path (agent: one of them)
//! hostname: node-1
//! network: {interface: eth0, address: 10.0.0.5/24, gateway: 10.0.0.1}
//! k3s-args: { some-flag: value }  # any other k3s flag, passed through
//! ```
//!
//! To add a key: a field on [`raw::RawConfig`] (kebab-case, `Option`, so old
//! files stay valid) and its merge, a field on [`NodeConfig`], its rules in
//! `validate.rs` or `validate_host.rs`, its output in a renderer, a fixture
//! in `tests/fixtures/node-config/`, the golden files
//! (`KILN_BLESS=1 cargo test -p kiln-node`) and `docs/node-config.md`.

mod checker;
mod error;
mod host;
mod locate;
mod net;
mod rack;
mod raw;
mod registries;
mod render;
mod secret;
mod validate;
mod validate_host;
mod validate_k3s;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_rack;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use error::{ConfigError, ErrorKind, Location};
pub use host::{
    render_authorized_keys, render_networkd, render_timesyncd, render_timezone, Timezone,
    DEFAULT_MATCH as DEFAULT_NETWORK_MATCH,
};
pub use rack::{select_node, Match, NodeEntry, NodeIdentity, NodeKey, Selected};
pub use registries::{render_registries, Auth, Mirror, Registries, RegistryConfig, Tls};
pub(crate) use render::quote;
pub use render::render_k3s_config;
pub use secret::{redact_url, Secret, REDACTED};

/// The kubeconfig mode k3s is told to use when the config names none.
pub const DEFAULT_KUBECONFIG_MODE: &str = "0600";

/// One node's validated config (for a rack file: an entry merged over the
/// common part). Secrets are [`Secret`]s: `{:?}` never shows them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConfig {
    /// `server` or `agent`: the k3s subcommand.
    pub role: Role,
    /// Server only: start a new cluster with embedded etcd.
    pub cluster_init: bool,
    /// URL of a server to join (`https://HOST[:PORT]`).
    pub server: Option<String>,
    /// The cluster's join token, inline.
    pub token: Option<Secret>,
    /// Absolute path (on the node) of a file holding the join token.
    pub token_file: Option<String>,
    /// Server only: external datastore (`mysql://`, `postgres://`, etcd
    /// `https://`); it holds credentials.
    pub datastore_endpoint: Option<Secret>,
    /// The node's hostname (and so its Kubernetes node name).
    pub hostname: Option<String>,
    /// Server only: octal mode of the kubeconfig k3s writes.
    pub write_kubeconfig_mode: Option<String>,
    /// Server only: extra names for the API server certificate.
    pub tls_san: Vec<String>,
    /// Labels for the node (`key=value`).
    pub node_label: Vec<String>,
    /// Taints for the node (`key=value:Effect`).
    pub node_taint: Vec<String>,
    /// Server only: packaged components not to deploy (`traefik`, ...).
    pub disable: Vec<String>,
    /// IPs k3s advertises for the node (one per family).
    pub node_ip: Vec<String>,
    pub node_external_ip: Vec<String>,
    /// Interface flannel uses for the pod network.
    pub flannel_iface: Option<String>,
    /// Server only.
    pub flannel_backend: Option<FlannelBackend>,
    /// Server only: pod and service networks (one per family), cluster DNS.
    pub cluster_cidr: Vec<String>,
    pub service_cidr: Vec<String>,
    pub cluster_dns: Vec<String>,
    /// systemd-networkd settings for the node's uplink.
    pub network: Option<Network>,
    /// NTP servers for systemd-timesyncd.
    pub ntp: Vec<String>,
    /// OpenSSH public keys for root.
    pub ssh_authorized_keys: Vec<String>,
    /// `Area/City`, as in `/usr/share/zoneinfo`.
    pub timezone: Option<String>,
    /// k3s's `registries.yaml`.
    pub registries: Option<Registries>,
    /// Server only: file name → manifest k3s deploys.
    pub manifests: Manifests,
    /// Any other k3s flag, by its long name without dashes, passed through
    /// to the k3s config verbatim.
    pub k3s_args: K3sArgs,
}

/// What the node becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A k3s server (control plane).
    #[default]
    Server,
    /// A k3s agent (worker) joining a server.
    Agent,
}

impl Role {
    /// The k3s subcommand for this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// k3s's `--flannel-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlannelBackend {
    Vxlan,
    HostGw,
    WireguardNative,
    /// No flannel (bring your own CNI).
    #[serde(rename = "none")]
    NoFlannel,
}

impl FlannelBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::WireguardNative => "wireguard-native",
            FlannelBackend::NoFlannel => "none",
        }
    }
}

/// The node's uplink, as systemd-networkd configures it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// Match the interface by name (`eth0`)...
    pub interface: Option<String>,
    /// ... or by MAC (lowercase). Neither: every `en*`, `eth*`, `usb*`.
    pub mac: Option<String>,
    /// DHCP; defaults to true without `address`, false with one.
    pub dhcp: bool,
    /// Static `ADDRESS/PREFIX`.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
}

/// `k3s-args`, sorted. `{:?}` hides the values of flags that look secret
/// (`agent-token`, `etcd-s3-secret-key`, ...).
#[derive(Clone, PartialEq, Default)]
pub struct K3sArgs(pub BTreeMap<String, Value>);

impl Deref for K3sArgs {
    type Target = BTreeMap<String, Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for K3sArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.iter().map(|(k, v)| {
            let v = if secret::is_secret_key(k) {
                REDACTED.to_owned()
            } else {
                format!("{v:?}")
            };
            (k, v)
        });
        f.debug_map().entries(shown).finish()
    }
}

/// `manifests`, sorted by file name. `{:?}` shows names and sizes only: a
/// manifest may hold a Kubernetes Secret.
#[derive(Clone, PartialEq, Default)]
pub struct Manifests(pub BTreeMap<String, String>);

impl Deref for Manifests {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for Manifests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self
            .0
            .iter()
            .map(|(k, v)| (k, format!("{} bytes", v.len())));
        f.debug_map().entries(shown).finish()
    }
}

impl NodeConfig {
    /// The kubeconfig mode k3s is told to use.
    pub fn kubeconfig_mode(&self) -> &str {
        self.write_kubeconfig_mode
            .as_deref()
            .unwrap_or(DEFAULT_KUBECONFIG_MODE)
    }

    /// This config as a node.yaml (what the first boot saves for later
    /// boots). It holds the secrets: write it 0600.
    pub fn to_yaml(&self) -> String {
        let raw = rack::to_raw(self);
        serde_yaml::to_string(&raw).unwrap_or_default()
    }
}

/// A parsed and validated `node.yaml`: one node's config, or a rack file.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDoc {
    /// Where it came from (a path or a datasource name).
    pub source: String,
    /// The config for a node without an entry: the whole file when it has
    /// no `nodes:`, else the common part when it is complete (has `role`).
    pub common: Option<NodeConfig>,
    /// Rack mode: the `nodes:` entries, merged, in file order.
    pub nodes: Vec<NodeEntry>,
    /// Rack mode: a node without an entry waits instead of using `common`.
    pub wait_for_config: bool,
    /// Where `nodes:` is, for errors about this node's entry.
    pub(crate) nodes_at: Option<Location>,
}

impl NodeDoc {
    /// Whether this is a rack file (has `nodes:`).
    pub fn is_rack(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The one config of a file without `nodes:`.
    pub fn single(&self) -> Option<&NodeConfig> {
        if self.is_rack() {
            None
        } else {
            self.common.as_ref()
        }
    }
}

/// Parses and validates a `node.yaml`. `source` names it in errors
/// (`node.yaml`, `/usr/lib/kiln/node.yaml`, `fw_cfg opt/io.kiln/node.yaml`).
/// A rack file is checked whole: every entry merged over the common part.
pub fn parse(text: &str, source: &str) -> Result<NodeDoc, ConfigError> {
    parse_unscrubbed(text, source).map_err(|e| e.scrubbed(&secret::secrets_in_text(text)))
}

fn parse_unscrubbed(text: &str, source: &str) -> Result<NodeDoc, ConfigError> {
    if is_blank(text) {
        return Err(ConfigError::new(
            source,
            None,
            ErrorKind::Empty,
            None,
            "the node config is empty",
            "it needs at least `role: server` or `role: agent`",
        ));
    }
    let raw: raw::RawConfig =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(&e, text, source))?;
    rack::document(&raw, text, source)
}

/// Like [`parse`], for bytes read from a datasource: they must be UTF-8.
pub fn parse_bytes(bytes: &[u8], source: &str) -> Result<NodeDoc, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, source),
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            Err(ConfigError::new(
                source,
                Some(Location::new(line, column)),
                ErrorKind::Syntax,
                None,
                "not UTF-8 text",
                "save the file as UTF-8",
            ))
        }
    }
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}
