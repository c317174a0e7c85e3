//! OVA: the OVF descriptor, its manifest and the VMDK in one tar, the file
//! vSphere's Deploy OVF Template wizard, `govc import.ova` and ovftool take.
//!
//! [`Ova`] goes from the raw image to the `.ova` in three steps: the VMDK
//! ([`super::vmdk`]) is written first into a temporary directory beside the
//! output (the descriptor needs its exact size), then the descriptor is
//! rendered ([`super::ovf`]), then the three are packed. [`Ova::write_set`]
//! writes the same three files unpacked (`--format ovf`).
//!
//! The tar is what VMware's readers insist on, as other projects learned:
//!
//! - the `.ovf` is the first member, then the `.mf`, then the disk (ovftool
//!   and Workstation: "Did not find an .ovf file at the beginning of the OVA
//!   package");
//! - plain ustar headers, never PAX extended headers, which vSphere refuses;
//!   owner 0:0, mode 0644, mtime = `SOURCE_DATE_EPOCH`, bare member names
//!   (no `./`), no user or group names;
//! - manifest lines exactly `SHA256(<file>)= <hex>` (`sha256sum --tag`'s
//!   `SHA256 (<file>) = ` and `SHA2-256(...)` fail with "Invalid OVF checksum
//!   algorithm"), for the `.ovf` and the `.vmdk`.
//!
//! Checksums are computed while writing: the descriptor's in memory, the
//! VMDK's by its writer, and again while it is copied into the tar, so a
//! disk that changed in between fails the build instead of shipping a
//! manifest that does not match.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use super::ovf::{self, DiskRef, OvfSpec};
use super::vmdk::{self, VmdkOptions, VmdkWritten};
use super::{write_atomically, Container, Written};

/// The largest member a ustar header can describe (11 octal digits).
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// An OVA (or unpacked OVF set) of a kiln appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ova {
    /// The descriptor. `ovf.disk.capacity_bytes` is the virtual capacity the
    /// VMDK gets; the other `disk` fields are filled in from the VMDK as
    /// written, and `ovf.adapter` is also the VMDK's adapter type.
    pub ovf: OvfSpec,
    /// Identifies the image (the spec's hash): the VMDK's content ID.
    pub seed: Vec<u8>,
    /// Modification time of every tar member (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
}

/// The three files of an unpacked OVF set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfSet {
    pub ovf: Written,
    pub mf: Written,
    pub vmdk: VmdkWritten,
}

impl Container for Ova {
    fn extension(&self) -> &'static str {
        "ova"
    }

    fn write(&self, raw: &Path, out: &Path) -> Result<Written> {
        self.write_ova(raw, out).map(|(ova, _)| ova)
    }
}

impl Ova {
    /// [`Container::write`], also telling about the VMDK inside.
    pub fn write_ova(&self, raw: &Path, out: &Path) -> Result<(Written, VmdkWritten)> {
        self.check()?;
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {}; check its permissions", dir.display()))?;
        // The VMDK is a member of the tar: write it under its final member
        // name in a temporary directory beside the output (same file system,
        // removed when done).
        let scratch = tempfile::Builder::new()
            .prefix(".kiln-ova-")
            .tempdir_in(dir)
            .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
        let vmdk = self.write_vmdk(raw, &scratch.path().join(self.vmdk_name()))?;
        let ovf = self.render(&vmdk)?;
        let mf = manifest(&[
            (&self.ovf_name(), &sha256(ovf.as_bytes())),
            (&self.vmdk_name(), &vmdk.file.sha256),
        ]);
        write_atomically(out, |w| {
            let mut tar = tar::Builder::new(w);
            let mtime = self.source_date_epoch;
            append(
                &mut tar,
                &self.ovf_name(),
                ovf.len() as u64,
                mtime,
                ovf.as_bytes(),
            )?;
            append(
                &mut tar,
                &self.mf_name(),
                mf.len() as u64,
                mtime,
                mf.as_bytes(),
            )?;
            let file = File::open(&vmdk.file.path).context("opening the VMDK to pack it")?;
            let mut reader = HashingReader::new(file.take(vmdk.file.bytes));
            append(
                &mut tar,
                &self.vmdk_name(),
                vmdk.file.bytes,
                mtime,
                &mut reader,
            )?;
            ensure!(
                reader.bytes == vmdk.file.bytes && reader.sha256() == vmdk.file.sha256,
                "the VMDK changed while it was packed into the OVA; build again"
            );
            tar.into_inner().context("finishing the OVA")?;
            Ok(())
        })
        .with_context(|| format!("writing {}", out.display()))
        .map(|ova| (ova, vmdk))
    }

