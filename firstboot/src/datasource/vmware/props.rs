//! The kiln vApp properties (`guestinfo.kiln.<name>`, defined for the OVA
//! in `builder/src/output/ovf.rs`) and the node.yaml they make.
//!
//! `node-yaml` carries a whole node.yaml in base64 and then stands alone:
//! every other property must be empty, except `role` and `cluster-init`
//! at the values the wizard fills in by itself (`server`, false), which
//! cannot be emptied there. Otherwise the properties become a node.yaml
//! ([`Generated`]) that [`Generated::check`] runs through the usual
//! [`config::parse`]; its errors name the property to fix, not a line of
//! text nobody wrote.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::{self, quote, ConfigError, Secret};

/// What every kiln property key starts with.
pub const PREFIX: &str = "guestinfo.kiln.";
/// The property names, in the wizard's order.
pub const NAMES: &[&str] = &[
    "role",
    "cluster-init",
    "server",
    "token",
    "hostname",
    "ip",
    "gateway",
    "dns",
    "ntp",
    "ssh-authorized-key",
    "node-yaml",
];
/// node.yaml keys (as config errors name them) and the property each
/// comes from.
const YAML_KEYS: &[(&str, &str)] = &[
    ("role", "role"),
    ("cluster-init", "cluster-init"),
    ("server", "server"),
    ("token", "token"),
    ("hostname", "hostname"),
    ("network.address", "ip"),
    ("network.gateway", "gateway"),
    ("network.dns", "dns"),
    ("ntp", "ntp"),
    ("ssh-authorized-keys", "ssh-authorized-key"),
];

/// The kiln properties that hold a value (trimmed, not empty). `{:?}`
/// never shows the token.
#[derive(Default, Clone, PartialEq)]
pub struct Props {
    values: BTreeMap<&'static str, String>,
    token: Option<Secret>,
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Props")
            .field("values", &self.values)
            .field("token", &self.token)
            .finish()
    }
}

/// What the properties say.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Nothing filled in: every property empty or at the wizard's own
    /// value (`role` server, `cluster-init` false).
    NotFilled,
    /// `node-yaml`, decoded: a node.yaml as the user wrote it.
    NodeYaml(Vec<u8>),
    /// A node.yaml made from the other properties.
    Generated(Generated),
}

impl Props {
    /// The kiln properties among `pairs` (an OVF environment's, or
    /// guestinfo values); `Ok(None)` when there is no kiln key at all. An
    /// unknown `guestinfo.kiln.` key is an error (a typo would otherwise be
    /// dropped without a word).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Props>, String> {
        let mut props = Props::default();
        let mut any = false;
        for (key, value) in pairs {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(&name) = NAMES.iter().find(|n| **n == name) else {
                return Err(format!(
                    "unknown property {key}; kiln knows {PREFIX}{{{}}}",
                    NAMES.join(",")
                ));
            };
            any = true;
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if name == "token" {
                props.token = Some(Secret::new(value));
            } else {
                props.values.insert(name, value.to_owned());
            }
        }
        Ok(any.then_some(props))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Set to something else than the wizard fills in by itself.
    fn is_filled(&self, name: &str) -> bool {
        match (name, self.get(name)) {
            ("token", _) => self.token.is_some(),
            (_, None) => false,
            ("role", Some(v)) => v != "server",
            ("cluster-init", Some(v)) => parse_bool(v) != Some(false),
            _ => true,
        }
    }

