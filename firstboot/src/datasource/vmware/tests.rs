//! The OVF environment fixtures in `tests/fixtures/datasource/vmware/<case>/`:
//! each `ovf-env.xml` (as vSphere writes it, unless the case says
//! otherwise) goes through [`from_ovf_env`], and what comes out (the config
//! and its source, the error, the console lines) must match the case's
//! `expected.txt`. Regenerate with `KILN_BLESS=1 cargo test -p kiln-node`
//! and review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::config;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/datasource/vmware")
}

pub(super) fn fixture(case: &str) -> Vec<u8> {
    fs::read(fixtures().join(case).join("ovf-env.xml")).unwrap()
}

/// What the datasource makes of `xml`, as `expected.txt` holds it.
fn outcome(xml: &[u8]) -> String {
    let mut console = Vec::new();
    let mut out = match from_ovf_env(xml, "VMware guestinfo.ovfEnv", &mut console) {
        Ok(Some(found)) => {
            let text = String::from_utf8_lossy(&found.bytes);
            let parsed = match config::parse_bytes(&found.bytes, &found.source) {
                Ok(_) => "valid".to_owned(),
                Err(e) => format!("invalid: {e}"),
            };
            format!(
                "found: {}\n--- node.yaml\n{text}--- {parsed}\n",
                found.source
            )
        }
        Ok(None) => "none\n".to_owned(),
        Err(e) => format!("error: {e}\n"),
    };
    if !console.is_empty() {
        out.push_str("--- console\n");
        out.push_str(&String::from_utf8_lossy(&console));
    }
    out
}

/// The token a fixture sets, to check that no message shows it.
fn token(xml: &[u8]) -> Option<String> {
    let props = ovfenv::properties(xml).ok()?;
    let (_, t) = props
        .into_iter()
        .find(|(k, _)| k == "guestinfo.kiln.token")?;
    (t.len() >= 4).then_some(t)
}

#[test]
fn ovf_environments_match_their_expected_outcome() {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{cases:?}");
    let mut failures = Vec::new();
    for dir in cases {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let xml = fs::read(dir.join("ovf-env.xml")).unwrap();
        let got = outcome(&xml);
        if let Some(t) = token(&xml) {
            let shown = got.split("--- node.yaml").next().unwrap().to_owned()
                + got.split("--- console").nth(1).unwrap_or_default()
                + got.split("--- invalid").nth(1).unwrap_or_default();
            assert!(!shown.contains(&t), "{case}: the token shows in\n{got}");
        }
        let expected = dir.join("expected.txt");
        if bless {
            fs::write(&expected, &got).unwrap();
            continue;
        }
        match fs::read_to_string(&expected) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!("{case}:\n--- expected\n{want}--- got\n{got}")),
            Err(e) => failures.push(format!("{case}: {}: {e}", expected.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(review, then regenerate with KILN_BLESS=1 cargo test -p kiln-node)",
        failures.join("\n")
    );
}

#[test]
fn secrets_stay_hidden() {
    let xml = fixture("server-init");
    let pairs = ovfenv::properties(&xml).unwrap();
    let props = Props::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap()
        .unwrap();
    let token = token(&xml).unwrap();
    let shown = format!("{props:?}");
    assert!(!shown.contains(&token) && shown.contains("***"), "{shown}");
    let Outcome::Generated(g) = props.outcome("x").unwrap() else {
        panic!("not generated");
    };
    assert!(g.text.contains(&token));
    assert!(!format!("{g:?}").contains(&token));
}

#[test]
fn node_yaml_may_be_wrapped() {
    let yaml = "role: agent\nserver: https://10.0.0.1:6443\ntoken-file: /t\n";
    let b64 = "cm9sZTogYWdlbnQKc2VydmVyOiBo\ndHRwczovLzEwLjAuMC4xOjY0NDMK\r\ndG9rZW4tZmlsZTogL3QK";
    let props = Props::from_pairs([("guestinfo.kiln.node-yaml", b64)])
        .unwrap()
        .unwrap();
    assert_eq!(
        props.outcome("x").unwrap(),
        Outcome::NodeYaml(yaml.as_bytes().to_vec())
    );
}

#[test]
fn booleans_in_any_case() {
    for (v, init) in [("True", true), ("FALSE", false), ("true", true)] {
        let props = Props::from_pairs([
            ("guestinfo.kiln.role", "server"),
            ("guestinfo.kiln.cluster-init", v),
            ("guestinfo.kiln.hostname", "n"),
        ])
        .unwrap()
        .unwrap();
        let Outcome::Generated(g) = props.outcome("x").unwrap() else {
            panic!("{v}");
        };
        assert_eq!(g.text.contains("cluster-init: true\n"), init, "{v}");
        assert!(!g.text.contains("cluster-init: false"), "{v}");
    }
    // Only the wizard's defaults: nothing filled in.
    let props = Props::from_pairs([
        ("guestinfo.kiln.role", "server"),
        ("guestinfo.kiln.cluster-init", "False"),
        ("guestinfo.kiln.hostname", " "),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(props.outcome("x").unwrap(), Outcome::NotFilled);
    assert_eq!(Props::from_pairs([("guestinfo.other", "x")]).unwrap(), None);
}
