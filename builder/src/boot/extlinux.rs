//! U-Boot + extlinux: U-Boot's distro boot scans the first partition of
//! each disk for `extlinux/extlinux.conf` (the syslinux format) and boots
//! the one entry it finds. U-Boot itself is the board's firmware (on QEMU's
//! `virt` machine, Debian's `u-boot-qemu` as `-bios`); it hands the kernel
//! its own device tree, so the boot partition needs no DTB.

use anyhow::Result;

use super::{BootFiles, BootInput};
use crate::fs::fat::FatFile;

/// The boot partition's files, sorted by path. Paths in the config are
/// relative to the partition's root.
pub fn boot_files(input: &BootInput) -> Result<BootFiles> {
    let mut files = vec![
        FatFile {
            path: "extlinux/extlinux.conf".into(),
            data: config(&input.cmdline).into_bytes(),
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
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// One entry, no menu: without `prompt`, U-Boot boots the default label at
/// once.
pub fn config(cmdline: &str) -> String {
    format!(
        "# kiln: read by U-Boot's distro boot\n\
         default kiln\n\
         prompt 0\n\
         \n\
         label kiln\n\
         \x20   kernel /kiln/vmlinuz\n\
         \x20   initrd /kiln/initrd.img\n\
         \x20   append {cmdline}\n"
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
            cmdline: "console=ttyAMA0,115200 kiln.root=kiln-root-a".into(),
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
}
