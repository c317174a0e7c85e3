//! Sidecars of the raw image: a block map in bmaptool's format (`.bmap`),
//! so a flasher writes only the blocks that hold data, and a `.sha256` in
//! `sha256sum -c` format.
//!
//! bmaptool writes only the mapped blocks and leaves whatever the card held
//! in the others, so an unmapped block must be one nothing ever reads. The
//! map is made from the image's bytes and its layout, not from where the
//! build host's file system happens to store data (the same image gives the
//! same `.bmap` everywhere):
//! - a block holding a non-zero byte is mapped;
//! - an all-zero block is unmapped only inside a *don't-care* range: the
//!   root slots, whose bytes past the squashfs nothing reads (and root B
//!   is empty until an update writes it whole);
//! - everywhere else (the partition tables, the boot partition, the data
//!   partition) zeros are data too: a FAT's free-cluster entries and an
//!   ext4 bitmap are zeros a used card would otherwise fill with garbage.
//!
//! On a zeroed or fresh target, a copy that skips unmapped blocks
//! reproduces the image byte for byte; on a used card it differs only where
//! nothing reads.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::{write_atomically, Written};
use crate::packages::hex;

pub const BLOCK: usize = 4096;

/// A mapped range: first and last block (inclusive), sha256 of its bytes.
type Range = (u64, u64, String);

/// Mapped block ranges of the file at `raw`, and the file's size. A zero
/// block is unmapped only when it lies wholly inside one of `dont_care`
/// (byte ranges).
fn mapped_ranges(raw: &Path, dont_care: &[std::ops::Range<u64>]) -> Result<(u64, Vec<Range>)> {
    let mut file = File::open(raw).with_context(|| format!("reading {}", raw.display()))?;
    let size = file.metadata()?.len();
    let mut ranges: Vec<(u64, u64, Sha256)> = Vec::new();
    let mut buf = vec![0u8; 256 * BLOCK];
    let mut block = 0u64;
    loop {
        let filled = super::read_full(&mut file, &mut buf)?;
        if filled == 0 {
            break;
        }
        for chunk in buf[..filled].chunks(BLOCK) {
            let start = block * BLOCK as u64;
            let end = start + BLOCK as u64;
            let skippable = chunk.iter().all(|b| *b == 0)
                && dont_care.iter().any(|r| r.start <= start && end <= r.end);
            if !skippable {
                match ranges.last_mut() {
                    Some((_, last, h)) if *last + 1 == block => {
                        *last = block;
                        h.update(chunk);
                    }
                    _ => {
                        let mut h = Sha256::new();
                        h.update(chunk);
                        ranges.push((block, block, h));
                    }
                }
            }
            block += 1;
        }
    }
    let ranges = ranges
        .into_iter()
        .map(|(a, b, h)| (a, b, hex(&h.finalize())))
        .collect();
    Ok((size, ranges))
}

/// The bmap text; `file_checksum` is 64 zeros while the file's own
/// checksum is computed (bmaptool's rule).
fn render(size: u64, ranges: &[Range], file_checksum: &str) -> String {
    let blocks = size.div_ceil(BLOCK as u64);
    let mapped: u64 = ranges.iter().map(|(a, b, _)| b + 1 - a).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" ?>\n\
         <!-- Block map of a kiln image, for bmaptool and kiln flash: only the\n     \
         ranges below hold data, the rest of the image is zeros. -->\n\
         <bmap version=\"2.0\">\n\
         \x20   <ImageSize> {size} </ImageSize>\n\
         \x20   <BlockSize> {BLOCK} </BlockSize>\n\
         \x20   <BlocksCount> {blocks} </BlocksCount>\n\
         \x20   <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\
         \x20   <ChecksumType> sha256 </ChecksumType>\n\
         \x20   <BmapFileChecksum> {file_checksum} </BmapFileChecksum>\n\
         \x20   <BlockMap>\n"
    );
    for (a, b, sum) in ranges {
        let range = if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        };
        s.push_str(&format!(
            "        <Range chksum=\"{sum}\"> {range} </Range>\n"
        ));
    }
    s.push_str("    </BlockMap>\n</bmap>\n");
    s
}

