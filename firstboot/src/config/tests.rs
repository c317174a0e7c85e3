//! Fixture tests: every valid node.yaml renders to its golden k3s config,
//! every broken one fails with the exact message, line and column.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/node-config")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/k3s-config")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_fixtures_render_to_golden_files() {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let valid = yaml_files(&fixtures().join("valid"));
    assert!(valid.len() >= 4, "expected valid fixtures");
    let mut failures = Vec::new();
    for path in &valid {
        let name = stem(path);
        let text = fs::read_to_string(path).unwrap();
        let config = parse(&text, &format!("{name}.yaml"))
            .unwrap_or_else(|e| panic!("valid fixture {name} failed: {e}"));
        let rendered = render_k3s_config(&config);
        let golden = golden_dir().join(format!("{name}.yaml"));
        if bless {
            fs::create_dir_all(golden_dir()).unwrap();
            fs::write(&golden, &rendered).unwrap();
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(want) if want == rendered => {}
            Ok(want) => failures.push(format!(
                "{name}: render differs from {}\n--- golden\n{want}--- rendered\n{rendered}",
                golden.display()
            )),
            Err(e) => failures.push(format!("{name}: {}: {e}", golden.display())),
        }
    }
    // A golden file without a fixture is stale.
    let goldens = if golden_dir().is_dir() {
        yaml_files(&golden_dir())
    } else {
        Vec::new()
    };
    for g in goldens {
        if !valid.iter().any(|v| stem(v) == stem(&g)) {
            failures.push(format!("{}: no fixture renders it; remove it", g.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(review, then regenerate with KILN_BLESS=1 cargo test -p kiln-node)",
        failures.join("\n")
    );
}

/// (fixture, kind, line and column, whole error line)
type Expected = (&'static str, ErrorKind, Option<(u32, u32)>, &'static str);

const BROKEN: &[Expected] = &[
    ("unknown-field", ErrorKind::UnknownField, Some((3, 1)),
     "unknown-field.yaml:3:1: unknown field `rol`, expected one of `role`, `cluster-init`, `server`, `token`, `token-file`, `hostname`, `write-kubeconfig-mode`, `tls-san`, `node-label`, `node-taint`, `disable`, `k3s-args` (hint: did you mean `role`?)"),
    ("k3s-flag-at-top", ErrorKind::UnknownField, Some((3, 1)),
     "k3s-flag-at-top.yaml:3:1: unknown field `kubelet-arg`, expected one of `role`, `cluster-init`, `server`, `token`, `token-file`, `hostname`, `write-kubeconfig-mode`, `tls-san`, `node-label`, `node-taint`, `disable`, `k3s-args` (hint: other k3s flags go under `k3s-args:`, e.g. `k3s-args: {kubelet-arg: ...}`)"),
    ("missing-role", ErrorKind::MissingField, None,
     "missing-role.yaml: missing field `role` (hint: add `role: server` or `role: agent`)"),
    ("bad-role", ErrorKind::InvalidValue, Some((1, 7)),
     "bad-role.yaml:1:7: role: unknown variant `master`, expected `server` or `agent` (hint: role is `server` or `agent`)"),
    ("bad-bool", ErrorKind::InvalidValue, Some((2, 15)),
     "bad-bool.yaml:2:15: cluster-init: invalid type: string \"yes\", expected a boolean (hint: write `true` or `false`)"),
    ("syntax", ErrorKind::Syntax, Some((3, 1)),
     "syntax.yaml:3:1: found unexpected end of stream, while scanning a quoted scalar (hint: check the indentation and the quotes; every key is written `key: value`)"),
    ("tabs", ErrorKind::Syntax, Some((3, 1)),
     "tabs.yaml:3:1: found character that cannot start any token, while scanning for the next token (hint: YAML indents with spaces, never tabs)"),
    ("duplicate-key", ErrorKind::DuplicateField, Some((3, 1)),
     "duplicate-key.yaml:3:1: duplicate field `hostname` (hint: keep one `hostname:` line and remove the other)"),
    ("empty", ErrorKind::Empty, None,
     "empty.yaml: the node config is empty (hint: it needs at least `role: server` or `role: agent`)"),
    ("agent-no-server", ErrorKind::Conflict, Some((2, 7)),
     "agent-no-server.yaml:2:7: an agent needs `server`, the URL of the server to join (hint: add `server: https://<server address>:6443`)"),
    ("agent-no-token", ErrorKind::Conflict, Some((1, 7)),
     "agent-no-token.yaml:1:7: an agent needs `token` or `token-file` to join (hint: add `token: <token>`; a server keeps it in /var/lib/rancher/k3s/server/node-token)"),
    ("agent-cluster-init", ErrorKind::Conflict, Some((4, 15)),
     "agent-cluster-init.yaml:4:15: `cluster-init` is a server setting, and this node is an agent (hint: remove it, or set `role: server`)"),
    ("token-and-file", ErrorKind::Conflict, Some((4, 13)),
     "token-and-file.yaml:4:13: `token` and `token-file` are both set (hint: keep one of them)"),
    ("bad-hostname", ErrorKind::InvalidValue, Some((3, 11)),
     "bad-hostname.yaml:3:11: hostname `node_1` is not a valid RFC 1123 hostname: `_` is not allowed (hint: use lowercase letters, digits and `-` (not first or last), dots between labels, at most 64 characters)"),
    ("uppercase-hostname", ErrorKind::InvalidValue, Some((2, 11)),
     "uppercase-hostname.yaml:2:11: hostname `Node-1` is not a valid RFC 1123 hostname: uppercase letters are not allowed (Kubernetes node names are lowercase) (hint: use lowercase letters, digits and `-` (not first or last), dots between labels, at most 64 characters)"),
    ("bad-mode", ErrorKind::InvalidValue, Some((3, 24)),
     "bad-mode.yaml:3:24: write-kubeconfig-mode `0800` is not an octal file mode (hint: quote three or four octal digits, e.g. \"0600\" or \"0644\")"),
    ("cluster-init-and-server", ErrorKind::Conflict, Some((2, 15)),
     "cluster-init-and-server.yaml:2:15: `cluster-init` starts a new cluster, `server` joins an existing one (hint: the first server sets `cluster-init: true`, the others set `server:`)"),
    ("bad-server-url", ErrorKind::InvalidValue, Some((2, 9)),
     "bad-server-url.yaml:2:9: server `10.0.0.1:6443` is not a k3s server URL: it must start with https:// (hint: write it as https://HOST:PORT, e.g. https://10.0.0.1:6443)"),
    ("relative-token-file", ErrorKind::InvalidValue, Some((3, 13)),
     "relative-token-file.yaml:3:13: token-file `token.txt` is not an absolute path (hint: give the file's full path on the node, e.g. /var/lib/kiln/token)"),
    ("bad-taint", ErrorKind::InvalidValue, Some((4, 5)),
     "bad-taint.yaml:4:5: node-taint `gpu=true:NoRun` is not `key=value:Effect` (hint: Effect is NoSchedule, PreferNoSchedule or NoExecute)"),
    ("k3s-args-typed-key", ErrorKind::InvalidValue, Some((4, 3)),
     "k3s-args-typed-key.yaml:4:3: `token` has its own key in node.yaml (hint: write `token:` at the top level, not under k3s-args)"),
    ("k3s-args-null", ErrorKind::InvalidValue, Some((3, 3)),
     "k3s-args-null.yaml:3:3: k3s-args `flannel-backend` has no value (hint: write a value, e.g. `flannel-backend: true`)"),
    ("tls-san-map", ErrorKind::InvalidValue, Some((4, 5)),
     "tls-san-map.yaml:4:5: tls-san[1]: invalid type: map, expected a string (hint: write a single value; quote it if it contains `: ` or ` #`)"),
];

#[test]
fn broken_fixtures_fail_with_exact_messages() {
    let dir = fixtures().join("invalid");
    let files = yaml_files(&dir);
    for (name, kind, at, want) in BROKEN {
        let path = dir.join(format!("{name}.yaml"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let err = parse(&text, &format!("{name}.yaml")).expect_err(name);
        assert_eq!(err.to_string(), *want, "{name}");
        assert_eq!(err.kind, *kind, "{name}");
        let got = err.location.map(|l| (l.line, l.column));
        assert_eq!(got, *at, "{name}");
    }
    for f in files {
        let name = stem(&f);
        assert!(
            BROKEN.iter().any(|b| b.0 == name),
            "{name}.yaml has no expected error in BROKEN"
        );
    }
}

#[test]
fn non_utf8_is_located() {
    let err = parse_bytes(b"role: server\nhostname: n\xff\n", "x.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.yaml:2:12: not UTF-8 text (hint: save the file as UTF-8)"
    );
}

#[test]
fn unquoted_numbers_stay_strings() {
    let c = parse(
        "role: server\nwrite-kubeconfig-mode: 0644\ntoken: 12345\n",
        "n",
    )
    .unwrap();
    assert_eq!(c.kubeconfig_mode(), "0644");
    assert_eq!(c.token.as_deref(), Some("12345"));
}

#[test]
fn single_values_are_lists_of_one() {
    let c = parse("role: server\ntls-san: k3s.lan\ndisable: traefik\n", "n").unwrap();
    assert_eq!(c.tls_san, ["k3s.lan"]);
    assert_eq!(c.disable, ["traefik"]);
}

#[test]
fn agent_render_has_no_server_keys() {
    let c = parse(
        "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\n",
        "n",
    )
    .unwrap();
    let out = render_k3s_config(&c);
    assert!(!out.contains("write-kubeconfig-mode"), "{out}");
    assert!(
        out.contains("server: \"https://10.0.0.1:6443\"\ntoken: \"t\"\n"),
        "{out}"
    );
}
