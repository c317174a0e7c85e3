//! The vmware-ova board's OVA as vSphere reads it: the tar layout, the
//! manifest, the descriptor, the VMDK against the raw image; the same bytes
//! from a second build (and the same files unpacked with `--format ovf`);
//! the errors of a spec's `ova:` section. The OVA's disk is booted in
//! `boot.rs` (`vmware_ova_disk_boots_with_an_ovf_environment_cd`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::util::{kiln, run, scratch, selftest_image};

pub const BOARD: &str = "vmware-ova";
const NAME: &str = "kiln-selftest";
/// The self-test spec's `ova: disk-gib`.
pub const CAPACITY: u64 = 4 << 30;

/// One member of a tar, with the header fields VMware's readers care about.
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
    typeflag: u8,
    magic: Vec<u8>,
    mode: String,
    uid: String,
    gid: String,
}

fn field(h: &[u8], at: usize, len: usize) -> String {
    String::from_utf8_lossy(&h[at..at + len])
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The members of a tar file, read header by header.
pub fn members(ova: &Path) -> Vec<Member> {
    let bytes = std::fs::read(ova).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|b| *b != 0) {
        let h = &bytes[at..at + 512];
        let size = u64::from_str_radix(&field(h, 124, 12), 8).unwrap() as usize;
        let start = at + 512;
        out.push(Member {
            name: field(h, 0, 100),
            data: bytes[start..start + size].to_vec(),
            typeflag: h[156],
            magic: h[257..265].to_vec(),
            mode: field(h, 100, 8),
            uid: field(h, 108, 8),
            gid: field(h, 116, 8),
        });
        at = start + size.div_ceil(512) * 512;
    }
    out
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tool(cmd: &mut Command, install: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}; install {install} (scripts/setup-host.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The OVA of the shared vmware-ova self-test build.
pub fn built_ova() -> PathBuf {
    selftest_image(BOARD).image.with_extension("ova")
}

/// The VMDK of the built OVA, written into `dir`.
pub fn vmdk_of(ova: &Path, dir: &Path) -> PathBuf {
    let vmdk = members(ova).into_iter().nth(2).expect("a third member");
    let path = dir.join(&vmdk.name);
    std::fs::write(&path, vmdk.data).unwrap();
    path
}

#[test]
fn ova_is_laid_out_the_way_vsphere_reads_it() {
    let built = selftest_image(BOARD);
    let ova = built_ova();
    assert!(
        built
            .summary
            .contains(&format!("  ova          {} (", ova.display()))
            && built.summary.contains(", 4 GiB virtual disk)"),
        "the summary shows the OVA:\n{}",
        built.summary
    );

    // ovf first, then the manifest, then the disk; plain ustar, 0:0, 0644.
    let m = members(&ova);
    let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{NAME}.ovf"),
            format!("{NAME}.mf"),
            format!("{NAME}.vmdk")
        ]
    );
    for member in &m {
        assert_eq!(
            member.typeflag, b'0',
            "{}: a regular file, no PAX header",
            member.name
        );
        assert_eq!(member.magic, b"ustar\x0000", "{}: ustar", member.name);
        assert_eq!(
            (
                member.mode.as_str(),
                member.uid.as_str(),
                member.gid.as_str()
            ),
            ("0000644", "0000000", "0000000"),
            "{}",
            member.name
        );
    }

    // Every manifest line is SHA256(file)= <hex> of that member.
    let mf = String::from_utf8(m[1].data.clone()).unwrap();
    let lines: Vec<&str> = mf.lines().collect();
    assert_eq!(
        lines,
        [
            format!("SHA256({NAME}.ovf)= {}", sha256_hex(&m[0].data)),
            format!("SHA256({NAME}.vmdk)= {}", sha256_hex(&m[2].data)),
        ],
        "the manifest matches the members"
    );
    assert!(mf.ends_with('\n'));

    let dir = scratch("ova-structure");
    let ovf_path = dir.join(&m[0].name);
    std::fs::write(&ovf_path, &m[0].data).unwrap();
    let vmdk = vmdk_of(&ova, &dir);

    // Well-formed XML (the DMTF schema is not available here; see README),
    // and the numbers vSphere checks on import.
    tool(
        Command::new("xmllint").arg("--noout").arg(&ovf_path),
        "libxml2-utils",
    );
    let text = String::from_utf8(m[0].data.clone()).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let attr = |tag: &str, name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(tag))
            .and_then(|n| {
                n.attributes()
                    .find(|a| a.name() == name)
                    .map(|a| a.value().to_string())
            })
            .unwrap_or_else(|| panic!("no {tag} {name}"))
    };
    assert_eq!(attr("File", "href"), format!("{NAME}.vmdk"));
    assert_eq!(attr("File", "size"), m[2].data.len().to_string());
    assert_eq!(attr("Disk", "capacity"), CAPACITY.to_string());
    let system_type = doc
        .descendants()
        .find(|n| n.has_tag_name("VirtualSystemType"))
        .and_then(|n| n.text())
        .unwrap();
    assert_eq!(system_type, "vmx-15");
    let dns = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("Property") && n.attributes().any(|a| a.value() == "guestinfo.kiln.dns")
        })
        .unwrap();
    assert_eq!(
        dns.attributes()
            .find(|a| a.name() == "value")
            .unwrap()
            .value(),
        "10.0.2.3",
        "the spec's property default is pre-filled"
    );

    // The VMDK: streamOptimized, clean, and the raw image's bytes.
    let info = tool(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&vmdk),
        "qemu-utils",
    );
    assert!(
        info.contains("\"create-type\": \"streamOptimized\""),
        "{info}"
    );
    assert!(
        info.contains(&format!("\"virtual-size\": {CAPACITY}")),
        "{info}"
    );
    tool(
        Command::new("qemu-img").arg("check").arg(&vmdk),
        "qemu-utils",
    );
    let compare = tool(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&built.image)
            .arg(&vmdk),
        "qemu-utils",
    );
    assert!(compare.contains("Images are identical"), "{compare}");
}

