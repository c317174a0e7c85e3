//! The binaries kiln puts in every image (`kiln-init`, `kiln-firstboot`) and
//! the k3s test double: built from this checkout for the board's arch as
//! static executables, and checked to be what the board needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::board::{data_dir, Arch};

/// Static in-image executables for one arch.
pub struct NodeBinaries {
    pub init: Vec<u8>,
    pub firstboot: Vec<u8>,
    pub k3s_double: Vec<u8>,
}

/// Builds (or finds up to date) the in-image binaries for `arch`.
/// `KILN_NODE_BIN_DIR` points at prebuilt ones instead.
pub fn build(arch: Arch) -> Result<NodeBinaries> {
    let dir = match std::env::var_os("KILN_NODE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => script_build(arch)?,
    };
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        check_static_elf(&data, arch).with_context(|| format!("checking {}", path.display()))?;
        Ok(data)
    };
    Ok(NodeBinaries {
        init: read("kiln-init")?,
        firstboot: read("kiln-firstboot")?,
        k3s_double: read("k3s-double")?,
    })
}

/// The script that knows each target's toolchain, linker and flags; kiln
/// runs it rather than repeating that knowledge, so a build by hand
/// (`scripts/build-node-binaries.sh aarch64`) and kiln's own are the same.
const SCRIPT: &str = "scripts/build-node-binaries.sh";
/// The script's exit status when the cross toolchain is missing.
const TOOLCHAIN_MISSING: i32 = 3;

/// Runs [`SCRIPT`] for `arch` into `target/node` of the checkout and
/// returns the directory holding the binaries.
fn script_build(arch: Arch) -> Result<PathBuf> {
    let root = data_dir();
    let target = arch.rust_target();
    log::info!("building kiln-init, kiln-firstboot and the k3s double for {target}");
    let out = Command::new("bash")
        .arg(root.join(SCRIPT))
        .arg(target)
        .arg(root.join("target/node"))
        .output()
        .with_context(|| format!("running {SCRIPT} (is bash installed?)"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(TOOLCHAIN_MISSING) => bail!("{}", toolchain_missing(target, &err)),
        _ => bail!(
            "building the in-image binaries for {target} failed ({SCRIPT}):\n{}",
            err.trim()
        ),
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout
        .lines()
        .next()
        .with_context(|| format!("{SCRIPT} printed no binary paths"))?;
    let dir = Path::new(first)
        .parent()
        .context("binary path has no directory")?;
    Ok(dir.to_path_buf())
}

/// One message that says what is missing and what to run, from the
/// script's last `error:` line.
fn toolchain_missing(target: &str, script_stderr: &str) -> String {
    let what = script_stderr
        .lines()
        .rev()
        .find_map(|l| l.split_once("error: ").map(|(_, e)| e))
        .map(|e| e.split("; run ").next().unwrap_or(e))
        .unwrap_or("unknown");
    format!(
        "the cross toolchain for {target} is missing ({what}); install it once with \
         `scripts/setup-cross.sh` (as root: Debian's Rust 1.85 with the arm64/armhf \
         standard libraries and the gcc cross linkers), then build again"
    )
}

/// Refuses a binary for the wrong machine or one that needs a dynamic
/// loader: the initramfs has no libc, and a wrong-arch binary would only
/// show up as a kernel panic at boot.
pub fn check_static_elf(data: &[u8], arch: Arch) -> Result<()> {
    let info = elf_info(data).context("not an ELF executable")?;
    if info.machine != elf_machine(arch) {
        bail!(
            "built for ELF machine {:#x}, the board needs {:#x} ({})",
            info.machine,
            elf_machine(arch),
            arch.debian()
        );
    }
    if info.has_interpreter {
        bail!("dynamically linked (has PT_INTERP); in-image binaries must be static");
    }
    Ok(())
}

pub struct ElfInfo {
    pub machine: u16,
    pub class64: bool,
    pub has_interpreter: bool,
}

pub fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::Amd64 => 62,
        Arch::Arm64 => 183,
        Arch::Armhf => 40,
    }
}

/// Reads the few ELF header fields kiln checks (little-endian only: every
/// kiln arch is).
pub fn elf_info(data: &[u8]) -> Option<ElfInfo> {
    if data.get(..4)? != b"\x7fELF" || data.get(5)? != &1 {
        return None;
    }
    let class64 = *data.get(4)? == 2;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if class64 {
        (
            u64_at(32)? as usize,
            u16_at(54)? as usize,
            u16_at(56)? as usize,
        )
    } else {
        (
            u32_at(28)? as usize,
            u16_at(42)? as usize,
            u16_at(44)? as usize,
        )
    };
    let has_interpreter = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(3));
    Some(ElfInfo {
        machine,
        class64,
        has_interpreter,
    })
}

/// The byte string the k3s test double embeds, so an image built with it
/// is labelled as such whatever path it came from.
pub const K3S_DOUBLE_MARKER: &[u8] = b"KILN-K3S-TEST-DOUBLE";

pub fn is_k3s_double(binary: &[u8]) -> bool {
    binary
        .windows(K3S_DOUBLE_MARKER.len())
        .any(|w| w == K3S_DOUBLE_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries_are_dynamic_and_detected() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let info = elf_info(&me).unwrap();
        assert_eq!(info.machine, elf_machine(Arch::Amd64));
        let e = check_static_elf(&me, Arch::Amd64).unwrap_err();
        assert!(e.to_string().contains("dynamically linked"), "{e}");
        let e = check_static_elf(&me, Arch::Arm64).unwrap_err();
        assert!(e.to_string().contains("machine"), "{e}");
        assert!(check_static_elf(b"#!/bin/sh\n", Arch::Amd64).is_err());
    }

    #[test]
    fn missing_toolchain_message_says_what_to_run() {
        let stderr = "build-node-binaries: error: /nonexistent/cargo (Debian's cargo-web) \
                      is missing; run scripts/setup-cross.sh (as root) first\n";
        let msg = toolchain_missing("aarch64-unknown-linux-gnu", stderr);
        assert_eq!(
            msg,
            "the cross toolchain for aarch64-unknown-linux-gnu is missing (/nonexistent/cargo \
             (Debian's cargo-web) is missing); install it once with `scripts/setup-cross.sh` \
             (as root: Debian's Rust 1.85 with the arm64/armhf standard libraries and the gcc \
             cross linkers), then build again"
        );
    }

    #[test]
    fn double_marker_is_found() {
        assert!(is_k3s_double(b"xxKILN-K3S-TEST-DOUBLExx"));
        assert!(!is_k3s_double(b"k3s"));
    }
}
