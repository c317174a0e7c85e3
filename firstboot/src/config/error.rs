//! [`ConfigError`]: one line that says where a node config is wrong and how
//! to fix it, and the helpers that find a key's line and column in the text.

use std::fmt;

use super::locate;

/// A 1-based line and column in the node config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: u32,
    pub column: u32,
}

impl Location {
    pub(crate) fn new(line: usize, column: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Location {
            line: clamp(line),
            column: clamp(column),
        }
    }
}

/// What kind of mistake a [`ConfigError`] reports, for callers that branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not YAML (or not UTF-8).
    Syntax,
    /// Nothing but blanks and comments.
    Empty,
    /// A key the schema does not know.
    UnknownField,
    /// A required key is absent.
    MissingField,
    /// A key appears twice.
    DuplicateField,
    /// A value of the wrong type or outside the allowed values.
    InvalidValue,
    /// Keys that are valid alone but not together (agent without server,
    /// token and token-file, ...).
    Conflict,
    /// Rack mode: this node has no entry in `nodes:` and may not use the
    /// common part (`wait-for-config: true`, or the common part has no
    /// role). Not the file's fault: the service reports it and retries.
    NoEntry,
}

/// A node config error:
/// `node.yaml:3:1: unknown field `rol`, expected one of ... (hint: ...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where the config came from (a path or a datasource name).
    pub file: String,
    /// Where in it, when known.
    pub location: Option<Location>,
    pub kind: ErrorKind,
    /// The key at fault (`tls-san[1]`, `k3s-args.token`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.location {
            write!(f, ":{}:{}", l.line, l.column)?;
        }
        write!(f, ": {} (hint: {})", self.message, self.hint)
    }
}

