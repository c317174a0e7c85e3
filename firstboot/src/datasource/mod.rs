//! Where a node finds its `node.yaml` on the first boot.
//!
//! Each datasource is one small type behind [`Datasource`]; [`all`] lists
//! them in the order they are tried, and the first that has a config wins.
//! `Ok(None)` means "not here, try the next one"; `Err` means "here, but
//! unreadable", and stops the search: a node never silently falls back to
//! another config.
//!
//! The order (DESIGN.md, "Node configuration"): kernel command line,
//! QEMU fw_cfg, VMware guestinfo / OVF environment ([`vmware`]), `node.yaml`
//! on the boot partition, the config baked into the image.
//!
//! To add a datasource:
//! 1. write `<name>.rs` (or `<name>/mod.rs` when it needs several files)
//!    with a type implementing [`Datasource`]; read every path through
//!    [`under`] so tests can point it at a fake tree; keep finding the bytes
//!    apart from parsing them;
//! 2. put it in [`all`] at its place in the order (DESIGN.md, "Node
//!    configuration");
//! 3. add tests with a fake tree: absent, present, unreadable.

mod baked;
pub mod boot_partition;
mod cmdline;
mod fw_cfg;
pub mod mount;
pub mod pi_imager;
pub mod vmware;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use baked::Baked;
pub use boot_partition::BootPartition;
pub use cmdline::Cmdline;
pub use fw_cfg::FwCfg;
pub use vmware::Vmware;

/// One place a node config may come from.
pub trait Datasource {
    /// How the console names it: `fw_cfg opt/io.kiln/node.yaml`.
    fn name(&self) -> &str;
    /// The config's bytes; `Ok(None)` when this source has none. `root` is
    /// `/` on a node, a temp dir in tests.
    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError>;

    /// What [`find`] calls: the config with the name of where it was found.
    /// By default [`Datasource::fetch`], named by [`Datasource::name`]. A
    /// source with several places to look overrides it to say which one
    /// held the config, and may print a `kiln: ` line to `out` about one it
    /// passed over (a VMware OVF environment with nothing filled in).
    fn find(&self, root: &Path, out: &mut dyn Write) -> Result<Option<Found>, FetchError> {
        let _ = out;
        Ok(self.fetch(root)?.map(|bytes| Found {
            source: self.name().to_owned(),
            bytes,
        }))
    }

    /// Host settings made per medium that go over whichever config won:
    /// Raspberry Pi Imager's on the boot partition. `Ok(None)` by default.
    fn customisation(&self, root: &Path) -> Result<Option<pi_imager::Customisation>, FetchError> {
        let _ = root;
        Ok(None)
    }
}

/// A datasource that has a config but cannot read it.
#[derive(Debug, thiserror::Error)]
pub struct FetchError {
    /// What was being read (a path, a device).
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading {}: {}", self.what, self.source)
    }
}

pub(crate) fn fetch_err(what: impl Into<String>, source: io::Error) -> FetchError {
    FetchError {
        what: what.into(),
        source,
    }
}

/// A config found by [`find`]. `{:?}` shows its size, not its bytes: they
/// hold the join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    /// The [`Datasource::name`] it came from.
    pub source: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("source", &self.source)
            .field("bytes", &format_args!("{} bytes", self.bytes.len()))
            .finish()
    }
}

/// Every datasource, in the order they are tried.
pub fn all() -> Vec<Box<dyn Datasource>> {
    vec![
        Box::new(Cmdline),
        Box::new(FwCfg),
        Box::new(Vmware::system()),
        Box::new(BootPartition::system()),
        Box::new(Baked),
    ]
}

/// Tries `sources` in order; the first that has a config wins. `out` is
/// the console, for the lines a source prints about what it passed over.
pub fn find(
    sources: &[Box<dyn Datasource>],
    root: &Path,
    out: &mut dyn Write,
) -> Result<Option<Found>, FetchError> {
    for source in sources {
        if let Some(found) = source.find(root, out)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The first per-medium customisation `sources` hold (Pi Imager's).
pub fn customisation(
    sources: &[Box<dyn Datasource>],
    root: &Path,
) -> Result<Option<pi_imager::Customisation>, FetchError> {
    for source in sources {
        if let Some(c) = source.customisation(root)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// `path` (absolute, as on the node) inside `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Standard or URL-safe base64, padded or not, spaces and line breaks
/// ignored (`base64` wraps at 76 columns); `None` when it is not base64.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(&compact).ok())
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Option<Vec<u8>>, FetchError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FetchError {
            what: what.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-ds-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn put(root: &Path, path: &str, text: &str) {
        let p = under(root, path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    const FW_CFG_RAW: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/io.kiln/node.yaml/raw";

    #[test]
    fn names_are_what_the_console_says() {
        let names: Vec<String> = all().iter().map(|d| d.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "kernel command line",
                "fw_cfg opt/io.kiln/node.yaml",
                "VMware guestinfo / OVF environment",
                "boot partition node.yaml",
                "/usr/lib/kiln/node.yaml"
            ]
        );
    }

    #[test]
    fn first_source_with_a_config_wins() {
        let root = tree("order");
        assert_eq!(find(&all(), &root, &mut io::sink()).unwrap(), None);
        put(&root, crate::layout::BAKED_NODE_CONFIG, "role: agent\n");
        let found = find(&all(), &root, &mut io::sink()).unwrap().unwrap();
        assert_eq!(found.source, "/usr/lib/kiln/node.yaml");
        put(&root, FW_CFG_RAW, "role: server\n");
        let found = find(&all(), &root, &mut io::sink()).unwrap().unwrap();
        assert_eq!(found.source, "fw_cfg opt/io.kiln/node.yaml");
        assert_eq!(found.bytes, b"role: server\n");
        // A command line without kiln.* keys has nothing; with them, it wins.
        put(&root, "/proc/cmdline", "console=ttyS0 quiet\n");
        let found = find(&all(), &root, &mut io::sink()).unwrap().unwrap();
        assert_eq!(found.source, "fw_cfg opt/io.kiln/node.yaml");
        put(&root, "/proc/cmdline", "console=ttyS0 kiln.role=server\n");
        let found = find(&all(), &root, &mut io::sink()).unwrap().unwrap();
        assert_eq!(found.source, "kernel command line");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unreadable_source_stops_the_search() {
        let root = tree("unreadable");
        put(&root, crate::layout::BAKED_NODE_CONFIG, "role: agent\n");
        // A directory where the blob should be: present, but not readable.
        fs::create_dir_all(under(&root, FW_CFG_RAW)).unwrap();
        let err = find(&all(), &root, &mut io::sink()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("reading {FW_CFG_RAW}: ")),
            "{err}"
        );
        fs::remove_dir_all(root).unwrap();
    }
}
