//! `k3s server`: keeps a cluster CA and the token files, writes the admin
//! kubeconfig, then answers on the API port with a tiny line protocol:
//!
//! - `CA\n` → the CA bytes, then the connection closes;
//! - `JOIN <role> <hostname> <token>\n` → `OK\n` or `DENIED\n`, and the
//!   server logs `node <hostname> joined as <role>` (or the rejection).
//!
//! A joining server (`server:` set) first joins its cluster as an agent
//! does, then adopts that cluster's CA, so its own node-token is valid for
//! the same cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::settings::Settings;
use crate::{agent, ca, kubeconfig, say, token, write_file};

pub fn run(s: &Settings) -> Result<(), String> {
    if let Some(url) = &s.server {
        let cluster_ca = agent::join(s, url, "server")?;
        ca::store(&s.data_dir, &cluster_ca)?;
        say(format!("server joined {url} (TEST DOUBLE)"));
    } else if s.cluster_init {
        say("initializing a new cluster (cluster-init, TEST DOUBLE: no etcd)");
    }
    let ca = ca::load_or_create(&s.data_dir)?;
    let cluster_token = server_token(s, &ca::hash(&ca))?;
    let addr = format!("{}:{}", s.bind_address, s.https_listen_port);
    let listener = TcpListener::bind(&addr).map_err(|e| format!("listening on {addr}: {e}"))?;
    let url = format!("https://127.0.0.1:{}", s.https_listen_port);
    write_file(
        &s.kubeconfig,
        kubeconfig(&url, "admin").as_bytes(),
        s.kubeconfig_mode,
    )
    .map_err(|e| format!("writing {}: {e}", s.kubeconfig.display()))?;
    say(format!("wrote {}", s.kubeconfig.display()));
    say(format!("listening on {addr} for nodes"));
    say("server ready (TEST DOUBLE)");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let expected = cluster_token.clone();
                let ca = ca.clone();
                std::thread::spawn(move || answer(stream, &expected, &ca));
            }
            Err(e) => say(format!("accept failed: {e}")),
        }
    }
    Ok(())
}

/// `<data-dir>/server/token` and `node-token`: kept if already there and
/// made for this CA (k3s keeps its token across restarts), else made from
/// the configured password (or a random one) and the CA's hash.
fn server_token(s: &Settings, hash: &str) -> Result<String, String> {
    let dir = s.data_dir.join("server");
    let token_path = dir.join("token");
    let existing = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| token::ca_hash(t) == Some(hash));
    let token = match existing {
        Some(existing) => {
            if let Some(configured) = &s.token {
                if !token::matches(&existing, configured) {
                    return Err(format!(
                        "the configured token does not match {} from an earlier start",
                        token_path.display()
                    ));
                }
            }
            existing
        }
        None => token::server_token(s.token.as_deref(), hash)?,
    };
    for name in ["token", "node-token"] {
        let path = dir.join(name);
        write_file(&path, format!("{token}\n").as_bytes(), 0o600)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        say(format!("wrote {}", path.display()));
    }
    Ok(token)
}

/// Printable, so a hostile line cannot forge console output.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(64)
        .collect()
}

fn answer(mut stream: TcpStream, expected: &str, ca: &[u8]) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    if BufReader::new(reader)
        .take(64 * 1024)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let line = line.trim_end();
    if line == "CA" {
        let _ = stream.write_all(ca);
        return;
    }
    let mut words = line.splitn(4, ' ');
    let reply = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("JOIN"), Some(role @ ("agent" | "server")), Some(host), Some(presented)) => {
            let host = printable(host);
            if token::matches(expected, presented) {
                say(format!("node {host} joined as {role}"));
                "OK\n"
            } else {
                say(format!("node {host} ({peer}) rejected: wrong token"));
                "DENIED\n"
            }
        }
        _ => "ERROR expected `CA` or `JOIN <agent|server> <hostname> <token>`\n",
    };
    let _ = stream.write_all(reply.as_bytes());
}
