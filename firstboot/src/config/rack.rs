//! Rack mode: one file for many nodes. The top level is the common part;
//! `nodes:` maps a MAC address (`aa:bb:cc:dd:ee:ff`, any case) or
//! `serial:<board serial>` to a partial config merged over it (the entry
//! wins, lists replace, mappings merge). [`document`] validates every
//! entry merged; [`select_node`] picks the one for this node.
//!
//! An entry keyed by MAC whose `network:` names no interface configures
//! the interface with that MAC.

use std::fmt;

use serde_yaml::Value;

use super::checker::{Checker, Entry};
use super::error::Location;
use super::locate;
use super::net::normalize_mac;
use super::raw::{RawConfig, RawNetwork, UniqueMap};
use super::validate::resolve;
use super::{ConfigError, ErrorKind, NodeConfig, NodeDoc};

/// What identifies this node: its NICs' MACs and its board serial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// MAC addresses of the physical NICs (any case).
    pub macs: Vec<String>,
    /// The board's serial number (device tree `serial-number`).
    pub serial: Option<String>,
}

impl NodeIdentity {
    /// `MAC a, b; serial s` (or `no NIC found; no serial`), for the console
    /// and for errors.
    pub fn describe(&self) -> String {
        let macs = if self.macs.is_empty() {
            "no NIC found".to_owned()
        } else {
            format!("MAC {}", self.macs.join(", "))
        };
        let serial = self
            .serial
            .as_deref()
            .map_or("no serial".to_owned(), |s| format!("serial {s}"));
        format!("{macs}; {serial}")
    }
}

/// A `nodes:` key, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKey {
    /// Lowercase MAC.
    Mac(String),
    /// Board serial, lowercase.
    Serial(String),
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKey::Mac(m) => write!(f, "MAC {m}"),
            NodeKey::Serial(s) => write!(f, "serial {s}"),
        }
    }
}

/// One `nodes:` entry, merged over the common part and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEntry {
    /// The key as written in the file.
    pub key: String,
    pub selector: NodeKey,
    pub config: NodeConfig,
    /// Where the key is.
    pub at: Option<Location>,
}

/// Which part of the file a node's config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The file has no `nodes:`.
    Single,
    /// This entry (key as written) matched this node.
    Entry { key: String, by: NodeKey },
    /// A rack file without an entry for this node: the common part applies.
    NoEntry,
}

/// The config for this node, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub matched: Match,
    pub config: NodeConfig,
}

