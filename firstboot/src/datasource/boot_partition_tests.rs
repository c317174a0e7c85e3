//! The boot partition datasource on a fake sysfs and `/dev`, with a fake
//! mounter that "mounts" a directory by copying it.

use super::*;
use crate::datasource::mount::fake::FakeRoot;
use crate::init::testdir::TestDir;

/// A fake root with partitions; `/content` is what the boot partition holds.
trait Partitions {
    /// A partition in sysfs, its node in /dev holding `sector`.
    fn partition(&self, name: &str, partname: Option<&str>, sector: &[u8], number: &str);
    fn source(&self, fail: bool) -> BootPartition;
}

impl Partitions for FakeRoot {
    fn partition(&self, name: &str, partname: Option<&str>, sector: &[u8], number: &str) {
        let sys = self.path(&format!("/sys/class/block/{name}"));
        fs::create_dir_all(&sys).unwrap();
        let pn = partname.map_or(String::new(), |p| format!("PARTNAME={p}\n"));
        fs::write(
            sys.join("uevent"),
            format!("MAJOR=254\nDEVNAME={name}\nDEVTYPE=partition\n{pn}"),
        )
        .unwrap();
        fs::write(sys.join("dev"), format!("{number}\n")).unwrap();
        fs::create_dir_all(self.path("/dev")).unwrap();
        fs::write(self.path(&format!("/dev/{name}")), sector).unwrap();
    }
    fn source(&self, fail: bool) -> BootPartition {
        BootPartition {
            mounter: self.mounter(fail),
        }
    }
}

/// A FAT boot sector with `label` (FAT16, or FAT32 when `fat32`).
fn fat_sector(label: &str, fat32: bool) -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[510] = 0x55;
    s[511] = 0xaa;
    let (sig, lab, kind, ty): (usize, usize, usize, &[u8]) = if fat32 {
        (66, 71, 82, b"FAT32   ")
    } else {
        s[22] = 32; // sectors per FAT: not FAT32
        (38, 43, 54, b"FAT16   ")
    };
    s[sig] = 0x29;
    let mut padded = format!("{label:<11}").into_bytes();
    padded.truncate(11);
    s[lab..lab + 11].copy_from_slice(&padded);
    s[kind..kind + 8].copy_from_slice(ty);
    s
}

#[test]
fn reads_labels() {
    let t = TestDir::new("fatlabel");
    let p = t.path().join("dev");
    for (label, fat32) in [("KILN-BOOT", true), ("KILN-ESP", false), ("NO NAME", false)] {
        fs::write(&p, fat_sector(label, fat32)).unwrap();
        assert_eq!(fat_label(&p).as_deref(), Some(label));
    }
    fs::write(&p, vec![0u8; 512]).unwrap();
    assert_eq!(fat_label(&p), None);
    fs::write(&p, b"short").unwrap();
    assert_eq!(fat_label(&p), None);
}

#[test]
fn gpt_esp_is_mounted_read_and_unmounted() {
    let f = FakeRoot::new("bp-gpt");
    assert_eq!(
        f.source(false).fetch(f.root()).unwrap(),
        None,
        "no sysfs at all"
    );
    f.partition("vda1", Some("kiln-esp"), &[0; 512], "254:1");
    f.partition("vda2", Some("kiln-root-a"), &[0; 512], "254:2");
    assert_eq!(
        f.source(false).fetch(f.root()).unwrap(),
        None,
        "no node.yaml on it"
    );
    assert_eq!(f.log(), ["mount vda1 vfat", "unmount"]);
    fs::write(f.path("/content/NODE.YAML"), "role: server\n").unwrap();
    let got = f.source(false).fetch(f.root()).unwrap();
    assert_eq!(got.as_deref(), Some(&b"role: server\n"[..]));
    assert_eq!(
        f.log(),
        ["mount vda1 vfat", "unmount", "mount vda1 vfat", "unmount"]
    );
    // The private mount point is gone again.
    assert_eq!(fs::read_dir(f.path("/run/kiln")).unwrap().count(), 0);
}

