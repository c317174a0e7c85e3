//! FAT images for the ESP and the Raspberry Pi boot partition, written with
//! the `fatfs` crate. Reproducible: every timestamp is the spec's
//! `SOURCE_DATE_EPOCH`, files are written in path order, and the volume ID
//! comes from the caller (derived from the spec hash).

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use anyhow::{bail, ensure, Context, Result};
use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

/// One file to put on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// Path inside the volume, `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub data: Vec<u8>,
}

/// The volume to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatSpec {
    /// Size of the partition, a multiple of 512.
    pub size_bytes: u64,
    /// Volume label, at most 11 characters (stored upper case), e.g. `KILN-ESP`.
    pub label: String,
    /// Volume serial number, derived from the spec hash by the caller.
    pub volume_id: u32,
    /// FAT32 (needs at least 33 MiB); otherwise FAT16, or FAT12 below 4 MiB.
    pub fat32: bool,
    /// Every timestamp on the volume (`SOURCE_DATE_EPOCH`, clamped to the
    /// FAT range 1980..2107).
    pub mtime: u64,
}

const MIB: u64 = 1024 * 1024;
/// 65525 clusters of 512 bytes plus the FATs and reserved sectors: below
/// this a "FAT32" volume is read as FAT16 by every driver.
const FAT32_MIN: u64 = 33 * MIB;

/// The image of a FAT volume holding `files`.
pub fn build(spec: &FatSpec, files: &[FatFile]) -> Result<Vec<u8>> {
    let size = usize::try_from(spec.size_bytes).context("the FAT volume does not fit in memory")?;
    let mut image = Cursor::new(vec![0u8; size]);
    write_into(spec, files, &mut image)?;
    Ok(image.into_inner())
}

/// Format `disk` (positioned at 0, `spec.size_bytes` long, reading as zeros,
/// e.g. a new sparse file or a slice of one) and write `files` into it.
pub fn write_into<T: Read + Write + Seek>(
    spec: &FatSpec,
    files: &[FatFile],
    mut disk: T,
) -> Result<()> {
    ensure!(
        spec.size_bytes.is_multiple_of(512) && spec.size_bytes > 0,
        "FAT volume size {} is not a positive multiple of 512 bytes; fix the partition size in the board file",
        spec.size_bytes
    );
    ensure!(
        !spec.fat32 || spec.size_bytes >= FAT32_MIN,
        "a FAT32 volume needs at least 33 MiB, {} has {} MiB; raise its size in the board file or use FAT16",
        spec.label,
        spec.size_bytes / MIB
    );
    let label = label_bytes(&spec.label)?;
    let tree = Tree::new(files)?;

    let mut opts = FormatVolumeOptions::new()
        .volume_id(spec.volume_id)
        .volume_label(label)
        .total_sectors(u32::try_from(spec.size_bytes / 512).context("FAT volume too big")?);
    if spec.fat32 {
        opts = opts.fat_type(FatType::Fat32);
    } else if spec.size_bytes >= 16 * MIB {
        opts = opts.fat_type(FatType::Fat16);
    }
    fatfs::format_volume(&mut disk, opts).with_context(|| {
        format!(
            "formatting a {} MiB FAT volume {}; raise its size in the board file",
            spec.size_bytes / MIB,
            spec.label
        )
    })?;
    disk.rewind().context("rewinding the FAT volume")?;

    // fatfs wants a `&'static` time provider; one small leak per volume.
    let clock: &'static FixedTime = Box::leak(Box::new(FixedTime(dos_time(spec.mtime))));
    let options = || FsOptions::new().time_provider(clock);

    // Directories first, then a fix-up fatfs 0.3 needs, then the files.
    let need = {
        let fs = FileSystem::new(&mut disk, options()).context("mounting the new FAT volume")?;
        ensure!(
            !spec.fat32 || fs.fat_type() == FatType::Fat32,
            "{} came out as {:?}, not FAT32; raise its size in the board file",
            spec.label,
            fs.fat_type()
        );
        let stats = fs.stats().context("reading the FAT volume's free space")?;
        let cluster = u64::from(stats.cluster_size());
        let free = u64::from(stats.free_clusters()) * cluster;
        let needed = tree.bytes_needed(cluster, fs.fat_type() == FatType::Fat32);
        let need = spec.size_bytes - free + needed;
        if needed > free {
            bail!(too_small(spec, need));
        }
        {
            let root = fs.root_dir();
            for dir in &tree.dirs {
                root.create_dir(dir)
                    .with_context(|| format!("creating directory {dir} on the FAT volume"))?;
            }
        }
        fs.unmount().context("closing the FAT volume")?;
        need
    };
    disk.rewind().context("rewinding the FAT volume")?;
    fix_dot_entries(&mut disk, tree.dirs.len())?;
    disk.rewind().context("rewinding the FAT volume")?;

    let fs = FileSystem::new(&mut disk, options()).context("mounting the new FAT volume")?;
    {
        let root = fs.root_dir();
        for f in &tree.files {
            let mut file = root
                .create_file(&f.path)
                .with_context(|| format!("creating {} on the FAT volume", f.path))?;
            file.write_all(&f.data)
                .and_then(|()| file.flush())
                .with_context(|| format!("writing {} to the FAT volume", f.path))
                .with_context(|| too_small(spec, need.max(spec.size_bytes + MIB)))?;
        }
    }
    fs.unmount().context("closing the FAT volume")?;
    disk.flush().context("writing the FAT volume")?;
    Ok(())
}

