//! The peer pipelines: what a user would script with Debian's own tools to
//! get a root filesystem with the same packages kiln's image has, then a
//! squashfs of it with the same compressor. `mmdebstrap --variant=minbase`
//! and `mkosi` (bookworm's mkosi 14, directory output), each with a
//! persistent package cache so their "warm" matches kiln's. The
//! mmdebstrap root is also booted (Debian's own kernel and initramfs,
//! ext4 root) under the same QEMU machine to `multi-user.target`.
//!
//! Both need root (mmdebstrap can use user namespaces instead; mkosi 14
//! cannot): without them the figures are skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{mib, BenchOptions, BenchReport};
use crate::packages::{self, which};
use crate::plan::BuildPlan;
use crate::qemu::{self, BootOutcome, BootRequest, Firmware, QemuConfig};

/// The figure each peer group holds its whole pipeline time in.
pub const PIPELINE_TOTAL: &str = "pipeline total (root + squashfs)";
/// What systemd prints on reaching multi-user.target, after the unit name
/// it may colour (`Reached target multi-user.target - Multi-User System.`).
const MULTI_USER_REACHED: &str = " - Multi-User System.";
/// The peer boot figure.
pub const PEER_BOOT: &str = "power-on to multi-user.target (wall)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Mmdebstrap,
    Mkosi,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Mmdebstrap => "mmdebstrap",
            Tool::Mkosi => "mkosi",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Tool::Mmdebstrap => "peer mmdebstrap",
            Tool::Mkosi => "peer mkosi",
        }
    }
}

/// The faster peer's pipeline time (median) and its group.
pub fn fastest(report: &BenchReport, figure: &str) -> Option<(f64, &'static str)> {
    [Tool::Mmdebstrap, Tool::Mkosi]
        .into_iter()
        .filter_map(|t| Some((report.figure(t.group(), figure)?.median(), t.group())))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

pub fn run(plan: &BuildPlan, opts: &BenchOptions, report: &mut BenchReport) -> Result<()> {
    let sources = packages::sources_for(
        &plan.board.suite,
        plan.mirror.as_deref(),
        &plan.board.components,
    )?;
    let mut wanted = plan.packages.clone();
    // A board whose kernel the spec supplies has no package to compare.
    wanted.extend(plan.board.kernel.package.clone());
    let is_root = packages::running_as_root();
    if which("mksquashfs").is_err() {
        report.note("peer pipelines skipped: mksquashfs not found (install squashfs-tools; scripts/setup-host.sh does)");
        return Ok(());
    }
    for tool in [Tool::Mmdebstrap, Tool::Mkosi] {
        if which(tool.name()).is_err() {
            report.note(format!(
                "peer {} skipped: not installed (scripts/setup-host.sh installs it)",
                tool.name()
            ));
            continue;
        }
        if tool == Tool::Mkosi && !is_root {
            report.note("peer mkosi skipped: mkosi 14 needs root");
            continue;
        }
        let dir = opts.work_dir.join(format!("peer-{}", tool.name()));
        let cache = plan.cache_dir.join("bench").join(format!(
            "{}-{}-{}",
            tool.name(),
            plan.board.suite,
            plan.board.arch.debian()
        ));
        let job = PeerJob {
            tool,
            suite: &plan.board.suite,
            arch: plan.board.arch.debian(),
            packages: &wanted,
            sources: &sources,
            cache: &cache,
            root: dir.join("root"),
            unshare: !is_root,
        };
        std::fs::create_dir_all(&cache)?;
        if super::dir_bytes(&cache) == 0 {
            log::info!("priming the {} package cache (not timed)", tool.name());
            job.make_root()?;
            report.note(format!(
                "peer {} package cache primed by an untimed first run",
                tool.name()
            ));
        }
        for _ in 0..opts.runs {
            let start = Instant::now();
            job.make_root()?;
            let root_secs = start.elapsed().as_secs_f64();
            let squashfs = dir.join("root.squashfs");
            let start = Instant::now();
            mksquashfs(&job.root, &squashfs)?;
            let squash_secs = start.elapsed().as_secs_f64();
            let group = tool.group();
            report.record(group, "root filesystem", "s", root_secs);
            report.record(group, "squashfs (zstd)", "s", squash_secs);
            report.record(group, PIPELINE_TOTAL, "s", root_secs + squash_secs);
            report.record(group, "root files", "MiB", mib(super::dir_bytes(&job.root)));
            report.record(
                group,
                "root squashfs",
                "MiB",
                mib(std::fs::metadata(&squashfs)?.len()),
            );
            let _ = std::fs::remove_file(&squashfs);
        }
        if tool == Tool::Mmdebstrap && opts.boot {
            for _ in 0..opts.runs {
                boot_peer_root(plan, &job.root, &dir, opts.boot_timeout, report)?;
            }
        }
        remove_root(&job.root);
    }
    Ok(())
}

struct PeerJob<'a> {
    tool: Tool,
    suite: &'a str,
    arch: &'a str,
    packages: &'a [String],
    sources: &'a [packages::Source],
    cache: &'a Path,
    root: PathBuf,
    unshare: bool,
}

