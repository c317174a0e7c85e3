//! [`Checker`]: builds [`ConfigError`]s located in the text. While a rack
//! entry is checked, a key's position is where the entry sets it, else
//! where the common part does, else the entry's own key.

use serde_yaml::Value;

use super::locate;
use super::{ConfigError, ErrorKind};

/// Builds located errors. While a rack entry is checked, a key's position
/// is where the entry sets it, else where the common part does.
pub(super) struct Checker<'a> {
    pub text: &'a str,
    pub file: &'a str,
    pub entry: Option<Entry<'a>>,
}

/// The rack entry being checked: its key and what it and the common part
/// set (as YAML values, to tell which one a merged key came from).
pub(super) struct Entry<'a> {
    pub key: &'a str,
    pub set: Value,
    pub common: Value,
}

impl<'a> Checker<'a> {
    pub fn new(text: &'a str, file: &'a str) -> Self {
        Checker {
            text,
            file,
            entry: None,
        }
    }

    /// The full key path of `path`, the path to look for in the text, and
    /// whether only the rack entry's own key can be pointed at.
    fn place(&self, path: &[&str]) -> (String, Vec<String>, bool) {
        let plain: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let Some(e) = &self.entry else {
            return (plain.join("."), plain, false);
        };
        let mut in_entry = vec!["nodes".to_owned(), e.key.to_owned()];
        let full = format!("nodes.{}.{}", e.key, plain.join("."));
        let head = &path[..path.len().min(1)];
        if has_path(&e.set, path) || (!has_path(&e.common, path) && has_path(&e.set, head)) {
            in_entry.extend(plain);
            (full, in_entry, false)
        } else if has_path(&e.common, head) {
            (full, plain, false)
        } else {
            (full, in_entry, true)
        }
    }

    /// `msg`, prefixed with the rack entry's key while one is checked.
    pub fn message(&self, msg: String) -> String {
        match &self.entry {
            Some(e) => format!("nodes.{}: {msg}", e.key),
            None => msg,
        }
    }

    pub fn err(&self, kind: ErrorKind, path: &[&str], msg: String, hint: &str) -> ConfigError {
        let (key, look, key_only) = self.place(path);
        let look: Vec<&str> = look.iter().map(String::as_str).collect();
        let at = if key_only {
            locate::locate_key(self.text, &look, 0)
        } else {
            locate::locate(self.text, &look)
        };
        ConfigError::new(self.file, at, kind, Some(&key), self.message(msg), hint)
    }

    /// An error about one value inside `path` (a list item, a nested value).
    pub fn err_item(&self, path: &[&str], item: &str, msg: String, hint: &str) -> ConfigError {
        let (key, look, key_only) = self.place(path);
        let look: Vec<&str> = look.iter().map(String::as_str).collect();
        let at = if key_only {
            locate::locate_key(self.text, &look, 0)
        } else {
            locate::locate_in(self.text, &look, item)
        };
        let (kind, msg) = (ErrorKind::InvalidValue, self.message(msg));
        ConfigError::new(self.file, at, kind, Some(&key), msg, hint)
    }
}

pub(super) fn has_path(v: &Value, path: &[&str]) -> bool {
    let mut cur = v;
    for seg in path {
        match cur.get(*seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}