/// A second build gives the same OVA bytes; `--format ovf` writes the same
/// three files unpacked.
#[test]
fn ova_is_reproducible_and_ovf_is_the_same_set() {
    let first = built_ova();
    let dir = scratch("ova-again");
    let r = run(kiln()
        .arg("build")
        .arg(crate::util::fixture("selftest/spec.yaml"))
        .args([
            "--board", BOARD, "--format", "ova", "--format", "ovf", "--out",
        ])
        .arg(&dir))
    .success();
    assert!(r.stderr.contains("  ovf  "), "{}", r.stderr);
    let second = dir.join(format!("{NAME}.ova"));
    assert!(
        std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(),
        "two builds of one spec gave different OVAs"
    );
    for member in members(&first) {
        let unpacked = std::fs::read(dir.join(&member.name)).unwrap();
        assert!(
            unpacked == member.data,
            "{} differs between --format ovf and the OVA",
            member.name
        );
    }
}

#[test]
fn bad_ova_settings_fail_before_any_work() {
    let cases = [
        ("disk-gib: 0", "spec.yaml:5:3: ova.disk-gib: a 0 GiB virtual disk is smaller than the image (642 MiB); use at least 1 GiB"),
        ("properties: {rol: server}", "spec.yaml:5:3: ova.properties.rol: unknown vApp property \"rol\"; use one of role, "),
        ("properties:\n    ip: 10.0.0.5/33", "spec.yaml:6:5: ova.properties.ip: the default \"10.0.0.5/33\" of vApp property \"ip\" is not an IPv4 address with prefix length"),
        ("cpus: 512", "spec.yaml:5:3: ova.cpus: 512 virtual CPUs is out of range; use 1 to 256"),
        ("memory-mib: 100", "spec.yaml:5:3: ova.memory-mib: 100 MiB of memory is out of range"),
    ];
    for (i, (ova, want)) in cases.iter().enumerate() {
        let dir = scratch(&format!("ova-bad-{i}"));
        let spec = dir.join("spec.yaml");
        std::fs::write(
            &spec,
            format!("name: bad\nboard: {BOARD}\nk3s: {{test-double: true}}\nova:\n  {ova}\n"),
        )
        .unwrap();
        let r = run(kiln()
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(dir.join("out")));
        let r = r.failure(1, want);
        assert!(
            !r.stderr.contains("building in-image binaries"),
            "{ova}: work started before the error: {}",
            r.stderr
        );
        assert!(!dir.join("out").exists(), "{ova}: output left behind");
    }
    let dir = scratch("ova-bad-arch");
    run(kiln()
        .args([
            "build",
            "--board",
            "qemu-aarch64",
            "--format",
            "ova",
            "--out",
        ])
        .arg(&dir))
    .failure(
        1,
        "board qemu-aarch64 is arm64: the OVA/OVF outputs are for vSphere on x86_64",
    );
}
