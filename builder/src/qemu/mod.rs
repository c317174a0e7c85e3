//! Boot an image under QEMU (TCG) and watch its serial console: the runner
//! behind `kiln boot` and the boot tests.
//!
//! [`command_line`] builds QEMU's arguments from plain data; [`boot`] runs
//! QEMU, reads the console line by line ([`console::Console`]), writes the
//! full log, and ends the run on the first of: every expected marker seen,
//! a fatal marker, QEMU exiting, the timeout. The guest's network is QEMU's
//! user network with `restrict=on`, or a private network of VMs linked
//! over loopback ([`net`]): it never reaches outside this machine.

pub mod console;
pub mod fdt;
pub mod net;
pub mod sd_card;
pub mod uboot_env;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use console::{Console, Event};

/// How the machine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// UEFI (OVMF/AAVMF): code read-only, plus a per-run copy of the vars
    /// template (both pflash).
    Uefi {
        code: PathBuf,
        vars_template: PathBuf,
    },
    /// U-Boot as `-bios`, with its environment on the second flash bank
    /// when `env` says how ([`uboot_env`]).
    UBoot {
        bios: PathBuf,
        env: Option<uboot_env::UBootEnv>,
    },
    /// Direct kernel boot (Raspberry Pi machines: the firmware cannot run
    /// under QEMU, so kernel, initrd and DTB come from the image's boot
    /// partition, extracted by the caller).
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        dtb: Option<PathBuf>,
        append: String,
    },
}

impl Firmware {
    /// Console text that means the firmware booted nothing and now waits
    /// for a human (see [`console`] for the `^` anchor): stop at once
    /// instead of waiting for the timeout.
    pub fn stuck_markers(&self) -> &'static [&'static str] {
        match self {
            // OVMF/AAVMF's shell.
            Firmware::Uefi { .. } => &["Shell>"],
            // U-Boot's prompt, after every boot command failed.
            Firmware::UBoot { .. } => &["^=> "],
            Firmware::Kernel { .. } => &[],
        }
    }
}

/// The machine, as a board file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, `qemu-system-aarch64`, `qemu-system-arm`.
    pub binary: String,
    /// `q35`, `virt`, `raspi3b`, ...
    pub machine: String,
    pub cpu: Option<String>,
    pub memory_mib: u32,
    pub smp: u32,
    pub firmware: Firmware,
    /// A disk controller (`pvscsi`) for `disk_device` to sit on.
    pub disk_controller: Option<String>,
    /// `virtio-blk-pci`, `nvme`, `scsi-hd` (on `disk_controller`)..., or
    /// `sd` for `-drive if=sd`.
    pub disk_device: String,
    /// NIC model on the restricted user network (`virtio-net-pci`,
    /// `usb-net`, `vmxnet3`), or none.
    pub net_device: Option<String>,
    /// Which serial port is the console (raspi3b: 1, the mini-UART; lower
    /// ports go to `null`).
    pub console_serial: u32,
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// The board's machine as its file describes it, started by
    /// `firmware` (callers adjust disks, NICs and extra arguments).
    pub fn for_board(q: &crate::board::QemuBoard, firmware: Firmware) -> QemuConfig {
        QemuConfig {
            binary: q.binary.clone(),
            machine: q.machine.clone(),
            cpu: q.cpu.clone(),
            memory_mib: q.memory_mib,
            smp: q.smp,
            firmware,
            disk_controller: q.disk_controller.clone(),
            disk_device: q.disk_device.clone(),
            net_device: q.net_device.clone(),
            console_serial: q.console_serial,
            extra_args: Vec::new(),
        }
    }
}

