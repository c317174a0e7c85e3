//! Runs the stages in order and reports what it made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_node::gpt::Guid;
use kiln_node::{layout, mbr};

use crate::board::PartitionTable;
use crate::boot::{self, BootInput};
use crate::disk::image::DiskTable;
use crate::disk::layout::place;
use crate::fs::{ext4, fat, squashfs};
use crate::nodebin::{self, NodeBinaries};
use crate::output::{Format, Written};
use crate::packages::{self, hex, Apt, Package};
use crate::plan::{BuildPlan, K3sPlan};
use crate::progress::Stages;
use crate::rootfs::tree::Node;
use crate::rootfs::{self, RootInput, BASE_UNITS};
use crate::stage_cache::{Outcome, StageCache};
use crate::{initramfs, progress};

/// What a build made, for the summary and for tests.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: PathBuf,
    pub image_bytes: u64,
    /// Bytes the sparse image really occupies on disk.
    pub image_allocated_bytes: u64,
    pub root_bytes: u64,
    /// Bytes of file contents in the root (before compression).
    pub root_content_bytes: u64,
    pub k3s_bytes: u64,
    pub initramfs_bytes: u64,
    pub packages: Vec<Package>,
    pub kernel_version: String,
    pub k3s: String,
    pub k3s_is_double: bool,
    pub sha256: String,
    /// The installer stick image, when asked for.
    pub installer: Option<PathBuf>,
    pub stages: Vec<(&'static str, Duration)>,
    /// Stage outputs reused from an earlier build with the same inputs.
    pub cached_stages: Vec<&'static str>,
    pub warnings: Vec<String>,
    /// What was written besides the raw image.
    pub outputs: Vec<OutputReport>,
}

