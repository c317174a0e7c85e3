//! Sidecars of the raw image: a block map in bmaptool's format (`.bmap`),
//! so a flasher writes only the blocks that hold data, and a `.sha256` in
//! `sha256sum -c` format.
//!
//! The map marks a 4 KiB block as mapped when it holds a non-zero byte, not
//! where the file system says there is data: the same image gives the same
//! `.bmap` on any file system, and a flasher that skips unmapped blocks on
//! a zeroed or fresh target reproduces the image byte for byte.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::{write_atomically, Written};
use crate::packages::hex;

pub const BLOCK: usize = 4096;

/// A mapped range: first and last block (inclusive), sha256 of its bytes.
type Range = (u64, u64, String);

/// Mapped block ranges of the file at `raw`, and the file's size.
fn mapped_ranges(raw: &Path) -> Result<(u64, Vec<Range>)> {
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
            if chunk.iter().any(|b| *b != 0) {
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

/// Writes `out` (atomically), the block map of the image at `raw`.
pub fn write_bmap(raw: &Path, out: &Path) -> Result<Written> {
    let (size, ranges) = mapped_ranges(raw)?;
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

    #[test]
    fn maps_the_non_zero_blocks_and_checksums_itself() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let (size, ranges) = mapped_ranges(&raw).unwrap();
        assert_eq!(size, 40 * BLOCK as u64 + 100);
        let spans: Vec<(u64, u64)> = ranges.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(spans, [(0, 2), (17, 17), (40, 40)]);
        let out = dir.path().join("disk.img.bmap");
        write_bmap(&raw, &out).unwrap();
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
        write_bmap(&raw, &dir.path().join("again.bmap")).unwrap();
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
        write_bmap(&raw, &bmap).unwrap();
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
