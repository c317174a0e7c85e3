//! The image `kiln flash` reads: raw, `.xz` or `.zst` (told by its first
//! bytes, not its name), and its block map when one lies next to it.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::output::bmap::{self, BlockMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
}

impl Compression {
    /// From a file's first bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Which block map to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapChoice {
    /// `<image>.bmap`, or for `x.img.xz` also `x.img.bmap`, if present.
    Beside,
    File(PathBuf),
    None,
}

#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    pub compression: Compression,
    pub map: Option<(PathBuf, BlockMap)>,
    /// Bytes of the raw image.
    pub size: u64,
}

impl Image {
    /// Opens `path` and its map. The raw size comes from the file, the map,
    /// or (compressed, no map) one decompressing pass.
    pub fn open(path: &Path, choice: &MapChoice) -> Result<Image> {
        let mut head = [0u8; 6];
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let n = crate::output::read_full(&mut file, &mut head)?;
        let compression = Compression::sniff(&head[..n]);
        let map_path = match choice {
            MapChoice::None => None,
            MapChoice::File(p) => Some(p.clone()),
            MapChoice::Beside => beside(path).into_iter().find(|p| p.is_file()),
        };
        let map = match map_path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading the block map {}", p.display()))?;
                let parsed = bmap::parse(&text).with_context(|| {
                    format!(
                        "{} is not a usable block map; pass --no-bmap to write the whole image",
                        p.display()
                    )
                })?;
                Some((p, parsed))
            }
            None => None,
        };
        let size = match (compression, &map) {
            (Compression::None, _) => file.metadata()?.len(),
            (_, Some((_, m))) => m.image_size,
            _ => {
                log::info!("reading {} once to learn its size", path.display());
                io::copy(&mut open_raw(path, compression)?, &mut io::sink())
                    .with_context(|| format!("decompressing {}", path.display()))?
            }
        };
        if let (Compression::None, Some((p, m))) = (compression, &map) {
            if m.image_size != size {
                bail!(
                    "{} is for an image of {} bytes, but {} has {size}; \
                     use the map made with this image, or --no-bmap",
                    p.display(),
                    m.image_size,
                    path.display()
                );
            }
        }
        Ok(Image {
            path: path.to_path_buf(),
            compression,
            map,
            size,
        })
    }

    /// The raw image's bytes, decompressed as they are read.
    pub fn reader(&self) -> Result<Box<dyn Read + Send>> {
        open_raw(&self.path, self.compression)
    }
}

fn open_raw(path: &Path, compression: Compression) -> Result<Box<dyn Read + Send>> {
    let file = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    Ok(match compression {
        Compression::None => Box::new(file),
        // kiln writes multi-block xz (`output::compress`): decoded on every core.
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_parallel(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// Where a block map may lie: `x.img.xz.bmap`, then `x.img.bmap`.
fn beside(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut with = path.as_os_str().to_owned();
    with.push(".bmap");
    out.push(PathBuf::from(with));
    let name = path.to_string_lossy();
    for ext in [".xz", ".zst"] {
        if let Some(stem) = name.strip_suffix(ext) {
            out.push(PathBuf::from(format!("{stem}.bmap")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_told_by_magic_not_name() {
        assert_eq!(
            Compression::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Xz
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(&[0xeb, 0x3c, 0x90]), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn maps_are_looked_for_beside_the_compressed_and_the_raw_name() {
        assert_eq!(
            beside(Path::new("out/k.img.xz")),
            [
                PathBuf::from("out/k.img.xz.bmap"),
                PathBuf::from("out/k.img.bmap")
            ]
        );
        assert_eq!(
            beside(Path::new("out/k.img")),
            [PathBuf::from("out/k.img.bmap")]
        );
    }
}
