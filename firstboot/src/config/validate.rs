//! Rules that tie k3s keys together or constrain values beyond their type,
//! and the step from a (merged) [`RawConfig`] to a [`NodeConfig`]. Each
//! rule returns the first [`ConfigError`] it finds, located through the
//! [`Checker`] (serde keeps no positions of values). Host settings
//! (network, NTP, SSH, timezone, registries, manifests) are in
//! `validate_host.rs`.

use super::checker::Checker;
use super::error::Location;
use super::locate;
use super::raw::RawConfig;
use super::secret::redact_url;
use super::validate_k3s::{check_k3s_args, check_k3s_network, check_labels_and_taints};
use super::{validate_host, ConfigError, ErrorKind, K3sArgs, NodeConfig, Role};

/// Keys that k3s accepts only for `k3s server`.
const SERVER_ONLY: &[&str] = &[
    "cluster-init",
    "tls-san",
    "disable",
    "write-kubeconfig-mode",
    "datastore-endpoint",
    "flannel-backend",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "manifests",
];

/// A merged, complete config → [`NodeConfig`], or the first rule it breaks.
pub(super) fn resolve(raw: &RawConfig, ck: &Checker) -> Result<NodeConfig, ConfigError> {
    let Some(role) = raw.role else {
        let hint = match ck.entry {
            Some(_) => "add `role: server` or `role: agent` to this entry or to the common part",
            None => "add `role: server` or `role: agent`",
        };
        let (key, at) = match &ck.entry {
            Some(e) => (
                format!("nodes.{}", e.key),
                locate::locate_key(ck.text, &["nodes", e.key], 0),
            ),
            None => ("role".to_owned(), None::<Location>),
        };
        let msg = ck.message("missing field `role`".to_owned());
        return Err(ConfigError::new(
            ck.file,
            at,
            ErrorKind::MissingField,
            Some(&key),
            msg,
            hint,
        ));
    };
    let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
    let c = NodeConfig {
        role,
        cluster_init: raw.cluster_init.unwrap_or(false),
        server: raw.server.clone(),
        token: raw.token.clone(),
        token_file: raw.token_file.clone(),
        datastore_endpoint: raw.datastore_endpoint.clone(),
        hostname: raw.hostname.clone(),
        write_kubeconfig_mode: raw.write_kubeconfig_mode.clone(),
        tls_san: list(&raw.tls_san),
        node_label: list(&raw.node_label),
        node_taint: list(&raw.node_taint),
        disable: list(&raw.disable),
        node_ip: list(&raw.node_ip),
        node_external_ip: list(&raw.node_external_ip),
        flannel_iface: raw.flannel_iface.clone(),
        flannel_backend: raw.flannel_backend,
        cluster_cidr: list(&raw.cluster_cidr),
        service_cidr: list(&raw.service_cidr),
        cluster_dns: list(&raw.cluster_dns),
        network: None,
        ntp: list(&raw.ntp),
        ssh_authorized_keys: list(&raw.ssh_authorized_keys),
        timezone: raw.timezone.clone(),
        registries: raw.registries.clone(),
        manifests: super::Manifests(
            raw.manifests
                .as_ref()
                .map(|m| m.sorted())
                .unwrap_or_default(),
        ),
        k3s_args: K3sArgs(
            raw.k3s_args
                .as_ref()
                .map(|m| m.sorted())
                .unwrap_or_default(),
        ),
    };
    check_role(&c, raw, ck)?;
    check_join(&c, ck)?;
    if let Some(h) = &c.hostname {
        if let Err(why) = check_hostname(h) {
            let msg = format!("hostname `{h}` is not a valid RFC 1123 hostname: {why}");
            let hint = "use lowercase letters, digits and `-` (not first or last), \
                        dots between labels, at most 64 characters";
            return Err(ck.err(ErrorKind::InvalidValue, &["hostname"], msg, hint));
        }
    }
    if let Some(mode) = &c.write_kubeconfig_mode {
        if !is_octal_mode(mode) {
            let msg = format!("write-kubeconfig-mode `{mode}` is not an octal file mode");
            let hint = "quote three or four octal digits, e.g. \"0600\" or \"0644\"";
            return Err(ck.err(
                ErrorKind::InvalidValue,
                &["write-kubeconfig-mode"],
                msg,
                hint,
            ));
        }
    }
    check_labels_and_taints(&c, ck)?;
    check_k3s_network(&c, ck)?;
    check_k3s_args(&c, ck)?;
    let network = validate_host::check(&c, raw, ck)?;
    Ok(NodeConfig { network, ..c })
}

