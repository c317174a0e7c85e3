//! Property tests: the parser, the error locator and the rack selector
//! never panic, on arbitrary bytes, on YAML built from the schema's own
//! vocabulary, and on such YAML with stray characters inserted. What
//! parses renders, selects, and saves (`to_yaml`) to the same config.
//!
//! `cargo test` runs 256 cases per property; a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p kiln-node tests_fuzz`.

use proptest::prelude::*;
use proptest::sample::select;
use serde_yaml::{Mapping, Value};

use super::*;

const KEYS: &[&str] = &[
    "role",
    "cluster-init",
    "server",
    "token",
    "token-file",
    "datastore-endpoint",
    "hostname",
    "write-kubeconfig-mode",
    "tls-san",
    "node-label",
    "node-taint",
    "disable",
    "node-ip",
    "node-external-ip",
    "flannel-iface",
    "flannel-backend",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "network",
    "ntp",
    "ssh-authorized-keys",
    "timezone",
    "registries",
    "manifests",
    "k3s-args",
    "wait-for-config",
    "nodes",
    "interface",
    "mac",
    "dhcp",
    "address",
    "gateway",
    "dns",
    "mirrors",
    "configs",
    "endpoint",
    "rewrite",
    "auth",
    "tls",
    "username",
    "password",
    "ca_file",
    "cert_file",
    "key_file",
    "insecure_skip_verify",
    "a.yaml",
    "data-dir",
    "kubelet-arg",
];

const SCALARS: &[&str] = &[
    "server",
    "agent",
    "true",
    "false",
    "~",
    "0600",
    "https://10.0.0.1:6443",
    "https://[fd00::1]",
    "http://x",
    "10.0.0.5",
    "10.0.0.5/24",
    "10.0.0.0/24",
    "10.42.0.0/16",
    "10.43.0.10",
    "fd00::5",
    "fd00:42::/56",
    "300.1.1.1",
    "eth0",
    "en*",
    "aa:bb:cc:dd:ee:01",
    "AA:BB:CC:DD:EE:02",
    "serial:abc",
    "vxlan",
    "none",
    "host-gw",
    "Europe/Berlin",
    "UTC",
    "/abs/path",
    "rel",
    "K10ab::server:pw",
    "mysql://u:p@tcp(db)/k",
    "postgres://u:p@db/k",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o x",
    "ssh-rsa AAAA",
    "apiVersion: v1\nkind: X\n",
    "k=v",
    "k=v:NoExecute",
    "",
    " ",
    "a: b",
    "# c",
    "\t",
    "é",
    "\u{2028}",
];

const NODE_KEYS: &[&str] = &[
    "aa:bb:cc:dd:ee:01",
    "AA:BB:CC:DD:EE:01",
    "aa:bb:cc:dd:ee:02",
    "serial:abc",
    "SERIAL:ABC",
    "serial:",
    "node-x",
    "aa-bb-cc-dd-ee-03",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(KEYS).prop_map(str::to_owned),
        1 => select(NODE_KEYS).prop_map(str::to_owned),
        1 => "[a-z_:.-]{0,10}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        4 => select(SCALARS).prop_map(Value::from),
        1 => ".{0,16}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                Value::Mapping(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

/// A document from the schema's keys and values.
fn document() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), value()), 0..10).prop_map(|kv| {
        let map: Mapping = kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect();
        serde_yaml::to_string(&map).unwrap_or_default()
    })
}

