//! Rules for the host settings: `network`, `ntp`, `ssh-authorized-keys`,
//! `timezone`, `registries` and `manifests`. Returns the resolved
//! [`Network`] (its defaults filled in).

use base64::Engine;

use super::checker::Checker;
use super::net::{check_host, check_ifname, normalize_mac, parse_host_address, parse_ip};
use super::raw::RawConfig;
use super::{registries, ConfigError, ErrorKind, Network, NodeConfig};

/// Key types OpenSSH 9 accepts in `authorized_keys`.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

pub(super) fn check(
    c: &NodeConfig,
    raw: &RawConfig,
    ck: &Checker,
) -> Result<Option<Network>, ConfigError> {
    let network = match &raw.network {
        Some(n) => Some(check_network(n, ck)?),
        None => None,
    };
    for server in &c.ntp {
        if let Err(why) = check_host(server) {
            let msg = format!(
                "ntp server `{}` is not usable: {why}",
                server.escape_default()
            );
            let hint = "write host names or addresses, e.g. [0.debian.pool.ntp.org, 10.0.0.1]";
            return Err(ck.err_item(&["ntp"], server, msg, hint));
        }
    }
    for (i, key) in c.ssh_authorized_keys.iter().enumerate() {
        if let Err((why, hint)) = check_ssh_key(key) {
            let shown: String = key
                .chars()
                .take(24)
                .collect::<String>()
                .escape_default()
                .to_string();
            let msg = format!(
                "ssh-authorized-keys[{i}] `{shown}...` is not an OpenSSH public key: {why}"
            );
            let item: String = key.chars().take(40).collect();
            return Err(ck.err_item(&["ssh-authorized-keys"], &item, msg, hint));
        }
    }
    if let Some(tz) = &c.timezone {
        if let Err(why) = check_timezone(tz) {
            let msg = format!(
                "timezone `{}` is not a time zone name: {why}",
                tz.escape_default()
            );
            let hint = "write Area/City as in /usr/share/zoneinfo, e.g. Europe/Berlin, or UTC";
            return Err(ck.err(ErrorKind::InvalidValue, &["timezone"], msg, hint));
        }
    }
    if let Some(r) = &c.registries {
        if let Err((path, item, msg, hint)) = registries::check(r) {
            let mut full = vec!["registries"];
            full.extend(path.iter().map(String::as_str));
            return Err(match item {
                Some(item) => ck.err_item(&full, &item, msg, hint),
                None => ck.err(ErrorKind::InvalidValue, &full, msg, hint),
            });
        }
    }
    for (name, text) in c.manifests.iter() {
        check_manifest(name, text).map_err(|(msg, hint)| {
            let msg = format!("manifests {msg}");
            ck.err(ErrorKind::InvalidValue, &["manifests", name], msg, hint)
        })?;
    }
    Ok(network)
}

