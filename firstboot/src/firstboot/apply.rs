//! `kiln-firstboot apply`: find the config, check all of it, then write,
//! one console line per item. Nothing is written before every check has
//! passed, so a broken config changes nothing on disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::files::{self, FileWrite};
use super::fsutil::{ensure_dir, replace_symlink, write_atomic, Written};
use super::{
    identity, io_context, say, Error, Options, HOSTNAME_FILE, LOCALTIME, TIMESYNCD_DROPIN,
    TIMEZONE_FILE,
};
use crate::config::{self, redact_url, Match, NodeConfig, NodeDoc, Role, Selected};
use crate::datasource::{self, Datasource};
use crate::layout::{FIRSTBOOT_DONE, PERSISTED_NODE_CONFIG};

/// Applies the node config: the saved one after the first boot, else the
/// first one `sources` has (this node's entry, for a rack file). Returns
/// the config applied.
pub fn apply(
    opts: &Options,
    sources: &[Box<dyn Datasource>],
    out: &mut dyn Write,
) -> Result<NodeConfig, Error> {
    let first_boot = !opts.path(FIRSTBOOT_DONE).exists();
    let (source, bytes) = if first_boot {
        let found = datasource::find(sources, &opts.root, out)?.ok_or_else(|| {
            Error::NotFound(sources.iter().map(|s| s.name().to_owned()).collect())
        })?;
        say(out, format!("node config from {}", found.source));
        (found.source, found.bytes)
    } else {
        say(out, "first boot already done, re-applying saved config");
        (PERSISTED_NODE_CONFIG.to_owned(), read_saved(opts)?)
    };
    let doc = config::parse_bytes(&bytes, &source)?;
    let selected = select(opts, &doc, out)?;
    let (config, customised) = if first_boot {
        customise(opts, sources, &source, selected.config, out)?
    } else {
        (selected.config, false)
    };
    // Everything that can fail without writing, first.
    token_file_check(opts, &config)?;
    let planned = files::plan(&config);

    say(out, role_line(&config));
    hostname(opts, &config, out)?;
    token_file_mode(opts, &config, out);
    if config.role == Role::Server && config.token.is_none() && config.token_file.is_none() {
        say(
            out,
            format!(
                "token: none given, k3s generates one in {}/server/node-token",
                files::data_dir(&config)
            ),
        );
    }
    timezone(opts, &config, out)?;
    for f in &planned {
        if write(opts, f, out)? == Written::Changed && f.path == TIMESYNCD_DROPIN {
            restart_timesyncd(opts, out);
        }
    }
    super::airgap::link_images(opts, &config, out)?;
    if first_boot {
        // The saved copy first, the marker last: a power cut in between
        // just runs the first boot again.
        let what = match &selected.matched {
            Match::Single => source.clone(),
            Match::Entry { key, .. } => format!("entry `{key}` of {source}"),
            Match::NoEntry => format!("the common part of {source}"),
        };
        let saved = match (&selected.matched, customised) {
            (Match::Single, false) => bytes,
            (_, false) => saved_yaml(&config, &what),
            (_, true) => saved_yaml(&config, &format!("{what}, with Pi Imager's settings")),
        };
        let path = opts.path(PERSISTED_NODE_CONFIG);
        write_atomic(&path, &saved, 0o600).map_err(io_context(format!(
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
    super::vitals::say_memory(opts, out);
    Ok(config)
}

/// `config` with the settings made for this medium (Pi Imager's, on a
/// Pi's boot partition) over it, checked again as a whole: a bad hostname
/// from Pi Imager stops the node as one in node.yaml would.
fn customise(
    opts: &Options,
    sources: &[Box<dyn Datasource>],
    source: &str,
    mut config: NodeConfig,
    out: &mut dyn Write,
) -> Result<(NodeConfig, bool), Error> {
    let Some(custom) = datasource::customisation(sources, &opts.root)? else {
        return Ok((config, false));
    };
    for line in custom.describe() {
        say(out, line);
    }
    custom.apply_to(&mut config);
    let merged = format!("{source} with Pi Imager's settings");
    let doc = config::parse(&config.to_yaml(), &merged)?;
    Ok((config::select_node(&doc, &Default::default())?.config, true))
}

/// This node's config; in rack mode, by its MACs or serial (waiting up to
/// `opts.nic_wait` for a first NIC).
fn select(opts: &Options, doc: &NodeDoc, out: &mut dyn Write) -> Result<Selected, Error> {
    if !doc.is_rack() {
        return Ok(config::select_node(doc, &Default::default())?);
    }
    let start = Instant::now();
    let mut id = identity::gather(&opts.root);
    while id.macs.is_empty() && start.elapsed() < opts.nic_wait {
        std::thread::sleep(Duration::from_millis(500));
        id = identity::gather(&opts.root);
    }
    say(out, format!("rack mode: this node has {}", id.describe()));
    let selected = config::select_node(doc, &id)?;
    match &selected.matched {
        Match::Entry { key, by } => {
            say(out, format!("rack mode: using nodes entry `{key}` ({by})"))
        }
        Match::NoEntry => say(
            out,
            "rack mode: no entry for this node, using the common part",
        ),
        Match::Single => {}
    }
    Ok(selected)
}

fn saved_yaml(config: &NodeConfig, what: &str) -> Vec<u8> {
    format!(
        "# The node config kiln-firstboot applied on the first boot: {what},\n\
         # merged. Later boots re-apply this file.\n{}",
        config.to_yaml()
    )
    .into_bytes()
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
        (Role::Server, None) => match &c.datastore_endpoint {
            Some(ep) => format!("role server, datastore {}", redact_url(ep.expose())),
            None => "role server".into(),
        },
        (role, Some(url)) => format!("role {role}, joining {url}"),
        (Role::Agent, None) => "role agent".into(),
    }
}

fn write(opts: &Options, f: &FileWrite, out: &mut dyn Write) -> Result<Written, Error> {
    let path = opts.path(&f.path);
    if let (Some(mode), Some(dir)) = (f.private_dir, path.parent()) {
        ensure_dir(dir, mode)
            .map_err(io_context(format!("creating the directory of {}", f.path)))?;
    }
    let done = write_atomic(&path, &f.contents, f.mode)
        .map_err(io_context(format!("writing {}", f.path)))?;
    let what = match done {
        Written::Changed => format!("wrote {}", f.path),
        Written::Unchanged => format!("{} unchanged", f.path),
    };
    match &f.label {
        Some(label) => say(out, format!("{label}: {what}")),
        None => say(out, what),
    }
    Ok(done)
}

/// systemd-timesyncd starts before this service can run (it is ordered
/// before sysinit.target): a changed NTP drop-in needs a restart to count.
/// `--no-block`: waiting for a job from inside boot could deadlock.
fn restart_timesyncd(opts: &Options, out: &mut dyn Write) {
    if !opts.live {
        return;
    }
    let status = std::process::Command::new("systemctl")
        .args(["--no-block", "try-restart", "systemd-timesyncd.service"])
        .status();
    match status {
        Ok(s) if s.success() => say(out, "ntp: restarting systemd-timesyncd"),
        Ok(s) => say(
            out,
            format!("warning: restarting systemd-timesyncd: systemctl {s}"),
        ),
        Err(e) => say(out, format!("warning: restarting systemd-timesyncd: {e}")),
    }
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

/// k3s reads the token from `token-file` itself: it must be there and not
/// empty before anything is written.
fn token_file_check(opts: &Options, c: &NodeConfig) -> Result<(), Error> {
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
    Ok(())
}

/// The token file readable by root only.
fn token_file_mode(opts: &Options, c: &NodeConfig, out: &mut dyn Write) {
    let Some(file) = &c.token_file else {
        return;
    };
    let path = opts.path(file);
    let mode = fs::metadata(&path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    if mode & 0o077 == 0 {
        say(out, format!("token-file {file}"));
        return;
    }
    match fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7700)) {
        Ok(()) => say(
            out,
            format!("token-file {file}: mode set to {:04o}", mode & 0o7700),
        ),
        Err(e) => say(
            out,
            format!("warning: token-file {file} has mode {mode:04o} and cannot be changed: {e}"),
        ),
    }
}

/// `/etc/localtime` and `/etc/timezone`, when the image has the zone.
fn timezone(opts: &Options, c: &NodeConfig, out: &mut dyn Write) -> Result<(), Error> {
    let (Some(name), Some(tz)) = (&c.timezone, config::render_timezone(c)) else {
        return Ok(());
    };
    if !opts.path(&tz.localtime_target).is_file() {
        say(
            out,
            format!(
                "warning: timezone {name}: {} is not in the image (tzdata?), left as it is",
                tz.localtime_target
            ),
        );
        return Ok(());
    }
    let link = replace_symlink(&opts.path(LOCALTIME), &tz.localtime_target)
        .map_err(io_context(format!("linking {LOCALTIME}")))?;
    let file = write_atomic(
        &opts.path(TIMEZONE_FILE),
        tz.timezone_file.as_bytes(),
        0o644,
    )
    .map_err(io_context(format!("writing {TIMEZONE_FILE}")))?;
    let what = if link == Written::Unchanged && file == Written::Unchanged {
        format!("{LOCALTIME}, {TIMEZONE_FILE} unchanged")
    } else {
        format!("wrote {LOCALTIME}, {TIMEZONE_FILE}")
    };
    say(out, format!("timezone {name}: {what}"));
    Ok(())
}