/// Picks this node's config: the only one, the entry matching one of its
/// MACs or its serial, or the common part. An error (kind
/// [`ErrorKind::NoEntry`]) when there is no entry and the file says
/// `wait-for-config: true` or has no complete common part; a Conflict
/// when two entries match.
pub fn select_node(doc: &NodeDoc, id: &NodeIdentity) -> Result<Selected, ConfigError> {
    if !doc.is_rack() {
        let config = doc
            .common
            .clone()
            .ok_or_else(|| no_entry(doc, id, "the file has no config"))?;
        return Ok(Selected {
            matched: Match::Single,
            config,
        });
    }
    let macs: Vec<String> = id.macs.iter().map(|m| m.to_ascii_lowercase()).collect();
    let serial = id.serial.as_ref().map(|s| s.trim().to_ascii_lowercase());
    let hits: Vec<&NodeEntry> = doc
        .nodes
        .iter()
        .filter(|e| match &e.selector {
            NodeKey::Mac(m) => macs.contains(m),
            NodeKey::Serial(s) => serial.as_ref() == Some(s),
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(Selected {
            matched: Match::Entry {
                key: one.key.clone(),
                by: one.selector.clone(),
            },
            config: one.config.clone(),
        }),
        [] if doc.wait_for_config => Err(no_entry(doc, id, "wait-for-config is set")),
        [] => match &doc.common {
            Some(config) => Ok(Selected {
                matched: Match::NoEntry,
                config: config.clone(),
            }),
            None => Err(no_entry(doc, id, "the common part has no role")),
        },
        [a, b, ..] => Err(ConfigError::new(
            &doc.source,
            b.at,
            ErrorKind::Conflict,
            Some(&format!("nodes.{}", b.key)),
            format!("nodes `{}` and `{}` both match this node", a.key, b.key),
            "keep one entry per node: a node with two NICs is listed under one MAC",
        )),
    }
}

fn no_entry(doc: &NodeDoc, id: &NodeIdentity, why: &str) -> ConfigError {
    let example = id.macs.first().map_or_else(
        || "aa:bb:cc:dd:ee:ff".to_owned(),
        |m| m.to_ascii_lowercase(),
    );
    let hint = if why == "wait-for-config is set" {
        format!("add an entry `{example}:` under `nodes:`; the node retries until it has one")
    } else {
        format!("add an entry `{example}:` under `nodes:`, or `role:` to the common part")
    };
    ConfigError::new(
        &doc.source,
        doc.nodes_at,
        ErrorKind::NoEntry,
        Some("nodes"),
        format!(
            "no entry in `nodes:` for this node ({}) and {why}",
            id.describe()
        ),
        hint,
    )
}

/// Validates a whole document: a single config, or a rack file.
pub(super) fn document(raw: &RawConfig, text: &str, source: &str) -> Result<NodeDoc, ConfigError> {
    let ck = Checker::new(text, source);
    let Some(nodes) = &raw.nodes else {
        if raw.wait_for_config.is_some() {
            let msg = "`wait-for-config` only applies to a rack file (with `nodes:`)".to_owned();
            let hint = "remove it, or add `nodes:` entries keyed by MAC or `serial:<serial>`";
            return Err(ck.err(ErrorKind::Conflict, &["wait-for-config"], msg, hint));
        }
        return Ok(NodeDoc {
            source: source.to_owned(),
            common: Some(resolve(raw, &ck)?),
            nodes: Vec::new(),
            wait_for_config: false,
            nodes_at: None,
        });
    };
    let nodes_at = locate::locate_key(text, &["nodes"], 0);
    if nodes.0.is_empty() {
        let msg = "`nodes:` has no entries".to_owned();
        let hint = "add entries keyed by MAC (`aa:bb:cc:dd:ee:ff:`) or `serial:<serial>:`, or remove `nodes:`";
        return Err(ck.err(ErrorKind::InvalidValue, &["nodes"], msg, hint));
    }
    let keys = check_keys(nodes, text, source, nodes_at)?;
    let common = match raw.role {
        Some(_) => Some(resolve(&without_rack(raw), &ck)?),
        None => None,
    };
    let common_value = serde_yaml::to_value(without_rack(raw)).unwrap_or_default();
    let written: Value = serde_yaml::from_str(text).unwrap_or_default();
    let mut entries = Vec::new();
    for ((key, entry), (selector, at)) in nodes.0.iter().zip(keys) {
        let mut merged = entry.over(raw);
        if let Some(as_written) = entry_value(&written, key) {
            merged = clear_nulls(merged, as_written);
        }
        if let (NodeKey::Mac(mac), Some(n)) = (&selector, merged.network.as_mut()) {
            if n.interface.is_none() && n.mac.is_none() {
                n.mac = Some(mac.clone());
            }
        }
        let entry_ck = Checker {
            entry: Some(Entry {
                key,
                set: serde_yaml::to_value(entry).unwrap_or_default(),
                common: common_value.clone(),
            }),
            ..Checker::new(text, source)
        };
        let config = resolve(&merged, &entry_ck)?;
        entries.push(NodeEntry {
            key: key.clone(),
            selector,
            config,
            at,
        });
    }
    Ok(NodeDoc {
        source: source.to_owned(),
        common,
        nodes: entries,
        wait_for_config: raw.wait_for_config.unwrap_or(false),
        nodes_at,
    })
}

/// Each key parsed, none twice (MACs compared without case), no nesting.
fn check_keys(
    nodes: &UniqueMap<RawConfig>,
    text: &str,
    source: &str,
    nodes_at: Option<Location>,
) -> Result<Vec<(NodeKey, Option<Location>)>, ConfigError> {
    let written = locate::children(text, &["nodes"]);
    let mut out: Vec<(NodeKey, Option<Location>)> = Vec::new();
    for (i, (key, entry)) in nodes.0.iter().enumerate() {
        let at = written
            .iter()
            .find(|(k, _)| k == key)
            .map(|w| w.1)
            .or(nodes_at);
        let err = |kind, msg: String, hint: &str| {
            ConfigError::new(source, at, kind, Some(&format!("nodes.{key}")), msg, hint)
        };
        let selector = parse_key(key).map_err(|why| {
            let msg = format!("nodes key `{}` is not a MAC address or `serial:<serial>`: {why}", key.escape_default());
            err(ErrorKind::InvalidValue, msg, "key entries by MAC, `aa:bb:cc:dd:ee:ff:`, or by board serial, `\"serial:10000000abcdef01\":`")
        })?;
        if let Some(j) = out.iter().position(|(s, _)| *s == selector) {
            let first = &nodes.0[j].0;
            let line = out[j]
                .1
                .map_or(String::new(), |l| format!(" (line {})", l.line));
            let msg = format!("nodes `{key}` is the same node as `{first}`{line}");
            let hint = "MAC addresses and serials are compared without case: keep one entry";
            return Err(err(ErrorKind::DuplicateField, msg, hint));
        }
        for (nested, set) in [
            ("nodes", entry.nodes.is_some()),
            ("wait-for-config", entry.wait_for_config.is_some()),
        ] {
            if set {
                let at = locate::locate_key(text, &["nodes", key, nested], 0);
                let msg =
                    format!("nodes.{key}: `{nested}` belongs at the top level of a rack file");
                let hint = "move it out of the entry";
                return Err(ConfigError::new(
                    source,
                    at,
                    ErrorKind::Conflict,
                    Some(&format!("nodes.{key}.{nested}")),
                    msg,
                    hint,
                ));
            }
        }
        debug_assert_eq!(out.len(), i);
        out.push((selector, at));
    }
    Ok(out)
}

fn parse_key(key: &str) -> Result<NodeKey, String> {
    if let Some(serial) = key
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("serial:"))
        .map(|_| &key[7..])
    {
        let serial = serial.trim();
        if serial.is_empty() || serial.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the serial is empty or has spaces".to_owned());
        }
        return Ok(NodeKey::Serial(serial.to_ascii_lowercase()));
    }
    normalize_mac(key).map(NodeKey::Mac)
}

