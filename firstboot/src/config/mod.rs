//! The `node.yaml` schema: what a node is told on its first boot.
//!
//! One schema, used in three places: `kiln validate` on a workstation, the
//! builder when it bakes a config into an image, and `kiln-firstboot` on the
//! node. [`parse`] checks the YAML against the schema (unknown keys are
//! errors) and then the rules that tie keys together; every error is a
//! [`ConfigError`] with the source name, line, column and a hint.
//! [`render_k3s_config`] turns a valid config into k3s's own
//! `/etc/rancher/k3s/config.yaml`.
//!
//! ```yaml
//! role: server            # server | agent (required)
//! cluster-init: true      # server only: first server, embedded etcd
//! server: https://10.0.0.1:6443   # join URL (agent: required)
//! token: "secret"         # or token-file: /path (agent: one of them)
//! hostname: node-1
//! write-kubeconfig-mode: "0600"   # server only, default 0600
//! tls-san: [a, b]         # server only
//! node-label: ["k=v"]
//! node-taint: ["k=v:NoExecute"]
//! disable: [traefik]      # server only
//! k3s-args: { some-flag: value }  # any other k3s flag, passed through
//! ```
//!
//! To add a key: a field on [`NodeConfig`] (kebab-case name, `Option` or
//! `Vec` so old files stay valid), its rules in `validate.rs`, its output in
//! `render.rs`, a fixture in `tests/fixtures/node-config/` and, if it changes
//! the k3s config, a golden file (`KILN_BLESS=1 cargo test -p kiln-node`).

mod error;
mod render;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

pub use error::{ConfigError, ErrorKind, Location};
pub use render::render_k3s_config;

/// The kubeconfig mode k3s is told to use when the config names none.
pub const DEFAULT_KUBECONFIG_MODE: &str = "0600";

/// A parsed and validated `node.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// `server` or `agent`: the k3s subcommand.
    pub role: Role,
    /// Server only: start a new cluster with embedded etcd.
    #[serde(default)]
    pub cluster_init: bool,
    /// URL of a server to join (`https://HOST[:PORT]`).
    #[serde(default)]
    pub server: Option<String>,
    /// The cluster's join token, inline.
    #[serde(default)]
    pub token: Option<String>,
    /// Absolute path (on the node) of a file holding the join token.
    #[serde(default)]
    pub token_file: Option<String>,
    /// The node's hostname (and so its Kubernetes node name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Server only: octal mode of the kubeconfig k3s writes.
    #[serde(default)]
    pub write_kubeconfig_mode: Option<String>,
    /// Server only: extra names for the API server certificate.
    #[serde(default, deserialize_with = "one_or_many")]
    pub tls_san: Vec<String>,
    /// Labels for the node (`key=value`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub node_label: Vec<String>,
    /// Taints for the node (`key=value:Effect`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub node_taint: Vec<String>,
    /// Server only: packaged components not to deploy (`traefik`, ...).
    #[serde(default, deserialize_with = "one_or_many")]
    pub disable: Vec<String>,
    /// Any other k3s flag, by its long name without dashes, passed through
    /// to the k3s config verbatim.
    #[serde(default)]
    pub k3s_args: BTreeMap<String, serde_yaml::Value>,
}

/// What the node becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A k3s server (control plane).
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

impl NodeConfig {
    /// The kubeconfig mode k3s is told to use.
    pub fn kubeconfig_mode(&self) -> &str {
        self.write_kubeconfig_mode
            .as_deref()
            .unwrap_or(DEFAULT_KUBECONFIG_MODE)
    }
}

/// Parses and validates a `node.yaml`. `source` names it in errors
/// (`node.yaml`, `/usr/lib/kiln/node.yaml`, `fw_cfg opt/io.kiln/node.yaml`).
pub fn parse(text: &str, source: &str) -> Result<NodeConfig, ConfigError> {
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
    let config: NodeConfig =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(&e, text, source))?;
    validate::validate(&config, text, source)?;
    Ok(config)
}

/// Like [`parse`], for bytes read from a datasource: they must be UTF-8.
pub fn parse_bytes(bytes: &[u8], source: &str) -> Result<NodeConfig, ConfigError> {
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

/// Accepts `key: value` as well as `key: [a, b]`, as k3s's config does.
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(V)
}
