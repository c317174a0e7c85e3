//! Writing the image, then reading it back.
//!
//! The image is read once, front to back (it may be a decompressing
//! stream). Only the block map's ranges are written when there is a map;
//! their checksums are checked as the bytes pass, so a map that does not
//! belong to the image stops the write. The first MiB (the partition table
//! and boot sector) is held back and written last: a write cut short
//! leaves a card that does not boot rather than one that boots half an
//! image. Then everything is synced, dropped from the page cache and read
//! back from the device, and its sha256 compared with what was written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::output::bmap::BlockMap;
use crate::packages::hex;

/// What is held back and written last.
pub const HEAD: u64 = 1 << 20;
const CHUNK: usize = 1 << 20;

/// Bytes done so far, for a progress line.
pub trait Progress {
    fn update(&mut self, phase: &str, done: u64, total: u64);
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes written to the target.
    pub bytes: u64,
    /// sha256 over the written ranges, in order.
    pub sha256: [u8; 32],
}

/// The byte ranges to write: the map's, or the whole image.
fn ranges(size: u64, map: Option<&BlockMap>) -> Vec<(std::ops::Range<u64>, Option<String>)> {
    match map {
        Some(m) => m
            .ranges
            .iter()
            .map(|(a, b, sum)| (m.byte_range(*a, *b), sum.clone()))
            .filter(|(r, _)| !r.is_empty())
            .collect(),
        None => vec![(0..size, None)],
    }
}

/// Writes `size` bytes read from `src` to `dst` (only the ranges of `map`
/// when given), the first MiB last, then syncs.
pub fn write_image(
    src: &mut dyn Read,
    size: u64,
    map: Option<&BlockMap>,
    dst: &mut File,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let todo = ranges(size, map);
    let total: u64 = todo.iter().map(|(r, _)| r.end - r.start).sum();
    let mut head = vec![0u8; HEAD.min(size) as usize];
    let mut head_parts: Vec<std::ops::Range<u64>> = Vec::new();
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut written = 0u64;
    for (range, sum) in &todo {
        // Skip what lies before the range; it is read, not written.
        skip(src, range.start - pos).with_context(|| format!("reading the image at byte {pos}"))?;
        pos = range.start;
        let mut range_hash = Sha256::new();
        while pos < range.end {
            let n = ((range.end - pos) as usize).min(CHUNK);
            src.read_exact(&mut buf[..n]).with_context(|| {
                format!("reading the image at byte {pos} (is it truncated or damaged?)")
            })?;
            let data = &buf[..n];
            range_hash.update(data);
            whole.update(data);
            // Split at HEAD: the part before it waits in `head`.
            let split = (HEAD.saturating_sub(pos) as usize).min(n);
            if split > 0 {
                head[pos as usize..pos as usize + split].copy_from_slice(&data[..split]);
                head_parts.push(pos..pos + split as u64);
            }
            if split < n {
                dst.seek(SeekFrom::Start(pos + split as u64))?;
                dst.write_all(&data[split..])
                    .with_context(|| format!("writing at byte {}", pos + split as u64))?;
            }
            pos += n as u64;
            written += n as u64;
            progress.update("writing", written, total);
        }
        if let Some(want) = sum {
            let got = hex(&range_hash.finalize());
            if &got != want {
                bail!(
                    "bytes {}..{} of the image do not match its block map (sha256 {got}, \
                     the map says {want}): the image or the map is damaged or they do not \
                     belong together; download both again, or pass --no-bmap",
                    range.start,
                    range.end
                );
            }
        }
    }
    // The rest of the stream must be there: a truncated download fails here.
    let rest = std::io::copy(src, &mut std::io::sink()).context("reading the image's end")?;
    if pos + rest != size {
        bail!(
            "the image holds {} bytes, {size} were expected: it is truncated or damaged",
            pos + rest
        );
    }
    dst.sync_all().context("syncing the written data")?;
    for part in &head_parts {
        dst.seek(SeekFrom::Start(part.start))?;
        dst.write_all(&head[part.start as usize..part.end as usize])
            .context("writing the first MiB")?;
    }
    dst.sync_all().context("syncing the first MiB")?;
    Ok(Written {
        bytes: written,
        sha256: whole.finalize().into(),
    })
}

fn skip(src: &mut dyn Read, n: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut src.take(n), &mut std::io::sink())?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads the written ranges back from the device (past the page cache)
/// and compares their sha256 with `written`.
pub fn verify(
    dst: &mut File,
    size: u64,
    map: Option<&BlockMap>,
    written: &Written,
    progress: &mut dyn Progress,
) -> Result<()> {
    drop_cache(dst);
    let todo = ranges(size, map);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    for (range, _) in &todo {
        dst.seek(SeekFrom::Start(range.start))?;
        let mut pos = range.start;
        while pos < range.end {
            let n = ((range.end - pos) as usize).min(CHUNK);
            dst.read_exact(&mut buf[..n])
                .with_context(|| format!("reading back byte {pos}"))?;
            hash.update(&buf[..n]);
            pos += n as u64;
            done += n as u64;
            progress.update("verifying", done, written.bytes);
        }
    }
    let got: [u8; 32] = hash.finalize().into();
    if got != written.sha256 {
        bail!(
            "what the target holds now differs from what was written (sha256 {} read back, \
             {} written): the card may be failing or fake; try another card",
            hex(&got),
            hex(&written.sha256)
        );
    }
    Ok(())
}

/// After a failed write: zero the first MiB so the half-written card is
/// not mistaken for a good one.
pub fn wipe_head(dst: &mut File, size: u64) -> Result<()> {
    dst.seek(SeekFrom::Start(0))?;
    dst.write_all(&vec![0u8; HEAD.min(size) as usize])?;
    dst.sync_all()?;
    Ok(())
}

