//! Board files (`boards/<name>.yaml`): everything that differs between boards
//! is data here, so code only knows a few boot flavors and architectures.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::output::Format;
use crate::qemu::uboot_env::UBootEnv;
use crate::spec::SpecError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Board {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    /// Debian suite the userland comes from.
    pub suite: String,
    /// Archive components to resolve from (on the host's mirror): `main`,
    /// plus `non-free-firmware` for boards that need firmware blobs.
    #[serde(default = "main_only")]
    pub components: Vec<String>,
    pub boot: BootFlavor,
    pub kernel: Kernel,
    /// CPU microcode loaded by the kernel before the initramfs (x86), from
    /// a microcode package the board lists.
    #[serde(default)]
    pub microcode: Option<Microcode>,
    /// Packages this board adds to kiln's base set (firmware, tools).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Directories (relative to kiln's data directory) copied over the root
    /// after kiln's base overlay and before the spec's.
    #[serde(default)]
    pub overlays: Vec<PathBuf>,
    /// Modules `kiln-init` loads to reach the root and data partitions.
    pub initramfs_modules: Vec<String>,
    /// Modules shipped in the root (plus their dependencies); the rest of
    /// the kernel's module tree is left out to keep the root small.
    #[serde(default)]
    pub root_modules: Vec<String>,
    pub disk: DiskLayout,
    /// What `kiln build` writes besides the raw image (`--format` overrides).
    #[serde(default)]
    pub outputs: Vec<Format>,
    /// What the Raspberry Pi firmware needs (boot flavor `raspi-firmware`).
    #[serde(default)]
    pub raspi: Option<RaspiBoard>,
    pub qemu: Option<QemuBoard>,
}

/// The Raspberry Pi boot partition, beyond kernel and initramfs: the files
/// of Debian's `raspi-firmware` package the board's SoCs need, the device
/// trees of the board's models, and `config.txt` sections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaspiBoard {
    /// File names in `/usr/lib/raspi-firmware` (`bootcode.bin`, `start.elf`, ...).
    pub firmware: Vec<String>,
    /// Device tree blobs from the kernel package (`bcm2837-rpi-3-b.dtb`).
    pub dtbs: Vec<String>,
    /// Device tree overlays from the kernel package's `overlays/`
    /// (Debian's kernels ship none today).
    #[serde(default)]
    pub overlays: Vec<String>,
    /// `config.txt` lines per conditional section (`all`, `pi3`, `pi4`...),
    /// after kiln's own `[all]` lines.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, Vec<String>>,
    /// Raspberry Pi Imager's device tags for the boards this image boots
    /// (`pi4-64bit`, `pi3-64bit`, `pi2-32bit`, ...), for its repository JSON.
    #[serde(default, rename = "imager-devices")]
    pub imager_devices: Vec<String>,
}

fn main_only() -> Vec<String> {
    vec!["main".into()]
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
    Armhf,
}

