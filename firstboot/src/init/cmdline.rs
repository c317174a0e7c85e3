//! The `kiln.*` options on the kernel command line.

use crate::layout;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `kiln.root=NAME`: GPT name of the root (squashfs) partition.
    pub root: String,
    /// `kiln.data=NAME`: GPT name of the data (ext4, `/var`) partition.
    pub data: String,
    /// `kiln.init=PATH`: what to run as PID 1 in the root.
    pub init: String,
    /// `kiln.debug`: more console lines.
    pub debug: bool,
    /// `kiln.install`: run the installer instead of booting, with
    /// `kiln.install.device=` and `kiln.install.wipe`.
    pub install: Option<crate::install::target::Rules>,
    /// `kiln.mbr=SSSSSSSS`: the signature (hex) of the MBR disk whose
    /// partitions 1-4 are kiln's (see [`super::sysfs::name_mbr_partitions`]).
    pub mbr: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: layout::ROOT_A_PARTITION.into(),
            data: layout::DATA_PARTITION.into(),
            init: "/sbin/init".into(),
            debug: false,
            install: None,
            mbr: None,
        }
    }
}

/// Parses `/proc/cmdline`. Other parameters are ignored, so are those after
/// `--` (they are for init); the last occurrence of an option wins, as in
/// the kernel.
pub fn parse(cmdline: &str) -> Result<Options, String> {
    let mut o = Options::default();
    let mut install_rules = crate::install::target::Rules::default();
    for word in split(cmdline) {
        if word == "--" {
            break;
        }
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        let text = |v: Option<&str>| match v {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("{key}= needs a value")),
        };
        match key {
            "kiln.root" => o.root = text(value)?,
            "kiln.data" => o.data = text(value)?,
            "kiln.init" => {
                o.init = text(value)?;
                if !o.init.starts_with('/') {
                    return Err(format!("kiln.init={} is not an absolute path", o.init));
                }
            }
            "kiln.debug" => o.debug = flag(key, value)?,
            "kiln.install" => {
                if flag(key, value)? {
                    o.install.get_or_insert_with(Default::default);
                } else {
                    o.install = None;
                }
            }
            "kiln.mbr" => {
                let v = text(value)?;
                o.mbr = Some(
                    u32::from_str_radix(&v, 16)
                        .ok()
                        .filter(|_| v.len() == 8)
                        .ok_or_else(|| {
                            format!("kiln.mbr={v} is not a disk signature (8 hex digits)")
                        })?,
                );
            }
            "kiln.install.device" => install_rules.device = Some(text(value)?),
            "kiln.install.wipe" => install_rules.wipe = flag(key, value)?,
            _ => {}
        }
    }
    if let Some(rules) = &mut o.install {
        *rules = install_rules;
    } else if install_rules != Default::default() {
        return Err("kiln.install.device and kiln.install.wipe need kiln.install".into());
    }
    if o.root == o.data {
        return Err(format!(
            "kiln.root and kiln.data both name partition {:?}",
            o.root
        ));
    }
    Ok(o)
}

/// `key`, `key=1` (or yes, true, on) and `key=0` (or no, false, off).
fn flag(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off") => Ok(false),
        Some(v) => Err(format!("{key}={v}: use {key} or {key}=0")),
    }
}

/// Splits like the kernel: on whitespace, except inside double quotes, which
/// are dropped (`a="b c"` is `a=b c`).
pub(crate) fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_kiln_options() {
        let o = parse("BOOT_IMAGE=/vmlinuz console=ttyS0,115200 panic=5\n").unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.root, "kiln-root-a");
        assert_eq!(o.data, "kiln-data");
    }

    #[test]
    fn reads_every_option() {
        let o = parse("quiet kiln.root=kiln-root-b kiln.data=\"my data\" kiln.debug kiln.init=/lib/systemd/systemd")
            .unwrap();
        assert_eq!(
            o,
            Options {
                root: "kiln-root-b".into(),
                data: "my data".into(),
                init: "/lib/systemd/systemd".into(),
                debug: true,
                install: None,
                mbr: None,
            }
        );
        assert_eq!(parse("kiln.mbr=0badcafe").unwrap().mbr, Some(0x0bad_cafe));
        assert!(!parse("kiln.debug kiln.debug=0").unwrap().debug);
    }

    #[test]
    fn stops_at_double_dash() {
        assert_eq!(parse("-- kiln.root=x").unwrap().root, "kiln-root-a");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse("kiln.root=").unwrap_err().contains("needs a value"));
        assert!(parse("kiln.init=sbin/init")
            .unwrap_err()
            .contains("absolute"));
        assert!(parse("kiln.debug=maybe").is_err());
        assert!(parse("kiln.mbr=12345")
            .unwrap_err()
            .contains("8 hex digits"));
        assert!(parse("kiln.mbr=1234567g").is_err());
        assert!(parse("kiln.root=kiln-data").unwrap_err().contains("both"));
    }

    #[test]
    fn reads_installer_options() {
        use crate::install::target::Rules;
        assert_eq!(parse("kiln.debug").unwrap().install, None);
        assert_eq!(
            parse("kiln.install").unwrap().install,
            Some(Rules::default())
        );
        assert_eq!(
            parse("kiln.install kiln.install.device=/dev/sda kiln.install.wipe=1")
                .unwrap()
                .install,
            Some(Rules {
                device: Some("/dev/sda".into()),
                wipe: true
            })
        );
        assert!(parse("kiln.install.wipe")
            .unwrap_err()
            .contains("need kiln.install"));
        assert!(parse("kiln.install kiln.install.wipe=maybe").is_err());
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(split("  a  \"b c\" d=\"e f\"\n"), ["a", "b c", "d=e f"]);
        assert_eq!(split("x=\"\""), ["x="]);
    }
}
