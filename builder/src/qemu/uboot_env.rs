//! U-Boot's environment on a flash bank. U-Boot for QEMU's `virt` machine
//! keeps its environment at the start of the second pflash bank; without
//! one it uses the default compiled into it, which waits 2 s for a key and
//! then tries every boot device (fw_cfg, USB, SCSI, virtio, NVMe, DHCP).
//! kiln writes a bank per run holding that same default environment with
//! the board's changes (no delay, only the virtio disk): seconds saved on
//! every boot, and a disk that does not boot stops at U-Boot's prompt at
//! once instead of after a round of network boot.
//!
//! An environment in flash replaces the default one whole, so it must be
//! complete: it is read out of the U-Boot binary, where the default
//! environment is one block of NUL-separated `key=value` strings ending in
//! an empty one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A board's environment bank (board file: `firmware: u-boot: env:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UBootEnv {
    /// Size of the flash bank; QEMU wants the file exactly this size.
    pub flash_bytes: u64,
    /// U-Boot's `CONFIG_ENV_SIZE`: a CRC32, then the variables, at the
    /// bank's start.
    pub env_bytes: u64,
    /// Variables set (or added) over the default environment.
    pub set: BTreeMap<String, String>,
}

/// Writes the bank for `bios` with `env`'s changes to `path` (sparse).
pub fn write_bank(bios: &Path, env: &UBootEnv, path: &Path) -> Result<()> {
    let binary = std::fs::read(bios).with_context(|| format!("reading {}", bios.display()))?;
    let mut vars = default_env(&binary).with_context(|| {
        format!(
            "no default environment found in {}; remove `env` from the board's u-boot firmware",
            bios.display()
        )
    })?;
    for (key, value) in &env.set {
        match vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => v.clone_from(value),
            None => vars.push((key.clone(), value.clone())),
        }
    }
    let block = encode(&vars, env.env_bytes as usize)?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut &file, &block)?;
    file.set_len(env.flash_bytes)?;
    Ok(())
}

/// The default environment compiled into a U-Boot binary, in its order:
/// the block of `key=value` strings around `bootdelay=`.
pub fn default_env(binary: &[u8]) -> Option<Vec<(String, String)>> {
    let anchor = find(binary, b"\0bootdelay=")? + 1;
    // Back to the block's start: the strings before the anchor that are
    // variables too.
    let mut start = anchor;
    while start > 1 {
        let Some(nul) = binary[..start - 1].iter().rposition(|&b| b == 0) else {
            break;
        };
        let prev = nul + 1;
        if var(&binary[prev..start - 1]).is_none() {
            break;
        }
        start = prev;
    }
    let mut vars = Vec::new();
    for s in binary[start..].split(|&b| b == 0) {
        if s.is_empty() {
            break;
        }
        vars.push(var(s)?);
    }
    vars.iter().any(|(k, _)| k == "bootcmd").then_some(vars)
}

/// `key=value` with a plain key and printable text.
fn var(s: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(s).ok()?;
    let (key, value) = text.split_once('=')?;
    let plain_key = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    let printable = value
        .bytes()
        .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n'));
    (plain_key && printable).then(|| (key.to_string(), value.to_string()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// U-Boot's (non-redundant) environment: CRC32 (little-endian) of the data
/// area, then `key=value\0`... and an empty string, zero-padded to
/// `env_bytes` in all.
pub fn encode(vars: &[(String, String)], env_bytes: usize) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    for (k, v) in vars {
        data.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    data.push(0);
    let room = env_bytes.saturating_sub(4);
    if data.len() > room {
        bail!(
            "the U-Boot environment needs {} bytes, the board's env-bytes leaves {room}",
            data.len()
        );
    }
    data.resize(room, 0);
    let mut block = crc32fast::hash(&data).to_le_bytes().to_vec();
    block.extend_from_slice(&data);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY: &[u8] = b"\x7fcode\0Wrong length %u\n\0%s%d,%d\0bootcmd=run distro_bootcmd\0\
        bootdelay=2\0boot_targets=qfw usb0 virtio0 dhcp \0arch=arm\0\0\x01\x02more code";

    #[test]
    fn default_env_is_the_block_around_bootdelay() {
        let vars = default_env(BINARY).unwrap();
        let keys: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bootcmd", "bootdelay", "boot_targets", "arch"]);
        assert_eq!(vars[2].1, "qfw usb0 virtio0 dhcp ");
        assert_eq!(default_env(b"\0bootdelay=2\0\0"), None, "no bootcmd");
        assert_eq!(default_env(b"no environment here"), None);
    }

    #[test]
    fn bank_carries_the_changes_and_a_good_crc() {
        let dir = tempfile::tempdir().unwrap();
        let bios = dir.path().join("u-boot.bin");
        std::fs::write(&bios, BINARY).unwrap();
        let env = UBootEnv {
            flash_bytes: 1 << 20,
            env_bytes: 4096,
            set: BTreeMap::from([
                ("bootdelay".to_string(), "0".to_string()),
                ("boot_targets".to_string(), "virtio0".to_string()),
                ("kiln".to_string(), "1".to_string()),
            ]),
        };
        let bank = dir.path().join("env.fd");
        write_bank(&bios, &env, &bank).unwrap();
        let data = std::fs::read(&bank).unwrap();
        assert_eq!(data.len(), 1 << 20);
        let crc = u32::from_le_bytes(data[..4].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&data[4..4096]));
        let text = b"bootcmd=run distro_bootcmd\0bootdelay=0\0boot_targets=virtio0\0\
            arch=arm\0kiln=1\0\0";
        assert_eq!(&data[4..4 + text.len()], text);

        let small = UBootEnv {
            env_bytes: 16,
            ..env
        };
        let e = write_bank(&bios, &small, &bank).unwrap_err().to_string();
        assert!(e.contains("env-bytes leaves 12"), "{e}");
    }

    /// Debian's u-boot-qemu, when installed: its default environment is
    /// found whole.
    #[test]
    fn debian_qemu_arm_default_env() {
        let Ok(binary) = std::fs::read("/usr/lib/u-boot/qemu_arm/u-boot.bin") else {
            eprintln!("skipped: u-boot-qemu is not installed (scripts/setup-host.sh installs it)");
            return;
        };
        let vars = default_env(&binary).unwrap();
        let keys: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "bootcmd",
            "bootdelay",
            "boot_targets",
            "kernel_addr_r",
            "distro_bootcmd",
        ] {
            assert!(keys.contains(&key), "{key} missing: {keys:?}");
        }
    }
}