impl PeerJob<'_> {
    fn make_root(&self) -> Result<()> {
        remove_root(&self.root);
        std::fs::create_dir_all(self.root.parent().expect("has a parent"))?;
        let mut cmd = match self.tool {
            Tool::Mmdebstrap => self.mmdebstrap(),
            Tool::Mkosi => self.mkosi()?,
        };
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.tool.name()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "{} failed:\n{}",
                self.tool.name(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    fn mmdebstrap(&self) -> Command {
        let cache = self.cache.display();
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--variant=minbase")
            .arg(format!(
                "--mode={}",
                if self.unshare { "unshare" } else { "root" }
            ))
            .arg(format!("--architectures={}", self.arch))
            .arg(format!("--include={}", self.packages.join(",")))
            .arg("--aptopt=Acquire::Languages \"none\"")
            // The package cache lives outside the root between runs.
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
            .arg(format!(
                "--setup-hook=sync-in {cache} /var/cache/apt/archives/"
            ))
            .arg(format!(
                "--customize-hook=sync-out /var/cache/apt/archives {cache}"
            ))
            .arg(self.suite)
            .arg(&self.root);
        for s in self.sources {
            cmd.arg(s.deb_line(self.arch));
        }
        cmd
    }

    fn mkosi(&self) -> Result<Command> {
        let Some(mirror) = self.sources.first().map(|s| s.uri.clone()) else {
            bail!("no apt source to give mkosi");
        };
        let mut cmd = Command::new("mkosi");
        cmd.current_dir(self.root.parent().expect("has a parent"))
            .args(["--distribution", "debian", "--release", self.suite])
            .args(["--mirror", &mirror])
            .args(["--format", "directory", "--with-docs=no", "--force"])
            // systemd-nspawn cannot register a scope without a running
            // systemd (containers, CI): keep it in the caller's unit.
            .arg("--nspawn-keep-unit")
            .arg("--cache")
            .arg(self.cache)
            .arg("--output")
            .arg(&self.root)
            .args(["--package", &self.packages.join(",")])
            .arg("build");
        Ok(cmd)
    }
}

fn mksquashfs(root: &Path, out: &Path) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let status = Command::new("mksquashfs")
        .arg(root)
        .arg(out)
        .args(["-comp", "zstd", "-noappend", "-quiet", "-no-progress"])
        .args(["-processors", &threads.to_string()])
        .status()
        .context("running mksquashfs")?;
    if !status.success() {
        bail!("mksquashfs of {} failed", root.display());
    }
    Ok(())
}

/// Boots the peer root the way its own tools make it bootable: Debian's
/// kernel and initramfs-tools initrd, the root as an ext4 disk. QEMU
/// loads the kernel directly (no firmware), which favours the peer.
fn boot_peer_root(
    plan: &BuildPlan,
    root: &Path,
    dir: &Path,
    timeout: Duration,
    report: &mut BenchReport,
) -> Result<()> {
    let Some(q) = &plan.board.qemu else {
        return Ok(());
    };
    let boot = root.join("boot");
    let find = |prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(&boot)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
    };
    let (Some(kernel), Some(initrd)) = (find("vmlinuz-"), find("initrd.img-")) else {
        report.note("peer boot skipped: the mmdebstrap root has no kernel and initrd in /boot");
        return Ok(());
    };
    // Outside the root, so the image does not contain itself.
    let (kernel_copy, initrd_copy) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    std::fs::copy(&kernel, &kernel_copy)?;
    std::fs::copy(&initrd, &initrd_copy)?;
    let disk = dir.join("root.ext4");
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(root)
        .arg(&disk)
        .arg("2G")
        .status()
        .context("running mke2fs")?;
    if !status.success() {
        bail!("mke2fs of the peer root failed");
    }
    let firmware = Firmware::Kernel {
        kernel: kernel_copy,
        initrd: Some(initrd_copy),
        dtb: None,
        append: format!("{} root=/dev/vda rw", plan.board.kernel.cmdline),
    };
    // No NIC: the peer's network would only wait for DHCP.
    let cfg = QemuConfig {
        net_device: None,
        ..QemuConfig::for_board(q, firmware)
    };
    let req = BootRequest {
        image: disk.clone(),
        node_config: None,
        nic: Default::default(),
        cdrom: None,
        expect: vec![MULTI_USER_REACHED.into()],
        fail_on: vec!["Kernel panic".into()],
        timeout,
        log: dir.join("boot.console.log"),
        wait_exit: false,
        verbose: false,
        notes: vec![],
    };
    match qemu::boot(&cfg, &req)? {
        BootOutcome::Ready { seconds, .. } => {
            report.record("peer boot", PEER_BOOT, "s", seconds);
        }
        BootOutcome::Failed { reason, .. } => report.note(format!(
            "peer boot failed ({reason}); console log: {}",
            req.log.display()
        )),
        BootOutcome::TimedOut { missing, .. } => report.note(format!(
            "peer boot timed out waiting for {missing:?}; console log: {}",
            req.log.display()
        )),
    }
    let _ = std::fs::remove_file(&disk);
    Ok(())
}

fn remove_root(root: &Path) {
    if root.exists() {
        let _ = std::fs::remove_dir_all(root);
    }
}