    /// Writes `<name>.vmdk`, `<name>.ovf` and `<name>.mf` into `dir` (each
    /// atomically, the manifest last).
    pub fn write_set(&self, raw: &Path, dir: &Path) -> Result<OvfSet> {
        self.check()?;
        let vmdk = self.write_vmdk(raw, &dir.join(self.vmdk_name()))?;
        let ovf_text = self.render(&vmdk)?;
        let ovf = write_atomically(&dir.join(self.ovf_name()), |w| {
            Ok(w.write_all(ovf_text.as_bytes())?)
        })?;
        let mf_text = manifest(&[
            (&self.ovf_name(), &ovf.sha256),
            (&self.vmdk_name(), &vmdk.file.sha256),
        ]);
        let mf = write_atomically(&dir.join(self.mf_name()), |w| {
            Ok(w.write_all(mf_text.as_bytes())?)
        })?;
        Ok(OvfSet { ovf, mf, vmdk })
    }

    fn ovf_name(&self) -> String {
        format!("{}.ovf", self.ovf.name)
    }

    fn mf_name(&self) -> String {
        format!("{}.mf", self.ovf.name)
    }

    fn vmdk_name(&self) -> String {
        format!("{}.vmdk", self.ovf.name)
    }

    /// Everything that can be wrong before the disk is written: the
    /// descriptor's values and the tar's limits.
    pub fn check(&self) -> Result<()> {
        ovf::check_name(&self.ovf.name)?;
        ensure!(
            self.source_date_epoch <= USTAR_MAX_SIZE,
            "SOURCE_DATE_EPOCH {} does not fit a tar header (11 octal digits); use an earlier epoch",
            self.source_date_epoch
        );
        // Render with stand-in disk numbers: fails on bad CPUs, memory or
        // properties now, not after minutes of compression.
        self.render(&VmdkWritten {
            file: Written {
                path: self.vmdk_name().into(),
                bytes: vmdk::SECTOR,
                sha256: [0; 32],
            },
            capacity: self.ovf.disk.capacity_bytes,
            populated: 0,
        })
        .map(drop)
    }

    fn write_vmdk(&self, raw: &Path, path: &Path) -> Result<VmdkWritten> {
        let written = vmdk::write(
            raw,
            path,
            &VmdkOptions {
                capacity: self.ovf.disk.capacity_bytes,
                adapter: self.ovf.adapter,
                seed: self.seed.clone(),
            },
        )?;
        ensure!(
            written.file.bytes <= USTAR_MAX_SIZE,
            "the VMDK is {} bytes, more than a tar member can hold (8 GiB); write the unpacked OVF set instead",
            written.file.bytes
        );
        Ok(written)
    }

    fn render(&self, vmdk: &VmdkWritten) -> Result<String> {
        let mut spec = self.ovf.clone();
        spec.disk = DiskRef {
            file_name: self.vmdk_name(),
            file_size: vmdk.file.bytes,
            capacity_bytes: vmdk.capacity,
            populated_bytes: vmdk.populated,
        };
        ovf::render(&spec)
    }
}

/// The OVF manifest: one line `SHA256(<file>)= <hex>` a file, in order.
pub fn manifest(files: &[(&str, &[u8; 32])]) -> String {
    files
        .iter()
        .map(|(name, sha)| format!("SHA256({name})= {}\n", crate::packages::hex(&sha[..])))
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Appends one regular file with a plain ustar header.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .with_context(|| format!("{name} cannot be a tar member name; use a shorter name"))?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_cksum();
    tar.append(&h, data)
        .with_context(|| format!("adding {name} to the OVA; is the disk full?"))
}

