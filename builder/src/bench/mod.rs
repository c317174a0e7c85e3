//! `kiln bench`: the figures users choose an image builder by, measured in
//! one run on one machine, with the peer pipelines a user would otherwise
//! script ([`peer`]) timed alongside, so the ratios mean something on a
//! noisy shared machine where absolute times do not.
//!
//! Every figure is the median of N runs with min and max. Nothing here
//! decides pass or fail: the table says what was measured, the targets
//! live in BENCHMARKS.md.

pub mod peer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::build::{self, BuildReport};
use crate::output::compress::Compression;
use crate::plan::BuildPlan;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: usize,
    /// Build with an empty package cache (downloads everything).
    pub cold: bool,
    /// Boot the image to `kiln: node ready`.
    pub boot: bool,
    /// Write and time the `.img.xz` and `.img.zst` copies.
    pub compress: bool,
    /// Time the peer pipelines too (needs root or user namespaces).
    pub peer: bool,
    /// Scratch space: images, peer roots, cold caches.
    pub work_dir: PathBuf,
    pub boot_timeout: Duration,
}

/// One measured quantity over the runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    pub group: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct BenchReport {
    pub machine: String,
    pub board: String,
    pub image: String,
    pub kiln_version: String,
    pub runs: usize,
    pub figures: Vec<Figure>,
    /// What was skipped or could not be measured, and why.
    pub notes: Vec<String>,
}

impl BenchReport {
    /// Adds a sample to the figure `group`/`name`, creating it on first use
    /// so the table keeps the order figures were first measured in.
    pub fn record(&mut self, group: &'static str, name: &str, unit: &'static str, value: f64) {
        match self
            .figures
            .iter_mut()
            .find(|f| f.group == group && f.name == name)
        {
            Some(f) => f.samples.push(value),
            None => self.figures.push(Figure {
                group,
                name: name.to_string(),
                unit,
                samples: vec![value],
            }),
        }
    }

    pub fn figure(&self, group: &str, name: &str) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|f| f.group == group && f.name == name)
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        log::warn!("{text}");
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

/// Runs the benchmark for `plan` (the spec and board as `kiln build` would
/// build them).
pub fn run(plan: &BuildPlan, opts: &BenchOptions) -> Result<BenchReport> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let mut report = BenchReport {
        machine: machine_description(),
        board: plan.board.name.clone(),
        image: plan.name.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        runs: opts.runs,
        ..BenchReport::default()
    };
    // Every build carries a bench overlay, so an incremental build differs
    // from the cached one by one file and nothing else.
    let overlay = opts.work_dir.join("bench-overlay");
    let stamp = overlay.join("etc/kiln-bench/stamp");
    std::fs::create_dir_all(stamp.parent().expect("has a parent"))?;
    std::fs::write(&stamp, "0\n")?;
    let mut plan = plan.clone();
    plan.out_dir = opts.work_dir.join("out");
    plan.overlays.push(overlay);

    // Untimed: the package cache and kiln's in-image binaries are brought
    // up to date first, so no timed build pays for a source change.
    log::info!("bench: priming the package cache and the in-image binaries (not timed)");
    build::build(&plan)?;
    for i in 0..opts.runs {
        log::info!("bench run {} of {}", i + 1, opts.runs);
        if opts.cold {
            cold_build(&plan, &opts.work_dir.join("cold-cache"), &mut report)?;
        }
        let warm = timed_build(&BuildPlan {
            stage_cache: false,
            ..plan.clone()
        })?;
        record_build(&mut report, "warm build", &warm);
        // Fill the stage cache (untimed), then change one overlay file.
        build::build(&plan)?;
        std::fs::write(&stamp, format!("{}\n", i + 1))?;
        let incremental = timed_build(&plan)?;
        if incremental.0.cached_stages.is_empty() {
            report.note("the incremental build reused no stage: is the cache dir writable?");
        }
        record_build(&mut report, "incremental build", &incremental);
        record_sizes(&mut report, &warm.0);
        if opts.compress {
            record_compression(&mut report, &warm.0)?;
        }
        if opts.boot {
            boot(&plan, &opts.work_dir, opts.boot_timeout, &mut report)?;
        }
    }
    if opts.peer {
        peer::run(&plan, opts, &mut report)?;
    }
    record_ratios(&mut report);
    Ok(report)
}

fn timed_build(plan: &BuildPlan) -> Result<(BuildReport, f64)> {
    let start = Instant::now();
    let report = build::build(plan)?;
    Ok((report, start.elapsed().as_secs_f64()))
}

