//! Real-hardware boards, which QEMU cannot be: their images are checked
//! structurally (partition table, boot files where the firmware looks,
//! initramfs modules, firmware), and what QEMU can run is booted.
//!
//! The NUC: the self-test image and its installer stick, built once; the
//! stick installs onto an empty NVMe under OVMF, then the NVMe boots alone.

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_node::layout;

use crate::boot::{boot, check_first_boot, facts, Expected, BOOT_ARGS, DISK_BYTES, NODE_AT_BOOT};
use crate::util::{
    build_selftest_with, copy_image, cpio_file, fat_file, partition, plain_cpio_file, scratch,
    split_initrd, squashfs_paths, BuiltImage,
};

/// The NUC self-test image and its installer, built once per run.
fn nuc() -> &'static (BuiltImage, PathBuf) {
    static NUC: OnceLock<(BuiltImage, PathBuf)> = OnceLock::new();
    NUC.get_or_init(|| {
        let built = build_selftest_with("nuc", "selftest-build-nuc", &["--installer"]);
        let installer = built.image.with_file_name("kiln-selftest-installer.img");
        assert!(installer.is_file(), "no installer image next to the image");
        (built, installer)
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
    assert_initramfs_has(
        &initrd,
        &[
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
        ],
    );

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

/// The installer stick under OVMF on USB (xHCI) with an empty 2 GiB NVMe:
/// it picks the NVMe, writes and verifies the image, puts the node config
/// on its boot partition and powers off. Then the NVMe boots alone to a
/// ready node with that config, its data partition grown to the NVMe.
#[test]
fn nuc_installer_installs_onto_nvme_which_then_boots() {
    let (_, installer) = nuc();
    let dir = scratch("boot-nuc-installer");
    let stick = copy_image(installer, &dir);
    let nvme = dir.join("nvme.img");
    std::fs::File::create(&nvme)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    let node = dir.join("node.yaml");
    std::fs::write(&node, NODE_AT_BOOT).unwrap();

    let nvme_arg = nvme.to_string_lossy().into_owned();
    let (r, console) = boot(
        &stick,
        Some(&node),
        &["--install-to", &nvme_arg, "--timeout", "600"],
    );
    assert_eq!(r.code, Some(0), "install failed: {}\n{console}", r.stderr);
    for line in [
        "kiln-init: install: booted from /dev/sda (payload /dev/sda2)",
        "kiln-init: install: node.yaml on the installer is valid",
        "kiln-init: install: disk /dev/nvme0n1 (2048 MiB): the target",
        "kiln-init: install: disk /dev/sda (",
        "): the installer's own disk, never written",
        "kiln-init: install: image written and verified on /dev/nvme0n1",
        "kiln-init: install: node.yaml written to /dev/nvme0n1p1",
        "kiln-init: install: done: kiln installed on /dev/nvme0n1",
    ] {
        assert!(console.contains(line), "installer console lacks {line:?}");
    }
    eprintln!("nuc installer: {}", r.stderr.trim());

    // The NVMe alone, as the NUC boots once the stick is out.
    let (r, console) = boot(
        &nvme,
        None,
        &[&["--board", "nuc"][..], &BOOT_ARGS[..]].concat(),
    );
    assert_eq!(r.code, Some(0), "NVMe boot failed: {}\n{console}", r.stderr);
    assert!(console.contains("kiln-init: found kiln-root-a at /dev/nvme0n1p2"));
    check_first_boot(
        &console,
        &Expected {
            source: "boot partition node.yaml",
            machine: "x86_64",
            hostname: "kiln-test-1",
        },
    );
    assert!(facts(&console)["var-mount"].starts_with("/dev/nvme0n1p4 "));
    eprintln!("nuc from NVMe: {}", r.stderr.trim());
}

#[test]
fn install_to_a_missing_disk_says_how_to_make_one() {
    let dir = scratch("install-to-missing");
    let stick = dir.join("stick.img");
    std::fs::write(&stick, [0u8; 4096]).unwrap();
    crate::util::run(
        crate::util::kiln()
            .arg("boot")
            .arg(&stick)
            .args(["--board", "nuc", "--install-to"])
            .arg(dir.join("nvme.img")),
    )
    .failure(3, "nvme.img not found; create it first (truncate -s 2G ");
}

/// The Jetson Nano SD card: U-Boot's distro boot takes the first
/// partition (none is marked bootable) and reads extlinux/extlinux.conf
/// there; the entry names the kernel, the initramfs and the devkit's
/// device tree, all on that partition. The initramfs reaches the SD card
/// (Tegra SDHCI, and the PMIC regulators that power it); the root has the
/// NIC, USB 3 and their firmware.
#[test]
fn jetson_nano_sd_card_has_what_u_boot_and_the_kernel_need() {
    static NANO: OnceLock<BuiltImage> = OnceLock::new();
    let built =
        NANO.get_or_init(|| build_selftest_with("jetson-nano", "selftest-build-jetson-nano", &[]));
    let names = partition_names(&built.image);
    assert_eq!(
        names,
        [
            layout::ESP_PARTITION,
            layout::ROOT_A_PARTITION,
            layout::ROOT_B_PARTITION,
            layout::DATA_PARTITION
        ],
        "the boot partition comes first"
    );
    let boot = partition(&built.image, layout::ESP_PARTITION);
    let conf = String::from_utf8(fat_file(boot.clone(), "extlinux/extlinux.conf")).unwrap();
    let dtb_path = "dtbs/nvidia/tegra210-p3450-0000.dtb";
    for line in [
        "    kernel /kiln/vmlinuz\n",
        "    initrd /kiln/initrd.img\n",
        &format!("    fdt /{dtb_path}\n"),
        "    append console=tty0 console=ttyS0,115200 panic=5 ro kiln.root=kiln-root-a\n",
    ] {
        assert!(conf.contains(line), "extlinux.conf lacks {line:?}:\n{conf}");
    }
    let dtb = fat_file(boot.clone(), dtb_path);
    assert!(dtb.starts_with(&[0xd0, 0x0d, 0xfe, 0xed]), "not an FDT");
    assert!(
        dtb.windows(17).any(|w| w == b"nvidia,p3450-0000"),
        "not the Nano devkit's device tree"
    );
    let kernel = fat_file(boot.clone(), "kiln/vmlinuz");
    assert_eq!(&kernel[56..60], b"ARM\x64", "an arm64 Image");

    let initrd = fat_file(boot, "kiln/initrd.img");
    assert_initramfs_has(
        &initrd,
        &[
            "i2c-tegra",
            "max77620-regulator",
            "sdhci-tegra",
            "ext4",
            "vfat",
            "squashfs",
            "overlay",
        ],
    );
    let root = squashfs_paths(&partition(&built.image, layout::ROOT_A_PARTITION));
    for module in ["r8169", "xhci-tegra", "phy-tegra-xusb"] {
        assert!(
            root.iter().any(|p| p.ends_with(&format!("/{module}.ko"))),
            "root lacks module {module}"
        );
    }
    for firmware in [
        "/usr/lib/firmware/nvidia/tegra210/xusb.bin",
        "/usr/lib/firmware/rtl_nic/rtl8168",
    ] {
        assert!(
            root.iter().any(|p| p.starts_with(firmware)),
            "root lacks {firmware}"
        );
    }
}

/// The Jetson Nano self-test image, built once per run.
fn nano() -> &'static BuiltImage {
    static NANO: OnceLock<BuiltImage> = OnceLock::new();
    NANO.get_or_init(|| build_selftest_with("jetson-nano", "selftest-build-jetson-nano", &[]))
}

/// The initramfs's module list names each of `modules` (as `<name>.ko`).
#[track_caller]
fn assert_initramfs_has(initrd: &[u8], modules: &[&str]) {
    let list = String::from_utf8(cpio_file(initrd, layout::INITRAMFS_MODULE_LIST)).unwrap();
    for module in modules {
        assert!(
            list.lines().any(|l| l.ends_with(&format!("/{module}.ko"))),
            "initramfs lacks {module}:\n{list}"
        );
    }
}

/// GPT partition names in table order.
fn partition_names(image: &std::path::Path) -> Vec<String> {
    let mut file = std::fs::File::open(image).unwrap();
    let sectors = file.metadata().unwrap().len() / 512;
    let table = kiln_node::gpt::read(&mut file, sectors).unwrap();
    table.partitions.into_iter().map(|p| p.name).collect()
}

/// A stand-in for what a Jetson Orin user supplies from JetPack (L4T's
/// `Image`, a tar of its `lib/modules/<version>/`, the board's DTB): made
/// from Debian's arm64 kernel package in kiln's package cache (the Nano
/// build put it there), since no L4T kernel is reachable here. The tar
/// carries the module directories the board's lists need, not all 400 MB.
struct SuppliedKernel {
    image: PathBuf,
    modules: PathBuf,
    dtb: PathBuf,
}

fn stand_in_l4t_kernel(dir: &std::path::Path) -> SuppliedKernel {
    let apt = kiln::packages::cache_dir().join("apt");
    let deb = std::fs::read_dir(&apt)
        .unwrap()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path().join("var/cache/apt/archives"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("linux-image-6") && n.ends_with("_arm64.deb") && !n.contains("-dbg")
        })
        .expect("the arm64 kernel package in kiln's cache (built jetson-nano first)");
    let mut tree = kiln::rootfs::tree::Tree::default();
    kiln::rootfs::deb::unpack(&deb, &mut tree).unwrap();
    let data = |n: &kiln::rootfs::tree::Node| match &n.kind {
        kiln::rootfs::tree::Kind::File(d) => Some(d.to_vec()),
        _ => None,
    };
    let (image_path, image) = tree
        .below("boot")
        .find(|(p, _)| p.starts_with("boot/vmlinuz-"))
        .map(|(p, n)| (p.clone(), data(n).unwrap()))
        .unwrap();
    let version = image_path.trim_start_matches("boot/vmlinuz-").to_string();
    let keep = [
        "block/",
        "fs/",
        "net/",
        "lib/",
        "crypto/",
        "drivers/nvme/",
        "drivers/net/vxlan/",
    ];
    let mut tar = tar::Builder::new(Vec::new());
    for (path, node) in tree.below(&format!("usr/lib/modules/{version}")) {
        let rel = path
            .trim_start_matches("usr/lib/modules/")
            .trim_start_matches(&version);
        let in_kernel = rel.trim_start_matches("/kernel/");
        let wanted = !rel.starts_with("/kernel/")
            || keep.iter().any(|k| in_kernel.starts_with(k))
            || in_kernel
                .strip_prefix("drivers/net/")
                .is_some_and(|f| !f.contains('/'));
        if let (true, Some(bytes)) = (wanted, data(node)) {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("./lib/modules/{version}{rel}"), &bytes[..])
                .unwrap();
        }
    }
    let dtb = tree
        .file_data(&format!(
            "usr/lib/linux-image-{version}/nvidia/tegra210-p2371-2180.dtb"
        ))
        .unwrap()
        .to_vec();
    let files = SuppliedKernel {
        image: dir.join("Image"),
        modules: dir.join("kernel_supplements.tar"),
        dtb: dir.join("tegra-stand-in.dtb"),
    };
    std::fs::write(&files.image, image).unwrap();
    std::fs::write(&files.modules, tar.into_inner().unwrap()).unwrap();
    std::fs::write(&files.dtb, dtb).unwrap();
    files
}

