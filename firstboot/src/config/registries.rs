//! `registries:`: k3s's own `registries.yaml` structure (mirrors, auth,
//! TLS), with k3s's own key names (`ca_file`, `insecure_skip_verify`), so a
//! file that works with k3s can be pasted in. [`render_registries`] writes
//! `/etc/rancher/k3s/registries.yaml` (0600: it may hold passwords).
//!
//! ```yaml
//! registries:
//!   mirrors:
//!     docker.io:
//!       endpoint: ["https://registry.lan:5000"]
//!       rewrite: {"^library/(.*)": "mirror/$1"}
//!   configs:
//!     registry.lan:5000:
//!       auth: {username: pull, password: s3cret}   # or token:
//!       tls: {ca_file: /etc/kiln/ca.pem, insecure_skip_verify: false}
//! ```

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::raw::UniqueMap;
use super::render::quote;
use super::Secret;

/// `registries:` as k3s reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Registry name (`docker.io`, `*`) → where to pull from instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<UniqueMap<Mirror>>,
    /// Registry host → credentials and TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<UniqueMap<RegistryConfig>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// URLs tried in order (`https://host:port`).
    #[serde(default, deserialize_with = "super::raw::one_or_many")]
    pub endpoint: Vec<String>,
    /// Image name regex → replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<UniqueMap<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

impl Registries {
    /// `self` over `common`: same mirror or config name, `self` wins whole.
    pub(crate) fn over(&self, common: &Registries) -> Registries {
        fn pick<V: Clone>(
            n: &Option<UniqueMap<V>>,
            c: &Option<UniqueMap<V>>,
        ) -> Option<UniqueMap<V>> {
            match (n, c) {
                (Some(n), Some(c)) => Some(n.over(c)),
                (n, c) => n.clone().or_else(|| c.clone()),
            }
        }
        Registries {
            mirrors: pick(&self.mirrors, &common.mirrors),
            configs: pick(&self.configs, &common.configs),
        }
    }

    /// `2 mirrors, 1 config`, for the console.
    pub fn summary(&self) -> String {
        let m = self.mirrors.as_ref().map_or(0, |m| m.0.len());
        let c = self.configs.as_ref().map_or(0, |c| c.0.len());
        let s = |n: usize| if n == 1 { "" } else { "s" };
        format!("{m} mirror{}, {c} config{}", s(m), s(c))
    }
}

/// `/etc/rancher/k3s/registries.yaml`. Every string double-quoted, names
/// sorted, so the same config always gives the same bytes.
pub fn render_registries(r: &Registries) -> String {
    let mut out = String::new();
    out.push_str("# Written by kiln-firstboot from the node config (node.yaml).\n");
    out.push_str("# It is rewritten at every boot: change node.yaml, not this file.\n");
    let mirrors = r
        .mirrors
        .as_ref()
        .map(UniqueMap::sorted)
        .unwrap_or_default();
    if !mirrors.is_empty() {
        out.push_str("mirrors:\n");
    }
    for (name, m) in &mirrors {
        let _ = writeln!(out, "  {}:", quote(name));
        if !m.endpoint.is_empty() {
            out.push_str("    endpoint:\n");
            for e in &m.endpoint {
                let _ = writeln!(out, "      - {}", quote(e));
            }
        }
        let rewrite = m
            .rewrite
            .as_ref()
            .map(UniqueMap::sorted)
            .unwrap_or_default();
        if !rewrite.is_empty() {
            out.push_str("    rewrite:\n");
            for (from, to) in &rewrite {
                let _ = writeln!(out, "      {}: {}", quote(from), quote(to));
            }
        }
    }
    let configs = r
        .configs
        .as_ref()
        .map(UniqueMap::sorted)
        .unwrap_or_default();
    if !configs.is_empty() {
        out.push_str("configs:\n");
    }
    for (host, c) in &configs {
        let _ = writeln!(out, "  {}:", quote(host));
        if let Some(a) = &c.auth {
            out.push_str("    auth:\n");
            field(&mut out, "username", a.username.as_deref());
            field(
                &mut out,
                "password",
                a.password.as_ref().map(Secret::expose),
            );
            field(&mut out, "token", a.token.as_ref().map(Secret::expose));
        }
        if let Some(t) = &c.tls {
            out.push_str("    tls:\n");
            field(&mut out, "ca_file", t.ca_file.as_deref());
            field(&mut out, "cert_file", t.cert_file.as_deref());
            field(&mut out, "key_file", t.key_file.as_deref());
            if let Some(b) = t.insecure_skip_verify {
                let _ = writeln!(out, "      insecure_skip_verify: {b}");
            }
        }
    }
    out
}

