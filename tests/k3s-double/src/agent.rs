//! `k3s agent`, and the join a joining server does first: fetch the
//! server's CA, check it against the hash in a full token (a short token
//! skips the check, as in k3s), present the token. On `OK` an agent writes
//! the kubelet's kubeconfig (the file real k3s writes once it has joined)
//! and keeps running, as k3s does. A wrong CA or a wrong token is an error:
//! the double prints `k3s-double: ERROR: ...` and exits 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::settings::Settings;
use crate::{ca, kubeconfig, say, token, write_file};

/// How long a node keeps trying to reach its server.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A CA larger than this is not one.
const MAX_CA: u64 = 64 * 1024;

pub fn run(s: &Settings) -> Result<(), String> {
    let url = s
        .server
        .as_deref()
        .ok_or("an agent needs `server` (https://HOST:PORT) in its config or --server")?;
    join(s, url, "agent")?;
    let path = s.data_dir.join("agent").join("kubelet.kubeconfig");
    write_file(&path, kubeconfig(url, "system:node").as_bytes(), 0o600)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    say(format!("agent joined {url} (TEST DOUBLE)"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Joins the cluster at `url` as `role`; returns the cluster's CA.
pub fn join(s: &Settings, url: &str, role: &str) -> Result<Vec<u8>, String> {
    let presented = s
        .token
        .as_deref()
        .ok_or("joining needs `token` or `token-file` in the config, or --token")?;
    let addr = host_port(url)?;
    let ca = fetch_ca(&addr, url)?;
    match token::ca_hash(presented) {
        Some(want) => {
            let got = ca::hash(&ca);
            if want != got {
                return Err(format!(
                    "the CA of {url} has hash {got}, the token expects {want}: \
                     wrong server, or a token of another cluster"
                ));
            }
            say(format!("CA of {url} matches the token"));
        }
        None => say(format!(
            "short token: not checking the CA of {url} (use the full K10... token from the server's node-token)"
        )),
    }
    let mut stream = connect(&addr, url)?;
    stream
        .write_all(format!("JOIN {role} {} {presented}\n", s.node_name).as_bytes())
        .map_err(|e| format!("talking to {url}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| format!("reading the answer of {url}: {e}"))?;
    match reply.trim_end() {
        "OK" => Ok(ca),
        "DENIED" => Err(format!(
            "{role} {} rejected by {url}: wrong token",
            s.node_name
        )),
        other => Err(format!("unexpected answer from {url}: `{other}`")),
    }
}

fn fetch_ca(addr: &str, url: &str) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr, url)?;
    stream
        .write_all(b"CA\n")
        .map_err(|e| format!("asking {url} for its CA: {e}"))?;
    let mut ca = Vec::new();
    (&mut stream)
        .take(MAX_CA)
        .read_to_end(&mut ca)
        .map_err(|e| format!("reading the CA of {url}: {e}"))?;
    if ca.is_empty() {
        return Err(format!("{url} sent no CA"));
    }
    Ok(ca)
}

fn connect(addr: &str, url: &str) -> Result<TcpStream, String> {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                return Ok(stream);
            }
            Err(e) if start.elapsed() < JOIN_TIMEOUT => {
                if attempts % 10 == 0 {
                    say(format!("waiting for server {url}: {e}"));
                }
                attempts += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(format!(
                    "server {url} not reachable after {} s: {e}",
                    JOIN_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// `https://HOST[:PORT][/]` → `HOST:PORT` (6443 by default).
pub fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or(format!("server `{url}` is not https://HOST:PORT"))?;
    let rest = rest.trim_end_matches('/');
    let has_port = match rest.rfind(']') {
        Some(end) => rest[end..].contains(':'),
        None => rest.contains(':'),
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("server `{url}` is not https://HOST:PORT"));
    }
    Ok(if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:6443")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(host_port("https://10.0.0.1:6443").unwrap(), "10.0.0.1:6443");
        assert_eq!(host_port("https://k3s.lan/").unwrap(), "k3s.lan:6443");
        assert_eq!(host_port("https://[::1]:7443").unwrap(), "[::1]:7443");
        assert_eq!(host_port("https://[::1]").unwrap(), "[::1]:6443");
        assert!(host_port("http://a:1").is_err());
        assert!(host_port("https://a/b").is_err());
    }
}