pub fn build(plan: &BuildPlan) -> Result<BuildReport> {
    let mut stages = Stages::default();
    let arch = plan.board.arch;
    let mut warnings = Vec::new();

    // Host tools first, then the in-image binaries: a missing apt or cross
    // toolchain is found before any download.
    let sources = packages::sources_for(
        &plan.board.suite,
        plan.mirror.as_deref(),
        &plan.board.components,
    )?;
    let apt = Apt::new(&plan.cache_dir, &plan.board.suite, arch.debian(), &sources)?;
    let bins = stages.run("building in-image binaries", || nodebin::build(arch))?;
    let packages = stages.run("resolving and fetching packages", || {
        warnings.extend(apt.update(plan.refresh_packages)?);
        // The kernel package depends on initramfs-tools, perl and more that
        // a kiln root never uses (kiln makes the initramfs): resolve it on
        // its own (alongside, each apt run is mostly start-up) and take only
        // the kernel image packages from its closure. A kernel the spec
        // supplies replaces the board's package.
        let package = match &plan.kernel {
            None => plan.board.kernel.package.as_ref(),
            Some(_) => None,
        };
        let (packages, kernel) = std::thread::scope(|s| {
            let kernel = s.spawn(|| match package {
                Some(p) => apt.fetch(std::slice::from_ref(p)),
                None => Ok(Vec::new()),
            });
            let packages = apt.fetch(&plan.packages);
            (packages, kernel.join().expect("kernel resolution panicked"))
        });
        let (mut packages, kernel) = (packages?, kernel?);
        packages.extend(
            kernel
                .into_iter()
                .filter(|p| p.name.starts_with("linux-image-")),
        );
        packages.sort();
        packages.dedup();
        Ok(packages)
    })?;
    let k3s = stages.run("getting the k3s binary", || k3s_binary(&plan.k3s, &bins))?;
    let supplied = match &plan.kernel {
        Some(k) => Some(stages.run("getting the supplied kernel", || {
            rootfs::supplied_kernel::fetch(k)
        })?),
        None => None,
    };
    let (kernel_files, supplied_dtb) = match supplied {
        Some(s) => (s.files, s.dtb),
        None => (Vec::new(), None),
    };

    let cache = if plan.stage_cache {
        StageCache::at(plan.cache_dir.join("stages"))
    } else {
        StageCache::disabled()
    };
    let mut cached_stages = Vec::new();
    let mut root = stages.run("composing the root filesystem", || {
        let mut files = vec![
            (
                "usr/bin/kiln-firstboot".to_string(),
                Node::file(bins.firstboot.clone(), 0o755),
            ),
            (
                "usr/bin/k3s".to_string(),
                Node::file(k3s.binary.clone(), 0o755),
            ),
        ];
        // What k3s's install script links to the multi-call binary.
        for tool in ["kubectl", "crictl", "ctr"] {
            files.push((format!("usr/bin/{tool}"), Node::symlink("k3s")));
        }
        for (name, data) in &plan.airgap_images {
            files.push((
                format!(
                    "{}/{name}",
                    layout::AIRGAP_IMAGES_DIR.trim_start_matches('/')
                ),
                Node::file(data.clone(), 0o644),
            ));
        }
        if let Some(node) = &plan.baked_node {
            files.push((
                layout::BAKED_NODE_CONFIG.trim_start_matches('/').into(),
                Node::file(node.clone(), 0o600),
            ));
        }
        let mut context = tera::Context::new();
        context.insert("image", &plan.name);
        context.insert("board", &plan.board.name);
        context.insert("arch", arch.debian());
        context.insert("k3s_version", &k3s.label);
        let mut units: Vec<String> = BASE_UNITS.iter().map(|u| u.to_string()).collect();
        units.extend(extra_units(plan));
        let (root, outcome) = rootfs::compose(
            RootInput {
                packages: &packages,
                overlays: &plan.overlays,
                template_context: &context,
                files,
                enable_units: units,
                os_release: os_release(plan, &k3s),
                initramfs_modules: &plan.board.initramfs_modules,
                root_modules: &plan.board.root_modules,
                kernel_files,
            },
            &cache,
        )?;
        if outcome == Outcome::Cached {
            cached_stages.push("package root");
        }
        Ok(root)
    })?;

    let initrd = stages.run("building the initramfs", || {
        let main = initramfs::build(&initramfs::InitramfsInput {
            init: bins.init.clone(),
            modules: root.kernel.initramfs_modules.clone(),
            mtime: plan.epoch,
        })?;
        match plan.board.microcode {
            // The kernel reads an uncompressed cpio in front of the
            // compressed one: one initrd file, as initramfs-tools makes it.
            Some(mc) => Ok([early_microcode(&root.tree, mc, plan.epoch)?, main].concat()),
            None => Ok(main),
        }
    })?;

    let k3s_bytes = k3s.binary.len();
    let disk_table = disk_table(plan);
    let esp = stages.run("writing the boot partition", || {
        // `ro`: without it systemd-remount-fs remounts `/` read-write (the
        // squashfs stays read-only underneath, but the mount should say so).
        let mut cmdline = format!(
            "{} ro kiln.root={}",
            plan.board.kernel.cmdline,
            layout::ROOT_A_PARTITION
        );
        let dtb = match (&supplied_dtb, &plan.board.kernel.dtb) {
            (Some((name, data)), _) => Some((name.as_str(), data.clone())),
            (None, Some(path)) => Some((
                path.as_str(),
                board_dtb(&root.tree, &root.kernel.version, path)?,
            )),
            (None, None) => None,
        };
        // MBR partitions have no names: kiln-init finds the disk by its
        // signature and the partitions by number.
        if let DiskTable::Mbr { disk_id } = disk_table {
            cmdline.push_str(&format!(" kiln.mbr={}", mbr::disk_id_text(disk_id)));
        }
        let input = BootInput {
            kernel: &root.kernel.image,
            initrd: &initrd,
            kernel_version: &root.kernel.version,
            cmdline,
            dtb: dtb.as_ref().map(|(path, data)| boot::Dtb { path, data }),
        };
        let files = boot::boot_files(&plan.board, &mut root.tree, &input)?;
        let volume = plan.derive("esp-volume-id");
        let fat = fat::build(
            &fat::FatSpec {
                size_bytes: plan.board.disk.esp_mib << 20,
                label: boot::volume_label(plan.board.boot).into(),
                volume_id: u32::from_le_bytes(volume[..4].try_into().expect("4 bytes")),
                fat32: true,
                mtime: plan.epoch,
            },
            &files,
        )?;
        Ok((fat, files))
    })?;
    let (esp, boot_files) = esp;

    let squash = stages.run("writing the root squashfs", || {
        squashfs::build(
            &root.tree,
            u32::try_from(plan.epoch).context("epoch past 2106")?,
        )
    })?;

    let data = stages.run("formatting the data partition", || {
        ext4::build(&ext4::Ext4Spec {
            size_bytes: plan.board.disk.data_mib << 20,
            label: layout::DATA_PARTITION,
            uuid: Guid::from_hash(&plan.derive("data-fs-uuid"))
                .to_string()
                .to_lowercase(),
            epoch: plan.epoch,
        })
    })?;

    let image = plan.image_path();
    stages.run("writing the disk image", || {
        let plans = crate::disk::partitions(plan);
        let layout = place(&plans);
        crate::disk::image::write(
            &image,
            &layout,
            disk_table,
            &[Some(&esp), Some(&squash), None, Some(&data)],
        )
    })?;

    let sha256 = stages.run("checksumming", || packages::sha256_file(&image))?;

    write_sidecar(
        &image,
        &Sidecar {
            board: plan.board.name.clone(),
            arch: arch.debian().to_string(),
            kernel: root.kernel.version.clone(),
            k3s: k3s.label.clone(),
            k3s_test_double: k3s.is_double,
            sha256: sha256.clone(),
        },
    )?;
    let installer = match &plan.installer {
        Some(rules) => Some(stages.run("writing the installer image", || {
            crate::installer::write(plan, rules, &image, &boot_files)
        })?),
        None => None,
    };
    let outputs = write_outputs(plan, &image, &sha256, &k3s.label, &mut stages)?;
    let meta = std::fs::metadata(&image)?;
    Ok(BuildReport {
        image_bytes: meta.len(),
        image_allocated_bytes: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        image,
        root_bytes: squash.len() as u64,
        root_content_bytes: root.tree.content_bytes(),
        k3s_bytes: k3s_bytes as u64,
        initramfs_bytes: initrd.len() as u64,
        packages,
        kernel_version: root.kernel.version.clone(),
        k3s: k3s.label,
        k3s_is_double: k3s.is_double,
        sha256,
        installer,
        stages: stages.times,
        cached_stages,
        warnings,
        outputs,
    })
}

