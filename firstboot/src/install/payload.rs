//! The installer's payload: the raw kiln disk image on the stick's
//! `kiln-payload` partition, and its map (`kiln/payload.map` on the
//! installer's boot partition), which the builder writes and the installer
//! follows, like a bmap: the ranges that hold data, each with its sha256.
//! Everything between them is zeros.
//!
//! ```text
//! kiln-payload 1
//! image-bytes 1262485504
//! range 1048576 65536 <sha256 hex>
//! ...
//! ```
//!
//! [`install`] writes the mapped ranges from the payload (checking each
//! against the map as it reads it, so a corrupt stick is caught), zeroes
//! the gaps, then reads everything back from the target and checks it again.
//! The first MiB (protective MBR and primary GPT) is written last, so an
//! interrupted install never looks bootable.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;

use sha2::{Digest, Sha256};

/// The map's first line.
pub const MAGIC: &str = "kiln-payload 1";
/// Written last: the protective MBR and the primary GPT live here.
pub const HEAD_BYTES: u64 = 1 << 20;
/// Data-detection granularity of [`map_of`].
pub const CHUNK: u64 = 64 * 1024;
const BUF: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub image_bytes: u64,
    /// Sorted, not overlapping.
    pub ranges: Vec<Range>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Map {
    pub fn render(&self) -> String {
        let mut s = format!("{MAGIC}\nimage-bytes {}\n", self.image_bytes);
        for r in &self.ranges {
            let _ = writeln!(s, "range {} {} {}", r.offset, r.len, r.sha256);
        }
        s
    }

    pub fn parse(text: &str) -> Result<Map, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, MAGIC)) => {}
            other => {
                return Err(format!(
                    "line 1 is {:?}, not {MAGIC:?}",
                    other.map(|(_, l)| l).unwrap_or("")
                ))
            }
        }
        let mut image_bytes = None;
        let mut ranges: Vec<Range> = Vec::new();
        for (i, line) in lines {
            let n = i + 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |w: &str| {
                w.parse::<u64>()
                    .map_err(|_| format!("line {n}: {w:?} is not a number"))
            };
            match words[..] {
                [] => {}
                ["image-bytes", v] => image_bytes = Some(num(v)?),
                ["range", off, len, sum] => {
                    let r = Range {
                        offset: num(off)?,
                        len: num(len)?,
                        sha256: sum.to_ascii_lowercase(),
                    };
                    if r.sha256.len() != 64 || !r.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(format!("line {n}: {sum:?} is not a sha256"));
                    }
                    if let Some(prev) = ranges.last() {
                        if r.offset < prev.offset + prev.len {
                            return Err(format!("line {n}: range overlaps or is out of order"));
                        }
                    }
                    ranges.push(r);
                }
                _ => return Err(format!("line {n}: cannot read {line:?}")),
            }
        }
        let image_bytes = image_bytes.ok_or("no image-bytes line")?;
        if let Some(last) = ranges.last() {
            if last.offset + last.len > image_bytes {
                return Err(format!(
                    "a range ends at {} past the image's {image_bytes} bytes",
                    last.offset + last.len
                ));
            }
        }
        Ok(Map {
            image_bytes,
            ranges,
        })
    }

    /// Bytes the ranges hold.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// The zero stretches between the ranges, up to `image_bytes`.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for r in &self.ranges {
            if r.offset > at {
                gaps.push((at, r.offset - at));
            }
            at = r.offset + r.len;
        }
        if self.image_bytes > at {
            gaps.push((at, self.image_bytes - at));
        }
        gaps
    }
}

/// The map of an image: runs of [`CHUNK`]s that are not all zeros.
pub fn map_of(image: &mut (impl Read + Seek)) -> io::Result<Map> {
    let image_bytes = image.seek(SeekFrom::End(0))?;
    image.seek(SeekFrom::Start(0))?;
    let mut ranges: Vec<Range> = Vec::new();
    let mut run: Option<(u64, Sha256, u64)> = None;
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < image_bytes {
        let n = CHUNK.min(image_bytes - at) as usize;
        image.read_exact(&mut chunk[..n])?;
        if chunk[..n].iter().all(|b| *b == 0) {
            if let Some((offset, h, len)) = run.take() {
                ranges.push(Range {
                    offset,
                    len,
                    sha256: hex(&h.finalize()),
                });
            }
        } else {
            let (_, h, len) = run.get_or_insert_with(|| (at, Sha256::new(), 0));
            h.update(&chunk[..n]);
            *len += n as u64;
        }
        at += n as u64;
    }
    if let Some((offset, h, len)) = run {
        ranges.push(Range {
            offset,
            len,
            sha256: hex(&h.finalize()),
        });
    }
    Ok(Map {
        image_bytes,
        ranges,
    })
}

