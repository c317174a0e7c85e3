//! Figures the node prints about itself for `kiln bench`: memory in use
//! before k3s starts and the guest's own clock at ready. Read from `/proc`
//! under [`Options::root`]; a missing file (tests, odd kernels) prints
//! nothing rather than a guess.

use std::io::Write;

use super::{say, Options};

/// A `/proc/meminfo` field in KiB.
fn field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    })
}

/// `MemTotal - MemAvailable` of a `/proc/meminfo` text, in KiB: what the
/// kernel could not hand to a new workload without reclaiming.
pub fn memory_in_use_kib(meminfo: &str) -> Option<u64> {
    field(meminfo, "MemTotal")?.checked_sub(field(meminfo, "MemAvailable")?)
}

/// Memory used as `free(1)` counts it (`MemTotal - MemFree - Buffers -
/// Cached - SReclaimable`), in KiB. It differs from [`memory_in_use_kib`]
/// by what the kernel holds back from MemAvailable (watermarks, and part of
/// the page cache), which on a small VM is tens of MiB no process uses.
pub fn memory_used_kib(meminfo: &str) -> Option<u64> {
    let mut used = field(meminfo, "MemTotal")?;
    for name in ["MemFree", "Buffers", "Cached", "SReclaimable"] {
        used = used.checked_sub(field(meminfo, name)?)?;
    }
    Some(used)
}

/// Where the memory in use goes, for the one console line: the parts a
/// user can act on (processes, tmpfs, kernel tables).
pub fn memory_breakdown(meminfo: &str) -> String {
    let mib = |name: &str| field(meminfo, name).map_or(0, |k| k.div_ceil(1024));
    format!(
        "processes {}, tmpfs/shmem {}, unreclaimable slab {}, page tables {}, kernel stacks {} MiB",
        mib("AnonPages"),
        mib("Shmem"),
        mib("SUnreclaim"),
        mib("PageTables"),
        mib("KernelStack"),
    )
}

/// Seconds since the kernel started, from a `/proc/uptime` text.
pub fn uptime_secs(uptime: &str) -> Option<f64> {
    uptime.split_whitespace().next()?.parse().ok()
}

pub(crate) fn say_memory(opts: &Options, out: &mut dyn Write) {
    let text = std::fs::read_to_string(opts.path("/proc/meminfo")).unwrap_or_default();
    if let (Some(in_use), Some(used)) = (memory_in_use_kib(&text), memory_used_kib(&text)) {
        say(
            out,
            format!(
                "memory in use before k3s: {} MiB (MemTotal-MemAvailable); {} MiB used as free(1) counts it ({})",
                in_use.div_ceil(1024),
                used.div_ceil(1024),
                memory_breakdown(&text)
            ),
        );
    }
}

pub(crate) fn say_uptime(opts: &Options, out: &mut dyn Write) {
    let text = std::fs::read_to_string(opts.path("/proc/uptime")).unwrap_or_default();
    if let Some(secs) = uptime_secs(&text) {
        say(out, format!("guest uptime at ready: {secs:.2} s"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_use_is_total_minus_available() {
        let meminfo = "MemTotal:        1014976 kB\nMemFree:          900000 kB\n\
                       MemAvailable:     962000 kB\nBuffers:           1000 kB\n";
        assert_eq!(memory_in_use_kib(meminfo), Some(52_976));
        assert_eq!(memory_in_use_kib("MemTotal: 10 kB\n"), None);
        assert_eq!(
            memory_in_use_kib("MemTotal: 10 kB\nMemAvailable: 20 kB\n"),
            None
        );
    }

    #[test]
    fn memory_used_leaves_out_caches_and_free_memory() {
        // From a kiln node before k3s (1 GiB VM, qemu-x86_64).
        let meminfo = "MemTotal: 977124 kB\nMemFree: 878936 kB\nMemAvailable: 832664 kB\n\
                       Buffers: 4380 kB\nCached: 36596 kB\nSReclaimable: 13040 kB\n";
        assert_eq!(memory_in_use_kib(meminfo), Some(144_460));
        assert_eq!(memory_used_kib(meminfo), Some(44_172));
        assert_eq!(memory_used_kib("MemTotal: 10 kB\nMemFree: 5 kB\n"), None);
    }

    #[test]
    fn uptime_is_the_first_field() {
        assert_eq!(uptime_secs("12.34 20.01\n"), Some(12.34));
        assert_eq!(uptime_secs(""), None);
    }
}
