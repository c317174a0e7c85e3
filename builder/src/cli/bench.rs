use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bench::{self, BenchOptions};
use crate::plan::{BuildArgs, BuildPlan};

/// Measure build speed, image size and boot time, optionally against the
/// peer pipelines (mmdebstrap, mkosi).
///
/// Each run builds warm (packages cached, every stage rebuilt) and
/// incremental (one overlay file changed, unchanged stages reused), and
/// cold unless --no-cold (empty package cache: downloads everything);
/// compresses the image (xz, zstd); boots it to `kiln: node ready` and reads
/// the node's own clock and idle memory from its console. With --peer, also
/// times `mmdebstrap --variant=minbase` and `mkosi` with the same packages
/// plus `mksquashfs` (zstd), boots the mmdebstrap root to
/// multi-user.target under the same QEMU machine, and prints the ratios.
/// Prints the median, min and max of N runs; nothing is judged.
#[derive(Debug, clap::Args)]
pub struct BenchCmd {
    /// Image spec (YAML); without it, --board's default image.
    pub spec: Option<PathBuf>,
    /// Board (default: the spec's, else qemu-x86_64).
    #[arg(long)]
    pub board: Option<String>,
    /// Number of runs; figures are the median with min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also time the peer pipelines (needs mmdebstrap, mkosi, mksquashfs and
    /// root; mmdebstrap alone also works with user namespaces).
    #[arg(long)]
    pub peer: bool,
    /// Skip the cold build (it downloads every package each run).
    #[arg(long)]
    pub no_cold: bool,
    /// Skip the boots.
    #[arg(long)]
    pub no_boot: bool,
    /// Skip writing the .img.xz and .img.zst copies.
    #[arg(long)]
    pub no_compress: bool,
    /// Seconds to wait for each boot.
    #[arg(long, default_value_t = 600)]
    pub boot_timeout: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Scratch directory (images, peer roots, cold caches).
    #[arg(long, default_value = "out/bench")]
    pub work_dir: PathBuf,
}

impl BenchCmd {
    pub fn run(self) -> Result<()> {
        let board = match (&self.spec, &self.board) {
            (None, None) => Some("qemu-x86_64".to_string()),
            (_, b) => b.clone(),
        };
        let plan = BuildPlan::resolve(&BuildArgs {
            spec: self.spec,
            board,
            out_dir: self.work_dir.join("out"),
            ..BuildArgs::default()
        })?;
        let report = bench::run(
            &plan,
            &BenchOptions {
                runs: self.runs,
                cold: !self.no_cold,
                boot: !self.no_boot,
                compress: !self.no_compress,
                peer: self.peer,
                work_dir: self.work_dir,
                boot_timeout: Duration::from_secs(self.boot_timeout),
            },
        )?;
        print!("{}", bench::table(&report));
        if let Some(path) = self.json {
            std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
