//! Where a key or a value sits in the node.yaml text. serde keeps no
//! positions for values, so rules checked after parsing find them here, by
//! reading the block structure (indentation) of the text: a path of keys
//! (`["nodes", "aa:bb:cc:dd:ee:ff", "network", "address"]`) leads to a line.
//! Flow mappings (`{a: 1}`) are searched as text; block scalars (`|`) are
//! never mistaken for keys. When a path cannot be followed the nearest
//! parent found is returned, so an error always points somewhere useful.

use super::error::Location;

/// One line that holds content (not blank, not only a comment).
#[derive(Debug)]
struct Line<'a> {
    /// 0-based line number.
    no: usize,
    /// Leading spaces.
    indent: usize,
    /// A sequence item (`- ...`).
    item: bool,
    /// The key, unquoted, and its 0-based column.
    key: Option<(String, usize)>,
    /// The value after `key:` on the same line, and its 0-based column.
    value: Option<(&'a str, usize)>,
    text: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for (no, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let rest = &raw[indent..];
        if rest.is_empty() || rest.starts_with('#') || rest == "---" || rest == "..." {
            continue;
        }
        let (item, body, at) = match rest.strip_prefix("- ") {
            Some(b) => (true, b.trim_start(), raw.len() - b.trim_start().len()),
            None if rest == "-" => (true, "", raw.len()),
            None => (false, rest, indent),
        };
        let (key, value) = match split_key(body) {
            Some((k, v_at)) => {
                let v = body[v_at..].trim_start();
                let v_col = at + body.len() - v.len();
                let value = (!v.is_empty() && !v.starts_with('#')).then_some((v, v_col));
                (
                    Some((k, char_col(raw, at))),
                    value.map(|(v, c)| (v, char_col(raw, c))),
                )
            }
            None => (None, None),
        };
        out.push(Line {
            no,
            indent,
            item,
            key,
            value,
            text: raw,
        });
    }
    out
}

/// Byte offset → char column.
fn char_col(line: &str, byte: usize) -> usize {
    line[..byte.min(line.len())].chars().count()
}

/// `key: ...` → the unquoted key and the byte offset just after its `:`.
fn split_key(body: &str) -> Option<(String, usize)> {
    if body.starts_with(['{', '[', '|', '>', '&', '*', '!', '?']) {
        return None;
    }
    if let Some(q) = body.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let mut end = None;
        let mut chars = body.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            if q == '"' && c == '\\' {
                chars.next();
            } else if c == q {
                if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    chars.next();
                    continue;
                }
                end = Some(i);
                break;
            }
        }
        let end = end?;
        let after = body[end + 1..].trim_start();
        let colon = body.len() - after.len();
        let key = match q {
            '"' => body[1..end].replace("\\\"", "\""),
            _ => body[1..end].replace("''", "'"),
        };
        return after
            .strip_prefix(':')
            .filter(|r| r.is_empty() || r.starts_with([' ', '\t']))
            .map(|_| (key, colon + 1));
    }
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && bytes[i - 1] == b' ' {
            return None;
        }
        if *b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            return Some((body[..i].trim_end().to_owned(), i + 1));
        }
    }
    None
}

/// The lines of the block under `lines[at]` (deeper, or items at its
/// indent), as a range of indices into `lines`.
fn block(lines: &[Line], at: usize) -> std::ops::Range<usize> {
    let parent = &lines[at];
    let indent = if parent.item {
        parent.indent + 2
    } else {
        parent.indent
    };
    let mut end = at + 1;
    while end < lines.len() {
        let l = &lines[end];
        if l.indent > indent || (l.indent == indent && l.item && !parent.item) {
            end += 1;
        } else {
            break;
        }
    }
    at + 1..end
}

/// Child keys in `range`: the key lines at the block's first indent.
fn child_lines(lines: &[Line], range: std::ops::Range<usize>) -> Vec<usize> {
    let Some(first) = lines[range.clone()].iter().find(|l| l.key.is_some()) else {
        return Vec::new();
    };
    let indent = first.indent;
    let item = first.item;
    range
        .filter(|&i| {
            let l = &lines[i];
            l.key.is_some() && l.indent == indent && l.item == item
        })
        .collect()
}

/// Where the walk along a path ended.
enum Found {
    /// At a line (and possibly a column inside a flow mapping).
    Line(usize, Option<usize>),
    /// Not even the first key.
    Nothing,
}

fn walk(lines: &[Line], path: &[&str], nth_last: usize) -> (Found, bool) {
    let mut range = 0..lines.len();
    let mut at = Found::Nothing;
    for (depth, seg) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        let nth = if last { nth_last } else { 0 };
        let hit = child_lines(lines, range.clone())
            .into_iter()
            .filter(|&i| lines[i].key.as_ref().is_some_and(|(k, _)| k == seg))
            .nth(nth);
        match hit {
            Some(i) => {
                at = Found::Line(i, None);
                range = block(lines, i);
            }
            None => {
                // A flow mapping on the parent's line: `network: {dhcp: x}`.
                if let Found::Line(p, None) = at {
                    if let Some(col) = flow_key(&lines[p], seg) {
                        return (Found::Line(p, Some(col)), last);
                    }
                }
                return (at, false);
            }
        }
    }
    (at, true)
}

fn flow_key(line: &Line, key: &str) -> Option<usize> {
    let (value, col) = line.value?;
    if !value.starts_with('{') {
        return None;
    }
    for (i, _) in value.match_indices(key) {
        let before = value[..i].trim_end();
        let after = value[i + key.len()..].trim_start_matches(['"', '\'']);
        if (before.ends_with(['{', ',']) || before.ends_with(['"', '\''])) && after.starts_with(':')
        {
            return Some(col + value[..i].chars().count());
        }
    }
    None
}