/// The error for files that do not fit; `need` is in bytes.
fn too_small(spec: &FatSpec, need: u64) -> String {
    format!(
        "ESP too small: need {} MiB, board gives {} MiB; raise esp size in the board file",
        need.div_ceil(MIB),
        spec.size_bytes / MIB
    )
}

/// fatfs 0.3 writes a long-name entry before each new directory's `.` and
/// `..` (fixed upstream after 0.3.6), so `.` is not in the first slot and
/// `..` not in the second, which fsck.fat and strict readers reject. Right
/// after the directories are made, and before any file is written, every
/// allocated cluster is a directory's: move `.` and `..` to slots 0 and 1
/// and mark slots 2 and 3 deleted (new entries reuse them).
fn fix_dot_entries<T: Read + Write + Seek>(disk: &mut T, dirs: usize) -> Result<()> {
    let mut boot = [0u8; 512];
    disk.read_exact(&mut boot)
        .context("reading the FAT boot sector")?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([boot[o], boot[o + 1]]));
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            boot[o],
            boot[o + 1],
            boot[o + 2],
            boot[o + 3],
        ]))
    };
    let (sector, per_cluster) = (u16_at(11), u64::from(boot[13]));
    let fat_sectors = if u16_at(22) != 0 {
        u16_at(22)
    } else {
        u32_at(36)
    };
    let sectors = if u16_at(19) != 0 {
        u16_at(19)
    } else {
        u32_at(32)
    };
    let data = u16_at(14) + u64::from(boot[16]) * fat_sectors + (u16_at(17) * 32).div_ceil(sector);
    let clusters = (sectors - data) / per_cluster;
    let fat32_root = if u16_at(22) == 0 {
        u32_at(44) as u32
    } else {
        0
    };
    let is_sfn = |e: &[u8], name: &[u8; 11]| e[..11] == *name && e[11] & 0x10 != 0;
    let mut fixed = 0;
    // A fresh volume allocates from the start: stop at the first unused cluster.
    for c in 0..clusters {
        let at = (data + c * per_cluster) * sector;
        let mut head = [0u8; 128];
        disk.seek(SeekFrom::Start(at))
            .context("reading a FAT directory")?;
        disk.read_exact(&mut head)
            .context("reading a FAT directory")?;
        if head[0] == 0 {
            break;
        }
        let (lfn1, dot, lfn2, dotdot) =
            (&head[0..32], &head[32..64], &head[64..96], &head[96..128]);
        if lfn1[11] == 0x0f
            && is_sfn(dot, b".          ")
            && lfn2[11] == 0x0f
            && is_sfn(dotdot, b"..         ")
        {
            let mut new = [0u8; 128];
            new[..32].copy_from_slice(dot);
            new[32..64].copy_from_slice(dotdot);
            // `..` of a top-level directory says 0, also on FAT32.
            if fat32_root != 0
                && u32::from(u16::from_le_bytes([new[58], new[59]]))
                    | u32::from(u16::from_le_bytes([new[52], new[53]])) << 16
                    == fat32_root
            {
                new[52..54].fill(0);
                new[58..60].fill(0);
            }
            new[64] = 0xe5;
            new[96] = 0xe5;
            disk.seek(SeekFrom::Start(at))
                .context("writing a FAT directory")?;
            disk.write_all(&new).context("writing a FAT directory")?;
            fixed += 1;
        }
    }
    ensure!(
        fixed == dirs,
        "fixed the `.` entries of {fixed} FAT directories, expected {dirs}; this is a kiln bug (fatfs changed?)"
    );
    Ok(())
}

/// The 11-byte, space-padded, upper-case label.
fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let upper = label.to_ascii_uppercase();
    ensure!(
        !upper.is_empty()
            && upper.len() <= 11
            && upper.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !upper.bytes().any(|b| b"\"*+,./:;<=>?[\\]|".contains(&b)),
        "FAT label {label:?} must be 1 to 11 ASCII letters, digits, spaces, `-` or `_`; fix it in the board file"
    );
    let mut out = [b' '; 11];
    out[..upper.len()].copy_from_slice(upper.as_bytes());
    Ok(out)
}

