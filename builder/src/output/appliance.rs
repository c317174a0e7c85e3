//! The OVA/OVF appliance of a build: a spec's `ova:` section and the
//! board turned into the [`Ova`] writer's values, checked before any work.
//!
//! Every error names the spec key to change (`ova.cpus`,
//! `ova.properties.ip`, ...), so the caller can place it in the spec file.

use std::collections::BTreeMap;

use anyhow::Result;

use super::ova::Ova;
use super::ovf::{self, DiskRef, OvfSpec, ProductInfo};
use super::vmdk::{self, Adapter};
use crate::spec::OvaSettings;

/// Defaults that fit a k3s server: 2 vCPU, 4 GiB, a 32 GiB disk.
pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u64 = 4096;
pub const DEFAULT_DISK_GIB: u64 = 32;

/// What the appliance is made from, besides the spec's settings.
pub struct ApplianceInput<'a> {
    /// The image name: the VM's name and the files' (`<name>.ova`).
    pub name: &'a str,
    pub board: &'a str,
    /// Size of the raw image the VMDK is made from.
    pub image_bytes: u64,
    pub firmware_efi: bool,
    /// The spec's hash: the VMDK's content ID.
    pub seed: &'a [u8],
    pub epoch: u64,
}

/// An error in the `ova:` section: the key it is about (`cpus`,
/// `properties.ip`) and why.
#[derive(Debug)]
pub struct SettingError {
    pub key: String,
    pub error: anyhow::Error,
}

/// The appliance, or the first setting that is wrong.
pub fn appliance(input: &ApplianceInput, s: &OvaSettings) -> Result<Ova, SettingError> {
    let at = |key: &str| {
        let key = key.to_string();
        move |error| SettingError { key, error }
    };
    let cpus = s.cpus.unwrap_or(DEFAULT_CPUS);
    ovf::check_cpus(cpus).map_err(at("cpus"))?;
    let memory_mib = s.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    ovf::check_memory(memory_mib).map_err(at("memory-mib"))?;
    let gib = s.disk_gib.unwrap_or(DEFAULT_DISK_GIB);
    let capacity = gib.saturating_mul(1 << 30);
    if capacity < input.image_bytes {
        return Err(at("disk-gib")(anyhow::anyhow!(
            "a {gib} GiB virtual disk is smaller than the image ({} MiB); use at least {} GiB",
            input.image_bytes >> 20,
            input.image_bytes.div_ceil(1 << 30)
        )));
    }
    vmdk::check_capacity(input.image_bytes, capacity).map_err(at("disk-gib"))?;

    let mut defaults = BTreeMap::new();
    for (name, value) in &s.properties {
        let key = format!("properties.{name}");
        let text = match value {
            serde_yaml::Value::String(v) => v.clone(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Sequence(items) => {
                let words: Option<Vec<String>> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect();
                words
                    .ok_or_else(|| anyhow::anyhow!("the list holds something that is not text"))
                    .map_err(at(&key))?
                    .join(",")
            }
            _ => {
                return Err(at(&key)(anyhow::anyhow!(
                "vApp property {name:?} needs a plain value (text, true/false, a number or a list)"
            )))
            }
        };
        // One at a time, so the error names the property at fault.
        ovf::kiln_properties(&BTreeMap::from([(name.clone(), text.clone())])).map_err(at(&key))?;
        defaults.insert(name.clone(), text);
    }
    let properties = ovf::kiln_properties(&defaults).map_err(at("properties"))?;

    let version = env!("CARGO_PKG_VERSION");
    let ova = Ova {
        ovf: OvfSpec {
            name: input.name.to_string(),
            cpus,
            memory_mib,
            disk: DiskRef {
                file_name: format!("{}.vmdk", input.name),
                file_size: 0,
                capacity_bytes: capacity,
                populated_bytes: 0,
            },
            adapter: Adapter::Pvscsi,
            firmware_efi: input.firmware_efi,
            product: ProductInfo {
                product: "kiln k3s node".into(),
                vendor: "kiln".into(),
                version: version.into(),
                full_version: format!("kiln {version} ({}, {})", input.name, input.board),
                url: String::new(),
            },
            properties,
        },
        seed: input.seed.to_vec(),
        source_date_epoch: input.epoch,
    };
    ova.check().map_err(at(""))?;
    Ok(ova)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ApplianceInput<'static> {
        ApplianceInput {
            name: "kiln-demo",
            board: "vmware-ova",
            image_bytes: 642 << 20,
            firmware_efi: true,
            seed: b"seed",
            epoch: 1_704_067_200,
        }
    }

    fn settings(yaml: &str) -> OvaSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn err(yaml: &str) -> (String, String) {
        let e = appliance(&input(), &settings(yaml)).unwrap_err();
        (e.key, format!("{:#}", e.error))
    }

    #[test]
    fn defaults_fit_a_k3s_server() {
        let ova = appliance(&input(), &OvaSettings::default()).unwrap();
        assert_eq!((ova.ovf.cpus, ova.ovf.memory_mib), (2, 4096));
        assert_eq!(ova.ovf.disk.capacity_bytes, 32 << 30);
        assert_eq!(ova.ovf.adapter, Adapter::Pvscsi);
        let role = &ova.ovf.properties[0];
        assert_eq!(
            (role.key.as_str(), role.value.as_str()),
            ("guestinfo.kiln.role", "server")
        );
    }

    #[test]
    fn property_defaults_are_taken() {
        let ova = appliance(
            &input(),
            &settings("properties: {role: agent, cluster-init: false, dns: [10.0.0.2, 1.1.1.1], ip: 10.0.0.5/24}"),
        )
        .unwrap();
        let value = |k: &str| {
            ova.ovf
                .properties
                .iter()
                .find(|p| p.key == format!("guestinfo.kiln.{k}"))
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(value("role"), "agent");
        assert_eq!(value("dns"), "10.0.0.2,1.1.1.1");
        assert_eq!(value("ip"), "10.0.0.5/24");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let (key, e) = err("disk-gib: 0");
        assert_eq!(key, "disk-gib");
        assert_eq!(
            e,
            "a 0 GiB virtual disk is smaller than the image (642 MiB); use at least 1 GiB"
        );
        let (key, e) = err("properties: {rôle: server}");
        assert_eq!(key, "properties.rôle");
        assert!(e.contains("unknown vApp property \"rôle\""), "{e}");
        let (key, e) = err("properties: {ip: 10.0.0.5/33}");
        assert_eq!(key, "properties.ip");
        assert!(e.contains("not an IPv4 address with prefix length"), "{e}");
        let (key, e) = err("cpus: 0");
        assert_eq!(key, "cpus");
        assert!(e.contains("0 virtual CPUs is out of range"), "{e}");
        let (key, e) = err("memory-mib: 256");
        assert_eq!(key, "memory-mib");
        assert!(e.contains("256 MiB of memory is out of range"), "{e}");
        let (key, e) = err("properties: {token: s3cret}");
        assert_eq!(key, "properties.token");
        assert!(e.contains("anyone holding the OVA could read it"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
