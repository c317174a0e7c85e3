//! Compressed copies of the raw image (`.img.xz`, `.img.zst`), the form
//! users download and `kiln flash` or Pi Imager write. Both use every core;
//! both are reproducible (no timestamps or names in either format).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::{write_atomically, Written};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// xz preset 6 in independent blocks, so decoders can use threads too.
    Xz,
    /// zstd level 19: slow to write, fast to read, close to xz in size.
    Zstd,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Zstd => "zst",
        }
    }

    /// Writes `out` (atomically) from the file at `raw`.
    pub fn write(self, raw: &Path, out: &Path) -> Result<Written> {
        let mut input = File::open(raw).with_context(|| format!("reading {}", raw.display()))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        write_atomically(out, |w| {
            let context = || format!("compressing {} to {}", raw.display(), out.display());
            match self {
                Compression::Xz => {
                    let stream = liblzma::stream::MtStreamBuilder::new()
                        .preset(6)
                        .threads(threads)
                        .check(liblzma::stream::Check::Crc64)
                        .encoder()
                        .with_context(context)?;
                    let mut enc = liblzma::write::XzEncoder::new_stream(w, stream);
                    io::copy(&mut input, &mut enc).with_context(context)?;
                    enc.finish().with_context(context)?.flush()?;
                }
                Compression::Zstd => {
                    let mut enc = zstd::stream::write::Encoder::new(w, 19)?;
                    enc.multithread(threads)?;
                    // Sizes in the frame header let tools show progress.
                    enc.set_pledged_src_size(Some(input.metadata()?.len()))?;
                    enc.include_checksum(true)?;
                    io::copy(&mut input, &mut enc).with_context(context)?;
                    enc.finish().with_context(context)?.flush()?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn both_round_trip_and_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.img");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate().step_by(7) {
            *b = (i % 251) as u8;
        }
        std::fs::write(&raw, &data).unwrap();
        for c in [Compression::Xz, Compression::Zstd] {
            let out = dir.path().join(format!("disk.img.{}", c.extension()));
            let first = c.write(&raw, &out).unwrap();
            assert!(first.bytes < data.len() as u64 / 2, "{c:?} compresses");
            let again = c.write(&raw, &out).unwrap();
            assert_eq!(first.sha256, again.sha256, "{c:?} is reproducible");
            let file = File::open(&out).unwrap();
            let mut back = Vec::new();
            match c {
                Compression::Xz => liblzma::read::XzDecoder::new(file)
                    .read_to_end(&mut back)
                    .unwrap(),
                Compression::Zstd => zstd::stream::read::Decoder::new(file)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert!(back == data, "{c:?} round-trips");
        }
    }
}
