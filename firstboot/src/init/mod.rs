//! `kiln-init`: `/init` of the initramfs, PID 1 until it switches root.
//!
//! One console line per step (see [`console`]), in this order:
//!
//! 1. mount `/proc`, `/sys`, `/dev` (devtmpfs), then print on every
//!    console of the command line ([`crate::consoles`]);
//! 2. read the `kiln.*` options from `/proc/cmdline` ([`cmdline`]);
//! 3. load the initramfs modules, in the listed order ([`modules`]); on an
//!    installer stick (`kiln.install`), run [`crate::install`] instead of
//!    the steps below;
//! 4. wait (up to 30 s) for the root and data partitions, found by GPT
//!    partition name, or on an MBR disk by number on the disk whose
//!    signature `kiln.mbr=` names ([`sysfs`]); meanwhile repair a kiln disk
//!    whose primary GPT a power cut broke (`repair.rs`);
//! 5. grow the data partition to the end of the disk
//!    ([`crate::gpt::grow_last_partition`] or [`crate::mbr::grow_last_partition`],
//!    `grow.rs`) and tell the kernel (`BLKPG`);
//! 6. mount the root (squashfs, read-only) at `/sysroot`, the data partition
//!    (ext4) at `/sysroot/var`, and grow that filesystem online ([`ext4`]);
//! 7. mount the `/etc` overlay, its upper layer on the data partition;
//! 8. move `/proc`, `/sys`, `/dev` into `/sysroot`, switch root, and execute
//!    init ([`sys::switch_root`]).
//!
//! Every step is idempotent and checks before it writes, so a power cut at
//! any point is finished by the next boot. Any failure prints
//! `kiln-init: ERROR: <what>: <why>; <what to check>` and stops there for
//! good: PID 1 must never exit.

pub mod cmdline;
pub mod console;
pub mod ext4;
mod grow;
pub mod modules;
mod repair;
pub mod sys;
pub mod sysfs;
#[cfg(test)]
pub(crate) mod testdir;

use std::convert::Infallible;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::layout;
use cmdline::Options;
use console::{debug, say, Failure, OrFail, Step};
use sysfs::{BlockDev, Lookup};

const SYSROOT: &str = "/sysroot";
const MIB: u64 = 1 << 20;
const PARTITION_TIMEOUT: Duration = Duration::from_secs(30);
const PARTITION_POLL: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The whole of `kiln-init`.
pub fn main() -> ! {
    // With panic=abort the hook still runs; it never returns, so PID 1 never
    // aborts.
    std::panic::set_hook(Box::new(|info| {
        say(format_args!(
            "ERROR: internal error: {info}; this is a bug in kiln-init"
        ));
        emergency()
    }));
    if nix::unistd::getpid().as_raw() != 1 {
        say(
            "ERROR: not running as PID 1: kiln-init mounts filesystems and rewrites \
             partition tables; it only runs as /init of a kiln initramfs",
        );
        std::process::exit(1);
    }
    match boot() {
        Ok(never) => match never {},
        Err(failure) => {
            say(failure);
            emergency()
        }
    }
}

fn emergency() -> ! {
    nix::unistd::sync();
    say("emergency: boot stopped, nothing was changed on disk after this point");
    sys::sleep_forever()
}

fn boot() -> Step<Infallible> {
    say(format_args!(
        "starting (kiln-node {})",
        env!("CARGO_PKG_VERSION")
    ));
    mount_api_filesystems()?;
    let text = fs::read_to_string("/proc/cmdline")
        .or_fail("reading /proc/cmdline", "is /proc mounted?")?;
    let opts = cmdline::parse(&text).or_fail(
        "reading the kiln.* options on the kernel command line",
        "fix them in the boot loader entry (or cmdline.txt)",
    )?;
    console::set_debug(opts.debug);
    say(format_args!(
        "options: root={} data={} init={} debug={}{}",
        opts.root,
        opts.data,
        opts.init,
        if opts.debug { "on" } else { "off" },
        opts.mbr
            .map(|id| format!(" mbr={}", crate::mbr::disk_id_text(id)))
            .unwrap_or_default()
    ));
    debug(format_args!("kernel command line: {}", text.trim()));
    load_modules();
    if let Some(rules) = &opts.install {
        return crate::install::run(rules);
    }
    let (root, data) = find_partitions(&opts)?;
    grow::data_partition(&data, &opts.data)?;
    mount_root_and_data(&root, &data)?;
    grow::data_filesystem(&data, &format!("{SYSROOT}/var"))?;
    mount_etc_overlay()?;
    switch_root(&opts.init)
}

