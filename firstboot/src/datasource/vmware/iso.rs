//! The OVF environment's ISO transport: vSphere (and the QEMU boot test)
//! attaches a CD whose root holds `ovf-env.xml`, volume label usually
//! `OVF ENV`. [`locate`] finds CD-ROM drives with an ISO 9660 disc in sysfs
//! and `/dev` under a root; [`read`] mounts each read-only (the shared
//! [`mount`] helper) until one has the file.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::datasource::mount::{self, Mounter, Volume};
use crate::datasource::{fetch_err, under, FetchError};
use crate::init::sysfs::{self, BlockDev, CLASS_BLOCK};

/// The file the transport carries.
pub const FILE: &str = "ovf-env.xml";
/// The names it may have: plain ISO 9660 (no Rock Ridge, no Joliet) has
/// no `-` in names, so a tool writes `OVF_ENV.XML`, and Linux shows that
/// as `ovf_env.xml`. cloud-init's OVF datasource looks for the same two.
const NAMES: &[&str] = &[FILE, "ovf_env.xml"];
/// SCSI peripheral type of a CD/DVD drive (`device/type` in sysfs).
const TYPE_ROM: &str = "5";
/// Where ISO 9660's primary volume descriptor starts.
const PVD_OFFSET: u64 = 16 * 2048;

/// A CD-ROM drive with an ISO 9660 disc in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disc {
    /// `/dev/sr0`.
    pub dev: String,
    /// `major:minor`, to find it in mountinfo.
    pub dev_number: Option<String>,
    /// The volume label (`OVF ENV`).
    pub label: String,
}

/// Every CD-ROM drive (`sr*`, or SCSI type 5) holding an ISO 9660 disc, in
/// name order. A drive without a disc is skipped; one that cannot be read
/// is an error.
pub fn locate(root: &Path) -> Result<Vec<Disc>, FetchError> {
    let class_block = under(root, CLASS_BLOCK);
    let devs = match sysfs::scan(&class_block) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fetch_err(CLASS_BLOCK, e)),
    };
    let mut discs = Vec::new();
    for d in devs.iter().filter(|d| is_cdrom(&class_block, d)) {
        let sys = class_block.join(&d.sys_name);
        if sysfs::read_number(&sys.join("size")).ok() == Some(0) {
            continue; // no disc
        }
        let label = match iso_label(&under(root, &d.dev_path())) {
            Ok(Some(label)) => label,
            Ok(None) => continue, // not ISO 9660
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => continue, // no disc
            Err(e) => return Err(fetch_err(format!("{} (a CD-ROM drive)", d.dev_path()), e)),
        };
        discs.push(Disc {
            dev: d.dev_path(),
            dev_number: fs::read_to_string(sys.join("dev"))
                .ok()
                .map(|s| s.trim().to_owned()),
            label,
        });
    }
    Ok(discs)
}

fn is_cdrom(class_block: &Path, d: &BlockDev) -> bool {
    d.devtype == "disk"
        && (d.sys_name.starts_with("sr")
            || fs::read_to_string(class_block.join(&d.sys_name).join("device/type"))
                .is_ok_and(|t| t.trim() == TYPE_ROM))
}

/// The volume label when `dev` holds ISO 9660 (a primary volume
/// descriptor, `CD001`, at 32 KiB); `Ok(None)` for anything else.
pub fn iso_label(dev: &Path) -> io::Result<Option<String>> {
    let mut f = fs::File::open(dev)?;
    let mut pvd = [0u8; 2048];
    f.seek(SeekFrom::Start(PVD_OFFSET))?;
    match f.read_exact(&mut pvd) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Ok(None);
    }
    let label = String::from_utf8_lossy(&pvd[40..72]);
    Ok(Some(label.trim_end().to_owned()))
}

/// `ovf-env.xml` from the first disc that has one: the drive and the bytes.
pub fn read(root: &Path, mounter: &dyn Mounter) -> Result<Option<(String, Vec<u8>)>, FetchError> {
    for disc in locate(root)? {
        let vol = Volume {
            dev: &disc.dev,
            dev_number: disc.dev_number.as_deref(),
            fstype: "iso9660",
            what: "the OVF environment CD",
            mount_name: "ovf-env",
        };
        let what = format!("{FILE} on {}", disc.dev);
        let found = mount::read_from(root, &vol, mounter, |dir| {
            mount::read_named(dir, NAMES, &what)
        })?;
        if let Some(bytes) = found {
            return Ok(Some((disc.dev, bytes)));
        }
    }
    Ok(None)
}
