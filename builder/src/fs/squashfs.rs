//! The read-only root as a squashfs image, written from the in-memory tree.
//! Every entry gets the same mtime (SOURCE_DATE_EPOCH) and entries go in in
//! sorted order, so the same tree always gives the same bytes.

use std::io::Cursor;

use anyhow::{Context, Result};
use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::rootfs::tree::{Kind, Tree};

/// Writes `tree` as a zstd-compressed squashfs (the Debian kernel has zstd
/// squashfs built in; it decompresses faster than xz on small boards).
pub fn build(tree: &Tree, mtime: u32) -> Result<Vec<u8>> {
    let mut fs = FilesystemWriter::default();
    fs.set_time(mtime);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_block_size(128 * 1024);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None)?);
    fs.set_no_padding();
    for (path, node) in tree.iter() {
        let header = NodeHeader::new(node.mode as u16, node.uid, node.gid, mtime);
        let added = match &node.kind {
            Kind::Dir => fs.push_dir(path, header),
            Kind::File(data) => fs.push_file(Cursor::new(data.clone()), path, header),
            Kind::Symlink(target) => fs.push_symlink(target, path, header),
            Kind::CharDevice { major, minor } => {
                fs.push_char_device(linux_dev(*major, *minor), path, header)
            }
        };
        added.with_context(|| format!("adding /{path} to the squashfs"))?;
    }
    let mut out = Cursor::new(Vec::new());
    fs.write(&mut out).context("writing the squashfs")?;
    Ok(out.into_inner())
}

/// Linux's `new_encode_dev` (squashfs stores device numbers this way).
fn linux_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Node;

    fn sample() -> Tree {
        let mut t = Tree::default();
        t.insert("usr/bin/k3s", Node::file(vec![7u8; 300_000], 0o755));
        t.insert("bin", Node::symlink("usr/bin"));
        t.insert(
            "etc/shadow",
            Node {
                gid: 42,
                ..Node::file(&b"root:*:\n"[..], 0o640)
            },
        );
        t.insert(
            "dev/console",
            Node {
                kind: Kind::CharDevice { major: 5, minor: 1 },
                ..Node::dir(0o600)
            },
        );
        t
    }

    #[test]
    fn same_tree_same_bytes() {
        let a = build(&sample(), 1_700_000_000).unwrap();
        let b = build(&sample(), 1_700_000_000).unwrap();
        assert_eq!(&a[..4], b"hsqs");
        assert_eq!(a, b);
    }

    #[test]
    fn reads_back_with_modes_and_owners() {
        let img = build(&sample(), 1_700_000_000).unwrap();
        let reader = backhand::FilesystemReader::from_reader(Cursor::new(img)).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for node in reader.files() {
            seen.insert(
                node.fullpath.display().to_string(),
                (node.header.permissions, node.header.gid),
            );
        }
        assert_eq!(seen["/etc/shadow"], (0o640, 42));
        assert_eq!(seen["/usr/bin/k3s"].0, 0o755);
        assert!(seen.contains_key("/bin"));
    }
}
