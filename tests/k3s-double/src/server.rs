//! `k3s server`: writes the token files and the admin kubeconfig, then
//! answers agents' `JOIN <token>` lines with `OK` or `DENIED`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::settings::Settings;
use crate::{agent, kubeconfig, say, token, write_file};

pub fn run(s: &Settings) -> Result<(), String> {
    if let Some(url) = &s.server {
        // A server joining an existing cluster asks the first one, as an
        // agent does, and then uses the cluster's token.
        agent::join(s, url)?;
        say(format!("server joined {url} (TEST DOUBLE)"));
    } else if s.cluster_init {
        say("initializing a new cluster (cluster-init, TEST DOUBLE: no etcd)");
    }
    let cluster_token = server_token(s)?;
    let addr = format!("{}:{}", s.bind_address, s.https_listen_port);
    let listener = TcpListener::bind(&addr).map_err(|e| format!("listening on {addr}: {e}"))?;
    let url = format!("https://127.0.0.1:{}", s.https_listen_port);
    write_file(&s.kubeconfig, &kubeconfig(&url, "admin"), s.kubeconfig_mode)
        .map_err(|e| format!("writing {}: {e}", s.kubeconfig.display()))?;
    say(format!("wrote {}", s.kubeconfig.display()));
    say(format!("listening on {addr} for agents"));
    say("server ready (TEST DOUBLE)");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let expected = cluster_token.clone();
                std::thread::spawn(move || answer(stream, &expected));
            }
            Err(e) => say(format!("accept failed: {e}")),
        }
    }
    Ok(())
}

/// `<data-dir>/server/token` and `node-token`: kept if already there (k3s
/// keeps its token across restarts), else made from the configured one.
fn server_token(s: &Settings) -> Result<String, String> {
    let dir = s.data_dir.join("server");
    let token_path = dir.join("token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(existing) => {
            let existing = existing.trim().to_owned();
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
        Err(_) => token::full_token(s.token.as_deref())
            .map_err(|e| format!("reading /dev/urandom: {e}"))?,
    };
    for name in ["token", "node-token"] {
        let path = dir.join(name);
        write_file(&path, &format!("{token}\n"), 0o600)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        say(format!("wrote {}", path.display()));
    }
    Ok(token)
}

fn answer(mut stream: TcpStream, expected: &str) {
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
    let reply = match line.trim_end().strip_prefix("JOIN ") {
        Some(presented) if token::matches(expected, presented) => {
            say(format!("agent {peer} joined"));
            "OK\n"
        }
        Some(_) => {
            say(format!("agent {peer} rejected: token mismatch"));
            "DENIED\n"
        }
        None => "ERROR expected JOIN <token>\n",
    };
    let _ = stream.write_all(reply.as_bytes());
}
