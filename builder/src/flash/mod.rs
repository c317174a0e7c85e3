//! `kiln flash`: an image onto an SD card or USB disk, safely.
//!
//! - [`source`]: the image (raw, `.xz`, `.zst`) and its block map;
//! - [`target`]: what the target is and whether it may be written (never
//!   the running system's disk or a disk in use; a fixed disk only with
//!   `--force`; never one smaller than the image);
//! - [`write`]: the write (the map's ranges only, the first MiB last, each
//!   range's checksum checked), the sync, and the read-back.
//!
//! A failure once writing began zeroes the first MiB: a half-written card
//! must not boot, nor pass for the card it was before.

pub mod source;
pub mod target;
pub mod write;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use source::{Image, MapChoice};
pub use target::Target;

/// What to flash where.
#[derive(Debug, Clone)]
pub struct Request {
    pub image: PathBuf,
    pub target: PathBuf,
    pub map: MapChoice,
    /// Write to a disk that is not removable.
    pub force: bool,
}

/// What a flash did, for the summary.
#[derive(Debug)]
pub struct Report {
    pub image: Image,
    pub target: Target,
    pub written: u64,
    pub write_time: Duration,
    pub verify_time: Duration,
}

/// Everything before the first byte is written: the image, the target,
/// and the checks. `root` is `/` (tests point it at a fake `/sys` and
/// `/proc`).
pub fn prepare(req: &Request, root: &Path) -> Result<(Image, Target)> {
    let image = Image::open(&req.image, &req.map)?;
    let target = target::inspect(&req.target, root)?;
    target::check(&target, image.size, req.force)?;
    Ok((image, target))
}

/// Writes and verifies. Call after [`prepare`] and the user's yes.
pub fn flash(image: Image, target: Target, progress: &mut dyn write::Progress) -> Result<Report> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if matches!(target.kind, target::Kind::Disk(_)) {
        // The kernel refuses an exclusive open of a disk while it or a
        // partition of it is mounted: nothing can mount it between the
        // check and the write.
        options.custom_flags(libc::O_EXCL);
    }
    let mut dst = options
        .open(&target.path)
        .with_context(|| format!("opening {} for writing", target.path.display()))?;
    let map = image.map.as_ref().map(|(_, m)| m);
    let mut src = image.reader()?;
    let started = Instant::now();
    let result =
        write::write_image(src.as_mut(), image.size, map, &mut dst, progress).and_then(|w| {
            let write_time = started.elapsed();
            let verifying = Instant::now();
            write::verify(&mut dst, image.size, map, &w, progress)?;
            Ok((w, write_time, verifying.elapsed()))
        });
    match result {
        Ok((w, write_time, verify_time)) => Ok(Report {
            image,
            target,
            written: w.bytes,
            write_time,
            verify_time,
        }),
        Err(e) => {
            let wiped = write::wipe_head(&mut dst, image.size);
            let note = match wiped {
                Ok(()) => "its first MiB was zeroed so it does not boot half-written; \
                           run kiln flash again"
                    .to_string(),
                Err(w) => format!(
                    "zeroing its first MiB failed too ({w}); do not boot it, run kiln flash again"
                ),
            };
            Err(e.context(format!("flashing {} failed; {note}", target.path.display())))
        }
    }
}