/// The board's device tree from the kernel package's DTB directory.
fn board_dtb(tree: &crate::rootfs::tree::Tree, version: &str, path: &str) -> Result<Vec<u8>> {
    let full = format!("usr/lib/linux-image-{version}/{path}");
    let data = tree.file_data(&full).with_context(|| {
        format!("the board's dtb {path} is not in the kernel package (no /{full}); check kernel.dtb in the board file")
    })?;
    if !data.starts_with(&[0xd0, 0x0d, 0xfe, 0xed]) {
        bail!("/{full} is not a device tree blob (no FDT magic)");
    }
    Ok(data.to_vec())
}

/// The early microcode cpio from the microcode package's files in the root.
fn early_microcode(
    tree: &crate::rootfs::tree::Tree,
    mc: crate::board::Microcode,
    epoch: u64,
) -> Result<Vec<u8>> {
    let blobs: Vec<&[u8]> = tree
        .below(mc.dir())
        .filter_map(|(_, n)| match &n.kind {
            crate::rootfs::tree::Kind::File(d) => Some(&d[..]),
            _ => None,
        })
        .collect();
    if blobs.is_empty() {
        bail!(
            "the board asks for {:?} microcode but /{} is empty; add {} to the board's packages",
            mc,
            mc.dir(),
            mc.package()
        );
    }
    initramfs::early_microcode(mc.early_file(), &blobs, epoch)
}

/// A file `kiln build` wrote besides the raw image, for the summary.
#[derive(Debug, Clone)]
pub struct OutputReport {
    /// `ova`, `ovf`, `vmdk`, `mf`.
    pub kind: &'static str,
    pub file: Written,
    /// For a disk: the VMDK's size, the capacity it presents.
    pub disk: Option<(u64, u64)>,
}

/// The byte ranges of the root slots: past its squashfs a slot holds
/// nothing anyone reads, so the block map may skip its zero blocks.
fn root_slots(plan: &BuildPlan) -> Vec<std::ops::Range<u64>> {
    let slots = [
        kiln_node::layout::ROOT_A_PARTITION,
        kiln_node::layout::ROOT_B_PARTITION,
    ];
    crate::disk::layout::place(&crate::disk::partitions(plan))
        .partitions
        .iter()
        .filter(|p| slots.contains(&p.plan.name.as_str()))
        .map(|p| p.offset..p.offset + p.size_bytes)
        .collect()
}

