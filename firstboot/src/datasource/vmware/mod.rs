//! VMware: the node config from the vApp properties of kiln's OVA
//! (`guestinfo.kiln.*`, see `builder/src/output/ovf.rs`), looked for in
//! this order:
//!
//! 1. the OVF environment in guestinfo `guestinfo.ovfEnv` (vSphere's
//!    `com.vmware.guestInfo` transport), read over the backdoor RPC;
//! 2. plain guestinfo values (govc `vm.change -e`, Terraform
//!    `extra_config`), when 1 has none filled in: a whole node.yaml in
//!    `guestinfo.kiln.node` (with `guestinfo.kiln.node.encoding` empty,
//!    `base64` or `gzip+base64`, the convention cloud-init and Ignition
//!    use), or the properties one by one, `guestinfo.kiln.<name>`;
//! 3. `ovf-env.xml` on a CD (the `iso` transport), on every architecture.
//!
//! 1 and 2 run only where the DMI says VMware ([`is_vmware`]): the backdoor
//! instruction faults anywhere else. The backdoor exists on x86_64 only
//! (`backdoor.rs`; `backdoor_stub.rs` elsewhere).
//!
//! Locating (guestinfo, the CD) is apart from parsing (`ovfenv.rs`: XML to
//! properties; `props.rs`: properties to node.yaml), so tests feed bytes.
//! `Ok(None)` when there is nothing: not VMware, no guestinfo, no CD, or an
//! OVF environment without kiln properties or with none filled in (a line
//! on the console says so). `Err` when something is there but broken: an
//! unreadable CD, malformed XML, a bad property value.

#[cfg(target_arch = "x86_64")]
mod backdoor;
#[cfg(not(target_arch = "x86_64"))]
#[path = "backdoor_stub.rs"]
mod backdoor;
#[cfg(test)]
mod fake_host;
pub mod iso;
pub mod ovfenv;
pub mod props;
pub mod rpc;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sources;

use std::io::{self, Write};
use std::path::Path;

use super::mount::{Mounter, SystemMounter};
use super::{fetch_err, under, Datasource, FetchError, Found};
use props::{Outcome, Props, NAMES, PREFIX};
use rpc::Port;

/// What the DMI says the machine's maker is.
pub const DMI_SYS_VENDOR: &str = "/sys/class/dmi/id/sys_vendor";
/// The guestinfo key vSphere puts the OVF environment under.
pub const OVF_ENV_KEY: &str = "guestinfo.ovfEnv";
/// A whole node.yaml as one guestinfo value, and how it is encoded.
pub const NODE_KEY: &str = "guestinfo.kiln.node";
pub const NODE_ENCODING_KEY: &str = "guestinfo.kiln.node.encoding";
/// The most a gzip'ed node.yaml may inflate to (a node.yaml is small;
/// this stops a gzip bomb).
const NODE_MAX_BYTES: u64 = 4 << 20;

/// Reads guestinfo values: over the backdoor on a node, a stand-in in tests.
pub trait GuestInfo {
    /// The value of `key`; `None` when it is not set.
    fn get(&mut self, key: &str) -> io::Result<Option<Vec<u8>>>;
}

/// Guestinfo over RPCI (`info-get`) on a backdoor port.
pub struct Rpci<P>(pub P);

impl<P: Port> GuestInfo for Rpci<P> {
    fn get(&mut self, key: &str) -> io::Result<Option<Vec<u8>>> {
        rpc::info_get(&mut self.0, key)
    }
}

/// Opens guestinfo; `Ok(None)` when there is none (no backdoor answers).
pub type OpenGuestInfo = dyn Fn() -> io::Result<Option<Box<dyn GuestInfo>>>;

/// The node config from VMware's guestinfo or OVF environment CD.
pub struct Vmware {
    /// Called only when the DMI says VMware.
    pub guestinfo: Box<OpenGuestInfo>,
    pub mounter: Box<dyn Mounter>,
}

impl Vmware {
    /// The backdoor and the system's mount(2).
    pub fn system() -> Self {
        Vmware {
            guestinfo: Box::new(backdoor::open),
            mounter: Box::new(SystemMounter),
        }
    }
}

/// Whether the DMI under `root` names VMware as the maker
/// (`VMware, Inc.`). No DMI (a board without it) is not VMware.
pub fn is_vmware(root: &Path) -> bool {
    std::fs::read_to_string(under(root, DMI_SYS_VENDOR)).is_ok_and(|v| v.contains("VMware"))
}

impl Datasource for Vmware {
    fn name(&self) -> &str {
        "VMware guestinfo / OVF environment"
    }

    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        Ok(self.find(root, &mut io::sink())?.map(|f| f.bytes))
    }

    fn find(&self, root: &Path, out: &mut dyn Write) -> Result<Option<Found>, FetchError> {
        if is_vmware(root) {
            if let Some(found) = self.read_guestinfo(out)? {
                return Ok(Some(found));
            }
        }
        let Some((dev, xml)) = iso::read(root, self.mounter.as_ref())? else {
            return Ok(None);
        };
        from_ovf_env(&xml, &format!("VMware {} on {dev}", iso::FILE), out)
    }
}