fn record_build(report: &mut BenchReport, group: &'static str, (build, secs): &(BuildReport, f64)) {
    report.record(group, "total", "s", *secs);
    for (stage, took) in &build.stages {
        report.record(group, stage, "s", took.as_secs_f64());
    }
}

/// A build against an empty cache: everything downloaded, nothing reused.
fn cold_build(plan: &BuildPlan, cache: &Path, report: &mut BenchReport) -> Result<()> {
    let _ = std::fs::remove_dir_all(cache);
    let cold = timed_build(&BuildPlan {
        cache_dir: cache.to_path_buf(),
        ..plan.clone()
    })?;
    record_build(report, "cold build", &cold);
    let fetched = dir_bytes(&cache.join("apt"));
    report.record("cold build", "fetched", "MB", fetched as f64 / 1e6);
    let _ = std::fs::remove_dir_all(cache);
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn record_sizes(report: &mut BenchReport, build: &BuildReport) {
    report.record("image", "raw", "MiB", mib(build.image_bytes));
    report.record(
        "image",
        "allocated (sparse)",
        "MiB",
        mib(build.image_allocated_bytes),
    );
    report.record("image", "root squashfs", "MiB", mib(build.root_bytes));
    // The base OS figure: the root's files without the k3s binary
    // (uncompressed; the squashfs above includes k3s, compressed).
    report.record(
        "image",
        "root files without k3s (uncompressed)",
        "MiB",
        mib(build.root_content_bytes - build.k3s_bytes),
    );
    report.record("image", "k3s binary", "MiB", mib(build.k3s_bytes));
    report.record("image", "initramfs", "MiB", mib(build.initramfs_bytes));
}

fn record_compression(report: &mut BenchReport, build: &BuildReport) -> Result<()> {
    for c in [Compression::Xz, Compression::Zstd] {
        let out = build.image.with_extension(format!("img.{}", c.extension()));
        let start = Instant::now();
        let written = c.write(&build.image, &out)?;
        report.record(
            "compress",
            &format!(".img.{}", c.extension()),
            "s",
            start.elapsed().as_secs_f64(),
        );
        report.record(
            "image",
            &format!(".img.{}", c.extension()),
            "MiB",
            mib(written.bytes),
        );
        let _ = std::fs::remove_file(out);
    }
    Ok(())
}

/// Boots a copy of the image with `kiln boot` (the same path users take)
/// and reads the node's own figures from its console.
fn boot(plan: &BuildPlan, work: &Path, timeout: Duration, report: &mut BenchReport) -> Result<()> {
    if plan.board.qemu.is_none() {
        report.note(format!(
            "board {} has no QEMU machine: boot not measured",
            plan.board.name
        ));
        return Ok(());
    }
    let image = work.join("boot.img");
    let log = work.join("boot.console.log");
    copy_sparse(&plan.image_path(), &image)?;
    copy_sparse(
        &plan.image_path().with_extension("json"),
        &image.with_extension("json"),
    )?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("boot").arg(&image);
    if plan.baked_node.is_none() {
        let node = work.join("bench-node.yaml");
        std::fs::write(&node, BENCH_NODE)?;
        cmd.arg("--node").arg(node);
    }
    cmd.args(["--no-echo", "--timeout", &timeout.as_secs().to_string()])
        .arg("--log")
        .arg(&log);
    // The node prints its figures before the ready line, and `kiln boot`
    // stops the guest on the expected text: expecting only the last line
    // keeps the others whole in the log.
    cmd.args(["--expect", READY]);
    let out = cmd.output().context("running kiln boot")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the benchmark boot failed:\n{stderr}");
    }
    let console = std::fs::read_to_string(&log)?;
    let figures = parse_boot(&stderr, &console)
        .with_context(|| format!("reading the boot figures from {}", log.display()))?;
    report.record("boot", "power-on to node ready (wall)", "s", figures.wall);
    report.record(
        "boot",
        "kernel to node ready (guest clock)",
        "s",
        figures.guest,
    );
    report.record(
        "node",
        "memory in use before k3s",
        "MiB",
        figures.memory_mib,
    );
    let _ = std::fs::remove_file(&image);
    Ok(())
}

/// The node the benchmark boots when the spec bakes none: a first server,
/// the role that does the most before ready.
const BENCH_NODE: &str = "role: server\ncluster-init: true\nhostname: kiln-bench\n";

const READY: &str = "kiln: node ready";
const MEMORY: &str = "kiln: memory in use before k3s:";
const UPTIME: &str = "kiln: guest uptime at ready:";
const USED_SUFFIX: &str = " MiB used as free(1) counts it";