/// A reader that counts and hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn sha256(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::ovf::kiln_properties;
    use crate::output::test_util::{run, tool};
    use std::collections::BTreeMap;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::process::Command;

    const EPOCH: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    fn appliance() -> Ova {
        let mut ovf = crate::output::ovf::tests::spec();
        ovf.disk.capacity_bytes = 1 << 30;
        ovf.properties = kiln_properties(&BTreeMap::new()).unwrap();
        Ova {
            ovf,
            seed: b"ova test".to_vec(),
            source_date_epoch: EPOCH,
        }
    }

    fn raw_image(dir: &Path) -> PathBuf {
        let path = dir.join("disk.raw");
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[0x55; 70_000], 0).unwrap();
        f.write_all_at(b"the data partition", 40 << 20).unwrap();
        path
    }

    #[test]
    fn manifest_lines_are_exactly_what_vmware_parses() {
        let mf = manifest(&[("a.ovf", &[0xab; 32]), ("a.vmdk", &[1; 32])]);
        assert_eq!(
            mf,
            format!(
                "SHA256(a.ovf)= {}\nSHA256(a.vmdk)= {}\n",
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
    }

    #[test]
    fn ova_members_are_ordered_plain_ustar() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path());
        let out = dir.path().join("out/node.ova");
        let written = appliance().write(&raw, &out).unwrap();
        assert_eq!(written.bytes, std::fs::metadata(&out).unwrap().len());
        assert_eq!(written.bytes % 512, 0);
        let on_disk: [u8; 32] = Sha256::digest(std::fs::read(&out).unwrap()).into();
        assert_eq!(on_disk, written.sha256);
        // Only the OVA is left in the output directory.
        let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node.ova"]);

        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        let mut members = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                h.as_ustar().map(|u| &u.magic[..]),
                Some(&b"ustar\0"[..]),
                "a plain ustar header"
            );
            assert_eq!(
                h.entry_type(),
                tar::EntryType::Regular,
                "no PAX or GNU extension entries"
            );
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mode().unwrap(), 0o644);
            assert_eq!(h.mtime().unwrap(), EPOCH);
            assert_eq!(h.username().unwrap(), Some(""));
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            members.push((name, data));
        }
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["kiln-node.ovf", "kiln-node.mf", "kiln-node.vmdk"]);

        let (ovf, mf, vmdk) = (&members[0].1, &members[1].1, &members[2].1);
        let ovf = std::str::from_utf8(ovf).unwrap();
        assert!(ovf.contains(&format!(
            r#"<File ovf:href="kiln-node.vmdk" ovf:id="file1" ovf:size="{}"/>"#,
            vmdk.len()
        )));
        assert!(ovf.contains(r#"ovf:capacity="1073741824""#));
        assert!(ovf.contains(&format!(r#"ovf:populatedSize="{}""#, 3 * vmdk::GRAIN_BYTES)));
        assert_eq!(
            std::str::from_utf8(mf).unwrap(),
            manifest(&[
                ("kiln-node.ovf", &sha256(ovf.as_bytes())),
                ("kiln-node.vmdk", &sha256(vmdk))
            ])
        );

        if tool("tar").is_some() {
            let listing = run(Command::new("tar")
                .args(["--numeric-owner", "-tvf"])
                .arg(&out)
                .env("TZ", "UTC"));
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), 3, "{listing}");
            for (line, name) in
                lines
                    .iter()
                    .zip(["kiln-node.ovf", "kiln-node.mf", "kiln-node.vmdk"])
            {
                assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
                assert!(line.contains(" 2024-01-01 00:00 "), "{line}");
                assert!(line.ends_with(&format!(" {name}")), "{line}");
            }
        }
    }

    #[test]
    fn manifest_verifies_with_sha256sum_and_the_disk_with_qemu_img() {
        if tool("tar").is_none() || tool("sha256sum").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path());
        let out = dir.path().join("node.ova");
        appliance().write(&raw, &out).unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        run(Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(&x));
        // "SHA256(f)= hex" → sha256sum's "hex  f".
        let mf = std::fs::read_to_string(x.join("kiln-node.mf")).unwrap();
        let sums: String = mf
            .lines()
            .map(|l| {
                let (file, hex) = l
                    .strip_prefix("SHA256(")
                    .unwrap()
                    .split_once(")= ")
                    .unwrap();
                format!("{hex}  {file}\n")
            })
            .collect();
        std::fs::write(x.join("SHA256SUMS"), sums).unwrap();
        let ok = run(Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&x));
        assert_eq!(ok, "kiln-node.ovf: OK\nkiln-node.vmdk: OK\n");
        if tool("qemu-img").is_some() {
            run(Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "vmdk"])
                .arg(&raw)
                .arg(x.join("kiln-node.vmdk")));
        }
    }

    #[test]
    fn same_input_gives_same_ova() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path());
        let a = appliance().write(&raw, &dir.path().join("a.ova")).unwrap();
        let b = appliance().write(&raw, &dir.path().join("b.ova")).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        let mut later = appliance();
        later.source_date_epoch += 1;
        let c = later.write(&raw, &dir.path().join("c.ova")).unwrap();
        assert_ne!(a.sha256, c.sha256);
    }

    #[test]
    fn ovf_set_is_the_ova_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path());
        let set = appliance()
            .write_set(&raw, &dir.path().join("set"))
            .unwrap();
        let ova = appliance().write(&raw, &dir.path().join("a.ova")).unwrap();
        let mut archive = tar::Archive::new(File::open(&ova.path).unwrap());
        for (entry, written) in archive
            .entries()
            .unwrap()
            .zip([&set.ovf, &set.mf, &set.vmdk.file])
        {
            let mut data = Vec::new();
            entry.unwrap().read_to_end(&mut data).unwrap();
            assert!(
                data == std::fs::read(&written.path).unwrap(),
                "{}",
                written.path.display()
            );
            assert_eq!(sha256(&data), written.sha256);
        }
    }

    #[test]
    fn bad_input_fails_before_the_disk_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path());
        let out = dir.path().join("o/bad.ova");
        let mut bad = appliance();
        bad.ovf.memory_mib = 100;
        let err = format!("{:#}", bad.write(&raw, &out).unwrap_err());
        assert!(err.contains("100 MiB of memory is out of range"), "{err}");
        let mut bad = appliance();
        bad.ovf.disk.capacity_bytes = 32 << 20;
        let err = format!("{:#}", bad.write(&raw, &out).unwrap_err());
        assert!(
            err.contains("is smaller than the raw image (64 MiB)"),
            "{err}"
        );
        let mut bad = appliance();
        bad.source_date_epoch = 1 << 40;
        let err = format!("{:#}", bad.write(&raw, &out).unwrap_err());
        assert!(err.contains("does not fit a tar header"), "{err}");
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}
