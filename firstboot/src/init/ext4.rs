//! Growing the mounted data filesystem (ext4) to its partition, online.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u16 = 0xef53;
const INCOMPAT_64BIT: u32 = 0x80;

nix::ioctl_write_ptr!(ext4_ioc_resize_fs, b'f', 16, u64);

/// What the resize needs from the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
}

impl Superblock {
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// Parses the 1024-byte superblock (found at byte 1024 of the device).
pub fn parse_superblock(sb: &[u8]) -> Result<Superblock, String> {
    if sb.len() < 0x154 {
        return Err("superblock too short".into());
    }
    let u32at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != MAGIC {
        return Err(format!("no ext4 superblock (magic {magic:#06x})"));
    }
    let log = u32at(0x18);
    if log > 6 {
        return Err(format!("bad block size (log {log})"));
    }
    let mut blocks = u64::from(u32at(0x4));
    if u32at(0x60) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32at(0x150)) << 32;
    }
    Ok(Superblock {
        block_size: 1024 << log,
        blocks,
    })
}

/// Reads the superblock of a (possibly mounted) device. Reads go through
/// the same page cache the mounted filesystem uses, so they see a resize
/// at once.
pub fn read_superblock(dev: &Path) -> io::Result<Superblock> {
    let mut sb = [0u8; 1024];
    File::open(dev)?.read_exact_at(&mut sb, 1024)?;
    parse_superblock(&sb).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Blocks the filesystem should have to fill `partition_bytes`.
pub fn target_blocks(partition_bytes: u64, block_size: u64) -> u64 {
    partition_bytes / block_size
}

/// `EXT4_IOC_RESIZE_FS` on the filesystem mounted at `mount_point`. The
/// kernel may stop a little short (it drops a last group too small for its
/// metadata), so re-read the superblock to learn the result.
pub fn resize(mount_point: &Path, blocks: u64) -> io::Result<()> {
    let dir = File::open(mount_point)?;
    // SAFETY: a valid fd and a pointer to a live u64.
    unsafe { ext4_ioc_resize_fs(dir.as_raw_fd(), &blocks) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;

    #[test]
    fn parses_a_superblock() {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x18] = 2;
        sb[0x4..0x8].copy_from_slice(&16384u32.to_le_bytes());
        sb[0x150] = 1;
        let got = parse_superblock(&sb).unwrap();
        assert_eq!(
            got,
            Superblock {
                block_size: 4096,
                blocks: 16384
            }
        );
        sb[0x60] = INCOMPAT_64BIT as u8;
        assert_eq!(parse_superblock(&sb).unwrap().blocks, (1 << 32) + 16384);
        sb[0x38] = 0;
        assert!(parse_superblock(&sb).unwrap_err().contains("no ext4"));
        assert_eq!(target_blocks(64 << 20, 4096), 16384);
    }

    /// Against a real mke2fs, when installed.
    #[test]
    fn reads_what_mke2fs_wrote() {
        let t = TestDir::new("ext4");
        let img = t.path().join("data.img");
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let Ok(out) = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "kiln-data"])
            .arg(&img)
            .output()
        else {
            eprintln!("mke2fs not installed: skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            read_superblock(&img).unwrap(),
            Superblock {
                block_size: 4096,
                blocks: 2048
            }
        );
    }
}
