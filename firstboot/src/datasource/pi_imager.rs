//! Raspberry Pi Imager's OS customisation, as it writes it for an image
//! whose repository entry says `init_format: cloudinit`: cloud-init's
//! `user-data` and `network-config` on the card's boot partition.
//!
//! kiln runs no cloud-init. It reads the keys that mean something on a
//! kiln node and says which others it ignored:
//! - `hostname`, `timezone`;
//! - `ssh_authorized_keys` of any user in `users:` (and the top-level
//!   list): kiln has one account, root, so the keys go there;
//! - a Wi-Fi network in `network-config` is named and ignored: kiln's Pi
//!   images carry no Wi-Fi firmware or supplicant yet, so the node needs
//!   its Ethernet port. Its password is never printed.
//!
//! These settings are made per card at flash time, so they win over the
//! node config's (hostname, timezone) or add to it (SSH keys); the k3s
//! role, server and token never come from Pi Imager.

use serde_yaml::Value;

/// What Pi Imager asked for that kiln applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customisation {
    pub hostname: Option<String>,
    pub timezone: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    /// SSIDs from `network-config` (not applied; see the module's note).
    pub wifi_ssids: Vec<String>,
    /// `user-data` keys kiln does not apply, for one console line.
    pub ignored: Vec<String>,
}

/// Reads the two files (either may be missing). `Ok(None)` when neither
/// says anything; an error names the file and what is wrong in it.
pub fn parse(
    user_data: Option<&[u8]>,
    network_config: Option<&[u8]>,
) -> Result<Option<Customisation>, String> {
    let mut c = Customisation::default();
    if let Some(bytes) = user_data {
        read_user_data(&yaml(bytes, "user-data")?, &mut c)?;
    }
    if let Some(bytes) = network_config {
        read_network_config(&yaml(bytes, "network-config")?, &mut c)?;
    }
    Ok((c != Customisation::default()).then_some(c))
}

fn yaml(bytes: &[u8], name: &str) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 text"))?;
    serde_yaml::from_str(text).map_err(|e| format!("{name} is not valid YAML: {e}"))
}

fn string(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{what} is not a string")),
    }
}

fn keys_of(v: &Value, what: &str, into: &mut Vec<String>) -> Result<(), String> {
    let Value::Sequence(list) = v else {
        return Err(format!("{what} is not a list"));
    };
    for k in list {
        let key = string(k, what)?;
        if !key.is_empty() && !into.contains(&key) {
            into.push(key);
        }
    }
    Ok(())
}

fn read_user_data(doc: &Value, c: &mut Customisation) -> Result<(), String> {
    let map = match doc {
        Value::Mapping(m) => m,
        // An empty file, or one with only the `#cloud-config` comment.
        Value::Null => return Ok(()),
        _ => return Err("user-data is not a YAML mapping".into()),
    };
    for (k, v) in map {
        let key = string(k, "a user-data key")?;
        match key.as_str() {
            "hostname" => c.hostname = Some(string(v, "user-data hostname")?),
            "timezone" => c.timezone = Some(string(v, "user-data timezone")?),
            "ssh_authorized_keys" => keys_of(
                v,
                "user-data ssh_authorized_keys",
                &mut c.ssh_authorized_keys,
            )?,
            "users" => {
                let Value::Sequence(users) = v else {
                    return Err("user-data users is not a list".into());
                };
                for (i, user) in users.iter().enumerate() {
                    // `- default` names cloud-init's default user: nothing here.
                    let Value::Mapping(u) = user else { continue };
                    for (uk, uv) in u {
                        let name = string(uk, "a user-data users key")?;
                        if name == "ssh_authorized_keys" {
                            keys_of(
                                uv,
                                "user-data users ssh_authorized_keys",
                                &mut c.ssh_authorized_keys,
                            )?;
                        } else if !["name", "groups", "shell", "sudo", "lock_passwd"]
                            .contains(&name.as_str())
                        {
                            c.ignored.push(format!("users[{i}].{name}"));
                        }
                    }
                }
            }
            // manage_etc_hosts, packages, apt, keyboard, enable_ssh, ...
            other => c.ignored.push(other.to_string()),
        }
    }
    Ok(())
}

fn read_network_config(doc: &Value, c: &mut Customisation) -> Result<(), String> {
    // Pi Imager nests it under `network:`; cloud-init also takes it bare.
    let net = doc.get("network").unwrap_or(doc);
    let Some(wifis) = net.get("wifis") else {
        return Ok(());
    };
    let Value::Mapping(ifaces) = wifis else {
        return Err("network-config wifis is not a mapping".into());
    };
    for (_, iface) in ifaces {
        if let Some(Value::Mapping(aps)) = iface.get("access-points") {
            for (ssid, _) in aps {
                c.wifi_ssids
                    .push(string(ssid, "a network-config access point")?);
            }
        }
    }
    Ok(())
}