impl Arch {
    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// Rust target triple the in-image binaries are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::Armhf => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// The removable-media loader name UEFI firmware looks for.
    pub fn efi_boot_file(self) -> &'static str {
        match self {
            Arch::Amd64 => "BOOTX64.EFI",
            Arch::Arm64 => "BOOTAA64.EFI",
            Arch::Armhf => "BOOTARM.EFI",
        }
    }

    /// systemd-boot's file name in Debian's `systemd-boot-efi` package.
    pub fn systemd_boot_file(self) -> &'static str {
        match self {
            Arch::Amd64 => "systemd-bootx64.efi",
            Arch::Arm64 => "systemd-bootaa64.efi",
            Arch::Armhf => "systemd-bootarm.efi",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BootFlavor {
    /// GPT + ESP with systemd-boot, loaded by UEFI firmware.
    UefiSystemdBoot,
    /// GPT + FAT boot partition with `extlinux/extlinux.conf`, read by
    /// U-Boot's distro boot (most ARMv7 boards).
    UbootExtlinux,
    /// MBR + FAT boot partition read by the Raspberry Pi's own firmware
    /// (`config.txt`, `cmdline.txt`, kernel, initramfs, DTBs).
    RaspiFirmware,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Microcode {
    /// `intel-microcode`: `/usr/lib/firmware/intel-ucode/*`.
    Intel,
    /// `amd64-microcode`: `/usr/lib/firmware/amd-ucode/*.bin`.
    Amd,
}

impl Microcode {
    /// Where the package puts the per-CPU files in the root.
    pub fn dir(self) -> &'static str {
        match self {
            Microcode::Intel => "usr/lib/firmware/intel-ucode",
            Microcode::Amd => "usr/lib/firmware/amd-ucode",
        }
    }

    /// The file the kernel looks for under `kernel/x86/microcode/`.
    pub fn early_file(self) -> &'static str {
        match self {
            Microcode::Intel => "GenuineIntel.bin",
            Microcode::Amd => "AuthenticAMD.bin",
        }
    }

    pub fn package(self) -> &'static str {
        match self {
            Microcode::Intel => "intel-microcode",
            Microcode::Amd => "amd64-microcode",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Kernel {
    /// Debian metapackage that pulls the kernel (e.g. `linux-image-amd64`);
    /// none: the spec must supply the kernel (`kernel:`).
    #[serde(default)]
    pub package: Option<String>,
    /// Kernel command line; kiln adds its own `kiln.*` keys.
    pub cmdline: String,
    /// Device tree the boot loader hands the kernel, from the kernel
    /// package's `/usr/lib/linux-image-<version>/` (e.g.
    /// `nvidia/tegra210-p3450-0000.dtb`); none: the firmware's own.
    #[serde(default)]
    pub dtb: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskLayout {
    /// Size of the ESP / boot partition.
    pub esp_mib: u64,
    /// Size of each root slot (A and B); the squashfs must fit.
    pub root_slot_mib: u64,
    /// Size of the data partition as shipped; it grows on first boot.
    pub data_mib: u64,
    #[serde(default)]
    pub partition_table: PartitionTable,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    #[default]
    Gpt,
    /// DOS partition table: what the Raspberry Pi boot ROM reads.
    Mbr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QemuBoard {
    pub binary: String,
    pub machine: String,
    pub cpu: Option<String>,
    pub memory_mib: u32,
    pub smp: u32,
    /// A disk controller (`pvscsi`) the disk hangs off; then `disk_device`
    /// is the disk on its bus (`scsi-hd`).
    pub disk_controller: Option<String>,
    pub disk_device: String,
    /// NIC on QEMU's restricted user network; none if absent.
    pub net_device: Option<String>,
    /// Which serial port carries the console (0 = first).
    #[serde(default)]
    pub console_serial: u32,
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub firmware: QemuFirmware,
    /// Added to the kernel command line when QEMU starts the kernel itself
    /// (`esp-kernel`): the emulated machine's console, for a board whose
    /// own console device QEMU does not have.
    #[serde(default)]
    pub append: Option<String>,
    /// How `kiln boot --node` hands the node config to the guest.
    #[serde(default)]
    pub node_config: QemuNodeConfig,
    /// Debian packages that provide `binary` and the firmware (for errors).
    pub host_packages: Vec<String>,
    /// More QEMU arguments (`-usb` for the Pi's USB NIC).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum QemuFirmware {
    /// UEFI (OVMF, AAVMF): read-only code and a vars template kiln copies
    /// for each run.
    Uefi { code: PathBuf, vars: PathBuf },
    /// U-Boot as `-bios`, optionally with a per-run environment.
    UBoot {
        bios: PathBuf,
        #[serde(default)]
        env: Option<UBootEnv>,
    },
    /// QEMU starts the kernel, initrd and command line of the image's
    /// systemd-boot entry itself: for disks the firmware QEMU has cannot
    /// read (Debian's OVMF has no pvscsi driver; VMware's firmware has).
    EspKernel {},
    /// No firmware QEMU can run (the Pi's VideoCore firmware): kernel,
    /// initramfs and `cmdline.txt` are read from the image's own boot
    /// partition the way `config.txt` names them, with this device tree
    /// from it, and passed to QEMU directly.
    BootPartition {
        dtb: String,
        /// Appended to `cmdline.txt`'s line (QEMU-only needs).
        #[serde(default)]
        append: String,
        /// Changes to a copy of that device tree, for hardware the QEMU
        /// machine lacks (`- disable: /soc/node@addr`,
        /// `- delete-property: /soc/node@addr/property`).
        #[serde(default, rename = "dtb-edits")]
        dtb_edits: Vec<crate::qemu::fdt::Edit>,
    },
}

/// How a node config given at boot reaches the guest under QEMU.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QemuNodeConfig {
    /// QEMU's fw_cfg (`opt/io.kiln/node.yaml`); the kernel needs the
    /// `qemu_fw_cfg` driver.
    #[default]
    FwCfg,
    /// `node.yaml` on the image's boot partition, written before the boot
    /// (for kernels without the fw_cfg driver, like Debian's armmp).
    BootPartition,
}

/// Where kiln's own data (boards, overlays, the in-image crates) lives: the
/// source checkout kiln was built from, unless `KILN_DATA_DIR` says otherwise.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("KILN_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// Names of the boards kiln ships, sorted.
pub fn available() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir().join("boards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

impl Board {
    /// Loads a shipped board by name, or a board file by path.
    pub fn load(name_or_path: &str) -> Result<Board> {
        let path = if name_or_path.ends_with(".yaml") {
            PathBuf::from(name_or_path)
        } else {
            data_dir()
                .join("boards")
                .join(format!("{name_or_path}.yaml"))
        };
        if !path.exists() {
            bail!(
                "unknown board `{name_or_path}`; available boards: {}",
                available().join(", ")
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading board file {}", path.display()))?;
        Ok(Board::parse(&text, &path)?)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Board, SpecError> {
        let board: Board =
            serde_yaml::from_str(text).map_err(|e| SpecError::from_yaml(&e, file))?;
        board.check().map_err(|message| {
            let key = message.split(':').next().unwrap_or_default();
            let (line, column) = crate::spec::locate_key(text, key);
            SpecError {
                file: file.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        Ok(board)
    }

    /// What serde cannot check: fields that only make sense together.
    fn check(&self) -> Result<(), String> {
        let raspi = self.boot == BootFlavor::RaspiFirmware;
        if raspi && self.disk.partition_table != PartitionTable::Mbr {
            return Err(
                "boot: raspi-firmware needs `disk: {partition-table: mbr}`: \
                        the Pi's boot ROM reads only MBR"
                    .into(),
            );
        }
        if raspi != self.raspi.is_some() {
            return Err(if raspi {
                "boot: raspi-firmware needs a `raspi:` section (firmware, dtbs)".into()
            } else {
                "raspi: this section is only for boot: raspi-firmware".into()
            });
        }
        if let Some(q) = &self.qemu {
            let direct = matches!(q.firmware, QemuFirmware::BootPartition { .. });
            if direct != (q.disk_device == "sd") {
                return Err(
                    "qemu: the Pi machines need `firmware: boot-partition` with \
                            `disk-device: sd`, and only they"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_board_parses() {
        let names = available();
        assert!(names.contains(&"qemu-x86_64".to_string()), "{names:?}");
        for name in names {
            Board::load(&name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let e = Board::load("no-such-board").unwrap_err().to_string();
        assert!(e.contains("unknown board `no-such-board`"), "{e}");
        assert!(e.contains("qemu-x86_64"), "{e}");
    }
}
