//! The k3s command line and config file, as far as the double needs them.
//! Like k3s, flags win over the config file; unknown flags are ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value;

pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
}

/// What a run of the double is told to do. `{:?}` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// The token, from `token` or read from `token-file`.
    pub token: Option<String>,
    pub server: Option<String>,
    pub cluster_init: bool,
    pub kubeconfig: PathBuf,
    pub kubeconfig_mode: u32,
    pub https_listen_port: u16,
    pub bind_address: String,
    /// The name the node joins with: `node-name`, else the hostname.
    pub node_name: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("server", &self.server)
            .field("cluster_init", &self.cluster_init)
            .field("kubeconfig", &self.kubeconfig)
            .field("kubeconfig_mode", &self.kubeconfig_mode)
            .field("https_listen_port", &self.https_listen_port)
            .field("bind_address", &self.bind_address)
            .field("node_name", &self.node_name)
            .finish()
    }
}

/// Flags that take a value, with their short names.
const VALUE_FLAGS: &[(&str, Option<&str>)] = &[
    ("config", Some("c")),
    ("data-dir", Some("d")),
    ("token", Some("t")),
    ("token-file", None),
    ("server", Some("s")),
    ("write-kubeconfig", Some("o")),
    ("write-kubeconfig-mode", None),
    ("https-listen-port", None),
    ("bind-address", None),
    ("node-name", None),
];

impl Settings {
    /// Reads the flags after `server`/`agent`, then the config file.
    pub fn from_args(_role: Role, args: &[String]) -> Result<Settings, String> {
        let mut flags: BTreeMap<String, String> = BTreeMap::new();
        let mut it = args.iter().peekable();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                crate::say(format!("ignoring argument `{arg}`"));
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            let long = VALUE_FLAGS
                .iter()
                .find(|(l, s)| *l == name || *s == Some(name))
                .map(|(l, _)| *l);
            if let Some(long) = long {
                let value = inline
                    .or_else(|| it.next().cloned())
                    .ok_or(format!("--{long} needs a value"))?;
                flags.insert(long.to_owned(), value);
            } else if name == "cluster-init" {
                flags.insert(name.to_owned(), inline.unwrap_or_else(|| "true".into()));
            } else {
                // Unknown: skip it and its value, if one follows.
                if inline.is_none() && it.peek().is_some_and(|v| !v.starts_with('-')) {
                    it.next();
                }
                crate::say(format!(
                    "ignoring flag --{name} (not implemented by the test double)"
                ));
            }
        }
        let config = match flags.get("config") {
            Some(path) => read_config(path, true)?,
            None => read_config(DEFAULT_CONFIG, false)?,
        };
        Settings::merge(&flags, &config)
    }

    fn merge(
        flags: &BTreeMap<String, String>,
        config: &BTreeMap<String, String>,
    ) -> Result<Settings, String> {
        let get = |key: &str| flags.get(key).or_else(|| config.get(key)).cloned();
        let token = match (get("token"), get("token-file")) {
            (Some(t), _) => Some(t),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("reading token-file {file}: {e}"))?;
                Some(text.trim().to_owned())
            }
            (None, None) => None,
        };
        let mode_text = get("write-kubeconfig-mode").unwrap_or_else(|| "0600".into());
        let kubeconfig_mode = u32::from_str_radix(&mode_text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or(format!(
                "write-kubeconfig-mode `{mode_text}` is not an octal mode"
            ))?;
        let port_text = get("https-listen-port").unwrap_or_else(|| "6443".into());
        let https_listen_port = port_text
            .parse()
            .map_err(|_| format!("https-listen-port `{port_text}` is not a port"))?;
        Ok(Settings {
            data_dir: PathBuf::from(get("data-dir").unwrap_or_else(|| DEFAULT_DATA_DIR.into())),
            token: token.filter(|t| !t.is_empty()),
            server: get("server").filter(|s| !s.is_empty()),
            cluster_init: get("cluster-init").is_some_and(|v| v == "true"),
            kubeconfig: PathBuf::from(
                get("write-kubeconfig").unwrap_or_else(|| DEFAULT_KUBECONFIG.into()),
            ),
            kubeconfig_mode,
            https_listen_port,
            bind_address: get("bind-address").unwrap_or_else(|| "0.0.0.0".into()),
            node_name: get("node-name")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(hostname),
        })
    }
}