/// The files to write, sorted, and the directories they need.
struct Tree<'a> {
    dirs: Vec<String>,
    files: Vec<&'a FatFile>,
}

impl<'a> Tree<'a> {
    fn new(files: &'a [FatFile]) -> Result<Self> {
        let mut sorted: Vec<&FatFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        // FAT names are case-insensitive: compare upper-cased paths.
        let mut seen: BTreeMap<String, bool /* is a dir */> = BTreeMap::new();
        let mut dirs = Vec::new();
        for f in &sorted {
            ensure!(
                !f.path.is_empty()
                    && f.path
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != ".."),
                "FAT path {:?} must be relative and plain (no empty, `.` or `..` parts)",
                f.path
            );
            let parts: Vec<&str> = f.path.split('/').collect();
            for i in 1..parts.len() {
                let dir = parts[..i].join("/");
                match seen.insert(dir.to_ascii_uppercase(), true) {
                    None => dirs.push(dir),
                    Some(true) => {}
                    Some(false) => bail!("FAT path {} lies under {dir}, which is a file", f.path),
                }
            }
            if seen.insert(f.path.to_ascii_uppercase(), false).is_some() {
                bail!("FAT path {} is given twice (FAT ignores case)", f.path);
            }
        }
        Ok(Tree {
            dirs,
            files: sorted,
        })
    }

    /// Bytes of clusters the files and directories take, slightly
    /// overestimated (every name is counted with long-name entries).
    fn bytes_needed(&self, cluster: u64, fat32: bool) -> u64 {
        let clusters = |bytes: u64| bytes.div_ceil(cluster);
        let mut entries: BTreeMap<String, u64> = BTreeMap::new();
        let mut add_entry = |path: &str| {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            // One short entry plus one long-name entry per 13 characters.
            *entries.entry(parent.to_ascii_uppercase()).or_insert(0) +=
                1 + (name.len() as u64).div_ceil(13);
        };
        self.dirs.iter().for_each(|d| add_entry(d));
        self.files.iter().for_each(|f| add_entry(&f.path));
        let mut total: u64 = self
            .files
            .iter()
            .map(|f| clusters(f.data.len() as u64))
            .sum();
        for d in &self.dirs {
            let n = entries.get(&d.to_ascii_uppercase()).copied().unwrap_or(0);
            total += clusters((n + 2) * 32); // `.` and `..`
        }
        if fat32 {
            // The root's first cluster exists already.
            let n = entries.get("").copied().unwrap_or(0) + 1; // + volume label
            total += clusters(n * 32).saturating_sub(1);
        }
        total * cluster
    }
}

