use crate::util::{kiln, run};

#[test]
fn help_texts_explain_each_command_within_80_columns() {
    for (args, needles) in [
        (
            vec!["--help"],
            vec!["build", "boot", "flash", "validate", "boards", "immutable"],
        ),
        (
            vec!["build", "--help"],
            vec!["SPEC", "--board", "--out", "reproducible", "cache"],
        ),
        (
            vec!["boot", "--help"],
            vec![
                "--node",
                "--timeout",
                "--expect",
                "fw_cfg",
                "--mac",
                "--net",
                "listen=127.0.0.1:PORT",
                "Exit codes: 0 ready",
            ],
        ),
        (vec!["validate", "--help"], vec!["node.yaml", "line"]),
        (
            vec!["flash", "--help"],
            vec![
                "--yes",
                "--force",
                "--bmap",
                "--no-bmap",
                "read back",
                "running system",
            ],
        ),
    ] {
        let r = run(kiln().args(&args)).success();
        for n in needles {
            assert!(
                r.stdout.contains(n),
                "`kiln {}` help lacks {n:?}:\n{}",
                args.join(" "),
                r.stdout
            );
        }
        for line in r.stdout.lines() {
            assert!(
                line.chars().count() <= 80,
                "`kiln {}` help line over 80 columns: {line:?}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn boards_lists_qemu_x86_64() {
    let r = run(kiln().arg("boards")).success();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("qemu-x86_64") && l.contains("amd64")),
        "{}",
        r.stdout
    );
}