fn check_role(c: &NodeConfig, raw: &RawConfig, ck: &Checker) -> Result<(), ConfigError> {
    if c.role != Role::Agent {
        return Ok(());
    }
    for key in SERVER_ONLY {
        let set = match *key {
            "cluster-init" => c.cluster_init,
            "tls-san" => !c.tls_san.is_empty(),
            "disable" => !c.disable.is_empty(),
            "write-kubeconfig-mode" => c.write_kubeconfig_mode.is_some(),
            "datastore-endpoint" => c.datastore_endpoint.is_some(),
            "flannel-backend" => c.flannel_backend.is_some(),
            "cluster-cidr" => !c.cluster_cidr.is_empty(),
            "service-cidr" => !c.service_cidr.is_empty(),
            "cluster-dns" => !c.cluster_dns.is_empty(),
            _ => raw.manifests.as_ref().is_some_and(|m| !m.0.is_empty()),
        };
        if set {
            let msg = format!("`{key}` is a server setting, and this node is an agent");
            let hint = "remove it, or set `role: server`";
            return Err(ck.err(ErrorKind::Conflict, &[key], msg, hint));
        }
    }
    if c.server.is_none() {
        let msg = "an agent needs `server`, the URL of the server to join".to_owned();
        let hint = "add `server: https://<server address>:6443`";
        return Err(ck.err(ErrorKind::Conflict, &["role"], msg, hint));
    }
    if c.token.is_none() && c.token_file.is_none() {
        let msg = "an agent needs `token` or `token-file` to join".to_owned();
        let hint =
            "add `token: <token>`; a server keeps it in /var/lib/rancher/k3s/server/node-token";
        return Err(ck.err(ErrorKind::Conflict, &["role"], msg, hint));
    }
    Ok(())
}

fn check_join(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    if c.cluster_init && c.server.is_some() {
        let msg = "`cluster-init` starts a new cluster, `server` joins an existing one".to_owned();
        let hint = "the first server sets `cluster-init: true`, the others set `server:`";
        return Err(ck.err(ErrorKind::Conflict, &["cluster-init"], msg, hint));
    }
    if let Some(url) = &c.server {
        if let Err(why) = check_server_url(url) {
            let msg = format!(
                "server `{}` is not a k3s server URL: {why}",
                redact_url(url)
            );
            let hint = "write it as https://HOST:PORT, e.g. https://10.0.0.1:6443";
            return Err(ck.err(ErrorKind::InvalidValue, &["server"], msg, hint));
        }
    }
    if c.token.is_some() && c.token_file.is_some() {
        let msg = "`token` and `token-file` are both set".to_owned();
        return Err(ck.err(
            ErrorKind::Conflict,
            &["token-file"],
            msg,
            "keep one of them",
        ));
    }
    if let Some(t) = &c.token {
        let t = t.expose();
        if t.is_empty() || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            let msg = "`token` is empty or contains spaces or line breaks".to_owned();
            let hint = "paste the token as one word, in quotes";
            return Err(ck.err(ErrorKind::InvalidValue, &["token"], msg, hint));
        }
    }
    if let Some(f) = &c.token_file {
        if !f.starts_with('/') {
            let msg = format!("token-file `{f}` is not an absolute path");
            let hint = "give the file's full path on the node, e.g. /var/lib/kiln/token";
            return Err(ck.err(ErrorKind::InvalidValue, &["token-file"], msg, hint));
        }
    }
    if let Some(ep) = &c.datastore_endpoint {
        let key = &["datastore-endpoint"];
        if c.cluster_init {
            let msg = "`cluster-init` starts embedded etcd, `datastore-endpoint` names an \
                       external datastore"
                .to_owned();
            let hint = "keep one: servers of one cluster share either etcd or the datastore";
            return Err(ck.err(ErrorKind::Conflict, key, msg, hint));
        }
        if let Err(why) = check_datastore(ep.expose()) {
            let msg = format!(
                "datastore-endpoint `{}` is not a datastore k3s knows: {why}",
                redact_url(ep.expose())
            );
            let hint = "write mysql://USER:PASS@tcp(HOST:3306)/DB, \
                        postgres://USER:PASS@HOST:5432/DB or https://ETCD:2379[,https://...]";
            return Err(ck.err(ErrorKind::InvalidValue, key, msg, hint));
        }
    }
    Ok(())
}

