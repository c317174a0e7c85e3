//! The VMware datasource on fake roots: the DMI guard, guestinfo through
//! the simulated backdoor host, the ISO transport CD with a fake mounter,
//! and its place among the other datasources.

use std::fs;

use super::fake_host::FakeHost;
use super::tests::fixture;
use super::*;
use crate::datasource::mount::fake::FakeRoot;
use crate::datasource::{self as ds, Baked, FwCfg};
use crate::init::testdir::TestDir;

const VMWARE: &str = "VMware, Inc.\n";

/// A fake root with CD-ROM drives; `/content` is what the CD holds.
trait Cds {
    /// A block device in sysfs (SCSI `scsi_type`) and its `/dev` node.
    fn block(&self, name: &str, scsi_type: &str, sectors: u64, content: &[u8]);
    /// The CD `sr0` with an ISO 9660 disc labelled `OVF ENV` holding
    /// `ovf-env.xml` (when given).
    fn cd(&self, ovf_env: Option<&[u8]>);
    fn source(&self, guestinfo: Box<OpenGuestInfo>, fail_mount: bool) -> Vmware;
}

impl Cds for FakeRoot {
    fn block(&self, name: &str, scsi_type: &str, sectors: u64, content: &[u8]) {
        let sys = format!("/sys/class/block/{name}");
        let uevent = format!("MAJOR=11\nMINOR=0\nDEVNAME={name}\nDEVTYPE=disk\n");
        self.put(&format!("{sys}/uevent"), uevent.as_bytes());
        self.put(&format!("{sys}/size"), format!("{sectors}\n").as_bytes());
        self.put(&format!("{sys}/dev"), b"11:0\n");
        self.put(&format!("{sys}/device/type"), scsi_type.as_bytes());
        self.put(&format!("/dev/{name}"), content);
    }
    fn cd(&self, ovf_env: Option<&[u8]>) {
        self.block("sr0", "5\n", 736, &iso_image("OVF ENV"));
        if let Some(xml) = ovf_env {
            self.put("/content/ovf-env.xml", xml);
        }
    }
    fn source(&self, guestinfo: Box<OpenGuestInfo>, fail_mount: bool) -> Vmware {
        Vmware {
            guestinfo,
            mounter: self.mounter(fail_mount),
        }
    }
}

/// A guestinfo opener that must never run (the DMI guard's test).
fn must_not_open() -> Box<OpenGuestInfo> {
    Box::new(|| panic!("the backdoor was used on a machine that is not VMware"))
}

/// A guestinfo opener backed by a simulated host with `values`.
fn host(values: &[(&str, &[u8])]) -> Box<OpenGuestInfo> {
    let values: Vec<(String, String)> = values
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    Box::new(move || {
        let mut h = FakeHost::default();
        h.values = values.iter().cloned().collect();
        Ok(Some(Box::new(Rpci(h)) as Box<dyn GuestInfo>))
    })
}

/// The first 34 KiB of an ISO 9660 image: its primary volume descriptor.
fn iso_image(label: &str) -> Vec<u8> {
    let mut image = vec![0u8; 34 * 1024];
    let pvd = &mut image[32 * 1024..];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    let padded = format!("{label:<32}");
    pvd[40..72].copy_from_slice(padded.as_bytes());
    image
}

fn find(src: &Vmware, root: &Path) -> (Result<Option<Found>, FetchError>, String) {
    let mut console = Vec::new();
    let r = src.find(root, &mut console);
    (r, String::from_utf8(console).unwrap())
}

#[test]
fn the_dmi_guards_the_backdoor() {
    let f = FakeRoot::new("vmw-dmi");
    assert!(!is_vmware(f.root()), "no DMI at all");
    let src = f.source(must_not_open(), false);
    assert_eq!(src.fetch(f.root()).unwrap(), None);
    f.put(DMI_SYS_VENDOR, b"QEMU\n");
    assert!(!is_vmware(f.root()));
    assert_eq!(src.fetch(f.root()).unwrap(), None);
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    assert!(is_vmware(f.root()));
}

#[test]
fn ovf_env_from_guestinfo() {
    let f = FakeRoot::new("vmw-ovfenv");
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    let xml = fixture("agent-dhcp");
    let src = f.source(host(&[(OVF_ENV_KEY, &xml)]), false);
    let (found, console) = find(&src, f.root());
    let found = found.unwrap().unwrap();
    assert_eq!(found.source, "VMware guestinfo.ovfEnv");
    let doc = crate::config::parse_bytes(&found.bytes, &found.source).unwrap();
    let c = doc.single().unwrap();
    assert_eq!(c.role, crate::config::Role::Agent);
    assert_eq!(c.hostname.as_deref(), Some("k3s-worker-1"));
    assert_eq!(console, "");
    assert!(f.log().is_empty(), "no CD was needed: {:?}", f.log());
}