fn check_network(n: &super::raw::RawNetwork, ck: &Checker) -> Result<Network, ConfigError> {
    let bad = |key: &str, msg: String, hint: &str| {
        ck.err(ErrorKind::InvalidValue, &["network", key], msg, hint)
    };
    if n.interface.is_some() && n.mac.is_some() {
        let msg = "network selects its interface by `interface` or by `mac`, not both".to_owned();
        return Err(ck.err(
            ErrorKind::Conflict,
            &["network", "mac"],
            msg,
            "keep one of them",
        ));
    }
    if let Some(name) = &n.interface {
        check_ifname(name).map_err(|why| {
            let msg = format!(
                "network interface `{}` is not an interface name: {why}",
                name.escape_default()
            );
            bad(
                "interface",
                msg,
                "write the kernel's name, e.g. eth0 or enp1s0, or use `mac:`",
            )
        })?;
    }
    let mac = match &n.mac {
        Some(m) => Some(normalize_mac(m).map_err(|why| {
            let msg = format!(
                "network mac `{}` is not a MAC address: {why}",
                m.escape_default()
            );
            bad("mac", msg, "write it as aa:bb:cc:dd:ee:ff")
        })?),
        None => None,
    };
    let address = match &n.address {
        Some(a) => Some(parse_host_address(a).map_err(|why| {
            let msg = format!(
                "network address `{}` is not a host address with a prefix: {why}",
                a.escape_default()
            );
            bad("address", msg, "write ADDRESS/PREFIX, e.g. 10.0.0.5/24")
        })?),
        None => None,
    };
    let dhcp = n.dhcp.unwrap_or(address.is_none());
    if !dhcp && address.is_none() {
        let msg = "a static network (`dhcp: false`) needs `address`".to_owned();
        let hint = "add `address: 10.0.0.5/24` (and `gateway:`), or remove `dhcp: false`";
        return Err(ck.err(ErrorKind::Conflict, &["network", "dhcp"], msg, hint));
    }
    if let Some(gw) = &n.gateway {
        let ip = parse_ip(gw).map_err(|why| {
            let msg = format!(
                "network gateway `{}` is not an IP address: {why}",
                gw.escape_default()
            );
            bad("gateway", msg, "write the router's address, e.g. 10.0.0.1")
        })?;
        if let Some(a) = &address {
            if !a.contains(ip) || a.addr == ip {
                let why = if a.addr == ip {
                    "is the node's own address"
                } else {
                    "is outside"
                };
                let msg = format!(
                    "network gateway {gw} {why} the node's network {}/{}",
                    a.network(),
                    a.prefix
                );
                let hint = "use a router inside the network, or fix the prefix length of `address`";
                return Err(ck.err(ErrorKind::Conflict, &["network", "gateway"], msg, hint));
            }
        }
    }
    for dns in n.dns.iter().flatten() {
        if let Err(why) = parse_ip(dns) {
            let msg = format!(
                "network dns `{}` is not an IP address: {why}",
                dns.escape_default()
            );
            return Err(ck.err_item(
                &["network", "dns"],
                dns,
                msg,
                "write resolver addresses, e.g. [10.0.0.1, 1.1.1.1]",
            ));
        }
    }
    Ok(Network {
        interface: n.interface.clone(),
        mac,
        dhcp,
        address: n.address.clone(),
        gateway: n.gateway.clone(),
        dns: n.dns.clone().unwrap_or_default(),
    })
}

/// `TYPE BASE64 [COMMENT]`, one line, and the blob names the same type.
fn check_ssh_key(key: &str) -> Result<(), (String, &'static str)> {
    const HINT: &str =
        "paste the whole line of the .pub file, e.g. `ssh-ed25519 AAAAC3Nz... me@host`";
    if key.contains(['\n', '\r']) {
        return Err((
            "it spans more than one line".into(),
            "give each key as its own list item",
        ));
    }
    let mut words = key.split_whitespace();
    let kind = words.next().unwrap_or_default();
    if kind == "ssh-dss" {
        return Err((
            "DSA keys are disabled in OpenSSH 9".into(),
            "use an ed25519 key: ssh-keygen -t ed25519",
        ));
    }
    if !SSH_KEY_TYPES.contains(&kind) {
        let why = if kind.contains('=') {
            "it starts with options; only `TYPE KEY [COMMENT]` is supported".to_owned()
        } else {
            format!(
                "`{}` is not a key type ({})",
                kind.escape_default(),
                SSH_KEY_TYPES.join(", ")
            )
        };
        return Err((why, HINT));
    }
    let blob = words
        .next()
        .ok_or(("the key data after the type is missing".to_owned(), HINT))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| ("the key data is not base64 (cut short?)".to_owned(), HINT))?;
    let named = bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err((format!("the key data is of another type than {kind}"), HINT));
    }
    Ok(())
}

/// `Area/Location` as in the tz database (`UTC`, `Europe/Berlin`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+1`): the format only, the
/// node checks that its zoneinfo has it.
fn check_timezone(tz: &str) -> Result<(), &'static str> {
    if tz.is_empty() || tz.len() > 64 {
        return Err("it is empty or too long");
    }
    for part in tz.split('/') {
        if part.is_empty() {
            return Err("it has an empty part (a leading, trailing or double `/`)");
        }
        if !part.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err("each part starts with a letter");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        {
            return Err("it may only hold letters, digits, `_`, `+`, `-` and `/`");
        }
    }
    Ok(())
}

