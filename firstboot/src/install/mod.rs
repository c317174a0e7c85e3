//! The installer: `kiln-init` on a kiln installer stick (`kiln.install` on
//! the kernel command line) writes the kiln image it carries onto the
//! machine's own disk, then powers off. One console line per step, on the
//! serial console and the screen; a refusal says why and stops.
//!
//! The stick (`kiln build --installer`, builder `installer.rs`) holds:
//!
//! - `kiln-installer`: a FAT ESP with systemd-boot, the image's own kernel
//!   and initramfs (this same `kiln-init`), the payload map
//!   ([`payload::Map`], `kiln/payload.map`) and, if the user dropped one
//!   there, `node.yaml`;
//! - `kiln-payload`: the raw kiln disk image, byte for byte.
//!
//! Steps: find the stick's partitions; read the map and `node.yaml`
//! (validated: a broken config is refused before anything is written); let
//! the disks settle and pick the target ([`target`]); write and verify the
//! image ([`payload::install`]); re-read the target's partition table and
//! put `node.yaml` on its boot partition, where the node's first boot
//! finds it; power off.

pub mod payload;
pub mod target;

use std::convert::Infallible;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::datasource::boot_partition;
use crate::init::console::{say, Failure, OrFail, Step};
use crate::init::sys;
use crate::init::sysfs::{self, BlockDev, Lookup, CLASS_BLOCK};
use crate::layout;
use target::Rules;

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// Disks count as settled when the list has not changed for this long.
const SETTLE: Duration = Duration::from_secs(3);
const STICK_DIR: &str = "/run/kiln-installer";
const TARGET_DIR: &str = "/run/kiln-target";

/// One console line, also on the screen when the serial port is the
/// console (a NUC user may only have a monitor).
fn tell(msg: impl std::fmt::Display) {
    let line = format!("install: {msg}");
    say(&line);
    static SCREEN: OnceLock<Option<File>> = OnceLock::new();
    let screen = SCREEN.get_or_init(|| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty0")
            .ok()
    });
    if let Some(f) = screen {
        let _ = (&*f).write_all(format!("kiln-init: {line}\r\n").as_bytes());
    }
}