/// Asks the kernel to forget the cached pages of `file`, so the next reads
/// come from the device (after `sync_all`, nothing dirty is lost).
fn drop_cache(file: &File) {
    // SAFETY: posix_fadvise only takes a valid fd and plain integers.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    // A block device's own cache too (the ioctl fails harmlessly on a file).
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe {
        libc::ioctl(file.as_raw_fd(), BLKFLSBUF as _, 0);
    }
}

/// `_IO(0x12, 97)`.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Progress on stderr, at most one line every two seconds per phase.
pub struct Lines {
    start: Instant,
    last: Option<Instant>,
    phase: String,
}

impl Lines {
    pub fn new() -> Lines {
        Lines {
            start: Instant::now(),
            last: None,
            phase: String::new(),
        }
    }
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new()
    }
}

impl Progress for Lines {
    fn update(&mut self, phase: &str, done: u64, total: u64) {
        if phase != self.phase {
            // The first line of a phase comes after two seconds, not at once.
            self.phase = phase.to_string();
            self.start = Instant::now();
            self.last = Some(self.start);
        }
        let now = Instant::now();
        let due = self.last.is_none_or(|t| now - t >= Duration::from_secs(2));
        if due || done == total {
            self.last = Some(now);
            let secs = (now - self.start).as_secs_f64().max(0.001);
            log::info!(
                "{phase}: {} of {} ({:.0} %), {:.1} MB/s",
                crate::progress::mib(done),
                crate::progress::mib(total),
                done as f64 * 100.0 / total.max(1) as f64,
                done as f64 / secs / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Progress for Quiet {
        fn update(&mut self, _: &str, _: u64, _: u64) {}
    }

    /// 3 MiB: data in the first MiB, a hole, data at 2 MiB + 5.
    fn image() -> Vec<u8> {
        let mut img = vec![0u8; 3 << 20];
        img[..4096].fill(0x11);
        img[(2 << 20) + 5] = 0x22;
        img
    }

    fn map_of(img: &[u8]) -> BlockMap {
        let sum = |r: std::ops::Range<usize>| Some(hex(&Sha256::digest(&img[r])));
        BlockMap {
            image_size: img.len() as u64,
            block_size: 4096,
            ranges: vec![
                (0, 0, sum(0..4096)),
                (512, 512, sum(2 << 20..(2 << 20) + 4096)),
            ],
        }
    }

    fn target(len: usize, fill: u8) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        std::fs::write(&path, vec![fill; len]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    fn contents(f: &mut File) -> Vec<u8> {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn whole_image_lands_byte_for_byte_and_verifies() {
        let img = image();
        let (_d, mut card) = target(4 << 20, 0xee);
        let w = write_image(&mut &img[..], img.len() as u64, None, &mut card, &mut Quiet).unwrap();
        assert_eq!(w.bytes, img.len() as u64);
        verify(&mut card, img.len() as u64, None, &w, &mut Quiet).unwrap();
        let got = contents(&mut card);
        assert_eq!(&got[..img.len()], &img[..]);
        assert!(
            got[img.len()..].iter().all(|b| *b == 0xee),
            "past the image"
        );
    }

    #[test]
    fn with_a_map_only_its_ranges_are_written() {
        let img = image();
        let map = map_of(&img);
        let (_d, mut card) = target(img.len(), 0xee);
        let w = write_image(
            &mut &img[..],
            img.len() as u64,
            Some(&map),
            &mut card,
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(w.bytes, 2 * 4096);
        verify(&mut card, img.len() as u64, Some(&map), &w, &mut Quiet).unwrap();
        let got = contents(&mut card);
        assert_eq!(&got[..4096], &img[..4096]);
        assert_eq!(
            &got[2 << 20..(2 << 20) + 4096],
            &img[2 << 20..(2 << 20) + 4096]
        );
        assert!(
            got[4096..2 << 20].iter().all(|b| *b == 0xee),
            "unmapped kept"
        );
    }

    #[test]
    fn a_map_that_does_not_fit_the_image_stops_the_write() {
        let img = image();
        let mut map = map_of(&img);
        map.ranges[1].2 = Some("0".repeat(64));
        let (_d, mut card) = target(img.len(), 0xee);
        let err = write_image(
            &mut &img[..],
            img.len() as u64,
            Some(&map),
            &mut card,
            &mut Quiet,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("do not match its block map"),
            "{err}"
        );
        // The first MiB is written last, so it is still the old content.
        assert!(contents(&mut card)[..4096].iter().all(|b| *b == 0xee));
    }

    #[test]
    fn a_truncated_image_is_refused_before_the_first_mib_is_written() {
        let img = image();
        let short = &img[..img.len() - 100];
        let (_d, mut card) = target(img.len(), 0xee);
        let err = write_image(
            &mut &short[..],
            img.len() as u64,
            None,
            &mut card,
            &mut Quiet,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("truncated or damaged"),
            "{err:#}"
        );
        assert!(contents(&mut card)[..HEAD as usize]
            .iter()
            .all(|b| *b == 0xee));
        wipe_head(&mut card, img.len() as u64).unwrap();
        assert!(contents(&mut card)[..HEAD as usize].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_change_after_writing_fails_the_read_back() {
        let img = image();
        let (_d, mut card) = target(img.len(), 0);
        let w = write_image(&mut &img[..], img.len() as u64, None, &mut card, &mut Quiet).unwrap();
        card.seek(SeekFrom::Start(2 << 20)).unwrap();
        card.write_all(b"bitrot").unwrap();
        let err = verify(&mut card, img.len() as u64, None, &w, &mut Quiet).unwrap_err();
        assert!(
            err.to_string().contains("differs from what was written"),
            "{err}"
        );
    }
}
