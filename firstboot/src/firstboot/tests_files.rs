//! `apply` writing every kind of file, rack mode on a fake sysfs, and a
//! broken config leaving the disk exactly as it was.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::tests::{Root, FW_CFG_RAW};
use super::*;
use crate::layout::{FIRSTBOOT_DONE, PERSISTED_NODE_CONFIG};

const FULL: &str = "role: server
cluster-init: true
token: s3cret
hostname: edge-1
network: {interface: eth0, address: 10.0.0.5/24, gateway: 10.0.0.1, dns: [10.0.0.1]}
ntp: [10.0.0.1, pool.ntp.org]
ssh-authorized-keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o admin@laptop
timezone: Europe/Berlin
registries:
  mirrors: {docker.io: {endpoint: [\"https://registry.lan:5000\"]}}
  configs: {registry.lan:5000: {auth: {username: u, password: registry-pw}}}
manifests:
  app.yaml: |
    apiVersion: v1
    kind: Namespace
    metadata: {name: app}
k3s-args:
  data-dir: /data/k3s
";

#[test]
fn every_file_with_its_mode_then_nothing_changes() {
    let root = Root::new("files");
    root.put(FW_CFG_RAW, FULL);
    root.put("/usr/share/zoneinfo/Europe/Berlin", "TZif2");
    let (r, out) = root.apply();
    let config = r.unwrap();
    assert_eq!(
        out,
        [
            "kiln: node config from fw_cfg opt/io.kiln/node.yaml",
            "kiln: role server, new cluster (cluster-init)",
            "kiln: hostname edge-1",
            "kiln: timezone Europe/Berlin: wrote /etc/localtime, /etc/timezone",
            "kiln: wrote /etc/rancher/k3s/config.yaml",
            "kiln: registries (1 mirror, 1 config): wrote /etc/rancher/k3s/registries.yaml",
            "kiln: manifest app.yaml: wrote /data/k3s/server/manifests/app.yaml",
            "kiln: network eth0 static 10.0.0.5/24 via 10.0.0.1 dns 10.0.0.1: wrote /etc/systemd/network/10-kiln.network",
            "kiln: ntp 10.0.0.1, pool.ntp.org: wrote /etc/systemd/timesyncd.conf.d/kiln.conf",
            "kiln: ssh 1 authorized key for root: wrote /root/.ssh/authorized_keys",
            "kiln: wrote /run/kiln/k3s.env",
            "kiln: saved node config to /var/lib/kiln/node.yaml",
            "kiln: first boot done",
        ]
    );
    for (path, mode) in [
        (K3S_CONFIG, 0o600),
        (REGISTRIES, 0o600),
        ("/data/k3s/server/manifests/app.yaml", 0o600),
        ("/data/k3s/server/manifests", 0o700),
        (NETWORKD_UNIT, 0o644),
        (TIMESYNCD_DROPIN, 0o644),
        (AUTHORIZED_KEYS, 0o600),
        ("/root/.ssh", 0o700),
        (TIMEZONE_FILE, 0o644),
        (PERSISTED_NODE_CONFIG, 0o600),
    ] {
        assert_eq!(root.mode(path), mode, "{path}");
    }
    assert_eq!(
        root.read(REGISTRIES),
        crate::config::render_registries(config.registries.as_ref().unwrap())
    );
    assert_eq!(
        root.read(NETWORKD_UNIT),
        crate::config::render_networkd(config.network.as_ref().unwrap())
    );
    assert!(root
        .read("/data/k3s/server/manifests/app.yaml")
        .starts_with("apiVersion: v1\n"));
    assert_eq!(
        fs::read_link(root.path(LOCALTIME)).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(root.read(TIMEZONE_FILE), "Europe/Berlin\n");
    assert!(root
        .read(AUTHORIZED_KEYS)
        .contains("\nssh-ed25519 AAAAC3Nz"));

    fs::remove_file(root.path(K3S_ENV)).unwrap();
    let (r, out) = root.apply();
    r.unwrap();
    assert_eq!(
        out,
        [
            "kiln: first boot already done, re-applying saved config",
            "kiln: role server, new cluster (cluster-init)",
            "kiln: hostname edge-1 (unchanged)",
            "kiln: timezone Europe/Berlin: /etc/localtime, /etc/timezone unchanged",
            "kiln: /etc/rancher/k3s/config.yaml unchanged",
            "kiln: registries (1 mirror, 1 config): /etc/rancher/k3s/registries.yaml unchanged",
            "kiln: manifest app.yaml: /data/k3s/server/manifests/app.yaml unchanged",
            "kiln: network eth0 static 10.0.0.5/24 via 10.0.0.1 dns 10.0.0.1: /etc/systemd/network/10-kiln.network unchanged",
            "kiln: ntp 10.0.0.1, pool.ntp.org: /etc/systemd/timesyncd.conf.d/kiln.conf unchanged",
            "kiln: ssh 1 authorized key for root: /root/.ssh/authorized_keys unchanged",
            "kiln: wrote /run/kiln/k3s.env",
            "kiln: node config applied",
        ]
    );
}

#[test]
fn missing_zone_is_a_warning_and_a_bare_server_names_its_token() {
    let root = Root::new("nozone");
    root.put(FW_CFG_RAW, "role: server\ntimezone: Mars/Olympus\n");
    let (r, out) = root.apply();
    r.unwrap();
    assert_eq!(out[2], "kiln: hostname not in node config, left as it is");
    assert_eq!(
        out[3],
        "kiln: token: none given, k3s generates one in /var/lib/rancher/k3s/server/node-token"
    );
    assert_eq!(
        out[4],
        "kiln: warning: timezone Mars/Olympus: /usr/share/zoneinfo/Mars/Olympus is not in the image \
         (tzdata?), left as it is"
    );
    assert!(!root.path(LOCALTIME).exists());
}

/// A NIC as sysfs shows it.
fn nic(root: &Root, name: &str, mac: &str) {
    root.put(
        &format!("/sys/class/net/{name}/address"),
        &format!("{mac}\n"),
    );
    let dev = root.path(&format!("/sys/class/net/{name}/device"));
    std::os::unix::fs::symlink("../../../devices/x", dev).unwrap();
}

const RACK: &str = "role: agent
server: https://10.0.0.11:6443
token: rack-token
nodes:
  dc:a6:32:00:00:11:
    role: server
    cluster-init: true
    server: ~
    hostname: rack-1
  dc:a6:32:00:00:12:
    hostname: rack-2
";

#[test]
fn rack_node_takes_its_entry_and_saves_it_merged() {
    let root = Root::new("rack");
    root.put(FW_CFG_RAW, RACK);
    nic(&root, "eth0", "DC:A6:32:00:00:12");
    root.put("/sys/class/net/lo/address", "00:00:00:00:00:00\n");
    let (r, out) = root.apply();
    let config = r.unwrap();
    assert_eq!(
        out[..4],
        [
            "kiln: node config from fw_cfg opt/io.kiln/node.yaml",
            "kiln: rack mode: this node has MAC dc:a6:32:00:00:12; no serial",
            "kiln: rack mode: using nodes entry `dc:a6:32:00:00:12` (MAC dc:a6:32:00:00:12)",
            "kiln: role agent, joining https://10.0.0.11:6443",
        ]
    );
    assert_eq!(root.read(HOSTNAME_FILE), "rack-2\n");
    assert_eq!(root.read(K3S_ENV), "K3S_ROLE=agent\n");
    // What was saved is this node's config alone: later boots need no MAC.
    let saved = root.read(PERSISTED_NODE_CONFIG);
    assert!(
        saved.starts_with(
            "# The node config kiln-firstboot applied on the first boot: entry \
                               `dc:a6:32:00:00:12` of fw_cfg opt/io.kiln/node.yaml,\n"
        ),
        "{saved}"
    );
    let back = crate::config::parse(&saved, "saved").unwrap();
    assert_eq!(back.single(), Some(&config));
    fs::remove_dir_all(root.path("/sys/class/net")).unwrap();
    let (r, out) = root.apply();
    assert_eq!(r.unwrap().hostname.as_deref(), Some("rack-2"));
    assert_eq!(out[1], "kiln: role agent, joining https://10.0.0.11:6443");
}

/// Every file under the root with its bytes (links as their target).
fn snapshot(root: &Root) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.strip_prefix(base).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(name, Vec::new());
                walk(&p, base, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    name,
                    fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                );
            } else {
                out.insert(name, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root.0, &root.0, &mut out);
    out
}

#[test]
fn a_config_that_cannot_apply_changes_nothing() {
    let cases = [
        // Invalid.
        "role: agent\nhostname: new\n",
        // Valid, but the token file is not on the node.
        "role: agent\nhostname: new\nserver: https://s:6443\ntoken-file: /etc/kiln/token\n",
        // A rack that waits for an entry this node does not have.
        "role: agent\nserver: https://s:6443\ntoken: t\nwait-for-config: true\nnodes:\n  aa:bb:cc:dd:ee:01: {hostname: new}\n",
    ];
    for (i, text) in cases.iter().enumerate() {
        let root = Root::new(&format!("nochange-{i}"));
        root.put(HOSTNAME_FILE, "localhost\n");
        root.put(FW_CFG_RAW, text);
        nic(&root, "eth0", "52:54:00:12:34:56");
        let before = snapshot(&root);
        let (r, _) = root.apply();
        let err = r.unwrap_err();
        assert_eq!(snapshot(&root), before, "case {i}: {err}");
        assert!(!root.path(FIRSTBOOT_DONE).exists());
        assert_eq!(err.is_retryable(), i == 2, "case {i}: {err}");
    }
}

#[test]
fn kernel_command_line_wins() {
    let root = Root::new("cmdline");
    root.put(FW_CFG_RAW, "role: server\n");
    root.put(
        "/proc/cmdline",
        "console=ttyS0 kiln.role=server kiln.hostname=from-cmdline\n",
    );
    let (r, out) = root.apply();
    assert_eq!(r.unwrap().hostname.as_deref(), Some("from-cmdline"));
    assert_eq!(out[0], "kiln: node config from kernel command line");
}
