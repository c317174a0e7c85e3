//! The image spec: the YAML file a user writes to describe one image.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file,
//! line and column, so a typo never silently builds the wrong image.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An image spec as written, with relative paths still relative to the spec.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// Output name: `out/<name>.img`. Defaults to the board name.
    pub name: Option<String>,
    /// Board file name (`boards/<board>.yaml`).
    pub board: String,
    /// Debian packages added to the board's and kiln's base set.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Directories copied over the root, in order; `*.tera` files rendered.
    #[serde(default)]
    pub overlays: Vec<PathBuf>,
    /// Where the k3s node binary comes from.
    pub k3s: Option<K3sSource>,
    /// Node config baked into the image (`/usr/lib/kiln/node.yaml`), inline.
    pub node: Option<serde_yaml::Value>,
    /// Node config baked into the image, from a file next to the spec.
    pub node_file: Option<PathBuf>,
    /// Image tarballs for k3s's air-gap import: baked under
    /// `/usr/lib/kiln/airgap-images`, linked into k3s's images directory
    /// on the node.
    #[serde(default)]
    pub airgap_images: Vec<AirgapImage>,
    /// Debian mirror URL; default: the host's apt sources.
    pub mirror: Option<String>,
    /// Timestamp clamp for reproducible output; default: a fixed epoch.
    pub source_date_epoch: Option<u64>,
    /// A kernel the user supplies instead of the board's Debian kernel
    /// (Jetson Orin: JetPack's L4T kernel, modules and device tree).
    pub kernel: Option<KernelSpec>,
    /// Also build an installer stick image (`<name>-installer.img`), with
    /// these rules for the target disk. `kiln build --installer` is the
    /// same as `install: {}`.
    pub install: Option<InstallSpec>,
    /// The virtual machine of the OVA/OVF outputs (vSphere).
    pub ova: Option<OvaSettings>,
}

/// A supplied kernel: each file by path (relative to the spec) or URL,
/// always with its sha256.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelSpec {
    /// The kernel image the boot loader starts (arm64: `Image`).
    pub image: FileSource,
    /// A tar (plain, .gz, .xz or .zst) of `lib/modules/<version>/`.
    pub modules: FileSource,
    /// The board's device tree blob.
    pub dtb: Option<FileSource>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSource {
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub sha256: String,
}

/// How the installer picks and treats its target disk.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstallSpec {
    /// The disk to install to (`/dev/nvme0n1`); default: the largest
    /// disk that is not removable, not on USB and not the stick.
    pub device: Option<String>,
    /// Overwrite a disk that has partitions (otherwise it is refused).
    #[serde(default)]
    pub wipe: bool,
}

/// `ova:` in a spec: the VM the OVA describes and the defaults its deploy
/// wizard shows. Everything is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvaSettings {
    /// Virtual CPUs (default 2).
    pub cpus: Option<u32>,
    /// Memory in MiB (default 4096).
    pub memory_mib: Option<u64>,
    /// Virtual disk capacity in GiB (default 32); the data partition grows
    /// to fill it on first boot. Only written data is stored in the VMDK.
    pub disk_gib: Option<u64>,
    /// vApp property defaults by short name (`role`, `ip`, `dns`, ...):
    /// pre-filled in the wizard.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// Where the k3s binary comes from. Exactly one way must be given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct K3sSource {
    /// A local binary.
    pub path: Option<PathBuf>,
    /// A download URL; needs `sha256`.
    pub url: Option<String>,
    /// Expected sha256 of the binary (hex), checked for `path` and `url`.
    pub sha256: Option<String>,
    /// Use kiln's k3s test double (`tests/k3s-double`). The image says so.
    #[serde(default)]
    pub test_double: bool,
    /// Version label for the summary and os-release (e.g. `v1.31.4+k3s1`).
    pub version: Option<String>,
}

/// One air-gap image tarball; its checksum is required.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AirgapImage {
    /// The tarball, relative to the spec.
    pub path: PathBuf,
    /// Its sha256 (hex), checked at build time.
    pub sha256: String,
}

/// The names k3s imports from its images directory (it ignores, with an
/// error in its log, anything else; `.txt` lists images to pull, which an
/// air-gapped node cannot).
pub const AIRGAP_SUFFIXES: &[&str] = &[
    ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.bz2", ".tbz", ".tar.lz4",
];

/// A spec error with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

