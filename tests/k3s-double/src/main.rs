//! `k3s-double`: a TEST DOUBLE for k3s, installed as `/usr/bin/k3s` in test
//! images because no real k3s binary is reachable here. It answers the same
//! command line (`k3s server|agent --config FILE`), writes the files real
//! k3s writes (server: `<data-dir>/server/{token,node-token}` in k3s's
//! `K10<sha256 of the CA>::server:<password>` form, the CA and the admin
//! kubeconfig; agent: `<data-dir>/agent/kubelet.kubeconfig`), and lets
//! agents and joining servers join over a line protocol on the API port:
//! they fetch the CA, check its hash against their token, and present the
//! token (`server.rs`, `agent.rs`). It runs no Kubernetes at all. Every
//! line it prints starts with `k3s-double:`; a failure is one
//! `k3s-double: ERROR: ...` line and exit code 1. The binary carries
//! [`MARKER`] so the builder can label an image that contains it.

mod agent;
mod ca;
mod server;
mod settings;
mod token;

use std::process::ExitCode;

use settings::{Role, Settings};

/// Scanned for by the builder: an image with this binary says it runs a
/// test double, in /etc/os-release and in the build summary.
#[used]
pub static MARKER: [u8; 20] = *b"KILN-K3S-TEST-DOUBLE";

const VERSION: &str = "k3s version v0.0.0-kiln-test-double (TEST DOUBLE, not k3s)";

const USAGE: &str =
    "k3s-double: usage: k3s server|agent [--config FILE] [flags] (TEST DOUBLE, not k3s)
k3s-double: flags: --config/-c, --data-dir/-d, --token/-t, --token-file, --server/-s,
k3s-double:        --cluster-init, --write-kubeconfig/-o, --write-kubeconfig-mode,
k3s-double:        --https-listen-port, --bind-address, --node-name; other flags are ignored";

/// Prints one line with the double's prefix.
pub fn say(line: impl AsRef<str>) {
    println!("k3s-double: {}", line.as_ref());
}

fn main() -> ExitCode {
    // Keep the marker in the binary whatever the linker does.
    std::hint::black_box(&MARKER);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return ExitCode::from(2);
    };
    let role = match command.as_str() {
        "--version" | "-v" | "version" => {
            println!("{VERSION}");
            return ExitCode::SUCCESS;
        }
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "server" => Role::Server,
        "agent" => Role::Agent,
        other => {
            say(format!("`{other}` is not implemented by the test double"));
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_args(role, &args[1..]) {
        Ok(s) => s,
        Err(e) => {
            say(format!("ERROR: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = match role {
        Role::Server => server::run(&settings),
        Role::Agent => agent::run(&settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format!("ERROR: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `contents` to `path` with `mode`, atomically (temp file, fsync,
/// rename), creating the directory 0700 if it is missing.
pub fn write_file(path: &std::path::Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A kubeconfig that says it comes from the test double.
pub fn kubeconfig(server_url: &str, user: &str) -> String {
    format!(
        "# Written by k3s-double, a TEST DOUBLE for k3s: no Kubernetes API answers here.
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: {server_url}
  name: default
contexts:
- context:
    cluster: default
    user: {user}
  name: default
current-context: default
preferences: {{}}
users:
- name: {user}
  user:
    token: kiln-test-double
"
    )
}