/// `key: value` pieces, mostly valid, some not, for configs that get past
/// the parser into validation, merging and rendering.
const FRAGMENTS: &[(&str, &str)] = &[
    ("role", "server"),
    ("role", "agent"),
    ("cluster-init", "true"),
    ("cluster-init", "false"),
    ("server", "https://10.0.0.1:6443"),
    ("server", "~"),
    ("token", "s3cret"),
    ("token-file", "/var/lib/kiln/token"),
    ("datastore-endpoint", "postgres://k3s:pw@db/k3s"),
    ("hostname", "node-1"),
    ("hostname", "Bad_Name"),
    ("write-kubeconfig-mode", "\"0644\""),
    ("tls-san", "[k3s.lan, 10.0.0.10]"),
    ("disable", "traefik"),
    ("node-label", "[a=b]"),
    ("node-taint", "[\"a=b:NoExecute\"]"),
    ("node-ip", "[10.0.0.5, \"fd00::5\"]"),
    ("node-ip", "10.0.0.500"),
    ("node-external-ip", "203.0.113.5"),
    ("flannel-iface", "eth0"),
    ("flannel-backend", "host-gw"),
    ("cluster-cidr", "10.42.0.0/16"),
    ("service-cidr", "10.43.0.0/16"),
    ("service-cidr", "10.42.0.0/24"),
    ("cluster-dns", "10.43.0.10"),
    ("network", "{interface: eth0, address: 10.0.0.5/24, gateway: 10.0.0.1, dns: [10.0.0.1]}"),
    ("network", "{mac: \"AA:BB:CC:DD:EE:01\", dhcp: true}"),
    ("network", "{address: 10.0.0.6/24}"),
    ("network", "{gateway: ~, address: 10.0.1.6/24}"),
    ("network", "{dhcp: false}"),
    ("ntp", "[pool.ntp.org, 10.0.0.1]"),
    ("ssh-authorized-keys", "[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnrDv1DR62Z0/NINFQAmpfJasS3V5n/KWIvidY2YV6o x\"]"),
    ("timezone", "Europe/Berlin"),
    ("registries", "{mirrors: {docker.io: {endpoint: [\"https://r.lan:5000\"], rewrite: {a: b}}}, configs: {r.lan:5000: {auth: {username: u, password: p}, tls: {ca_file: /ca.pem}}}}"),
    ("registries", "{configs: {r: {auth: {token: t}}}}"),
    ("manifests", "{a.yaml: \"apiVersion: v1\\nkind: Namespace\\n---\\n\"}"),
    ("k3s-args", "{kubelet-arg: [max-pods=200], data-dir: /data, secrets-encryption: true}"),
];

/// `key: value` lines from [`FRAGMENTS`], each key once.
fn fragments(max: usize) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(select(FRAGMENTS), 0..max).prop_map(|mut f| {
        let mut seen = Vec::new();
        f.retain(|(k, _)| {
            let new = !seen.contains(k);
            seen.push(*k);
            new
        });
        f
    })
}

/// A plain config likely to be valid.
fn config() -> impl Strategy<Value = String> {
    (
        select(
            &[
                "role: server\n",
                "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\n",
            ][..],
        ),
        fragments(8),
    )
        .prop_map(|(base, f)| {
            let mut text = base.to_owned();
            for (k, v) in f
                .into_iter()
                .filter(|(k, _)| !base.contains(&format!("{k}:")))
            {
                text.push_str(&format!("{k}: {v}\n"));
            }
            text
        })
}

/// A rack file: a common part and entries from a small pool of keys (so
/// duplicates and matches happen).
fn rack() -> impl Strategy<Value = String> {
    let node_key = prop_oneof![
        12 => select(&["aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03", "serial:abc", "serial:def"][..]),
        1 => select(NODE_KEYS),
    ];
    let entries = prop::collection::vec((node_key, fragments(4)), 1..4).prop_map(|mut e| {
        let mut seen = Vec::new();
        e.retain(|(k, _)| {
            let new = !seen.contains(k);
            seen.push(*k);
            new
        });
        e
    });
    let base = select(
        &[
            "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\n",
            "token: t\n",
            "",
        ][..],
    );
    (any::<bool>(), base, fragments(3), entries).prop_map(|(wait, base, common, nodes)| {
        let mut text = format!("wait-for-config: {wait}\n{base}");
        for (k, v) in common
            .into_iter()
            .filter(|(k, _)| !base.contains(&format!("{k}:")))
        {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str("nodes:\n");
        for (k, fields) in nodes {
            let body: Vec<String> = fields.iter().map(|(f, v)| format!("{f}: {v}")).collect();
            text.push_str(&format!("  {k}: {{{}}}\n", body.join(", ")));
        }
        text
    })
}

/// `text` with a few characters that YAML cares about inserted.
fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            select(
                &[
                    " ", ":", "- ", "\n", "#", "\"", "{", "[", "\t", "~", "'", "|\n", "  ",
                ][..],
            ),
        ),
        0..4,
    );
    (text, edits).prop_map(|(mut t, edits)| {
        for (at, s) in edits {
            let bounds: Vec<usize> = t.char_indices().map(|(i, _)| i).chain([t.len()]).collect();
            t.insert_str(bounds[at.index(bounds.len())], s);
        }
        t
    })
}

