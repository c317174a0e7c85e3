//! `apply` and `wait_ready` against a fake root tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::layout::{BAKED_NODE_CONFIG, FIRSTBOOT_DONE, PERSISTED_NODE_CONFIG};

pub(super) const FW_CFG_RAW: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/io.kiln/node.yaml/raw";

const SERVER: &str = "role: server\ncluster-init: true\ntoken: s3cret\nhostname: node-1\n";
const AGENT: &str = "role: agent\nserver: https://10.0.0.1:6443\ntoken-file: /etc/kiln/token\n";

/// A fake root, removed when dropped.
pub(super) struct Root(pub(super) PathBuf);

impl Root {
    pub(super) fn new(name: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("kiln-fb-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }
    pub(super) fn put(&self, path: &str, text: &str) {
        let p = self.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    pub(super) fn path(&self, path: &str) -> PathBuf {
        crate::datasource::under(&self.0, path)
    }
    pub(super) fn read(&self, path: &str) -> String {
        fs::read_to_string(self.path(path)).unwrap()
    }
    pub(super) fn mode(&self, path: &str) -> u32 {
        fs::metadata(self.path(path)).unwrap().permissions().mode() & 0o7777
    }
    pub(super) fn opts(&self) -> Options {
        let opts = Options::with_root(&self.0);
        assert!(!opts.live, "tests must never change the host");
        opts
    }
    pub(super) fn apply(&self) -> (Result<crate::config::NodeConfig, Error>, Vec<String>) {
        let mut out = Vec::new();
        let r = apply(&self.opts(), &crate::datasource::all(), &mut out);
        (r, lines(&out))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn first_boot_then_later_boots() {
    let root = Root::new("first");
    root.put(FW_CFG_RAW, SERVER);
    root.put(BAKED_NODE_CONFIG, "role: agent\n");
    let (r, out) = root.apply();
    r.unwrap();
    assert_eq!(
        out,
        [
            "kiln: node config from fw_cfg opt/io.kiln/node.yaml",
            "kiln: role server, new cluster (cluster-init)",
            "kiln: hostname node-1",
            "kiln: wrote /etc/rancher/k3s/config.yaml",
            "kiln: wrote /run/kiln/k3s.env",
            "kiln: saved node config to /var/lib/kiln/node.yaml",
            "kiln: first boot done",
        ]
    );
    assert_eq!(root.read(HOSTNAME_FILE), "node-1\n");
    let config = crate::config::parse(SERVER, "t").unwrap();
    assert_eq!(
        root.read(K3S_CONFIG),
        crate::config::render_k3s_config(config.single().unwrap())
    );
    assert_eq!(root.mode(K3S_CONFIG), 0o600);
    assert_eq!(root.read(K3S_ENV), "K3S_ROLE=server\n");
    assert_eq!(root.read(PERSISTED_NODE_CONFIG), SERVER);
    assert_eq!(root.mode(PERSISTED_NODE_CONFIG), 0o600);
    assert!(root.path(FIRSTBOOT_DONE).is_file());

    // Later boots use the saved copy, even when the datasource changes or
    // goes away, and rewrite nothing that is already right.
    fs::remove_file(root.path(FW_CFG_RAW)).unwrap();
    fs::remove_file(root.path(K3S_ENV)).unwrap(); // /run is a tmpfs
    let (r, out) = root.apply();
    r.unwrap();
    assert_eq!(
        out,
        [
            "kiln: first boot already done, re-applying saved config",
            "kiln: role server, new cluster (cluster-init)",
            "kiln: hostname node-1 (unchanged)",
            "kiln: /etc/rancher/k3s/config.yaml unchanged",
            "kiln: wrote /run/kiln/k3s.env",
            "kiln: node config applied",
        ]
    );
}

#[test]
fn baked_config_when_no_fw_cfg() {
    let root = Root::new("baked");
    root.put(BAKED_NODE_CONFIG, AGENT);
    root.put("/etc/kiln/token", "K10abc::server:s3cret\n");
    fs::set_permissions(
        root.path("/etc/kiln/token"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (r, out) = root.apply();
    assert_eq!(r.unwrap().role, crate::config::Role::Agent);
    assert_eq!(
        out,
        [
            "kiln: node config from /usr/lib/kiln/node.yaml",
            "kiln: role agent, joining https://10.0.0.1:6443",
            "kiln: hostname not in node config, left as it is",
            "kiln: token-file /etc/kiln/token: mode set to 0600",
            "kiln: wrote /etc/rancher/k3s/config.yaml",
            "kiln: wrote /run/kiln/k3s.env",
            "kiln: saved node config to /var/lib/kiln/node.yaml",
            "kiln: first boot done",
        ]
    );
    assert_eq!(root.mode("/etc/kiln/token"), 0o600);
    assert_eq!(root.read(K3S_ENV), "K3S_ROLE=agent\n");
    assert!(root
        .read(K3S_CONFIG)
        .contains("token-file: \"/etc/kiln/token\"\n"));
    assert!(!root.path(HOSTNAME_FILE).exists());
}

#[test]
fn no_config_anywhere() {
    let root = Root::new("none");
    let (r, out) = root.apply();
    assert_eq!(
        r.unwrap_err().to_string(),
        "no node config found (looked in: kernel command line, fw_cfg opt/io.kiln/node.yaml, \
         VMware guestinfo / OVF environment, boot partition node.yaml, /usr/lib/kiln/node.yaml); \
         put a node.yaml on the boot partition, pass one with kiln boot --node, fill in the vApp \
         properties on vSphere, or bake one in the spec"
    );
    assert!(out.is_empty());
    assert!(!root.path(FIRSTBOOT_DONE).exists());
}

#[test]
fn broken_config_never_falls_back() {
    let root = Root::new("broken");
    root.put(FW_CFG_RAW, "role: server\nrol: agent\n");
    root.put(BAKED_NODE_CONFIG, SERVER);
    let (r, out) = root.apply();
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(
        err.to_string(),
        "fw_cfg opt/io.kiln/node.yaml:2:1: unknown field `rol` (hint: did you mean `role`?)"
    );
    assert_eq!(out, ["kiln: node config from fw_cfg opt/io.kiln/node.yaml"]);
    assert!(!root.path(K3S_CONFIG).exists());
    assert!(!root.path(PERSISTED_NODE_CONFIG).exists());
}

#[test]
fn unreadable_datasource_stops() {
    let root = Root::new("unreadable");
    fs::create_dir_all(root.path(FW_CFG_RAW)).unwrap();
    root.put(BAKED_NODE_CONFIG, SERVER);
    let (r, _) = root.apply();
    let err = r.unwrap_err().to_string();
    assert!(err.starts_with(&format!("reading {FW_CFG_RAW}: ")), "{err}");
}

#[test]
fn missing_token_file_is_an_error() {
    let root = Root::new("notoken");
    root.put(BAKED_NODE_CONFIG, AGENT);
    let (r, _) = root.apply();
    assert_eq!(
        r.unwrap_err().to_string(),
        "token-file /etc/kiln/token: No such file or directory (os error 2); \
         put the token there (mode 0600) or use `token:` in node.yaml"
    );
}

#[test]
fn power_cut_before_the_marker_runs_the_first_boot_again() {
    let root = Root::new("powercut");
    root.put(FW_CFG_RAW, SERVER);
    root.put(PERSISTED_NODE_CONFIG, "role: agent\n"); // half-done first boot
    let (r, out) = root.apply();
    r.unwrap();
    assert_eq!(
        out[0],
        "kiln: node config from fw_cfg opt/io.kiln/node.yaml"
    );
    assert_eq!(root.read(PERSISTED_NODE_CONFIG), SERVER);
}

#[test]
fn marker_without_saved_config() {
    let root = Root::new("nosaved");
    root.put(FIRSTBOOT_DONE, "");
    root.put(FW_CFG_RAW, SERVER);
    let (r, _) = root.apply();
    assert_eq!(
        r.unwrap_err().to_string(),
        "/var/lib/kiln/firstboot.done exists but /var/lib/kiln/node.yaml is missing; \
         remove /var/lib/kiln/firstboot.done to run the first boot again"
    );
}

fn wait(root: &Root, secs: u64) -> (Result<String, Error>, Vec<String>) {
    let mut out = Vec::new();
    let r = wait_ready(
        &root.opts(),
        Duration::from_secs(secs),
        Duration::from_millis(20),
        &mut out,
    );
    (r, lines(&out))
}

#[test]
fn wait_ready_server() {
    let root = Root::new("ready-server");
    root.put(K3S_ENV, "K3S_ROLE=server\n");
    let (r, out) = wait(&root, 0);
    assert_eq!(
        r.unwrap_err().to_string(),
        "k3s not ready after 0 s (role=server): /var/lib/rancher/k3s/server/node-token, \
         /etc/rancher/k3s/k3s.yaml are missing; see journalctl -u k3s"
    );
    assert_eq!(out, ["kiln: waiting for k3s (role=server, up to 0 s)"]);
    root.put("/var/lib/rancher/k3s/server/node-token", "K10x::server:y\n");
    let (r, _) = wait(&root, 0);
    assert_eq!(
        r.unwrap_err().to_string(),
        "k3s not ready after 0 s (role=server): /etc/rancher/k3s/k3s.yaml is missing; \
         see journalctl -u k3s"
    );
    root.put(K3S_KUBECONFIG, "apiVersion: v1\n");
    let (r, out) = wait(&root, 0);
    assert_eq!(r.unwrap(), "server");
    assert_eq!(out[1], "kiln: node ready role=server");
}

#[test]
fn wait_ready_agent_follows_data_dir_and_waits() {
    let root = Root::new("ready-agent");
    root.put(K3S_ENV, "K3S_ROLE=agent\n");
    root.put(
        K3S_CONFIG,
        "server: \"https://s:6443\"\ndata-dir: \"/data/k3s\"\n",
    );
    let late = root.path("/data/k3s/agent/kubelet.kubeconfig");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        fs::create_dir_all(late.parent().unwrap()).unwrap();
        fs::write(late, "x").unwrap();
    });
    let (r, out) = wait(&root, 10);
    writer.join().unwrap();
    assert_eq!(r.unwrap(), "agent");
    assert_eq!(
        out,
        [
            "kiln: waiting for k3s (role=agent, up to 10 s)",
            "kiln: node ready role=agent"
        ]
    );
}

#[test]
fn wait_ready_before_apply() {
    let root = Root::new("ready-noenv");
    let (r, _) = wait(&root, 0);
    assert_eq!(
        r.unwrap_err().to_string(),
        "/run/kiln/k3s.env is missing: kiln-firstboot apply has not run; \
         see journalctl -u kiln-firstboot"
    );
}

#[test]
fn options_are_live_only_on_slash() {
    assert!(Options::system().live);
    assert!(!Options::with_root(Path::new("/tmp/x")).live);
}
