//! Renders `/etc/rancher/k3s/config.yaml`, the file k3s reads with
//! `--config`: keys are k3s's long flag names, lists repeat the flag. The
//! role is not a key, it is the subcommand (`k3s server` / `k3s agent`).
//! Every string is double-quoted, so no value is ever read back as another
//! type; the order is fixed, so the same node.yaml gives the same bytes.

use std::fmt::Write;

use serde_yaml::Value;

use super::{FlannelBackend, NodeConfig, Role, Secret};

/// The k3s config for `config`, as k3s reads it. It holds the token and
/// the datastore credentials: write it 0600.
pub fn render_k3s_config(config: &NodeConfig) -> String {
    let mut out = String::new();
    out.push_str("# k3s config written by kiln-firstboot from the node config (node.yaml).\n");
    out.push_str("# It is rewritten at every boot: change node.yaml, not this file.\n");
    let server = config.role == Role::Server;
    if server && config.cluster_init {
        out.push_str("cluster-init: true\n");
    }
    scalar(&mut out, "server", config.server.as_deref());
    scalar(&mut out, "token", config.token.as_ref().map(Secret::expose));
    scalar(&mut out, "token-file", config.token_file.as_deref());
    if server {
        let datastore = config.datastore_endpoint.as_ref().map(Secret::expose);
        scalar(&mut out, "datastore-endpoint", datastore);
        scalar(
            &mut out,
            "write-kubeconfig-mode",
            Some(config.kubeconfig_mode()),
        );
        list(&mut out, "tls-san", &config.tls_san);
        list(&mut out, "disable", &config.disable);
        let backend = config.flannel_backend.map(FlannelBackend::as_str);
        scalar(&mut out, "flannel-backend", backend);
        joined(&mut out, "cluster-cidr", &config.cluster_cidr);
        joined(&mut out, "service-cidr", &config.service_cidr);
        joined(&mut out, "cluster-dns", &config.cluster_dns);
    }
    list(&mut out, "node-ip", &config.node_ip);
    list(&mut out, "node-external-ip", &config.node_external_ip);
    scalar(&mut out, "flannel-iface", config.flannel_iface.as_deref());
    list(&mut out, "node-label", &config.node_label);
    list(&mut out, "node-taint", &config.node_taint);
    if !config.k3s_args.is_empty() {
        out.push_str("# passed through from k3s-args\n");
    }
    for (flag, value) in config.k3s_args.iter() {
        match value {
            Value::Sequence(items) => {
                let _ = writeln!(out, "{flag}:");
                for item in items {
                    let _ = writeln!(out, "  - {}", yaml_value(item));
                }
            }
            v => {
                let _ = writeln!(out, "{flag}: {}", yaml_value(v));
            }
        }
    }
    out
}

/// Dual-stack values as k3s documents them: one string, comma-separated.
fn joined(out: &mut String, key: &str, items: &[String]) {
    if !items.is_empty() {
        scalar(out, key, Some(&items.join(",")));
    }
}

fn scalar(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = writeln!(out, "{key}: {}", quote(v));
    }
}

fn list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{key}:");
    for item in items {
        let _ = writeln!(out, "  - {}", quote(item));
    }
}

/// A scalar of k3s-args (validation has rejected nulls, maps and tags).
fn yaml_value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        other => quote(&format!("{other:?}")),
    }
}

/// A YAML double-quoted scalar.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_yaml() {
        for s in [
            "plain",
            "0600",
            "true",
            "a\"b\\c",
            "line\nbreak\ttab\u{1}",
            "ünï",
            "# x: y",
            "\u{2028}",
        ] {
            let doc = format!("k: {}\n", quote(s));
            let back: std::collections::BTreeMap<String, String> =
                serde_yaml::from_str(&doc).unwrap();
            assert_eq!(back["k"], s, "{doc}");
        }
    }
}
