//! What Debian's maintainer scripts would have done, done declaratively.
//! kiln never runs package scripts (they need root and the target arch);
//! each fixup here replaces one postinst effect that matters for a node.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::deb::MERGED_USR_DIRS;
use super::tree::{Kind, Node, Tree};

/// Runs every fixup that needs no input beyond the tree.
pub fn apply_all(tree: &mut Tree) -> Result<()> {
    merged_usr_links(tree);
    mountpoints(tree);
    bin_sh(tree);
    accounts(tree)?;
    machine_id(tree);
    ca_bundle(tree);
    resolv_conf(tree);
    empty_var(tree);
    tree.insert(
        "etc/fstab",
        Node::file(
            &b"# kiln: kiln-init mounts root, /var and /etc\n"[..],
            0o644,
        ),
    );
    tree.insert("etc/hostname", Node::file(&b"kiln\n"[..], 0o644));
    tree.insert(
        "etc/systemd/system/default.target",
        Node::symlink("/usr/lib/systemd/system/multi-user.target"),
    );
    Ok(())
}

/// bookworm is merged-/usr: `/bin` and friends are links into `/usr`.
fn merged_usr_links(tree: &mut Tree) {
    for dir in MERGED_USR_DIRS {
        if tree.get(&format!("usr/{dir}")).is_some() {
            tree.insert(dir, Node::symlink(&format!("usr/{dir}")));
        }
    }
}

/// Mount points the kernel, systemd and kiln-init expect to exist on a
/// read-only root.
fn mountpoints(tree: &mut Tree) {
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("home", 0o755),
        ("mnt", 0o755),
        ("etc", 0o755),
    ] {
        tree.insert(dir, Node::dir(mode));
    }
    // root's home holds what the node config writes there (SSH authorized
    // keys): on the data partition, made by tmpfiles (overlays/base).
    tree.insert("root", Node::symlink("var/root"));
}

/// base-passwd's postinst copies its master files; every account gets a
/// locked password: kiln images have no default password anywhere.
fn accounts(tree: &mut Tree) -> Result<()> {
    let read = |tree: &Tree, path: &str| -> Result<String> {
        let data = tree
            .file_data(path)
            .with_context(|| format!("{path} missing; is base-passwd in the package set?"))?;
        Ok(String::from_utf8_lossy(data).into_owned())
    };
    let passwd = login_shells(tree, &read(tree, "usr/share/base-passwd/passwd.master")?);
    let group = read(tree, "usr/share/base-passwd/group.master")?;
    let shadow: String = passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|user| format!("{user}:*:0:0:99999:7:::\n"))
        .collect();
    let gshadow: String = group
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|g| format!("{g}:*::\n"))
        .collect();
    super::sysusers::write_account_files(tree, passwd, group, shadow);
    tree.insert(
        "etc/gshadow",
        Node {
            gid: 42,
            ..Node::file(gshadow.into_bytes(), 0o640)
        },
    );
    Ok(())
}

/// `/bin/sh`: Debian's is dash's link, but dash pulls dpkg and tar into
/// the image; kiln links busybox (in the base set) instead.
fn bin_sh(tree: &mut Tree) {
    if tree.get("usr/bin/sh").is_none() && tree.get("usr/bin/busybox").is_some() {
        tree.insert("usr/bin/sh", Node::symlink("busybox"));
    }
}

/// base-passwd gives root `/bin/bash`; kiln ships no bash, and SSH refuses
/// an account whose shell is missing. A login shell the image lacks
/// becomes `/bin/sh` (busybox); `nologin`, `false` and `sync` stay.
fn login_shells(tree: &Tree, passwd: &str) -> String {
    let in_image = |shell: &str| {
        let rel = shell.trim_start_matches('/');
        let merged = if rel.starts_with("bin/") || rel.starts_with("sbin/") {
            format!("usr/{rel}")
        } else {
            rel.to_string()
        };
        tree.get(&merged).is_some()
    };
    passwd
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if let Some(shell) = fields.get(6).copied() {
                if shell.ends_with("sh") && !in_image(shell) && in_image("/bin/sh") {
                    fields[6] = "/bin/sh";
                }
            }
            format!("{}\n", fields.join(":"))
        })
        .collect()
}

/// An empty machine-id: systemd generates one on first boot and, since
/// `/etc` is a persistent overlay, keeps it. Every node gets its own.
fn machine_id(tree: &mut Tree) {
    tree.insert("etc/machine-id", Node::file(&b""[..], 0o444));
    tree.remove_tree("var/lib/dbus/machine-id");
}

