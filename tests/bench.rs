//! `kiln bench` works end to end (a smoke test: figures are printed, none
//! is judged; timing belongs in BENCHMARKS.md, not in tests).

use crate::util::{fixture, kiln, run, scratch};

#[test]
fn bench_prints_build_and_size_figures() {
    let work = scratch("bench-smoke");
    let json = work.join("bench.json");
    let r = run(kiln()
        .arg("bench")
        .arg(fixture("selftest/spec.yaml"))
        .args([
            "--board",
            "qemu-x86_64",
            "--runs",
            "1",
            "--no-cold",
            "--no-boot",
        ])
        .arg("--work-dir")
        .arg(&work)
        .arg("--json")
        .arg(&json))
    .success();
    for figure in [
        "warm build         total",
        "incremental build  total",
        "root squashfs",
    ] {
        assert!(r.stdout.contains(figure), "no {figure:?} in:\n{}", r.stdout);
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figures = report["figures"].as_array().unwrap();
    let find = |group: &str, name: &str| {
        figures
            .iter()
            .find(|f| f["group"] == group && f["name"] == name)
            .unwrap_or_else(|| panic!("no {group}/{name} in the JSON"))["samples"][0]
            .as_f64()
            .unwrap()
    };
    assert!(find("warm build", "total") > 0.0);
    assert!(
        find("image", "root squashfs") > 1.0,
        "a real root is megabytes"
    );
    assert!(
        find("image", "root squashfs") < find("image", "raw"),
        "the root fits in the image"
    );
    assert!(
        !r.stdout.contains("reused no stage"),
        "the incremental build must reuse the package root:\n{}",
        r.stdout
    );
}
