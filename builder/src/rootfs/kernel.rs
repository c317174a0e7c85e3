//! Takes the kernel out of the unpacked tree: the kernel image goes to the
//! boot partition, the modules kiln-init needs go to the initramfs, and the
//! root keeps only the modules the board lists (and their dependencies):
//! most of a Debian kernel's 400 MB module tree is drivers a board never has.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::tree::{Kind, Node, Tree};
use crate::initramfs::{self, ModuleRef};
use crate::packages::which;
use crate::stage_cache::{Cacheable, Decoder, Encoder};

pub struct KernelPayload {
    /// `uname -r` of the kernel, e.g. `6.1.0-28-amd64`.
    pub version: String,
    pub image: Vec<u8>,
    /// Modules for the initramfs, in load order: (path inside it, bytes).
    pub initramfs_modules: Vec<(String, Vec<u8>)>,
    pub initramfs_order: Vec<ModuleRef>,
    /// Modules kept in the root.
    pub root_module_count: usize,
}

impl Cacheable for KernelPayload {
    fn encode(&self, out: &mut Encoder) {
        out.str(&self.version);
        out.bytes(&self.image);
        out.u64(self.initramfs_modules.len() as u64);
        for (path, data) in &self.initramfs_modules {
            out.str(path);
            out.bytes(data);
        }
        out.u64(self.initramfs_order.len() as u64);
        for m in &self.initramfs_order {
            out.str(&m.name);
            out.str(&m.path);
        }
        out.u64(self.root_module_count as u64);
    }

    fn decode(input: &mut Decoder) -> Result<Self> {
        let version = input.str()?;
        let image = input.bytes()?;
        let initramfs_modules = (0..input.u64()?)
            .map(|_| Ok((input.str()?, input.bytes()?)))
            .collect::<Result<_>>()?;
        let initramfs_order = (0..input.u64()?)
            .map(|_| {
                Ok(ModuleRef {
                    name: input.str()?,
                    path: input.str()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(KernelPayload {
            version,
            image,
            initramfs_modules,
            initramfs_order,
            root_module_count: usize::try_from(input.u64()?)?,
        })
    }
}

/// Removes `/boot` from the tree, prunes the module tree to what the board
/// needs and regenerates its index with the host's `depmod`.
pub fn take(
    tree: &mut Tree,
    initramfs_wanted: &[String],
    root_wanted: &[String],
) -> Result<KernelPayload> {
    let images: Vec<(String, Vec<u8>)> = tree
        .below("boot")
        .filter_map(|(p, n)| match &n.kind {
            Kind::File(d) => p
                .strip_prefix("boot/vmlinuz-")
                .map(|v| (v.to_string(), d.to_vec())),
            _ => None,
        })
        .collect();
    let (version, image) = match images.as_slice() {
        [one] => one.clone(),
        [] => bail!("no /boot/vmlinuz-* in the package set; is the board's kernel package right?"),
        many => bail!(
            "more than one kernel in the package set: {}",
            many.iter()
                .map(|(v, _)| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    tree.remove_tree("boot");
    tree.insert("boot", Node::dir(0o755));

    let moddir = format!("usr/lib/modules/{version}");
    let files: BTreeMap<String, Vec<u8>> = tree
        .below(&moddir)
        .filter_map(|(p, n)| match &n.kind {
            Kind::File(d) if p.contains(".ko") => {
                Some((p[moddir.len() + 1..].to_string(), d.to_vec()))
            }
            _ => None,
        })
        .collect();
    let builtin = tree
        .file_data(&format!("{moddir}/modules.builtin"))
        .map(|d| initramfs::parse_builtin(&String::from_utf8_lossy(d)))
        .unwrap_or_default();
    let index = initramfs::index_modules(&files)?;
    let initramfs_order = index
        .closure(initramfs_wanted, &builtin)
        .context("resolving the board's initramfs-modules")?;
    let initramfs_modules = initramfs::module_files(&version, &initramfs_order, &files)?;
    let mut wanted_in_root: Vec<String> = root_wanted.to_vec();
    wanted_in_root.extend(initramfs_wanted.iter().cloned());
    let root_order = index
        .closure(&wanted_in_root, &builtin)
        .context("resolving the board's root-modules")?;
    let keep: BTreeSet<String> = root_order
        .iter()
        .map(|m| format!("{moddir}/{}", m.path))
        .collect();
    tree.retain_below(&moddir, |p, n| {
        !(matches!(n.kind, Kind::File(_)) && p.contains(".ko")) || keep.contains(p)
    });
    drop_empty_dirs(tree, &moddir);
    depmod(tree, &version)?;
    Ok(KernelPayload {
        version,
        image,
        initramfs_modules,
        initramfs_order,
        root_module_count: root_order.len(),
    })
}

fn drop_empty_dirs(tree: &mut Tree, below: &str) {
    loop {
        let dirs: BTreeSet<String> = tree
            .below(below)
            .filter(|(_, n)| matches!(n.kind, Kind::Dir))
            .map(|(p, _)| p.clone())
            .collect();
        let empty: Vec<String> = dirs
            .iter()
            .filter(|d| tree.below(d).next().is_none())
            .cloned()
            .collect();
        if empty.is_empty() {
            return;
        }
        for d in empty {
            tree.remove_tree(&d);
        }
    }
}

/// What Debian's kernel postinst does: `depmod`, so udev can load modules by
/// alias at boot. Runs the host's depmod on a copy of the pruned module
/// tree (depmod reads ELF of any arch) and copies its index files back.
fn depmod(tree: &mut Tree, version: &str) -> Result<()> {
    let depmod =
        which("depmod").context("the root's module index is made with depmod; install kmod")?;
    let tmp = tempfile::tempdir()?;
    let moddir = format!("usr/lib/modules/{version}");
    let out_dir = tmp.path().join("lib/modules").join(version);
    for (path, node) in tree.below(&moddir) {
        let dest = out_dir.join(&path[moddir.len() + 1..]);
        match &node.kind {
            Kind::Dir => std::fs::create_dir_all(&dest)?,
            Kind::File(data) => {
                std::fs::create_dir_all(dest.parent().expect("has parent"))?;
                std::fs::write(&dest, data)?;
            }
            _ => {}
        }
    }
    let out = Command::new(depmod)
        .arg("-b")
        .arg(tmp.path())
        .arg(version)
        .output()
        .context("running depmod")?;
    if !out.status.success() {
        bail!(
            "depmod failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for entry in std::fs::read_dir(&out_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && entry.file_type()?.is_file() {
            let data = std::fs::read(entry.path())?;
            tree.insert(&format!("{moddir}/{name}"), Node::file(data, 0o644));
        }
    }
    Ok(())
}