impl Customisation {
    /// The console lines: what is applied, and what is not.
    pub fn describe(&self) -> Vec<String> {
        let mut applied = Vec::new();
        if let Some(h) = &self.hostname {
            applied.push(format!("hostname {h}"));
        }
        if !self.ssh_authorized_keys.is_empty() {
            let n = self.ssh_authorized_keys.len();
            applied.push(format!(
                "{n} ssh key{} for root",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(tz) = &self.timezone {
            applied.push(format!("timezone {tz}"));
        }
        let mut lines = Vec::new();
        if !applied.is_empty() {
            lines.push(format!("Pi Imager settings: {}", applied.join(", ")));
        }
        for ssid in &self.wifi_ssids {
            lines.push(format!(
                "Pi Imager Wi-Fi network {ssid:?} not set up: kiln's Pi images have no \
                 Wi-Fi yet; connect the Ethernet port"
            ));
        }
        if !self.ignored.is_empty() {
            lines.push(format!(
                "Pi Imager user-data: ignored (not used on kiln): {}",
                self.ignored.join(", ")
            ));
        }
        lines
    }

    /// `config` with these settings: hostname and timezone replaced, SSH
    /// keys added.
    pub fn apply_to(&self, config: &mut crate::config::NodeConfig) {
        if let Some(h) = &self.hostname {
            config.hostname = Some(h.clone());
        }
        if let Some(tz) = &self.timezone {
            config.timezone = Some(tz.clone());
        }
        for key in &self.ssh_authorized_keys {
            if !config.ssh_authorized_keys.contains(key) {
                config.ssh_authorized_keys.push(key.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Pi Imager 2.x writes them (`customization_generator.cpp`), with
    /// hostname, timezone, keyboard, a key-only user and a Wi-Fi network.
    const USER_DATA: &str = "#cloud-config
hostname: kiln-pi-7
manage_etc_hosts: true
packages:
- avahi-daemon

apt:
  conf: |
    Acquire {
      Check-Date \"false\";
    };

timezone: Europe/Berlin
keyboard:
  model: pc105
  layout: \"de\"
enable_ssh: true
users:
- name: pi
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: false
  passwd: $5$abc$def
  ssh_authorized_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o me@laptop
  sudo: ALL=(ALL) NOPASSWD:ALL

ssh_pwauth: true
";

    const NETWORK_CONFIG: &str = "network:
  version: 2
  wifis:
    wlan0:
      dhcp4: true
      regulatory-domain: \"DE\"
      access-points:
        \"Rack \\\"A\\\"\":
          password: \"5f1b3a9c0d7e2f4a6b8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a\"
      optional: true
";

    #[test]
    fn what_pi_imager_writes_is_read_and_the_rest_named() {
        let c = parse(Some(USER_DATA.as_bytes()), Some(NETWORK_CONFIG.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("kiln-pi-7"));
        assert_eq!(c.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.ssh_authorized_keys.len(), 1);
        assert!(c.ssh_authorized_keys[0].ends_with("me@laptop"));
        assert_eq!(c.wifi_ssids, ["Rack \"A\""]);
        assert_eq!(
            c.ignored,
            [
                "manage_etc_hosts",
                "packages",
                "apt",
                "keyboard",
                "enable_ssh",
                "users[0].passwd",
                "ssh_pwauth"
            ]
        );
        let lines = c.describe().join("\n");
        assert_eq!(
            lines,
            "Pi Imager settings: hostname kiln-pi-7, 1 ssh key for root, timezone Europe/Berlin\n\
             Pi Imager Wi-Fi network \"Rack \\\"A\\\"\" not set up: kiln's Pi images have no \
             Wi-Fi yet; connect the Ethernet port\n\
             Pi Imager user-data: ignored (not used on kiln): manage_etc_hosts, packages, apt, \
             keyboard, enable_ssh, users[0].passwd, ssh_pwauth"
        );
        assert!(!lines.contains("5f1b3a9c"), "the Wi-Fi password is printed");
        assert!(!lines.contains("$5$abc"), "the password hash is printed");
    }

    #[test]
    fn settings_win_over_the_node_config_and_keys_add_up() {
        let c = parse(Some(USER_DATA.as_bytes()), None).unwrap().unwrap();
        let mut config = crate::config::parse(
            "role: server\nhostname: from-node-yaml\ntimezone: UTC\n\
             ssh-authorized-keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o ops]\n",
            "node.yaml",
        )
        .unwrap()
        .common
        .unwrap();
        c.apply_to(&mut config);
        assert_eq!(config.hostname.as_deref(), Some("kiln-pi-7"));
        assert_eq!(config.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(config.ssh_authorized_keys.len(), 2);
        c.apply_to(&mut config);
        assert_eq!(
            config.ssh_authorized_keys.len(),
            2,
            "applied twice, no duplicate"
        );
    }

    #[test]
    fn empty_files_say_nothing_and_broken_ones_are_named() {
        assert_eq!(parse(Some(b"#cloud-config\n"), Some(b"")).unwrap(), None);
        assert_eq!(parse(None, None).unwrap(), None);
        let err = parse(Some(b"hostname: [a\n"), None).unwrap_err();
        assert!(err.starts_with("user-data is not valid YAML"), "{err}");
        let err = parse(Some(b"users: 3\n"), None).unwrap_err();
        assert_eq!(err, "user-data users is not a list");
        let err = parse(None, Some(b"network: {wifis: [1]}\n")).unwrap_err();
        assert_eq!(err, "network-config wifis is not a mapping");
    }
}