/// Manifests k3s writes itself at every start (and would overwrite).
const K3S_MANIFESTS: &[&str] = &[
    "ccm.yaml",
    "coredns.yaml",
    "local-storage.yaml",
    "rolebindings.yaml",
    "runtimes.yaml",
    "traefik.yaml",
];

/// A file name k3s deploys, holding Kubernetes objects.
fn check_manifest(name: &str, text: &str) -> Result<(), (String, &'static str)> {
    if K3S_MANIFESTS.contains(&name) {
        return Err((
            format!("`{name}` is a manifest k3s writes itself"),
            "pick another name; to replace a packaged component, `disable:` it and deploy yours",
        ));
    }
    let name_ok = !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|e| name.len() > e.len() && name.ends_with(e))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err((
            format!("`{}` is not a manifest file name", name.escape_default()),
            "name it like `my-app.yaml` (letters, digits, `.`, `_`, `-`; .yaml, .yml or .json)",
        ));
    }
    let mut objects = 0;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| {
            let at = e.location().map_or(String::new(), |l| {
                format!(" at line {} of the manifest", l.line())
            });
            (
                format!("`{name}`: document {} is not YAML{at}", i + 1),
                "check the manifest's indentation; it is a block under its name (`name.yaml: |`)",
            )
        })?;
        match &value {
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Mapping(m)
                if m.contains_key("apiVersion") && m.contains_key("kind") =>
            {
                objects += 1
            }
            _ => {
                return Err((
                    format!(
                        "`{name}`: document {} is not a Kubernetes object (no apiVersion and kind)",
                        i + 1
                    ),
                    "each document of a manifest has `apiVersion:` and `kind:`",
                ))
            }
        }
    }
    if objects == 0 {
        return Err((
            format!("`{name}` is empty"),
            "give the manifest's text as a block: `name.yaml: |`",
        ));
    }
    Ok(())
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDbq4M2uWuqPYkq0Zz3x0s8bD9ELc5G2HxsSm+Aw1m0m me@host";

    #[test]
    fn ssh_keys() {
        assert_eq!(check_ssh_key(ED25519), Ok(()));
        let renamed = ED25519.replace("ssh-ed25519 ", "ssh-rsa ");
        assert_eq!(
            check_ssh_key(&renamed).unwrap_err().0,
            "the key data is of another type than ssh-rsa"
        );
        assert!(check_ssh_key("ssh-dss AAAA").unwrap_err().0.contains("DSA"));
        assert!(check_ssh_key("from=\"x\" ssh-ed25519 AAAA")
            .unwrap_err()
            .0
            .contains("options"));
        assert!(check_ssh_key("ssh-ed25519")
            .unwrap_err()
            .0
            .contains("missing"));
        assert!(check_ssh_key("ssh-ed25519 AAAA%%")
            .unwrap_err()
            .0
            .contains("base64"));
        assert!(check_ssh_key("ssh-ed25519 AAAA\nssh-rsa").is_err());
    }

    #[test]
    fn timezones() {
        for ok in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+1",
            "America/Port-au-Prince",
        ] {
            assert_eq!(check_timezone(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/Europe/Berlin",
            "Europe//Berlin",
            "../etc/passwd",
            "Europe/Berlin ",
            "Europe/",
            "1/x",
        ] {
            assert!(check_timezone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests() {
        assert!(check_manifest(
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n"
        )
        .is_ok());
        assert!(check_manifest("a.yaml", "")
            .unwrap_err()
            .0
            .contains("empty"));
        assert!(check_manifest("a.yaml", "kind: X\n")
            .unwrap_err()
            .0
            .contains("apiVersion"));
        assert!(check_manifest("a.yaml", "a: [\n")
            .unwrap_err()
            .0
            .contains("not YAML"));
        for bad in [
            "a.txt",
            ".yaml",
            "../a.yaml",
            "a b.yaml",
            ".hidden.yaml",
            "coredns.yaml",
        ] {
            assert!(
                check_manifest(bad, "apiVersion: v1\nkind: X\n").is_err(),
                "{bad}"
            );
        }
    }
}
