//! The installer stick (`kiln build --installer`, or `install:` in the
//! spec): a second disk image, `<name>-installer.img`, for UEFI boards
//! that are flashed from a USB stick onto their own disk (the NUC).
//!
//! ```text
//! GPT: kiln-installer (FAT ESP: systemd-boot, the image's kernel and
//!                      initramfs, an entry with `kiln.install`, and
//!                      kiln/payload.map; the user may drop node.yaml here)
//!      kiln-payload   (the built image, byte for byte)
//! ```
//!
//! The kernel and initramfs are the image's own: `kiln-init` sees
//! `kiln.install` and runs the installer (`kiln_node::install`) instead of
//! booting. The map lists the image's data ranges with their sha256, so
//! the installer skips nothing it should write, writes zeros where the
//! image has them, and verifies both the stick and the disk it wrote.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_node::gpt::{types, Guid};
use kiln_node::install::payload;
use kiln_node::layout;

use crate::build::{read_sidecar, write_sidecar};
use crate::disk::layout::{place, PartitionPlan};
use crate::fs::fat::{self, FatFile};
use crate::packages;
use crate::plan::BuildPlan;
use crate::spec::InstallSpec;

/// The installer's kernel command line: the board's, plus the installer's
/// switch and rules (a user can edit them on the stick).
pub fn cmdline(board_cmdline: &str, rules: &InstallSpec) -> String {
    let mut c = format!("{board_cmdline} kiln.install");
    if let Some(dev) = &rules.device {
        c.push_str(&format!(" kiln.install.device={dev}"));
    }
    if rules.wipe {
        c.push_str(" kiln.install.wipe");
    }
    c
}

/// The installer partition's files: the image's boot files with the loader
/// entry switched to the installer, plus the payload map.
pub fn stick_files(
    boot_files: &[FatFile],
    cmdline: &str,
    map: &payload::Map,
) -> Result<Vec<FatFile>> {
    let entry = "loader/entries/kiln.conf";
    if !boot_files.iter().any(|f| f.path == entry) {
        bail!("the boot partition has no {entry}; the installer needs a systemd-boot board");
    }
    let mut files: Vec<FatFile> = boot_files
        .iter()
        .map(|f| FatFile {
            path: f.path.clone(),
            data: if f.path == entry {
                with_options(&f.data, cmdline).into_bytes()
            } else {
                f.data.clone()
            },
        })
        .collect();
    files.push(FatFile {
        path: layout::PAYLOAD_MAP.into(),
        data: map.render().into_bytes(),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A loader entry with its `options` line replaced (the rest, such as a
/// `devicetree` line, kept).
fn with_options(entry: &[u8], cmdline: &str) -> String {
    String::from_utf8_lossy(entry)
        .lines()
        .map(|l| {
            if l.starts_with("options ") {
                format!("options {cmdline}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Writes `<name>-installer.img` (and its `.json`) next to `image`.
pub fn write(
    plan: &BuildPlan,
    rules: &InstallSpec,
    image: &Path,
    boot_files: &[FatFile],
) -> Result<PathBuf> {
    let mut source = File::open(image).with_context(|| format!("reading {}", image.display()))?;
    let map = payload::map_of(&mut source).context("mapping the image's data")?;
    let files = stick_files(
        boot_files,
        &cmdline(&plan.board.kernel.cmdline, rules),
        &map,
    )?;
    let volume = plan.derive("installer-volume-id");
    let esp_bytes = plan.board.disk.esp_mib << 20;
    let esp = fat::build(
        &fat::FatSpec {
            size_bytes: esp_bytes,
            label: layout::INSTALLER_LABEL.into(),
            volume_id: u32::from_le_bytes(volume[..4].try_into().expect("4 bytes")),
            fat32: true,
            mtime: plan.epoch,
        },
        &files,
    )?;
    let guid = |what: &str| Guid::from_hash(&plan.derive(what));
    let plans = [
        (layout::INSTALLER_PARTITION, types::ESP, esp_bytes),
        (layout::PAYLOAD_PARTITION, types::LINUX_FS, map.image_bytes),
    ]
    .map(|(name, type_guid, size_bytes)| PartitionPlan {
        name: name.into(),
        type_guid,
        unique_guid: guid(&format!("installer-partition-{name}")),
        mbr_type: 0,
        size_bytes,
    });
    let disk = place(&plans);

    // Written under a hidden name, payload copied in, then renamed.
    let path = plan.installer_path();
    let partial = plan
        .out_dir
        .join(format!(".{}-installer.img.partial", plan.name));
    let result = (|| {
        let table = crate::disk::image::DiskTable::Gpt {
            disk_guid: guid("installer-disk"),
        };
        crate::disk::image::write(&partial, &disk, table, &[Some(&esp), None])?;
        let mut out = OpenOptions::new().write(true).open(&partial)?;
        copy_ranges(&mut source, &mut out, disk.partitions[1].offset, &map)?;
        out.sync_all().context("syncing the installer image")?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming the installer image to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;

    let mut record = read_sidecar(image)?;
    record.sha256 = packages::sha256_file(&path)?;
    write_sidecar(&path, &record)?;
    Ok(path)
}

/// Copies the image's data ranges to `base` in `out`; the gaps stay holes.
fn copy_ranges(source: &mut File, out: &mut File, base: u64, map: &payload::Map) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for r in &map.ranges {
        source.seek(SeekFrom::Start(r.offset))?;
        out.seek(SeekFrom::Start(base + r.offset))?;
        let mut left = r.len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            source.read_exact(&mut buf[..n])?;
            out.write_all(&buf[..n])
                .context("writing the payload (is the disk full?)")?;
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::uefi;

    #[test]
    fn cmdline_carries_the_rules() {
        let base = "console=ttyS0,115200";
        assert_eq!(
            cmdline(base, &InstallSpec::default()),
            "console=ttyS0,115200 kiln.install"
        );
        let rules = InstallSpec {
            device: Some("/dev/nvme0n1".into()),
            wipe: true,
        };
        assert_eq!(
            cmdline(base, &rules),
            "console=ttyS0,115200 kiln.install kiln.install.device=/dev/nvme0n1 kiln.install.wipe"
        );
    }

    #[test]
    fn stick_has_the_installer_entry_and_the_map() {
        let boot = vec![
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI".into(),
                data: b"MZ".to_vec(),
            },
            FatFile {
                path: "loader/entries/kiln.conf".into(),
                data: uefi::entry_with(
                    "console=ttyS0 ro kiln.root=kiln-root-a",
                    Some("dtbs/x.dtb".into()),
                )
                .into_bytes(),
            },
        ];
        let map = payload::Map {
            image_bytes: 4 << 20,
            ranges: vec![],
        };
        let files = stick_files(&boot, "console=ttyS0 kiln.install", &map).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "kiln/payload.map",
                "loader/entries/kiln.conf"
            ]
        );
        let entry = String::from_utf8(files[2].data.clone()).unwrap();
        assert!(
            entry.contains("options console=ttyS0 kiln.install\n"),
            "{entry}"
        );
        assert!(!entry.contains("kiln.root"), "{entry}");
        assert!(entry.contains("devicetree /dtbs/x.dtb\n"), "{entry}");
        assert_eq!(
            String::from_utf8(files[1].data.clone()).unwrap(),
            "kiln-payload 1\nimage-bytes 4194304\n"
        );
        let e = stick_files(&boot[..1], "x", &map).unwrap_err().to_string();
        assert!(e.contains("needs a systemd-boot board"), "{e}");
    }
}