/// One boot.
#[derive(Debug, Clone, PartialEq)]
pub struct BootRequest {
    /// The disk image; booted as is (pad a copy first if the machine needs
    /// a particular size).
    pub image: PathBuf,
    /// Node config passed with `-fw_cfg` under
    /// [`kiln_node::layout::FW_CFG_NODE_CONFIG`].
    pub node_config: Option<PathBuf>,
    /// The NIC's MAC and network (default: QEMU's MAC, user network).
    pub nic: net::Nic,
    /// An ISO image in a CD-ROM drive on the PC's IDE bus (read-only).
    pub cdrom: Option<PathBuf>,
    /// Substrings that must all appear on the console, in any order.
    pub expect: Vec<String>,
    /// Substrings that end the run as failed (`kiln-init: ERROR`,
    /// `Kernel panic`, `Shell>`: OVMF's shell means the disk did not boot).
    pub fail_on: Vec<String>,
    pub timeout: Duration,
    /// The full console log.
    pub log: PathBuf,
    /// After every expect, wait (within the timeout) for the guest to power
    /// off instead of stopping it.
    pub wait_exit: bool,
    /// Echo console lines to stderr.
    pub verbose: bool,
    /// What kiln changed for QEMU's sake (a device tree edited), said on
    /// stderr and at the head of the log next to QEMU's command line.
    pub notes: Vec<String>,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BootOutcome {
    /// Every expected string was seen (and with `wait_exit`, the guest
    /// powered off cleanly). `seconds` since QEMU started.
    Ready {
        seconds: f64,
        matched: Vec<(String, f64)>,
    },
    Failed {
        reason: String,
        tail: Vec<String>,
    },
    TimedOut {
        missing: Vec<String>,
        tail: Vec<String>,
    },
}

/// QEMU option values escape `,` by doubling it.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// QEMU's arguments (without the binary). `flash1` is the per-run second
/// flash bank: the copy of the UEFI vars template, or U-Boot's environment.
pub fn command_line(cfg: &QemuConfig, req: &BootRequest, flash1: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-machine", &format!("{},accel=tcg", cfg.machine)]);
    if let Some(cpu) = &cfg.cpu {
        push(&["-cpu", cpu]);
    }
    push(&[
        "-m",
        &cfg.memory_mib.to_string(),
        "-smp",
        &cfg.smp.to_string(),
    ]);
    for _ in 0..cfg.console_serial {
        push(&["-serial", "null"]);
    }
    push(&["-serial", "stdio"]);
    match &cfg.firmware {
        Firmware::Uefi {
            code,
            vars_template,
        } => {
            let vars = flash1.unwrap_or(vars_template);
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    opt_path(code)
                ),
            ]);
            push(&[
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", opt_path(vars)),
            ]);
        }
        Firmware::UBoot { bios, .. } => {
            push(&["-bios", &bios.to_string_lossy()]);
            if let Some(env) = flash1 {
                push(&[
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", opt_path(env)),
                ]);
            }
        }
        Firmware::Kernel {
            kernel,
            initrd,
            dtb,
            append,
        } => {
            push(&["-kernel", &kernel.to_string_lossy()]);
            if let Some(initrd) = initrd {
                push(&["-initrd", &initrd.to_string_lossy()]);
            }
            if let Some(dtb) = dtb {
                push(&["-dtb", &dtb.to_string_lossy()]);
            }
            push(&["-append", append]);
        }
    }
    let image = opt_path(&req.image);
    if cfg.disk_device == "sd" {
        push(&["-drive", &format!("file={image},format=raw,if=sd")]);
    } else {
        push(&["-drive", &format!("file={image},format=raw,if=none,id=d0")]);
        // Firmware boots the disk first (OVMF tries PXE for minutes
        // otherwise); with -kernel, QEMU's linuxboot ROM holds index 0.
        let index = match cfg.firmware {
            Firmware::Kernel { .. } => "",
            _ => ",bootindex=0",
        };
        let mut device = cfg.disk_device.clone();
        if device.starts_with("usb-storage") {
            // A USB stick needs a host controller: xHCI, as on current PCs.
            push(&["-device", "qemu-xhci,id=xhci"]);
            device.push_str(",bus=xhci.0");
        }
        let bus = match &cfg.disk_controller {
            Some(controller) => {
                push(&["-device", &format!("{controller},id=hba0")]);
                ",bus=hba0.0"
            }
            None => "",
        };
        push(&["-device", &format!("{device},drive=d0{bus}{index}")]);
    }
    if let Some(iso) = &req.cdrom {
        push(&[
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                opt_path(iso)
            ),
        ]);
        // Secondary master, where VMware puts the OVF environment CD.
        push(&["-device", "ide-cd,drive=cd0,bus=ide.1"]);
    }
    if let Some(model) = &cfg.net_device {
        let nic = net::args(model, &req.nic);
        push(&nic.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(node) = &req.node_config {
        let key = kiln_node::layout::FW_CFG_NODE_CONFIG;
        push(&["-fw_cfg", &format!("name={key},file={}", opt_path(node))]);
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// The Debian package that ships a QEMU binary, for the "install" hint.
fn package_for(binary: &str) -> &'static str {
    match binary.rsplit('/').next().unwrap_or(binary) {
        "qemu-system-x86_64" | "qemu-system-i386" => "qemu-system-x86",
        "qemu-system-aarch64" | "qemu-system-arm" => "qemu-system-arm",
        _ => "qemu-system",
    }
}

/// Kills and reaps QEMU however the run ends.
struct Reaper(Option<Child>);

impl Reaper {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already reaped")
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Msg {
    Out(Vec<u8>, Instant),
    Eof,
}

/// Boot `req.image` on `cfg`'s machine and watch the console. `Err` only
/// when QEMU cannot start (binary, firmware or image missing, log not
/// writable); everything after that is a [`BootOutcome`].
pub fn boot(cfg: &QemuConfig, req: &BootRequest) -> Result<BootOutcome> {
    if !req.image.is_file() {
        bail!(
            "image {} not found; build it first (kiln build)",
            req.image.display()
        );
    }
    if let Some(node) = &req.node_config {
        if !node.is_file() {
            bail!(
                "node config {} not found; check the --node path",
                node.display()
            );
        }
    }
    if let Some(iso) = &req.cdrom {
        if !iso.is_file() {
            bail!(
                "CD image {} not found; check the --cdrom path",
                iso.display()
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("kiln-qemu-")
        .tempdir()
        .context("creating a temporary directory for the UEFI variables")?;
    let vars = match &cfg.firmware {
        Firmware::Uefi {
            code,
            vars_template,
        } => {
            for f in [code, vars_template] {
                if !f.is_file() {
                    bail!("UEFI firmware {} not found; install ovmf (x86) or qemu-efi-aarch64/qemu-efi-arm (see README)", f.display());
                }
            }
            let copy = tmp.path().join("vars.fd");
            std::fs::copy(vars_template, &copy).with_context(|| {
                format!("copying the UEFI vars template {}", vars_template.display())
            })?;
            Some(copy)
        }
        Firmware::UBoot { bios, env } => {
            if !bios.is_file() {
                bail!(
                    "U-Boot {} not found; install u-boot-qemu (see README)",
                    bios.display()
                )
            }
            let bank = tmp.path().join("u-boot-env.fd");
            match env
                .as_ref()
                .map(|env| uboot_env::write_bank(bios, env, &bank))
            {
                Some(Ok(())) => Some(bank),
                Some(Err(e)) => {
                    log::warn!("{e:#}; U-Boot boots with its own default environment");
                    None
                }
                None => None,
            }
        }
        _ => None,
    };
    // Unbuffered: QEMU's output arrives in chunks already, and someone
    // following the log (`tail -f`) or a killed `kiln boot` must see every
    // line the guest printed so far.
    let mut log = File::create(&req.log)
        .with_context(|| format!("creating the console log {}", req.log.display()))?;

    let args = command_line(cfg, req, vars.as_deref());
    writeln!(log, "# {} {}", cfg.binary, args.join(" ")).context("writing the console log")?;
    for note in &req.notes {
        log::info!("{note}");
        writeln!(log, "# kiln: {note}").context("writing the console log")?;
    }
    let child = Command::new(&cfg.binary)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => Reaper(Some(c)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} not found; install {} (see README)",
            cfg.binary,
            package_for(&cfg.binary)
        ),
        Err(e) => return Err(e).with_context(|| format!("starting {}", cfg.binary)),
    };
    let start = Instant::now();

    let (tx, rx) = mpsc::channel();
    let mut stdout = child.child().stdout.take().expect("stdout is piped");
    // Neither thread is joined: each ends when QEMU's pipes close, and a
    // stray process holding them must not hang the runner.
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send(Msg::Out(buf[..n].to_vec(), Instant::now()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Eof);
    });
    let mut stderr = child.child().stderr.take().expect("stderr is piped");
    let (err_tx, err_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = err_tx.send(text);
    });

    let outcome = watch(&mut child, &rx, req, start, &mut log);
    child.stop();
    drop(rx);
    let qemu_errors = err_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    for line in qemu_errors.lines() {
        let _ = writeln!(log, "# qemu: {line}");
    }
    log.flush().context("writing the console log")?;
    drop(tmp);

    Ok(match outcome? {
        BootOutcome::Failed { reason, tail } if !qemu_errors.trim().is_empty() => {
            BootOutcome::Failed {
                reason: format!(
                    "{reason}; qemu said: {}",
                    qemu_errors.trim().replace('\n', " / ")
                ),
                tail,
            }
        }
        o => o,
    })
}

/// Where console lines go: the log, and stderr when verbose.
struct Sink<'a, W: Write> {
    log: &'a mut W,
    verbose: bool,
    error: Option<std::io::Error>,
}

impl<W: Write> Sink<'_, W> {
    fn line(&mut self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
        if let Err(e) = writeln!(self.log, "{line}") {
            self.error.get_or_insert(e);
        }
    }
}

