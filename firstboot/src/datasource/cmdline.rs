//! The kernel command line (`/proc/cmdline`): either a whole node.yaml as
//! `kiln.node=<base64>`, or a few simple keys, `kiln.role=`, `kiln.server=`,
//! `kiln.token=` and `kiln.hostname=`, turned into a node.yaml here. Handy
//! for PXE and bootloader menus; note that `/proc/cmdline` is readable by
//! every user on the node, token included.

use std::io;
use std::path::Path;

use super::{read_file, under, Datasource, FetchError};
use crate::config::quote;

const PROC_CMDLINE: &str = "/proc/cmdline";
/// The simple keys and the node.yaml key each becomes.
const SIMPLE: &[(&str, &str)] = &[
    ("kiln.role", "role"),
    ("kiln.server", "server"),
    ("kiln.token", "token"),
    ("kiln.hostname", "hostname"),
];

/// `kiln.node=` or the `kiln.*` keys on the kernel command line.
pub struct Cmdline;

impl Datasource for Cmdline {
    fn name(&self) -> &str {
        "kernel command line"
    }

    fn fetch(&self, root: &Path) -> Result<Option<Vec<u8>>, FetchError> {
        let Some(bytes) = read_file(&under(root, PROC_CMDLINE), PROC_CMDLINE)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        from_cmdline(&text).map_err(|why| FetchError {
            what: PROC_CMDLINE.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, why),
        })
    }
}

/// The node.yaml the command line carries, if any. Errors never quote a
/// value: the line may hold a token.
pub(crate) fn from_cmdline(cmdline: &str) -> Result<Option<Vec<u8>>, String> {
    let mut node = None;
    let mut simple: Vec<(&str, String)> = Vec::new();
    for word in crate::init::cmdline::split(cmdline) {
        if word == "--" {
            break;
        }
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key == "kiln.node" {
            node = Some(value.to_owned());
        } else if let Some((_, yaml_key)) = SIMPLE.iter().find(|(k, _)| *k == key) {
            // The last occurrence wins, as in the kernel.
            simple.retain(|(k, _)| k != yaml_key);
            simple.push((yaml_key, value.to_owned()));
        }
    }
    match (node, simple.is_empty()) {
        (None, true) => Ok(None),
        (Some(_), false) => Err(
            "kiln.node= and kiln.role=/kiln.server=/kiln.token=/kiln.hostname= \
             are both set; use one or the other"
                .to_owned(),
        ),
        (Some(b64), true) => decode(&b64).map(Some),
        (None, false) => {
            let mut yaml = String::from("# from the kernel command line (kiln.* keys)\n");
            for (key, value) in SIMPLE
                .iter()
                .filter_map(|(_, k)| simple.iter().find(|(s, _)| s == k))
            {
                yaml.push_str(&format!("{key}: {}\n", quote(value)));
            }
            Ok(Some(yaml.into_bytes()))
        }
    }
}

fn decode(b64: &str) -> Result<Vec<u8>, String> {
    if b64.is_empty() {
        return Err(
            "kiln.node= is empty; give the node.yaml in base64 (base64 -w0 node.yaml)".into(),
        );
    }
    super::decode_base64(b64)
        .ok_or_else(|| "kiln.node= is not base64; encode the file with base64 -w0 node.yaml".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn whole_file_in_base64() {
        let yaml = "role: server\ncluster-init: true\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(yaml);
        let line = format!("console=ttyS0 kiln.node={b64} quiet");
        assert_eq!(from_cmdline(&line).unwrap().unwrap(), yaml.as_bytes());
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("k: ~?>\n");
        assert_eq!(
            from_cmdline(&format!("kiln.node={url_safe}"))
                .unwrap()
                .unwrap(),
            b"k: ~?>\n"
        );
    }

    #[test]
    fn simple_keys_become_yaml() {
        let line = "ro kiln.hostname=old kiln.token=K10ab::server:pw kiln.role=agent \
                    kiln.server=https://10.0.0.1:6443 kiln.hostname=worker-1 -- kiln.role=server";
        let yaml = String::from_utf8(from_cmdline(line).unwrap().unwrap()).unwrap();
        assert_eq!(
            yaml,
            "# from the kernel command line (kiln.* keys)\nrole: \"agent\"\n\
             server: \"https://10.0.0.1:6443\"\ntoken: \"K10ab::server:pw\"\nhostname: \"worker-1\"\n"
        );
        let doc = crate::config::parse(&yaml, "kernel command line").unwrap();
        assert_eq!(doc.single().unwrap().hostname.as_deref(), Some("worker-1"));
    }

    #[test]
    fn absent_and_broken() {
        assert_eq!(
            from_cmdline("console=ttyS0 kiln.root=kiln-root-a"),
            Ok(None)
        );
        assert_eq!(from_cmdline(""), Ok(None));
        let e = from_cmdline("kiln.node=@@@secret@@@").unwrap_err();
        assert!(e.contains("not base64") && !e.contains("secret"), "{e}");
        assert!(from_cmdline("kiln.node=").unwrap_err().contains("empty"));
        let e = from_cmdline("kiln.node=cm9sZTogYWdlbnQK kiln.token=s3cret").unwrap_err();
        assert!(
            e.contains("one or the other") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
