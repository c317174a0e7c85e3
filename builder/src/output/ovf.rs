//! The OVF 1.0 descriptor (`.ovf`) of a kiln appliance for vSphere.
//!
//! [`render`] turns an [`OvfSpec`] (plain values) into the XML text; nothing
//! here touches a file. The descriptor follows the DMTF envelope schema
//! (DSP8023 1.0: sections in schema order, `rasd:`/`vssd:` elements in the
//! alphabetical order the CIM schemas require) plus the VMware extensions
//! vSphere reads (`vmw:osType`, `vmw:Config`, `vmw:ExtraConfig`).
//!
//! What the appliance asks for, and why:
//!
//! - **Hardware version `vmx-15`** ([`HARDWARE_VERSION`]): the newest that
//!   ESXi 6.7 Update 2/3, 7.0 and 8.0 all run. An OVF whose only hardware
//!   family is newer than the host knows is refused outright ("No supported
//!   hardware versions among [vmx-19]; supported: [vmx-04, ..., vmx-15]" on
//!   6.7, "Unsupported hardware family 'vmx-20'" on 7.0.3). kiln needs nothing
//!   newer: EFI, pvscsi and vmxnet3 all predate vmx-13, and vmx-15 is at or
//!   below the vmx-17 ceiling the VMware issue sets for ESXi 7.0+.
//! - **Guest OS `debian10_64Guest`** ([`OS_TYPE`], CIM id 96 "Debian
//!   64-bit"): a Debian id every one of those hosts knows
//!   (`debian11_64Guest` and `debian12_64Guest` are newer than ESXi 6.7);
//!   the id only picks defaults and the Tools flavour, and the image brings
//!   its own drivers and open-vm-tools.
//! - **UEFI** as `vmw:Config firmware=efi` (never as `ExtraConfig`: ovftool
//!   reports "Unsupported value 'firmware' for attribute 'key'" there),
//!   secure boot off (kiln's systemd-boot is not signed), soft power
//!   operations so "Shut Down Guest OS" goes through open-vm-tools.
//! - **`disk.EnableUUID=TRUE`** as `vmw:ExtraConfig ovf:required="false"`:
//!   the vSphere CSI driver needs it; a host that does not take ExtraConfig
//!   drops it instead of failing the import.
//! - **A CD-ROM drive** on IDE 1 even though nothing boots from it: the OVF
//!   environment's `iso` transport delivers `ovf-env.xml` on a CD, and
//!   `ovf:transport="com.vmware.guestInfo iso"` asks for both that and
//!   `guestinfo.ovfEnv`.
//! - **vApp properties** ([`kiln_properties`]) keyed `guestinfo.kiln.*`, so
//!   the same key works as a vApp property in the Deploy OVF Template wizard
//!   and as a plain `guestinfo` value set with govc or Terraform. The guest
//!   should read booleans case-insensitively: vSphere writes `True`/`False`
//!   into the OVF environment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, ensure, Result};

use super::vmdk::Adapter;

/// VMware virtual hardware version (`vmx-15`, ESXi 6.7 U2 and later).
pub const HARDWARE_VERSION: u32 = 15;
/// VMware guest OS identifier.
pub const OS_TYPE: &str = "debian10_64Guest";
/// CIM_OperatingSystem type 96: "Debian 64-Bit".
const OS_CIM_ID: u32 = 96;
/// The network the NIC is attached to; the wizard maps it to a port group.
pub const NETWORK: &str = "VM Network";
const VMDK_FORMAT: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// Prefix of every kiln vApp property key.
pub const PROPERTY_PREFIX: &str = "guestinfo.kiln.";

/// Everything the descriptor says, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfSpec {
    /// Name of the virtual machine (and of the files: `<name>.ovf`, ...).
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: DiskRef,
    pub adapter: Adapter,
    /// UEFI firmware (kiln's UEFI boards); else BIOS.
    pub firmware_efi: bool,
    pub product: ProductInfo,
    /// vApp properties, in the order the wizard shows them (grouped by
    /// category in the order categories first appear).
    pub properties: Vec<Property>,
}

/// The disk file the descriptor references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRef {
    /// The VMDK's file name, next to the `.ovf` (`<name>.vmdk`).
    pub file_name: String,
    /// Exact size of the VMDK file in bytes (`File ovf:size`).
    pub file_size: u64,
    /// Virtual capacity in bytes (`Disk ovf:capacity`).
    pub capacity_bytes: u64,
    /// Bytes of data the disk holds (`Disk ovf:populatedSize`).
    pub populated_bytes: u64,
}

/// The ProductSection's text (the wizard's "Product" page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    pub product: String,
    pub vendor: String,
    pub version: String,
    pub full_version: String,
    /// Empty = no `ProductUrl`.
    pub url: String,
}

