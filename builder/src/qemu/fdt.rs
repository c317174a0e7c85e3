//! Edits a flattened device tree (a `.dtb`) for a QEMU boot: a board file
//! can switch off a node QEMU does not emulate, or drop a property that
//! points at one, in a copy of the image's own device tree. Only what a
//! board file needs: parse the blob into a tree, edit it, write it back
//! (version 17, the memory reservations kept as they were).

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One change to a device tree, as a board file writes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Edit {
    /// `status = "disabled"` on the node at this path: its driver never
    /// probes it.
    Disable(String),
    /// Removes the property at `/path/to/node/property`.
    DeleteProperty(String),
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Edit::Disable(path) => write!(f, "disabled {path}"),
            Edit::DeleteProperty(path) => write!(f, "deleted {path}"),
        }
    }
}

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_BYTES: usize = 40;

#[derive(Debug, Clone, PartialEq)]
struct Node {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Node>,
}

/// A parsed device tree: its memory reservation block as raw bytes (with
/// its terminating entry), the boot CPU, and the node tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    reservations: Vec<u8>,
    boot_cpu: u32,
    root: Node,
}

fn be32(blob: &[u8], at: usize) -> Result<u32> {
    blob.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .with_context(|| format!("device tree cut short at byte {at}"))
}

fn c_string(blob: &[u8], at: usize) -> Result<String> {
    let rest = blob.get(at..).context("string offset past the end")?;
    let len = rest
        .iter()
        .position(|b| *b == 0)
        .context("string without its NUL")?;
    Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
}