/// The watch loop: console events, QEMU's exit, the deadline.
fn watch(
    child: &mut Reaper,
    rx: &mpsc::Receiver<Msg>,
    req: &BootRequest,
    start: Instant,
    log: &mut impl Write,
) -> Result<BootOutcome> {
    let mut console = Console::new(&req.expect, &req.fail_on);
    let mut sink = Sink {
        log,
        verbose: req.verbose,
        error: None,
    };
    let deadline = start + req.timeout;
    let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let mut ready = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let mut missing = console.missing();
            if ready {
                missing.push("guest power-off".into());
            }
            return Ok(BootOutcome::TimedOut {
                missing,
                tail: console.tail(),
            });
        }
        let msg = rx.recv_timeout((deadline - now).min(Duration::from_millis(200)));
        let event = match msg {
            Ok(Msg::Out(bytes, t)) => console.feed(&bytes, secs(t), |l| sink.line(l)),
            Ok(Msg::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // QEMU closed its console: it is exiting.
                let t = secs(Instant::now());
                if let Some(Event::Failed { pattern, line }) = console.finish(t, |l| sink.line(l)) {
                    return Ok(failed(&console, &pattern, &line, t));
                }
                let status = wait_briefly(child);
                if ready && status.is_some_and(|s| s.success()) {
                    return Ok(BootOutcome::Ready {
                        seconds: t,
                        matched: console.matched(),
                    });
                }
                let status = status.map_or("an unknown status".to_string(), |s| s.to_string());
                let missing = console.missing();
                let reason = if missing.is_empty() {
                    format!("qemu exited with {status} before the guest powered off cleanly")
                } else {
                    format!(
                        "qemu exited with {status} before the console showed {}",
                        quoted(&missing)
                    )
                };
                return Ok(BootOutcome::Failed {
                    reason,
                    tail: console.tail(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        if let Some(e) = sink.error.take() {
            return Err(e)
                .with_context(|| format!("writing the console log {}", req.log.display()));
        }
        match event {
            Some(Event::Failed { pattern, line }) => {
                return Ok(failed(&console, &pattern, &line, secs(Instant::now())));
            }
            Some(Event::AllSeen) if !ready => {
                if !req.wait_exit {
                    let t = secs(Instant::now());
                    return Ok(BootOutcome::Ready {
                        seconds: t,
                        matched: console.matched(),
                    });
                }
                ready = true;
            }
            _ => {}
        }
    }
}

fn failed(console: &Console, pattern: &str, line: &str, t: f64) -> BootOutcome {
    BootOutcome::Failed {
        reason: format!("console showed {pattern:?} after {t:.1} s: {}", line.trim()),
        tail: console.tail(),
    }
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// QEMU's exit status once it closed its console: it exits at once, so
/// wait a few seconds at most, then kill it.
fn wait_briefly(child: &mut Reaper) -> Option<ExitStatus> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match child.child().try_wait() {
            Ok(Some(status)) => {
                child.0 = None;
                return Some(status);
            }
            Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(20)),
            _ => return child.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn x86(code: &str, vars: &str) -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            machine: "q35".into(),
            cpu: None,
            memory_mib: 1024,
            smp: 2,
            firmware: Firmware::Uefi {
                code: code.into(),
                vars_template: vars.into(),
            },
            disk_controller: None,
            disk_device: "virtio-blk-pci".into(),
            net_device: Some("virtio-net-pci".into()),
            console_serial: 0,
            extra_args: vec![],
        }
    }

    fn request(image: &Path, log: &Path) -> BootRequest {
        BootRequest {
            image: image.into(),
            node_config: None,
            nic: net::Nic::default(),
            cdrom: None,
            expect: vec![],
            fail_on: vec!["Kernel panic".into(), "Shell>".into()],
            timeout: Duration::from_secs(10),
            log: log.into(),
            wait_exit: false,
            verbose: false,
            notes: vec![],
        }
    }

    #[test]
    fn usb_stick_gets_an_xhci_controller_first() {
        let mut cfg = x86("/c.fd", "/v.fd");
        cfg.disk_device = "usb-storage".into();
        cfg.net_device = None;
        cfg.extra_args = vec!["-device".into(), "nvme,serial=n0,drive=t".into()];
        let args = command_line(
            &cfg,
            &request(Path::new("/stick.img"), Path::new("/l")),
            None,
        );
        let text = args.join(" ");
        assert!(
            text.ends_with(
                "-drive file=/stick.img,format=raw,if=none,id=d0 -device qemu-xhci,id=xhci \
                 -device usb-storage,bus=xhci.0,drive=d0,bootindex=0 -device nvme,serial=n0,drive=t"
            ),
            "{text}"
        );
    }

    #[test]
    fn command_line_uefi_x86() {
        let cfg = x86(
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        );
        let mut req = request(Path::new("/out/a,b.img"), Path::new("/tmp/log"));
        req.node_config = Some("/cfg/node.yaml".into());
        let args = command_line(&cfg, &req, Some(Path::new("/tmp/run/vars.fd")));
        assert_eq!(
            args.join(" "),
            "-nodefaults -no-user-config -display none -no-reboot -machine q35,accel=tcg -m 1024 -smp 2 \
             -serial stdio \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/run/vars.fd \
             -drive file=/out/a,,b.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0,bootindex=0 \
             -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
             -fw_cfg name=opt/io.kiln/node.yaml,file=/cfg/node.yaml"
        );
    }

    #[test]
    fn command_line_scsi_controller_and_cdrom() {
        let cfg = QemuConfig {
            machine: "pc".into(),
            disk_controller: Some("pvscsi".into()),
            disk_device: "scsi-hd".into(),
            net_device: Some("vmxnet3".into()),
            ..x86("/c.fd", "/v.fd")
        };
        let mut req = request(Path::new("/d.img"), Path::new("/l"));
        req.cdrom = Some("/ovf,env.iso".into());
        let args = command_line(&cfg, &req, None).join(" ");
        assert!(
            args.contains(
                "-drive file=/d.img,format=raw,if=none,id=d0 -device pvscsi,id=hba0 \
                 -device scsi-hd,drive=d0,bus=hba0.0,bootindex=0 \
                 -drive file=/ovf,,env.iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on \
                 -device ide-cd,drive=cd0,bus=ide.1 \
                 -netdev user,id=n0,restrict=on -device vmxnet3,netdev=n0"
            ),
            "{args}"
        );
    }

    #[test]
    fn command_line_raspi_and_uboot() {
        let cfg = QemuConfig {
            binary: "qemu-system-aarch64".into(),
            machine: "raspi3b".into(),
            cpu: None,
            memory_mib: 1024,
            smp: 4,
            firmware: Firmware::Kernel {
                kernel: "/t/vmlinuz".into(),
                initrd: Some("/t/initrd.img".into()),
                dtb: Some("/t/bcm2710-rpi-3-b.dtb".into()),
                append: "console=ttyS1,115200 earlycon".into(),
            },
            disk_controller: None,
            disk_device: "sd".into(),
            net_device: Some("usb-net".into()),
            console_serial: 1,
            extra_args: vec!["-usb".into()],
        };
        let args = command_line(
            &cfg,
            &request(Path::new("/t/sd.img"), Path::new("/t/log")),
            None,
        )
        .join(" ");
        assert!(args.contains("-serial null -serial stdio"), "{args}");
        assert!(
            args.contains(
                "-kernel /t/vmlinuz -initrd /t/initrd.img -dtb /t/bcm2710-rpi-3-b.dtb -append console=ttyS1,115200 earlycon"
            ),
            "{args}"
        );
        assert!(
            args.contains("-drive file=/t/sd.img,format=raw,if=sd -netdev"),
            "{args}"
        );
        assert!(args.ends_with("-device usb-net,netdev=n0 -usb"), "{args}");
        let direct = QemuConfig {
            disk_device: "virtio-blk-pci".into(),
            ..cfg.clone()
        };
        let args = command_line(
            &direct,
            &request(Path::new("/d.img"), Path::new("/l")),
            None,
        )
        .join(" ");
        assert!(
            args.contains("-device virtio-blk-pci,drive=d0 "),
            "-kernel's ROM holds bootindex 0: {args}"
        );

        let cfg = QemuConfig {
            machine: "virt".into(),
            cpu: Some("cortex-a15".into()),
            firmware: Firmware::UBoot {
                bios: "/usr/lib/u-boot/qemu_arm/u-boot.bin".into(),
                env: None,
            },
            disk_device: "virtio-blk-pci".into(),
            net_device: None,
            console_serial: 0,
            extra_args: vec![],
            ..cfg
        };
        let args =
            command_line(&cfg, &request(Path::new("/i.img"), Path::new("/l")), None).join(" ");
        assert!(
            args.contains("-machine virt,accel=tcg -cpu cortex-a15"),
            "{args}"
        );
        assert!(
            args.contains("-bios /usr/lib/u-boot/qemu_arm/u-boot.bin"),
            "{args}"
        );
        assert!(!args.contains("-netdev"), "{args}");
        let args = command_line(
            &cfg,
            &request(Path::new("/i.img"), Path::new("/l")),
            Some(Path::new("/run/u-boot-env.fd")),
        )
        .join(" ");
        assert!(
            args.contains(
                "-bios /usr/lib/u-boot/qemu_arm/u-boot.bin \
                 -drive if=pflash,format=raw,unit=1,file=/run/u-boot-env.fd"
            ),
            "{args}"
        );
    }

    /// A stand-in for QEMU: a script that prints a console and exits.
    fn fake_qemu(dir: &Path, script: &str) -> QemuConfig {
        let path = dir.join("fake-qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        QemuConfig {
            binary: path.to_string_lossy().into_owned(),
            firmware: Firmware::Kernel {
                kernel: "k".into(),
                initrd: None,
                dtb: None,
                append: String::new(),
            },
            ..x86("", "")
        }
    }

    fn run(script: &str, tweak: impl FnOnce(&mut BootRequest)) -> (BootOutcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, b"").unwrap();
        let mut req = request(&image, &dir.path().join("console.log"));
        req.expect = vec!["kiln-init: root mounted".into(), "kiln: ready".into()];
        tweak(&mut req);
        let outcome = boot(&fake_qemu(dir.path(), script), &req).unwrap();
        (outcome, std::fs::read_to_string(&req.log).unwrap())
    }

    #[test]
    fn ready_stops_the_guest() {
        let started = Instant::now();
        let (o, log) = run(
            r"printf 'kiln: ready\r\nx kiln-init: root mounted\r\n'; exec sleep 30",
            |_| {},
        );
        let BootOutcome::Ready { matched, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(matched.len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "qemu was stopped, not waited for"
        );
        assert!(log.contains("x kiln-init: root mounted\n"), "{log}");
        assert!(
            log.starts_with("# "),
            "the log starts with the command line"
        );
    }

    #[test]
    fn wait_exit_waits_for_power_off() {
        let script = r"printf 'kiln-init: root mounted\nkiln: ready\n'; sleep 1; echo reboot: Power down; exit 0";
        let (o, log) = run(script, |r| r.wait_exit = true);
        assert!(matches!(o, BootOutcome::Ready { .. }), "{o:?}");
        // Printed after the expects and a pause: only a runner that waited
        // for the exit has it (no wall-clock assertion: CI machines are noisy).
        assert!(log.contains("reboot: Power down"), "{log}");
        let (o, _) = run(
            r"echo kiln-init: root mounted; echo kiln: ready; exec sleep 30",
            |r| {
                r.wait_exit = true;
                r.timeout = Duration::from_secs(2);
            },
        );
        let BootOutcome::TimedOut { missing, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(missing, ["guest power-off"]);
    }

    #[test]
    fn fail_on_early_exit_and_timeout() {
        let (o, _) = run(
            r"echo kiln-init: root mounted; echo '[ 2.1] Kernel panic - not syncing'; exec sleep 30",
            |_| {},
        );
        let BootOutcome::Failed { reason, tail } = o else {
            panic!("{o:?}")
        };
        assert!(
            reason.starts_with("console showed \"Kernel panic\" after"),
            "{reason}"
        );
        assert_eq!(tail.len(), 2);

        let (o, _) = run(
            r"echo kiln-init: root mounted; echo 'no such disk' >&2; exit 1",
            |_| {},
        );
        let BootOutcome::Failed { reason, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            reason,
            "qemu exited with exit status: 1 before the console showed \"kiln: ready\"; qemu said: no such disk"
        );

        let (o, _) = run(r"echo kiln-init: root mounted; exec sleep 30", |r| {
            r.timeout = Duration::from_secs(1)
        });
        let BootOutcome::TimedOut { missing, tail } = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            (missing, tail),
            (
                vec!["kiln: ready".to_string()],
                vec!["kiln-init: root mounted".to_string()]
            )
        );
    }

    #[test]
    fn could_not_start_errors() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, b"").unwrap();
        let req = request(&image, &dir.path().join("log"));
        let cfg = QemuConfig {
            binary: "qemu-system-x86_64-not-here".into(),
            firmware: Firmware::Kernel {
                kernel: "k".into(),
                initrd: None,
                dtb: None,
                append: String::new(),
            },
            ..x86("", "")
        };
        let err = boot(&cfg, &req).unwrap_err().to_string();
        assert_eq!(
            err,
            "qemu-system-x86_64-not-here not found; install qemu-system (see README)"
        );
        let err = boot(
            &x86("/nonexistent/OVMF_CODE.fd", "/nonexistent/VARS.fd"),
            &req,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("UEFI firmware /nonexistent/OVMF_CODE.fd not found; install ovmf"),
            "{err}"
        );
        let err = boot(
            &cfg,
            &request(&dir.path().join("none.img"), &dir.path().join("log")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("build it first"), "{err}");
    }

    /// OVMF's code and variable store, if QEMU and OVMF are installed; a
    /// test without them says it is skipped.
    fn x86_qemu_and_ovmf() -> Option<(&'static Path, &'static Path)> {
        let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
        let vars = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
        let have_qemu = Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_ok();
        if !have_qemu || !code.is_file() || !vars.is_file() {
            eprintln!("skipped: qemu-system-x86_64 or OVMF is not installed (scripts/setup-host.sh installs them)");
            return None;
        }
        Some((code, vars))
    }

    /// The real thing: OVMF with an empty disk drops to its shell, and the
    /// runner fails fast on `Shell>` instead of waiting forever.
    #[test]
    fn ovmf_empty_disk_fails_fast_on_shell() {
        let Some((code, vars)) = x86_qemu_and_ovmf() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("empty.img");
        File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let mut req = request(&image, &dir.path().join("console.log"));
        req.expect = vec!["kiln: ready".into()];
        req.timeout = Duration::from_secs(90);
        let cfg = QemuConfig {
            memory_mib: 256,
            smp: 1,
            ..x86(&code.to_string_lossy(), &vars.to_string_lossy())
        };
        let started = Instant::now();
        let outcome = boot(&cfg, &req).unwrap();
        let BootOutcome::Failed { reason, tail } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(reason.starts_with("console showed \"Shell>\""), "{reason}");
        assert!(tail.iter().any(|l| l.contains("Shell>")), "{tail:?}");
        eprintln!(
            "OVMF reached Shell> in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let log = std::fs::read_to_string(&req.log).unwrap();
        assert!(log.contains("UEFI Interactive Shell"), "{log}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "only the image and the log remain"
        );
    }

    /// U-Boot with the qemu-armv7 board's environment bank and an empty
    /// disk stops at its prompt at once (no autoboot delay, no network
    /// boot), and the runner fails fast on it.
    #[test]
    fn uboot_empty_disk_fails_fast_at_the_prompt() {
        let board = crate::board::Board::load("qemu-armv7").unwrap();
        let q = board.qemu.unwrap();
        let crate::board::QemuFirmware::UBoot { bios, env } = q.firmware else {
            panic!("qemu-armv7 boots with U-Boot")
        };
        let have_qemu = Command::new(&q.binary).arg("--version").output().is_ok();
        if !have_qemu || !bios.is_file() {
            eprintln!(
                "skipped: {} or U-Boot is not installed (scripts/setup-host.sh installs them)",
                q.binary
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("empty.img");
        File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let firmware = Firmware::UBoot { bios, env };
        let mut req = request(&image, &dir.path().join("console.log"));
        req.expect = vec!["kiln: ready".into()];
        req.fail_on = firmware
            .stuck_markers()
            .iter()
            .map(|s| s.to_string())
            .collect();
        req.timeout = Duration::from_secs(60);
        let cfg = QemuConfig {
            binary: q.binary,
            machine: q.machine,
            cpu: q.cpu,
            memory_mib: 256,
            smp: 1,
            firmware,
            disk_controller: q.disk_controller,
            disk_device: q.disk_device,
            net_device: q.net_device,
            console_serial: q.console_serial,
            extra_args: vec![],
        };
        let outcome = boot(&cfg, &req).unwrap();
        let BootOutcome::Failed { reason, .. } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(reason.starts_with("console showed \"^=> \""), "{reason}");
        let log = std::fs::read_to_string(&req.log).unwrap();
        assert!(
            log.contains("Loading Environment from Flash... OK"),
            "{log}"
        );
        assert!(!log.contains("BOOTP broadcast"), "no network boot: {log}");
    }

    /// OVMF reads a FAT volume written by [`crate::fs::fat`] (whole-disk,
    /// no partition table) and its shell runs `startup.nsh` from it.
    #[test]
    fn ovmf_reads_a_kiln_fat_volume() {
        use crate::fs::fat;
        let Some((code, vars)) = x86_qemu_and_ovmf() else {
            return;
        };
        let spec = fat::FatSpec {
            size_bytes: 40 << 20,
            label: "KILN-ESP".into(),
            volume_id: 0x4b494c4e,
            fat32: true,
            mtime: 1_700_000_000,
        };
        let files = [
            fat::FatFile {
                path: "startup.nsh".into(),
                data: b"type fs0:\\EFI\\kiln\\hello.txt\r\nreset -s\r\n".to_vec(),
            },
            fat::FatFile {
                path: "EFI/kiln/hello.txt".into(),
                data: b"hello from a kiln FAT\r\n".to_vec(),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("esp.img");
        std::fs::write(&image, fat::build(&spec, &files).unwrap()).unwrap();
        let mut req = request(&image, &dir.path().join("console.log"));
        // The shell echoes each script line after a `Shell>` prompt.
        req.expect = vec!["hello from a kiln FAT".into()];
        req.fail_on = vec!["Cannot open".into(), "is not recognized".into()];
        req.timeout = Duration::from_secs(120);
        req.wait_exit = true;
        let cfg = QemuConfig {
            memory_mib: 256,
            smp: 1,
            ..x86(&code.to_string_lossy(), &vars.to_string_lossy())
        };
        let outcome = boot(&cfg, &req).unwrap();
        assert!(matches!(outcome, BootOutcome::Ready { .. }), "{outcome:?}");
    }

    /// Real data end to end: a Debian kernel boots an initramfs built by
    /// [`crate::initramfs`] (module closure of DESIGN.md's x86 set), and
    /// `kiln-init` loads every module in order without a warning.
    /// `KILN_TEST_KERNEL=<vmlinuz>`, `KILN_TEST_KERNEL_MODULES=<.../lib/modules/KVER>`,
    /// `KILN_TEST_INIT=<static kiln-init>`.
    #[test]
    #[ignore = "needs a Debian kernel and a static kiln-init; set KILN_TEST_KERNEL, KILN_TEST_KERNEL_MODULES, KILN_TEST_INIT"]
    fn debian_kernel_loads_the_initramfs_modules() {
        use crate::initramfs;
        let var = |v: &str| PathBuf::from(std::env::var(v).unwrap_or_else(|_| panic!("set {v}")));
        let (kernel, moddir, init) = (
            var("KILN_TEST_KERNEL"),
            var("KILN_TEST_KERNEL_MODULES"),
            var("KILN_TEST_INIT"),
        );
        let kver = moddir.file_name().unwrap().to_string_lossy().into_owned();
        let files = initramfs::real_kernel::module_tree(&moddir);
        let builtin = initramfs::parse_builtin(&String::from_utf8_lossy(&files["modules.builtin"]));
        let wanted: Vec<String> = initramfs::real_kernel::QEMU_X86_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let order = initramfs::index_modules(&files)
            .unwrap()
            .closure(&wanted, &builtin)
            .unwrap();
        let input = initramfs::InitramfsInput {
            init: std::fs::read(&init).unwrap(),
            modules: initramfs::module_files(&kver, &order, &files).unwrap(),
            mtime: 1_700_000_000,
        };
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, initramfs::build(&input).unwrap()).unwrap();
        let image = dir.path().join("empty.img");
        File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let cfg = QemuConfig {
            firmware: Firmware::Kernel {
                kernel,
                initrd: Some(initrd),
                dtb: None,
                append: "console=ttyS0 panic=-1".into(),
            },
            ..x86("", "")
        };
        let mut req = request(&image, &dir.path().join("console.log"));
        req.expect = vec![format!(
            "kiln-init: loaded {} modules (0 already loaded, 0 failed)",
            order.len()
        )];
        req.fail_on = vec![
            "Kernel panic".into(),
            "WARNING: module".into(),
            "WARNING: loading module".into(),
        ];
        req.timeout = Duration::from_secs(120);
        let outcome = boot(&cfg, &req).unwrap();
        assert!(matches!(outcome, BootOutcome::Ready { .. }), "{outcome:?}");
        eprintln!("{outcome:?}");
    }
}
