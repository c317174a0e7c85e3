//! The node.yaml document as written: every key optional, so that the
//! common part of a rack file and each `nodes:` entry parse with the same
//! type, and an entry can be merged over the common part ([`RawConfig::over`]:
//! the entry wins, lists replace, mappings merge key by key). `validate.rs`
//! turns a merged [`RawConfig`] into a [`super::NodeConfig`].
//!
//! Serialize writes it back (the first boot saves the merged config of a
//! rack node); every unset key is left out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::Value;

use super::registries::Registries;
use super::{FlannelBackend, Role, Secret};

/// One node.yaml mapping: the whole file, the common part of a rack file,
/// or one `nodes:` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_endpoint: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_kubeconfig_mode: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub tls_san: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub node_label: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub node_taint: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub disable: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub node_ip: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub node_external_ip: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flannel_iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flannel_backend: Option<FlannelBackend>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub cluster_cidr: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub service_cidr: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub cluster_dns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<RawNetwork>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub ntp: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub ssh_authorized_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<Registries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<UniqueMap<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s_args: Option<UniqueMap<Value>>,
    /// Rack mode: a node without an entry waits instead of using the
    /// common part. Top level only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_config: Option<bool>,
    /// Rack mode: entries keyed by MAC or `serial:<serial>`. Top level only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<UniqueMap<RawConfig>>,
}

/// `network:` as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list"
    )]
    pub dns: Option<Vec<String>>,
}

macro_rules! take {
    ($node:expr, $common:expr; $($f:ident),*) => {
        RawConfig { $($f: $node.$f.clone().or_else(|| $common.$f.clone()),)* ..Default::default() }
    };
}

impl RawConfig {
    /// This entry merged over `common`: a key set here wins, lists replace,
    /// `network`, `registries`, `manifests` and `k3s-args` merge key by key.
    /// `nodes` and `wait-for-config` are not carried over.
    pub fn over(&self, common: &RawConfig) -> RawConfig {
        let mut out = take!(self, common; role, cluster_init, server, token, token_file,
            datastore_endpoint, hostname, write_kubeconfig_mode, tls_san, node_label,
            node_taint, disable, node_ip, node_external_ip, flannel_iface, flannel_backend,
            cluster_cidr, service_cidr, cluster_dns, ntp, ssh_authorized_keys, timezone);
        out.network = merge_opt(&self.network, &common.network, |n, c| RawNetwork {
            interface: n.interface.clone().or_else(|| c.interface.clone()),
            mac: n.mac.clone().or_else(|| c.mac.clone()),
            dhcp: n.dhcp.or(c.dhcp),
            address: n.address.clone().or_else(|| c.address.clone()),
            gateway: n.gateway.clone().or_else(|| c.gateway.clone()),
            dns: n.dns.clone().or_else(|| c.dns.clone()),
        });
        out.registries = merge_opt(&self.registries, &common.registries, |n, c| n.over(c));
        out.manifests = merge_opt(&self.manifests, &common.manifests, |n, c| n.over(c));
        out.k3s_args = merge_opt(&self.k3s_args, &common.k3s_args, |n, c| n.over(c));
        out
    }
}

fn merge_opt<T: Clone>(
    node: &Option<T>,
    common: &Option<T>,
    merge: impl Fn(&T, &T) -> T,
) -> Option<T> {
    match (node, common) {
        (Some(n), Some(c)) => Some(merge(n, c)),
        (n, c) => n.clone().or_else(|| c.clone()),
    }
}

/// A mapping with string keys, in file order, that rejects a key written
/// twice (serde's maps keep the last one silently).
#[derive(Clone, PartialEq)]
pub struct UniqueMap<V>(pub Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<V: Clone> UniqueMap<V> {
    /// The entries of `self` over those of `common`: same key, `self` wins.
    pub fn over(&self, common: &UniqueMap<V>) -> UniqueMap<V> {
        let mut out = common.0.clone();
        for (k, v) in &self.0 {
            match out.iter_mut().find(|(ck, _)| ck == k) {
                Some(slot) => slot.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
        UniqueMap(out)
    }

    /// Sorted by key, for output that does not depend on the file's order.
    pub fn sorted(&self) -> BTreeMap<String, V> {
        self.0.iter().cloned().collect()
    }
}

/// Values under secret-looking keys (`agent-token`, ...) print as `***`.
impl<V: fmt::Debug> fmt::Debug for UniqueMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.iter().map(|(k, v)| {
            if super::secret::is_secret_key(k) {
                (k, super::REDACTED.to_owned())
            } else {
                (k, format!("{v:?}"))
            }
        });
        f.debug_map().entries(shown).finish()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(key) = m.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("duplicate entry `{key}`")));
                    }
                    let value = m.next_value()?;
                    out.push((key, value));
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl<V: Serialize> Serialize for UniqueMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Accepts `key: value` as well as `key: [a, b]`, as k3s's config does.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    one_or_many(d).map(Some)
}

pub(crate) fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawConfig {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn entry_wins_lists_replace_maps_merge() {
        let common = raw("role: agent\ntls-san: [a, b]\nnetwork: {dhcp: false, address: 10.0.0.2/24, gateway: 10.0.0.1}\n\
                          k3s-args: {x: 1, y: 2}\nntp: [t1]\n");
        let node = raw(
            "role: server\ntls-san: [c]\nnetwork: {address: 10.0.0.3/24}\nk3s-args: {y: 3, z: 4}\n",
        );
        let m = node.over(&common);
        assert_eq!(m.role, Some(Role::Server));
        assert_eq!(m.tls_san, Some(vec!["c".to_owned()]));
        assert_eq!(m.ntp, Some(vec!["t1".to_owned()]));
        let n = m.network.unwrap();
        assert_eq!(n.address.as_deref(), Some("10.0.0.3/24"));
        assert_eq!(n.gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(n.dhcp, Some(false));
        let args: Vec<(String, Value)> = m.k3s_args.unwrap().0;
        assert_eq!(
            args,
            [
                ("x".to_owned(), Value::from(1)),
                ("y".to_owned(), Value::from(3)),
                ("z".to_owned(), Value::from(4))
            ]
        );
    }

    #[test]
    fn an_entry_can_clear_a_list_and_a_flag() {
        let common = raw("cluster-init: true\ndisable: [traefik]\n");
        let node = raw("cluster-init: false\ndisable: []\n");
        let m = node.over(&common);
        assert_eq!(m.cluster_init, Some(false));
        assert_eq!(m.disable, Some(vec![]));
    }

    #[test]
    fn duplicate_map_entries_are_errors() {
        let e = serde_yaml::from_str::<RawConfig>("k3s-args:\n  a: 1\n  a: 2\n").unwrap_err();
        assert!(e.to_string().contains("duplicate entry `a`"), "{e}");
    }

    #[test]
    fn debug_hides_secret_looking_flags() {
        let r = raw("token: tok-1234\nk3s-args: {agent-token: agent-1234, node-name: n}\n");
        let shown = format!("{r:?}");
        assert!(!shown.contains("1234"), "{shown}");
        assert!(
            shown.contains("\"node-name\": \"String(\\\"n\\\")\""),
            "{shown}"
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let text = "role: server\ntoken: s3cret\ntls-san: [a]\nnetwork: {dhcp: true}\nmanifests: {a.yaml: \"kind: X\\n\"}\n";
        let r = raw(text);
        let back = raw(&serde_yaml::to_string(&r).unwrap());
        assert_eq!(back, r);
    }
}