/// Step 1.
fn mount_api_filesystems() -> Step<()> {
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (dir, fstype, flags, data) in [
        ("/proc", "proc", hidden, ""),
        ("/sys", "sysfs", hidden, ""),
        ("/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
    ] {
        sys::mkdir_p(Path::new(dir))
            .or_fail(format!("creating {dir}"), "the initramfs must be writable")?;
        match sys::mount_fs(fstype, dir, fstype, flags, data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => {
                return Err(Failure::new(
                    format!("mounting {fstype} on {dir}"),
                    e,
                    "the kernel needs CONFIG_PROC_FS, CONFIG_SYSFS and CONFIG_DEVTMPFS",
                ))
            }
        }
    }
    console::reopen();
    say("mounted /proc, /sys and /dev");
    Ok(())
}

/// Step 3. Failures are warnings: a missing driver shows up clearly as a
/// partition not found in step 4.
fn load_modules() {
    let list_path = Path::new("/").join(layout::INITRAMFS_MODULE_LIST);
    let text = match fs::read_to_string(&list_path) {
        Ok(t) => t,
        Err(e) => {
            say(format_args!(
                "WARNING: no module list at {}: {e}; loading none",
                list_path.display()
            ));
            return;
        }
    };
    let list = modules::parse_list(&text);
    let start = Instant::now();
    let report = modules::load_all(Path::new("/"), &list, |path| {
        let result = modules::finit_module(path);
        debug(format_args!("module {}: {result:?}", path.display()));
        result
    });
    for module in &report.out_of_order {
        say(format_args!(
            "WARNING: module /{module} loaded only on a later pass: \
             the module list is not in dependency order"
        ));
    }
    for (module, errno) in &report.failed {
        let exists = Path::new("/").join(module.trim_start_matches('/')).exists();
        say(format_args!(
            "WARNING: loading module /{module} failed: {}; going on",
            modules::explain(*errno, exists)
        ));
    }
    say(format_args!(
        "loaded {} modules ({} already loaded, {} failed) in {:.1} s",
        report.loaded,
        report.already,
        report.failed.len(),
        start.elapsed().as_secs_f32()
    ));
}

/// Step 4: polls sysfs until both partitions (and their `/dev` nodes) show
/// up, or the timeout.
fn find_partitions(opts: &Options) -> Step<(BlockDev, BlockDev)> {
    let class = Path::new(sysfs::CLASS_BLOCK);
    let names = [opts.root.as_str(), opts.data.as_str()];
    let start = Instant::now();
    let mut next_progress = PROGRESS_EVERY;
    let mut checked_disks: Vec<String> = Vec::new();
    loop {
        let mut devs = sysfs::scan(class)
            .or_fail(format!("listing {}", class.display()), "is /sys mounted?")?;
        if let Some(id) = opts.mbr {
            sysfs::name_mbr_partitions(class, &mut devs, id, read_sector0);
        }
        match sysfs::lookup(&devs, &names, |d| Path::new(&d.dev_path()).exists()) {
            Lookup::Found(found) => {
                let Ok([root, data]) = <[BlockDev; 2]>::try_from(found) else {
                    return Err(Failure::new(
                        "finding partitions",
                        "lookup returned the wrong count",
                        "this is a bug",
                    ));
                };
                say(format_args!(
                    "found {} at {} and {} at {} ({:.1} s)",
                    opts.root,
                    root.dev_path(),
                    opts.data,
                    data.dev_path(),
                    start.elapsed().as_secs_f32()
                ));
                debug(format_args!("block devices: {}", sysfs::describe(&devs)));
                return Ok((root, data));
            }
            Lookup::Ambiguous(why) => {
                return Err(Failure::new(
                    "finding partitions",
                    why,
                    "detach the other disk that holds a kiln image, then reboot",
                ))
            }
            Lookup::Waiting(missing) => {
                for disk in devs.iter().filter(|d| d.devtype == "disk") {
                    if !checked_disks.contains(&disk.sys_name)
                        && repair::check_disk(disk, &names, &opts.data)?
                    {
                        checked_disks.push(disk.sys_name.clone());
                    }
                }
                let waited = start.elapsed();
                if waited >= PARTITION_TIMEOUT {
                    return Err(Failure::new(
                        format!("finding partition {}", missing.join(" and ")),
                        format!(
                            "not found after {} s; block devices seen: {}",
                            PARTITION_TIMEOUT.as_secs(),
                            sysfs::describe(&devs)
                        ),
                        "check that the disk's storage driver is in the initramfs module list \
                         and that the disk has GPT partitions with these names \
                         (kiln.root=, kiln.data=), or is the MBR disk kiln.mbr= names",
                    ));
                }
                if waited >= next_progress {
                    say(format_args!(
                        "waiting for partition {} ({} s of {} s)",
                        missing.join(" and "),
                        waited.as_secs(),
                        PARTITION_TIMEOUT.as_secs()
                    ));
                    next_progress += PROGRESS_EVERY;
                }
                std::thread::sleep(PARTITION_POLL);
            }
        }
    }
}

/// The first sector of a whole disk, for [`sysfs::name_mbr_partitions`].
fn read_sector0(disk: &BlockDev) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut sector = vec![0u8; crate::gpt::SECTOR as usize];
    fs::File::open(disk.dev_path())
        .and_then(|mut f| f.read_exact(&mut sector))
        .ok()?;
    Some(sector)
}