fn field(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = writeln!(out, "      {key}: {}", quote(v));
    }
}

/// A rule a registries section breaks: (path below `registries`, item to
/// point at, message, hint).
pub(crate) type Broken = (Vec<String>, Option<String>, String, &'static str);

/// Checks what k3s would only find out when pulling an image.
pub(crate) fn check(r: &Registries) -> Result<(), Broken> {
    let path = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (name, m) in r.mirrors.iter().flat_map(|m| &m.0) {
        if name.is_empty() || name.contains(['/', ' ']) {
            let msg = format!("registries mirror `{name}` is not a registry name");
            return Err((
                path(&["mirrors"]),
                Some(name.clone()),
                msg,
                "use a registry host such as `docker.io`, or `*` for all",
            ));
        }
        for e in &m.endpoint {
            let ok = ["http://", "https://"].iter().any(|p| {
                e.strip_prefix(p)
                    .is_some_and(|h| !h.is_empty() && !h.contains(' '))
            });
            if !ok {
                let msg = format!(
                    "registries mirror `{name}`: endpoint `{}` is not an http(s) URL",
                    super::secret::redact_url(e)
                );
                return Err((
                    path(&["mirrors", name, "endpoint"]),
                    None,
                    msg,
                    "write it as https://HOST[:PORT]",
                ));
            }
        }
    }
    for (host, c) in r.configs.iter().flat_map(|c| &c.0) {
        if host.is_empty() || host.contains(['/', ' ']) {
            let msg = format!("registries config `{host}` is not a registry host");
            return Err((
                path(&["configs"]),
                Some(host.clone()),
                msg,
                "use HOST or HOST:PORT, as in the image name",
            ));
        }
        if let Some(a) = &c.auth {
            let at = path(&["configs", host, "auth"]);
            if a.password.is_some() && a.username.is_none() {
                let msg = format!("registries config `{host}`: a password needs a username");
                return Err((at, None, msg, "add `username:`"));
            }
            if a.token.is_some() && (a.username.is_some() || a.password.is_some()) {
                let msg = format!(
                    "registries config `{host}`: auth has both a token and a username/password"
                );
                return Err((
                    at,
                    None,
                    msg,
                    "keep the token, or the username and password",
                ));
            }
            if a.token.is_none() && a.password.is_none() {
                let msg = format!("registries config `{host}`: auth has no password or token");
                return Err((
                    at,
                    None,
                    msg,
                    "add `password:` (with `username:`) or `token:`",
                ));
            }
        }
        if let Some(t) = &c.tls {
            for (key, file) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if let Some(f) = file.as_deref().filter(|f| !f.starts_with('/')) {
                    let msg =
                        format!("registries config `{host}`: {key} `{f}` is not an absolute path");
                    return Err((
                        path(&["configs", host, "tls", key]),
                        None,
                        msg,
                        "give the file's full path on the node",
                    ));
                }
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                let msg = format!("registries config `{host}`: cert_file and key_file go together");
                return Err((
                    path(&["configs", host, "tls"]),
                    None,
                    msg,
                    "set both, or neither",
                ));
            }
        }
    }
    Ok(())
}
