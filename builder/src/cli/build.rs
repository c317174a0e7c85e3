use std::path::PathBuf;

use anyhow::Result;

use crate::build::{build, summary};
use crate::output::Format;
use crate::plan::{BuildArgs, BuildPlan};

/// Build a disk image from a spec (or from a board's defaults).
///
/// Writes `OUT/<name>.img`, a raw disk ready for `kiln boot`, dd or a
/// hypervisor, and the board's other outputs (vmware-ova: `<name>.ova`). Packages come from Debian through the host's apt and are
/// cached in ~/.cache/kiln (KILN_CACHE_DIR overrides). Builds are
/// reproducible: the same spec and package versions give the same bytes.
#[derive(Debug, clap::Args)]
pub struct BuildCmd {
    /// Image spec (YAML). Without it, --board builds that board's default
    /// image with the k3s test double.
    pub spec: Option<PathBuf>,
    /// Board to build for (overrides the spec's `board`).
    #[arg(long)]
    pub board: Option<String>,
    /// Directory for the outputs.
    #[arg(long, short, default_value = "out")]
    pub out: PathBuf,
    /// Refresh the package lists even if the cached ones are recent.
    #[arg(long)]
    pub refresh: bool,
    /// Also write OUT/<name>-installer.img: a USB stick that installs the
    /// image onto the machine's disk (UEFI boards; the spec's `install:`
    /// sets the target rules).
    #[arg(long)]
    pub installer: bool,
    /// What to write besides the raw image (repeatable): `ova` (vSphere),
    /// `ovf` (the same unpacked: .ovf, .mf, .vmdk), `xz`, `zst`, `bmap`,
    /// `sha256`, `pi-imager` (a Raspberry Pi Imager repository JSON), `img`
    /// (the raw image only). Default: the board's `outputs:`.
    #[arg(long = "format", value_enum)]
    pub formats: Vec<Format>,
    /// Where you will publish the image, for the Raspberry Pi Imager
    /// repository JSON (`--format pi-imager`, on by default for Pi boards):
    /// the JSON names URL/<file>. Default: a file:// URL of OUT.
    #[arg(long, value_name = "URL")]
    pub imager_url: Option<String>,
    /// Rebuild every stage instead of reusing outputs of earlier builds
    /// whose inputs are unchanged (kept in the cache dir's `stages/`).
    #[arg(long)]
    pub no_cache: bool,
}

impl BuildCmd {
    pub fn run(self) -> Result<()> {
        let plan = BuildPlan::resolve(&BuildArgs {
            spec: self.spec,
            board: self.board,
            out_dir: self.out,
            refresh_packages: self.refresh,
            installer: self.installer,
            formats: self.formats,
            no_stage_cache: self.no_cache,
            imager_url: self.imager_url,
        })?;
        let report = build(&plan)?;
        eprint!("{}", summary(&report));
        println!("{}", report.image.display());
        if let Some(installer) = &report.installer {
            println!("{}", installer.display());
        }
        Ok(())
    }
}
