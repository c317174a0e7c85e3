//! Real-hardware boards, which QEMU cannot be: their images are checked
//! structurally (partition table, boot files where the firmware looks,
//! initramfs modules, firmware), and what QEMU can run is booted.
//!
//! The NUC: the self-test image, built once.

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_node::layout;

use crate::util::{
    build_selftest_with, cpio_file, fat_file, partition, plain_cpio_file, split_initrd,
    squashfs_paths, BuiltImage,
};

/// The NUC self-test image, built once per run.
fn nuc() -> &'static (BuiltImage, PathBuf) {
    static NUC: OnceLock<(BuiltImage, PathBuf)> = OnceLock::new();
    NUC.get_or_init(|| {
        let built = build_selftest_with("nuc", "selftest-build-nuc", &[]);
        let image = built.image.clone();
        (built, image)
    })
}

/// The NUC's boot partition holds what OVMF and systemd-boot look for,
/// the initramfs has every NUC storage driver (plus early Intel
/// microcode), and the root has the NIC and Wi-Fi drivers and firmware.
#[test]
fn nuc_image_carries_its_drivers_firmware_and_microcode() {
    let (built, _) = nuc();
    let esp = partition(&built.image, layout::ESP_PARTITION);
    for path in ["EFI/BOOT/BOOTX64.EFI", "kiln/vmlinuz", "loader/loader.conf"] {
        assert!(!fat_file(esp.clone(), path).is_empty(), "{path} is empty");
    }
    let entry = String::from_utf8(fat_file(esp.clone(), "loader/entries/kiln.conf")).unwrap();
    assert!(
        entry.contains("options console=tty0 console=ttyS0,115200 "),
        "screen and serial console: {entry}"
    );

    let initrd = fat_file(esp, "kiln/initrd.img");
    let (early, _) = split_initrd(&initrd);
    let ucode = plain_cpio_file(
        early.expect("an early microcode cpio in front of the initramfs"),
        "kernel/x86/microcode/GenuineIntel.bin",
    );
    assert!(ucode.len() > 1 << 20, "microcode is {} bytes", ucode.len());
    let list = String::from_utf8(cpio_file(&initrd, layout::INITRAMFS_MODULE_LIST)).unwrap();
    for module in [
        "nvme",
        "vmd",
        "ahci",
        "xhci-pci",
        "usb-storage",
        "uas",
        "sd_mod",
        "ext4",
        "vfat",
        "squashfs",
        "overlay",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!("/{module}.ko"))),
            "initramfs lacks {module}:\n{list}"
        );
    }

    let root = squashfs_paths(&partition(&built.image, layout::ROOT_A_PARTITION));
    for module in [
        "e1000e", "igc", "igb", "r8169", "iwlwifi", "iwlmvm", "iwldvm",
    ] {
        assert!(
            root.iter().any(
                |p| p.starts_with("/usr/lib/modules/") && p.ends_with(&format!("/{module}.ko"))
            ),
            "root lacks module {module}"
        );
    }
    for (what, prefix) in [
        ("Intel Wi-Fi firmware", "/usr/lib/firmware/iwlwifi-"),
        ("Realtek NIC firmware", "/usr/lib/firmware/rtl_nic/rtl8168"),
        ("Intel CPU microcode", "/usr/lib/firmware/intel-ucode/"),
    ] {
        assert!(
            root.iter().any(|p| p.starts_with(prefix)),
            "root lacks {what} ({prefix}*)"
        );
    }
}