impl Tree {
    pub fn parse(blob: &[u8]) -> Result<Tree> {
        if be32(blob, 0)? != MAGIC {
            bail!("not a device tree blob (no d00dfeed magic)");
        }
        let field = |i: usize| be32(blob, 4 * i).map(|v| v as usize);
        let (structs, strings, rsv) = (field(2)?, field(3)?, field(4)?);
        if field(6)? > 17 {
            bail!("device tree version {} is newer than 17", field(6)?);
        }
        let mut end = rsv;
        while blob.get(end..end + 16).context("reservations cut short")? != [0; 16] {
            end += 16;
        }
        let mut at = structs;
        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        loop {
            let token = be32(blob, at)?;
            at += 4;
            match token {
                BEGIN_NODE => {
                    let name = c_string(blob, at)?;
                    at = (at + name.len() + 1).next_multiple_of(4);
                    stack.push(Node {
                        name,
                        props: Vec::new(),
                        children: Vec::new(),
                    });
                }
                PROP => {
                    let (len, name_at) = (be32(blob, at)? as usize, be32(blob, at + 4)? as usize);
                    let value = blob
                        .get(at + 8..at + 8 + len)
                        .context("property value cut short")?
                        .to_vec();
                    let name = c_string(blob, strings + name_at)?;
                    stack
                        .last_mut()
                        .context("property outside any node")?
                        .props
                        .push((name, value));
                    at = (at + 8 + len).next_multiple_of(4);
                }
                END_NODE => {
                    let node = stack.pop().context("unbalanced end of node")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                NOP => {}
                END => break,
                other => bail!("unknown device tree token {other:#x} at byte {}", at - 4),
            }
        }
        Ok(Tree {
            reservations: blob[rsv..end + 16].to_vec(),
            boot_cpu: field(7)? as u32,
            root: root.context("device tree without a root node")?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut structs = Vec::new();
        let mut strings: Vec<u8> = Vec::new();
        write_node(&self.root, &mut structs, &mut strings);
        structs.extend(END.to_be_bytes());
        let rsv = HEADER_BYTES.next_multiple_of(8);
        let struct_at = rsv + self.reservations.len();
        let strings_at = struct_at + structs.len();
        let total = strings_at + strings.len();
        let header = [
            MAGIC,
            total as u32,
            struct_at as u32,
            strings_at as u32,
            rsv as u32,
            17,
            16,
            self.boot_cpu,
            strings.len() as u32,
            structs.len() as u32,
        ];
        let mut out: Vec<u8> = header.iter().flat_map(|v| v.to_be_bytes()).collect();
        out.resize(rsv, 0);
        out.extend(&self.reservations);
        out.extend(structs);
        out.extend(strings);
        out
    }

    pub fn apply(&mut self, edit: &Edit) -> Result<()> {
        match edit {
            Edit::Disable(path) => {
                let node = self.node_mut(path)?;
                let value = b"disabled\0".to_vec();
                match node.props.iter_mut().find(|(n, _)| n == "status") {
                    Some((_, v)) => *v = value,
                    None => node.props.push(("status".into(), value)),
                }
            }
            Edit::DeleteProperty(path) => {
                let (node_path, prop) = path
                    .rsplit_once('/')
                    .with_context(|| format!("`{path}` is not /node/path/property"))?;
                let node = self.node_mut(if node_path.is_empty() { "/" } else { node_path })?;
                let before = node.props.len();
                node.props.retain(|(n, _)| n != prop);
                if node.props.len() == before {
                    bail!("device tree node {node_path} has no property {prop}");
                }
            }
        }
        Ok(())
    }

    /// The node at `path` (`/soc/mmc@7e300000`): names are matched whole,
    /// unit address included, so an edit never lands on a look-alike.
    fn node_mut(&mut self, path: &str) -> Result<&mut Node> {
        let mut node = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node
                .children
                .iter_mut()
                .find(|c| c.name == part)
                .with_context(|| format!("device tree has no node {path}"))?;
        }
        Ok(node)
    }
}

fn write_node(node: &Node, out: &mut Vec<u8>, strings: &mut Vec<u8>) {
    out.extend(BEGIN_NODE.to_be_bytes());
    out.extend(node.name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    for (name, value) in &node.props {
        out.extend(PROP.to_be_bytes());
        out.extend((value.len() as u32).to_be_bytes());
        out.extend((string_offset(strings, name) as u32).to_be_bytes());
        out.extend(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    for child in &node.children {
        write_node(child, out, strings);
    }
    out.extend(END_NODE.to_be_bytes());
}

/// Where `name` starts in the strings block, added at its end if new.
fn string_offset(strings: &mut Vec<u8>, name: &str) -> usize {
    let mut at = 0;
    for s in strings.split(|b| *b == 0) {
        if s == name.as_bytes() && at < strings.len() {
            return at;
        }
        at += s.len() + 1;
    }
    let at = strings.len();
    strings.extend(name.as_bytes());
    strings.push(0);
    at
}

/// `blob` with `edits` applied in order; an edit whose node or property is
/// missing is an error that names it (the board file is out of date).
pub fn edit(blob: &[u8], edits: &[Edit]) -> Result<Vec<u8>> {
    let mut tree = Tree::parse(blob)?;
    for e in edits {
        tree.apply(e)?;
    }
    Ok(tree.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, props: &[(&str, &[u8])], children: Vec<Node>) -> Node {
        Node {
            name: name.into(),
            props: props
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            children,
        }
    }

    /// A tree shaped like the Pi 4's where the edits land.
    fn pi4_like() -> Tree {
        Tree {
            reservations: [[0u8; 8], 4096u64.to_be_bytes(), [0; 8], [0; 8]].concat(),
            boot_cpu: 0,
            root: node(
                "",
                &[
                    ("compatible", b"raspberrypi,4-model-b\0"),
                    ("#size-cells", &[0, 0, 0, 1]),
                ],
                vec![node(
                    "soc",
                    &[],
                    vec![
                        node(
                            "interrupt-controller@7ef00100",
                            &[("compatible", b"brcm,bcm2711-l2-intc\0brcm,l2-intc\0")],
                            vec![],
                        ),
                        node(
                            "mmc@7e300000",
                            &[
                                ("status", b"okay\0"),
                                ("mmc-pwrseq", &[0, 0, 0, 0x10]),
                                ("bus-width", &[0, 0, 0, 4]),
                            ],
                            vec![node("wifi@1", &[("reg", &[0, 0, 0, 1])], vec![])],
                        ),
                    ],
                )],
            ),
        }
    }

    #[test]
    fn a_written_tree_parses_back_the_same() {
        let tree = pi4_like();
        let blob = tree.to_bytes();
        assert_eq!(be32(&blob, 4).unwrap() as usize, blob.len(), "totalsize");
        assert_eq!(Tree::parse(&blob).unwrap(), tree);
    }

    #[test]
    fn edits_disable_a_node_and_drop_a_property() {
        let blob = edit(
            &pi4_like().to_bytes(),
            &[
                Edit::Disable("/soc/interrupt-controller@7ef00100".into()),
                Edit::Disable("/soc/mmc@7e300000".into()),
                Edit::DeleteProperty("/soc/mmc@7e300000/mmc-pwrseq".into()),
            ],
        )
        .unwrap();
        let tree = Tree::parse(&blob).unwrap();
        let soc = &tree.root.children[0];
        assert_eq!(
            soc.children[0].props[1],
            ("status".to_string(), b"disabled\0".to_vec()),
            "status added"
        );
        let mmc = &soc.children[1];
        assert_eq!(
            mmc.props,
            [
                ("status".to_string(), b"disabled\0".to_vec()),
                ("bus-width".to_string(), vec![0, 0, 0, 4])
            ],
            "status replaced in place, mmc-pwrseq gone, the rest kept"
        );
        assert_eq!(mmc.children.len(), 1);
    }

    #[test]
    fn a_missing_node_or_property_is_named() {
        let mut tree = pi4_like();
        let e = tree
            .apply(&Edit::Disable("/soc/mmc@7e340000".into()))
            .unwrap_err();
        assert_eq!(e.to_string(), "device tree has no node /soc/mmc@7e340000");
        let e = tree
            .apply(&Edit::DeleteProperty(
                "/soc/mmc@7e300000/vmmc-supply".into(),
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "device tree node /soc/mmc@7e300000 has no property vmmc-supply"
        );
        assert!(Tree::parse(b"not a dtb at all").is_err());
    }

    #[test]
    fn strings_are_shared_between_properties() {
        let mut strings = Vec::new();
        assert_eq!(string_offset(&mut strings, "status"), 0);
        assert_eq!(string_offset(&mut strings, "reg"), 7);
        assert_eq!(string_offset(&mut strings, "status"), 0);
        assert_eq!(strings, b"status\0reg\0");
    }
}
