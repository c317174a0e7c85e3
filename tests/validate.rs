use crate::util::{fixture, kiln, run};

#[test]
fn valid_node_configs_pass() {
    let dir = fixture("node-config/valid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let r = run(kiln().arg("validate").args(&files)).success();
    assert_eq!(
        r.stdout.lines().filter(|l| l.ends_with(": ok")).count(),
        files.len(),
        "{}",
        r.stdout
    );
}

#[test]
fn broken_node_configs_are_placed_and_explained() {
    for (file, needle) in [
        ("unknown-field.yaml", ":3:1: unknown field `rol`"),
        ("agent-cluster-init.yaml", "cluster-init"),
        ("agent-no-token.yaml", "token"),
        ("syntax.yaml", "syntax.yaml:"),
    ] {
        let path = fixture(&format!("node-config/invalid/{file}"));
        let r = run(kiln().arg("validate").arg(&path)).failure(1, needle);
        assert!(
            r.stderr.contains(&path.display().to_string()),
            "error names the file: {}",
            r.stderr
        );
    }
}

#[test]
fn spec_validation_reports_unknown_keys_with_position() {
    let dir = crate::util::scratch("validate-spec");
    let spec = dir.join("spec.yaml");
    std::fs::write(&spec, "board: qemu-x86_64\npackges: [curl]\n").unwrap();
    run(kiln().args(["validate", "--spec"]).arg(&spec))
        .failure(1, "spec.yaml:2:1: unknown field `packges`");
}