/// The entry `key` of `nodes:` as written (nulls and all).
fn entry_value<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    let nodes = doc.get("nodes")?.as_mapping()?;
    nodes.iter().find_map(|(k, v)| {
        let text = match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).ok()?.trim_end().to_owned(),
        };
        (text == key).then_some(v)
    })
}

/// An entry's `key: null` (or `~`) removes what the common part sets for
/// that key (`server: ~` in the first server's entry of a rack of agents).
fn clear_nulls(merged: RawConfig, entry: &Value) -> RawConfig {
    fn remove(target: &mut Value, entry: &Value) -> bool {
        let (Some(t), Some(e)) = (target.as_mapping_mut(), entry.as_mapping()) else {
            return false;
        };
        let mut changed = false;
        for (k, v) in e {
            if v.is_null() {
                changed |= t.remove(k).is_some();
            } else if let Some(inner) = t.get_mut(k) {
                changed |= remove(inner, v);
            }
        }
        changed
    }
    let Ok(mut value) = serde_yaml::to_value(&merged) else {
        return merged;
    };
    if !remove(&mut value, entry) {
        return merged;
    }
    serde_yaml::from_value(value).unwrap_or(merged)
}

fn without_rack(raw: &RawConfig) -> RawConfig {
    RawConfig {
        nodes: None,
        wait_for_config: None,
        ..raw.clone()
    }
}

/// A config back as a node.yaml mapping (what [`NodeConfig::to_yaml`]
/// writes); parsing it gives the same config.
pub(super) fn to_raw(c: &NodeConfig) -> RawConfig {
    let list = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
    fn map<V: Clone>(m: &std::collections::BTreeMap<String, V>) -> Option<UniqueMap<V>> {
        (!m.is_empty()).then(|| UniqueMap(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
    RawConfig {
        role: Some(c.role),
        cluster_init: c.cluster_init.then_some(true),
        server: c.server.clone(),
        token: c.token.clone(),
        token_file: c.token_file.clone(),
        datastore_endpoint: c.datastore_endpoint.clone(),
        hostname: c.hostname.clone(),
        write_kubeconfig_mode: c.write_kubeconfig_mode.clone(),
        tls_san: list(&c.tls_san),
        node_label: list(&c.node_label),
        node_taint: list(&c.node_taint),
        disable: list(&c.disable),
        node_ip: list(&c.node_ip),
        node_external_ip: list(&c.node_external_ip),
        flannel_iface: c.flannel_iface.clone(),
        flannel_backend: c.flannel_backend,
        cluster_cidr: list(&c.cluster_cidr),
        service_cidr: list(&c.service_cidr),
        cluster_dns: list(&c.cluster_dns),
        network: c.network.as_ref().map(|n| RawNetwork {
            interface: n.interface.clone(),
            mac: n.mac.clone(),
            dhcp: Some(n.dhcp),
            address: n.address.clone(),
            gateway: n.gateway.clone(),
            dns: list(&n.dns),
        }),
        ntp: list(&c.ntp),
        ssh_authorized_keys: list(&c.ssh_authorized_keys),
        timezone: c.timezone.clone(),
        registries: c.registries.clone(),
        manifests: map(&c.manifests.0),
        k3s_args: map(&c.k3s_args.0),
        wait_for_config: None,
        nodes: None,
    }
}