#[test]
fn plain_guestinfo_keys() {
    let f = FakeRoot::new("vmw-plain");
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    let src = f.source(
        host(&[
            ("guestinfo.kiln.role", b"agent"),
            ("guestinfo.kiln.server", b"https://10.0.0.21:6443"),
            ("guestinfo.kiln.token", b"K10abc::server:secret"),
            ("guestinfo.kiln.ntp", b""),
        ]),
        false,
    );
    let found = find(&src, f.root()).0.unwrap().unwrap();
    assert_eq!(found.source, "VMware guestinfo.kiln.*");
    assert_eq!(
        String::from_utf8(found.bytes).unwrap(),
        "# node.yaml made by kiln-firstboot from VMware guestinfo.kiln.*\n\
         role: \"agent\"\nserver: \"https://10.0.0.21:6443\"\ntoken: \"K10abc::server:secret\"\n"
    );
    let b64 = b"cm9sZTogc2VydmVyCg==";
    let src = f.source(host(&[("guestinfo.kiln.node-yaml", b64)]), false);
    let found = find(&src, f.root()).0.unwrap().unwrap();
    assert_eq!(
        found.source,
        "VMware guestinfo.kiln.*, guestinfo.kiln.node-yaml"
    );
    assert_eq!(found.bytes, b"role: server\n");
    // No kiln key at all: nothing here, and nothing said.
    let src = f.source(host(&[("guestinfo.other", b"x")]), false);
    let (found, console) = find(&src, f.root());
    assert!(found.unwrap().is_none());
    assert_eq!(console, "");
}

#[test]
fn unfilled_properties_fall_through_to_the_cd() {
    let f = FakeRoot::new("vmw-unfilled");
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    f.cd(Some(&fixture("iso-minimal")));
    let src = f.source(host(&[(OVF_ENV_KEY, &fixture("not-filled"))]), false);
    let (found, console) = find(&src, f.root());
    assert_eq!(
        found.unwrap().unwrap().source,
        "VMware ovf-env.xml on /dev/sr0"
    );
    assert_eq!(
        console,
        "kiln: VMware guestinfo.ovfEnv: the vApp properties are not filled in \
         (only the wizard's defaults), trying the next source\n"
    );
}

#[test]
fn broken_guestinfo_stops() {
    let f = FakeRoot::new("vmw-gi-broken");
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    f.cd(Some(&fixture("iso-minimal")));
    let refuse: Box<OpenGuestInfo> = Box::new(|| Err(io::Error::other("ioperm: EIO")));
    let err = find(&f.source(refuse, false), f.root()).0.unwrap_err();
    assert_eq!(err.to_string(), "reading VMware guestinfo: ioperm: EIO");
    let garbled: Box<OpenGuestInfo> = Box::new(|| {
        let mut h = FakeHost::default();
        h.garbage_replies = true;
        Ok(Some(Box::new(Rpci(h)) as Box<dyn GuestInfo>))
    });
    let err = find(&f.source(garbled, false), f.root()).0.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading VMware guestinfo guestinfo.ovfEnv: "),
        "{err}"
    );
    let xml = fixture("malformed");
    let err = find(&f.source(host(&[(OVF_ENV_KEY, &xml)]), false), f.root())
        .0
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "reading VMware guestinfo.ovfEnv: the OVF environment is not well-formed XML"
        ),
        "{err}"
    );
    // No backdoor answers (or not x86_64): the CD still counts.
    let none: Box<OpenGuestInfo> = Box::new(|| Ok(None));
    assert!(find(&f.source(none, false), f.root()).0.unwrap().is_some());
}

#[test]
fn iso_transport_off_vmware() {
    let f = FakeRoot::new("vmw-iso");
    f.put(DMI_SYS_VENDOR, b"QEMU\n");
    f.cd(Some(&fixture("iso-minimal")));
    let src = f.source(must_not_open(), false);
    let (found, console) = find(&src, f.root());
    let found = found.unwrap().unwrap();
    assert_eq!(found.source, "VMware ovf-env.xml on /dev/sr0");
    assert!(String::from_utf8(found.bytes)
        .unwrap()
        .contains("cluster-init: true\n"));
    assert_eq!(console, "");
    assert_eq!(f.log(), ["mount sr0 iso9660", "unmount"]);
    assert_eq!(fs::read_dir(f.path("/run/kiln")).unwrap().count(), 0);
    // Plain ISO 9660 names, as Linux shows them without Rock Ridge/Joliet.
    fs::rename(
        f.path("/content/ovf-env.xml"),
        f.path("/content/ovf_env.xml"),
    )
    .unwrap();
    assert!(src.fetch(f.root()).unwrap().is_some());
}