/// The running system's hostname, as k3s names a node by default.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The config file's scalar keys as strings (lists are ignored: the double
/// needs none). A missing default file is fine, as for k3s.
fn read_config(path: &str, required: bool) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading config {path}: {e}")),
    };
    parse_config(&text).map_err(|e| format!("config {path}: {e}"))
}

pub fn parse_config(text: &str) -> Result<BTreeMap<String, String>, String> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let Value::Mapping(map) = value else {
        return if value.is_null() {
            Ok(out)
        } else {
            Err("not a mapping of flag: value".into())
        };
    };
    for (k, v) in map {
        let (Value::String(key), Some(val)) = (k, scalar(&v)) else {
            continue;
        };
        out.insert(key, val);
    }
    Ok(out)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str], config: &str) -> Result<Settings, String> {
        let mut flags = BTreeMap::new();
        for pair in args.chunks(2) {
            flags.insert(
                pair[0].trim_start_matches('-').to_owned(),
                pair[1].to_owned(),
            );
        }
        Settings::merge(&flags, &parse_config(config)?)
    }

    #[test]
    fn reads_the_keys_kiln_firstboot_writes() {
        let cfg = "# k3s config\ncluster-init: true\ntoken: \"s3cret\"\nwrite-kubeconfig-mode: \"0644\"\n\
                   tls-san:\n  - \"a\"\ndata-dir: \"/data\"\n";
        let s = settings(&[], cfg).unwrap();
        assert!(s.cluster_init);
        assert_eq!(s.token.as_deref(), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        assert_eq!(s.kubeconfig_mode, 0o644);
        assert_eq!(s.data_dir, PathBuf::from("/data"));
        assert_eq!(s.https_listen_port, 6443);
        assert_eq!(s.kubeconfig, PathBuf::from(DEFAULT_KUBECONFIG));
        assert!(!s.node_name.is_empty(), "the hostname by default");
        let named = settings(&["--node-name", "n-1"], "").unwrap();
        assert_eq!(named.node_name, "n-1");
    }

    #[test]
    fn defaults_and_flags_over_config() {
        let s = settings(
            &["--data-dir", "/d", "--https-listen-port", "7000"],
            "data-dir: /c\n",
        )
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/d"));
        assert_eq!(s.https_listen_port, 7000);
        assert_eq!(s.kubeconfig_mode, 0o600);
        assert_eq!(s.token, None);
        assert!(!s.cluster_init);
        let empty = settings(&[], "").unwrap();
        assert_eq!(empty.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unquoted_mode_is_octal_digits() {
        assert_eq!(
            settings(&[], "write-kubeconfig-mode: 644\n")
                .unwrap()
                .kubeconfig_mode,
            0o644
        );
        assert!(settings(&[], "write-kubeconfig-mode: \"rw\"\n").is_err());
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("k3s-double-token-{}", std::process::id()));
        std::fs::write(&path, "K10ab::server:pw\n").unwrap();
        let cfg = format!("token-file: {}\n", path.display());
        let s = settings(&[], &cfg).unwrap();
        assert_eq!(s.token.as_deref(), Some("K10ab::server:pw"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn parses_flags_short_long_inline_and_unknown() {
        let path = std::env::temp_dir().join(format!("k3s-double-cfg-{}.yaml", std::process::id()));
        std::fs::write(&path, "token: fromfile\nserver: https://a:1\n").unwrap();
        let args: Vec<String> = [
            "-c",
            path.to_str().unwrap(),
            "--node-ip",
            "10.0.0.1",
            "--disable-agent",
            "-t=flag",
            "--cluster-init",
            "--https-listen-port=7443",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = Settings::from_args(Role::Server, &args).unwrap();
        assert_eq!(s.token.as_deref(), Some("flag"));
        assert_eq!(s.server.as_deref(), Some("https://a:1"));
        assert!(s.cluster_init);
        assert_eq!(s.https_listen_port, 7443);
        std::fs::remove_file(path).unwrap();
        let missing = vec!["--config".to_owned(), "/nonexistent/k3s.yaml".to_owned()];
        assert!(Settings::from_args(Role::Agent, &missing).is_err());
    }

    /// Every k3s config kiln-firstboot renders (the golden files) reads.
    #[test]
    fn reads_every_golden_k3s_config() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../golden/k3s-config");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut map = parse_config(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!map.contains_key("role"), "{}", path.display());
            // The token file named there exists only on a node.
            map.remove("token-file");
            Settings::merge(&BTreeMap::new(), &map)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn rejects_non_mapping_config() {
        assert!(parse_config("- a\n").is_err());
        assert!(parse_config("a: [\n").is_err());
    }
}
