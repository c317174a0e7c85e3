//! Rules for the k3s options that are not about joining: labels and
//! taints, node and cluster addresses, and the `k3s-args` pass-through.

use serde_yaml::Value;

use super::checker::Checker;
use super::net::{check_ifname, parse_ip, parse_network, Cidr};
use super::{ConfigError, ErrorKind, NodeConfig};

/// Keys node.yaml has its own field for; k3s-args must not repeat them.
const TYPED_KEYS: &[&str] = &[
    "cluster-init",
    "server",
    "token",
    "token-file",
    "datastore-endpoint",
    "write-kubeconfig-mode",
    "tls-san",
    "node-label",
    "node-taint",
    "disable",
    "node-ip",
    "node-external-ip",
    "flannel-iface",
    "flannel-backend",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
/// k3s's service network when the config names none.
const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
pub(super) fn check_labels_and_taints(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    for label in &c.node_label {
        let ok = label.split_once('=').is_some_and(|(k, _)| !k.is_empty());
        if !ok {
            let msg = format!("node-label `{label}` is not `key=value`");
            return Err(ck.err_item(&["node-label"], label, msg, "write labels as `key=value`"));
        }
    }
    for taint in &c.node_taint {
        let ok = taint.rsplit_once(':').is_some_and(|(kv, effect)| {
            let key = kv.split_once('=').map_or(kv, |(k, _)| k);
            !key.is_empty() && TAINT_EFFECTS.contains(&effect)
        });
        if !ok {
            let msg = format!("node-taint `{taint}` is not `key=value:Effect`");
            let hint = "Effect is NoSchedule, PreferNoSchedule or NoExecute";
            return Err(ck.err_item(&["node-taint"], taint, msg, hint));
        }
    }
    Ok(())
}

/// node-ip, node-external-ip, flannel-iface, cluster-cidr, service-cidr,
/// cluster-dns: well formed, at most one per address family, and the
/// networks consistent with each other.
pub(super) fn check_k3s_network(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    for (key, ips) in [
        ("node-ip", &c.node_ip),
        ("node-external-ip", &c.node_external_ip),
        ("cluster-dns", &c.cluster_dns),
    ] {
        let mut families = Vec::new();
        for ip in ips {
            let addr = parse_ip(ip).map_err(|why| {
                let msg = format!("{key} `{ip}` is not an IP address: {why}");
                ck.err_item(
                    &[key],
                    ip,
                    msg,
                    "write an address such as 10.0.0.5 or fd00::5",
                )
            })?;
            families.push(addr.is_ipv4());
        }
        dual_stack(key, &families, ips, ck)?;
    }
    if let Some(iface) = &c.flannel_iface {
        if let Err(why) = check_ifname(iface) {
            let msg = format!("flannel-iface `{iface}` is not an interface name: {why}");
            let hint = "name the node's uplink, e.g. eth0";
            return Err(ck.err(ErrorKind::InvalidValue, &["flannel-iface"], msg, hint));
        }
    }
    let mut nets: Vec<(&str, Vec<Cidr>)> = Vec::new();
    for (key, list) in [
        ("cluster-cidr", &c.cluster_cidr),
        ("service-cidr", &c.service_cidr),
    ] {
        let mut cidrs = Vec::new();
        for text in list {
            let cidr = parse_network(text).map_err(|why| {
                let msg = format!("{key} `{text}` is not a network CIDR: {why}");
                ck.err_item(&[key], text, msg, "write NETWORK/PREFIX, e.g. 10.42.0.0/16")
            })?;
            cidrs.push(cidr);
        }
        let families: Vec<bool> = cidrs.iter().map(|c| c.addr.is_ipv4()).collect();
        dual_stack(key, &families, list, ck)?;
        nets.push((key, cidrs));
    }
    for pod in &nets[0].1 {
        if let Some(svc) = nets[1].1.iter().find(|s| s.overlaps(pod)) {
            let msg = format!(
                "service-cidr {}/{} overlaps cluster-cidr {}/{}",
                svc.addr, svc.prefix, pod.addr, pod.prefix
            );
            let hint = "pods and services need separate networks (k3s: 10.42.0.0/16, 10.43.0.0/16)";
            return Err(ck.err(ErrorKind::Conflict, &["service-cidr"], msg, hint));
        }
    }
    let default_svc = [parse_network(DEFAULT_SERVICE_CIDR).expect("valid default")];
    let services: &[Cidr] = if nets[1].1.is_empty() {
        &default_svc
    } else {
        &nets[1].1
    };
    for dns in &c.cluster_dns {
        let Ok(ip) = parse_ip(dns) else { continue };
        let same_family: Vec<&Cidr> = services
            .iter()
            .filter(|s| s.addr.is_ipv4() == ip.is_ipv4())
            .collect();
        if let Some(svc) = same_family
            .first()
            .filter(|_| !same_family.iter().any(|s| s.contains(ip)))
        {
            let msg = format!(
                "cluster-dns {dns} is outside the service network {}/{}",
                svc.network(),
                svc.prefix
            );
            let hint = "CoreDNS gets an address of the service network, e.g. 10.43.0.10";
            return Err(ck.err_item(&["cluster-dns"], dns, msg, hint));
        }
    }
    Ok(())
}

/// At most two values, one IPv4 and one IPv6.
fn dual_stack(key: &str, v4: &[bool], items: &[String], ck: &Checker) -> Result<(), ConfigError> {
    let twice = v4.len() > 2 || (v4.len() == 2 && v4[0] == v4[1]);
    if twice {
        let msg = format!("{key} has more than one value of the same address family");
        let hint = "give at most one IPv4 and one IPv6 value (dual stack)";
        let item = items.get(1).map_or("", String::as_str);
        return Err(ck.err_item(&[key], item, msg, hint));
    }
    Ok(())
}

pub(super) fn check_k3s_args(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    for (flag, value) in c.k3s_args.iter() {
        let at = |msg: String, hint: &str| ck.err_item(&["k3s-args"], flag, msg, hint);
        let well_formed = flag
            .starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && flag
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
        let with_key = |mut e: ConfigError| {
            e.key = Some(match &ck.entry {
                Some(en) => format!("nodes.{}.k3s-args.{flag}", en.key),
                None => format!("k3s-args.{flag}"),
            });
            e
        };
        if !well_formed {
            let msg = format!(
                "k3s-args key `{}` is not a k3s flag name",
                flag.escape_default()
            );
            return Err(with_key(at(
                msg,
                "write the long flag name without dashes, e.g. `kubelet-arg`",
            )));
        }
        if TYPED_KEYS.contains(&flag.as_str()) {
            let msg = format!("`{flag}` has its own key in node.yaml");
            return Err(with_key(at(
                msg,
                &format!("write `{flag}:` at the top level, not under k3s-args"),
            )));
        }
        if flag == "config" {
            let msg = "k3s-args cannot set `config`".to_owned();
            return Err(with_key(at(
                msg,
                "kiln-firstboot writes the k3s config itself",
            )));
        }
        let ok = match value {
            Value::Null => {
                let msg = format!("k3s-args `{flag}` has no value");
                return Err(with_key(at(
                    msg,
                    &format!("write a value, e.g. `{flag}: true`"),
                )));
            }
            Value::Sequence(items) => items.iter().all(is_scalar),
            v => is_scalar(v),
        };
        if !ok {
            let msg = format!("k3s-args `{flag}` is not a value or a list of values");
            return Err(with_key(at(
                msg,
                "k3s flags take a string, number, boolean or a list of them",
            )));
        }
    }
    Ok(())
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::Bool(_) | Value::Number(_) | Value::String(_))
}
