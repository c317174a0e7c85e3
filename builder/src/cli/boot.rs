use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::board::{Arch, Board, QemuFirmware, QemuNodeConfig};
use crate::qemu::net::{Link, Mac, Nic};
use crate::qemu::{self, BootOutcome, BootRequest, Firmware, QemuConfig};

/// Boot an image in QEMU and wait until the node is ready.
///
/// Runs the board's QEMU machine under TCG with its firmware, the serial
/// console on stdout and in a log file, and the guest network restricted
/// to this machine: QEMU's user network with `restrict=on`, or, with
/// `--net`, a private network of VMs on this machine.
///
/// Several VMs on one private network (a k3s server and its agents): the
/// first VM listens once per peer, each peer connects to one of its ports,
/// and the first VM's QEMU forwards between them all (a hub). E.g.
/// `kiln boot a.img --mac 52:54:00:6b:00:01 --net listen=127.0.0.1:5001
/// --net listen=127.0.0.1:5002`, then `kiln boot b.img --mac
/// 52:54:00:6b:00:02 --net connect=127.0.0.1:5001`, and the same for c.img
/// with port 5002.
///
/// Boot copies of an image, never one file twice at once. There is no
/// DHCP server on a private network: give each node a static address.
///
/// Exit codes: 0 ready, 1 boot failed (kernel panic or oops, kiln error,
/// firmware shell), 2 timed out, 3 could not start.
#[derive(Debug, clap::Args)]
pub struct BootCmd {
    /// Raw disk image made by `kiln build`. It is booted in place: the
    /// guest's first boot changes it (data partition, /var, /etc).
    pub image: PathBuf,
    /// node.yaml for the guest: passed through QEMU fw_cfg, or written to
    /// the image's boot partition when the board's kernel has no fw_cfg
    /// driver (the board file says which).
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// Also put FILE on a Raspberry Pi card's boot partition under its own
    /// name (repeatable), as a user would: e.g. Raspberry Pi Imager's
    /// `user-data` and `network-config`. Pi boards only.
    #[arg(long = "boot-file", value_name = "FILE")]
    pub boot_files: Vec<PathBuf>,
    /// MAC address of the guest's NIC (default: QEMU's 52:54:00:12:34:56).
    /// Rack mode picks a node's entry by it.
    #[arg(long)]
    pub mac: Option<Mac>,
    /// Put the NIC on a private network of VMs instead of QEMU's user
    /// network (repeatable): `listen=127.0.0.1:PORT` waits for one peer VM,
    /// `connect=127.0.0.1:PORT` reaches a peer's listening port (retried
    /// until it listens). Loopback addresses only.
    #[arg(long = "net", value_name = "LINK")]
    pub links: Vec<Link>,
    /// An ISO image for a CD-ROM drive (x86 boards), e.g. an OVF
    /// environment CD with `ovf-env.xml`, as vSphere attaches one.
    #[arg(long)]
    pub cdrom: Option<PathBuf>,
    /// Seconds to wait for every expected line.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Console text that must appear (repeatable; all must appear).
    /// Default: `kiln: node ready`.
    #[arg(long)]
    pub expect: Vec<String>,
    /// Board the image was built for (default: read from IMAGE's .json).
    #[arg(long)]
    pub board: Option<String>,
    /// Grow the image file to this size first (e.g. 4G), as if flashed to a
    /// bigger disk; never shrinks. Raspberry Pi images boot from a copy
    /// padded to the next power of two of this size (QEMU's SD rule).
    #[arg(long, value_parser = parse_size)]
    pub grow: Option<u64>,
    /// Console log file (default: IMAGE with `.console.log`).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// After the expected lines, wait for the guest to power off itself
    /// instead of stopping it.
    #[arg(long)]
    pub wait_exit: bool,
    /// Don't echo the console.
    #[arg(long)]
    pub no_echo: bool,
    /// IMAGE is an installer stick (`kiln build --installer`): boot it from
    /// USB with DISK (an existing file, e.g. `truncate -s 2G nvme.img`)
    /// attached as the board's disk, and wait until the installer wrote the
    /// image to it and powered off. --node goes onto the stick.
    #[arg(long, value_name = "DISK")]
    pub install_to: Option<PathBuf>,
}

impl BootCmd {
    pub fn run(self) -> ExitCode {
        match self.boot() {
            Ok(BootOutcome::Ready { seconds, .. }) => {
                eprintln!("kiln: boot ok: every expected line seen after {seconds:.1} s");
                ExitCode::SUCCESS
            }
            Ok(BootOutcome::Failed { reason, tail }) => {
                eprintln!(
                    "kiln: boot failed: {reason}\nlast console lines:\n{}",
                    tail.join("\n")
                );
                ExitCode::from(1)
            }
            Ok(BootOutcome::TimedOut { missing, tail }) => {
                eprintln!(
                    "kiln: boot timed out after {} s waiting for: {}\nlast console lines:\n{}",
                    self.timeout,
                    missing.join(", "),
                    tail.join("\n")
                );
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("kiln: error: {e:#}");
                ExitCode::from(3)
            }
        }
    }