/// The plan's outputs, made from the raw image just written.
fn write_outputs(
    plan: &BuildPlan,
    image: &std::path::Path,
    sha256: &str,
    k3s_label: &str,
    stages: &mut Stages,
) -> Result<Vec<OutputReport>> {
    let mut done = Vec::new();
    let appliance = || {
        plan.ova
            .as_ref()
            .context("the plan has no appliance for the OVA/OVF output")
    };
    let beside = |ext: &str| {
        let mut name = image.as_os_str().to_owned();
        name.push(ext);
        std::path::PathBuf::from(name)
    };
    for format in &plan.outputs {
        match format {
            Format::Img => {}
            Format::Bmap => {
                let file = stages.run("writing the block map", || {
                    crate::output::bmap::write_bmap(image, &root_slots(plan), &beside(".bmap"))
                })?;
                done.push(OutputReport {
                    kind: "bmap",
                    file,
                    disk: None,
                });
            }
            Format::Xz | Format::Zst => {
                let (c, ext, stage) = match format {
                    Format::Xz => (
                        crate::output::compress::Compression::Xz,
                        ".xz",
                        "compressing the image (xz)",
                    ),
                    _ => (
                        crate::output::compress::Compression::Zstd,
                        ".zst",
                        "compressing the image (zst)",
                    ),
                };
                let file = stages.run(stage, || c.write(image, &beside(ext)))?;
                done.push(OutputReport {
                    kind: c.extension(),
                    file,
                    disk: None,
                });
            }
            Format::Sha256 => {
                let file = crate::output::bmap::write_sha256(image, sha256, &beside(".sha256"))?;
                done.push(OutputReport {
                    kind: "sha256",
                    file,
                    disk: None,
                });
            }
            Format::Ova => {
                let ova = appliance()?;
                let out = plan.out_dir.join(format!("{}.ova", plan.name));
                let (file, vmdk) = stages.run("writing the OVA", || ova.write_ova(image, &out))?;
                done.push(OutputReport {
                    kind: "ova",
                    file,
                    disk: Some((vmdk.file.bytes, vmdk.capacity)),
                });
            }
            Format::Ovf => {
                let ova = appliance()?;
                let set = stages.run("writing the OVF set", || {
                    ova.write_set(image, &plan.out_dir)
                })?;
                done.push(OutputReport {
                    kind: "ovf",
                    file: set.ovf,
                    disk: None,
                });
                done.push(OutputReport {
                    kind: "mf",
                    file: set.mf,
                    disk: None,
                });
                done.push(OutputReport {
                    kind: "vmdk",
                    disk: Some((set.vmdk.file.bytes, set.vmdk.capacity)),
                    file: set.vmdk.file,
                });
            }
            Format::PiImager => {
                let entry = imager_entry(plan, image, sha256, k3s_label, &done)?;
                let file = crate::output::pi_imager::write(
                    &entry,
                    &beside_name(image, ".rpi-imager.json"),
                )?;
                done.push(OutputReport {
                    kind: "rpi-imager.json",
                    file,
                    disk: None,
                });
            }
        }
    }
    Ok(done)
}

/// `out/kiln.v2.img` → `out/kiln.v2.rpi-imager.json`.
fn beside_name(image: &std::path::Path, ext: &str) -> std::path::PathBuf {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    image.with_file_name(format!("{}{ext}", name.trim_end_matches(".img")))
}

/// The Pi Imager entry for the image: the `.img.xz` written before it is
/// the download, else the raw image.
fn imager_entry(
    plan: &BuildPlan,
    image: &std::path::Path,
    sha256: &str,
    k3s_label: &str,
    done: &[OutputReport],
) -> Result<crate::output::pi_imager::Entry> {
    let raspi = plan
        .board
        .raspi
        .as_ref()
        .context("--format pi-imager is for Raspberry Pi boards (rpi2, rpi3, rpi4)")?;
    let extract_size = std::fs::metadata(image)?.len();
    let (download, download_size, download_sha256) = match done.iter().find(|o| o.kind == "xz") {
        Some(o) => (o.file.path.clone(), o.file.bytes, hex(&o.file.sha256)),
        None => (image.to_path_buf(), extract_size, sha256.to_string()),
    };
    let file_name = download
        .file_name()
        .context("the image path names no file")?
        .to_string_lossy()
        .into_owned();
    let base = match &plan.imager_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("file://{}", std::path::absolute(&plan.out_dir)?.display()),
    };
    let double = k3s_label.contains("TEST DOUBLE");
    Ok(crate::output::pi_imager::Entry {
        name: format!(
            "{} ({}){}",
            plan.name,
            plan.board.name,
            if double {
                " - k3s TEST DOUBLE, not k3s"
            } else {
                ""
            }
        ),
        description: format!(
            "kiln k3s node: {}; {}",
            plan.board.description,
            if double {
                k3s_label.to_string()
            } else {
                format!("k3s {k3s_label}")
            }
        ),
        url: format!("{base}/{file_name}"),
        release_date: crate::output::pi_imager::date(plan.epoch),
        extract_size,
        extract_sha256: sha256.to_string(),
        image_download_size: download_size,
        image_download_sha256: download_sha256,
        init_format: "cloudinit",
        devices: raspi.imager_devices.clone(),
    })
}