fn identity() -> impl Strategy<Value = NodeIdentity> {
    (
        prop::collection::vec(select(NODE_KEYS).prop_map(str::to_owned), 0..3),
        prop::option::of(prop_oneof![
            Just("abc".to_owned()),
            Just("ABC\n".to_owned()),
            ".{0,8}"
        ]),
    )
        .prop_map(|(macs, serial)| NodeIdentity { macs, serial })
}

/// Everything a caller may do with the result of a parse.
fn exercise(text: &str, id: &NodeIdentity) {
    match parse(text, "fuzz.yaml") {
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.yaml"), "{shown}");
            if let Some(l) = e.location {
                // YAML breaks lines at \n, \r, \r\n, NEL, LS and PS; the end
                // of a text without a final break is on the line after.
                let breaks = text
                    .replace("\r\n", "\n")
                    .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
                    .count();
                let lines = breaks as u32 + 2;
                assert!(
                    l.line >= 1 && l.line <= lines && l.column >= 1,
                    "{shown}\n{text}"
                );
            }
        }
        Ok(doc) => {
            let _ = format!("{doc:?}");
            for c in doc.common.iter().chain(doc.nodes.iter().map(|e| &e.config)) {
                let _ = render_k3s_config(c);
                let _ = c.registries.as_ref().map(render_registries);
                let _ = c.network.as_ref().map(render_networkd);
                let _ = (
                    render_timesyncd(c),
                    render_authorized_keys(c),
                    render_timezone(c),
                );
                let saved = c.to_yaml();
                let back =
                    parse(&saved, "saved").unwrap_or_else(|e| panic!("{e}\n{saved}\nfrom\n{text}"));
                assert_eq!(back.single(), Some(c), "{saved}");
            }
            if let Ok(s) = select_node(&doc, id) {
                let _ = render_k3s_config(&s.config);
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes(&bytes, "fuzz.yaml");
    }

    #[test]
    fn arbitrary_text(text in ".{0,256}", id in identity()) {
        exercise(&text, &id);
    }

    #[test]
    fn schema_shaped_documents(text in mutated(document()), id in identity()) {
        exercise(&text, &id);
    }

    #[test]
    fn plain_configs(text in mutated(config()), id in identity()) {
        exercise(&text, &id);
    }

    #[test]
    fn rack_files(text in mutated(rack()), id in identity()) {
        exercise(&text, &id);
    }
}

#[test]
#[ignore]
fn generator_stats() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let id = NodeIdentity {
        macs: vec!["aa:bb:cc:dd:ee:01".into()],
        serial: Some("abc".into()),
    };
    for (name, strat) in [
        ("config", config().boxed()),
        ("rack", rack().boxed()),
        ("mutated rack", mutated(rack()).boxed()),
    ] {
        let (mut ok, mut racks, mut selected) = (0, 0, 0);
        for _ in 0..2000 {
            let t = strat.new_tree(&mut runner).unwrap().current();
            if let Ok(d) = parse(&t, "x") {
                ok += 1;
                racks += usize::from(d.is_rack());
                selected += usize::from(d.is_rack() && select_node(&d, &id).is_ok());
            }
        }
        println!("{name}: {ok}/2000 parse, {racks} racks, {selected} selected");
    }
}
