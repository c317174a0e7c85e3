//! Rules that tie keys together or constrain values beyond their type. Each
//! returns the first [`ConfigError`] it finds, located by searching the key
//! in the text (serde does not keep positions of values).

use serde_yaml::Value;

use super::error::{locate_item, locate_key};
use super::{ConfigError, ErrorKind, NodeConfig, Role};

/// Keys that k3s accepts only for `k3s server`.
const SERVER_ONLY: &[&str] = &[
    "cluster-init",
    "tls-san",
    "disable",
    "write-kubeconfig-mode",
];

/// Keys node.yaml has its own field for; k3s-args must not repeat them.
const TYPED_KEYS: &[&str] = &[
    "cluster-init",
    "server",
    "token",
    "token-file",
    "write-kubeconfig-mode",
    "tls-san",
    "node-label",
    "node-taint",
    "disable",
];

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

struct Checker<'a> {
    text: &'a str,
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, kind: ErrorKind, key: &str, msg: String, hint: &str) -> ConfigError {
        ConfigError::new(
            self.file,
            locate_key(self.text, key),
            kind,
            Some(key),
            msg,
            hint,
        )
    }

    fn err_item(&self, key: &str, item: &str, msg: String, hint: &str) -> ConfigError {
        let at = locate_item(self.text, key, item);
        ConfigError::new(self.file, at, ErrorKind::InvalidValue, Some(key), msg, hint)
    }
}

pub(super) fn validate(c: &NodeConfig, text: &str, file: &str) -> Result<(), ConfigError> {
    let ck = Checker { text, file };
    check_role(c, &ck)?;
    check_join(c, &ck)?;
    if let Some(h) = &c.hostname {
        if let Err(why) = check_hostname(h) {
            let msg = format!("hostname `{h}` is not a valid RFC 1123 hostname: {why}");
            let hint = "use lowercase letters, digits and `-` (not first or last), \
                        dots between labels, at most 64 characters";
            return Err(ck.err(ErrorKind::InvalidValue, "hostname", msg, hint));
        }
    }
    if let Some(mode) = &c.write_kubeconfig_mode {
        if !is_octal_mode(mode) {
            let msg = format!("write-kubeconfig-mode `{mode}` is not an octal file mode");
            let hint = "quote three or four octal digits, e.g. \"0600\" or \"0644\"";
            return Err(ck.err(ErrorKind::InvalidValue, "write-kubeconfig-mode", msg, hint));
        }
    }
    check_labels_and_taints(c, &ck)?;
    check_k3s_args(c, &ck)
}

fn check_role(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    if c.role != Role::Agent {
        return Ok(());
    }
    for key in SERVER_ONLY {
        let set = match *key {
            "cluster-init" => c.cluster_init,
            "tls-san" => !c.tls_san.is_empty(),
            "disable" => !c.disable.is_empty(),
            _ => c.write_kubeconfig_mode.is_some(),
        };
        if set {
            let msg = format!("`{key}` is a server setting, and this node is an agent");
            let hint = "remove it, or set `role: server`";
            return Err(ck.err(ErrorKind::Conflict, key, msg, hint));
        }
    }
    if c.server.is_none() {
        let msg = "an agent needs `server`, the URL of the server to join".to_owned();
        let hint = "add `server: https://<server address>:6443`";
        return Err(ck.err(ErrorKind::Conflict, "role", msg, hint));
    }
    if c.token.is_none() && c.token_file.is_none() {
        let msg = "an agent needs `token` or `token-file` to join".to_owned();
        let hint =
            "add `token: <token>`; a server keeps it in /var/lib/rancher/k3s/server/node-token";
        return Err(ck.err(ErrorKind::Conflict, "role", msg, hint));
    }
    Ok(())
}

fn check_join(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    if c.cluster_init && c.server.is_some() {
        let msg = "`cluster-init` starts a new cluster, `server` joins an existing one".to_owned();
        let hint = "the first server sets `cluster-init: true`, the others set `server:`";
        return Err(ck.err(ErrorKind::Conflict, "cluster-init", msg, hint));
    }
    if let Some(url) = &c.server {
        if let Err(why) = check_server_url(url) {
            let msg = format!("server `{url}` is not a k3s server URL: {why}");
            let hint = "write it as https://HOST:PORT, e.g. https://10.0.0.1:6443";
            return Err(ck.err(ErrorKind::InvalidValue, "server", msg, hint));
        }
    }
    if c.token.is_some() && c.token_file.is_some() {
        let msg = "`token` and `token-file` are both set".to_owned();
        return Err(ck.err(ErrorKind::Conflict, "token-file", msg, "keep one of them"));
    }
    if let Some(t) = &c.token {
        if t.is_empty() || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            let msg = "`token` is empty or contains spaces or line breaks".to_owned();
            let hint = "paste the token as one word, in quotes";
            return Err(ck.err(ErrorKind::InvalidValue, "token", msg, hint));
        }
    }
    if let Some(f) = &c.token_file {
        if !f.starts_with('/') {
            let msg = format!("token-file `{f}` is not an absolute path");
            let hint = "give the file's full path on the node, e.g. /var/lib/kiln/token";
            return Err(ck.err(ErrorKind::InvalidValue, "token-file", msg, hint));
        }
    }
    Ok(())
}

fn check_server_url(url: &str) -> Result<(), &'static str> {
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
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
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
                format!("`{ch}` is not allowed")
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

fn check_labels_and_taints(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    for label in &c.node_label {
        let ok = label.split_once('=').is_some_and(|(k, _)| !k.is_empty());
        if !ok {
            let msg = format!("node-label `{label}` is not `key=value`");
            return Err(ck.err_item("node-label", label, msg, "write labels as `key=value`"));
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
            return Err(ck.err_item("node-taint", taint, msg, hint));
        }
    }
    Ok(())
}

fn check_k3s_args(c: &NodeConfig, ck: &Checker) -> Result<(), ConfigError> {
    for (flag, value) in &c.k3s_args {
        let at = |msg: String, hint: &str| {
            let mut e = ck.err_item("k3s-args", flag, msg, hint);
            e.key = Some(format!("k3s-args.{flag}"));
            e
        };
        let well_formed = flag
            .starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && flag
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
        if !well_formed {
            let msg = format!("k3s-args key `{flag}` is not a k3s flag name");
            return Err(at(
                msg,
                "write the long flag name without dashes, e.g. `kubelet-arg`",
            ));
        }
        if TYPED_KEYS.contains(&flag.as_str()) {
            let msg = format!("`{flag}` has its own key in node.yaml");
            return Err(at(
                msg,
                &format!("write `{flag}:` at the top level, not under k3s-args"),
            ));
        }
        if flag == "config" {
            let msg = "k3s-args cannot set `config`".to_owned();
            return Err(at(msg, "kiln-firstboot writes the k3s config itself"));
        }
        let ok = match value {
            Value::Null => {
                let msg = format!("k3s-args `{flag}` has no value");
                return Err(at(msg, &format!("write a value, e.g. `{flag}: true`")));
            }
            Value::Sequence(items) => items.iter().all(is_scalar),
            v => is_scalar(v),
        };
        if !ok {
            let msg = format!("k3s-args `{flag}` is not a value or a list of values");
            return Err(at(
                msg,
                "k3s flags take a string, number, boolean or a list of them",
            ));
        }
    }
    Ok(())
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::Bool(_) | Value::Number(_) | Value::String(_))
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
        ] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
    }
}
