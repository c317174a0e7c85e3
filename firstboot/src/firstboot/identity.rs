//! Who this node is, for rack mode: the MAC addresses of its physical NICs
//! and its board serial, read from sysfs and the device tree under a root
//! that tests can fake.

use std::fs;
use std::path::Path;

use crate::config::NodeIdentity;
use crate::datasource::under;

const CLASS_NET: &str = "/sys/class/net";
/// Where a device tree shows the board serial (Raspberry Pi, most ARM
/// boards); the first is a link to the second on a running system.
const SERIAL_PATHS: &[&str] = &[
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
];

/// The node's MACs (sorted by interface name) and serial.
pub fn gather(root: &Path) -> NodeIdentity {
    NodeIdentity {
        macs: macs(root),
        serial: serial(root),
    }
}

/// MACs of interfaces backed by a device (a `device` link in sysfs): not
/// `lo`, bridges, veths, VXLANs or anything else virtual.
fn macs(root: &Path) -> Vec<String> {
    let Ok(dir) = fs::read_dir(under(root, CLASS_NET)) else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == "lo" || fs::symlink_metadata(path.join("device")).is_err() {
            continue;
        }
        let Ok(text) = fs::read_to_string(path.join("address")) else {
            continue;
        };
        let mac = text.trim().to_ascii_lowercase();
        if mac.is_empty() || mac == "00:00:00:00:00:00" {
            continue;
        }
        if !found.iter().any(|(_, m)| *m == mac) {
            found.push((name, mac));
        }
    }
    found.sort();
    found.into_iter().map(|(_, mac)| mac).collect()
}

/// The device tree's `serial-number`, without its NUL terminator.
fn serial(root: &Path) -> Option<String> {
    SERIAL_PATHS.iter().find_map(|p| {
        let bytes = fs::read(under(root, p)).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let s = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!s.is_empty()).then(|| s.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::testdir::TestDir;

    fn nic(root: &Path, name: &str, mac: &str, physical: bool) {
        let dir = under(root, &format!("{CLASS_NET}/{name}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        if physical {
            std::os::unix::fs::symlink("../../devices/pci0000:00/x", dir.join("device")).unwrap();
        }
    }

    #[test]
    fn physical_nics_and_serial() {
        let t = TestDir::new("identity");
        let root = t.path();
        assert_eq!(gather(root), NodeIdentity::default());
        nic(root, "lo", "00:00:00:00:00:00", false);
        nic(root, "eth1", "52:54:00:00:00:02", true);
        nic(root, "eth0", "52:54:00:AA:00:01", true);
        nic(root, "cni0", "aa:aa:aa:aa:aa:aa", false);
        nic(root, "flannel.1", "bb:bb:bb:bb:bb:bb", false);
        let p = under(root, SERIAL_PATHS[1]);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"10000000abcdef01\0").unwrap();
        assert_eq!(
            gather(root),
            NodeIdentity {
                macs: vec!["52:54:00:aa:00:01".into(), "52:54:00:00:00:02".into()],
                serial: Some("10000000abcdef01".into()),
            }
        );
        // /proc/device-tree wins when both exist.
        let p = under(root, SERIAL_PATHS[0]);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"\0").unwrap();
        assert_eq!(
            gather(root).serial.as_deref(),
            Some("10000000abcdef01"),
            "an empty one is skipped"
        );
        fs::write(&p, b"abc\0").unwrap();
        assert_eq!(gather(root).serial.as_deref(), Some("abc"));
    }

    /// What a real Raspberry Pi shows: `/proc/device-tree/serial-number` is
    /// the same 16 hex digits as `Serial` in `/proc/cpuinfo`, NUL-terminated
    /// (a Pi 4: `10000000` then the board's 8; a Pi 3: `00000000` then 8),
    /// and `/proc/device-tree` links to `/sys/firmware/devicetree/base`. The
    /// rack file from the README picks its `serial:` entry for that board.
    #[test]
    fn a_real_pi_serial_picks_its_rack_entry() {
        let t = TestDir::new("pi-serial");
        let root = t.path();
        let base = under(root, "/sys/firmware/devicetree/base");
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("serial-number"), b"10000000abcdef13\0").unwrap();
        fs::write(base.join("model"), b"Raspberry Pi 4 Model B Rev 1.4\0").unwrap();
        fs::create_dir_all(under(root, "/proc")).unwrap();
        std::os::unix::fs::symlink(&base, under(root, "/proc/device-tree")).unwrap();
        nic(root, "eth0", "dc:a6:32:99:99:99", true);

        let id = gather(root);
        assert_eq!(id.serial.as_deref(), Some("10000000abcdef13"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node/rack.yaml");
        let doc = crate::config::parse(&fs::read_to_string(path).unwrap(), "rack.yaml").unwrap();
        let picked = crate::config::select_node(&doc, &id).unwrap();
        assert_eq!(picked.config.hostname.as_deref(), Some("rack-3"));
        assert_eq!(
            picked.matched,
            crate::config::Match::Entry {
                key: "serial:10000000abcdef13".into(),
                by: crate::config::NodeKey::Serial("10000000abcdef13".into()),
            }
        );
    }
}