/// Writes `out` (atomically), the block map of the image at `raw`; zero
/// blocks inside `dont_care` (byte ranges nothing reads) are left out.
pub fn write_bmap(raw: &Path, dont_care: &[std::ops::Range<u64>], out: &Path) -> Result<Written> {
    let (size, ranges) = mapped_ranges(raw, dont_care)?;
    let zeros = "0".repeat(64);
    let draft = render(size, &ranges, &zeros);
    let text = render(size, &ranges, &hex(&Sha256::digest(draft.as_bytes())));
    write_atomically(out, |w| Ok(std::io::Write::write_all(w, text.as_bytes())?))
}

/// Writes `out` (atomically): `<sha256>  <file name of raw>`, as
/// `sha256sum -c` reads it.
pub fn write_sha256(raw: &Path, sha256: &str, out: &Path) -> Result<Written> {
    let name = raw
        .file_name()
        .context("the image path names no file")?
        .to_string_lossy();
    let line = format!("{sha256}  {name}\n");
    write_atomically(out, |w| Ok(std::io::Write::write_all(w, line.as_bytes())?))
}

/// A block map read back: what `kiln flash` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    pub image_size: u64,
    pub block_size: u64,
    /// First and last block (inclusive) of each mapped range, in order,
    /// with the sha256 of its bytes when the map has one.
    pub ranges: Vec<(u64, u64, Option<String>)>,
}

impl BlockMap {
    /// Bytes in the mapped ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(a, b, _)| self.byte_range(*a, *b))
            .map(|r| r.end - r.start)
            .sum()
    }

    /// The bytes of blocks `first..=last`, cut at the image's end.
    pub fn byte_range(&self, first: u64, last: u64) -> std::ops::Range<u64> {
        (first * self.block_size).min(self.image_size)
            ..((last + 1) * self.block_size).min(self.image_size)
    }
}