/// The whole install. Returns only with a failure (or a refusal).
pub fn run(rules: &Rules) -> Step<Infallible> {
    tell(format_args!(
        "kiln installer: target {}, wipe {}",
        rules.device.as_deref().unwrap_or("chosen by rule"),
        if rules.wipe { "allowed" } else { "no" }
    ));
    let (stick_esp, stick_payload) = find_stick()?;
    let boot_disk = sysfs::parent_disk(Path::new(CLASS_BLOCK), &stick_payload.sys_name)
        .or_fail("finding the installer's own disk", "is /sys mounted?")?;
    tell(format_args!(
        "booted from /dev/{boot_disk} (payload {})",
        stick_payload.dev_path()
    ));

    let (map, node) = read_stick(&stick_esp)?;
    tell(format_args!(
        "image: {} MiB, {} MiB of data in {} ranges",
        map.image_bytes >> 20,
        map.mapped_bytes() >> 20,
        map.ranges.len()
    ));
    let payload_bytes = sysfs::read_number(
        &Path::new(CLASS_BLOCK)
            .join(&stick_payload.sys_name)
            .join("size"),
    )
    .or_fail("reading the payload partition's size", "is /sys mounted?")?
        * 512;
    if payload_bytes < map.image_bytes {
        return Err(Failure::new(
            "checking the payload",
            format!(
                "its partition has {payload_bytes} bytes, the map says the image has {}",
                map.image_bytes
            ),
            "the stick is damaged or was not written whole; write the installer image again",
        ));
    }

    let disks = settled_disks()?;
    let (disk, lines) =
        target::choose(&disks, &boot_disk, map.image_bytes, rules).map_err(|why| {
            Failure::new(
                "refusing to install",
                why,
                "nothing was written; attach an empty disk, or name one with \
                 kiln.install.device= (and kiln.install.wipe to overwrite it) \
                 in the installer's loader/entries/kiln.conf",
            )
        })?;
    for line in &lines {
        tell(format_args!("disk {line}"));
    }
    tell(format_args!(
        "installing onto {} ({} MiB){}",
        disk.dev,
        disk.bytes >> 20,
        if disk.partitions.is_empty() {
            String::new()
        } else {
            format!(", wiping its partitions {}", disk.partitions.join(", "))
        }
    ));

    let mut source = File::open(stick_payload.dev_path()).or_fail(
        format!("opening the payload {}", stick_payload.dev_path()),
        "is the stick still there?",
    )?;
    // O_EXCL on a block device: refused while anything has it mounted.
    let mut dest = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(&disk.dev)
        .or_fail(
            format!("opening {} for writing", disk.dev),
            "is the disk in use or write-protected?",
        )?;
    let start = Instant::now();
    let mut shown = (false, 0u64);
    payload::install(&mut source, &mut dest, disk.bytes, &map, |p| {
        let (verifying, done, total) = match p {
            payload::Progress::Writing { done, total } => (false, done, total),
            payload::Progress::Verifying { done, total } => (true, done, total),
        };
        let tenth = done * 10 / total.max(1);
        if shown != (verifying, tenth) && (tenth > shown.1 || verifying != shown.0) {
            shown = (verifying, tenth);
            tell(format_args!(
                "{} {} of {} MiB ({:.0} s)",
                if verifying { "verified" } else { "written" },
                done >> 20,
                total >> 20,
                start.elapsed().as_secs_f32()
            ));
        }
    })
    .or_fail(
        format!("writing the image to {}", disk.dev),
        "the disk may be failing; the partition table is written last, so it does not boot half-written",
    )?;
    tell(format_args!(
        "image written and verified on {} in {:.0} s: every range read back matches its sha256, every gap is zeros",
        disk.dev,
        start.elapsed().as_secs_f32()
    ));
    sys::reread_partitions(&dest).or_fail(
        format!("re-reading the partition table of {}", disk.dev),
        "nothing should hold the new disk; power off and try again",
    )?;
    drop(dest);

    match node {
        Some(bytes) => put_node_config(&disk.name, &bytes)?,
        None => tell(
            "no node.yaml on the installer: the node uses the config baked into the image \
             or one found at boot",
        ),
    }
    nix::unistd::sync();
    tell(format_args!(
        "done: kiln installed on {}; remove the USB stick; powering off",
        disk.dev
    ));
    let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
        .expect_err("reboot only returns on failure");
    Err(Failure::new(
        "powering off",
        e,
        "the install is complete: switch the machine off by hand",
    ))
}

/// Waits for the stick's two partitions, found by GPT name.
fn find_stick() -> Step<(BlockDev, BlockDev)> {
    let names = [layout::INSTALLER_PARTITION, layout::PAYLOAD_PARTITION];
    let start = Instant::now();
    loop {
        let devs = sysfs::scan(Path::new(CLASS_BLOCK))
            .or_fail(format!("listing {CLASS_BLOCK}"), "is /sys mounted?")?;
        match sysfs::lookup(&devs, &names, |d| Path::new(&d.dev_path()).exists()) {
            Lookup::Found(found) => {
                let [esp, payload]: [BlockDev; 2] = found.try_into().map_err(|_| {
                    Failure::new("finding the stick", "wrong count", "this is a bug")
                })?;
                return Ok((esp, payload));
            }
            Lookup::Ambiguous(why) => {
                return Err(Failure::new(
                    "finding the installer's partitions",
                    why,
                    "attach only one kiln installer stick",
                ))
            }
            Lookup::Waiting(missing) if start.elapsed() >= WAIT => {
                return Err(Failure::new(
                    format!("finding partition {}", missing.join(" and ")),
                    format!(
                        "not found after {} s; block devices seen: {}",
                        WAIT.as_secs(),
                        sysfs::describe(&devs)
                    ),
                    "write the installer image to the stick again",
                ))
            }
            Lookup::Waiting(_) => std::thread::sleep(POLL),
        }
    }
}

/// The payload map and the validated `node.yaml` (if any) from the stick's
/// FAT partition, mounted read-only for the purpose.
fn read_stick(esp: &BlockDev) -> Step<(payload::Map, Option<Vec<u8>>)> {
    let dev = esp.dev_path();
    sys::mkdir_p(Path::new(STICK_DIR)).or_fail(format!("creating {STICK_DIR}"), "")?;
    sys::mount_fs(&dev, STICK_DIR, "vfat", MsFlags::MS_RDONLY, "").or_fail(
        format!("mounting the installer's partition {dev} (vfat)"),
        "check that vfat is in the initramfs module list",
    )?;
    let result = read_stick_files(Path::new(STICK_DIR), &dev);
    let _ = nix::mount::umount(STICK_DIR);
    result
}