/// How far [`install`] got, for the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Writing { done: u64, total: u64 },
    Verifying { done: u64, total: u64 },
}

/// Why [`install`] stopped.
#[derive(Debug)]
pub enum InstallError {
    /// The payload does not match its map: the stick is corrupt.
    Payload(String),
    /// Reading back the target gave other bytes than were written.
    Verify(String),
    Io(String, io::Error),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::Payload(m) => write!(f, "the installer's payload is corrupt: {m}"),
            InstallError::Verify(m) => write!(f, "verification failed: {m}"),
            InstallError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let what = what.into();
    move |e| InstallError::Io(what, e)
}

/// Writes the image `map` describes from `payload` onto `target` and
/// verifies it: mapped ranges come from the payload (hash checked while
/// reading), gaps are zeroed, and the last MiB of the disk
/// (`target_bytes`) is zeroed too, so no stale backup GPT of an earlier
/// table survives. Then everything is read back and checked.
pub fn install(
    payload: &mut File,
    target: &mut File,
    target_bytes: u64,
    map: &Map,
    mut progress: impl FnMut(Progress),
) -> Result<(), InstallError> {
    let total = map.image_bytes;
    let mut done = 0;
    let mut buf = vec![0u8; BUF];
    // Old backup GPT at the disk's end, beyond the image.
    let tail = target_bytes.saturating_sub(HEAD_BYTES).max(map.image_bytes);
    zero(target, tail, target_bytes - tail).map_err(io_err("zeroing the end of the disk"))?;

    // Everything after the head first; the head (partition table) last.
    let pieces = split_at_head(map);
    for pass in [false, true] {
        for piece in pieces.iter().filter(|p| p.in_head() == pass) {
            match piece {
                Piece::Data(r) => {
                    copy_range(payload, target, r, &mut buf)?;
                }
                Piece::Zero(off, len) => {
                    zero(target, *off, *len).map_err(io_err(format!(
                        "zeroing {len} bytes at offset {off} of the target"
                    )))?;
                }
            }
            done += piece.len();
            progress(Progress::Writing { done, total });
        }
        target.sync_all().map_err(io_err("syncing the target"))?;
    }

    // Read back from the disk, not the page cache.
    drop_cache(target);
    let mut checked = 0;
    for piece in &pieces {
        match piece {
            Piece::Data(r) => {
                let got = hash_range(target, r.offset, r.len, &mut buf)
                    .map_err(io_err("reading back the target"))?;
                if got != r.sha256 {
                    return Err(InstallError::Verify(format!(
                        "{} bytes at offset {} read back with sha256 {got}, expected {}",
                        r.len, r.offset, r.sha256
                    )));
                }
            }
            Piece::Zero(off, len) => {
                if let Some(at) = first_nonzero(target, *off, *len, &mut buf)
                    .map_err(io_err("reading back the target"))?
                {
                    return Err(InstallError::Verify(format!(
                        "byte {at} should be zero after zeroing {len} bytes at offset {off}"
                    )));
                }
            }
        }
        checked += piece.len();
        progress(Progress::Verifying {
            done: checked,
            total,
        });
    }
    Ok(())
}

/// A range to copy or a gap to zero, split at [`HEAD_BYTES`] so the head can
/// go last.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Data(Range),
    Zero(u64, u64),
}

impl Piece {
    fn in_head(&self) -> bool {
        match self {
            Piece::Data(r) => r.offset < HEAD_BYTES,
            Piece::Zero(off, _) => *off < HEAD_BYTES,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Piece::Data(r) => r.len,
            Piece::Zero(_, len) => *len,
        }
    }
}