/// Reads a bmap (bmaptool's format 1.x or 2.x, sha256 or sha1 range
/// checksums; only sha256 ones are checked by `kiln flash`). The errors
/// name what is wrong, so a truncated or foreign file is not mistaken for
/// a map that says "write nothing".
pub fn parse(text: &str) -> Result<BlockMap> {
    let field = |name: &str| -> Result<u64> {
        let open = format!("<{name}>");
        let value = text
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
            .map(|(v, _)| v.trim())
            .with_context(|| format!("no <{name}> in the bmap"))?;
        value
            .parse()
            .with_context(|| format!("<{name}> is not a number: {value:?}"))
    };
    let image_size = field("ImageSize")?;
    let block_size = field("BlockSize")?;
    anyhow::ensure!(block_size > 0, "<BlockSize> is 0");
    let sha256 = text.contains("<ChecksumType> sha256 </ChecksumType>");
    let body = text
        .split_once("<BlockMap>")
        .and_then(|(_, rest)| rest.split_once("</BlockMap>"))
        .map(|(body, _)| body)
        .context("no <BlockMap> in the bmap")?;
    let mut ranges: Vec<(u64, u64, Option<String>)> = Vec::new();
    for part in body.split("<Range").skip(1) {
        let (attrs, rest) = part.split_once('>').context("a <Range> is not closed")?;
        let span = rest
            .split_once("</Range>")
            .context("a <Range> has no </Range>")?
            .0
            .trim();
        let (a, b) = span.split_once('-').unwrap_or((span, span));
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("bad <Range> {span:?}"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        anyhow::ensure!(a <= b, "bad <Range> {span:?}: it ends before it starts");
        if let Some(&(_, last, _)) = ranges.last() {
            anyhow::ensure!(a > last, "<Range> {span:?} is out of order or overlaps");
        }
        anyhow::ensure!(
            a * block_size < image_size.max(1),
            "<Range> {span:?} lies past the image's end"
        );
        let sum = attrs
            .split_once("chksum=\"")
            .and_then(|(_, v)| v.split_once('"'))
            .map(|(v, _)| v.to_string())
            .filter(|_| sha256);
        ranges.push((a, b, sum));
    }
    Ok(BlockMap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::process::Command;

    /// A sparse "image": data at the start, in the middle (one byte in a
    /// block), and in the last partial block.
    fn image(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("disk.img");
        let mut f = File::create(&path).unwrap();
        f.set_len(40 * BLOCK as u64 + 100).unwrap();
        f.write_all(&[0xaa; 2 * BLOCK + 1]).unwrap();
        f.seek(SeekFrom::Start(17 * BLOCK as u64 + 5)).unwrap();
        f.write_all(&[1]).unwrap();
        f.seek(SeekFrom::Start(40 * BLOCK as u64 + 99)).unwrap();
        f.write_all(&[2]).unwrap();
        path
    }

    /// Blocks 10..30 play a root slot: its zero blocks may be skipped.
    const SLOT: std::ops::Range<u64> = 10 * BLOCK as u64..30 * BLOCK as u64;

    #[test]
    fn zeros_are_skipped_only_where_nothing_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let (size, ranges) = mapped_ranges(&raw, &[SLOT]).unwrap();
        assert_eq!(size, 40 * BLOCK as u64 + 100);
        let spans: Vec<(u64, u64)> = ranges.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(spans, [(0, 9), (17, 17), (30, 40)]);
        // A don't-care range that ends mid-block keeps that block.
        let short = SLOT.start..SLOT.end - 1;
        let (_, ranges) = mapped_ranges(&raw, std::slice::from_ref(&short)).unwrap();
        assert_eq!(ranges.last().map(|r| r.0), Some(29));
    }

    #[test]
    fn maps_the_non_zero_blocks_and_checksums_itself() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let whole = 0..u64::MAX;
        let (size, ranges) = mapped_ranges(&raw, std::slice::from_ref(&whole)).unwrap();
        assert_eq!(size, 40 * BLOCK as u64 + 100);
        let spans: Vec<(u64, u64)> = ranges.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(spans, [(0, 2), (17, 17), (40, 40)]);
        let out = dir.path().join("disk.img.bmap");
        write_bmap(&raw, std::slice::from_ref(&whole), &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("<BlocksCount> 41 </BlocksCount>"), "{text}");
        assert!(text.contains("<MappedBlocksCount> 5 </MappedBlocksCount>"));
        assert!(text.contains("> 0-2 </Range>") && text.contains("> 17 </Range>"));
        let sum = text
            .split("<BmapFileChecksum> ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let zeroed = text.replace(&sum, &"0".repeat(64));
        assert_eq!(sum, hex(&Sha256::digest(zeroed.as_bytes())));
        write_bmap(&raw, &[whole], &dir.path().join("again.bmap")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("again.bmap")).unwrap(),
            text
        );
    }

    /// Debian's bmap-tools (scripts/setup-host.sh installs it): `bmaptool
    /// copy` of the image with our bmap gives the image back, byte for byte.
    #[test]
    fn bmaptool_copy_reproduces_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let bmap = dir.path().join("disk.img.bmap");
        write_bmap(&raw, &[SLOT], &bmap).unwrap();
        let copy = dir.path().join("copy.img");
        let out = Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&raw)
            .arg(&copy)
            .output()
            .expect("bmaptool runs (apt-get install bmap-tools)");
        assert!(
            out.status.success(),
            "bmaptool copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&raw).unwrap());
    }

    #[test]
    fn a_written_map_reads_back_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let out = dir.path().join("disk.img.bmap");
        write_bmap(&raw, &[SLOT], &out).unwrap();
        let map = parse(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(map.image_size, 40 * BLOCK as u64 + 100);
        assert_eq!(map.block_size, BLOCK as u64);
        let spans: Vec<(u64, u64)> = map.ranges.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(spans, [(0, 9), (17, 17), (30, 40)]);
        assert!(map
            .ranges
            .iter()
            .all(|r| r.2.as_ref().is_some_and(|s| s.len() == 64)));
        // The last block is partial: 10 + 1 + 10 blocks and 100 bytes.
        assert_eq!(map.mapped_bytes(), 21 * BLOCK as u64 + 100);
        for (text, why) in [
            ("<bmap></bmap>", "no <ImageSize>"),
            (
                "<ImageSize> 9 </ImageSize><BlockSize> 4096 </BlockSize>",
                "no <BlockMap>",
            ),
            (
                "<ImageSize> 9000 </ImageSize><BlockSize> 4096 </BlockSize>\
                 <BlockMap><Range> 1 </Range><Range> 0 </Range></BlockMap>",
                "out of order",
            ),
            (
                "<ImageSize> 9000 </ImageSize><BlockSize> 4096 </BlockSize>\
                 <BlockMap><Range> 7 </Range></BlockMap>",
                "past the image's end",
            ),
            (
                "<ImageSize> x </ImageSize><BlockSize> 4096 </BlockSize>",
                "not a number",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn sha256_line_reads_with_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let sum = crate::packages::sha256_file(&raw).unwrap();
        write_sha256(&raw, &sum, &dir.path().join("disk.img.sha256")).unwrap();
        let out = Command::new("sha256sum")
            .args(["-c", "disk.img.sha256"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