#[derive(Debug, PartialEq)]
pub struct BootFigures {
    pub wall: f64,
    pub guest: f64,
    /// MemTotal - MemAvailable.
    pub memory_mib: f64,
    /// MemTotal - MemFree - Buffers - Cached - SReclaimable.
    pub used_mib: f64,
}

/// `kiln boot`'s summary line and the console lines kiln-firstboot prints.
pub fn parse_boot(boot_stderr: &str, console: &str) -> Option<BootFigures> {
    let wall = boot_stderr
        .split("seen after ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let value_after = |marker: &str| -> Option<f64> {
        let line = console.lines().find(|l| l.contains(marker))?;
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let memory_line = console.lines().find(|l| l.contains(MEMORY))?;
    let used_mib = memory_line
        .split(USED_SUFFIX)
        .next()
        .filter(|head| head.len() < memory_line.len())?
        .split_whitespace()
        .last()?
        .parse()
        .ok()?;
    Some(BootFigures {
        wall,
        guest: value_after(UPTIME)?,
        memory_mib: value_after(MEMORY)?,
        used_mib,
    })
}

/// kiln's time against the faster peer's, for each figure both have.
fn record_ratios(report: &mut BenchReport) {
    let median = |g: &str, n: &str| report.figure(g, n).map(Figure::median);
    let mut ratios = Vec::new();
    if let (Some(kiln), Some(peer)) = (
        median("warm build", "total"),
        peer::fastest(report, peer::PIPELINE_TOTAL),
    ) {
        ratios.push(("warm build: fastest peer / kiln", peer.0 / kiln));
    }
    if let (Some(kiln), Some(peer)) = (
        median("boot", "power-on to node ready (wall)"),
        median("peer boot", peer::PEER_BOOT),
    ) {
        ratios.push(("boot: peer / kiln", peer / kiln));
    }
    for (name, value) in ratios {
        report.record("ratio", name, "x", value);
    }
}

pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

/// CPU model, cores and memory: the table is meaningless without them.
fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM")
}

/// The table `kiln bench` prints.
pub fn table(report: &BenchReport) -> String {
    let mut s = format!(
        "kiln bench: board {}, image {}, kiln {}, {} run(s)\nmachine: {}\n\n",
        report.board, report.image, report.kiln_version, report.runs, report.machine
    );
    s.push_str(&format!(
        "{:<18} {:<42} {:>9} {:>9} {:>9}  unit\n",
        "group", "figure", "median", "min", "max"
    ));
    for f in &report.figures {
        s.push_str(&format!(
            "{:<18} {:<42} {:>9.2} {:>9.2} {:>9.2}  {}\n",
            f.group,
            f.name,
            f.median(),
            f.min(),
            f.max(),
            f.unit
        ));
    }
    for n in &report.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let mut r = BenchReport::default();
        for v in [3.0, 1.0, 2.0, 10.0] {
            r.record("g", "f", "s", v);
        }
        let f = r.figure("g", "f").unwrap();
        assert_eq!((f.median(), f.min(), f.max()), (2.5, 1.0, 10.0));
        r.record("g", "odd", "s", 5.0);
        assert_eq!(r.figure("g", "odd").unwrap().median(), 5.0);
    }

    #[test]
    fn boot_figures_come_from_kiln_boot_and_the_console() {
        let stderr = "kiln: boot ok: every expected line seen after 23.4 s\n";
        let console = "[  OK  ] Started k3s\n\
                       x kiln: memory in use before k3s: 141 MiB (MemTotal-MemAvailable); \
                       43 MiB used as free(1) counts it (processes 14, ...)\n\
                       kiln: node ready role=server\n\
                       kiln: guest uptime at ready: 12.75 s\n";
        assert_eq!(
            parse_boot(stderr, console),
            Some(BootFigures {
                wall: 23.4,
                guest: 12.75,
                memory_mib: 141.0,
                used_mib: 43.0,
            })
        );
        assert_eq!(parse_boot("kiln: boot failed", console), None);
        assert_eq!(parse_boot(stderr, "kiln: node ready role=server\n"), None);
    }

    #[test]
    fn table_shows_every_figure_and_note() {
        let mut r = BenchReport {
            board: "qemu-x86_64".into(),
            runs: 1,
            ..BenchReport::default()
        };
        r.record("warm build", "total", "s", 7.25);
        r.note("peer skipped: not root");
        let t = table(&r);
        assert!(t.contains("warm build"), "{t}");
        assert!(t.contains("7.25"), "{t}");
        assert!(t.contains("note: peer skipped: not root"), "{t}");
    }
}
