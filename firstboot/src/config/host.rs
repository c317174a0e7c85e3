//! Renderers for the host settings, each a pure function from a validated
//! config to the text of one file. `kiln-firstboot` writes them; the paths
//! are the `*_PATH` constants in `crate::firstboot`.

use std::fmt::Write;

use super::{Network, NodeConfig};

/// Interfaces `network:` configures when it names neither `interface` nor
/// `mac`: the kernel's and systemd's names for wired NICs (`usb*` is the
/// Raspberry Pi's USB Ethernet under QEMU), never k3s's own (`cni0`,
/// `flannel.1`, `veth*`).
pub const DEFAULT_MATCH: &str = "en* eth* usb*";

/// The systemd-networkd `.network` unit for `network:`.
pub fn render_networkd(n: &Network) -> String {
    let mut out = String::new();
    out.push_str("# Written by kiln-firstboot from the node config (node.yaml).\n");
    out.push_str("# It is rewritten at every boot: change node.yaml, not this file.\n");
    out.push_str("[Match]\n");
    match (&n.interface, &n.mac) {
        (Some(name), _) => {
            let _ = writeln!(out, "Name={name}");
        }
        (None, Some(mac)) => {
            let _ = writeln!(out, "MACAddress={mac}");
        }
        (None, None) => {
            let _ = writeln!(out, "Name={DEFAULT_MATCH}");
        }
    }
    out.push_str("\n[Network]\n");
    let _ = writeln!(out, "DHCP={}", if n.dhcp { "yes" } else { "no" });
    if let Some(a) = &n.address {
        let _ = writeln!(out, "Address={a}");
    }
    if let Some(g) = &n.gateway {
        let _ = writeln!(out, "Gateway={g}");
    }
    for d in &n.dns {
        let _ = writeln!(out, "DNS={d}");
    }
    out
}

/// The `timesyncd.conf` drop-in for `ntp:` (`None` when it names none).
pub fn render_timesyncd(c: &NodeConfig) -> Option<String> {
    if c.ntp.is_empty() {
        return None;
    }
    Some(format!(
        "# Written by kiln-firstboot from the node config (node.yaml).\n[Time]\nNTP={}\n",
        c.ntp.join(" ")
    ))
}

/// root's `authorized_keys` for `ssh-authorized-keys:` (`None` when empty).
pub fn render_authorized_keys(c: &NodeConfig) -> Option<String> {
    if c.ssh_authorized_keys.is_empty() {
        return None;
    }
    let mut out = String::from("# Written by kiln-firstboot from the node config (node.yaml).\n");
    for k in &c.ssh_authorized_keys {
        out.push_str(k.trim());
        out.push('\n');
    }
    Some(out)
}

/// What `timezone:` becomes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timezone {
    /// Where `/etc/localtime` points.
    pub localtime_target: String,
    /// The text of `/etc/timezone`.
    pub timezone_file: String,
}

/// `/etc/localtime` → `/usr/share/zoneinfo/<tz>` and `/etc/timezone`.
pub fn render_timezone(c: &NodeConfig) -> Option<Timezone> {
    let tz = c.timezone.as_ref()?;
    Some(Timezone {
        localtime_target: format!("/usr/share/zoneinfo/{tz}"),
        timezone_file: format!("{tz}\n"),
    })
}
