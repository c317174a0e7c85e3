//! The data partition as shipped: a small, empty ext4 made by the host's
//! `mke2fs` on a plain file (rootless). `kiln-init` grows the partition and
//! the filesystem on first boot, so the image carries almost nothing.
//!
//! mke2fs 1.47 gives byte-identical output for an empty filesystem when the
//! time, UUID and directory hash seed are fixed (measured; DESIGN.md).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::packages::which;

pub struct Ext4Spec<'a> {
    pub size_bytes: u64,
    pub label: &'a str,
    /// Filesystem UUID, textual, derived from the spec hash.
    pub uuid: String,
    pub epoch: u64,
}

pub fn build(spec: &Ext4Spec) -> Result<Vec<u8>> {
    let mke2fs =
        which("mke2fs").context("the data partition is made with mke2fs; install e2fsprogs")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("data.ext4");
    std::fs::File::create(&file)?.set_len(spec.size_bytes)?;
    let out = Command::new(mke2fs)
        .env("E2FSPROGS_FAKE_TIME", spec.epoch.to_string())
        .env("MKE2FS_CONFIG", "/dev/null")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", spec.label,
        ])
        .args(["-U", &spec.uuid])
        // Defaults spelled out, since MKE2FS_CONFIG is empty: what a current
        // mke2fs.conf gives ext4, minus nothing the bookworm kernel lacks.
        .args([
            "-O",
            "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize",
        ])
        .args(["-I", "256", "-i", "16384"])
        .args([
            "-E",
            &format!("hash_seed={},lazy_itable_init=0,root_owner=0:0", spec.uuid),
        ])
        .arg(&file)
        .output()
        .context("running mke2fs")?;
    if !out.status.success() {
        bail!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(std::fs::read(&file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ext4_is_reproducible() {
        let spec = Ext4Spec {
            size_bytes: 16 << 20,
            label: "kiln-data",
            uuid: "0b1e0b1e-0000-4000-8000-000000000001".into(),
            epoch: 1_700_000_000,
        };
        let a = build(&spec).unwrap();
        let b = build(&spec).unwrap();
        assert_eq!(a.len(), 16 << 20);
        assert_eq!(
            u16::from_le_bytes([a[0x438], a[0x439]]),
            0xEF53,
            "ext4 magic"
        );
        assert_eq!(&a[0x478..0x478 + 9], b"kiln-data");
        assert!(a == b, "two mke2fs runs differ");
    }
}
