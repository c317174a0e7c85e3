//! A kernel the spec supplies instead of the board's Debian package (the
//! Jetson Orin's JetPack L4T kernel): the image, a tar of its module tree,
//! and its device tree, each by path or URL and always checked against its
//! sha256. The files go into the tree where a kernel package would put
//! them, so the rest of the build (module closure, depmod, initramfs)
//! treats them alike.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::tree::Node;
use crate::packages::hex;

/// Where one supplied file comes from (paths already resolved).
#[derive(Debug, Clone, PartialEq)]
pub enum FileRef {
    Path(PathBuf, String),
    Url(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelPlan {
    pub image: FileRef,
    pub modules: FileRef,
    pub dtb: Option<FileRef>,
}

pub struct SuppliedKernel {
    pub version: String,
    /// `boot/vmlinuz-<version>` and `usr/lib/modules/<version>/...`.
    pub files: Vec<(String, Node)>,
    /// File name and bytes.
    pub dtb: Option<(String, Vec<u8>)>,
}

/// Gets, checks and unpacks the supplied kernel.
pub fn fetch(plan: &KernelPlan) -> Result<SuppliedKernel> {
    let image = get(&plan.image, "kernel image")?;
    let modules = get(&plan.modules, "kernel modules")?;
    let (version, module_files) = modules_from_tar(&modules).with_context(|| {
        format!(
            "reading the kernel modules {}: it must be a tar (plain, .gz, .xz or .zst) of lib/modules/<version>/",
            name(&plan.modules)
        )
    })?;
    let mut files = vec![(format!("boot/vmlinuz-{version}"), Node::file(image, 0o644))];
    files.extend(
        module_files
            .into_iter()
            .map(|(path, data)| (path, Node::file(data, 0o644))),
    );
    let dtb = match &plan.dtb {
        Some(source) => {
            let data = get(source, "device tree")?;
            if !data.starts_with(&[0xd0, 0x0d, 0xfe, 0xed]) {
                bail!(
                    "the device tree {} is not a DTB (no FDT magic)",
                    name(source)
                );
            }
            let file = name(source)
                .rsplit('/')
                .next()
                .unwrap_or("board.dtb")
                .to_string();
            Some((file, data))
        }
        None => None,
    };
    Ok(SuppliedKernel {
        version,
        files,
        dtb,
    })
}

fn name(source: &FileRef) -> String {
    match source {
        FileRef::Path(p, _) => p.display().to_string(),
        FileRef::Url(u, _) => u.clone(),
    }
}

/// Reads a path or downloads a URL, then checks the sha256.
fn get(source: &FileRef, what: &str) -> Result<Vec<u8>> {
    let (data, want) = match source {
        FileRef::Path(path, sum) => (
            std::fs::read(path).with_context(|| {
                format!(
                    "reading the {what} {}; paths are relative to the spec",
                    path.display()
                )
            })?,
            sum,
        ),
        FileRef::Url(url, sum) => {
            let mut data = Vec::new();
            ureq::get(url)
                .call()
                .with_context(|| format!("downloading the {what} from {url}"))?
                .into_reader()
                .read_to_end(&mut data)
                .with_context(|| format!("downloading the {what} from {url}"))?;
            (data, sum)
        }
    };
    let got = hex(&Sha256::digest(&data));
    if !got.eq_ignore_ascii_case(want) {
        bail!(
            "checksum mismatch for the {what} {}: expected sha256 {want}, got {got}; check kernel: in the spec or the file",
            name(source)
        );
    }
    Ok(data)
}

/// A file for the tree: its path and bytes.
pub type TreeFile = (String, Vec<u8>);

/// The files of a `lib/modules/<version>/` tar as tree paths
/// (`usr/lib/modules/...`), and the version. Symlinks (`build`, `source`)
/// are left out.
pub fn modules_from_tar(bytes: &[u8]) -> Result<(String, Vec<TreeFile>)> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new(bytes))
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::new(bytes)?)
    } else if bytes.starts_with(b"BZh") {
        bail!("bzip2 is not read here; recompress it (bunzip2, then optionally gzip or xz)");
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let mut versions = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let rel = path.trim_start_matches("./").trim_start_matches("usr/");
        let Some(rest) = rel.strip_prefix("lib/modules/") else {
            continue;
        };
        let Some((version, _)) = rest.split_once('/') else {
            continue;
        };
        versions.insert(version.to_string());
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.push((format!("usr/lib/modules/{rest}"), data));
    }
    match versions.len() {
        1 => Ok((versions.into_iter().next().expect("one"), files)),
        0 => bail!("it holds no files under lib/modules/<version>/"),
        _ => bail!(
            "it holds more than one kernel version: {}",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_a_module_tree_plain_or_gzipped() {
        let tar = tar_of(&[
            (
                "./lib/modules/5.15.148-tegra/kernel/drivers/nvme/host/nvme.ko",
                b"ko",
            ),
            (
                "./lib/modules/5.15.148-tegra/modules.builtin",
                b"kernel/fs/ext4/ext4.ko\n",
            ),
            ("./README", b"x"),
        ]);
        let (version, files) = modules_from_tar(&tar).unwrap();
        assert_eq!(version, "5.15.148-tegra");
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/lib/modules/5.15.148-tegra/kernel/drivers/nvme/host/nvme.ko",
                "usr/lib/modules/5.15.148-tegra/modules.builtin"
            ]
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(
            modules_from_tar(&gz.finish().unwrap()).unwrap().0,
            "5.15.148-tegra"
        );
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let two = tar_of(&[("lib/modules/a/x.ko", b"1"), ("lib/modules/b/x.ko", b"1")]);
        let e = modules_from_tar(&two).unwrap_err().to_string();
        assert!(e.contains("more than one kernel version: a, b"), "{e}");
        let none = tar_of(&[("boot/Image", b"1")]);
        let e = modules_from_tar(&none).unwrap_err().to_string();
        assert!(e.contains("no files under lib/modules"), "{e}");
        let e = modules_from_tar(b"BZh91AY").unwrap_err().to_string();
        assert!(e.contains("bzip2"), "{e}");
    }

    #[test]
    fn checksums_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Image");
        std::fs::write(&path, b"kernel").unwrap();
        let sum = hex(&Sha256::digest(b"kernel"));
        assert_eq!(
            get(&FileRef::Path(path.clone(), sum), "kernel image").unwrap(),
            b"kernel"
        );
        let e = get(&FileRef::Path(path, "0".repeat(64)), "kernel image")
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch for the kernel image"), "{e}");
    }
}