fn sha256(path: &std::path::Path) -> String {
    kiln::packages::sha256_file(path).unwrap()
}

/// The Jetson Orin disk: an ESP first with systemd-boot where UEFI looks
/// (`EFI/BOOT/BOOTAA64.EFI`), the supplied kernel and DTB on it, a loader
/// entry with `devicetree` and the Tegra serial console, and the supplied
/// kernel's modules in the initramfs and root. A wrong checksum and a spec
/// without a kernel are refused.
#[test]
fn jetson_orin_disk_boots_the_supplied_kernel_with_its_dtb() {
    let _nano_fills_the_cache = nano();
    let dir = scratch("build-jetson-orin");
    let k = stand_in_l4t_kernel(&dir);
    let spec = |image_sum: &str| {
        format!(
            "name: orin\nboard: jetson-orin\nk3s: {{test-double: true}}\nkernel:\n  \
             image: {{path: Image, sha256: {image_sum}}}\n  \
             modules: {{path: kernel_supplements.tar, sha256: {}}}\n  \
             dtb: {{path: tegra-stand-in.dtb, sha256: {}}}\n",
            sha256(&k.modules),
            sha256(&k.dtb)
        )
    };
    let build = |text: &str| {
        std::fs::write(dir.join("spec.yaml"), text).unwrap();
        crate::util::run(
            crate::util::kiln()
                .arg("build")
                .arg(dir.join("spec.yaml"))
                .arg("--out")
                .arg(dir.join("out")),
        )
    };
    build("board: jetson-orin\nk3s: {test-double: true}\n").failure(
        1,
        "board jetson-orin has no kernel package: the spec must supply the kernel",
    );
    build(&spec(&"0".repeat(64))).failure(1, "checksum mismatch for the kernel image");
    assert!(!dir.join("out/orin.img").exists());
    build(&spec(&sha256(&k.image))).success();
    let image = dir.join("out/orin.img");

    assert_eq!(
        partition_names(&image),
        [
            layout::ESP_PARTITION,
            layout::ROOT_A_PARTITION,
            layout::ROOT_B_PARTITION,
            layout::DATA_PARTITION
        ]
    );
    let esp = partition(&image, layout::ESP_PARTITION);
    assert!(fat_file(esp.clone(), "EFI/BOOT/BOOTAA64.EFI").starts_with(b"MZ"));
    assert_eq!(
        fat_file(esp.clone(), "kiln/vmlinuz"),
        std::fs::read(&k.image).unwrap()
    );
    assert_eq!(
        fat_file(esp.clone(), "dtbs/tegra-stand-in.dtb"),
        std::fs::read(&k.dtb).unwrap()
    );
    let entry = String::from_utf8(fat_file(esp.clone(), "loader/entries/kiln.conf")).unwrap();
    assert!(
        entry.contains("devicetree /dtbs/tegra-stand-in.dtb\n"),
        "{entry}"
    );
    assert!(
        entry.contains("options console=tty0 console=ttyTCU0,115200 "),
        "{entry}"
    );
    let initrd = fat_file(esp, "kiln/initrd.img");
    assert_initramfs_has(&initrd, &["nvme", "ext4", "vfat", "squashfs", "overlay"]);
    let root = squashfs_paths(&partition(&image, layout::ROOT_A_PARTITION));
    assert!(
        root.iter().any(|p| p.ends_with("/vxlan.ko")),
        "root lacks vxlan"
    );
    assert!(
        root.iter()
            .any(|p| p.starts_with("/usr/lib/modules/") && p.ends_with("/modules.dep")),
        "depmod ran over the supplied modules"
    );
}

/// The Nano's userland and initramfs under QEMU: the same image on arm64
/// `virt`, QEMU starting extlinux.conf's kernel, initramfs and command
/// line (U-Boot and the Tegra device tree swapped out), node.yaml on the
/// boot partition as a user drops it on the card: the node comes up with
/// the first-boot facts every board shows.
#[test]
fn jetson_nano_userland_boots_on_virt_with_the_same_kernel() {
    let dir = scratch("boot-jetson-nano");
    let image = copy_image(&nano().image, &dir);
    let node = dir.join("node.yaml");
    std::fs::write(&node, NODE_AT_BOOT).unwrap();
    let grow = DISK_BYTES.to_string();
    let (r, console) = boot(
        &image,
        Some(&node),
        &[&["--grow", &grow][..], &BOOT_ARGS[..]].concat(),
    );
    assert_eq!(
        r.code,
        Some(0),
        "Nano image on virt failed: {}\n{console}",
        r.stderr
    );
    check_first_boot(
        &console,
        &Expected {
            source: "boot partition node.yaml",
            machine: "aarch64",
            hostname: "kiln-test-1",
        },
    );
    eprintln!("jetson-nano on virt: {}", r.stderr.trim());
}