/// The partition table the board asks for, its identity derived from the
/// spec (so two builds give the same bytes).
fn disk_table(plan: &BuildPlan) -> DiskTable {
    match plan.board.disk.partition_table {
        PartitionTable::Gpt => DiskTable::Gpt {
            disk_guid: Guid::from_hash(&plan.derive("disk")),
        },
        PartitionTable::Mbr => {
            let h = plan.derive("mbr-disk-id");
            // Zero means "no signature" to some tools.
            let id = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
            DiskTable::Mbr { disk_id: id.max(1) }
        }
    }
}

/// The build record next to an image (`<name>.json`): what `kiln boot`
/// needs to know about an image, and what a user wants to know.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Sidecar {
    pub board: String,
    pub arch: String,
    pub kernel: String,
    pub k3s: String,
    pub k3s_test_double: bool,
    pub sha256: String,
}

fn sidecar_path(image: &std::path::Path) -> PathBuf {
    image.with_extension("json")
}

pub(crate) fn write_sidecar(image: &std::path::Path, record: &Sidecar) -> Result<()> {
    let path = sidecar_path(image);
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(record)? + "\n")?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

pub fn read_sidecar(image: &std::path::Path) -> Result<Sidecar> {
    let path = sidecar_path(image);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Units an overlay ships that should be enabled: spec overlays can carry
/// `etc/kiln/enable-units` (one unit per line).
fn extra_units(plan: &BuildPlan) -> Vec<String> {
    plan.overlays
        .iter()
        .filter_map(|o| std::fs::read_to_string(o.join("etc/kiln/enable-units")).ok())
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn os_release(plan: &BuildPlan, k3s: &K3sBinary) -> BTreeMap<&'static str, String> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    BTreeMap::from([
        ("NAME", "kiln".to_string()),
        ("ID", "kiln".to_string()),
        ("ID_LIKE", "debian".to_string()),
        ("VERSION_ID", version.clone()),
        (
            "PRETTY_NAME",
            format!("kiln {version} ({}, {})", plan.name, plan.board.name),
        ),
        ("IMAGE_ID", plan.name.clone()),
        ("VARIANT_ID", plan.board.name.clone()),
        (
            "K3S",
            if k3s.is_double {
                "test-double".to_string()
            } else {
                k3s.label.clone()
            },
        ),
    ])
}

pub struct K3sBinary {
    pub binary: Vec<u8>,
    pub label: String,
    pub is_double: bool,
}

/// Gets the node binary and checks it; a binary carrying the test double's
/// marker is labelled a double whatever path it came from.
fn k3s_binary(plan: &K3sPlan, bins: &NodeBinaries) -> Result<K3sBinary> {
    let (binary, version) = match plan {
        K3sPlan::TestDouble => (bins.k3s_double.clone(), None),
        K3sPlan::File {
            path,
            sha256,
            version,
        } => {
            let data = std::fs::read(path).with_context(|| {
                format!(
                    "reading the k3s binary {}; check k3s.path in the spec",
                    path.display()
                )
            })?;
            if let Some(want) = sha256 {
                check_sha256(
                    &data,
                    want,
                    &format!("k3s binary {}", path.display()),
                    "k3s.sha256",
                )?;
            }
            (data, version.clone())
        }
        K3sPlan::Url {
            url,
            sha256,
            version,
        } => {
            let mut data = Vec::new();
            let response = ureq::get(url)
                .call()
                .with_context(|| format!("downloading k3s from {url}"))?;
            std::io::Read::read_to_end(&mut response.into_reader(), &mut data)
                .with_context(|| format!("downloading k3s from {url}"))?;
            check_sha256(&data, sha256, &format!("k3s binary {url}"), "k3s.sha256")?;
            (data, version.clone())
        }
    };
    let is_double = nodebin::is_k3s_double(&binary);
    let label = if is_double {
        "k3s TEST DOUBLE (not k3s)".to_string()
    } else {
        version.unwrap_or_else(|| "unknown version (set k3s.version in the spec)".into())
    };
    Ok(K3sBinary {
        binary,
        label,
        is_double,
    })
}

