//! `kiln-firstboot apply --root DIR` as systemd runs it: the console lines,
//! the exit code, and the retry of a rack file that has no entry yet.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kiln-firstboot");
const FW_CFG: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/io.kiln/node.yaml/raw";

struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("kiln-fb-bin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }
    fn put(&self, path: &str, text: &str) {
        let p = self.0.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn has(&self, path: &str) -> bool {
        self.0.join(path).exists()
    }
    fn apply(&self) -> Command {
        let mut c = Command::new(BIN);
        c.args(["apply", "--root"]).arg(&self.0);
        c
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn valid_config_exits_0_with_the_boot_test_markers() {
    let root = Root::new("ok");
    root.put(
        FW_CFG,
        "role: server\ncluster-init: true\ntoken: s3cret\nhostname: n1\n",
    );
    let out = root.apply().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("kiln: node config from fw_cfg opt/io.kiln/node.yaml\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("kiln: first boot done\n"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let again = root.apply().output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout)
        .starts_with("kiln: first boot already done, re-applying saved config\n"));
}

#[test]
fn invalid_config_exits_1_and_writes_nothing() {
    let root = Root::new("invalid");
    root.put(FW_CFG, "role: agent\ntoken: s3cret\nhostname: n1\n");
    let out = root.apply().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "kiln: ERROR: fw_cfg opt/io.kiln/node.yaml:1:7: an agent needs `server`, the URL of the \
         server to join (hint: add `server: https://<server address>:6443`)\n"
    );
    for path in [
        "etc/hostname",
        "etc/rancher/k3s/config.yaml",
        "var/lib/kiln",
        "run/kiln",
    ] {
        assert!(!root.has(path), "{path} was written");
    }
}

/// On a NUC or in vSphere (`console=tty0 console=ttyS0`) the screen shows
/// what the serial port shows: the steps and the error, the token in
/// neither.
#[test]
fn every_active_console_gets_the_steps_and_the_error() {
    let root = Root::new("consoles");
    root.put("sys/class/tty/console/active", "tty0 ttyS0\n");
    root.put("dev/tty0", "");
    root.put("dev/ttyS0", "");
    root.put(
        FW_CFG,
        "role: agent\ntoken: s3cret\nhostname: n1\nk3s-args: [--bad]\n",
    );
    let out = root.apply().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let journal = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for tty in ["dev/tty0", "dev/ttyS0"] {
        let screen = std::fs::read_to_string(root.0.join(tty)).unwrap();
        assert!(
            screen.starts_with("kiln: node config from fw_cfg opt/io.kiln/node.yaml\n"),
            "{tty}: {screen}"
        );
        assert!(
            screen.contains("kiln: ERROR: fw_cfg opt/io.kiln/node.yaml:"),
            "{tty}: {screen}"
        );
        assert!(!screen.contains("s3cret"), "{tty}: {screen}");
        for line in screen.lines() {
            assert!(
                journal.contains(line),
                "{tty} has a line the journal lacks: {line}"
            );
        }
    }
}

#[test]
fn rack_without_an_entry_waits_and_retries() {
    let root = Root::new("wait");
    root.put(
        FW_CFG,
        "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\nwait-for-config: true\n\
         nodes:\n  aa:bb:cc:dd:ee:01: {hostname: n1}\n",
    );
    let mut child = root
        .apply()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("kiln: waiting for a node config") || Instant::now() > deadline {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it keeps trying: {seen:?}"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("kiln: waiting for a node config for this node, retrying every 10 s"),
        "{seen:?}"
    );
    assert!(seen.contains(&"kiln: rack mode: this node has no NIC found; no serial".to_owned()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "kiln: ERROR: fw_cfg opt/io.kiln/node.yaml:5:1: no entry in `nodes:` for this node"
        ),
        "{stderr}"
    );
    assert!(!root.has("etc/rancher/k3s/config.yaml"));
}