/// Ranges are kept whole (their hash covers them); a range that crosses
/// the head's end counts as head. Gaps are split at the head's end.
fn split_at_head(map: &Map) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = map.ranges.iter().cloned().map(Piece::Data).collect();
    for (off, len) in map.gaps() {
        if off < HEAD_BYTES && off + len > HEAD_BYTES {
            pieces.push(Piece::Zero(off, HEAD_BYTES - off));
            pieces.push(Piece::Zero(HEAD_BYTES, off + len - HEAD_BYTES));
        } else {
            pieces.push(Piece::Zero(off, len));
        }
    }
    pieces.sort_by_key(|p| match p {
        Piece::Data(r) => r.offset,
        Piece::Zero(off, _) => *off,
    });
    pieces
}

fn copy_range(
    payload: &mut File,
    target: &mut File,
    r: &Range,
    buf: &mut [u8],
) -> Result<(), InstallError> {
    let mut h = Sha256::new();
    let mut data = Vec::with_capacity(r.len.min(64 << 20) as usize);
    // Checked before it is written (ranges over 64 MiB go in slices, so
    // memory stays bounded: those are checked by the read-back). The
    // partition table goes last, so a corrupt stick never leaves a disk
    // that boots.
    let mut at = 0;
    payload
        .seek(SeekFrom::Start(r.offset))
        .map_err(io_err("seeking in the payload"))?;
    target
        .seek(SeekFrom::Start(r.offset))
        .map_err(io_err("seeking on the target"))?;
    while at < r.len {
        let n = (buf.len() as u64).min(r.len - at) as usize;
        payload.read_exact(&mut buf[..n]).map_err(io_err(format!(
            "reading the payload at offset {}",
            r.offset + at
        )))?;
        h.update(&buf[..n]);
        data.extend_from_slice(&buf[..n]);
        at += n as u64;
        if data.len() >= 64 << 20 || at == r.len {
            if at == r.len && hex(&h.clone().finalize()) != r.sha256 {
                return Err(InstallError::Payload(format!(
                    "{} bytes at offset {} do not match the map's sha256",
                    r.len, r.offset
                )));
            }
            target.write_all(&data).map_err(io_err(format!(
                "writing the target at offset {}",
                r.offset + at
            )))?;
            data.clear();
        }
    }
    Ok(())
}

fn hash_range(f: &mut File, offset: u64, len: u64, buf: &mut [u8]) -> io::Result<String> {
    let mut h = Sha256::new();
    f.seek(SeekFrom::Start(offset))?;
    let mut at = 0;
    while at < len {
        let n = (buf.len() as u64).min(len - at) as usize;
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex(&h.finalize()))
}

fn first_nonzero(f: &mut File, offset: u64, len: u64, buf: &mut [u8]) -> io::Result<Option<u64>> {
    f.seek(SeekFrom::Start(offset))?;
    let mut at = 0;
    while at < len {
        let n = (buf.len() as u64).min(len - at) as usize;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            return Ok(Some(offset + at + i as u64));
        }
        at += n as u64;
    }
    Ok(None)
}

/// `BLKZEROOUT`, `_IO(0x12, 127)`: the device zeroes a range itself (NVMe
/// Write Zeroes, SCSI WRITE SAME) or the kernel writes zero pages.
const BLKZEROOUT: nix::sys::ioctl::ioctl_num_type = nix::request_code_none!(0x12, 127);

