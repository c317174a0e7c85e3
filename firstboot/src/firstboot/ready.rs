//! `kiln-firstboot wait-ready`: waits for the files real k3s writes when it
//! is up. A server writes its node token and the admin kubeconfig; an
//! agent writes the kubelet's kubeconfig once it has joined.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{io_context, say, Error, Options, K3S_CONFIG, K3S_DATA_DIR, K3S_ENV, K3S_KUBECONFIG};

/// Polls every `poll` until k3s's files exist or `timeout` passes. The role
/// comes from what `apply` wrote to [`K3S_ENV`]; `data-dir` and
/// `write-kubeconfig` from the k3s config when it sets them.
pub fn wait_ready(
    opts: &Options,
    timeout: Duration,
    poll: Duration,
    out: &mut dyn Write,
) -> Result<String, Error> {
    let role = read_role(opts)?;
    let (data_dir, kubeconfig) = k3s_paths(opts);
    let wanted: Vec<String> = match role.as_str() {
        "server" => vec![format!("{data_dir}/server/node-token"), kubeconfig],
        _ => vec![format!("{data_dir}/agent/kubelet.kubeconfig")],
    };
    say(
        out,
        format!(
            "waiting for k3s (role={role}, up to {} s)",
            timeout.as_secs()
        ),
    );
    let start = Instant::now();
    loop {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|p| !opts.path(p).exists())
            .cloned()
            .collect();
        if missing.is_empty() {
            // Before the ready line: `kiln boot` stops the guest on it.
            super::vitals::say_uptime(opts, out);
            say(out, format!("node ready role={role}"));
            return Ok(role);
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(Error::NotReady {
                secs: timeout.as_secs(),
                role,
                missing,
            });
        }
        std::thread::sleep(poll.min(timeout - elapsed));
    }
}

fn read_role(opts: &Options) -> Result<String, Error> {
    let env = std::fs::read_to_string(opts.path(K3S_ENV)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Other(format!(
                "{K3S_ENV} is missing: kiln-firstboot apply has not run; \
                 see journalctl -u kiln-firstboot"
            ))
        } else {
            io_context(format!("reading {K3S_ENV}"))(e)
        }
    })?;
    env.lines()
        .find_map(|l| l.strip_prefix("K3S_ROLE="))
        .map(|r| r.trim().to_owned())
        .filter(|r| r == "server" || r == "agent")
        .ok_or_else(|| Error::Other(format!("{K3S_ENV} has no K3S_ROLE=server|agent line")))
}

/// `data-dir` and the admin kubeconfig path, as the k3s config sets them.
fn k3s_paths(opts: &Options) -> (String, String) {
    let map: serde_yaml::Mapping = std::fs::read_to_string(opts.path(K3S_CONFIG))
        .ok()
        .and_then(|t| serde_yaml::from_str(&t).ok())
        .unwrap_or_default();
    let get = |key: &str, default: &str| {
        map.get(key).and_then(|v| v.as_str()).map_or_else(
            || default.to_owned(),
            |s| s.trim_end_matches('/').to_owned(),
        )
    };
    (
        get("data-dir", K3S_DATA_DIR),
        get("write-kubeconfig", K3S_KUBECONFIG),
    )
}