/// One vApp property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub kind: PropertyKind,
    /// The default value (`ovf:value`); empty = none.
    pub value: String,
    pub label: String,
    pub description: String,
    /// The wizard groups properties under their category; empty = none.
    pub category: String,
    /// Shown as a password field and hidden in the vSphere client.
    pub password: bool,
    pub user_configurable: bool,
}

/// The type of a vApp property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyKind {
    String,
    Boolean,
    /// A string from a fixed list (`ovf:qualifiers="ValueMap{...}"`).
    Choice(Vec<String>),
}

/// Renders the descriptor. Fails on values vSphere would refuse.
pub fn render(spec: &OvfSpec) -> Result<String> {
    check(spec)?;
    let name = esc(&spec.name);
    let mut x = String::new();
    let d = &spec.disk;
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{file}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_FORMAT}" ovf:populatedSize="{populated}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{NETWORK}">
      <Description>The {NETWORK} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A k3s node built by kiln</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="{OS_CIM_ID}" vmw:osType="{OS_TYPE}">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian GNU/Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo iso">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-{HARDWARE_VERSION:02}</vssd:VirtualSystemType>
      </System>
"#,
        file = esc(&d.file_name),
        file_size = d.file_size,
        capacity = d.capacity_bytes,
        populated = d.populated_bytes,
    );
    for item in hardware(spec) {
        item.render(&mut x);
    }
    let firmware = if spec.firmware_efi { "efi" } else { "bios" };
    let mut configs = vec![("firmware", firmware)];
    if spec.firmware_efi {
        configs.push(("bootOptions.efiSecureBootEnabled", "false"));
    }
    configs.extend([
        ("powerOpInfo.powerOffType", "soft"),
        ("powerOpInfo.resetType", "soft"),
        ("powerOpInfo.suspendType", "hard"),
        ("tools.syncTimeWithHost", "false"),
    ]);
    for (key, value) in configs {
        let _ = writeln!(
            x,
            r#"      <vmw:Config ovf:required="false" vmw:key="{key}" vmw:value="{value}"/>"#
        );
    }
    x.push_str(
        r#"      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="TRUE"/>
    </VirtualHardwareSection>
"#,
    );
    product_section(&mut x, spec);
    x.push_str("  </VirtualSystem>\n</Envelope>\n");
    Ok(x)
}