/// Zeroes `len` bytes at `offset`: `BLKZEROOUT` on a block device, plain
/// writes on a file (tests).
fn zero(f: &mut File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    if f.metadata()?.file_type().is_block_device() {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKZEROOUT reads two u64 (start, length) from the pointer.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT, &range) };
        if rc == 0 {
            return Ok(());
        }
    }
    let zeros = vec![0u8; BUF];
    f.seek(SeekFrom::Start(offset))?;
    let mut at = 0;
    while at < len {
        let n = (BUF as u64).min(len - at) as usize;
        f.write_all(&zeros[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Drops the target's cached pages so the read-back comes from the disk.
fn drop_cache(f: &File) {
    // SAFETY: plain advice on an open descriptor.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;
    use std::fs::OpenOptions;

    fn file(dir: &TestDir, name: &str, bytes: &[u8]) -> File {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// A 3 MiB image: data in the head (a fake table), at 1 MiB + 64 KiB,
    /// and a last chunk; zeros elsewhere.
    fn image() -> Vec<u8> {
        let mut img = vec![0u8; 3 << 20];
        img[0..512].fill(0xee);
        img[(1 << 20) + 65536..(1 << 20) + 65536 + 100].fill(7);
        let end = img.len();
        img[end - 10..].fill(9);
        img
    }

    #[test]
    fn map_lists_data_chunks_and_round_trips() {
        let t = TestDir::new("payload-map");
        let img = image();
        let map = map_of(&mut file(&t, "img", &img)).unwrap();
        let spans: Vec<(u64, u64)> = map.ranges.iter().map(|r| (r.offset, r.len)).collect();
        assert_eq!(
            spans,
            [
                (0, CHUNK),
                ((1 << 20) + CHUNK, CHUNK),
                ((3 << 20) - CHUNK, CHUNK)
            ]
        );
        assert_eq!(map.mapped_bytes(), 3 * CHUNK);
        assert_eq!(map.gaps()[0], (CHUNK, (1 << 20) - CHUNK + CHUNK));
        assert_eq!(Map::parse(&map.render()).unwrap(), map);
    }

    #[test]
    fn bad_maps_are_refused_with_the_line() {
        assert!(Map::parse("nope\n").unwrap_err().contains("line 1"));
        let e = Map::parse("kiln-payload 1\nimage-bytes 10\nrange 0 x y\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let sum = "0".repeat(64);
        let e = Map::parse(&format!(
            "kiln-payload 1\nimage-bytes 10\nrange 0 20 {sum}\n"
        ))
        .unwrap_err();
        assert!(e.contains("past the image"), "{e}");
        let e = Map::parse(&format!(
            "kiln-payload 1\nimage-bytes 99\nrange 10 20 {sum}\nrange 15 2 {sum}\n"
        ))
        .unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn installs_over_old_data_and_verifies() {
        let t = TestDir::new("payload-install");
        let img = image();
        let map = map_of(&mut file(&t, "img", &img)).unwrap();
        let mut payload = file(&t, "payload", &img);
        // A used disk, bigger than the image: garbage everywhere.
        let disk_bytes = 5u64 << 20;
        let mut target = file(&t, "disk", &vec![0x5a; disk_bytes as usize]);
        let mut seen = Vec::new();
        install(&mut payload, &mut target, disk_bytes, &map, |p| {
            seen.push(p)
        })
        .unwrap();
        let written = std::fs::read(t.path().join("disk")).unwrap();
        assert_eq!(&written[..img.len()], &img[..], "the image, gaps zeroed");
        assert!(
            written[(4 << 20)..].iter().all(|b| *b == 0),
            "the disk's last MiB is zeroed"
        );
        assert_eq!(
            written[img.len()..(4 << 20)]
                .iter()
                .filter(|b| **b == 0x5a)
                .count(),
            1 << 20,
            "beyond the image and before the last MiB nothing is touched"
        );
        assert_eq!(
            seen.last(),
            Some(&Progress::Verifying {
                done: img.len() as u64,
                total: img.len() as u64
            })
        );
        // The head went last.
        let head_at = seen
            .iter()
            .position(|p| matches!(p, Progress::Writing { done, .. } if *done == img.len() as u64))
            .unwrap();
        assert!(head_at > 0);
    }

    #[test]
    fn corrupt_payload_never_reaches_the_disk() {
        let t = TestDir::new("payload-corrupt");
        let img = image();
        let map = map_of(&mut file(&t, "img", &img)).unwrap();
        let mut bad = img.clone();
        bad[(1 << 20) + 65536] = 8;
        let mut payload = file(&t, "payload", &bad);
        let mut target = file(&t, "disk", &vec![0u8; 4 << 20]);
        let e = install(&mut payload, &mut target, 4 << 20, &map, |_| {}).unwrap_err();
        assert!(matches!(e, InstallError::Payload(_)), "{e}");
        assert!(e.to_string().contains("offset 1114112"), "{e}");
        let disk = std::fs::read(t.path().join("disk")).unwrap();
        assert!(
            disk[..1 << 20].iter().all(|b| *b == 0),
            "no partition table was written"
        );
    }
}
