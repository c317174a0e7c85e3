//! `systemd-sysusers` at build time: the system accounts packages declare in
//! `sysusers.d` (and the ones their postinst would add with adduser, which
//! kiln's base overlay declares the same way) are written into
//! `/etc/passwd` and `/etc/group` with stable ids, so services that run as
//! their own user start on the first boot of a read-only root.

use std::collections::BTreeSet;

use super::tree::{Kind, Node, Tree};

/// Dynamic ids are taken from here downwards, like systemd's default.
const DYNAMIC_MAX: u32 = 999;

#[derive(Debug, PartialEq)]
enum Line {
    User {
        name: String,
        id: Option<(u32, Option<u32>)>,
        gecos: String,
        home: String,
        shell: String,
    },
    Group {
        name: String,
        gid: Option<u32>,
    },
    Member {
        user: String,
        group: String,
    },
}

fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w = words(line.trim());
        let get = |i: usize| w.get(i).filter(|v| v.as_str() != "-").cloned();
        match w.first().map(String::as_str) {
            Some("u") | Some("u!") => {
                let Some(name) = get(1) else { continue };
                let id = get(2).and_then(|id| {
                    let (u, g) = id
                        .split_once(':')
                        .map_or((id.as_str(), None), |(u, g)| (u, Some(g)));
                    Some((u.parse().ok()?, g.and_then(|g| g.parse().ok())))
                });
                out.push(Line::User {
                    name,
                    id,
                    gecos: get(3).unwrap_or_default(),
                    home: get(4).unwrap_or_else(|| "/".into()),
                    shell: get(5).unwrap_or_else(|| "/usr/sbin/nologin".into()),
                });
            }
            Some("g") => {
                if let Some(name) = get(1) {
                    out.push(Line::Group {
                        name,
                        gid: get(2).and_then(|g| g.parse().ok()),
                    });
                }
            }
            Some("m") => {
                if let (Some(user), Some(group)) = (get(1), get(2)) {
                    out.push(Line::Member { user, group });
                }
            }
            _ => {}
        }
    }
    out
}

fn text_of(tree: &Tree, path: &str) -> String {
    tree.file_data(path)
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default()
}

/// Adds every declared account missing from `/etc/passwd` and `/etc/group`.
pub fn apply(tree: &mut Tree) {
    let mut conf: Vec<(String, String)> = tree
        .below("usr/lib/sysusers.d")
        .filter_map(|(p, n)| match &n.kind {
            Kind::File(d) if p.ends_with(".conf") => {
                let file = p.rsplit('/').next().unwrap_or(p).to_string();
                Some((file, String::from_utf8_lossy(d).into_owned()))
            }
            _ => None,
        })
        .collect();
    // systemd reads files in name order, whatever directory they are in.
    conf.sort();
    let mut passwd = text_of(tree, "etc/passwd");
    let mut group = text_of(tree, "etc/group");
    let mut shadow = text_of(tree, "etc/shadow");
    let field = |text: &str, i: usize| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.split(':').nth(i).map(str::to_owned))
            .collect()
    };
    let mut user_names = field(&passwd, 0);
    let mut group_names = field(&group, 0);
    let mut used: BTreeSet<u32> = field(&passwd, 2)
        .iter()
        .chain(&field(&group, 2))
        .filter_map(|i| i.parse().ok())
        .collect();
    let next_free = |used: &mut BTreeSet<u32>| -> u32 {
        let id = (1..=DYNAMIC_MAX)
            .rev()
            .find(|i| !used.contains(i))
            .unwrap_or(DYNAMIC_MAX);
        used.insert(id);
        id
    };
    let gid_of = |group: &str, name: &str| -> Option<u32> {
        group
            .lines()
            .find(|l| l.split(':').next() == Some(name))?
            .split(':')
            .nth(2)?
            .parse()
            .ok()
    };
    let mut members = Vec::new();
    for line in conf.iter().flat_map(|(_, text)| parse(text)) {
        match line {
            Line::Group { name, gid } => {
                if group_names.insert(name.clone()) {
                    let gid = gid
                        .filter(|g| used.insert(*g))
                        .unwrap_or_else(|| next_free(&mut used));
                    group.push_str(&format!("{name}:x:{gid}:\n"));
                }
            }
            Line::User {
                name,
                id,
                gecos,
                home,
                shell,
            } => {
                if !user_names.insert(name.clone()) {
                    continue;
                }
                let uid = id
                    .map(|(u, _)| u)
                    .filter(|u| used.insert(*u))
                    .unwrap_or_else(|| next_free(&mut used));
                let gid = match id.and_then(|(_, g)| g) {
                    Some(g) => g,
                    None => match gid_of(&group, &name) {
                        Some(g) => g,
                        None => {
                            group_names.insert(name.clone());
                            group.push_str(&format!("{name}:x:{uid}:\n"));
                            uid
                        }
                    },
                };
                passwd.push_str(&format!("{name}:x:{uid}:{gid}:{gecos}:{home}:{shell}\n"));
                shadow.push_str(&format!("{name}:!*:0::::::\n"));
            }
            Line::Member { user, group: g } => members.push((user, g)),
        }
    }
    for (user, g) in members {
        group = group
            .lines()
            .map(|l| {
                let mut f: Vec<String> = l.split(':').map(str::to_owned).collect();
                if f.first() == Some(&g) && f.len() == 4 && !f[3].split(',').any(|m| m == user) {
                    f[3] = if f[3].is_empty() {
                        user.clone()
                    } else {
                        format!("{},{user}", f[3])
                    };
                }
                f.join(":") + "\n"
            })
            .collect();
    }
    write_account_files(tree, passwd, group, shadow);
}

/// `/etc/passwd`, `/etc/group` and `/etc/shadow` with Debian's modes
/// (shadow is readable by group `shadow`, gid 42).
pub(super) fn write_account_files(tree: &mut Tree, passwd: String, group: String, shadow: String) {
    tree.insert("etc/passwd", Node::file(passwd.into_bytes(), 0o644));
    tree.insert("etc/group", Node::file(group.into_bytes(), 0o644));
    tree.insert(
        "etc/shadow",
        Node {
            gid: 42,
            ..Node::file(shadow.into_bytes(), 0o640)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_users_get_stable_ids_and_groups() {
        let mut t = Tree::default();
        t.insert(
            "etc/passwd",
            Node::file(&b"root:x:0:0:root:/root:/bin/sh\n"[..], 0o644),
        );
        t.insert("etc/group", Node::file(&b"root:x:0:\n"[..], 0o644));
        t.insert(
            "usr/lib/sysusers.d/systemd-network.conf",
            Node::file(&b"u systemd-network - \"systemd Network Management\"\ng systemd-journal - -\nu root 0 - /root\nm systemd-network systemd-journal\n"[..], 0o644),
        );
        apply(&mut t);
        let passwd = text_of(&t, "etc/passwd");
        let group = text_of(&t, "etc/group");
        assert!(
            passwd.contains(
                "systemd-network:x:999:999:systemd Network Management:/:/usr/sbin/nologin\n"
            ),
            "{passwd}"
        );
        assert_eq!(passwd.lines().filter(|l| l.starts_with("root:")).count(), 1);
        assert!(
            group.contains("systemd-journal:x:998:systemd-network\n"),
            "{group}"
        );
        assert!(text_of(&t, "etc/shadow").contains("systemd-network:!*:"));
    }
}