/// Checks `data` against the spec's `want` (hex); `key` is the spec key to
/// fix.
pub(crate) fn check_sha256(data: &[u8], want: &str, what: &str, key: &str) -> Result<()> {
    let got = hex(&<sha2::Sha256 as sha2::Digest>::digest(data));
    if !got.eq_ignore_ascii_case(want) {
        bail!("checksum mismatch for {what}: expected sha256 {want}, got {got}; check {key} in the spec or the file");
    }
    Ok(())
}

/// A stage's name for the summary's time line: what it made, without the
/// verb ("writing the root squashfs" → "root squashfs"), so that the five
/// stages that write something stay apart; a bare verb stays as it is.
fn stage_label(stage: &str) -> &str {
    let mut rest = stage;
    while let Some((word, tail)) = rest.split_once(' ') {
        if !(word.ends_with("ing") || word == "and" || word == "the") {
            break;
        }
        rest = tail;
    }
    rest
}

/// The human summary printed after a build.
pub fn summary(r: &BuildReport) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("  {k:<12} {v}\n"));
    s.push_str("kiln: build complete\n");
    line(&mut s, "image", r.image.display().to_string());
    line(
        &mut s,
        "size",
        format!(
            "{} raw, {} on disk (sparse)",
            progress::mib(r.image_bytes),
            progress::mib(r.image_allocated_bytes)
        ),
    );
    line(
        &mut s,
        "root",
        format!("{} squashfs", progress::mib(r.root_bytes)),
    );
    line(&mut s, "initramfs", progress::mib(r.initramfs_bytes));
    line(&mut s, "kernel", r.kernel_version.clone());
    line(&mut s, "packages", r.packages.len().to_string());
    line(&mut s, "k3s", r.k3s.clone());
    line(&mut s, "sha256", r.sha256.clone());
    if let Some(installer) = &r.installer {
        line(&mut s, "installer", installer.display().to_string());
    }
    for o in &r.outputs {
        let mut text = format!("{} ({}", o.file.path.display(), progress::mib(o.file.bytes));
        if let Some((vmdk, capacity)) = o.disk {
            if o.kind == "ova" {
                text.push_str(&format!("; VMDK {}", progress::mib(vmdk)));
            }
            text.push_str(&format!(", {} GiB virtual disk", capacity >> 30));
        }
        text.push(')');
        line(&mut s, o.kind, text);
    }
    let stages: Vec<String> = r
        .stages
        .iter()
        .map(|(n, d)| format!("{} {:.1}s", stage_label(n), d.as_secs_f64()))
        .collect();
    line(
        &mut s,
        "time",
        format!(
            "{:.1}s ({})",
            r.stages.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>(),
            stages.join(", ")
        ),
    );
    if !r.cached_stages.is_empty() {
        line(
            &mut s,
            "reused",
            format!(
                "{} (inputs unchanged; --no-cache rebuilds)",
                r.cached_stages.join(", ")
            ),
        );
    }
    for w in &r.warnings {
        s.push_str(&format!("  warning: {w}\n"));
    }
    if r.k3s_is_double {
        s.push_str(
            "  WARNING: this image carries the k3s TEST DOUBLE, not k3s; it is for tests only\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::stage_label;

    #[test]
    fn stage_labels_name_what_each_stage_made() {
        for (stage, label) in [
            ("building in-image binaries", "in-image binaries"),
            ("resolving and fetching packages", "packages"),
            ("composing the root filesystem", "root filesystem"),
            ("writing the root squashfs", "root squashfs"),
            ("compressing the image (xz)", "image (xz)"),
            ("checksumming", "checksumming"),
        ] {
            assert_eq!(stage_label(stage), label);
        }
    }
}
