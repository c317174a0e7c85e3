//! Secrets in a node config: join tokens, registry passwords, datastore
//! credentials. A [`Secret`] prints as `***` (Display and Debug), so it can
//! never reach the console, the journal or an error message by accident;
//! only the renderers that write 0600 files call [`Secret::expose`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// What every secret looks like on the console.
pub const REDACTED: &str = "***";

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for a file that is written 0600. Never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL or datastore endpoint as the console may show it: the user and
/// password part (`user:pw@`) and any query (`?password=...`) become `***`.
/// `postgres://k3s:pw@db:5432/k3s?sslmode=x` → `postgres://***@db:5432/k3s?***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, _)) => (r, true),
        None => (rest, false),
    };
    // The userinfo ends at the last `@` (a password may hold one).
    let rest = match rest.rfind('@') {
        Some(i) => format!("{REDACTED}@{}", &rest[i + 1..]),
        None => rest.to_owned(),
    };
    let mut out = match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest,
    };
    if query {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

/// Whether a key names a secret: its value is scrubbed from messages.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // `token-file`, `ca_file`: paths, not secrets.
    let path = k.ends_with("-file") || k.ends_with("_file");
    !path
        && ["token", "password", "secret", "datastore-endpoint", "auth"]
            .iter()
            .any(|s| k.contains(s))
}

/// The values of secret keys in `text`, found line by line (so also in a
/// file that does not parse), for [`scrub`]. Short values are left out: a
/// one-letter "secret" would blank out half of every message.
pub(crate) fn secrets_in_text(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        collect(line.trim_start().trim_start_matches("- "), &mut found);
    }
    // Longest first, so a secret that contains another is removed whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

/// One `key: value` (a line, or a piece of a flow mapping).
fn collect(body: &str, found: &mut Vec<String>) {
    let Some((key, value)) = split_key(body) else {
        return;
    };
    let value = strip_comment(value.trim());
    if let Some(inner) = value.strip_prefix('{') {
        for piece in inner.trim_end_matches('}').split(',') {
            collect(piece.trim(), found);
        }
        return;
    }
    if !is_secret_key(key) {
        return;
    }
    let value = value
        .trim_end_matches(['}', ','])
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    push_secret(found, value);
    // The credentials of a URL, alone, in case a message shows a part.
    if let Some((_, rest)) = value.split_once("://") {
        if let Some(i) = rest.rfind('@') {
            push_secret(found, &rest[..i]);
            if let Some((_, pw)) = rest[..i].split_once(':') {
                push_secret(found, pw);
            }
        }
    }
}

fn push_secret(found: &mut Vec<String>, value: &str) {
    if value.chars().count() >= 4 && !found.iter().any(|f| f == value) {
        found.push(value.to_owned());
    }
}

fn split_key(body: &str) -> Option<(&str, &str)> {
    let i = body.find(": ").or_else(|| body.find(":\t"))?;
    let key = body[..i]
        .trim()
        .trim_start_matches(['{', ','])
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    Some((key, &body[i + 1..]))
}

/// The value without a trailing comment; a quoted value up to its quote.
fn strip_comment(value: &str) -> &str {
    if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
        return match value[1..].find(q) {
            Some(end) => &value[..end + 2],
            None => value,
        };
    }
    match value.find(" #") {
        Some(i) => value[..i].trim_end(),
        None => value,
    }
}

/// `text` with every one of `secrets` replaced by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter22");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("postgres://k3s:pw@db:5432/k3s?sslmode=disable"),
            "postgres://***@db:5432/k3s?***"
        );
        assert_eq!(
            redact_url("mysql://u:p@ss@tcp(db:3306)/k3s"),
            "mysql://***@tcp(db:3306)/k3s"
        );
        assert_eq!(
            redact_url("https://etcd-1:2379,https://etcd-2:2379"),
            "https://etcd-1:2379,https://etcd-2:2379"
        );
        assert_eq!(redact_url("no-scheme"), "no-scheme");
    }

    #[test]
    fn finds_secret_values_in_text() {
        let text = "token: \"abcd1234\" # c\nregistries:\n  configs:\n    r:\n      auth: {username: u, password: pw-secret}\n\
                    datastore-endpoint: postgres://user:dbpass@db/k3s\nhostname: token\n";
        let found = secrets_in_text(text);
        for s in [
            "abcd1234",
            "postgres://user:dbpass@db/k3s",
            "user:dbpass",
            "dbpass",
            "pw-secret",
        ] {
            assert!(found.iter().any(|f| f == s), "{s} in {found:?}");
        }
        assert_eq!(
            scrub("x abcd1234 y dbpass", &found),
            "x *** y ***".to_owned()
        );
    }
}
