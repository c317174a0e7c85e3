//! Fixture tests: every valid node.yaml and every example renders to its
//! golden files (and the copy the first boot saves parses back to the same
//! config); every broken one fails with the exact message, line and column.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/node-config")
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

pub(super) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node")
}

pub(super) fn yaml_files(dir: &Path) -> Vec<PathBuf> {
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

/// Every config the goldens cover: each valid fixture, each example (as
/// `example-<name>`); a rack file gives `<name>@<key>` per entry (colons
/// as dashes) and `<name>@common` when its common part is complete.
fn cases() -> Vec<(String, NodeConfig)> {
    let mut out = Vec::new();
    let sources = [(fixtures().join("valid"), ""), (examples(), "example-")];
    for (dir, prefix) in sources {
        for path in yaml_files(&dir) {
            let name = format!("{prefix}{}", stem(&path));
            let text = fs::read_to_string(&path).unwrap();
            let doc = parse(&text, &format!("{name}.yaml"))
                .unwrap_or_else(|e| panic!("valid config {} failed: {e}", path.display()));
            if !doc.is_rack() {
                out.push((name, doc.common.unwrap()));
                continue;
            }
            for e in doc.nodes {
                let key = e.key.to_ascii_lowercase().replace(':', "-");
                out.push((format!("{name}@{key}"), e.config));
            }
            if let Some(c) = doc.common {
                out.push((format!("{name}@common"), c));
            }
        }
    }
    out
}

/// Each rendered file of a config: (golden kind, file name, text).
fn renders(case: &str, c: &NodeConfig) -> Vec<(&'static str, String, String)> {
    let mut out = vec![("k3s-config", format!("{case}.yaml"), render_k3s_config(c))];
    if let Some(r) = &c.registries {
        out.push(("registries", format!("{case}.yaml"), render_registries(r)));
    }
    if let Some(n) = &c.network {
        out.push(("networkd", format!("{case}.network"), render_networkd(n)));
    }
    if let Some(t) = render_timesyncd(c) {
        out.push(("timesyncd", format!("{case}.conf"), t));
    }
    if let Some(k) = render_authorized_keys(c) {
        out.push(("authorized-keys", format!("{case}.keys"), k));
    }
    if let Some(tz) = render_timezone(c) {
        let text = format!(
            "/etc/localtime -> {}\n/etc/timezone: {}",
            tz.localtime_target, tz.timezone_file
        );
        out.push(("timezone", format!("{case}.txt"), text));
    }
    out
}

const KINDS: &[&str] = &[
    "k3s-config",
    "registries",
    "networkd",
    "timesyncd",
    "authorized-keys",
    "timezone",
];

#[test]
fn valid_configs_render_to_golden_files() {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 10, "expected valid fixtures and examples");
    let mut failures = Vec::new();
    let mut expected: Vec<PathBuf> = Vec::new();
    for (case, config) in &cases {
        for (kind, file, rendered) in renders(case, config) {
            let golden = golden_root().join(kind).join(&file);
            expected.push(golden.clone());
            if bless {
                fs::create_dir_all(golden.parent().unwrap()).unwrap();
                fs::write(&golden, &rendered).unwrap();
                continue;
            }
            match fs::read_to_string(&golden) {
                Ok(want) if want == rendered => {}
                Ok(want) => failures.push(format!(
                    "{case}: render differs from {}\n--- golden\n{want}--- rendered\n{rendered}",
                    golden.display()
                )),
                Err(e) => failures.push(format!("{case}: {}: {e}", golden.display())),
            }
        }
        // What the first boot saves reads back as the same config.
        let saved = config.to_yaml();
        let back =
            parse(&saved, "saved").unwrap_or_else(|e| panic!("{case}: saved copy: {e}\n{saved}"));
        assert_eq!(
            back.single(),
            Some(config),
            "{case}: saved copy differs\n{saved}"
        );
    }
    // A golden file no case renders is stale.
    for kind in KINDS {
        let Ok(entries) = fs::read_dir(golden_root().join(kind)) else {
            continue;
        };
        for g in entries {
            let g = g.unwrap().path();
            if expected.contains(&g) {
                continue;
            }
            if bless {
                fs::remove_file(&g).unwrap();
            } else {
                failures.push(format!("{}: no config renders it; remove it", g.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(review, then regenerate with KILN_BLESS=1 cargo test -p kiln-node)",
        failures.join("\n")
    );
}

/// examples/node holds the files the docs point at; each must validate.
#[test]
fn every_example_validates() {
    let files = yaml_files(&examples());
    let names: Vec<String> = files.iter().map(|p| stem(p)).collect();
    for want in ["server-init", "server-join", "agent", "rack", "static-ip"] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/node/{want}.yaml is missing"
        );
    }
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        if let Err(e) = parse(&text, &f.display().to_string()) {
            panic!("{e}");
        }
    }
}

/// Prints every broken fixture's error (for writing BROKEN entries).
#[test]
#[ignore]
fn dump_broken() {
    for f in yaml_files(&fixtures().join("invalid")) {
        let name = stem(&f);
        let text = fs::read_to_string(&f).unwrap();
        match parse(&text, &format!("{name}.yaml")) {
            Ok(_) => println!("{name}: VALID?!"),
            Err(e) => println!(
                "{name}\t{:?}\t{:?}\n    {e}",
                e.kind,
                e.location.map(|l| (l.line, l.column))
            ),
        }
    }
}

/// (fixture, kind, line and column, whole error line)
type Expected = (&'static str, ErrorKind, Option<(u32, u32)>, &'static str);

#[rustfmt::skip]
const BROKEN: &[Expected] = &[
    ("address-no-prefix", ErrorKind::InvalidValue, Some((3, 12)),
     "address-no-prefix.yaml:3:12: network address `10.0.0.5` is not a host address with a prefix: the prefix length is missing (hint: write ADDRESS/PREFIX, e.g. 10.0.0.5/24)"),
    ("agent-cluster-init", ErrorKind::Conflict, Some((4, 15)),
     "agent-cluster-init.yaml:4:15: `cluster-init` is a server setting, and this node is an agent (hint: remove it, or set `role: server`)"),
    ("agent-flannel-backend", ErrorKind::Conflict, Some((4, 18)),
     "agent-flannel-backend.yaml:4:18: `flannel-backend` is a server setting, and this node is an agent (hint: remove it, or set `role: server`)"),
    ("agent-manifests", ErrorKind::Conflict, Some((4, 1)),
     "agent-manifests.yaml:4:1: `manifests` is a server setting, and this node is an agent (hint: remove it, or set `role: server`)"),
    ("agent-no-server", ErrorKind::Conflict, Some((2, 7)),
     "agent-no-server.yaml:2:7: an agent needs `server`, the URL of the server to join (hint: add `server: https://<server address>:6443`)"),
    ("agent-no-token", ErrorKind::Conflict, Some((1, 7)),
     "agent-no-token.yaml:1:7: an agent needs `token` or `token-file` to join (hint: add `token: <token>`; a server keeps it in /var/lib/rancher/k3s/server/node-token)"),
    ("bad-bool", ErrorKind::InvalidValue, Some((2, 15)),
     "bad-bool.yaml:2:15: cluster-init: invalid type: string \"yes\", expected a boolean (hint: write `true` or `false`)"),
    ("bad-dns", ErrorKind::InvalidValue, Some((3, 19)),
     "bad-dns.yaml:3:19: network dns `dns.lan` is not an IP address: it is not an IPv4 or IPv6 address (hint: write resolver addresses, e.g. [10.0.0.1, 1.1.1.1])"),
    ("bad-flannel-backend", ErrorKind::InvalidValue, Some((2, 18)),
     "bad-flannel-backend.yaml:2:18: flannel-backend: unknown variant `udp`, expected one of `vxlan`, `host-gw`, `wireguard-native`, `none` (hint: flannel-backend is vxlan, host-gw, wireguard-native or none)"),
    ("bad-flannel-iface", ErrorKind::InvalidValue, Some((2, 16)),
     "bad-flannel-iface.yaml:2:16: flannel-iface `eth0:1` is not an interface name: `:` is not allowed in an interface name (hint: name the node's uplink, e.g. eth0)"),
    ("bad-hostname", ErrorKind::InvalidValue, Some((3, 11)),
     "bad-hostname.yaml:3:11: hostname `node_1` is not a valid RFC 1123 hostname: `_` is not allowed (hint: use lowercase letters, digits and `-` (not first or last), dots between labels, at most 64 characters)"),
    ("bad-mac", ErrorKind::InvalidValue, Some((3, 8)),
     "bad-mac.yaml:3:8: network mac `aa-bb-cc-dd-ee-ff` is not a MAC address: it is written with `-`; use `:` (hint: write it as aa:bb:cc:dd:ee:ff)"),
    ("bad-mode", ErrorKind::InvalidValue, Some((3, 24)),
     "bad-mode.yaml:3:24: write-kubeconfig-mode `0800` is not an octal file mode (hint: quote three or four octal digits, e.g. \"0600\" or \"0644\")"),
    ("bad-node-ip", ErrorKind::InvalidValue, Some((2, 10)),
     "bad-node-ip.yaml:2:10: node-ip `10.0.0.300` is not an IP address: it is not an IPv4 or IPv6 address (hint: write an address such as 10.0.0.5 or fd00::5)"),
    ("bad-ntp", ErrorKind::InvalidValue, Some((4, 6)),
     "bad-ntp.yaml:4:6: ntp server `ntp server` is not usable: it is neither an IP address nor a host name (hint: write host names or addresses, e.g. [0.debian.pool.ntp.org, 10.0.0.1])"),
    ("bad-role", ErrorKind::InvalidValue, Some((1, 7)),
     "bad-role.yaml:1:7: role: unknown variant `master`, expected `server` or `agent` (hint: role is `server` or `agent`)"),
    ("bad-server-url", ErrorKind::InvalidValue, Some((2, 9)),
     "bad-server-url.yaml:2:9: server `10.0.0.1:6443` is not a k3s server URL: it must start with https:// (hint: write it as https://HOST:PORT, e.g. https://10.0.0.1:6443)"),
    ("bad-taint", ErrorKind::InvalidValue, Some((4, 5)),
     "bad-taint.yaml:4:5: node-taint `gpu=true:NoRun` is not `key=value:Effect` (hint: Effect is NoSchedule, PreferNoSchedule or NoExecute)"),
    ("bad-timezone", ErrorKind::InvalidValue, Some((2, 11)),
     "bad-timezone.yaml:2:11: timezone `Europe/Berlin/` is not a time zone name: it has an empty part (a leading, trailing or double `/`) (hint: write Area/City as in /usr/share/zoneinfo, e.g. Europe/Berlin, or UTC)"),
    ("cidr-host-bits", ErrorKind::InvalidValue, Some((2, 15)),
     "cidr-host-bits.yaml:2:15: cluster-cidr `10.42.0.1/16` is not a network CIDR: host bits are set; the network is 10.42.0.0/16 (hint: write NETWORK/PREFIX, e.g. 10.42.0.0/16)"),
    ("cidrs-overlap", ErrorKind::Conflict, Some((3, 15)),
     "cidrs-overlap.yaml:3:15: service-cidr 10.42.128.0/17 overlaps cluster-cidr 10.42.0.0/16 (hint: pods and services need separate networks (k3s: 10.42.0.0/16, 10.43.0.0/16))"),
    ("cluster-dns-outside", ErrorKind::InvalidValue, Some((2, 14)),
     "cluster-dns-outside.yaml:2:14: cluster-dns 10.96.0.10 is outside the service network 10.43.0.0/16 (hint: CoreDNS gets an address of the service network, e.g. 10.43.0.10)"),
    ("cluster-init-and-server", ErrorKind::Conflict, Some((2, 15)),
     "cluster-init-and-server.yaml:2:15: `cluster-init` starts a new cluster, `server` joins an existing one (hint: the first server sets `cluster-init: true`, the others set `server:`)"),
    ("datastore-and-cluster-init", ErrorKind::Conflict, Some((3, 21)),
     "datastore-and-cluster-init.yaml:3:21: `cluster-init` starts embedded etcd, `datastore-endpoint` names an external datastore (hint: keep one: servers of one cluster share either etcd or the datastore)"),
    ("datastore-scheme", ErrorKind::InvalidValue, Some((2, 21)),
     "datastore-scheme.yaml:2:21: datastore-endpoint `mongodb://***@db.lan/k3s` is not a datastore k3s knows: it must start with mysql://, postgres:// or https:// (etcd) (hint: write mysql://USER:PASS@tcp(HOST:3306)/DB, postgres://USER:PASS@HOST:5432/DB or https://ETCD:2379[,https://...])"),
    ("duplicate-key", ErrorKind::DuplicateField, Some((3, 1)),
     "duplicate-key.yaml:3:1: duplicate field `hostname` (hint: keep one `hostname:` line and remove the other)"),
    ("empty", ErrorKind::Empty, None,
     "empty.yaml: the node config is empty (hint: it needs at least `role: server` or `role: agent`)"),
    ("gateway-outside", ErrorKind::Conflict, Some((5, 12)),
     "gateway-outside.yaml:5:12: network gateway 10.0.1.1 is outside the node's network 10.0.0.0/24 (hint: use a router inside the network, or fix the prefix length of `address`)"),
    ("interface-and-mac", ErrorKind::Conflict, Some((2, 28)),
     "interface-and-mac.yaml:2:28: network selects its interface by `interface` or by `mac`, not both (hint: keep one of them)"),
    ("k3s-args-duplicate", ErrorKind::DuplicateField, Some((4, 3)),
     "k3s-args-duplicate.yaml:4:3: k3s-args: duplicate entry `kubelet-arg` (hint: keep one `kubelet-arg:` line and remove the other)"),
    ("k3s-args-null", ErrorKind::InvalidValue, Some((3, 3)),
     "k3s-args-null.yaml:3:3: k3s-args `kubelet-arg` has no value (hint: write a value, e.g. `kubelet-arg: true`)"),
    ("k3s-args-typed-key", ErrorKind::InvalidValue, Some((4, 3)),
     "k3s-args-typed-key.yaml:4:3: `token` has its own key in node.yaml (hint: write `token:` at the top level, not under k3s-args)"),
    ("k3s-flag-at-top", ErrorKind::UnknownField, Some((3, 1)),
     "k3s-flag-at-top.yaml:3:1: unknown field `kubelet-arg` (hint: other k3s flags go under `k3s-args:`, e.g. `k3s-args: {kubelet-arg: ...}`; docs/node-config.md lists every key)"),
    ("manifest-bad-name", ErrorKind::InvalidValue, Some((3, 16)),
     "manifest-bad-name.yaml:3:16: manifests `../app.yaml` is not a manifest file name (hint: name it like `my-app.yaml` (letters, digits, `.`, `_`, `-`; .yaml, .yml or .json))"),
    ("manifest-not-object", ErrorKind::InvalidValue, Some((3, 13)),
     "manifest-not-object.yaml:3:13: manifests `app.yaml`: document 1 is not a Kubernetes object (no apiVersion and kind) (hint: each document of a manifest has `apiVersion:` and `kind:`)"),
    ("missing-role", ErrorKind::MissingField, None,
     "missing-role.yaml: missing field `role` (hint: add `role: server` or `role: agent`)"),
    ("network-unknown-key", ErrorKind::UnknownField, Some((4, 3)),
     "network-unknown-key.yaml:4:3: network: unknown field `ip`, expected one of `interface`, `mac`, `dhcp`, `address`, `gateway`, `dns` (hint: docs/node-config.md describes `network`)"),
    ("node-ip-same-family", ErrorKind::InvalidValue, Some((2, 21)),
     "node-ip-same-family.yaml:2:21: node-ip has more than one value of the same address family (hint: give at most one IPv4 and one IPv6 value (dual stack))"),
    ("rack-bad-key", ErrorKind::InvalidValue, Some((7, 3)),
     "rack-bad-key.yaml:7:3: nodes key `node-2` is not a MAC address or `serial:<serial>`: it is not six hex pairs separated by colons (aa:bb:cc:dd:ee:ff) (hint: key entries by MAC, `aa:bb:cc:dd:ee:ff:`, or by board serial, `\"serial:10000000abcdef01\":`)"),
    ("rack-duplicate-mac", ErrorKind::DuplicateField, Some((7, 3)),
     "rack-duplicate-mac.yaml:7:3: nodes `AA:BB:CC:DD:EE:01` is the same node as `aa:bb:cc:dd:ee:01` (line 5) (hint: MAC addresses and serials are compared without case: keep one entry)"),
    ("rack-entry-gateway", ErrorKind::Conflict, Some((6, 37)),
     "rack-entry-gateway.yaml:6:37: nodes.aa:bb:cc:dd:ee:01: network gateway 192.168.0.1 is outside the node's network 10.0.0.0/24 (hint: use a router inside the network, or fix the prefix length of `address`)"),
    ("rack-entry-invalid", ErrorKind::InvalidValue, Some((8, 15)),
     "rack-entry-invalid.yaml:8:15: nodes.serial:abc123: hostname `Node_2` is not a valid RFC 1123 hostname: uppercase letters are not allowed (Kubernetes node names are lowercase) (hint: use lowercase letters, digits and `-` (not first or last), dots between labels, at most 64 characters)"),
    ("rack-entry-no-role", ErrorKind::MissingField, Some((6, 3)),
     "rack-entry-no-role.yaml:6:3: nodes.aa:bb:cc:dd:ee:02: missing field `role` (hint: add `role: server` or `role: agent` to this entry or to the common part)"),
    ("rack-nested-wait", ErrorKind::Conflict, Some((7, 5)),
     "rack-nested-wait.yaml:7:5: nodes.aa:bb:cc:dd:ee:01: `wait-for-config` belongs at the top level of a rack file (hint: move it out of the entry)"),
    ("rack-no-entries", ErrorKind::InvalidValue, Some((4, 8)),
     "rack-no-entries.yaml:4:8: `nodes:` has no entries (hint: add entries keyed by MAC (`aa:bb:cc:dd:ee:ff:`) or `serial:<serial>:`, or remove `nodes:`)"),
    ("registry-bad-endpoint", ErrorKind::InvalidValue, Some((5, 17)),
     "registry-bad-endpoint.yaml:5:17: registries mirror `docker.io`: endpoint `registry.lan:5000` is not an http(s) URL (hint: write it as https://HOST[:PORT])"),
    ("registry-kebab-key", ErrorKind::UnknownField, Some((6, 9)),
     "registry-kebab-key.yaml:6:9: registries.configs.registry.lan.tls: unknown field `insecure-skip-verify`, expected one of `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify` (hint: did you mean `insecure_skip_verify`?)"),
    ("registry-password-no-user", ErrorKind::InvalidValue, Some((5, 7)),
     "registry-password-no-user.yaml:5:7: registries config `registry.lan`: a password needs a username (hint: add `username:`)"),
    ("relative-token-file", ErrorKind::InvalidValue, Some((3, 13)),
     "relative-token-file.yaml:3:13: token-file `token.txt` is not an absolute path (hint: give the file's full path on the node, e.g. /var/lib/kiln/token)"),
    ("ssh-dss", ErrorKind::InvalidValue, Some((2, 22)),
     "ssh-dss.yaml:2:22: ssh-authorized-keys[0] `ssh-dss AAAAB3NzaC1kc3MA...` is not an OpenSSH public key: DSA keys are disabled in OpenSSH 9 (hint: use an ed25519 key: ssh-keygen -t ed25519)"),
    ("ssh-key-mismatch", ErrorKind::InvalidValue, Some((4, 5)),
     "ssh-key-mismatch.yaml:4:5: ssh-authorized-keys[1] `ssh-ed25519 AAAAE2VjZHNh...` is not an OpenSSH public key: the key data is of another type than ssh-ed25519 (hint: paste the whole line of the .pub file, e.g. `ssh-ed25519 AAAAC3Nz... me@host`)"),
    ("static-no-address", ErrorKind::Conflict, Some((4, 9)),
     "static-no-address.yaml:4:9: a static network (`dhcp: false`) needs `address` (hint: add `address: 10.0.0.5/24` (and `gateway:`), or remove `dhcp: false`)"),
    ("syntax", ErrorKind::Syntax, Some((3, 1)),
     "syntax.yaml:3:1: found unexpected end of stream, while scanning a quoted scalar (hint: check the indentation and the quotes; every key is written `key: value`)"),
    ("tabs", ErrorKind::Syntax, Some((3, 1)),
     "tabs.yaml:3:1: found character that cannot start any token, while scanning for the next token (hint: YAML indents with spaces, never tabs)"),
    ("tls-san-map", ErrorKind::InvalidValue, Some((4, 5)),
     "tls-san-map.yaml:4:5: tls-san[1]: invalid type: map, expected a string (hint: write a single value; quote it if it contains `: ` or ` #`)"),
    ("token-and-file", ErrorKind::Conflict, Some((4, 13)),
     "token-and-file.yaml:4:13: `token` and `token-file` are both set (hint: keep one of them)"),
    ("unknown-field", ErrorKind::UnknownField, Some((3, 1)),
     "unknown-field.yaml:3:1: unknown field `rol` (hint: did you mean `role`?)"),
    ("uppercase-hostname", ErrorKind::InvalidValue, Some((2, 11)),
     "uppercase-hostname.yaml:2:11: hostname `Node-1` is not a valid RFC 1123 hostname: uppercase letters are not allowed (Kubernetes node names are lowercase) (hint: use lowercase letters, digits and `-` (not first or last), dots between labels, at most 64 characters)"),
    ("wait-without-nodes", ErrorKind::Conflict, Some((2, 18)),
     "wait-without-nodes.yaml:2:18: `wait-for-config` only applies to a rack file (with `nodes:`) (hint: remove it, or add `nodes:` entries keyed by MAC or `serial:<serial>`)"),
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
    let doc = parse(
        "role: server\nwrite-kubeconfig-mode: 0644\ntoken: 12345\n",
        "n",
    )
    .unwrap();
    let c = doc.single().unwrap();
    assert_eq!(c.kubeconfig_mode(), "0644");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("12345"));
}