    /// The node config these properties describe. `source` names them in
    /// the generated file's header.
    pub fn outcome(&self, source: &str) -> Result<Outcome, String> {
        let filled: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| self.is_filled(n))
            .collect();
        if filled.is_empty() {
            return Ok(Outcome::NotFilled);
        }
        if let Some(b64) = self.get("node-yaml") {
            let others: Vec<String> = filled
                .iter()
                .filter(|n| **n != "node-yaml")
                .map(|n| format!("{PREFIX}{n}"))
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "{PREFIX}node-yaml holds a whole node.yaml, but {} {} set too; \
                     put {} into the node.yaml and clear {}, or clear {PREFIX}node-yaml",
                    others.join(", "),
                    if others.len() == 1 { "is" } else { "are" },
                    if others.len() == 1 { "it" } else { "them" },
                    if others.len() == 1 { "it" } else { "them" },
                ));
            }
            let bytes = crate::datasource::decode_base64(b64).ok_or_else(|| {
                format!(
                    "{PREFIX}node-yaml is not base64; encode the file with base64 -w0 node.yaml"
                )
            })?;
            return Ok(Outcome::NodeYaml(bytes));
        }
        self.generate(source).map(Outcome::Generated)
    }

    fn generate(&self, source: &str) -> Result<Generated, String> {
        let mut g = Generated::default();
        g.line(
            None,
            format!("# node.yaml made by kiln-firstboot from {source}"),
        );
        let role = self
            .get("role")
            .ok_or_else(|| format!("{PREFIX}role is empty; set it to server or agent"))?;
        g.line(Some("role"), format!("role: {}", quote(role)));
        if let Some(v) = self.get("cluster-init") {
            let init = parse_bool(v).ok_or_else(|| {
                format!(
                    "{PREFIX}cluster-init is `{}`, not a boolean; use true or false",
                    v.escape_default()
                )
            })?;
            if init {
                g.line(Some("cluster-init"), "cluster-init: true".to_owned());
            }
        }
        if let Some(v) = self.get("server") {
            g.line(Some("server"), format!("server: {}", quote(v)));
        }
        if let Some(t) = &self.token {
            g.line(Some("token"), format!("token: {}", quote(t.expose())));
        }
        if let Some(v) = self.get("hostname") {
            g.line(Some("hostname"), format!("hostname: {}", quote(v)));
        }
        let (ip, gateway, dns) = (self.get("ip"), self.get("gateway"), self.get("dns"));
        if ip.is_none() && gateway.is_some() {
            return Err(format!(
                "{PREFIX}gateway is set but {PREFIX}ip is empty (DHCP); \
                 give {PREFIX}ip as ADDRESS/PREFIX, or clear {PREFIX}gateway"
            ));
        }
        if ip.is_some() || dns.is_some() {
            g.line(Some("ip"), "network:".to_owned());
        }
        if let Some(v) = ip {
            g.line(Some("ip"), format!("  address: {}", quote(v)));
        }
        if let Some(v) = gateway {
            g.line(Some("gateway"), format!("  gateway: {}", quote(v)));
        }
        if let Some(v) = dns {
            g.line(Some("dns"), format!("  dns: {}", list(v)));
        }
        if let Some(v) = self.get("ntp") {
            g.line(Some("ntp"), format!("ntp: {}", list(v)));
        }
        if let Some(v) = self.get("ssh-authorized-key") {
            let line = format!("ssh-authorized-keys: [{}]", quote(v));
            g.line(Some("ssh-authorized-key"), line);
        }
        Ok(g)
    }
}

/// `true`/`false` in any case (vSphere writes `True` and `False`).
fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `a, b,` → `["a", "b"]`.
fn list(v: &str) -> String {
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(quote)
        .collect();
    format!("[{}]", items.join(", "))
}

/// A node.yaml made from properties, and which property made each line.
/// `{:?}` shows the line count only: the text holds the token.
#[derive(Default, PartialEq)]
pub struct Generated {
    pub text: String,
    /// For line N (1-based), `lines[N - 1]`.
    lines: Vec<Option<&'static str>>,
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Generated({} lines)", self.lines.len())
    }
}

impl Generated {
    fn line(&mut self, from: Option<&'static str>, text: String) {
        self.text.push_str(&text);
        self.text.push('\n');
        self.lines.push(from);
    }

    /// Validates the text as every node.yaml is; an error names the
    /// property at fault (`guestinfo.kiln.ip: ...`) instead of a position
    /// in the generated text.
    pub fn check(&self, source: &str) -> Result<(), ConfigError> {
        config::parse(&self.text, source)
            .map(drop)
            .map_err(|e| self.explain(e, source))
    }

    fn explain(&self, e: ConfigError, source: &str) -> ConfigError {
        let by_key = e.key.as_deref().and_then(|k| {
            let k = k.split('[').next().unwrap_or(k);
            YAML_KEYS.iter().find(|(y, _)| *y == k).map(|(_, p)| *p)
        });
        let by_line = e
            .location
            .and_then(|l| self.lines.get((l.line as usize).checked_sub(1)?).copied())
            .flatten();
        let property = by_key.or(by_line).map(|p| format!("{PREFIX}{p}"));
        // serde starts some messages with the key (`role: unknown variant`);
        // the property says it already.
        let message = match e.key.as_deref() {
            Some(k) if property.is_some() => {
                e.message.strip_prefix(k).and_then(|m| m.strip_prefix(": "))
            }
            _ => None,
        }
        .unwrap_or(&e.message);
        ConfigError {
            file: property.clone().unwrap_or_else(|| source.to_owned()),
            location: None,
            kind: e.kind,
            key: property,
            message: rename_keys(message),
            hint: rename_keys(&e.hint),
        }
    }
}

/// `` `address: 10.0.0.5/24` `` in a message → `` `guestinfo.kiln.ip=10.0.0.5/24` ``:
/// settings written as node.yaml keys, said as properties. Bare words stay,
/// but for `` `address` `` (`` `server` `` is also a role).
fn rename_keys(text: &str) -> String {
    let mut out = String::new();
    let mut parts = text.split('`');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('`');
        let inside = i % 2 == 0;
        let part = if part == "address" { "address:" } else { part };
        let renamed = part.split_once(':').and_then(|(key, value)| {
            let leaf = |y: &str| y.rsplit('.').next() == Some(key);
            let (_, p) = YAML_KEYS.iter().find(|(y, _)| leaf(y))?;
            let value = value.trim();
            Some(if value.is_empty() {
                format!("{PREFIX}{p}")
            } else {
                format!("{PREFIX}{p}={value}")
            })
        });
        match renamed {
            Some(r) if inside => out.push_str(&r),
            _ => out.push_str(part),
        }
    }
    out
}