impl Vmware {
    /// `guestinfo.ovfEnv`, else the plain `guestinfo.kiln.*` values.
    fn read_guestinfo(&self, out: &mut dyn Write) -> Result<Option<Found>, FetchError> {
        let opened = (self.guestinfo)().map_err(|e| fetch_err("VMware guestinfo", e))?;
        let Some(mut info) = opened else {
            return Ok(None);
        };
        let mut get = |key: &str| {
            info.get(key)
                .map_err(|e| fetch_err(format!("VMware guestinfo {key}"), e))
        };
        if let Some(xml) = get(OVF_ENV_KEY)?.filter(|x| !x.trim_ascii().is_empty()) {
            let found = from_ovf_env(&xml, &format!("VMware {OVF_ENV_KEY}"), out)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        let mut pairs = Vec::new();
        for name in NAMES {
            let key = format!("{PREFIX}{name}");
            if let Some(value) = get(&key)? {
                pairs.push((key, String::from_utf8_lossy(&value).into_owned()));
            }
        }
        if let Some(node) = get(NODE_KEY)?.filter(|v| !v.trim_ascii().is_empty()) {
            let source = format!("VMware {NODE_KEY}");
            let set: Vec<&str> = pairs
                .iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, _)| k.as_str())
                .collect();
            if !set.is_empty() {
                return Err(invalid(
                    &source,
                    format!(
                        "{NODE_KEY} holds a whole node.yaml, but {} set too; \
                         put those settings into the node.yaml and clear them, or clear {NODE_KEY}",
                        set.join(", ")
                    ),
                ));
            }
            let encoding = get(NODE_ENCODING_KEY)?.unwrap_or_default();
            let bytes = decode_node(&node, &String::from_utf8_lossy(&encoding))
                .map_err(|why| invalid(&source, why))?;
            return Ok(Some(Found { source, bytes }));
        }
        let source = format!("VMware {PREFIX}*");
        let pairs = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match Props::from_pairs(pairs).map_err(|why| invalid(&source, why))? {
            Some(props) => from_props(&props, &source, out),
            None => Ok(None),
        }
    }
}

/// The node.yaml in a `guestinfo.kiln.node` value encoded as `encoding`:
/// empty (plain text), `base64`/`b64`, `gzip+base64`/`gz+base64`/`gz+b64`.
pub fn decode_node(value: &[u8], encoding: &str) -> Result<Vec<u8>, String> {
    let text = || String::from_utf8_lossy(value).into_owned();
    let base64 = || {
        super::decode_base64(&text()).ok_or_else(|| {
            format!("{NODE_KEY} is not base64; encode the file with base64 -w0 node.yaml")
        })
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" => Ok(value.to_vec()),
        "base64" | "b64" => base64(),
        "gzip+base64" | "gz+base64" | "gz+b64" | "gzip+b64" => {
            use std::io::Read;
            let gz = base64()?;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .take(NODE_MAX_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    format!(
                        "{NODE_KEY} is not gzip data ({e}); make it with gzip -c node.yaml | base64 -w0"
                    )
                })?;
            if out.len() as u64 > NODE_MAX_BYTES {
                return Err(format!(
                    "{NODE_KEY} inflates to more than {} MiB; a node.yaml is far smaller",
                    NODE_MAX_BYTES >> 20
                ));
            }
            Ok(out)
        }
        other => Err(format!(
            "{NODE_ENCODING_KEY} is {other:?}; use base64 or gzip+base64, or leave it empty for plain text"
        )),
    }
}

/// The config in an OVF environment document; `source` names where it was.
pub fn from_ovf_env(
    xml: &[u8],
    source: &str,
    out: &mut dyn Write,
) -> Result<Option<Found>, FetchError> {
    let pairs = ovfenv::properties(xml).map_err(|why| invalid(source, why))?;
    let pairs = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    match Props::from_pairs(pairs).map_err(|why| invalid(source, why))? {
        Some(props) => from_props(&props, source, out),
        None => {
            say(
                out,
                format!("{source}: no {PREFIX}* properties, trying the next source"),
            );
            Ok(None)
        }
    }
}

/// The config the kiln properties make: `node-yaml` as it is, or a
/// node.yaml made from the others and checked here, so that an error
/// names a property.
fn from_props(
    props: &Props,
    source: &str,
    out: &mut dyn Write,
) -> Result<Option<Found>, FetchError> {
    match props.outcome(source).map_err(|why| invalid(source, why))? {
        Outcome::NotFilled => {
            say(
                out,
                format!(
                    "{source}: the vApp properties are not filled in \
                     (only the wizard's defaults), trying the next source"
                ),
            );
            Ok(None)
        }
        Outcome::NodeYaml(bytes) => Ok(Some(Found {
            source: format!("{source}, {PREFIX}node-yaml"),
            bytes,
        })),
        Outcome::Generated(g) => {
            g.check(source).map_err(|e| FetchError {
                what: source.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
            Ok(Some(Found {
                source: source.to_owned(),
                bytes: g.text.into_bytes(),
            }))
        }
    }
}

fn invalid(source: &str, why: String) -> FetchError {
    fetch_err(source, io::Error::new(io::ErrorKind::InvalidData, why))
}

/// One `kiln: ` console line; a missing console stops nothing.
fn say(out: &mut dyn Write, line: String) {
    let _ = writeln!(out, "kiln: {line}");
}
