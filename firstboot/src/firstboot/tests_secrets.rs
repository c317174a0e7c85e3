//! No secret ever reaches the console, an error message or a `{:?}`: a
//! config full of secrets is broken in every way the schema knows, and
//! every error, console line and debug print is searched for them.

use super::tests::{lines, Root, FW_CFG_RAW};
use super::*;
use crate::config;

const TOKEN: &str = "TOPSECRET-join-token-1";
const REGISTRY_PW: &str = "TOPSECRET-registry-pw";
const REGISTRY_TOKEN: &str = "TOPSECRET-registry-tok";
const DB_PW: &str = "TOPSECRET-db-pw";
const AGENT_TOKEN: &str = "TOPSECRET-agent-tok";
const SECRETS: &[&str] = &[
    TOKEN,
    REGISTRY_PW,
    REGISTRY_TOKEN,
    DB_PW,
    AGENT_TOKEN,
    "TOPSECRET",
];

fn server() -> String {
    format!(
        "role: server
token: \"{TOKEN}\"
datastore-endpoint: \"postgres://k3s:{DB_PW}@db.lan:5432/k3s\"
hostname: api-1
registries:
  configs:
    registry.lan: {{auth: {{username: u, password: \"{REGISTRY_PW}\"}}}}
    other.lan:
      auth:
        token: {REGISTRY_TOKEN}
k3s-args:
  agent-token: {AGENT_TOKEN}
"
    )
}

fn agent() -> String {
    format!("role: agent\nserver: https://10.0.0.1:6443\ntoken: {TOKEN}\nhostname: w-1\n")
}

/// Ways to break a config: each replaces one line (or adds one).
fn breakages(base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let edits: &[(&str, &str)] = &[
        ("hostname: api-1", "hostname: API_1"),
        ("hostname: w-1", "hostname: W_1"),
        ("role: server", "role: agent"),
        ("role: agent", "role: agnet"),
        ("role: server", "role: server\ncluster-init: true"),
        ("role: server", "role: server\nrol: x"),
        ("role: server", "role: server\ntoken-file: /x"),
        ("role: agent", "role: agent\ntoken-file: relative"),
        (
            "datastore-endpoint: \"postgres",
            "datastore-endpoint: \"mongodb",
        ),
        (
            "datastore-endpoint: \"postgres://k3s:",
            "datastore-endpoint: \"postgres://k3s: ",
        ),
        ("postgres://k3s:", "postgres://"),
        ("username: u, ", ""),
        ("        token:", "        username: u\n        token:"),
        ("        token:", "        tokn:"),
        ("        token:", "        token: [a]\n        x:"),
        ("registry.lan: {", "registry.lan/x: {"),
        ("agent-token:", "token:"),
        ("agent-token:", "agent_token:"),
        (
            "server: https://10.0.0.1:6443",
            "server: https://u:TOPSECRET-in-url@10.0.0.1:6443",
        ),
        ("server: https://10.0.0.1:6443", "server: 10.0.0.1:6443"),
        ("hostname:", "hostname: [\n"),
        ("hostname:", "\thostname:"),
        ("hostname:", "cluster-init: maybe\nhostname:"),
        ("token: ", "token: \"\"\nx: "),
        ("token: ", "token: a b\nx: "),
    ];
    for (from, to) in edits {
        if base.contains(from) {
            out.push(base.replacen(from, to, 1));
        }
    }
    // Secrets in a rack entry, and this node without one.
    out.push(format!(
        "{base}wait-for-config: true\nnodes:\n  aa:bb:cc:dd:ee:01: {{token: \"{TOKEN}\", hostname: Bad_Name}}\n"
    ));
    out.push(format!(
        "{base}nodes:\n  aa:bb:cc:dd:ee:01: {{token: \"{TOKEN}\"}}\n  AA:BB:CC:DD:EE:01: {{}}\n"
    ));
    out
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn no_error_shows_a_secret() {
    let mut errors = 0;
    for base in [server(), agent()] {
        let doc = config::parse(&base, "node.yaml").unwrap();
        assert_clean("NodeDoc debug", &format!("{doc:?} {doc:#?}"));
        for broken in breakages(&base) {
            match config::parse(&broken, "node.yaml") {
                Err(e) => {
                    errors += 1;
                    assert_clean("error", &format!("{e}\n{e:?}"));
                    let fb = Error::from(e);
                    assert_clean("firstboot error", &format!("{fb}\n{fb:?}"));
                }
                Ok(doc) => {
                    assert_clean("NodeDoc debug", &format!("{doc:?}"));
                    if doc.is_rack() {
                        let id = config::NodeIdentity::default();
                        if let Err(e) = config::select_node(&doc, &id) {
                            errors += 1;
                            assert_clean("selection error", &format!("{e}\n{e:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(errors >= 30, "only {errors} errors exercised");
}

#[test]
fn no_console_line_shows_a_secret() {
    for (i, base) in [server(), agent()].iter().enumerate() {
        let root = Root::new(&format!("secrets-{i}"));
        root.put(FW_CFG_RAW, base);
        let found =
            crate::datasource::find(&crate::datasource::all(), &root.0, &mut std::io::sink())
                .unwrap();
        assert_clean("Found debug", &format!("{found:?}"));
        let mut out = Vec::new();
        let first = apply(&root.opts(), &crate::datasource::all(), &mut out);
        let again = apply(&root.opts(), &crate::datasource::all(), &mut out);
        let console = lines(&out).join("\n");
        assert!(console.contains("kiln: first boot done"), "{console}");
        assert_clean("console", &console);
        assert_clean("result", &format!("{first:?} {again:?}"));
        if i == 0 {
            assert!(
                console.contains("kiln: role server, datastore postgres://***@db.lan:5432/k3s"),
                "{console}"
            );
        }
        // The files that hold them are root's only.
        for path in [K3S_CONFIG, crate::layout::PERSISTED_NODE_CONFIG] {
            assert!(root.read(path).contains(TOKEN), "{path}");
            assert_eq!(root.mode(path), 0o600, "{path}");
        }
    }
    // A broken config on the node: the error line is clean too.
    let root = Root::new("secrets-broken");
    root.put(FW_CFG_RAW, &server().replace("postgres://", "mongodb://"));
    let mut out = Vec::new();
    let err = apply(&root.opts(), &crate::datasource::all(), &mut out).unwrap_err();
    assert_clean(
        "console",
        &format!("kiln: ERROR: {err}\n{}", lines(&out).join("\n")),
    );
}

#[test]
fn the_kernel_command_line_token_stays_hidden() {
    let root = Root::new("secrets-cmdline");
    root.put(
        "/proc/cmdline",
        &format!("kiln.role=agent kiln.token={TOKEN} kiln.server=bad-url\n"),
    );
    let (r, out) = root.apply();
    let err = r.unwrap_err();
    assert_clean(
        "console",
        &format!("kiln: ERROR: {err}\n{}", out.join("\n")),
    );
    assert!(
        err.to_string()
            .starts_with("kernel command line:3:9: server `bad-url`"),
        "{err}"
    );
    root.put(
        "/proc/cmdline",
        &format!("kiln.node=!!{TOKEN} kiln.role=x\n"),
    );
    let (r, _) = root.apply();
    assert_clean("error", &r.unwrap_err().to_string());
}
