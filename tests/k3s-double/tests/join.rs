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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A server on a free port of 127.0.0.1; returns it, its data dir and URL.
fn start_server(
    tmp: &TempDir,
    name: &str,
    config: &str,
    extra: &[&str],
) -> (Running, PathBuf, String) {
    let port = free_port().to_string();
    let cfg = tmp.file(&format!("{name}.yaml"), config);
    let data = tmp.path(name);
    let kubeconfig = tmp.path(&format!("{name}-k3s.yaml"));
    let mut args = vec![
        "server",
        "--config",
        &cfg,
        "--data-dir",
        data.to_str().unwrap(),
        "--https-listen-port",
        &port,
        "--bind-address",
        "127.0.0.1",
        "--write-kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        name,
    ];
    args.extend_from_slice(extra);
    let mut server = Running::start(&args);
    server.expect("k3s-double: server ready (TEST DOUBLE)");
    (server, data, format!("https://127.0.0.1:{port}"))
}

fn start_agent(tmp: &TempDir, name: &str, url: &str, token: &str) -> (Running, PathBuf) {
    let cfg = tmp.file(
        &format!("{name}.yaml"),
        &format!("server: \"{url}\"\ntoken: \"{token}\"\n"),
    );
    let data = tmp.path(name);
    let agent = Running::start(&[
        "agent",
        "--config",
        &cfg,
        "--data-dir",
        data.to_str().unwrap(),
        "--node-name",
        name,
    ]);
    (agent, data)
}

#[test]
fn nodes_join_with_the_right_token_and_ca_only() {
    let tmp = TempDir::new("join");
    let (mut server, server_dir, url) = start_server(
        &tmp,
        "s1",
        "cluster-init: true\ntoken: \"s3cret\"\nwrite-kubeconfig-mode: \"0644\"\ntls-san:\n  - \"a\"\n",
        &["--node-ip", "127.0.0.1"],
    );
    assert!(
        server.seen.iter().all(|l| l.starts_with("k3s-double: ")),
        "{:?}",
        server.seen
    );

    // node-token is K10<sha256 of the CA the server keeps>::server:<password>.
    let ca = std::fs::read(server_dir.join("server/tls/server-ca.crt")).unwrap();
    assert!(String::from_utf8_lossy(&ca).contains("TEST DOUBLE"));
    let node_token = std::fs::read_to_string(server_dir.join("server/node-token")).unwrap();
    let node_token = node_token.trim_end().to_owned();
    assert_eq!(node_token, format!("K10{}::server:s3cret", sha256_hex(&ca)));
    assert_eq!(
        std::fs::read_to_string(server_dir.join("server/token")).unwrap(),
        format!("{node_token}\n")
    );
    assert_eq!(mode(&server_dir.join("server/node-token")), 0o600);
    let kubeconfig = tmp.path("s1-k3s.yaml");
    assert_eq!(mode(&kubeconfig), 0o644);
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains(&format!("server: {url}\n")), "{kc}");
    assert!(kc.contains("TEST DOUBLE"), "{kc}");

    // The protocol: `CA` gives the CA bytes, anything else is refused.
    let addr = url.strip_prefix("https://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut conn, b"CA\n").unwrap();
    let mut served = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut served).unwrap();
    assert_eq!(served, ca);

    // A short token skips the CA check; the full one checks it.
    for (name, token) in [("a1", "s3cret"), ("a2", node_token.as_str())] {
        let (mut agent, data) = start_agent(&tmp, name, &url, token);
        agent.expect(&format!("k3s-double: agent joined {url} (TEST DOUBLE)"));
        assert_eq!(mode(&data.join("agent/kubelet.kubeconfig")), 0o600);
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "an agent keeps running"
        );
        server.expect(&format!("k3s-double: node {name} joined as agent"));
    }
    let (mut a2, _) = start_agent(&tmp, "a2b", &url, &node_token);
    a2.expect(&format!("k3s-double: CA of {url} matches the token"));

    // A wrong password: denied, exit 1.
    let (mut bad, bad_dir) = start_agent(&tmp, "bad", &url, "wrong");
    bad.expect(&format!(
        "k3s-double: ERROR: agent bad rejected by {url}: wrong token"
    ));
    assert_eq!(bad.wait_exit(), 1);
    assert!(!bad_dir.join("agent/kubelet.kubeconfig").exists());
    server.expect_with(|l| {
        l.starts_with("k3s-double: node bad (127.0.0.1:") && l.ends_with(") rejected: wrong token")
    });

    // The right password, but the token names another CA: never presented.
    let other = format!("K10{}::server:s3cret", "0".repeat(64));
    let (mut wrong_ca, _) = start_agent(&tmp, "wrongca", &url, &other);
    wrong_ca.expect_with(|l| {
        l.starts_with(&format!("k3s-double: ERROR: the CA of {url} has hash "))
            && l.contains(&format!("the token expects {}", "0".repeat(64)))
    });
    assert_eq!(wrong_ca.wait_exit(), 1);
    assert!(
        wrong_ca.seen.iter().all(|l| !l.contains("s3cret")),
        "{:?}",
        wrong_ca.seen
    );

    // A joining server adopts the cluster's CA: its node-token is the
    // cluster's, and agents can join through it.
    let join_cfg = format!("server: \"{url}\"\ntoken: \"{node_token}\"\n");
    let (_s2, s2_dir, url2) = start_server(&tmp, "s2", &join_cfg, &[]);
    server.expect("k3s-double: node s2 joined as server");
    assert_eq!(
        std::fs::read(s2_dir.join("server/tls/server-ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_to_string(s2_dir.join("server/node-token"))
            .unwrap()
            .trim_end(),
        node_token
    );
    let (mut a3, _) = start_agent(&tmp, "a3", &url2, &node_token);
    a3.expect(&format!("k3s-double: agent joined {url2} (TEST DOUBLE)"));

    // A joining server with a wrong token fails like an agent.
    let (mut bad_server, _) = {
        let cfg = tmp.file("s3.yaml", &format!("server: \"{url}\"\ntoken: \"nope\"\n"));
        let data = tmp.path("s3");
        let port = free_port().to_string();
        let r = Running::start(&[
            "server",
            "--config",
            &cfg,
            "--data-dir",
            data.to_str().unwrap(),
            "--https-listen-port",
            &port,
            "--bind-address",
            "127.0.0.1",
            "--node-name",
            "s3",
        ]);
        (r, data)
    };
    bad_server.expect(&format!(
        "k3s-double: ERROR: server s3 rejected by {url}: wrong token"
    ));
    assert_eq!(bad_server.wait_exit(), 1);
}