#[test]
fn mbr_boot_partition_by_label() {
    let f = FakeRoot::new("bp-mbr");
    f.partition("mmcblk0p1", None, &fat_sector("KILN-BOOT", true), "179:1");
    f.partition("mmcblk0p2", None, &[0; 512], "179:2");
    fs::write(f.path("/content/node.yaml"), "role: agent\n").unwrap();
    let part = locate(f.root()).unwrap().unwrap();
    assert_eq!(
        part,
        Partition {
            dev: "/dev/mmcblk0p1".into(),
            dev_number: Some("179:1".into())
        }
    );
    assert!(f.source(false).fetch(f.root()).unwrap().is_some());
}

#[test]
fn already_mounted_is_read_in_place() {
    let f = FakeRoot::new("bp-mounted");
    f.partition("vda1", Some("kiln-esp"), &[0; 512], "254:1");
    fs::create_dir_all(f.path("/boot/efi dir")).unwrap();
    fs::write(f.path("/boot/efi dir/node.yaml"), "role: server\n").unwrap();
    fs::create_dir_all(f.path("/proc/self")).unwrap();
    fs::write(
        f.path("/proc/self/mountinfo"),
        "22 1 0:21 / /proc rw - proc proc rw\n\
         40 1 254:1 / /boot/efi\\040dir ro,relatime - vfat /dev/vda1 ro\n",
    )
    .unwrap();
    assert!(f.source(false).fetch(f.root()).unwrap().is_some());
    assert!(f.log().is_empty(), "no mount: {:?}", f.log());
}

#[test]
fn broken_and_ambiguous() {
    let f = FakeRoot::new("bp-broken");
    f.partition("vda1", Some("kiln-esp"), &[0; 512], "254:1");
    let err = f.source(true).fetch(f.root()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading /dev/vda1 (the boot partition, mounted read-only as vfat): \
         No such device (os error 19)"
    );
    assert_eq!(fs::read_dir(f.path("/run/kiln")).unwrap().count(), 0);
    f.partition("sda1", Some("kiln-esp"), &[0; 512], "8:1");
    let err = locate(f.root()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading the boot partition: 2 partitions look like it (/dev/sda1, /dev/vda1); \
         remove the other kiln disk"
    );
}

#[test]
fn oversized_file_is_refused() {
    let t = TestDir::new("bp-big");
    fs::write(
        t.path().join("node.yaml"),
        vec![b'#'; (mount::MAX_FILE_SIZE + 1) as usize],
    )
    .unwrap();
    let err = read_config(t.path(), "/dev/vda1").unwrap_err();
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}

#[test]
fn pi_imager_files_next_to_config_txt() {
    let f = FakeRoot::new("bp-pi-imager");
    f.partition("mmcblk0p1", None, &fat_sector("KILN-BOOT", true), "179:1");
    let source = f.source(false);
    assert_eq!(source.customisation(f.root()).unwrap(), None, "no files");
    fs::write(
        f.path("/content/user-data"),
        "#cloud-config\nhostname: kiln-pi-3\n",
    )
    .unwrap();
    fs::write(
        f.path("/content/network-config"),
        "network: {version: 2, wifis: {wlan0: {access-points: {lab: {password: x}}}}}\n",
    )
    .unwrap();
    let c = source.customisation(f.root()).unwrap().unwrap();
    assert_eq!(c.hostname.as_deref(), Some("kiln-pi-3"));
    assert_eq!(c.wifi_ssids, ["lab"]);
    // Pi Imager's files alone are no node config.
    assert_eq!(source.fetch(f.root()).unwrap(), None);
    fs::write(f.path("/content/user-data"), "users: {pi: 1}\n").unwrap();
    let err = source.customisation(f.root()).unwrap_err().to_string();
    assert_eq!(
        err,
        "reading Raspberry Pi Imager's settings on /dev/mmcblk0p1: user-data users is not a \
         list; fix or delete the file"
    );
}
