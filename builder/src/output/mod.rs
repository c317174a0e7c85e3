//! Output writers: turn the one raw disk image of a build into the files a
//! user downloads.
//!
//! The build writes its raw image once; every format here is made *from* that
//! file, so a new format never touches the disk code (STYLE: "Keep output
//! axes apart"). There are three kinds of writers, and a board's `outputs:`
//! names a list of them:
//!
//! - **containers** wrap the whole disk in another disk format: [`vmdk`]
//!   (VMware streamOptimized), [`ova`] (OVF descriptor + manifest + VMDK in
//!   one tar; the descriptor itself is rendered by [`ovf`]). qcow2 would go
//!   here too. Each implements [`Container`].
//! - **compressions** ([`compress`]: xz, zstd) and **sidecars** (bmap,
//!   `SHA256SUMS`, Pi Imager JSON) have the same shape: a plain value with
//!   the options, a `write(raw, out)` that returns a [`Written`].
//!
//! Every writer follows the same rules, so `kiln build` can treat them alike:
//!
//! - it reads the raw image once, front to back (holes are skipped where the
//!   file system can tell), and never needs root, loop devices or a host tool;
//! - it writes to a temporary file beside the target and renames it when
//!   complete, so an interrupted build never leaves a half file under the
//!   final name ([`write_atomically`]);
//! - it hashes what it writes *while* writing and returns the sha256 with the
//!   size, for `SHA256SUMS`, manifests and the build summary;
//! - same input + same options = same bytes: no timestamps but the
//!   `SOURCE_DATE_EPOCH` the caller passes, every id derived from a seed the
//!   caller passes (the spec's hash).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub mod appliance;
pub mod bmap;
pub mod compress;
pub mod ova;
pub mod ovf;
pub mod pi_imager;
pub mod vmdk;

/// What `kiln build` writes besides the raw image (`<name>.img`, always
/// written: `kiln boot`, dd and the other formats start from it). A board
/// lists its own in `outputs:`; `kiln build --format` overrides them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Only the raw image.
    Img,
    /// `<name>.ova`: the OVF descriptor, manifest and VMDK in one tar.
    Ova,
    /// `<name>.ovf`, `<name>.mf` and `<name>.vmdk`, unpacked.
    Ovf,
    /// `<name>.img.bmap`: bmaptool's block map, so flashing writes only
    /// the blocks that hold data.
    Bmap,
    /// `<name>.img.sha256`: the raw image's checksum (`sha256sum -c`).
    Sha256,
    /// `<name>.img.xz`: xz, multi-threaded, in independent blocks.
    Xz,
    /// `<name>.img.zst`: zstd level 19, multi-threaded.
    Zst,
    /// `<name>.rpi-imager.json`: a Raspberry Pi Imager repository with
    /// this image (the `.img.xz` when written). Last: it describes the
    /// files written before it.
    #[serde(rename = "pi-imager")]
    #[value(name = "pi-imager")]
    PiImager,
}

/// Fills `buf` from `r` as far as the input goes; returns how much it read
/// (less than `buf.len()` only at the end).
pub fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A file an output writer made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// sha256 of the file, computed while it was written.
    pub sha256: [u8; 32],
}

impl Written {
    pub fn sha256_hex(&self) -> String {
        crate::packages::hex(&self.sha256)
    }
}

/// A disk container format: the raw image in, one file out.
pub trait Container {
    /// File name extension of the output, without the dot (`vmdk`, `ova`).
    fn extension(&self) -> &'static str;
    /// Writes `out` (atomically) from the raw disk image at `raw`.
    fn write(&self, raw: &Path, out: &Path) -> Result<Written>;
}

/// A writer that counts and hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sha256 of everything written so far.
    pub fn sha256(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `out` through `fill`: into a temporary file in the same directory
/// (mode 0644), hashed on the way, synced, then renamed over `out` and the
/// directory synced. If `fill` fails, the temporary file is removed and `out`
/// is left as it was.
pub fn write_atomically(
    out: &Path,
    fill: impl FnOnce(&mut HashingWriter<BufWriter<&mut File>>) -> Result<()>,
) -> Result<Written> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .with_context(|| format!("{} names no file; give a file name", out.display()))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}; check its permissions", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "creating a temporary file in {}; check its permissions",
                dir.display()
            )
        })?;
    // Outputs are for users to read and share, not secrets: 0644 (a temporary
    // file starts as 0600), set explicitly so the umask does not matter.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("setting the mode of {name}"))?;
    let (bytes, sha256) = {
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file_mut()));
        fill(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {name}; is the disk full?"))?;
        (w.bytes(), w.sha256())
    };
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {name}; is the disk full?"))?;
    tmp.persist(out)
        .with_context(|| format!("renaming the finished file to {}", out.display()))?;
    // The rename is durable only once the directory is synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Written {
        path: out.to_path_buf(),
        bytes,
        sha256,
    })
}

/// Helpers the output writers' tests share.
#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;
    use std::process::Command;

    /// `tool` on PATH, or `None` with a line saying the check is skipped.
    pub fn tool(tool: &str) -> Option<PathBuf> {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        if found.is_none() {
            eprintln!("skipping the {tool} check: {tool} not found on PATH (qemu-img: install qemu-utils)");
        }
        found
    }

    /// Runs `cmd`, fails the test unless it succeeds, returns its stdout.
    pub fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn atomic_write_hashes_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.bin");
        let w = write_atomically(&out, |w| Ok(w.write_all(b"hello")?)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        assert_eq!(w.bytes, 5);
        assert_eq!(
            w.sha256_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(&out.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.bin");
        std::fs::write(&out, b"old").unwrap();
        let err = write_atomically(&out, |w| {
            w.write_all(b"half")?;
            bail!("boom")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b.bin"]);
    }
}
