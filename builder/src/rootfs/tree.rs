//! The root filesystem as plain data: every path with its kind, mode and
//! owner. Nothing is written to the host's disk, so ownership and device
//! nodes need no root, and the order of entries is always sorted.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::stage_cache::{Cacheable, Decoder, Encoder};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Arc<[u8]>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Node {
    pub fn dir(mode: u32) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn file(data: impl Into<Arc<[u8]>>, mode: u32) -> Node {
        Node {
            kind: Kind::File(data.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn symlink(target: &str) -> Node {
        Node {
            kind: Kind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }
}

/// Paths are relative (`usr/bin/k3s`), `/`-separated, without `.` or `..`;
/// the root directory itself is implicit.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// Normalises `./usr//bin/` and `/usr/bin` to `usr/bin`; rejects `..` so a
/// package or overlay can never write outside the tree.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl Tree {
    /// Inserts a node, creating missing parent directories (0755, root).
    /// A directory inserted over an existing directory only updates its
    /// mode and owner; anything else replaces what was there.
    pub fn insert(&mut self, path: &str, node: Node) {
        let Some(path) = normalize(path) else { return };
        if path.is_empty() {
            return;
        }
        self.ensure_parents(&path);
        if matches!(node.kind, Kind::Dir) {
            if let Some(existing) = self.nodes.get(&path) {
                if matches!(existing.kind, Kind::Dir) {
                    self.nodes.insert(path, node);
                    return;
                }
            }
        }
        if let Some(old) = self.nodes.get(&path) {
            // A directory replaced by a file or link: its children go too.
            if matches!(old.kind, Kind::Dir) && !matches!(node.kind, Kind::Dir) {
                self.remove_tree(&path);
            }
        }
        self.nodes.insert(path, node);
    }

    fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            self.nodes
                .entry(parent.to_string())
                .or_insert_with(|| Node::dir(0o755));
            end += i + 1;
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(normalize(path)?.as_str())
    }

    pub fn file_data(&self, path: &str) -> Option<&Arc<[u8]>> {
        match &self.get(path)?.kind {
            Kind::File(data) => Some(data),
            _ => None,
        }
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &str) {
        let Some(path) = normalize(path) else { return };
        let prefix = format!("{path}/");
        self.nodes
            .retain(|p, _| *p != path && !p.starts_with(&prefix));
    }

    /// Removes every entry below `dir` for which `keep` says false.
    pub fn retain_below(&mut self, dir: &str, mut keep: impl FnMut(&str, &Node) -> bool) {
        let prefix = format!("{dir}/");
        self.nodes
            .retain(|p, n| !p.starts_with(&prefix) || keep(p, n));
    }

    /// Paths directly or indirectly below `dir`, sorted.
    pub fn below<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = format!("{dir}/");
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total bytes of file contents.
    pub fn content_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

impl Cacheable for Tree {
    fn encode(&self, out: &mut Encoder) {
        out.u64(self.nodes.len() as u64);
        for (path, node) in &self.nodes {
            out.str(path);
            out.u32(node.mode);
            out.u32(node.uid);
            out.u32(node.gid);
            match &node.kind {
                Kind::Dir => out.u32(0),
                Kind::File(data) => {
                    out.u32(1);
                    out.bytes(data);
                }
                Kind::Symlink(target) => {
                    out.u32(2);
                    out.str(target);
                }
                Kind::CharDevice { major, minor } => {
                    out.u32(3);
                    out.u32(*major);
                    out.u32(*minor);
                }
            }
        }
    }

    fn decode(input: &mut Decoder) -> Result<Self> {
        let mut nodes = BTreeMap::new();
        for _ in 0..input.u64()? {
            let path = input.str()?;
            let (mode, uid, gid) = (input.u32()?, input.u32()?, input.u32()?);
            let kind = match input.u32()? {
                0 => Kind::Dir,
                1 => Kind::File(input.bytes()?.into()),
                2 => Kind::Symlink(input.str()?),
                3 => Kind::CharDevice {
                    major: input.u32()?,
                    minor: input.u32()?,
                },
                tag => bail!("unknown node kind {tag}"),
            };
            nodes.insert(
                path,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                },
            );
        }
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_escapes() {
        assert_eq!(normalize("./usr//bin/").as_deref(), Some("usr/bin"));
        assert_eq!(normalize("/etc/x").as_deref(), Some("etc/x"));
        assert_eq!(normalize("a/../../etc"), None);
    }

    #[test]
    fn insert_creates_parents_and_keeps_dir_children() {
        let mut t = Tree::default();
        t.insert("usr/bin/k3s", Node::file(&b"x"[..], 0o755));
        assert!(matches!(t.get("usr").unwrap().kind, Kind::Dir));
        t.insert("usr/bin", Node::dir(0o700));
        assert!(
            t.get("usr/bin/k3s").is_some(),
            "re-inserting a dir keeps its children"
        );
        assert_eq!(t.get("usr/bin").unwrap().mode, 0o700);
        t.insert("usr/bin", Node::symlink("x"));
        assert!(
            t.get("usr/bin/k3s").is_none(),
            "a dir replaced by a link loses its children"
        );
    }

    #[test]
    fn tree_survives_the_stage_cache_codec() {
        let mut t = Tree::default();
        t.insert("usr/bin/k3s", Node::file(&b"binary"[..], 0o755));
        t.insert("usr/bin/kubectl", Node::symlink("k3s"));
        t.insert(
            "dev/console",
            Node {
                kind: Kind::CharDevice { major: 5, minor: 1 },
                mode: 0o600,
                uid: 0,
                gid: 5,
            },
        );
        let mut out = Encoder::default();
        t.encode(&mut out);
        let data = out.into_bytes();
        let back = Tree::decode(&mut Decoder::new(&data)).unwrap();
        assert_eq!(back.nodes, t.nodes);
    }

    #[test]
    fn below_lists_only_descendants() {
        let mut t = Tree::default();
        for p in ["a/b", "a/b/c", "a-b", "ab"] {
            t.insert(p, Node::dir(0o755));
        }
        let got: Vec<&String> = t.below("a").map(|(p, _)| p).collect();
        assert_eq!(got, ["a/b", "a/b/c"]);
    }
}
