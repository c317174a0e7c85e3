//! `k3s agent`: asks the server to join with its token; on `OK` writes the
//! kubelet's kubeconfig (the file real k3s writes once it has joined) and
//! keeps running, as k3s does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::settings::Settings;
use crate::{kubeconfig, say, write_file};

/// How long an agent keeps trying to reach its server.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(s: &Settings) -> Result<(), String> {
    let url = s
        .server
        .as_deref()
        .ok_or("an agent needs `server` (https://HOST:PORT) in its config or --server")?;
    join(s, url)?;
    let path = s.data_dir.join("agent").join("kubelet.kubeconfig");
    write_file(&path, &kubeconfig(url, "system:node"), 0o600)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    say(format!("agent joined {url} (TEST DOUBLE)"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends `JOIN <token>` to the server at `url`; Ok on `OK`. Exits the
/// process with 1 on `DENIED`, as k3s gives up on a wrong token.
pub fn join(s: &Settings, url: &str) -> Result<(), String> {
    let token = s
        .token
        .as_deref()
        .ok_or("joining needs `token` or `token-file` in the config, or --token")?;
    let addr = host_port(url)?;
    let mut stream = connect(&addr, url)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("JOIN {token}\n").as_bytes())
        .map_err(|e| format!("talking to {url}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| format!("reading the answer of {url}: {e}"))?;
    match reply.trim_end() {
        "OK" => Ok(()),
        "DENIED" => {
            say("agent rejected by server: token mismatch");
            std::process::exit(1);
        }
        other => Err(format!("unexpected answer from {url}: `{other}`")),
    }
}

fn connect(addr: &str, url: &str) -> Result<TcpStream, String> {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
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
