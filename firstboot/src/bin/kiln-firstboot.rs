//! `kiln-firstboot`: turns the node config into a k3s node.
//!
//! ```text
//! kiln-firstboot apply [--root DIR]
//! kiln-firstboot wait-ready [--timeout SECS] [--root DIR]
//! ```
//!
//! Exit codes: 0 done, 1 failed (one `kiln: ERROR: ` line says why),
//! 2 bad command line. An invalid node config fails before anything is
//! written, so `k3s.service` (which requires this one) never starts on it.
//! A rack file with no entry for this node and `wait-for-config: true` is
//! retried every 10 s (the datasources are read again each time), so an
//! entry added to the boot partition's node.yaml is picked up.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kiln_node::consoles::{Consoles, Tee};
use kiln_node::datasource;
use kiln_node::firstboot::{self, Options};

/// How often `apply` tries again while a rack file has no entry for this
/// node (`wait-for-config: true`).
const RETRY_EVERY: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: kiln-firstboot apply [--root DIR]
       kiln-firstboot wait-ready [--timeout SECS] [--root DIR]

apply       find, validate and apply the node config (kiln-firstboot.service)
wait-ready  wait until k3s has written its files (kiln-ready.service);
            --timeout defaults to 120 seconds
--root DIR  work on the tree under DIR instead of / (tests)";

enum Command {
    Apply,
    WaitReady { timeout: u64 },
}

fn parse_args(args: &[String]) -> Result<(Command, PathBuf), String> {
    let (name, rest) = args.split_first().ok_or("no command given")?;
    let mut root = PathBuf::from("/");
    let mut timeout = 120;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "--root" => root = PathBuf::from(value()?),
            "--timeout" if name == "wait-ready" => {
                let v = value()?;
                timeout = v
                    .parse()
                    .map_err(|_| format!("--timeout wants whole seconds, not `{v}`"))?;
            }
            _ => return Err(format!("unknown argument `{arg}` for {name}")),
        }
    }
    let command = match name.as_str() {
        "apply" => Command::Apply,
        "wait-ready" => Command::WaitReady { timeout },
        other => return Err(format!("unknown command `{other}`")),
    };
    Ok((command, root))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (command, root) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("kiln: ERROR: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let opts = Options::with_root(&root);
    // Stdout is the journal (the units say `StandardOutput=journal`); every
    // line also goes to each console, the screen included.
    let mut out = Tee::new(std::io::stdout(), Consoles::open(&root));
    let mut err = Tee::new(std::io::stderr(), Consoles::open(&root));
    let result = match command {
        Command::Apply => apply_until_configured(&opts, &mut out, &mut err),
        Command::WaitReady { timeout } => firstboot::wait_ready(
            &opts,
            Duration::from_secs(timeout),
            Duration::from_millis(500),
            &mut out,
        )
        .map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "kiln: ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `apply`, again every [`RETRY_EVERY`] while it fails in a way that may
/// pass later; each new error is printed once.
fn apply_until_configured(
    opts: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), firstboot::Error> {
    let mut last = String::new();
    loop {
        match firstboot::apply(opts, &datasource::all(), out) {
            Err(e) if e.is_retryable() => {
                let msg = e.to_string();
                if msg != last {
                    let _ = writeln!(err, "kiln: ERROR: {msg}");
                    let _ = writeln!(
                        out,
                        "kiln: waiting for a node config for this node, retrying every {} s",
                        RETRY_EVERY.as_secs()
                    );
                    last = msg;
                }
                std::thread::sleep(RETRY_EVERY);
            }
            other => return other.map(|_| ()),
        }
    }
}
