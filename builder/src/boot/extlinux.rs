//! U-Boot + extlinux: U-Boot's distro boot scans the first partition of
//! each disk for `extlinux/extlinux.conf` (the syslinux format) and boots
//! the one entry it finds. U-Boot itself is the board's firmware (on QEMU's
//! `virt` machine, Debian's `u-boot-qemu` as `-bios`); it hands the kernel
//! its own device tree unless the board names a DTB, which then goes on the
//! boot partition with an `fdt` line (the Jetson Nano).

use anyhow::Result;

use super::{BootFiles, BootInput};
use crate::fs::fat::FatFile;

/// Where U-Boot looks for the config on the boot partition.
pub const CONFIG: &str = "extlinux/extlinux.conf";

/// The boot partition's files, sorted by path. Paths in the config are
/// relative to the partition's root.
pub fn boot_files(input: &BootInput) -> Result<BootFiles> {
    let mut files = vec![
        FatFile {
            path: CONFIG.into(),
            data: config(&input.cmdline, input.dtb.as_ref().map(|d| d.boot_path())).into_bytes(),
        },
        FatFile {
            path: "kiln/initrd.img".into(),
            data: input.initrd.to_vec(),
        },
        FatFile {
            path: "kiln/vmlinuz".into(),
            data: input.kernel.to_vec(),
        },
    ];
    files.extend(input.dtb.as_ref().map(|d| d.file()));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// One entry, no menu: without `prompt`, U-Boot boots the default label at
/// once.
pub fn config(cmdline: &str, dtb: Option<String>) -> String {
    let fdt = dtb.map_or(String::new(), |d| format!("    fdt /{d}\n"));
    format!(
        "# kiln: read by U-Boot's distro boot\n\
         default kiln\n\
         prompt 0\n\
         \n\
         label kiln\n\
         \x20   kernel /kiln/vmlinuz\n\
         \x20   initrd /kiln/initrd.img\n\
         {fdt}\x20   append {cmdline}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_with_the_command_line() {
        let input = BootInput {
            kernel: b"K",
            initrd: b"I",
            kernel_version: "6.1.0-9-amd64",
            cmdline: "console=ttyAMA0,115200 kiln.root=kiln-root-a".into(),
            dtb: None,
        };
        let files = boot_files(&input).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["extlinux/extlinux.conf", "kiln/initrd.img", "kiln/vmlinuz"]
        );
        assert_eq!(
            String::from_utf8(files[0].data.clone()).unwrap(),
            "# kiln: read by U-Boot's distro boot\ndefault kiln\nprompt 0\n\nlabel kiln\n    \
             kernel /kiln/vmlinuz\n    initrd /kiln/initrd.img\n    \
             append console=ttyAMA0,115200 kiln.root=kiln-root-a\n"
        );
    }

    #[test]
    fn a_board_dtb_goes_on_the_partition_with_an_fdt_line() {
        let input = BootInput {
            kernel: b"K",
            initrd: b"I",
            kernel_version: "6.1.0-9-armmp",
            cmdline: "console=ttyS0,115200".into(),
            dtb: Some(super::super::Dtb {
                path: "nvidia/tegra210-p3450-0000.dtb",
                data: b"\xd0\x0d\xfe\xed",
            }),
        };
        let files = boot_files(&input).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dtbs/nvidia/tegra210-p3450-0000.dtb",
                "extlinux/extlinux.conf",
                "kiln/initrd.img",
                "kiln/vmlinuz"
            ]
        );
        let conf = String::from_utf8(files[1].data.clone()).unwrap();
        assert!(
            conf.contains("    initrd /kiln/initrd.img\n    fdt /dtbs/nvidia/tegra210-p3450-0000.dtb\n    append "),
            "{conf}"
        );
    }
}