/// The values vSphere or the file layout would refuse, as errors that say
/// what to change.
fn check(spec: &OvfSpec) -> Result<()> {
    check_name(&spec.name)?;
    check_cpus(spec.cpus)?;
    check_memory(spec.memory_mib)?;
    let d = &spec.disk;
    ensure!(
        d.file_name.ends_with(".vmdk") && !d.file_name.contains('/'),
        "the disk file {:?} must be a plain file name ending in .vmdk; name it <name>.vmdk",
        d.file_name
    );
    ensure!(
        d.capacity_bytes > 0 && d.populated_bytes <= d.capacity_bytes,
        "the disk holds {} bytes but has a capacity of {} bytes; pass the VMDK's own numbers",
        d.populated_bytes,
        d.capacity_bytes
    );
    let mut keys = BTreeMap::new();
    for p in &spec.properties {
        ensure!(
            !p.key.is_empty()
                && p.key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "the vApp property key {:?} is not valid; use letters, digits, '.', '_' and '-'",
            p.key
        );
        ensure!(
            keys.insert(p.key.as_str(), ()).is_none(),
            "the vApp property {:?} is listed twice; list it once",
            p.key
        );
        match &p.kind {
            PropertyKind::String => {}
            PropertyKind::Boolean => ensure!(
                p.value == "true" || p.value == "false",
                "the vApp property {:?} is a boolean but its default is {:?}; use true or false",
                p.key,
                p.value
            ),
            PropertyKind::Choice(choices) => {
                ensure!(
                    !choices.is_empty()
                        && choices
                            .iter()
                            .all(|c| !c.is_empty() && !c.contains(['"', ',', '{', '}'])),
                    "the choices of vApp property {:?} must be non-empty words; drop quotes, commas and braces",
                    p.key
                );
                ensure!(
                    p.value.is_empty() || choices.contains(&p.value),
                    "the default {:?} of vApp property {:?} is not one of its choices ({}); pick one of them",
                    p.value,
                    p.key,
                    choices.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// A virtual CPU count the hardware version allows.
pub fn check_cpus(cpus: u32) -> Result<()> {
    ensure!(
        (1..=256).contains(&cpus),
        "{cpus} virtual CPUs is out of range; use 1 to 256 (the vmx-{HARDWARE_VERSION} limit)"
    );
    Ok(())
}

/// A memory size k3s runs in and the hardware version allows.
pub fn check_memory(mib: u64) -> Result<()> {
    ensure!(
        (512..=6_275_072).contains(&mib) && mib.is_multiple_of(4),
        "{mib} MiB of memory is out of range; use a multiple of 4 MiB from 512 MiB (k3s needs it) to 6128 GiB (the vmx-{HARDWARE_VERSION} limit)"
    );
    Ok(())
}

/// A VM name that is also safe as a file name and a tar member name.
pub fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 80
            && !name.starts_with(['.', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "the appliance name {name:?} is not valid; use 1 to 80 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
    );
    Ok(())
}

/// A `rasd:` hardware item: its elements (alphabetical, as the CIM schema
/// orders them) and VMware settings.
struct Item {
    required: bool,
    fields: Vec<(&'static str, String)>,
}

impl Item {
    fn new(fields: &[(&'static str, &str)]) -> Item {
        debug_assert!(
            fields.windows(2).all(|w| w[0].0 < w[1].0),
            "rasd elements must be in schema (alphabetical) order: {fields:?}"
        );
        Item {
            required: true,
            fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn optional(mut self) -> Item {
        self.required = false;
        self
    }

    fn render(&self, x: &mut String) {
        if self.required {
            x.push_str("      <Item>\n");
        } else {
            x.push_str("      <Item ovf:required=\"false\">\n");
        }
        for (k, v) in &self.fields {
            let _ = writeln!(x, "        <rasd:{k}>{}</rasd:{k}>", esc(v));
        }
        x.push_str("      </Item>\n");
    }
}

/// CPU, memory, the disk's controller, IDE 1 for the CD-ROM, the disk, the
/// CD-ROM (for the ISO transport) and a vmxnet3 NIC.
fn hardware(spec: &OvfSpec) -> Vec<Item> {
    let cpus = spec.cpus.to_string();
    let mem = spec.memory_mib.to_string();
    let controller = match spec.adapter {
        Adapter::Ide => Item::new(&[
            ("Address", "0"),
            ("Description", "IDE Controller"),
            ("ElementName", "IDE 0"),
            ("InstanceID", "3"),
            ("ResourceType", "5"),
        ]),
        scsi => Item::new(&[
            ("Address", "0"),
            ("Description", "SCSI Controller"),
            ("ElementName", "SCSI controller 0"),
            ("InstanceID", "3"),
            (
                "ResourceSubType",
                if scsi == Adapter::Pvscsi {
                    "VirtualSCSI"
                } else {
                    "lsilogic"
                },
            ),
            ("ResourceType", "6"),
        ]),
    };
    vec![
        Item::new(&[
            ("AllocationUnits", "hertz * 10^6"),
            ("Description", "Number of Virtual CPUs"),
            ("ElementName", &format!("{cpus} virtual CPU(s)")),
            ("InstanceID", "1"),
            ("ResourceType", "3"),
            ("VirtualQuantity", &cpus),
        ]),
        Item::new(&[
            ("AllocationUnits", "byte * 2^20"),
            ("Description", "Memory Size"),
            ("ElementName", &format!("{mem}MB of memory")),
            ("InstanceID", "2"),
            ("ResourceType", "4"),
            ("VirtualQuantity", &mem),
        ]),
        controller,
        Item::new(&[
            ("Address", "1"),
            ("Description", "IDE Controller"),
            ("ElementName", "IDE 1"),
            ("InstanceID", "4"),
            ("ResourceType", "5"),
        ]),
        Item::new(&[
            ("AddressOnParent", "0"),
            ("ElementName", "Hard disk 1"),
            ("HostResource", "ovf:/disk/vmdisk1"),
            ("InstanceID", "5"),
            ("Parent", "3"),
            ("ResourceType", "17"),
        ]),
        Item::new(&[
            ("AddressOnParent", "0"),
            ("AutomaticAllocation", "false"),
            ("ElementName", "CD/DVD drive 1"),
            ("InstanceID", "6"),
            ("Parent", "4"),
            ("ResourceSubType", "vmware.cdrom.remotepassthrough"),
            ("ResourceType", "15"),
        ])
        .optional(),
        Item::new(&[
            ("AutomaticAllocation", "true"),
            ("Connection", NETWORK),
            (
                "Description",
                &format!("VmxNet3 ethernet adapter on \"{NETWORK}\""),
            ),
            ("ElementName", "Network adapter 1"),
            ("InstanceID", "7"),
            ("ResourceSubType", "VmxNet3"),
            ("ResourceType", "10"),
        ]),
    ]
}

fn product_section(x: &mut String, spec: &OvfSpec) {
    let p = &spec.product;
    x.push_str(
        "    <ProductSection>\n      <Info>Information about the installed software</Info>\n",
    );
    for (element, value) in [
        ("Product", &p.product),
        ("Vendor", &p.vendor),
        ("Version", &p.version),
        ("FullVersion", &p.full_version),
        ("ProductUrl", &p.url),
    ] {
        if !value.is_empty() {
            let _ = writeln!(x, "      <{element}>{}</{element}>", esc(value));
        }
    }
    // Properties without a category first, then one group per category in
    // the order categories first appear: a <Category> heads its group.
    let mut categories: Vec<&str> = vec![""];
    for prop in &spec.properties {
        if !categories.contains(&prop.category.as_str()) {
            categories.push(&prop.category);
        }
    }
    for category in categories {
        if !category.is_empty() {
            let _ = writeln!(x, "      <Category>{}</Category>", esc(category));
        }
        for prop in spec.properties.iter().filter(|p| p.category == category) {
            property(x, prop);
        }
    }
    x.push_str("    </ProductSection>\n");
}

fn property(x: &mut String, p: &Property) {
    let _ = write!(x, "      <Property ovf:key=\"{}\"", esc(&p.key));
    if p.password {
        x.push_str(" ovf:password=\"true\"");
    }
    if let PropertyKind::Choice(choices) = &p.kind {
        let map: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = write!(
            x,
            " ovf:qualifiers=\"{}\"",
            esc(&format!("ValueMap{{{}}}", map.join(",")))
        );
    }
    let kind = match p.kind {
        PropertyKind::Boolean => "boolean",
        PropertyKind::String | PropertyKind::Choice(_) => "string",
    };
    let _ = write!(x, " ovf:type=\"{kind}\"");
    if p.user_configurable {
        x.push_str(" ovf:userConfigurable=\"true\"");
    }
    let _ = writeln!(x, " ovf:value=\"{}\">", esc(&p.value));
    let _ = writeln!(x, "        <Label>{}</Label>", esc(&p.label));
    if !p.description.is_empty() {
        let _ = writeln!(
            x,
            "        <Description>{}</Description>",
            esc(&p.description)
        );
    }
    x.push_str("      </Property>\n");
}

/// Escapes text for XML content and (double-quoted) attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

/// The kiln vApp properties: short name (as a spec's `properties:` map
/// names it), type, label, description, category, password.
#[rustfmt::skip]
const KILN_PROPERTIES: &[(&str, Kind, &str, &str, &str, bool)] = &[
    ("role", Kind::Role, "Role",
     "server runs the Kubernetes control plane and workloads; agent runs workloads and joins a server.",
     "Cluster", false),
    ("cluster-init", Kind::Boolean, "Start a new cluster",
     "Check on the first server only: it starts a new cluster with embedded etcd. Leave unchecked to join the server below.",
     "Cluster", false),
    ("server", Kind::Url, "Server URL",
     "The server to join, e.g. https://10.0.0.10:6443. Empty on the first server.",
     "Cluster", false),
    ("token", Kind::Secret, "Cluster token",
     "The cluster's join token (k3s --token). Needed to join; on the first server, empty lets k3s generate one.",
     "Cluster", true),
    ("hostname", Kind::Hostname, "Hostname",
     "The node's host name. Empty keeps the name from DHCP or the image.",
     "Network", false),
    ("ip", Kind::Cidr, "IPv4 address (CIDR)",
     "A static address with its prefix length, e.g. 10.0.0.21/24. Empty uses DHCP.",
     "Network", false),
    ("gateway", Kind::Ipv4, "Gateway",
     "The default gateway for a static address, e.g. 10.0.0.1.",
     "Network", false),
    ("dns", Kind::IpList, "DNS servers",
     "Comma-separated addresses, e.g. 10.0.0.2,1.1.1.1. Empty uses DHCP's.",
     "Network", false),
    ("ntp", Kind::HostList, "NTP servers",
     "Comma-separated host names or addresses. Empty uses DHCP's or the image's.",
     "Network", false),
    ("ssh-authorized-key", Kind::SshKey, "SSH public key",
     "An OpenSSH public key (e.g. ssh-ed25519 AAAA... you@host) allowed to log in.",
     "Access", false),
    ("node-yaml", Kind::Base64, "node.yaml (base64)",
     "A whole node.yaml, base64-encoded (base64 -w0 node.yaml), for settings not on this page. It stands alone: leave every other field on this page empty (Role may stay server, Start a new cluster unchecked).",
     "Advanced", false),
];

/// How a kiln property's default is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Role,
    Boolean,
    Url,
    Secret,
    Hostname,
    Cidr,
    Ipv4,
    IpList,
    HostList,
    SshKey,
    Base64,
}

/// The kiln vApp properties, every one user-configurable, pre-filled from
/// `defaults` (short names: `role`, `cluster-init`, `server`, `token`,
/// `hostname`, `ip`, `gateway`, `dns`, `ntp`, `ssh-authorized-key`,
/// `node-yaml`). `role` defaults to `server`, `cluster-init` to `false`.
/// An unknown name or a malformed default is an error; so is a default
/// token, which anyone holding the OVA could read.
pub fn kiln_properties(defaults: &BTreeMap<String, String>) -> Result<Vec<Property>> {
    for name in defaults.keys() {
        if !KILN_PROPERTIES.iter().any(|p| p.0 == name) {
            let known: Vec<&str> = KILN_PROPERTIES.iter().map(|p| p.0).collect();
            bail!(
                "unknown vApp property {name:?}; use one of {}",
                known.join(", ")
            );
        }
    }
    KILN_PROPERTIES
        .iter()
        .map(|&(name, kind, label, description, category, password)| {
            let value = match (defaults.get(name), kind) {
                // Lists as the guest parses them: "a, b" -> "a,b".
                (Some(v), Kind::IpList | Kind::HostList) => {
                    v.split(',').map(str::trim).collect::<Vec<_>>().join(",")
                }
                (Some(v), _) => v.trim().to_string(),
                (None, Kind::Role) => "server".to_string(),
                (None, Kind::Boolean) => "false".to_string(),
                (None, _) => String::new(),
            };
            check_default(name, kind, &value)?;
            Ok(Property {
                key: format!("{PROPERTY_PREFIX}{name}"),
                kind: match kind {
                    Kind::Role => PropertyKind::Choice(vec!["server".into(), "agent".into()]),
                    Kind::Boolean => PropertyKind::Boolean,
                    _ => PropertyKind::String,
                },
                value,
                label: label.to_string(),
                description: description.to_string(),
                category: category.to_string(),
                password,
                user_configurable: true,
            })
        })
        .collect()
}

fn check_default(name: &str, kind: Kind, value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    let bad = |what: &str| -> Result<()> {
        bail!("the default {value:?} of vApp property {name:?} is not {what}")
    };
    let list = |v: &str| -> Vec<String> { v.split(',').map(|s| s.trim().to_string()).collect() };
    match kind {
        Kind::Role if value != "server" && value != "agent" => bad("a role; use server or agent"),
        Kind::Boolean if value != "true" && value != "false" => bad("a boolean; use true or false"),
        Kind::Url
            if !(value.starts_with("https://") && value.len() > "https://".len())
                || value.contains(char::is_whitespace) =>
        {
            bad("a server URL; use https://<address>:6443")
        }
        Kind::Secret => bail!(
            "vApp property \"token\" has a default: anyone holding the OVA could read it; \
             leave it empty and enter the token in the deploy wizard (or with govc/ovftool)"
        ),
        Kind::Hostname if !is_hostname(value) => {
            bad("a host name; use letters, digits, '-' and '.', 63 characters a label")
        }
        Kind::Cidr if !is_ipv4_cidr(value) => {
            bad("an IPv4 address with prefix length; write it like 10.0.0.21/24")
        }
        Kind::Ipv4 if value.parse::<Ipv4Addr>().is_err() => {
            bad("an IPv4 address; write it like 10.0.0.1")
        }
        Kind::IpList if list(value).iter().any(|a| a.parse::<IpAddr>().is_err()) => {
            bad("a comma-separated list of IP addresses; write it like 10.0.0.2,1.1.1.1")
        }
        Kind::HostList
            if list(value)
                .iter()
                .any(|h| h.parse::<IpAddr>().is_err() && !is_hostname(h)) =>
        {
            bad("a comma-separated list of host names or addresses; write it like 0.pool.ntp.org,10.0.0.1")
        }
        Kind::SshKey if !is_ssh_key(value) => {
            bad("an OpenSSH public key; paste one line like ssh-ed25519 AAAA... you@host")
        }
        Kind::Base64 if !is_base64(value) => {
            bad("base64; encode the file with `base64 -w0 node.yaml`")
        }
        _ => Ok(()),
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_ipv4_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    addr.parse::<Ipv4Addr>().is_ok()
        && prefix
            .parse::<u8>()
            .is_ok_and(|p| (1..=32).contains(&p) && !prefix.starts_with('0'))
}

fn is_ssh_key(s: &str) -> bool {
    let mut parts = s.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
        && blob.starts_with("AAAA")
        && is_base64(blob)
        && !s.contains('\n')
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    fn defaults(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A spec as `kiln build` would pass it (the disk numbers made up).
    pub(crate) fn spec() -> OvfSpec {
        OvfSpec {
            name: "kiln-node".into(),
            cpus: 2,
            memory_mib: 4096,
            disk: DiskRef {
                file_name: "kiln-node.vmdk".into(),
                file_size: 123_456_512,
                capacity_bytes: 32 << 30,
                populated_bytes: 318_767_104,
            },
            adapter: Adapter::Pvscsi,
            firmware_efi: true,
            product: ProductInfo {
                product: "kiln k3s node".into(),
                vendor: "kiln".into(),
                version: "0.1.0".into(),
                full_version: "0.1.0 (k3s v1.31.4+k3s1, Debian bookworm)".into(),
                url: "https://example.invalid/kiln".into(),
            },
            properties: kiln_properties(&defaults(&[
                ("role", "agent"),
                ("server", "https://10.0.0.10:6443"),
                ("dns", "10.0.0.2, 1.1.1.1"),
            ]))
            .unwrap(),
        }
    }

    /// Compares with `tests/golden/ovf/<name>`; `KILN_BLESS=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden/ovf")
            .join(name);
        if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{} differs from the rendered OVF:\n{actual}\n(review, then regenerate with KILN_BLESS=1 cargo test -p kiln --lib output::ovf)",
            path.display()
        );
    }

    #[test]
    fn kiln_node_matches_golden() {
        golden("kiln-node.ovf", &render(&spec()).unwrap());
    }

    #[test]
    fn lsilogic_bios_matches_golden() {
        let mut s = spec();
        s.adapter = Adapter::LsiLogic;
        s.firmware_efi = false;
        s.product.url.clear();
        s.properties = kiln_properties(&BTreeMap::new()).unwrap();
        golden("lsilogic-bios.ovf", &render(&s).unwrap());
    }

    const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
    const RASD: &str =
        "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
    const VMW: &str = "http://www.vmware.com/schema/ovf";

    fn child<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
        n.children().find(|c| c.has_tag_name((OVF, name)))
    }

    fn rasd(item: roxmltree::Node, name: &str) -> Option<String> {
        item.children()
            .find(|c| c.has_tag_name((RASD, name)))
            .and_then(|c| c.text())
            .map(str::to_string)
    }

    /// The checks ESXi and ovftool make on import, where a wrong descriptor
    /// fails or warns: parsed with a strict XML parser (well-formed,
    /// namespaces resolved).
    fn check_for_esxi(xml: &str, spec: &OvfSpec) {
        let doc = roxmltree::Document::parse(xml).expect("the OVF is well-formed XML");
        let env = doc.root_element();
        assert!(env.has_tag_name((OVF, "Envelope")));
        // Sections in schema order.
        let sections: Vec<&str> = env
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(
            sections,
            [
                "References",
                "DiskSection",
                "NetworkSection",
                "VirtualSystem"
            ]
        );

        // The File size is the exact VMDK size; the disk references it.
        let file = child(child(env, "References").unwrap(), "File").unwrap();
        assert_eq!(
            file.attribute((OVF, "href")),
            Some(spec.disk.file_name.as_str())
        );
        assert_eq!(
            file.attribute((OVF, "size")),
            Some(spec.disk.file_size.to_string().as_str())
        );
        let disk = child(child(env, "DiskSection").unwrap(), "Disk").unwrap();
        assert_eq!(
            disk.attribute((OVF, "fileRef")),
            file.attribute((OVF, "id"))
        );
        assert_eq!(
            disk.attribute((OVF, "capacity")),
            Some(spec.disk.capacity_bytes.to_string().as_str())
        );
        assert_eq!(
            disk.attribute((OVF, "capacityAllocationUnits")),
            Some("byte")
        );
        assert!(disk
            .attribute((OVF, "format"))
            .unwrap()
            .ends_with("#streamOptimized"));

        let vs = child(env, "VirtualSystem").unwrap();
        let os = child(vs, "OperatingSystemSection").unwrap();
        assert_eq!(os.attribute((VMW, "osType")), Some(OS_TYPE));
        let hw = child(vs, "VirtualHardwareSection").unwrap();
        assert_eq!(
            hw.attribute((OVF, "transport")),
            Some("com.vmware.guestInfo iso")
        );
        // One hardware family, and one ESXi 6.7 U3 (vmx-15), 7.0 (vmx-17)
        // and 8.0 all know.
        let family = hw
            .descendants()
            .find(|n| n.tag_name().name() == "VirtualSystemType")
            .and_then(|n| n.text())
            .unwrap();
        let version: u32 = family.strip_prefix("vmx-").unwrap().parse().unwrap();
        assert!((13..=15).contains(&version), "{family}");

        // Items: rasd elements in schema order, unique instance IDs,
        // parents that exist, devices ESXi knows.
        let items: Vec<_> = hw
            .children()
            .filter(|n| n.has_tag_name((OVF, "Item")))
            .collect();
        let ids: Vec<String> = items
            .iter()
            .map(|i| rasd(*i, "InstanceID").unwrap())
            .collect();
        for item in &items {
            let names: Vec<&str> = item
                .children()
                .filter(|n| n.is_element())
                .map(|n| n.tag_name().name())
                .collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "rasd elements out of schema order");
            if let Some(parent) = rasd(*item, "Parent") {
                assert!(ids.contains(&parent), "item parent {parent} does not exist");
            }
        }
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique, ids);
        let by_type = |t: &str| {
            items
                .iter()
                .filter(|i| rasd(**i, "ResourceType").as_deref() == Some(t))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rasd(*by_type("3")[0], "VirtualQuantity"),
            Some(spec.cpus.to_string())
        );
        assert_eq!(
            rasd(*by_type("4")[0], "VirtualQuantity"),
            Some(spec.memory_mib.to_string())
        );
        let nic = by_type("10")[0];
        assert_eq!(rasd(*nic, "ResourceSubType").as_deref(), Some("VmxNet3"));
        assert_eq!(rasd(*nic, "Connection").as_deref(), Some(NETWORK));
        let disk_item = by_type("17")[0];
        assert_eq!(
            rasd(*disk_item, "HostResource").as_deref(),
            Some("ovf:/disk/vmdisk1")
        );
        assert_eq!(by_type("15").len(), 1, "a CD-ROM for the ISO transport");
        let controller = items
            .iter()
            .find(|i| rasd(**i, "InstanceID") == rasd(*disk_item, "Parent"))
            .unwrap();
        let expected = match spec.adapter {
            Adapter::Pvscsi => ("6", Some("VirtualSCSI")),
            Adapter::LsiLogic => ("6", Some("lsilogic")),
            Adapter::Ide => ("5", None),
        };
        assert_eq!(
            (
                rasd(*controller, "ResourceType").unwrap().as_str(),
                rasd(*controller, "ResourceSubType").as_deref()
            ),
            expected
        );

        // Firmware is a vmw:Config (as ExtraConfig ovftool rejects it);
        // every VMware setting is optional, so a host that lacks one warns
        // at most.
        let configs: Vec<_> = hw
            .children()
            .filter(|n| n.has_tag_name((VMW, "Config")))
            .collect();
        let firmware = configs
            .iter()
            .find(|c| c.attribute((VMW, "key")) == Some("firmware"))
            .unwrap();
        assert_eq!(
            firmware.attribute((VMW, "value")),
            Some(if spec.firmware_efi { "efi" } else { "bios" })
        );
        let extra: Vec<_> = hw
            .children()
            .filter(|n| n.has_tag_name((VMW, "ExtraConfig")))
            .collect();
        assert!(extra
            .iter()
            .all(|e| e.attribute((VMW, "key")) != Some("firmware")));
        assert!(extra
            .iter()
            .any(|e| e.attribute((VMW, "key")) == Some("disk.EnableUUID")
                && e.attribute((VMW, "value")) == Some("TRUE")));
        for c in configs.iter().chain(&extra) {
            assert_eq!(c.attribute((OVF, "required")), Some("false"));
        }

        // vApp properties: every one configurable, keyed guestinfo.kiln.*,
        // the token a password without a value, role a choice list.
        let product = child(vs, "ProductSection").unwrap();
        let props: Vec<_> = product
            .children()
            .filter(|n| n.has_tag_name((OVF, "Property")))
            .collect();
        assert_eq!(props.len(), spec.properties.len());
        for p in &props {
            let key = p.attribute((OVF, "key")).unwrap();
            assert!(key.starts_with(PROPERTY_PREFIX), "{key}");
            assert_eq!(p.attribute((OVF, "userConfigurable")), Some("true"));
            assert!(child(*p, "Label").is_some());
        }
        let token = props
            .iter()
            .find(|p| p.attribute((OVF, "key")) == Some("guestinfo.kiln.token"))
            .unwrap();
        assert_eq!(token.attribute((OVF, "password")), Some("true"));
        assert_eq!(token.attribute((OVF, "value")), Some(""));
        let role = props
            .iter()
            .find(|p| p.attribute((OVF, "key")) == Some("guestinfo.kiln.role"))
            .unwrap();
        assert_eq!(
            role.attribute((OVF, "qualifiers")),
            Some(r#"ValueMap{"server","agent"}"#)
        );
        let categories: Vec<_> = product
            .children()
            .filter(|n| n.has_tag_name((OVF, "Category")))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(categories, ["Cluster", "Network", "Access", "Advanced"]);
    }

    #[test]
    fn descriptors_pass_the_esxi_import_checks() {
        let mut s = spec();
        check_for_esxi(&render(&s).unwrap(), &s);
        for adapter in Adapter::ALL {
            s.adapter = adapter;
            s.firmware_efi = adapter != Adapter::Ide;
            check_for_esxi(&render(&s).unwrap(), &s);
        }
    }

    #[test]
    fn text_is_escaped() {
        let mut s = spec();
        s.product.vendor = "A & B <\"x\">".into();
        s.properties[0].description = "it's <b>bold</b>".into();
        let xml = render(&s).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let vendor = doc
            .descendants()
            .find(|n| n.has_tag_name((OVF, "Vendor")))
            .unwrap();
        assert_eq!(vendor.text(), Some("A & B <\"x\">"));
        assert!(xml.contains("it's &lt;b&gt;bold&lt;/b&gt;"));
    }

    #[test]
    fn out_of_range_hardware_is_refused() {
        type Change = fn(&mut OvfSpec);
        let cases: [(Change, &str); 6] = [
            (
                |s| s.cpus = 0,
                "0 virtual CPUs is out of range; use 1 to 256",
            ),
            (|s| s.cpus = 300, "300 virtual CPUs is out of range"),
            (
                |s| s.memory_mib = 256,
                "256 MiB of memory is out of range; use a multiple of 4 MiB from 512 MiB",
            ),
            (
                |s| s.memory_mib = 4097,
                "4097 MiB of memory is out of range",
            ),
            (
                |s| s.name = "my node".into(),
                "the appliance name \"my node\" is not valid",
            ),
            (
                |s| s.disk.file_name = "x.img".into(),
                "must be a plain file name ending in .vmdk",
            ),
        ];
        for (change, message) in cases {
            let mut s = spec();
            change(&mut s);
            let err = render(&s).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn property_defaults_are_checked() {
        let ok = kiln_properties(&defaults(&[
            ("role", "agent"),
            ("cluster-init", "true"),
            ("hostname", "node-1.lab"),
            ("ip", "10.0.0.21/24"),
            ("gateway", "10.0.0.1"),
            ("ntp", "0.pool.ntp.org, 10.0.0.1"),
            ("ssh-authorized-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0Gk9Ld4h7tkFfIJs7W8f5Tfk1FN0Tn5d2bOz1cVbqD me@host"),
            ("node-yaml", "cm9sZTogc2VydmVyCg=="),
        ]))
        .unwrap();
        assert_eq!(ok.len(), KILN_PROPERTIES.len());
        assert_eq!(ok[0].value, "agent");
        assert_eq!(ok[1].value, "true");
        assert_eq!(ok[8].key, "guestinfo.kiln.ntp");
        assert_eq!(ok[8].value, "0.pool.ntp.org,10.0.0.1");

        let cases = [
            (
                "colour",
                "blue",
                "unknown vApp property \"colour\"; use one of role, cluster-init, server, token",
            ),
            ("role", "master", "is not a role; use server or agent"),
            ("cluster-init", "yes", "is not a boolean; use true or false"),
            (
                "server",
                "10.0.0.1:6443",
                "is not a server URL; use https://<address>:6443",
            ),
            (
                "token",
                "K10abc::server:xyz",
                "anyone holding the OVA could read it; leave it empty",
            ),
            ("hostname", "-bad-", "is not a host name"),
            ("ip", "10.0.0.21", "write it like 10.0.0.21/24"),
            ("ip", "10.0.0.300/24", "write it like 10.0.0.21/24"),
            ("ip", "10.0.0.3/33", "write it like 10.0.0.21/24"),
            ("gateway", "gw", "is not an IPv4 address"),
            (
                "dns",
                "10.0.0.2;1.1.1.1",
                "comma-separated list of IP addresses",
            ),
            (
                "ntp",
                "pool ntp org",
                "comma-separated list of host names or addresses",
            ),
            (
                "ssh-authorized-key",
                "hello",
                "is not an OpenSSH public key",
            ),
            (
                "node-yaml",
                "role: server",
                "is not base64; encode the file with `base64 -w0 node.yaml`",
            ),
        ];
        for (name, value, message) in cases {
            let err = kiln_properties(&defaults(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{name}={value}: {err}");
        }
    }

    #[test]
    fn choices_and_booleans_must_hold_their_defaults() {
        let mut s = spec();
        s.properties[0].value = "master".into();
        let err = render(&s).unwrap_err().to_string();
        assert!(
            err.contains("is not one of its choices (server, agent)"),
            "{err}"
        );
        let mut s = spec();
        s.properties[1].value = "True".into();
        assert!(render(&s)
            .unwrap_err()
            .to_string()
            .contains("use true or false"));
        let mut s = spec();
        s.properties.push(s.properties[0].clone());
        assert!(render(&s)
            .unwrap_err()
            .to_string()
            .contains("is listed twice"));
    }
}
