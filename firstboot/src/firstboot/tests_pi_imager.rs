//! `apply` with Raspberry Pi Imager's settings on the card: they go over
//! the node config on the first boot and are saved with it.

use std::path::Path;

use super::tests::{Root, FW_CFG_RAW};
use super::*;
use crate::config::NodeConfig;
use crate::datasource::pi_imager::{self, Customisation};
use crate::datasource::{Datasource, FetchError, FwCfg};
use crate::layout::PERSISTED_NODE_CONFIG;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o";

/// A card whose boot partition holds Pi Imager's `user-data`.
struct Card(&'static str);

impl Datasource for Card {
    fn name(&self) -> &str {
        "test card"
    }
    fn fetch(&self, _: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        Ok(None)
    }
    fn customisation(&self, _: &Path) -> Result<Option<Customisation>, FetchError> {
        Ok(pi_imager::parse(Some(self.0.as_bytes()), None).unwrap())
    }
}

fn apply_with(root: &Root, user_data: &'static str) -> (Result<NodeConfig, Error>, Vec<String>) {
    let sources: Vec<Box<dyn Datasource>> = vec![Box::new(FwCfg), Box::new(Card(user_data))];
    let mut out = Vec::new();
    let r = apply(&root.opts(), &sources, &mut out);
    (r, super::tests::lines(&out))
}

#[test]
fn pi_imager_settings_go_over_node_yaml_and_are_saved() {
    let root = Root::new("pi-imager");
    root.put(
        FW_CFG_RAW,
        &format!("role: server\nhostname: from-node-yaml\nssh-authorized-keys: [{KEY} ops]\n"),
    );
    root.put("/usr/share/zoneinfo/Europe/Berlin", "TZif");
    let user_data = "#cloud-config\nhostname: kiln-pi-7\ntimezone: Europe/Berlin\n\
                     users:\n- name: pi\n  passwd: $5$x\n  ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o laptop]\n";
    let (r, out) = apply_with(&root, user_data);
    let config = r.unwrap();
    assert!(
        out.contains(
            &"kiln: Pi Imager settings: hostname kiln-pi-7, 1 ssh key for root, timezone Europe/Berlin"
                .to_string()
        ),
        "{out:?}"
    );
    assert!(
        out.contains(
            &"kiln: Pi Imager user-data: ignored (not used on kiln): users[0].passwd".to_string()
        ),
        "{out:?}"
    );
    assert_eq!(root.read(HOSTNAME_FILE), "kiln-pi-7\n");
    assert_eq!(root.read(TIMEZONE_FILE), "Europe/Berlin\n");
    let keys = root.read(AUTHORIZED_KEYS);
    assert!(
        keys.contains(" ops\n") && keys.contains(" laptop\n"),
        "{keys}"
    );
    assert_eq!(config.ssh_authorized_keys.len(), 2);
    let saved = root.read(PERSISTED_NODE_CONFIG);
    assert!(saved.contains("with Pi Imager's settings"), "{saved}");
    assert!(saved.contains("hostname: kiln-pi-7"), "{saved}");

    // Later boots re-apply the saved config; the card is not read again.
    let (r, out) = apply_with(&root, "hostname: changed-later\n");
    assert_eq!(r.unwrap().hostname.as_deref(), Some("kiln-pi-7"));
    assert!(!out.iter().any(|l| l.contains("Pi Imager")), "{out:?}");
}

#[test]
fn a_bad_hostname_from_pi_imager_stops_the_node_before_any_write() {
    let root = Root::new("pi-imager-bad");
    root.put(FW_CFG_RAW, "role: server\n");
    let (r, _) = apply_with(&root, "hostname: not_a_hostname!\n");
    let err = r.unwrap_err().to_string();
    assert!(err.contains("with Pi Imager's settings"), "{err}");
    assert!(err.contains("hostname"), "{err}");
    assert!(!root.path(HOSTNAME_FILE).exists());
    assert!(!root.path(PERSISTED_NODE_CONFIG).exists());
}