#[test]
fn no_ovf_env_cd() {
    let f = FakeRoot::new("vmw-iso-absent");
    let src = f.source(must_not_open(), false);
    assert_eq!(src.fetch(f.root()).unwrap(), None, "no sysfs");
    // A disk, an empty drive, a drive with a non-ISO disc: none is looked in.
    f.block("sda", "0\n", 1 << 20, &iso_image("DATA"));
    f.block("sr1", "5\n", 0, b"");
    f.block("sr2", "5\n", 100, &vec![0u8; 40 * 1024]);
    assert_eq!(src.fetch(f.root()).unwrap(), None);
    assert!(f.log().is_empty(), "{:?}", f.log());
    // An ISO without ovf-env.xml (an installer CD left in): mounted, read,
    // unmounted, nothing.
    f.cd(None);
    fs::write(f.path("/content/README.TXT"), "hello").unwrap();
    assert_eq!(src.fetch(f.root()).unwrap(), None);
    assert_eq!(f.log(), ["mount sr0 iso9660", "unmount"]);
}

#[test]
fn broken_cd_stops() {
    let f = FakeRoot::new("vmw-iso-broken");
    f.cd(Some(b"<Environment/>"));
    let err = f.source(must_not_open(), true).fetch(f.root()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading /dev/sr0 (the OVF environment CD, mounted read-only as iso9660): \
         No such device (os error 19)"
    );
    fs::remove_file(f.path("/content/ovf-env.xml")).unwrap();
    fs::create_dir(f.path("/content/OVF-ENV.XML")).unwrap();
    let err = f
        .source(must_not_open(), false)
        .fetch(f.root())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading ovf-env.xml on /dev/sr0: "),
        "{err}"
    );
    assert_eq!(fs::read_dir(f.path("/run/kiln")).unwrap().count(), 0);
}

#[test]
fn reads_iso_labels() {
    let t = TestDir::new("vmw-label");
    let p = t.path().join("disc");
    fs::write(&p, iso_image("OVF ENV")).unwrap();
    assert_eq!(iso::iso_label(&p).unwrap().as_deref(), Some("OVF ENV"));
    fs::write(&p, vec![0u8; 40 * 1024]).unwrap();
    assert_eq!(iso::iso_label(&p).unwrap(), None);
    fs::write(&p, b"short").unwrap();
    assert_eq!(iso::iso_label(&p).unwrap(), None);
}

#[test]
fn place_in_the_order() {
    let f = FakeRoot::new("vmw-order");
    let sources = |f: &FakeRoot| -> Vec<Box<dyn Datasource>> {
        vec![
            Box::new(FwCfg),
            Box::new(f.source(must_not_open(), false)),
            Box::new(Baked),
        ]
    };
    f.put(crate::layout::BAKED_NODE_CONFIG, b"role: agent\n");
    // Nothing filled in on the CD: the baked config, and a line saying why.
    f.cd(Some(&fixture("not-filled")));
    let mut console = Vec::new();
    let found = ds::find(&sources(&f), f.root(), &mut console)
        .unwrap()
        .unwrap();
    assert_eq!(found.source, "/usr/lib/kiln/node.yaml");
    assert!(String::from_utf8(console)
        .unwrap()
        .contains("not filled in"));
    // Filled in: the CD wins over what is baked in.
    f.put("/content/ovf-env.xml", &fixture("iso-minimal"));
    let found = ds::find(&sources(&f), f.root(), &mut io::sink())
        .unwrap()
        .unwrap();
    assert_eq!(found.source, "VMware ovf-env.xml on /dev/sr0");
    // Broken: the search stops, the baked config is not used.
    f.put("/content/ovf-env.xml", &fixture("bad-role"));
    let err = ds::find(&sources(&f), f.root(), &mut io::sink()).unwrap_err();
    assert!(err.to_string().contains("guestinfo.kiln.role"), "{err}");
    // QEMU's fw_cfg comes first.
    f.put(
        "/sys/firmware/qemu_fw_cfg/by_name/opt/io.kiln/node.yaml/raw",
        b"role: server\n",
    );
    let found = ds::find(&sources(&f), f.root(), &mut io::sink())
        .unwrap()
        .unwrap();
    assert_eq!(found.source, "fw_cfg opt/io.kiln/node.yaml");
}