/// The value of the key at `path` when it is on the key's line, else the
/// key; the nearest parent when the path cannot be followed.
pub(crate) fn locate(text: &str, path: &[&str]) -> Option<Location> {
    locate_nth(text, path, 0)
}

/// Like [`locate`], for the `nth` (0-based) occurrence of the last key.
pub(crate) fn locate_nth(text: &str, path: &[&str], nth: usize) -> Option<Location> {
    let lines = lines(text);
    match walk(&lines, path, nth) {
        (Found::Line(i, Some(col)), _) => Some(Location::new(lines[i].no + 1, col + 1)),
        (Found::Line(i, None), true) => {
            let l = &lines[i];
            let col = l
                .value
                .map_or_else(|| l.key.as_ref().map_or(0, |k| k.1), |v| v.1);
            Some(Location::new(l.no + 1, col + 1))
        }
        (Found::Line(i, None), false) => key_location(&lines[i]),
        (Found::Nothing, _) => None,
    }
}

/// The key itself at `path` (not its value).
pub(crate) fn locate_key(text: &str, path: &[&str], nth: usize) -> Option<Location> {
    let lines = lines(text);
    match walk(&lines, path, nth) {
        (Found::Line(i, Some(col)), _) => Some(Location::new(lines[i].no + 1, col + 1)),
        (Found::Line(i, None), _) => key_location(&lines[i]),
        (Found::Nothing, _) => None,
    }
}

fn key_location(l: &Line) -> Option<Location> {
    l.key.as_ref().map(|(_, c)| Location::new(l.no + 1, c + 1))
}

/// The keys directly under `path` (the top level for `[]`), in order, with
/// duplicates, each at its key's position.
pub(crate) fn children(text: &str, path: &[&str]) -> Vec<(String, Location)> {
    let lines = lines(text);
    let range = if path.is_empty() {
        0..lines.len()
    } else {
        match walk(&lines, path, 0) {
            (Found::Line(i, None), true) => block(&lines, i),
            _ => return Vec::new(),
        }
    };
    child_lines(&lines, range)
        .into_iter()
        .filter_map(|i| {
            let l = &lines[i];
            let (k, _) = l.key.as_ref()?;
            Some((k.clone(), key_location(l)?))
        })
        .collect()
}

/// Where `item` first appears in the value of `path` (a list entry, a
/// nested value); [`locate`] of `path` when it does not.
pub(crate) fn locate_in(text: &str, path: &[&str], item: &str) -> Option<Location> {
    let lines = lines(text);
    if let (Found::Line(i, None), true) = walk(&lines, path, 0) {
        let first = &lines[i];
        if let Some((value, col)) = first.value {
            if let Some(b) = value.find(item) {
                let at = col + value[..b].chars().count();
                return Some(Location::new(first.no + 1, at + 1));
            }
        }
        for l in &lines[block(&lines, i)] {
            if let Some(b) = l.text.find(item) {
                return Some(Location::new(l.no + 1, char_col(l.text, b) + 1));
            }
        }
    }
    locate(text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# c
role: agent
tls-san:
  - a
  - bad
hostname:   x_y # c
nodes:
  AA:bb:cc:dd:ee:01:
    hostname: n1
    network: {address: 10.0.0.5/24, dhcp: false}
  "serial:123":
    role: server
    manifests:
      a.yaml: |
        hostname: trap
        kind: X
    hostname: n2
list:
- x
- y
"#;

    fn at(line: u32, column: u32) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn follows_paths() {
        assert_eq!(locate(TEXT, &["role"]), at(2, 7));
        assert_eq!(locate(TEXT, &["tls-san"]), at(3, 1));
        assert_eq!(locate(TEXT, &["hostname"]), at(6, 13));
        assert_eq!(locate(TEXT, &["server"]), None);
        assert_eq!(
            locate(TEXT, &["nodes", "AA:bb:cc:dd:ee:01", "hostname"]),
            at(9, 15)
        );
        assert_eq!(
            locate(TEXT, &["nodes", "AA:bb:cc:dd:ee:01", "network", "dhcp"]),
            at(10, 37)
        );
        assert_eq!(
            locate(TEXT, &["nodes", "serial:123", "hostname"]),
            at(17, 15),
            "the manifest's text is not a key"
        );
        // Not found below a node: the node's own key.
        assert_eq!(locate(TEXT, &["nodes", "serial:123", "token"]), at(11, 3));
        assert_eq!(locate_key(TEXT, &["role"], 0), at(2, 1));
    }

    #[test]
    fn lists_children_and_items() {
        let keys: Vec<String> = children(TEXT, &["nodes"])
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(keys, ["AA:bb:cc:dd:ee:01", "serial:123"]);
        assert_eq!(children(TEXT, &[]).len(), 5);
        assert_eq!(locate_in(TEXT, &["tls-san"], "bad"), at(5, 5));
        assert_eq!(locate_in(TEXT, &["list"], "y"), at(20, 3));
        assert_eq!(locate_in(TEXT, &["hostname"], "x_y"), at(6, 13));
    }

    #[test]
    fn keys_with_colons_and_quotes() {
        assert_eq!(split_key("aa:bb: x"), Some(("aa:bb".to_owned(), 6)));
        assert_eq!(split_key("\"a: b\": x"), Some(("a: b".to_owned(), 7)));
        assert_eq!(split_key("'it''s':"), Some(("it's".to_owned(), 8)));
        assert_eq!(split_key("http://x"), None);
        assert_eq!(split_key("a # b: c"), None);
        assert_eq!(split_key("{a: b}"), None);
    }
}
