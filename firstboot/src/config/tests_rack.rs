//! Rack mode: merging entries over the common part and picking this node's.

use std::fs;
use std::path::Path;

use super::*;

fn rack_fixture() -> NodeDoc {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/node-config/valid/rack.yaml");
    parse(&fs::read_to_string(path).unwrap(), "rack.yaml").unwrap()
}

fn id(macs: &[&str], serial: Option<&str>) -> NodeIdentity {
    NodeIdentity {
        macs: macs.iter().map(|m| m.to_string()).collect(),
        serial: serial.map(str::to_owned),
    }
}

#[test]
fn entries_merge_over_the_common_part() {
    let doc = rack_fixture();
    assert!(doc.is_rack());
    assert_eq!(doc.single(), None);
    let keys: Vec<&str> = doc.nodes.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "DC:A6:32:00:00:01",
            "dc:a6:32:00:00:02",
            "serial:10000000abcdef03"
        ]
    );

    let first = &doc.nodes[0].config;
    assert_eq!(first.role, Role::Server);
    assert!(first.cluster_init);
    assert_eq!(
        first.server, None,
        "`server: ~` removes the common part's server"
    );
    assert_eq!(
        first.token.as_ref().map(Secret::expose),
        Some("K10aaaa::server:rack-secret")
    );
    assert_eq!(first.ntp, ["10.0.0.1"]);
    assert_eq!(first.manifests.keys().collect::<Vec<_>>(), ["rack.yaml"]);
    let net = first.network.as_ref().unwrap();
    assert_eq!(
        net.mac.as_deref(),
        Some("dc:a6:32:00:00:01"),
        "an entry keyed by MAC configures that NIC"
    );
    assert_eq!(net.address.as_deref(), Some("10.0.0.11/24"));
    assert_eq!(
        net.gateway.as_deref(),
        Some("10.0.0.1"),
        "merged from the common part"
    );
    assert!(!net.dhcp);

    let second = &doc.nodes[1].config;
    assert_eq!(second.role, Role::Agent);
    assert_eq!(second.server.as_deref(), Some("https://10.0.0.11:6443"));
    assert_eq!(second.node_label, ["kiln.io/slot=2"]);

    let third = &doc.nodes[2];
    assert_eq!(third.selector, NodeKey::Serial("10000000abcdef03".into()));
    assert_eq!(
        third.config.network.as_ref().unwrap().interface.as_deref(),
        Some("eth0")
    );
    assert_eq!(third.config.network.as_ref().unwrap().mac, None);

    let common = doc.common.as_ref().unwrap();
    assert_eq!(common.hostname, None);
    assert_eq!(
        common.network.as_ref().unwrap().address.as_deref(),
        Some("10.0.0.99/24")
    );
}

#[test]
fn selects_by_mac_or_serial_without_case() {
    let doc = rack_fixture();
    let s = select_node(&doc, &id(&["52:54:00:00:00:09", "dc:a6:32:00:00:01"], None)).unwrap();
    assert_eq!(
        s.matched,
        Match::Entry {
            key: "DC:A6:32:00:00:01".into(),
            by: NodeKey::Mac("dc:a6:32:00:00:01".into())
        }
    );
    assert_eq!(s.config.hostname.as_deref(), Some("rack-a-1"));

    let s = select_node(&doc, &id(&["DC:A6:32:00:00:02"], None)).unwrap();
    assert_eq!(s.config.hostname.as_deref(), Some("rack-a-2"));

    let s = select_node(&doc, &id(&[], Some("10000000ABCDEF03\n"))).unwrap();
    assert_eq!(s.config.hostname.as_deref(), Some("rack-a-3"));
    assert_eq!(
        s.matched,
        Match::Entry {
            key: "serial:10000000abcdef03".into(),
            by: NodeKey::Serial("10000000abcdef03".into())
        }
    );
}

#[test]
fn unknown_node_gets_the_common_part() {
    let doc = rack_fixture();
    let s = select_node(&doc, &id(&["52:54:00:12:34:56"], Some("deadbeef"))).unwrap();
    assert_eq!(s.matched, Match::NoEntry);
    assert_eq!(Some(&s.config), doc.common.as_ref());
}

#[test]
fn two_matching_entries_are_an_error() {
    let doc = rack_fixture();
    let e = select_node(&doc, &id(&["dc:a6:32:00:00:02"], Some("10000000abcdef03"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        "rack.yaml:26:3: nodes `dc:a6:32:00:00:02` and `serial:10000000abcdef03` both match this node \
         (hint: keep one entry per node: a node with two NICs is listed under one MAC)"
    );
}

const WAITING: &str = "role: agent
server: https://10.0.0.1:6443
token: abc
wait-for-config: true
nodes:
  aa:bb:cc:dd:ee:01:
    hostname: n1
";

#[test]
fn wait_for_config_makes_an_unknown_node_an_error() {
    let doc = parse(WAITING, "node.yaml").unwrap();
    assert!(doc.wait_for_config);
    let e = select_node(&doc, &id(&["52:54:00:12:34:56"], None)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoEntry);
    assert_eq!(
        e.to_string(),
        "node.yaml:5:1: no entry in `nodes:` for this node (MAC 52:54:00:12:34:56; no serial) and \
         wait-for-config is set (hint: add an entry `52:54:00:12:34:56:` under `nodes:`; the node \
         retries until it has one)"
    );
    // The node with an entry is fine.
    let s = select_node(&doc, &id(&["AA:BB:CC:DD:EE:01"], None)).unwrap();
    assert_eq!(s.config.hostname.as_deref(), Some("n1"));
}

#[test]
fn common_part_without_role_serves_no_unknown_node() {
    let text =
        "server: https://10.0.0.1:6443\ntoken: abc\nnodes:\n  aa:bb:cc:dd:ee:01: {role: agent}\n";
    let doc = parse(text, "node.yaml").unwrap();
    assert_eq!(doc.common, None);
    let e = select_node(&doc, &id(&[], None)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoEntry);
    assert_eq!(
        e.to_string(),
        "node.yaml:3:1: no entry in `nodes:` for this node (no NIC found; no serial) and the common \
         part has no role (hint: add an entry `aa:bb:cc:dd:ee:ff:` under `nodes:`, or `role:` to \
         the common part)"
    );
}

#[test]
fn single_config_is_selected_as_is() {
    let doc = parse("role: server\n", "n").unwrap();
    let s = select_node(&doc, &id(&["aa:bb:cc:dd:ee:01"], None)).unwrap();
    assert_eq!(s.matched, Match::Single);
    assert_eq!(s.config.role, Role::Server);
}

#[test]
fn nested_nulls_clear_and_flow_style_parses() {
    let text = "role: agent\nserver: https://s:6443\ntoken: abc\nnetwork: {address: 10.0.0.9/24, gateway: 10.0.0.1}\n\
                nodes: {\"aa:bb:cc:dd:ee:01\": {network: {gateway: ~, address: 10.0.1.9/24}}}\n";
    let doc = parse(text, "n").unwrap();
    let net = doc.nodes[0].config.network.clone().unwrap();
    assert_eq!(net.gateway, None);
    assert_eq!(net.address.as_deref(), Some("10.0.1.9/24"));
    // Without the null, the inherited gateway is outside the entry's network.
    let bad = text.replace("gateway: ~, ", "");
    let e = parse(&bad, "n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.message
            .starts_with("nodes.aa:bb:cc:dd:ee:01: network gateway 10.0.0.1 is outside"),
        "{e}"
    );
    assert_eq!(
        e.location,
        Some(Location {
            line: 4,
            column: 33
        }),
        "points at the common part's gateway"
    );
}
