//! The root filesystem: packages unpacked into an in-memory [`tree::Tree`],
//! the declarative fixups that replace maintainer scripts, kiln's files and
//! the overlays, in that order.

pub mod deb;
pub mod fixups;
pub mod kernel;
pub mod overlay;
pub mod supplied_kernel;
pub mod sysusers;
pub mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::packages::Package;
use crate::stage_cache::{Cacheable, Decoder, Encoder, Outcome, StageCache};
use kernel::KernelPayload;
use tree::{Node, Tree};

/// kiln's OS, the same on every board: systemd as PID 1 with networkd,
/// resolved and timesyncd, udev for module autoloading, an SSH server
/// (dropbear, key logins only), and what k3s expects of a host. Boards add their kernel and firmware.
pub const BASE_PACKAGES: &[&str] = &[
    "base-files",
    "base-passwd",
    "ca-certificates",
    // root's shell for SSH sessions (/bin/sh, see fixups) and a few tools:
    // one 0.8 MB binary; dash would pull dpkg and tar in.
    "busybox",
    "dbus",
    // The SSH server: 0.5 MB with its libraries, against several MB (and
    // PAM, Kerberos, OpenSSL) for openssh-server.
    "dropbear-bin",
    "iproute2",
    "kmod",
    "netbase",
    "systemd",
    "systemd-resolved",
    "systemd-sysv",
    "systemd-timesyncd",
    "udev",
    // Satisfies init-system-helpers' `usrmerge | usr-is-merged` without the
    // perl-based usrmerge converter: kiln's tree is merged-/usr already.
    "usr-is-merged",
];

/// Units enabled in every image.
pub const BASE_UNITS: &[&str] = &[
    "tmp.mount",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "kiln-firstboot.service",
    "k3s.service",
    "kiln-ready.service",
    "dropbear.service",
];

pub struct RootInput<'a> {
    pub packages: &'a [Package],
    /// kiln's base overlay first, then the spec's, in order.
    pub overlays: &'a [PathBuf],
    pub template_context: &'a tera::Context,
    /// Files kiln adds (binaries, baked config), before the overlays.
    pub files: Vec<(String, Node)>,
    pub enable_units: Vec<String>,
    pub os_release: BTreeMap<&'static str, String>,
    pub initramfs_modules: &'a [String],
    pub root_modules: &'a [String],
    /// A kernel the spec supplies: image and module tree, placed where a
    /// kernel package puts them, before the kernel is taken out.
    pub kernel_files: Vec<(String, Node)>,
}

pub struct Root {
    pub tree: Tree,
    pub kernel: KernelPayload,
}

pub fn compose(input: RootInput, cache: &StageCache) -> Result<(Root, Outcome)> {
    let (base, outcome) =
        cache.get_or_make("package-root", &package_root_inputs(&input), || {
            package_root(&input)
        })?;
    let PackageRoot { mut tree, kernel } = base;
    for (path, node) in input.files {
        tree.insert(&path, node);
    }
    for dir in input.overlays {
        overlay::apply(dir, &mut tree, input.template_context)
            .with_context(|| format!("applying overlay {}", dir.display()))?;
    }
    sysusers::apply(&mut tree);
    fixups::enable_units(&mut tree, &input.enable_units)?;
    fixups::os_release(&mut tree, &input.os_release);
    Ok((Root { tree, kernel }, outcome))
}

/// What the packages alone make, before kiln's files and the overlays: the
/// costly part of a build (the kernel package alone is ~400 MiB of
/// modules to decode), and the part that rarely changes.
struct PackageRoot {
    tree: Tree,
    kernel: KernelPayload,
}

fn package_root(input: &RootInput) -> Result<PackageRoot> {
    let mut tree = unpack_all(input.packages)?;
    for (path, node) in &input.kernel_files {
        tree.insert(path, node.clone());
    }
    let kernel = kernel::take(&mut tree, input.initramfs_modules, input.root_modules)?;
    fixups::apply_all(&mut tree)?;
    Ok(PackageRoot { tree, kernel })
}

/// A package is known by name, version and architecture; the file size
/// guards against a cache rebuilt with other files under the same names.
fn package_root_inputs(input: &RootInput) -> Vec<u8> {
    let mut text = String::new();
    for p in input.packages {
        let size = std::fs::metadata(&p.path).map_or(0, |m| m.len());
        text.push_str(&format!("{} {} {} {size}\n", p.name, p.version, p.arch));
    }
    text.push_str(&format!(
        "initramfs {:?}\nroot {:?}\n",
        input.initramfs_modules, input.root_modules
    ));
    // A supplied kernel is known by its files' contents.
    for (path, node) in &input.kernel_files {
        let sum = match &node.kind {
            tree::Kind::File(data) => {
                crate::packages::hex(&<sha2::Sha256 as sha2::Digest>::digest(data))
            }
            _ => String::new(),
        };
        text.push_str(&format!("supplied {path} {sum}\n"));
    }
    text.into_bytes()
}

impl Cacheable for PackageRoot {
    fn encode(&self, out: &mut Encoder) {
        self.tree.encode(out);
        self.kernel.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self> {
        Ok(PackageRoot {
            tree: Tree::decode(input)?,
            kernel: KernelPayload::decode(input)?,
        })
    }
}

/// Unpacks every package, in parallel, then merges the trees in package
/// order so the result does not depend on thread timing.
fn unpack_all(packages: &[Package]) -> Result<Tree> {
    // Largest first, so the kernel package does not start last and leave
    // the other cores idle while it decodes.
    let mut order: Vec<usize> = (0..packages.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(std::fs::metadata(&packages[i].path).map_or(0, |m| m.len()))
    });
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Tree>>>> =
        packages.iter().map(|_| Mutex::new(None)).collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let pkg = &packages[i];
                    let mut tree = Tree::default();
                    let result = deb::unpack(&pkg.path, &mut tree).map(|_| tree);
                    *results[i].lock().expect("not poisoned") = Some(result);
                }
            });
        }
    });
    let mut merged = Tree::default();
    for (pkg, result) in packages.iter().zip(results) {
        let tree = result
            .into_inner()
            .expect("not poisoned")
            .expect("every package was unpacked")
            .with_context(|| format!("package {} {}", pkg.name, pkg.version))?;
        for (path, node) in tree.iter() {
            merged.insert(path, node.clone());
        }
    }
    Ok(merged)
}