/// MySQL, PostgreSQL, or a comma-separated list of etcd URLs.
fn check_datastore(ep: &str) -> Result<(), &'static str> {
    if ep.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or line breaks");
    }
    for scheme in ["mysql://", "postgres://", "postgresql://"] {
        if let Some(rest) = ep.strip_prefix(scheme) {
            return match rest.rsplit_once('@').map_or(rest, |(_, host)| host) {
                "" => Err("the host is missing"),
                _ => Ok(()),
            };
        }
    }
    if ep.starts_with("https://") || ep.starts_with("http://") {
        for url in ep.split(',') {
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .ok_or("every etcd endpoint in the list starts with https:// or http://")?;
            if host.is_empty() || host.starts_with([':', '/']) {
                return Err("an etcd endpoint has no host");
            }
        }
        return Ok(());
    }
    Err("it must start with mysql://, postgres:// or https:// (etcd)")
}

pub(super) fn check_server_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("it must start with https://")?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') || hostport.contains('?') || hostport.contains('@') {
        return Err("it must have no path, query or user");
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address needs a closing `]`")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the host contains spaces");
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => {}
            _ => return Err("the port is not a number from 1 to 65535"),
        }
    }
    Ok(())
}

/// RFC 1123 host name, lowercase (Kubernetes node names are), at most 64
/// bytes (the kernel's limit).
fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > 64 {
        return Err(format!("it has {} characters, the limit is 64", name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a dot at an end)".to_owned());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".to_owned());
        }
        if let Some(ch) = label
            .chars()
            .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-'))
        {
            return Err(if ch.is_ascii_uppercase() {
                "uppercase letters are not allowed (Kubernetes node names are lowercase)".to_owned()
            } else {
                format!("`{}` is not allowed", ch.escape_default())
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with `-`".to_owned());
        }
    }
    Ok(())
}

fn is_octal_mode(mode: &str) -> bool {
    let digits = match mode.len() {
        4 => mode.strip_prefix('0'),
        3 => Some(mode),
        _ => None,
    };
    digits.is_some_and(|d| d.chars().all(|c| ('0'..='7').contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["node-1", "a", "n1.example.com", "0abc"] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "-a", "a-", "a..b", "Node", "a_b", long.as_str(), ".a"] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        for ok in ["0600", "644", "0755", "000"] {
            assert!(is_octal_mode(ok), "{ok}");
        }
        for bad in ["0800", "1600", "60", "06000", "rw", ""] {
            assert!(!is_octal_mode(bad), "{bad}");
        }
    }

    #[test]
    fn server_urls() {
        for ok in [
            "https://10.0.0.1:6443",
            "https://k3s.lan",
            "https://[fd00::1]:6443",
            "https://a:1/",
        ] {
            assert_eq!(check_server_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://a:6443",
            "10.0.0.1:6443",
            "https://:6443",
            "https://a:0",
            "https://a:x",
            "https://a/p",
            "https://a b:1",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datastores() {
        for ok in [
            "mysql://k3s:pw@tcp(db:3306)/k3s",
            "postgres://k3s:pw@db:5432/k3s?sslmode=disable",
            "https://etcd-1:2379,https://etcd-2:2379",
            "http://127.0.0.1:2379",
        ] {
            assert_eq!(check_datastore(ok), Ok(()), "{ok}");
        }
        for bad in [
            "sqlite:///x",
            "db:5432",
            "mysql://",
            "postgres://u:p@",
            "https://a:2379,etcd-2:2379",
            "https://",
            "mysql://a b",
        ] {
            assert!(check_datastore(bad).is_err(), "{bad}");
        }
    }
}