    fn boot(&self) -> Result<BootOutcome> {
        if !self.image.is_file() {
            bail!(
                "image {} not found; build it with `kiln build`",
                self.image.display()
            );
        }
        let board_name = match &self.board {
            Some(b) => b.clone(),
            None => {
                crate::build::read_sidecar(&self.image)
                    .with_context(|| {
                        format!(
                            "no --board given and no build record next to {}",
                            self.image.display()
                        )
                    })?
                    .board
            }
        };
        let board = Board::load(&board_name)?;
        let Some(q) = &board.qemu else {
            bail!("board {board_name} cannot be booted in QEMU")
        };
        if q.net_device.is_none() && (self.mac.is_some() || !self.links.is_empty()) {
            bail!("board {board_name} has no NIC under QEMU: --mac and --net do not apply");
        }
        if self.cdrom.is_some() && board.arch != Arch::Amd64 {
            bail!("--cdrom needs a PC's IDE bus; board {board_name} is not an x86 board");
        }
        if let Some(node) = &self.node {
            let text = std::fs::read_to_string(node)
                .with_context(|| format!("reading {}", node.display()))?;
            kiln_node::config::parse(&text, &node.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        // A Pi card is a copy padded to a power of two (QEMU's SD rule): the
        // node config and the guest's first boot change the copy, never
        // the user's image.
        let pi_card = matches!(q.firmware, QemuFirmware::BootPartition { .. });
        if !self.boot_files.is_empty() && !pi_card {
            bail!("--boot-file is for Raspberry Pi boards; board {board_name} is not one");
        }
        let mut boot_files = Vec::new();
        for path in &self.boot_files {
            let name = path
                .file_name()
                .with_context(|| format!("--boot-file {} names no file", path.display()))?
                .to_string_lossy()
                .into_owned();
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            boot_files.push((name, bytes));
        }
        if let Some(size) = self.grow.filter(|_| !pi_card) {
            let file = std::fs::OpenOptions::new().write(true).open(&self.image)?;
            if file.metadata()?.len() < size {
                file.set_len(size).context("growing the image")?;
            }
        }
        if let Some(disk) = &self.install_to {
            if !disk.is_file() {
                bail!(
                    "target disk {} not found; create it first (truncate -s 2G {})",
                    disk.display(),
                    disk.display()
                );
            }
        }
        let node_on_disk =
            q.node_config == QemuNodeConfig::BootPartition || self.install_to.is_some();
        let fw_cfg_node = match (&self.node, node_on_disk) {
            (Some(_), true) if pi_card => None,
            (Some(node), true) => {
                let bytes =
                    std::fs::read(node).with_context(|| format!("reading {}", node.display()))?;
                crate::boot::node_file::put(&self.image, &bytes)
                    .context("putting node.yaml on the image's boot partition")?;
                None
            }
            (node, _) => node.clone(),
        };
        let scratch = tempfile::Builder::new()
            .prefix("kiln-boot-")
            .tempdir()
            .context("creating a temporary directory")?;
        let mut image = self.image.clone();
        let mut notes = Vec::new();
        let (firmware, files) = match &q.firmware {
            QemuFirmware::Uefi { code, vars } => (
                Firmware::Uefi {
                    code: code.clone(),
                    vars_template: vars.clone(),
                },
                vec![code.clone(), vars.clone()],
            ),
            QemuFirmware::UBoot { bios, env } => (
                Firmware::UBoot {
                    bios: bios.clone(),
                    env: env.clone(),
                },
                vec![bios.clone()],
            ),
            QemuFirmware::EspKernel {} => {
                let (kernel, initrd, append) =
                    crate::boot::node_file::loader_entry(&self.image, scratch.path())?;
                let append = match &q.append {
                    Some(extra) => format!("{append} {extra}"),
                    None => append,
                };
                let firmware = Firmware::Kernel {
                    kernel,
                    initrd: Some(initrd),
                    dtb: None,
                    append,
                };
                (firmware, vec![])
            }
            QemuFirmware::BootPartition {
                dtb,
                append,
                dtb_edits,
            } => {
                let node = match &self.node {
                    Some(n) => {
                        Some(std::fs::read(n).with_context(|| format!("reading {}", n.display()))?)
                    }
                    None => None,
                };
                let card = crate::qemu::sd_card::prepare(
                    &self.image,
                    scratch.path(),
                    self.grow,
                    node.as_deref(),
                    &boot_files
                        .iter()
                        .map(|(n, b)| (n.as_str(), b.as_slice()))
                        .collect::<Vec<_>>(),
                    crate::qemu::sd_card::DeviceTree {
                        name: dtb,
                        edits: dtb_edits,
                    },
                    append,
                )?;
                image = card.image;
                notes = card.notes;
                (card.firmware, vec![])
            }
        };
        for path in files {
            if !path.exists() {
                bail!(
                    "{} not found; install {} (see README)",
                    path.display(),
                    q.host_packages.join(" ")
                );
            }
        }
        // An installer boots from a USB stick and writes the board's disk.
        let (disk_device, extra_args) = match &self.install_to {
            Some(disk) => (
                "usb-storage".to_string(),
                vec![
                    "-drive".to_string(),
                    format!(
                        "file={},format=raw,if=none,id=target",
                        disk.to_string_lossy().replace(',', ",,")
                    ),
                    "-device".to_string(),
                    format!("{},drive=target", q.disk_device),
                ],
            ),
            None => (q.disk_device.clone(), q.extra_args.clone()),
        };
        let cfg = QemuConfig {
            disk_device,
            extra_args,
            ..QemuConfig::for_board(q, firmware)
        };
        let expect = match (self.expect.is_empty(), &self.install_to) {
            (false, _) => self.expect.clone(),
            (true, Some(_)) => vec![INSTALL_DONE.to_string()],
            (true, None) => vec!["kiln: node ready".to_string()],
        };
        let req = BootRequest {
            image,
            node_config: fw_cfg_node,
            nic: Nic {
                mac: self.mac,
                links: self.links.clone(),
            },
            cdrom: self.cdrom.clone(),
            expect,
            fail_on: FAIL_ON
                .iter()
                .chain(cfg.firmware.stuck_markers())
                .map(|s| s.to_string())
                .collect(),
            timeout: Duration::from_secs(self.timeout),
            log: self
                .log
                .clone()
                .unwrap_or_else(|| self.image.with_extension("console.log")),
            // The installer powers off when done.
            wait_exit: self.wait_exit || self.install_to.is_some(),
            verbose: !self.no_echo,
            notes,
        };
        qemu::boot(&cfg, &req).map_err(|e| {
            if e.to_string().contains("not found") {
                anyhow::anyhow!("{e:#}; install {}", q.host_packages.join(" "))
            } else {
                e
            }
        })
    }
}

/// The installer's last line before it powers off.
const INSTALL_DONE: &str = "kiln-init: install: done";

/// Console text that means the boot cannot succeed: stop at once rather
/// than wait for the timeout (the firmware adds its own prompt). A kernel
/// oops counts: the task it killed may hold a lock the boot needs (an SD
/// driver's oops hung a Pi boot for the whole timeout), and an image that
/// oopses is not healthy even when it limps on to ready. ARM kernels say
/// `Internal error: Oops`, x86 ones `BUG: ...` before their `Oops:`.
const FAIL_ON: &[&str] = &[
    "kiln-init: ERROR",
    "kiln: ERROR",
    "Kernel panic",
    "Internal error: Oops",
    "BUG: kernel NULL pointer dereference",
    "BUG: unable to handle page fault",
];

/// `4G`, `512M`, `1024` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{s}` is not a size like 4G or 512M"))
}

#[cfg(test)]
mod tests {
    use super::FAIL_ON;
    use crate::qemu::console::{Console, Event};

    fn first_failure(transcript: &str) -> Option<Event> {
        let fail_on: Vec<String> = FAIL_ON.iter().map(|s| s.to_string()).collect();
        Console::new(&["kiln: node ready".to_string()], &fail_on).feed(
            transcript.as_bytes(),
            1.0,
            |_| {},
        )
    }

    /// Oopses as ARM and x86 kernels print them stop the boot at once;
    /// the ARM one is the SD driver's oops that once hung a Pi boot.
    #[test]
    fn a_kernel_oops_fails_the_boot() {
        for (line, pattern) in [
            (
                "[  104.8] Internal error: Oops: 17 [#1] SMP ARM\r\n",
                "Internal error: Oops",
            ),
            (
                "[    9.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n",
                "BUG: kernel NULL pointer dereference",
            ),
        ] {
            assert!(
                matches!(first_failure(line), Some(Event::Failed { pattern: p, .. }) if p == pattern),
                "{line:?} did not fail the boot"
            );
        }
        assert_eq!(
            first_failure("[    1.0] mmc0: new high speed SDHC card at address 4567\r\n"),
            None
        );
    }
}