/// A clock stopped at one instant.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Days since 1970-01-01 as (year, month, day), UTC (Howard Hinnant's
/// civil_from_days).
pub(crate) fn civil_from_days(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Seconds since the Unix epoch as a FAT date and time (UTC), clamped to
/// what FAT can store (1980-01-01 to 2107-12-31).
fn dos_time(epoch: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_199; // 2107-12-31T23:59:59Z
    let t = epoch.clamp(MIN, MAX);
    let (days, secs) = (t / 86_400, t % 86_400);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> FatFile {
        FatFile {
            path: path.into(),
            data: data.to_vec(),
        }
    }

    fn esp(size_mib: u64, fat32: bool) -> FatSpec {
        FatSpec {
            size_bytes: size_mib * MIB,
            label: "kiln-esp".into(),
            volume_id: 0x1234_abcd,
            fat32,
            mtime: 1_700_000_000, // 2023-11-14T22:13:20Z
        }
    }

    fn files() -> Vec<FatFile> {
        vec![
            file(
                "loader/entries/kiln.conf",
                b"linux /vmlinuz\ninitrd /initrd.img\n",
            ),
            file("EFI/BOOT/BOOTX64.EFI", &vec![0x4d; 100_000]),
            file("loader/loader.conf", b"timeout 0\ndefault kiln.conf\n"),
            file(
                "vmlinuz",
                &(0..3_000_000u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<_>>(),
            ),
            file("empty", b""),
            file("a-rather-long-file-name-for-vfat.txt", b"lfn"),
        ]
    }

    /// Files by path (data, mtime), label, volume ID, FAT type.
    type Volume = (BTreeMap<String, (Vec<u8>, DateTime)>, String, u32, FatType);

    /// Everything on a volume, read back with fatfs.
    fn read_back(image: Vec<u8>) -> Volume {
        let fs = FileSystem::new(Cursor::new(image), FsOptions::new()).unwrap();
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), fs.root_dir())];
        while let Some((prefix, dir)) = stack.pop() {
            for e in dir.iter() {
                let e = e.unwrap();
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = format!("{prefix}{name}");
                if e.is_dir() {
                    stack.push((format!("{path}/"), e.to_dir()));
                } else {
                    let mut data = Vec::new();
                    e.to_file().read_to_end(&mut data).unwrap();
                    out.insert(path, (data, e.modified()));
                }
            }
        }
        let label = fs.read_volume_label_from_root_dir().unwrap().unwrap();
        (out, label, fs.volume_id(), fs.fat_type())
    }

    #[test]
    fn files_read_back() {
        for (size, fat32, kind) in [
            (64, true, FatType::Fat32),
            (24, false, FatType::Fat16),
            (8, false, FatType::Fat16),
        ] {
            let image = build(&esp(size, fat32), &files()).unwrap();
            assert_eq!(image.len() as u64, size * MIB);
            let (got, label, id, fat) = read_back(image);
            assert_eq!(fat, kind);
            assert_eq!(label, "KILN-ESP");
            assert_eq!(id, 0x1234_abcd);
            let want: BTreeMap<String, Vec<u8>> =
                files().into_iter().map(|f| (f.path, f.data)).collect();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (path, (data, modified)) in got {
                assert_eq!(data, want[&path], "{path}");
                assert_eq!(modified, dos_time(1_700_000_000), "{path}");
            }
        }
    }

    #[test]
    fn same_input_same_bytes_whatever_the_order() {
        let a = build(&esp(40, true), &files()).unwrap();
        let mut reversed = files();
        reversed.reverse();
        assert!(a == build(&esp(40, true), &reversed).unwrap());
        let mut later = esp(40, true);
        later.mtime += 86_400;
        assert!(a != build(&later, &files()).unwrap());
    }

    #[test]
    fn too_small_says_how_much_is_needed() {
        let big = vec![
            file("vmlinuz", &vec![1u8; 9 * MIB as usize]),
            file("initrd.img", &vec![2u8; 3 * MIB as usize]),
        ];
        let err = build(&esp(8, false), &big).err().unwrap().to_string();
        assert!(
            err.starts_with("ESP too small: need 13 MiB, board gives 8 MiB; raise esp size"),
            "{err}"
        );
        // Just fits.
        build(&esp(13, false), &big).unwrap();
        let err = build(&esp(32, true), &[]).err().unwrap().to_string();
        assert!(
            err.contains("a FAT32 volume needs at least 33 MiB"),
            "{err}"
        );
        build(&esp(33, true), &[]).unwrap();
    }

    #[test]
    fn bad_input_is_refused() {
        let spec = esp(8, false);
        for bad in [
            vec![file("/abs", b"")],
            vec![file("a/../b", b"")],
            vec![file("a", b""), file("a/b", b"")],
            vec![file("Loader.conf", b""), file("LOADER.CONF", b"")],
        ] {
            assert!(build(&spec, &bad).is_err(), "{bad:?}");
        }
        for label in ["", "TWELVE-CHARS", "a.b", "é"] {
            let spec = FatSpec {
                label: label.into(),
                ..esp(8, false)
            };
            assert!(build(&spec, &[]).is_err(), "{label}");
        }
        assert!(build(
            &FatSpec {
                size_bytes: 1000,
                ..esp(8, false)
            },
            &[]
        )
        .is_err());
    }

    /// fatfs 0.3 puts long-name entries before `.` and `..`; the fix-up
    /// must leave nothing for fsck.fat to repair.
    #[test]
    fn fsck_finds_nothing_to_fix() {
        for (size, fat32) in [(40, true), (24, false), (2, false)] {
            let files = vec![
                file("EFI/BOOT/BOOTX64.EFI", &[1; 5000]),
                file("EFI/Linux/x", b"x"),
                file("loader/entries/kiln.conf", b"linux /vmlinuz\n"),
                file("overlays/a/b/c/d.dtbo", b"dtbo"),
            ];
            let image = build(&esp(size, fat32), &files).unwrap();
            let mut again = Cursor::new(image.clone());
            fix_dot_entries(&mut again, 0).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("esp.img");
            std::fs::write(&path, &image).unwrap();
            match std::process::Command::new("fsck.fat")
                .arg("-n")
                .arg(&path)
                .output()
            {
                Ok(out) => assert!(
                    out.status.success(),
                    "fsck.fat -n ({size} MiB): {}",
                    String::from_utf8_lossy(&out.stdout)
                ),
                Err(_) => eprintln!("fsck.fat not installed (dosfstools); checked the layout only"),
            }
        }
    }

    #[test]
    fn dos_time_converts_and_clamps() {
        let t = dos_time(1_700_000_000);
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = dos_time(951_782_400); // 2000-02-29
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
        assert_eq!(
            dos_time(0).date,
            Date {
                year: 1980,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            dos_time(u64::MAX).date,
            Date {
                year: 2107,
                month: 12,
                day: 31
            }
        );
    }
}
