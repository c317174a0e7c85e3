//! The multi-VM QEMU test: four copies of the x86_64 self-test image boot
//! at once on a private network (QEMU stream netdevs over loopback, joined
//! by a hub in the first VM; no user network, nothing leaves this machine).
//!
//! Three of them get the same rack file ([`RACK`]) and find their entries
//! by the MAC `kiln boot --mac` gives them: a first server (cluster-init),
//! an agent and a joining server. The fourth is an agent with a wrong
//! token. The server's console must show the agent and the joining server
//! join and the intruder be rejected; the intruder's console must show why
//! and its k3s never get going. No console, nor the journal (copied to the
//! console by the self-test image's `journal` unit), may show a token.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::boot::facts;
use crate::util::{copy_image, kiln_vm, qemu_lock, scratch, selftest_image, Run};

/// The rack's token (a short token: the agents cannot know the CA hash of a
/// cluster that does not exist yet; k3s accepts that too).
const TOKEN: &str = "rack-secret-3f9a1c7e0b";
/// What the intruder presents.
const WRONG_TOKEN: &str = "wrong-secret-5d2e8b7741";

/// One file for the rack. `selftest.kiln.io/cluster=true` makes the
/// self-test image copy its journal to the console and stay up.
fn rack() -> String {
    format!(
        "# The cluster test's rack: one file, each VM takes its entry by MAC.
role: agent
server: https://10.77.0.11:6443
token: {TOKEN}
node-label: [\"selftest.kiln.io/cluster=true\"]
wait-for-config: true
nodes:
  \"52:54:00:6b:00:11\":
    role: server
    cluster-init: true
    server: ~
    hostname: rack-1
    network: {{address: 10.77.0.11/24}}
  \"52:54:00:6b:00:12\":
    hostname: rack-2
    network: {{address: 10.77.0.12/24}}
  \"52:54:00:6b:00:13\":
    role: server
    hostname: rack-3
    network: {{address: 10.77.0.13/24}}
"
    )
}

fn intruder() -> String {
    format!(
        "role: agent
server: https://10.77.0.11:6443
token: {WRONG_TOKEN}
hostname: intruder
node-label: [\"selftest.kiln.io/cluster=true\"]
network: {{address: 10.77.0.14/24}}
"
    )
}

/// One VM of the test.
struct Vm {
    name: &'static str,
    mac: &'static str,
    node: PathBuf,
    links: Vec<String>,
    expect: Vec<String>,
}

/// Free loopback ports for the links (bound, then released for QEMU).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn start(vm: &Vm, dir: &Path) -> (Child, PathBuf) {
    let vm_dir = dir.join(vm.name);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let image = copy_image(&selftest_image("qemu-x86_64").image, &vm_dir);
    let log = vm_dir.join("console.log");
    let mut cmd = kiln_vm();
    cmd.arg("boot")
        .arg(&image)
        .arg("--no-echo")
        .arg("--log")
        .arg(&log)
        .args(["--timeout", "900", "--mac", vm.mac, "--node"])
        .arg(&vm.node);
    for link in &vm.links {
        cmd.args(["--net", link]);
    }
    for e in &vm.expect {
        cmd.args(["--expect", e]);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln runs");
    (child, log)
}

#[test]
fn rack_cluster_joins_on_a_private_network_and_rejects_a_wrong_token() {
    // Four VMs at once: no other boot test may run beside them.
    let _vms = qemu_lock();
    let dir = scratch("cluster");
    let rack_file = dir.join("rack.yaml");
    std::fs::write(&rack_file, rack()).unwrap();
    let intruder_file = dir.join("intruder.yaml");
    std::fs::write(&intruder_file, intruder()).unwrap();
    let ports = free_ports(3);
    let link = |kind: &str, i: usize| format!("{kind}=127.0.0.1:{}", ports[i]);
    let journal = |line: &str| format!("selftest: journal: {line}");

    let vms = [
        Vm {
            name: "rack-1",
            mac: "52:54:00:6b:00:11",
            node: rack_file.clone(),
            links: (0..3).map(|i| link("listen", i)).collect(),
            expect: vec![
                "kiln: node ready role=server".into(),
                "selftest: done".into(),
                "k3s-double: node rack-2 joined as agent".into(),
                "k3s-double: node rack-3 joined as server".into(),
                "k3s-double: node intruder (10.77.0.14:".into(),
                journal("k3s-double: node rack-2 joined as agent"),
                journal("k3s-double: node rack-3 joined as server"),
            ],
        },
        Vm {
            name: "rack-2",
            mac: "52:54:00:6b:00:12",
            node: rack_file.clone(),
            links: vec![link("connect", 0)],
            expect: vec![
                "kiln: node ready role=agent".into(),
                "selftest: done".into(),
                journal("kiln: node ready role=agent"),
            ],
        },
        Vm {
            name: "rack-3",
            mac: "52:54:00:6b:00:13",
            node: rack_file.clone(),
            links: vec![link("connect", 1)],
            expect: vec![
                "kiln: node ready role=server".into(),
                "selftest: done".into(),
                journal("kiln: node ready role=server"),
            ],
        },
        Vm {
            name: "intruder",
            mac: "52:54:00:6b:00:14",
            node: intruder_file,
            links: vec![link("connect", 2)],
            expect: vec![
                "k3s-double: ERROR: agent intruder rejected by https://10.77.0.11:6443: wrong token"
                    .into(),
                journal("k3s-double: ERROR: agent intruder rejected by"),
            ],
        },
    ];
    let started: Vec<(Child, PathBuf)> = vms.iter().map(|vm| start(vm, &dir)).collect();
    let runs: Vec<(Run, String)> = started
        .into_iter()
        .map(|(child, log)| {
            let run = Run::of(child.wait_with_output().unwrap());
            (run, std::fs::read_to_string(&log).unwrap_or_default())
        })
        .collect();
    for (vm, (r, console)) in vms.iter().zip(&runs) {
        assert_eq!(
            r.code,
            Some(0),
            "{}: {}\nconsole:\n{console}",
            vm.name,
            r.stderr
        );
        eprintln!("{}: {}", vm.name, r.stderr.trim());
    }
    let console = |name: &str| {
        let i = vms.iter().position(|v| v.name == name).unwrap();
        runs[i].1.as_str()
    };

    // Rack mode: one file, each VM its own entry, hostname and role.
    for (name, key, role) in [
        (
            "rack-1",
            "52:54:00:6b:00:11",
            "role server, new cluster (cluster-init)",
        ),
        (
            "rack-2",
            "52:54:00:6b:00:12",
            "role agent, joining https://10.77.0.11:6443",
        ),
        (
            "rack-3",
            "52:54:00:6b:00:13",
            "role server, joining https://10.77.0.11:6443",
        ),
    ] {
        let c = console(name);
        assert!(c.contains("kiln: node config from fw_cfg"), "{name}");
        assert!(
            c.contains(&format!("kiln: rack mode: using nodes entry `{key}`")),
            "{name} did not take its own entry:\n{c}"
        );
        assert!(c.contains(&format!("kiln: {role}")), "{name}: not {role}");
        let f = facts(c);
        assert_eq!(f["hostname"], name);
        assert_eq!(f["failed-units"], "", "{name}: no systemd unit may fail");
        assert!(
            c.contains("selftest: config.yaml: token: (masked by the selftest)"),
            "{name}: config.yaml was printed, its token masked"
        );
    }
    // Each node made its own SSH host key (none is baked into the image).
    let keys: std::collections::BTreeSet<String> = ["rack-1", "rack-2", "rack-3"]
        .iter()
        .map(|n| facts(console(n))["ssh-host-key"].clone())
        .collect();
    assert_eq!(keys.len(), 3, "SSH host keys are not per node: {keys:?}");
    assert!(console("rack-3").contains("k3s-double: server joined https://10.77.0.11:6443"));
    assert!(console("rack-2").contains("k3s-double: agent joined https://10.77.0.11:6443"));

    // The intruder: a clear failure, and its k3s never got going.
    let intruder = console("intruder");
    assert!(intruder.contains("kiln: role agent, joining https://10.77.0.11:6443"));
    assert!(!intruder.contains("kiln: node ready"), "{intruder}");
    assert!(!intruder.contains("agent joined"), "{intruder}");
    assert!(!console("rack-1").contains("node intruder joined"));

    // Secrets: neither token anywhere on any console, journal included.
    for (vm, (_, console)) in vms.iter().zip(&runs) {
        assert!(
            console.contains("selftest: journal: "),
            "{}: the journal was not copied to the console",
            vm.name
        );
        for secret in [TOKEN, WRONG_TOKEN] {
            assert!(
                !console.contains(secret),
                "{}: the console or journal shows a token",
                vm.name
            );
        }
    }
}
