//! QEMU boot tests: boot the self-test image and judge the facts it prints
//! on the serial console (`selftest: key=value`, see
//! tests/fixtures/selftest/overlay/usr/lib/kiln-selftest/report).

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::{copy_image, kiln, qemu_lock, run, scratch, selftest_image, Run};

/// Disk size the tests "flash" the image to: bigger than the image, so the
/// data partition has room to grow.
const DISK_BYTES: u64 = 2 << 30;

fn boot(image: &Path, node: Option<&Path>, extra: &[&str]) -> (Run, String) {
    let _one_vm_at_a_time = qemu_lock();
    let log = image.with_extension("boot.log");
    let mut cmd = kiln();
    cmd.arg("boot")
        .arg(image)
        .arg("--no-echo")
        .arg("--log")
        .arg(&log)
        .args(extra);
    if let Some(node) = node {
        cmd.arg("--node").arg(node);
    }
    let r = run(&mut cmd);
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    (r, console)
}

/// The `selftest: key=value` facts of a console log (last value wins).
fn facts(console: &str) -> BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split_once("selftest: ").map(|(_, f)| f))
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn number(facts: &BTreeMap<String, String>, key: &str) -> u64 {
    let raw = facts
        .get(key)
        .unwrap_or_else(|| panic!("no fact {key}: {facts:?}"));
    raw.split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{key}={raw} is not a number"))
}

#[test]
fn first_and_second_boot_of_one_disk() {
    let dir = scratch("boot-twice");
    let image = copy_image(&selftest_image().image, &dir);
    let node = dir.join("node.yaml");
    std::fs::write(&node, "role: server\ncluster-init: true\nhostname: kiln-test-1\ntoken: t0ken-for-test\nwrite-kubeconfig-mode: \"0640\"\ntls-san: [kiln.example]\n").unwrap();
    let grow = DISK_BYTES.to_string();
    let args = [
        "--grow",
        &grow,
        "--timeout",
        "300",
        "--wait-exit",
        "--expect",
        "kiln: node ready role=server",
        "--expect",
        "selftest: done",
    ];

    // First boot: config from fw_cfg, data partition grown to the disk.
    let (r, console) = boot(&image, Some(&node), &args);
    assert_eq!(
        r.code,
        Some(0),
        "first boot failed: {}\n{console}",
        r.stderr
    );
    let f = facts(&console);
    assert!(
        console.contains("kiln: node config from fw_cfg"),
        "config source not named"
    );
    assert!(console.contains("kiln: first boot done"));
    assert_eq!(f["usr-write"], "failed", "the root must be read-only");
    assert_eq!(f["root-mount"], "squashfs ro");
    assert_eq!(f["etc-mount"], "overlay");
    let var = &f["var-mount"];
    assert!(
        var.ends_with(" ext4") && var.starts_with("/dev/vda"),
        "/var is not the data partition: {var}"
    );
    let disk = number(&f, "disk-sectors");
    assert_eq!(disk * 512, DISK_BYTES, "guest sees the grown disk");
    let data_end = number(&f, "data-start") + number(&f, "data-sectors");
    let slack = disk - data_end;
    assert!(
        slack <= 2048 + 34,
        "data partition does not fill the disk: {slack} sectors left"
    );
    let fs_bytes = number(&f, "var-fs-kib") * 1024;
    assert!(
        fs_bytes * 100 >= number(&f, "data-sectors") * 512 * 95,
        "/var filesystem not grown: {fs_bytes} bytes"
    );
    assert_eq!(
        f["hostname"], "kiln-test-1",
        "hostname from the fw_cfg node.yaml"
    );
    for line in [
        "cluster-init: true",
        "write-kubeconfig-mode: \"0640\"",
        "tls-san:",
    ] {
        assert!(
            console.contains(&format!("selftest: config.yaml: {line}")),
            "config.yaml lacks {line}"
        );
    }
    assert_eq!(f["config-mode"], "600");
    assert_eq!(f["node-token-mode"], "600");
    assert_eq!(
        f["kubeconfig-mode"], "640",
        "write-kubeconfig-mode honoured"
    );
    assert_eq!(f["os-release-k3s"], "K3S=\"test-double\"");
    assert_eq!(f["failed-units"], "", "no systemd unit may fail");
    assert_eq!(
        (
            f["boot-count"].as_str(),
            f["var-file"].as_str(),
            f["etc-file"].as_str()
        ),
        ("1", "absent", "absent")
    );
    assert!(!console.contains("kiln-init: ERROR"));

    // Second boot of the same disk, no fw_cfg: saved config, state kept.
    let (r, console) = boot(&image, None, &args[2..]);
    assert_eq!(
        r.code,
        Some(0),
        "second boot failed: {}\n{console}",
        r.stderr
    );
    let f = facts(&console);
    assert!(
        console.contains("kiln: first boot already done"),
        "second boot redid first-boot work"
    );
    assert!(!console.contains("kiln: first boot done"));
    assert!(console.contains("kiln-init: data partition already fills the disk"));
    assert_eq!(f["hostname"], "kiln-test-1");
    assert_eq!(
        (
            f["boot-count"].as_str(),
            f["var-file"].as_str(),
            f["etc-file"].as_str()
        ),
        ("2", "kept", "kept")
    );
    assert_eq!(f["failed-units"], "");
}

#[test]
fn boot_timeout_exits_2_with_the_missing_line() {
    let dir = scratch("boot-timeout");
    let image = copy_image(&selftest_image().image, &dir);
    let (r, _) = boot(
        &image,
        None,
        &["--timeout", "3", "--expect", "a line that never comes"],
    );
    r.failure(
        2,
        "timed out after 3 s waiting for: a line that never comes",
    );
}

#[test]
fn missing_image_and_missing_qemu_are_explained() {
    let dir = scratch("boot-missing");
    run(kiln().arg("boot").arg(dir.join("nope.img"))).failure(3, "build it with `kiln build`");
    let image = copy_image(&selftest_image().image, &dir);
    let r = run(kiln()
        .arg("boot")
        .arg(&image)
        .env("PATH", dir.join("empty-path")));
    r.failure(3, "install qemu-system-x86");
}