/// `update-ca-certificates`: one bundle of every shipped CA, sorted.
fn ca_bundle(tree: &mut Tree) {
    let mut bundle = Vec::new();
    for (path, node) in tree.below("usr/share/ca-certificates") {
        if let (true, Kind::File(data)) = (path.ends_with(".crt"), &node.kind) {
            bundle.extend_from_slice(data);
            if !data.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    if !bundle.is_empty() {
        tree.insert(
            "etc/ssl/certs/ca-certificates.crt",
            Node::file(bundle, 0o644),
        );
    }
}

/// systemd-resolved's postinst points resolv.conf at its stub.
fn resolv_conf(tree: &mut Tree) {
    if tree.get("usr/lib/systemd/systemd-resolved").is_some() {
        tree.insert(
            "etc/resolv.conf",
            Node::symlink("../run/systemd/resolve/stub-resolv.conf"),
        );
    }
}

/// `/var` is the data partition, mounted over the root's `/var`: whatever
/// packages put there would be hidden, so ship it empty. systemd-tmpfiles
/// creates what services need at boot.
fn empty_var(tree: &mut Tree) {
    tree.retain_below("var", |_, _| false);
}

/// `systemctl enable`: links each unit into the `.wants`/`.requires` of the
/// targets in its `[Install]` section, adds its `Alias=` names and enables
/// its `Also=` units. A unit with nothing to install is an error: enabling
/// it would silently do nothing.
pub fn enable_units(tree: &mut Tree, units: &[String]) -> Result<()> {
    let mut todo: Vec<String> = units.to_vec();
    let mut done = std::collections::BTreeSet::new();
    while let Some(unit) = todo.pop() {
        if !done.insert(unit.clone()) {
            continue;
        }
        let path = format!("usr/lib/systemd/system/{unit}");
        let data = tree
            .file_data(&path)
            .with_context(|| format!("cannot enable {unit}: /{path} is not in the image"))?;
        let install = Install::parse(&String::from_utf8_lossy(data));
        if install.wanted_by.is_empty()
            && install.required_by.is_empty()
            && install.alias.is_empty()
        {
            bail!("cannot enable {unit}: its [Install] section has no WantedBy=, RequiredBy= or Alias=");
        }
        let link = Node::symlink(&format!("/{path}"));
        for target in &install.wanted_by {
            tree.insert(
                &format!("etc/systemd/system/{target}.wants/{unit}"),
                link.clone(),
            );
        }
        for target in &install.required_by {
            tree.insert(
                &format!("etc/systemd/system/{target}.requires/{unit}"),
                link.clone(),
            );
        }
        for alias in &install.alias {
            tree.insert(&format!("etc/systemd/system/{alias}"), link.clone());
        }
        todo.extend(install.also);
    }
    Ok(())
}

#[derive(Default, Debug, PartialEq)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
    also: Vec<String>,
}

impl Install {
    fn parse(unit: &str) -> Install {
        let mut section = "";
        let mut out = Install::default();
        for line in unit.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if section != "[Install]" {
                continue;
            }
            let list = match key.trim() {
                "WantedBy" => &mut out.wanted_by,
                "RequiredBy" => &mut out.required_by,
                "Alias" => &mut out.alias,
                "Also" => &mut out.also,
                _ => continue,
            };
            list.extend(value.split_whitespace().map(str::to_owned));
        }
        out
    }
}

/// `/usr/lib/os-release` for the image (`/etc/os-release` links to it).
/// Values are quoted as os-release(5) asks.
pub fn os_release(tree: &mut Tree, fields: &BTreeMap<&str, String>) {
    let text: String = fields
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    tree.insert("usr/lib/os-release", Node::file(text.into_bytes(), 0o644));
    tree.insert("etc/os-release", Node::symlink("../usr/lib/os-release"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_is_read_from_install_only() {
        let unit = "[Unit]\nWantedBy=bogus\n[Install]\nWantedBy=multi-user.target a.target\n\
                    Alias=dbus-x.service\nAlso=x.socket\n";
        let i = Install::parse(unit);
        assert_eq!(i.wanted_by, ["multi-user.target", "a.target"]);
        assert_eq!(i.alias, ["dbus-x.service"]);
        assert_eq!(i.also, ["x.socket"]);
    }

    #[test]
    fn enabling_links_into_wants() {
        let mut t = Tree::default();
        t.insert(
            "usr/lib/systemd/system/x.service",
            Node::file(&b"[Install]\nWantedBy=multi-user.target\n"[..], 0o644),
        );
        enable_units(&mut t, &["x.service".into()]).unwrap();
        let link = t
            .get("etc/systemd/system/multi-user.target.wants/x.service")
            .unwrap();
        assert_eq!(
            link.kind,
            Kind::Symlink("/usr/lib/systemd/system/x.service".into())
        );
        let e = enable_units(&mut t, &["nope.service".into()]).unwrap_err();
        assert!(e.to_string().contains("not in the image"), "{e}");
    }

    #[test]
    fn accounts_are_locked() {
        let mut t = Tree::default();
        t.insert(
            "usr/share/base-passwd/passwd.master",
            Node::file(&b"root:x:0:0:root:/root:/bin/sh\n"[..], 0o644),
        );
        t.insert(
            "usr/share/base-passwd/group.master",
            Node::file(&b"root:*:0:\n"[..], 0o644),
        );
        accounts(&mut t).unwrap();
        assert_eq!(
            t.file_data("etc/shadow").unwrap().as_ref(),
            b"root:*:0:0:99999:7:::\n"
        );
    }

    #[test]
    fn missing_login_shells_become_bin_sh() {
        let mut t = Tree::default();
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        assert_eq!(login_shells(&t, passwd), passwd, "no /bin/sh: left alone");
        t.insert("usr/bin/busybox", Node::file(&b""[..], 0o755));
        bin_sh(&mut t);
        assert!(matches!(&t.get("usr/bin/sh").unwrap().kind, Kind::Symlink(b) if b == "busybox"));
        assert_eq!(
            login_shells(&t, passwd),
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        );
        t.insert("usr/bin/bash", Node::file(&b""[..], 0o755));
        assert_eq!(login_shells(&t, passwd), passwd, "bash in the image: kept");
    }

    #[test]
    fn var_ships_empty() {
        let mut t = Tree::default();
        t.insert("var/lib/dpkg/status", Node::file(&b"x"[..], 0o644));
        mountpoints(&mut t);
        empty_var(&mut t);
        assert!(t.get("var").is_some());
        assert_eq!(t.below("var").count(), 0);
        // root's home lives on the data partition (SSH authorized keys).
        assert!(
            matches!(&t.get("root").unwrap().kind, Kind::Symlink(target) if target == "var/root")
        );
    }
}