#[test]
fn single_values_are_lists_of_one() {
    let doc = parse("role: server\ntls-san: k3s.lan\ndisable: traefik\n", "n").unwrap();
    let c = doc.single().unwrap();
    assert_eq!(c.tls_san, ["k3s.lan"]);
    assert_eq!(c.disable, ["traefik"]);
}

#[test]
fn agent_render_has_no_server_keys() {
    let doc = parse(
        "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\n",
        "n",
    )
    .unwrap();
    let out = render_k3s_config(doc.single().unwrap());
    assert!(!out.contains("write-kubeconfig-mode"), "{out}");
    assert!(
        out.contains("server: \"https://10.0.0.1:6443\"\ntoken: \"t\"\n"),
        "{out}"
    );
}

/// Every YAML example in docs/node-config.md validates (a fragment
/// without `role:` as part of a server's config).
#[test]
fn documented_examples_validate() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/node-config.md");
    let text = fs::read_to_string(&doc).unwrap();
    let mut blocks = 0;
    for (i, block) in text.split("```yaml\n").skip(1).enumerate() {
        let body = block.split("```").next().unwrap();
        let has_role = body.lines().any(|l| l.starts_with("role:"));
        let config = if has_role {
            body.to_owned()
        } else {
            format!("role: server\n{body}")
        };
        if let Err(e) = parse(&config, &format!("docs example {}", i + 1)) {
            panic!("{e}\n{config}");
        }
        blocks += 1;
    }
    assert!(blocks >= 10, "only {blocks} examples found");
}
