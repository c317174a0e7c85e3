//! kiln's initramfs: `kiln-init` as `/init`, the kernel modules needed to
//! reach the root, and their load order, as a reproducible gzip'd newc cpio.
//!
//! - [`index_modules`] reads a kernel package's modules (their own
//!   `.modinfo`, no depmod), [`KernelModules::closure`] gives the load order.
//! - [`module_files`] turns that order into the files of the initramfs.
//! - [`build`] writes the archive: same input, same bytes.

mod modinfo;
mod modules;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, ensure, Context, Result};

pub use modules::{
    decompress, index_modules, normalize, parse_builtin, KernelModules, Module, ModuleRef,
};

/// Helpers for the tests that read a real, unpacked Debian kernel.
#[cfg(test)]
pub(crate) mod real_kernel {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The QEMU x86 set of DESIGN.md ("Initramfs modules").
    pub const QEMU_X86_MODULES: [&str; 9] = [
        "virtio_pci",
        "virtio_blk",
        "ext4",
        "crc32c_generic",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "squashfs",
        "overlay",
    ];

    /// Every file under `lib/modules/<kver>` of an unpacked kernel package,
    /// keyed by its path below that directory (what
    /// [`super::index_modules`] takes).
    pub fn module_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                    files.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        files
    }
}

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsInput {
    /// The `kiln-init` static binary, written as `/init`.
    pub init: Vec<u8>,
    /// Kernel modules in load order: path inside the initramfs (e.g.
    /// `lib/modules/6.1.0-28-amd64/kernel/fs/ext4/ext4.ko`) and bytes.
    pub modules: Vec<(String, Vec<u8>)>,
    /// Modification time of every entry (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
}