impl SpecError {
    /// Places a serde_yaml error (syntax, unknown key, wrong type) in `file`.
    pub fn from_yaml(e: &serde_yaml::Error, file: &Path) -> SpecError {
        let loc = e.location();
        let text = e.to_string();
        SpecError {
            file: file.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            // serde_yaml appends "at line L column C"; we print that ourselves.
            message: text.split(" at line ").next().unwrap_or(&text).to_string(),
        }
    }
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> anyhow::Result<Spec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading spec {}: {e}; check the path", path.display()))?;
        Ok(Spec::parse(&text, path)?)
    }

    /// Parses spec text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Spec, SpecError> {
        let spec: Spec = serde_yaml::from_str(text).map_err(|e| SpecError::from_yaml(&e, file))?;
        spec.check(text, file)?;
        Ok(spec)
    }

    fn check(&self, text: &str, file: &Path) -> Result<(), SpecError> {
        let err = |key: &str, message: String| {
            let (line, column) = locate_key(text, key);
            SpecError {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        if let Some(name) = &self.name {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            if !ok {
                return Err(err(
                    "name",
                    format!("name `{name}` must be letters, digits, `-`, `_` or `.` (it names the output file)"),
                ));
            }
        }
        if let Some(k3s) = &self.k3s {
            let ways = [k3s.path.is_some(), k3s.url.is_some(), k3s.test_double];
            match ways.iter().filter(|w| **w).count() {
                1 => {}
                0 => {
                    return Err(err(
                        "k3s",
                        "k3s needs one of `path`, `url` or `test-double: true`".into(),
                    ))
                }
                _ => {
                    return Err(err(
                        "k3s",
                        "k3s takes only one of `path`, `url` or `test-double`".into(),
                    ))
                }
            }
            if k3s.url.is_some() && k3s.sha256.is_none() {
                return Err(err(
                    "url",
                    "k3s `url` needs `sha256` so the download can be verified".into(),
                ));
            }
            if let Some(sum) = &k3s.sha256 {
                if !is_sha256(sum) {
                    return Err(err(
                        "sha256",
                        format!("k3s sha256 `{sum}` is not 64 hex digits"),
                    ));
                }
            }
        }
        if let Some(k) = &self.kernel {
            let files = [
                ("image", Some(&k.image)),
                ("modules", Some(&k.modules)),
                ("dtb", k.dtb.as_ref()),
            ];
            for (key, source) in files {
                let Some(source) = source else { continue };
                if source.path.is_some() == source.url.is_some() {
                    return Err(err(
                        key,
                        format!("kernel {key} needs exactly one of `path` or `url`"),
                    ));
                }
                let sum = &source.sha256;
                if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(err(
                        key,
                        format!("kernel {key} sha256 `{sum}` is not 64 hex digits"),
                    ));
                }
            }
        }
        if let Some(dev) = self.install.as_ref().and_then(|i| i.device.as_ref()) {
            let ok = dev.starts_with("/dev/")
                && dev.len() > 5
                && dev
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-_.:".contains(c));
            if !ok {
                return Err(err(
                    "device",
                    format!("install device `{dev}` must be a /dev path like /dev/nvme0n1"),
                ));
            }
        }
        let mut names = Vec::new();
        for image in &self.airgap_images {
            let name = image
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            if !AIRGAP_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
                return Err(err(
                    "airgap-images",
                    format!(
                        "air-gap image `{}` is not a tarball k3s imports; name it {}",
                        image.path.display(),
                        AIRGAP_SUFFIXES.join(", ")
                    ),
                ));
            }
            if !is_sha256(&image.sha256) {
                return Err(err(
                    "airgap-images",
                    format!(
                        "air-gap image `{}`: sha256 `{}` is not 64 hex digits",
                        image.path.display(),
                        image.sha256
                    ),
                ));
            }
            if names.contains(&name) {
                return Err(err(
                    "airgap-images",
                    format!("two air-gap images are named `{name}`; they share one directory on the node"),
                ));
            }
            names.push(name);
        }
        if self.node.is_some() && self.node_file.is_some() {
            return Err(err(
                "node-file",
                "give the baked node config as `node` or `node-file`, not both".into(),
            ));
        }
        Ok(())
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Finds the 1-based line and column of `key:` in YAML text, for errors that
/// serde cannot place (semantic checks after parsing).
pub fn locate_key(text: &str, key: &str) -> (Option<usize>, Option<usize>) {
    locate_key_from(text, 0, key)
}

/// [`locate_key`] for the first of `keys` found inside the top-level
/// section `section` (after `section:`), else `section:` itself.
pub fn locate_in(text: &str, section: &str, keys: &[&str]) -> (Option<usize>, Option<usize>) {
    let Some(start) = text
        .lines()
        .position(|l| l.starts_with(&format!("{section}:")))
    else {
        return (None, None);
    };
    keys.iter()
        .map(|k| locate_key_from(text, start + 1, k))
        .find(|(line, _)| line.is_some())
        .unwrap_or((Some(start + 1), Some(1)))
}

fn locate_key_from(text: &str, skip: usize, key: &str) -> (Option<usize>, Option<usize>) {
    for (i, line) in text.lines().enumerate().skip(skip) {
        let trimmed = line.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if trimmed.starts_with(&format!("{key}:")) {
            let col = line.len() - trimmed.len() + 1;
            return (Some(i + 1), Some(col));
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("spec.yaml"))
    }

    #[test]
    fn minimal_spec_parses() {
        let s = parse("board: qemu-x86_64\n").unwrap();
        assert_eq!(s.board, "qemu-x86_64");
        assert!(s.packages.is_empty());
    }

    #[test]
    fn unknown_key_is_placed() {
        let e = parse("board: qemu-x86_64\npackagez: [a]\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
        assert!(e.message.contains("unknown field `packagez`"), "{e}");
        assert!(
            e.to_string().starts_with("spec.yaml:2:1: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn malformed_yaml_is_placed() {
        let e = parse("board: qemu-x86_64\npackages: [a, b\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn k3s_url_needs_checksum() {
        let e = parse("board: b\nk3s:\n  url: https://example.invalid/k3s\n").unwrap_err();
        assert!(e.message.contains("needs `sha256`"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn k3s_needs_exactly_one_source() {
        let e = parse("board: b\nk3s:\n  path: ./k3s\n  test-double: true\n").unwrap_err();
        assert!(e.message.contains("only one"), "{e}");
        let e = parse("board: b\nk3s: {}\n").unwrap_err();
        assert!(e.message.contains("needs one of"), "{e}");
    }

    #[test]
    fn supplied_kernel_is_checked() {
        let sum = "a".repeat(64);
        let s = parse(&format!(
            "board: b\nkernel:\n  image: {{path: Image, sha256: {sum}}}\n  modules: {{url: https://x.invalid/m.tar, sha256: {sum}}}\n"
        ))
        .unwrap();
        assert_eq!(
            s.kernel.unwrap().image.path.unwrap(),
            PathBuf::from("Image")
        );
        let e = parse(&format!(
            "board: b\nkernel:\n  image: {{path: Image, sha256: {sum}}}\n  modules: {{sha256: {sum}}}\n"
        ))
        .unwrap_err();
        assert!(
            e.message.contains("kernel modules needs exactly one of"),
            "{e}"
        );
        assert_eq!(e.line, Some(4));
        let e =
            parse("board: b\nkernel:\n  image: {path: Image}\n  modules: {path: m}\n").unwrap_err();
        assert!(e.message.contains("missing field `sha256`"), "{e}");
        let e = parse(&format!(
            "board: b\nkernel:\n  image: {{path: I, sha256: {sum}}}\n  modules: {{path: m, sha256: {sum}}}\n  dtb: {{path: d, sha256: nope}}\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("kernel dtb sha256 `nope`"), "{e}");
    }

    #[test]
    fn install_section_is_checked() {
        let s = parse("board: b\ninstall: {device: /dev/nvme0n1, wipe: true}\n").unwrap();
        let i = s.install.unwrap();
        assert_eq!((i.device.as_deref(), i.wipe), (Some("/dev/nvme0n1"), true));
        let e = parse("board: b\ninstall:\n  device: nvme0n1 x\n").unwrap_err();
        assert!(e.message.contains("must be a /dev path"), "{e}");
        assert_eq!(e.line, Some(3));
        let e = parse("board: b\ninstall: {target: /dev/sda}\n").unwrap_err();
        assert!(e.message.contains("unknown field `target`"), "{e}");
    }

    #[test]
    fn bad_name_is_rejected() {
        let e = parse("board: b\nname: ../evil\n").unwrap_err();
        assert!(e.message.contains("names the output file"), "{e}");
    }

    #[test]
    fn airgap_images_need_a_tarball_name_a_checksum_and_distinct_names() {
        let sum = "ab".repeat(32);
        let ok = format!(
            "board: b\nairgap-images:\n  - path: img/a.tar.zst\n    sha256: {sum}\n  - {{path: b.TAR, sha256: {sum}}}\n"
        );
        let s = parse(&ok).unwrap();
        assert_eq!(s.airgap_images.len(), 2);
        assert_eq!(s.airgap_images[0].path, Path::new("img/a.tar.zst"));
        for (text, why, line) in [
            (
                format!("board: b\nairgap-images:\n  - {{path: a.zip, sha256: {sum}}}\n"),
                "air-gap image `a.zip` is not a tarball k3s imports; name it .tar, .tar.gz",
                2,
            ),
            (
                "board: b\nairgap-images:\n  - {path: a.tar, sha256: 1234}\n".to_string(),
                "air-gap image `a.tar`: sha256 `1234` is not 64 hex digits",
                2,
            ),
            (
                format!("board: b\nairgap-images:\n  - {{path: x/a.tar, sha256: {sum}}}\n  - {{path: y/a.tar, sha256: {sum}}}\n"),
                "two air-gap images are named `a.tar`",
                2,
            ),
            (
                "board: b\nairgap-images:\n  - {path: a.tar}\n".to_string(),
                "missing field `sha256`",
                3,
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(why), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
        }
    }
}