#[test]
fn first_boot_from_the_cd() {
    use crate::firstboot::{apply, Options};
    let f = FakeRoot::new("vmw-apply");
    f.cd(Some(&fixture("bad-role")));
    let sources: Vec<Box<dyn Datasource>> = vec![Box::new(f.source(must_not_open(), false))];
    let opts = Options::with_root(f.root());
    let mut out = Vec::new();
    let err = apply(&opts, &sources, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading VMware ovf-env.xml on /dev/sr0: guestinfo.kiln.role: unknown variant \
         `master`, expected `server` or `agent` (hint: role is `server` or `agent`)"
    );
    assert!(out.is_empty());
    assert!(!f.path("/var/lib/kiln").exists(), "nothing written");

    f.put("/content/ovf-env.xml", &fixture("iso-minimal"));
    let config = apply(&opts, &sources, &mut out).unwrap();
    assert_eq!(config.hostname.as_deref(), Some("kiln-ova"));
    let console = String::from_utf8(out).unwrap();
    assert!(
        console.starts_with("kiln: node config from VMware ovf-env.xml on /dev/sr0\n"),
        "{console}"
    );
    let saved = fs::read_to_string(f.path(crate::layout::PERSISTED_NODE_CONFIG)).unwrap();
    assert!(
        saved.starts_with(
            "# node.yaml made by kiln-firstboot from VMware ovf-env.xml on /dev/sr0\n"
        ),
        "{saved}"
    );
}

#[test]
fn whole_node_yaml_in_guestinfo_with_its_encodings() {
    use std::io::Write;
    let f = FakeRoot::new("vmw-node-key");
    f.put(DMI_SYS_VENDOR, VMWARE.as_bytes());
    let yaml = b"role: agent\nserver: https://10.0.0.1:6443\ntoken: K10x::server:y\n";
    let b64 = |data: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(data)
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(yaml).unwrap();
    let gz = gz.finish().unwrap();
    for (value, encoding) in [
        (yaml.to_vec(), ""),
        (b64(yaml).into_bytes(), "base64"),
        (b64(&gz).into_bytes(), "gzip+base64"),
        (b64(&gz).into_bytes(), "GZ+B64"),
    ] {
        let mut values: Vec<(&str, &[u8])> = vec![(NODE_KEY, &value)];
        if !encoding.is_empty() {
            values.push((NODE_ENCODING_KEY, encoding.as_bytes()));
        }
        let src = f.source(host(&values), false);
        let (found, console) = find(&src, f.root());
        let found = found.unwrap().unwrap();
        assert_eq!(found.source, "VMware guestinfo.kiln.node", "{encoding}");
        assert_eq!(found.bytes, yaml, "{encoding}");
        assert_eq!(console, "");
    }

    // The OVF environment comes first: a filled-in one wins.
    let src = f.source(
        host(&[(OVF_ENV_KEY, &fixture("agent-dhcp")), (NODE_KEY, yaml)]),
        false,
    );
    assert_eq!(
        find(&src, f.root()).0.unwrap().unwrap().source,
        "VMware guestinfo.ovfEnv"
    );

    // Broken values stop the boot with a line naming the key; the token
    // never shows.
    let secret_gz = b64(b"not gzip, token K10x::server:y");
    for (values, want) in [
        (
            vec![(NODE_KEY, &b"%%%"[..]), (NODE_ENCODING_KEY, &b"base64"[..])],
            "guestinfo.kiln.node is not base64",
        ),
        (
            vec![
                (NODE_KEY, secret_gz.as_bytes()),
                (NODE_ENCODING_KEY, &b"gzip+base64"[..]),
            ],
            "guestinfo.kiln.node is not gzip data",
        ),
        (
            vec![(NODE_KEY, &yaml[..]), (NODE_ENCODING_KEY, &b"zstd"[..])],
            "guestinfo.kiln.node.encoding is \"zstd\"; use base64 or gzip+base64",
        ),
        (
            vec![
                (NODE_KEY, &yaml[..]),
                ("guestinfo.kiln.hostname", &b"n1"[..]),
            ],
            "guestinfo.kiln.node holds a whole node.yaml, but guestinfo.kiln.hostname set too",
        ),
    ] {
        let src = f.source(host(&values), false);
        let err = find(&src, f.root()).0.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("K10x"), "the token leaked: {err}");
    }
}