/// The initramfs files for a load order: each module under
/// `lib/modules/<kver>/`, decompressed (the path loses `.xz`/`.zst`), in the
/// same order. `files` is keyed like [`index_modules`]'s input.
pub fn module_files(
    kver: &str,
    order: &[ModuleRef],
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<(String, Vec<u8>)>> {
    order
        .iter()
        .map(|m| {
            let bytes = files.get(&m.path).with_context(|| {
                format!(
                    "module {} ({}) is not among the kernel's files",
                    m.name, m.path
                )
            })?;
            let plain = m
                .path
                .strip_suffix(".xz")
                .or_else(|| m.path.strip_suffix(".zst"))
                .or_else(|| m.path.strip_suffix(".gz"))
                .unwrap_or(&m.path);
            Ok((
                format!("lib/modules/{kver}/{plain}"),
                decompress(&m.path, bytes)?,
            ))
        })
        .collect()
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// One archive entry before numbering.
enum Node<'a> {
    Dir,
    File { mode: u32, data: &'a [u8] },
    Char { mode: u32, major: u32, minor: u32 },
}

/// Add one entry and every directory on the way to it.
fn add<'a>(nodes: &mut BTreeMap<String, Node<'a>>, path: &str, node: Node<'a>) -> Result<()> {
    ensure!(
        !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "initramfs path {path:?} must be relative and plain (no empty, `.` or `..` parts)"
    );
    let mut parent = path;
    while let Some((dir, _)) = parent.rsplit_once('/') {
        if let Some(Node::File { .. } | Node::Char { .. }) = nodes.get(dir) {
            bail!("initramfs path {path:?} lies under {dir:?}, which is not a directory");
        }
        nodes.insert(dir.to_string(), Node::Dir);
        parent = dir;
    }
    match (nodes.get(path), &node) {
        (None, _) | (Some(Node::Dir), Node::Dir) => {}
        _ => bail!("initramfs path {path:?} is given twice; list each module once"),
    }
    nodes.insert(path.to_string(), node);
    Ok(())
}

/// Directories the kernel and `kiln-init` mount on or write to.
const EMPTY_DIRS: [&str; 6] = ["dev", "proc", "sys", "sysroot", "run", "tmp"];

/// The gzip'd newc cpio. Entries are sorted by path, every directory on the
/// way to a file is present, owners are 0:0, every mtime is `input.mtime`,
/// inode numbers count up in path order, and the gzip header carries no
/// time and no name: the same input always gives the same bytes.
pub fn build(input: &InitramfsInput) -> Result<Vec<u8>> {
    let mtime = u32::try_from(input.mtime).with_context(|| {
        format!(
            "SOURCE_DATE_EPOCH {} does not fit a cpio header (32 bits); use an earlier epoch",
            input.mtime
        )
    })?;
    let list_path = kiln_node::layout::INITRAMFS_MODULE_LIST;
    let mut list = String::new();
    for (path, _) in &input.modules {
        list.push_str(path);
        list.push('\n');
    }

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    add(
        &mut nodes,
        "init",
        Node::File {
            mode: 0o755,
            data: &input.init,
        },
    )?;
    for (path, data) in &input.modules {
        add(&mut nodes, path, Node::File { mode: 0o644, data })?;
    }
    add(
        &mut nodes,
        list_path,
        Node::File {
            mode: 0o644,
            data: list.as_bytes(),
        },
    )?;
    add(
        &mut nodes,
        "dev/console",
        Node::Char {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    add(
        &mut nodes,
        "dev/null",
        Node::Char {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    )?;
    for dir in EMPTY_DIRS {
        add(&mut nodes, dir, Node::Dir)?;
    }

    let cpio = newc(&nodes, mtime)?;

    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3) // Unix, as gzip -n writes it
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&cpio).context("compressing the initramfs")?;
    gz.finish().context("compressing the initramfs")
}

/// An uncompressed newc cpio of `nodes` (sorted, 0:0, one mtime).
fn newc(nodes: &BTreeMap<String, Node>, mtime: u32) -> Result<Vec<u8>> {
    let mut cpio = Vec::new();
    for (ino, (path, node)) in nodes.iter().enumerate() {
        let b = cpio::newc::Builder::new(path)
            .ino(ino as u32 + 1)
            .uid(0)
            .gid(0)
            .mtime(mtime);
        let (b, data): (_, &[u8]) = match node {
            Node::Dir => (b.mode(S_IFDIR | 0o755).nlink(2), &[]),
            Node::File { mode, data } => (b.mode(S_IFREG | mode).nlink(1), data),
            Node::Char { mode, major, minor } => (
                b.mode(S_IFCHR | mode)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("{path} is too big for a cpio archive"))?;
        let mut w = b.write(&mut cpio, size);
        w.write_all(data).context("writing the initramfs cpio")?;
        w.finish().context("writing the initramfs cpio")?;
    }
    cpio::newc::trailer(&mut cpio).context("writing the initramfs cpio")?;
    Ok(cpio)
}

/// The early microcode archive the kernel looks for in front of the
/// initramfs: `kernel/x86/microcode/<vendor file>` in an uncompressed cpio
/// (the kernel reads it before it unpacks anything). `blobs` are the
/// vendor's per-CPU files, concatenated as the kernel accepts them.
pub fn early_microcode(vendor_file: &str, blobs: &[&[u8]], mtime: u64) -> Result<Vec<u8>> {
    let mtime = u32::try_from(mtime).context("SOURCE_DATE_EPOCH does not fit a cpio header")?;
    let data: Vec<u8> = blobs.concat();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    add(
        &mut nodes,
        &format!("kernel/x86/microcode/{vendor_file}"),
        Node::File {
            mode: 0o644,
            data: &data,
        },
    )?;
    newc(&nodes, mtime)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Every entry of a gzip'd newc cpio: name, mode, uid, gid, mtime, ino,
    /// rdev, data.
    type Entry = (String, u32, u32, u32, u32, u32, (u32, u32), Vec<u8>);

    fn entries(gz: &[u8]) -> Vec<Entry> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .unwrap();
        let mut rest: &[u8] = &raw;
        let mut out = Vec::new();
        loop {
            let mut r = cpio::newc::Reader::new(rest).unwrap();
            let e = r.entry().clone();
            if e.is_trailer() {
                break;
            }
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((
                e.name().to_string(),
                e.mode(),
                e.uid(),
                e.gid(),
                e.mtime(),
                e.ino(),
                (e.rdev_major(), e.rdev_minor()),
                data,
            ));
            rest = r.finish().unwrap();
        }
        out
    }

    fn input() -> InitramfsInput {
        InitramfsInput {
            init: b"\x7fELF kiln-init".to_vec(),
            modules: vec![
                (
                    "lib/modules/6.1.0-9-amd64/kernel/fs/jbd2/jbd2.ko".into(),
                    b"jbd2".to_vec(),
                ),
                (
                    "lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko".into(),
                    b"ext4 module".to_vec(),
                ),
                (
                    "lib/modules/6.1.0-9-amd64/kernel/lib/crc16.ko".into(),
                    b"crc".to_vec(),
                ),
            ],
            mtime: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let gz = build(&input()).unwrap();
        let e = entries(&gz);
        let names: Vec<&str> = e.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are sorted");
        let get = |n: &str| {
            e.iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(get("init").1, 0o100_755);
        assert_eq!(get("init").7, b"\x7fELF kiln-init");
        let ext4 = get("lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko");
        assert_eq!((ext4.1, &ext4.7[..]), (0o100_644, &b"ext4 module"[..]));
        assert_eq!(
            String::from_utf8(get("etc/kiln/modules.load").7.clone()).unwrap(),
            "lib/modules/6.1.0-9-amd64/kernel/fs/jbd2/jbd2.ko\n\
             lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko\n\
             lib/modules/6.1.0-9-amd64/kernel/lib/crc16.ko\n",
            "load order is kept"
        );
        assert_eq!(
            (get("dev/console").1, get("dev/console").6),
            (0o020_600, (5, 1))
        );
        assert_eq!((get("dev/null").1, get("dev/null").6), (0o020_666, (1, 3)));
        for dir in [
            "dev",
            "proc",
            "sys",
            "sysroot",
            "run",
            "tmp",
            "etc",
            "etc/kiln",
            "lib",
            "lib/modules",
            "lib/modules/6.1.0-9-amd64/kernel/fs/ext4",
        ] {
            assert_eq!(get(dir).1, 0o040_755, "{dir}");
        }
        for (i, e) in e.iter().enumerate() {
            assert_eq!((e.2, e.3, e.4), (0, 0, 1_700_000_000), "{}", e.0);
            assert_eq!(e.5, i as u32 + 1, "inode numbers follow path order");
        }
        // gzip header: no mtime, no name (FLG = 0), Unix.
        assert_eq!(&gz[3..10], &[0, 0, 0, 0, 0, 2, 3]);
    }

    #[test]
    fn same_input_same_bytes() {
        let a = build(&input()).unwrap();
        assert_eq!(a, build(&input()).unwrap());
        let mut other = input();
        other.mtime += 1;
        assert_ne!(a, build(&other).unwrap());
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "/abs.ko",
            "a/../b.ko",
            "init",
            "init/x.ko",
            "dev/console",
            "a//b.ko",
        ] {
            let mut i = input();
            i.modules.push((bad.into(), vec![]));
            assert!(build(&i).is_err(), "{bad}");
        }
        let mut i = input();
        i.modules.push(i.modules[0].clone());
        assert!(build(&i).unwrap_err().to_string().contains("given twice"));
        let mut i = input();
        i.mtime = 1 << 33;
        assert!(build(&i).is_err());
    }

    #[test]
    fn module_files_decompress_and_place() {
        let order = vec![
            ModuleRef {
                name: "a".into(),
                path: "kernel/a.ko.zst".into(),
            },
            ModuleRef {
                name: "b".into(),
                path: "kernel/b.ko".into(),
            },
        ];
        let mut files = BTreeMap::new();
        files.insert(
            "kernel/a.ko.zst".to_string(),
            zstd::encode_all(&b"AAAA"[..], 3).unwrap(),
        );
        files.insert("kernel/b.ko".to_string(), b"BB".to_vec());
        let got = module_files("6.1.0-9-amd64", &order, &files).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "lib/modules/6.1.0-9-amd64/kernel/a.ko".to_string(),
                    b"AAAA".to_vec()
                ),
                (
                    "lib/modules/6.1.0-9-amd64/kernel/b.ko".to_string(),
                    b"BB".to_vec()
                ),
            ]
        );
        files.remove("kernel/b.ko");
        assert!(module_files("k", &order, &files).is_err());
    }
}