/// Step 6, first half.
fn mount_root_and_data(root: &BlockDev, data: &BlockDev) -> Step<()> {
    sys::mkdir_p(Path::new(SYSROOT)).or_fail(
        format!("creating {SYSROOT}"),
        "the initramfs must be writable",
    )?;
    sys::mount_fs(
        &root.dev_path(),
        SYSROOT,
        "squashfs",
        MsFlags::MS_RDONLY,
        "",
    )
    .or_fail(
        format!(
            "mounting the root {} (squashfs) at {SYSROOT}",
            root.dev_path()
        ),
        "check that squashfs is in the initramfs module list \
         and that the partition holds a kiln root image",
    )?;
    say(format_args!(
        "mounted root {} (squashfs, read-only) at {SYSROOT}",
        root.dev_path()
    ));
    let var = format!("{SYSROOT}/var");
    if !Path::new(&var).is_dir() {
        return Err(Failure::new(
            format!("mounting the data partition at {var}"),
            "the root image has no /var directory",
            "the root image must have an empty /var",
        ));
    }
    sys::mount_fs(&data.dev_path(), &var, "ext4", MsFlags::empty(), "").or_fail(
        format!(
            "mounting the data partition {} (ext4) at {var}",
            data.dev_path()
        ),
        "check that ext4 and crc32c are in the initramfs module list \
         and that the kernel log shows no EXT4-fs error",
    )?;
    say(format_args!(
        "mounted data {} (ext4) at {var}",
        data.dev_path()
    ));
    Ok(())
}

/// Step 7.
fn mount_etc_overlay() -> Step<()> {
    let upper = format!("{SYSROOT}{}", layout::ETC_OVERLAY_UPPER);
    let work = format!("{SYSROOT}{}", layout::ETC_OVERLAY_WORK);
    for dir in [&upper, &work] {
        sys::mkdir_p(Path::new(dir)).or_fail(
            format!("creating {dir}"),
            "the data filesystem must be writable",
        )?;
    }
    let etc = format!("{SYSROOT}/etc");
    let options = format!("lowerdir={etc},upperdir={upper},workdir={work}");
    sys::mount_fs("overlay", &etc, "overlay", MsFlags::empty(), &options).or_fail(
        format!("mounting the /etc overlay ({options})"),
        "check that overlay is in the initramfs module list and that the root image has /etc",
    )?;
    say(format_args!(
        "mounted the /etc overlay (upper {} on the data partition)",
        layout::ETC_OVERLAY_UPPER
    ));
    Ok(())
}

/// Step 8.
fn switch_root(init: &str) -> Step<Infallible> {
    for dir in ["/proc", "/sys", "/dev"] {
        let to = format!("{SYSROOT}{dir}");
        sys::move_mount(dir, &to).or_fail(
            format!("moving {dir} to {to}"),
            "the root image must have empty /proc, /sys and /dev directories",
        )?;
    }
    // A symlink (to an absolute path) only resolves after the switch.
    if fs::symlink_metadata(format!("{SYSROOT}{init}")).is_err() {
        return Err(Failure::new(
            format!("finding init {init} in the root"),
            "no such file",
            "the root image must have it, or set kiln.init=",
        ));
    }
    say(format_args!("switching root to {init}"));
    let Err((what, e)) = sys::switch_root(SYSROOT, init);
    Err(Failure::new(
        what,
        e,
        format!("check that {init} in the root image is executable"),
    ))
}
