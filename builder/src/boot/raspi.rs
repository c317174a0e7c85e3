//! Raspberry Pi firmware: the boot ROM reads the first (FAT) partition of
//! an MBR card, loads `bootcode.bin` (Pi 2/3; the Pi 4 has it in EEPROM),
//! then `start*.elf`, which reads `config.txt`, loads the kernel, the
//! initramfs and the model's device tree, and passes `cmdline.txt`.
//!
//! The layout follows what Debian's `raspi-firmware` package does on an
//! installed system (its postinst copies `/usr/lib/raspi-firmware/*`; its
//! `/etc/kernel/postinst.d/z50-raspi-firmware` hook copies the kernel's
//! `bcm*.dtb`, `vmlinuz-<version>` and `initrd.img-<version>` and writes
//! `config.txt` with `arm_64bit=1` on arm64, `enable_uart=1`,
//! `upstream_kernel=1`, `kernel=` and `initramfs`), with two differences:
//! only the firmware files and DTBs the board file lists (a card for Pi 3s
//! needs no Pi 4 firmware), and `initramfs ... followkernel` so the
//! firmware places the initramfs after the kernel instead of at a fixed
//! address.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{BootFiles, BootInput};
use crate::board::{Arch, RaspiBoard};
use crate::fs::fat::FatFile;
use crate::rootfs::tree::Tree;

/// Debian's package of the Pi's firmware blobs (non-free-firmware).
pub const FIRMWARE_PACKAGE: &str = "raspi-firmware";
const FIRMWARE_DIR: &str = "usr/lib/raspi-firmware";