impl ConfigError {
    pub(crate) fn new(
        file: &str,
        location: Option<Location>,
        kind: ErrorKind,
        key: Option<&str>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_owned(),
            location,
            kind,
            key: key.map(str::to_owned),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The error with every one of `secrets` shown as `***`.
    pub(crate) fn scrubbed(mut self, secrets: &[String]) -> Self {
        use super::secret::scrub;
        self.message = scrub(&self.message, secrets);
        self.hint = scrub(&self.hint, secrets);
        self.key = self.key.map(|k| scrub(&k, secrets));
        self
    }

    /// Turns serde_yaml's error into ours: same message without its
    /// "at line N column M" tails, a kind, the key and a hint.
    pub(crate) fn from_yaml(e: &serde_yaml::Error, text: &str, file: &str) -> Self {
        let mut location = e.location().map(|l| Location::new(l.line(), l.column()));
        let mut message = plain_names(&strip_positions(&e.to_string()));
        let (key, rest) = split_path(&message);
        let key = key.map(str::to_owned);
        let parent: Vec<&str> = key.as_deref().map_or_else(Vec::new, path_parts);
        let (kind, hint) = if let Some(field) = between_backticks(rest, "unknown field `") {
            let hint = unknown_field_hint(field, rest, key.as_deref());
            // A long list of every key helps nobody: the hint names the
            // closest one, the reference lists them all.
            if rest.matches('`').count() > 2 * 9 {
                let short = format!("unknown field `{field}`");
                message = match &key {
                    Some(k) => format!("{k}: {short}"),
                    None => short,
                };
            }
            (ErrorKind::UnknownField, hint)
        } else if let Some(field) = between_backticks(rest, "missing field `") {
            // serde points at the start of the mapping: not useful.
            location = None;
            let hint = match field {
                "role" => "add `role: server` or `role: agent`".to_owned(),
                _ => format!("add `{field}:`"),
            };
            (ErrorKind::MissingField, hint)
        } else if let Some(field) = between_backticks(rest, "duplicate field `")
            .or_else(|| between_backticks(rest, "duplicate entry `"))
        {
            let mut path = parent.clone();
            path.push(field);
            location = locate::locate_key(text, &path, 1).or(location);
            let hint = format!("keep one `{field}:` line and remove the other");
            (ErrorKind::DuplicateField, hint)
        } else if rest.starts_with("invalid type")
            || rest.starts_with("invalid value")
            || rest.starts_with("invalid length")
            || rest.starts_with("unknown variant")
        {
            (ErrorKind::InvalidValue, value_hint(rest))
        } else {
            (ErrorKind::Syntax, syntax_hint(text))
        };
        ConfigError {
            file: file.to_owned(),
            location,
            kind,
            key,
            message,
            hint,
        }
    }
}

/// `nodes.aa:bb:cc:dd:ee:ff.network` → its keys; list indices dropped.
fn path_parts(path: &str) -> Vec<&str> {
    path.split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// serde names our types; the user knows mappings.
fn plain_names(message: &str) -> String {
    let mut m = message.to_owned();
    for (ty, plain) in [
        ("struct RawConfig", "a mapping of `key: value` lines"),
        (
            "struct RawNetwork",
            "a mapping (interface, mac, dhcp, address, gateway, dns)",
        ),
        ("struct Registries", "a mapping (mirrors, configs)"),
        ("struct Mirror", "a mapping (endpoint, rewrite)"),
        ("struct RegistryConfig", "a mapping (auth, tls)"),
        ("struct Auth", "a mapping (username, password, token)"),
        (
            "struct Tls",
            "a mapping (ca_file, cert_file, key_file, insecure_skip_verify)",
        ),
    ] {
        m = m.replace(ty, plain);
    }
    m
}

/// Removes every " at line N column M" serde_yaml adds to its messages.
fn strip_positions(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let tail = &after[digits..];
        match tail.strip_prefix(" column ") {
            Some(col) if digits > 0 => {
                rest = col.trim_start_matches(|c: char| c.is_ascii_digit());
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// serde_yaml prefixes errors inside a value with its path: `tls-san[1]: `.
fn split_path(message: &str) -> (Option<&str>, &str) {
    if let Some((path, rest)) = message.split_once(": ") {
        let is_path = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.[]:*".contains(c));
        if is_path {
            return (Some(path), rest);
        }
    }
    (None, message)
}

fn between_backticks<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

fn unknown_field_hint(field: &str, message: &str, parent: Option<&str>) -> String {
    let expected: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
    let closest = expected
        .iter()
        .map(|e| (edit_distance(field, e), *e))
        .filter(|(d, _)| *d <= 2)
        .min();
    match closest {
        Some((_, name)) => format!("did you mean `{name}`?"),
        None if parent.is_none() => format!(
            "other k3s flags go under `k3s-args:`, e.g. `k3s-args: {{{field}: ...}}`; \
             docs/node-config.md lists every key"
        ),
        None => format!(
            "docs/node-config.md describes `{}`",
            parent.unwrap_or_default()
        ),
    }
}

fn value_hint(message: &str) -> String {
    if message.contains("expected `server` or `agent`") {
        "role is `server` or `agent`".to_owned()
    } else if message.contains("expected a boolean") {
        "write `true` or `false`".to_owned()
    } else if message.contains("a string or a list of strings") {
        "write one value, or a list: `[a, b]` or one `- a` line per item".to_owned()
    } else if message.contains("expected a string") {
        "write a single value; quote it if it contains `: ` or ` #`".to_owned()
    } else if message.contains("expected a mapping of `key: value` lines") {
        "node.yaml is a mapping of `key: value` lines, e.g. `role: server`".to_owned()
    } else if message.contains("expected a mapping") {
        "write `key: value` lines indented under it, or `{key: value}`".to_owned()
    } else if message.contains("unknown variant") && message.contains("`vxlan`") {
        "flannel-backend is vxlan, host-gw, wireguard-native or none".to_owned()
    } else {
        "check the value's type against the node.yaml reference".to_owned()
    }
}

fn syntax_hint(text: &str) -> String {
    if text.contains('\t') {
        "YAML indents with spaces, never tabs".to_owned()
    } else {
        "check the indentation and the quotes; every key is written `key: value`".to_owned()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_position() {
        assert_eq!(
            strip_positions("found unexpected end of stream at line 3 column 1, while scanning a quoted scalar at line 2 column 9"),
            "found unexpected end of stream, while scanning a quoted scalar"
        );
        assert_eq!(strip_positions("bad at line x"), "bad at line x");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("rol", "role"), 1);
        assert_eq!(edit_distance("tls_san", "tls-san"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
