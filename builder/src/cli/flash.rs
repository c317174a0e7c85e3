use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::flash::{self, MapChoice, Request};
use crate::progress::mib;

/// Write an image to an SD card or USB disk, and read it back.
///
/// Takes `.img`, `.img.xz` or `.img.zst` as `kiln build` writes them and
/// writes only the blocks the `.bmap` next to the image maps. The first MiB
/// is written last, then everything is synced and read back from the
/// device; a failed write leaves a card that does not boot.
///
/// Refuses the disk that holds the running system, a disk with a mounted,
/// swap or otherwise used partition, a disk smaller than the image, and
/// (without --force) a disk that is not removable. Asks before writing
/// unless --yes. DEVICE may also be an existing regular file (a disk image
/// made with `truncate -s 2G card.img`).
///
/// Example: kiln flash out/kiln-rpi.img.xz /dev/sdb
#[derive(Debug, clap::Args)]
pub struct FlashCmd {
    /// The image: raw, .xz or .zst.
    pub image: PathBuf,
    /// The whole disk to write (/dev/sdb, /dev/mmcblk0), or an existing
    /// file.
    pub device: PathBuf,
    /// Block map to use (default: IMAGE.bmap, or the .bmap of the raw
    /// image's name next to a compressed one).
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Write every byte of the image, ignoring any block map.
    #[arg(long)]
    pub no_bmap: bool,
    /// Do not ask before writing.
    #[arg(short, long)]
    pub yes: bool,
    /// Write to a disk that is not removable (still never the running
    /// system's disk or one in use).
    #[arg(long)]
    pub force: bool,
}

impl FlashCmd {
    pub fn run(self) -> Result<()> {
        let req = Request {
            image: self.image,
            target: self.device,
            map: match (self.bmap, self.no_bmap) {
                (Some(p), _) => MapChoice::File(p),
                (None, true) => MapChoice::None,
                (None, false) => MapChoice::Beside,
            },
            force: self.force,
        };
        let (image, target) = flash::prepare(&req, Path::new("/"))?;
        let what = match &image.map {
            Some((p, m)) => format!(
                "{} of {} (as {} maps it)",
                mib(m.mapped_bytes()),
                mib(image.size),
                p.display()
            ),
            None => format!("{} (every byte)", mib(image.size)),
        };
        eprintln!(
            "kiln: about to write {} to {}: {what}",
            image.path.display(),
            target.describe()
        );
        if !self.yes && !confirmed(&target.path)? {
            bail!("nothing was written");
        }
        let report = flash::flash(image, target, &mut flash::write::Lines::new())?;
        let secs = report.write_time.as_secs_f64().max(0.001);
        eprintln!(
            "kiln: flashed {} to {}: {} of the {} image written in {:.1} s ({:.1} MB/s), \
             read back and verified in {:.1} s",
            report.image.path.display(),
            report.target.path.display(),
            mib(report.written),
            mib(report.image.size),
            secs,
            report.written as f64 / secs / 1e6,
            report.verify_time.as_secs_f64()
        );
        println!("{}", report.target.path.display());
        Ok(())
    }
}

/// Asks on the terminal; without one, says how to go on.
fn confirmed(target: &Path) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "not writing {}: there is no terminal to confirm on; pass --yes to write \
             without asking",
            target.display()
        );
    }
    eprint!(
        "Everything on {} will be lost. Type yes to write: ",
        target.display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
