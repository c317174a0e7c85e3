//! UEFI + systemd-boot: the firmware loads `EFI/BOOT/BOOT<arch>.EFI`
//! (the removable-media path, so no NVRAM entry is needed), which is
//! systemd-boot from Debian's `systemd-boot-efi`; it reads one loader entry.

use anyhow::{Context, Result};

use super::{BootFiles, BootInput};
use crate::board::Arch;
use crate::fs::fat::FatFile;
use crate::rootfs::tree::Tree;

/// Package that ships the loader; it is resolved for the board's arch.
pub const LOADER_PACKAGE: &str = "systemd-boot-efi";

/// Takes the loader out of the unpacked tree (it has no business in the
/// root) and returns the ESP's files.
pub fn esp_files(tree: &mut Tree, arch: Arch, input: &BootInput) -> Result<BootFiles> {
    let loader_path = format!("usr/lib/systemd/boot/efi/{}", arch.systemd_boot_file());
    let loader = tree
        .file_data(&loader_path)
        .with_context(|| {
            format!("/{loader_path} missing; is {LOADER_PACKAGE} in the package set?")
        })?
        .to_vec();
    tree.remove_tree("usr/lib/systemd/boot");
    let mut files = vec![
        FatFile {
            path: format!("EFI/BOOT/{}", arch.efi_boot_file()),
            data: loader,
        },
        FatFile {
            path: "kiln/vmlinuz".into(),
            data: input.kernel.to_vec(),
        },
        FatFile {
            path: "kiln/initrd.img".into(),
            data: input.initrd.to_vec(),
        },
        FatFile {
            path: "loader/loader.conf".into(),
            data: loader_conf().into_bytes(),
        },
        FatFile {
            path: ENTRY.into(),
            data: entry_with(&input.cmdline, input.dtb.as_ref().map(|d| d.boot_path()))
                .into_bytes(),
        },
    ];
    files.extend(input.dtb.as_ref().map(|d| d.file()));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// No menu, no waiting, and no editing the kernel command line at the
/// console (it would bypass the image's configuration).
pub fn loader_conf() -> String {
    "timeout 0\ndefault kiln.conf\neditor no\n".to_string()
}

/// The loader entry's path on the ESP.
pub const ENTRY: &str = "loader/entries/kiln.conf";

pub fn entry(cmdline: &str) -> String {
    entry_with(cmdline, None)
}

/// The loader entry; `devicetree` makes systemd-boot install that DTB for
/// the kernel (UEFI firmware on ARM boards may carry none or an old one).
pub fn entry_with(cmdline: &str, dtb: Option<String>) -> String {
    let devicetree = dtb.map_or(String::new(), |d| format!("devicetree /{d}\n"));
    format!(
        "title kiln\nlinux /kiln/vmlinuz\ninitrd /kiln/initrd.img\n{devicetree}options {cmdline}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Node;

    #[test]
    fn loader_moves_from_root_to_esp() {
        let mut tree = Tree::default();
        tree.insert(
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            Node::file(&b"MZ"[..], 0o644),
        );
        let input = BootInput {
            kernel: b"K",
            initrd: b"I",
            kernel_version: "6.1.0-9-amd64",
            cmdline: "console=ttyS0".into(),
            dtb: None,
        };
        let files = esp_files(&mut tree, Arch::Amd64, &input).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "EFI/BOOT/BOOTX64.EFI",
                "kiln/initrd.img",
                "kiln/vmlinuz",
                "loader/entries/kiln.conf",
                "loader/loader.conf"
            ]
        );
        assert!(tree.get("usr/lib/systemd/boot").is_none());
        let entry = String::from_utf8(files[3].data.clone()).unwrap();
        assert!(entry.contains("options console=ttyS0\n"), "{entry}");
    }
}
