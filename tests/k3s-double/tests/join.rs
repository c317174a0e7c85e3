//! Runs the double as a server and as agents on 127.0.0.1 with a temp data
//! dir and a free port: a right token joins, a wrong one is rejected.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_k3s-double");

/// A running double, killed when dropped; its stdout lines arrive on `lines`.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting k3s-double");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line equal to `want`; panics with everything seen after 30 s.
    fn expect(&mut self, want: &str) {
        self.expect_with(|l| l == want);
    }

    fn expect_with(&mut self, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line as expected; saw:\n{}", self.seen.join("\n"));
    }

    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "k3s-double did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("k3s-double-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn version_says_it_is_a_double() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "k3s version v0.0.0-kiln-test-double (TEST DOUBLE, not k3s)\n"
    );
    let bin = std::fs::read(BIN).unwrap();
    assert!(bin.windows(20).any(|w| w == b"KILN-K3S-TEST-DOUBLE"));
}

#[test]
fn agent_joins_with_the_right_token_only() {
    let tmp = TempDir::new("join");
    let port = free_port();
    let port_s = port.to_string();
    let server_cfg = tmp.file(
        "server.yaml",
        "cluster-init: true\ntoken: \"s3cret\"\nwrite-kubeconfig-mode: \"0644\"\ntls-san:\n  - \"a\"\n",
    );
    let server_dir = tmp.path("server-data");
    let kubeconfig = tmp.path("k3s.yaml");
    let mut server = Running::start(&[
        "server",
        "--config",
        &server_cfg,
        "--data-dir",
        server_dir.to_str().unwrap(),
        "--https-listen-port",
        &port_s,
        "--bind-address",
        "127.0.0.1",
        "--write-kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-ip",
        "127.0.0.1",
    ]);
    server.expect("k3s-double: server ready (TEST DOUBLE)");
    assert!(
        server.seen.iter().all(|l| l.starts_with("k3s-double: ")),
        "{:?}",
        server.seen
    );

    let node_token = std::fs::read_to_string(server_dir.join("server/node-token")).unwrap();
    let hex = node_token
        .trim_end()
        .strip_prefix("K10")
        .and_then(|t| t.strip_suffix("::server:s3cret"))
        .expect("K10<hex>::server:<token>");
    assert_eq!(hex.len(), 64);
    assert_eq!(
        std::fs::read_to_string(server_dir.join("server/token")).unwrap(),
        node_token
    );
    assert_eq!(mode(&server_dir.join("server/node-token")), 0o600);
    assert_eq!(mode(&kubeconfig), 0o644);
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        kc.contains(&format!("server: https://127.0.0.1:{port}\n")),
        "{kc}"
    );
    assert!(kc.contains("TEST DOUBLE"), "{kc}");

    // The full node-token works as well as the bare password.
    let url = format!("https://127.0.0.1:{port}");
    for (name, token) in [("a1", "s3cret"), ("a2", node_token.trim_end())] {
        let cfg = tmp.file(
            &format!("{name}.yaml"),
            &format!("server: \"{url}\"\ntoken: \"{token}\"\n"),
        );
        let data = tmp.path(name);
        let mut agent = Running::start(&[
            "agent",
            "--config",
            &cfg,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        agent.expect(&format!("k3s-double: agent joined {url} (TEST DOUBLE)"));
        let kubelet = data.join("agent/kubelet.kubeconfig");
        assert_eq!(mode(&kubelet), 0o600);
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "an agent keeps running"
        );
    }

    let cfg = tmp.file(
        "bad.yaml",
        &format!("server: \"{url}\"\ntoken: \"wrong\"\n"),
    );
    let bad_dir = tmp.path("bad");
    let mut bad = Running::start(&[
        "agent",
        "--config",
        &cfg,
        "--data-dir",
        bad_dir.to_str().unwrap(),
    ]);
    bad.expect("k3s-double: agent rejected by server: token mismatch");
    assert_eq!(bad.wait_exit(), 1);
    assert!(!bad_dir.join("agent/kubelet.kubeconfig").exists());
    server.expect_with(|l| {
        l.starts_with("k3s-double: agent 127.0.0.1:") && l.ends_with(" rejected: token mismatch")
    });
}