fn read_stick_files(dir: &Path, dev: &str) -> Step<(payload::Map, Option<Vec<u8>>)> {
    let map_path = dir.join(layout::PAYLOAD_MAP);
    let text = fs::read_to_string(&map_path).or_fail(
        format!("reading {} on {dev}", layout::PAYLOAD_MAP),
        "write the installer image to the stick again",
    )?;
    let map = payload::Map::parse(&text).or_fail(
        format!("reading {} on {dev}", layout::PAYLOAD_MAP),
        "write the installer image to the stick again",
    )?;
    let node = boot_partition::read_config(dir, dev).or_fail(
        format!("reading node.yaml on {dev}"),
        "remove or fix node.yaml on the stick",
    )?;
    if let Some(bytes) = &node {
        let source = format!("node.yaml on the installer ({dev})");
        crate::config::parse_bytes(bytes, &source).map_err(|e| {
            Failure::new(
                "refusing to install",
                format!("the node config is invalid: {e}"),
                "nothing was written; fix node.yaml on the stick (kiln validate checks it)",
            )
        })?;
        tell(format_args!(
            "node.yaml on the installer is valid ({} bytes); it goes onto the target's boot partition",
            bytes.len()
        ));
    }
    Ok((map, node))
}

/// Polls the disks until the list stays the same for [`SETTLE`] (storage
/// drivers probe asynchronously), at most [`WAIT`].
fn settled_disks() -> Step<Vec<target::Disk>> {
    let start = Instant::now();
    let mut last: Option<(Vec<target::Disk>, Instant)> = None;
    loop {
        let disks = target::scan(Path::new("/"))
            .or_fail(format!("listing {CLASS_BLOCK}"), "is /sys mounted?")?;
        match &last {
            Some((prev, since)) if *prev == disks => {
                if since.elapsed() >= SETTLE || start.elapsed() >= WAIT {
                    return Ok(disks);
                }
            }
            _ => last = Some((disks, Instant::now())),
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `node.yaml` onto the new disk's boot partition, which the
/// node's first boot reads (datasource "boot partition node.yaml").
fn put_node_config(disk: &str, bytes: &[u8]) -> Step<()> {
    let class = Path::new(CLASS_BLOCK);
    let start = Instant::now();
    let esp = loop {
        let devs =
            sysfs::scan(class).or_fail(format!("listing {CLASS_BLOCK}"), "is /sys mounted?")?;
        let found = devs.into_iter().find(|d| {
            d.partname.as_deref() == Some(layout::ESP_PARTITION)
                && sysfs::parent_disk(class, &d.sys_name).ok().as_deref() == Some(disk)
                && Path::new(&d.dev_path()).exists()
        });
        match found {
            Some(d) => break d,
            None if start.elapsed() >= WAIT => {
                return Err(Failure::new(
                    format!("finding partition {} on /dev/{disk}", layout::ESP_PARTITION),
                    "the kernel did not show it after re-reading the table",
                    "the image is written; copy node.yaml onto its boot partition by hand",
                ))
            }
            None => std::thread::sleep(POLL),
        }
    };
    let dev = esp.dev_path();
    let check = "the image is written; copy node.yaml onto its boot partition by hand";
    sys::mkdir_p(Path::new(TARGET_DIR)).or_fail(format!("creating {TARGET_DIR}"), check)?;
    sys::mount_fs(&dev, TARGET_DIR, "vfat", MsFlags::empty(), "")
        .or_fail(format!("mounting the new boot partition {dev}"), check)?;
    let path = Path::new(TARGET_DIR).join(boot_partition::NODE_FILE);
    let written =
        File::create(&path).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let unmounted = nix::mount::umount(TARGET_DIR);
    written.or_fail(format!("writing node.yaml on {dev}"), check)?;
    unmounted.or_fail(format!("unmounting {dev}"), check)?;
    tell(format_args!(
        "node.yaml written to {dev} (the node's boot partition)"
    ));
    Ok(())
}