/// The boot partition's files, sorted by path. Takes the firmware out of
/// the root (it has no business there).
pub fn boot_files(
    tree: &mut Tree,
    arch: Arch,
    board: &RaspiBoard,
    input: &BootInput,
) -> Result<BootFiles> {
    let mut files = Vec::new();
    for name in &board.firmware {
        let path = format!("{FIRMWARE_DIR}/{name}");
        let data = tree.file_data(&path).with_context(|| {
            format!(
                "/{path} missing: {FIRMWARE_PACKAGE} has no {name}; check `raspi.firmware` \
                 in the board file"
            )
        })?;
        files.push(FatFile {
            path: name.clone(),
            data: data.to_vec(),
        });
    }
    tree.remove_tree(FIRMWARE_DIR);
    // Debian's hook: arm64 DTBs are under the vendor directory, armhf's not.
    let dtb_dir = match arch {
        Arch::Arm64 => format!("usr/lib/linux-image-{}/broadcom", input.kernel_version),
        _ => format!("usr/lib/linux-image-{}", input.kernel_version),
    };
    for name in &board.dtbs {
        let path = format!("{dtb_dir}/{name}");
        let data = tree.file_data(&path).with_context(|| {
            format!(
                "/{path} missing: kernel {} has no device tree {name}; check `raspi.dtbs` \
                 in the board file",
                input.kernel_version
            )
        })?;
        files.push(FatFile {
            path: name.clone(),
            data: data.to_vec(),
        });
    }
    for name in &board.overlays {
        let path = format!("{dtb_dir}/overlays/{name}");
        let data = tree.file_data(&path).with_context(|| {
            format!("/{path} missing; check `raspi.overlays` in the board file")
        })?;
        files.push(FatFile {
            path: format!("overlays/{name}"),
            data: data.to_vec(),
        });
    }
    let (kernel, initrd) = names(input.kernel_version);
    files.push(FatFile {
        path: kernel.clone(),
        data: input.kernel.to_vec(),
    });
    files.push(FatFile {
        path: initrd.clone(),
        data: input.initrd.to_vec(),
    });
    files.push(FatFile {
        path: "config.txt".into(),
        data: config_txt(arch, &kernel, &initrd, &board.config).into_bytes(),
    });
    files.push(FatFile {
        path: "cmdline.txt".into(),
        data: format!("{}\n", input.cmdline).into_bytes(),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Debian's names for the kernel and initramfs on the boot partition.
pub fn names(kernel_version: &str) -> (String, String) {
    (
        format!("vmlinuz-{kernel_version}"),
        format!("initrd.img-{kernel_version}"),
    )
}

pub fn config_txt(
    arch: Arch,
    kernel: &str,
    initrd: &str,
    sections: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut s = String::from(
        "# kiln: read by the Raspberry Pi firmware. Written by `kiln build`, the way\n\
         # Debian's raspi-firmware kernel hook writes it. node.yaml may go next to it.\n\
         \n\
         [all]\n",
    );
    if arch == Arch::Arm64 {
        s.push_str("# Switch the CPU from ARMv7 into ARMv8 (aarch64) mode\narm_64bit=1\n");
    }
    s.push_str(&format!(
        "enable_uart=1\n\
         upstream_kernel=1\n\
         kernel={kernel}\n\
         initramfs {initrd} followkernel\n"
    ));
    for (section, lines) in sections {
        s.push_str(&format!("\n[{section}]\n"));
        for line in lines {
            s.push_str(line);
            s.push('\n');
        }
    }
    if sections.keys().any(|k| k != "all") {
        s.push_str("\n[all]\n");
    }
    s
}

/// Reads `kernel=` and `initramfs NAME` from a `config.txt` (the `[all]`
/// lines kiln writes), for `kiln boot`.
pub fn kernel_and_initrd(config: &str) -> Option<(String, String)> {
    let mut kernel = None;
    let mut initrd = None;
    for line in config.lines().map(str::trim) {
        if let Some(k) = line.strip_prefix("kernel=") {
            kernel.get_or_insert(k.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("initramfs ") {
            initrd.get_or_insert(rest.split_whitespace().next()?.to_string());
        }
    }
    Some((kernel?, initrd?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Node;

    fn board() -> RaspiBoard {
        RaspiBoard {
            firmware: vec!["bootcode.bin".into(), "start.elf".into()],
            dtbs: vec!["bcm2837-rpi-3-b.dtb".into()],
            overlays: vec![],
            config: BTreeMap::from([("pi3".to_string(), vec!["# pi 3".to_string()])]),
            imager_devices: vec![],
        }
    }

    #[test]
    fn firmware_leaves_the_root_for_the_boot_partition() {
        let mut tree = Tree::default();
        for f in ["bootcode.bin", "start.elf", "start4.elf"] {
            tree.insert(
                &format!("{FIRMWARE_DIR}/{f}"),
                Node::file(&b"fw"[..], 0o644),
            );
        }
        tree.insert(
            "usr/lib/linux-image-6.1.0-9-arm64/broadcom/bcm2837-rpi-3-b.dtb",
            Node::file(&b"dtb"[..], 0o644),
        );
        let input = BootInput {
            kernel: b"K",
            initrd: b"I",
            kernel_version: "6.1.0-9-arm64",
            cmdline: "console=ttyS1,115200 kiln.mbr=0000abcd".into(),
            dtb: None,
        };
        let files = boot_files(&mut tree, Arch::Arm64, &board(), &input).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bcm2837-rpi-3-b.dtb",
                "bootcode.bin",
                "cmdline.txt",
                "config.txt",
                "initrd.img-6.1.0-9-arm64",
                "start.elf",
                "vmlinuz-6.1.0-9-arm64"
            ]
        );
        assert!(tree.get(FIRMWARE_DIR).is_none());
        assert_eq!(
            files[2].data,
            b"console=ttyS1,115200 kiln.mbr=0000abcd\n".to_vec()
        );
        let config = String::from_utf8(files[3].data.clone()).unwrap();
        assert_eq!(
            kernel_and_initrd(&config),
            Some((
                "vmlinuz-6.1.0-9-arm64".into(),
                "initrd.img-6.1.0-9-arm64".into()
            ))
        );

        let mut tree = Tree::default();
        let e = boot_files(&mut tree, Arch::Arm64, &board(), &input).unwrap_err();
        assert!(
            e.to_string().contains("raspi-firmware has no bootcode.bin"),
            "{e}"
        );
        tree.insert(
            &format!("{FIRMWARE_DIR}/bootcode.bin"),
            Node::file(&b"fw"[..], 0o644),
        );
        tree.insert(
            &format!("{FIRMWARE_DIR}/start.elf"),
            Node::file(&b"fw"[..], 0o644),
        );
        let e = boot_files(&mut tree, Arch::Arm64, &board(), &input).unwrap_err();
        assert!(
            e.to_string()
                .contains("kernel 6.1.0-9-arm64 has no device tree bcm2837-rpi-3-b.dtb"),
            "{e}"
        );
    }
}
