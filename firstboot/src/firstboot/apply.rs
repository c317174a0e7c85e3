//! `kiln-firstboot apply`: one function per step, in boot order.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::fsutil::{write_atomic, Written};
use super::{io_context, say, Error, Options, HOSTNAME_FILE, K3S_CONFIG, K3S_ENV};
use crate::config::{self, NodeConfig, Role};
use crate::datasource::{self, Datasource};
use crate::layout::{FIRSTBOOT_DONE, PERSISTED_NODE_CONFIG};

/// Applies the node config: the saved one after the first boot, else the
/// first one `sources` has. Returns the config applied.
pub fn apply(
    opts: &Options,
    sources: &[Box<dyn Datasource>],
    out: &mut dyn Write,
) -> Result<NodeConfig, Error> {
    let first_boot = !opts.path(FIRSTBOOT_DONE).exists();
    let (source, bytes) = if first_boot {
        let found = datasource::find(sources, &opts.root)?.ok_or_else(|| {
            Error::NotFound(sources.iter().map(|s| s.name().to_owned()).collect())
        })?;
        say(out, format!("node config from {}", found.source));
        (found.source, found.bytes)
    } else {
        say(out, "first boot already done, re-applying saved config");
        (PERSISTED_NODE_CONFIG.to_owned(), read_saved(opts)?)
    };
    let config = config::parse_bytes(&bytes, &source)?;
    say(out, role_line(&config));
    hostname(opts, &config, out)?;
    token_file(opts, &config, out)?;
    let k3s_config = config::render_k3s_config(&config);
    write(opts, K3S_CONFIG, k3s_config.as_bytes(), 0o600, out)?;
    let env = format!("K3S_ROLE={}\n", config.role);
    write(opts, K3S_ENV, env.as_bytes(), 0o644, out)?;
    if first_boot {
        // The saved copy first, the marker last: a power cut in between
        // just runs the first boot again.
        let path = opts.path(PERSISTED_NODE_CONFIG);
        write_atomic(&path, &bytes, 0o600).map_err(io_context(format!(
            "saving the node config to {PERSISTED_NODE_CONFIG}"
        )))?;
        say(out, format!("saved node config to {PERSISTED_NODE_CONFIG}"));
        let marker = format!("node config from {source}\n");
        write_atomic(&opts.path(FIRSTBOOT_DONE), marker.as_bytes(), 0o644)
            .map_err(io_context(format!("writing {FIRSTBOOT_DONE}")))?;
        say(out, "first boot done");
    } else {
        say(out, "node config applied");
    }
    Ok(config)
}

fn read_saved(opts: &Options) -> Result<Vec<u8>, Error> {
    match fs::read(opts.path(PERSISTED_NODE_CONFIG)) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Other(format!(
            "{FIRSTBOOT_DONE} exists but {PERSISTED_NODE_CONFIG} is missing; \
             remove {FIRSTBOOT_DONE} to run the first boot again"
        ))),
        Err(e) => Err(io_context(format!("reading {PERSISTED_NODE_CONFIG}"))(e)),
    }
}

fn role_line(c: &NodeConfig) -> String {
    match (c.role, &c.server) {
        (Role::Server, None) if c.cluster_init => "role server, new cluster (cluster-init)".into(),
        (Role::Server, None) => "role server".into(),
        (role, Some(url)) => format!("role {role}, joining {url}"),
        (Role::Agent, None) => "role agent".into(),
    }
}

fn write(
    opts: &Options,
    path: &str,
    contents: &[u8],
    mode: u32,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let done = write_atomic(&opts.path(path), contents, mode)
        .map_err(io_context(format!("writing {path}")))?;
    match done {
        Written::Changed => say(out, format!("wrote {path}")),
        Written::Unchanged => say(out, format!("{path} unchanged")),
    }
    Ok(())
}

/// `/etc/hostname`, and the running hostname when live.
fn hostname(opts: &Options, c: &NodeConfig, out: &mut dyn Write) -> Result<(), Error> {
    let Some(name) = &c.hostname else {
        say(out, "hostname not in node config, left as it is");
        return Ok(());
    };
    let file = write_atomic(
        &opts.path(HOSTNAME_FILE),
        format!("{name}\n").as_bytes(),
        0o644,
    )
    .map_err(io_context(format!("writing {HOSTNAME_FILE}")))?;
    let mut changed = file == Written::Changed;
    if opts.live {
        let current =
            nix::unistd::gethostname().map_err(|e| io_context("reading the hostname")(e.into()))?;
        if current.to_str() != Some(name.as_str()) {
            nix::unistd::sethostname(name)
                .map_err(|e| io_context(format!("setting the hostname to {name}"))(e.into()))?;
            changed = true;
        }
    }
    let note = if changed { "" } else { " (unchanged)" };
    say(out, format!("hostname {name}{note}"));
    Ok(())
}

/// k3s reads the token from `token-file` itself; check it is there, not
/// empty, and readable by root only.
fn token_file(opts: &Options, c: &NodeConfig, out: &mut dyn Write) -> Result<(), Error> {
    let Some(file) = &c.token_file else {
        return Ok(());
    };
    let path = opts.path(file);
    let fix = "put the token there (mode 0600) or use `token:` in node.yaml";
    let meta =
        fs::metadata(&path).map_err(|e| Error::Other(format!("token-file {file}: {e}; {fix}")))?;
    if !meta.is_file() {
        return Err(Error::Other(format!(
            "token-file {file} is not a file; {fix}"
        )));
    }
    let token = fs::read_to_string(&path)
        .map_err(|e| Error::Other(format!("token-file {file}: {e}; {fix}")))?;
    if token.trim().is_empty() {
        return Err(Error::Other(format!("token-file {file} is empty; {fix}")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        say(out, format!("token-file {file}"));
    } else {
        match fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7700)) {
            Ok(()) => say(
                out,
                format!("token-file {file}: mode set to {:04o}", mode & 0o7700),
            ),
            Err(e) => say(
                out,
                format!(
                    "warning: token-file {file} has mode {mode:04o} and cannot be changed: {e}"
                ),
            ),
        }
    }
    Ok(())
}
