//! GUID partition tables: write one (the builder), read one back, and grow
//! the last partition to the end of a disk that turned out bigger than the
//! image (kiln-init, on every boot; it does nothing once the partition fills
//! the disk).
//!
//! Plain data in and out, generic over the disk (`Read`/`Write`/`Seek`), so
//! tests use a `Cursor<Vec<u8>>` and the builder a plain file. Logical
//! sectors are 512 bytes ([`SECTOR`]); 4Kn disks are not supported.
//!
//! On-disk layout written by [`write()`] (UEFI 2.10, section 5.3), for a disk of
//! `n` sectors:
//!
//! | LBA | what |
//! |---|---|
//! | 0 | protective MBR: one type 0xEE entry from LBA 1 to the end |
//! | 1 | primary header |
//! | 2..=33 | primary entry array: 128 entries of 128 bytes |
//! | 34..=n-34 | usable area |
//! | n-33..=n-2 | backup entry array |
//! | n-1 | backup header |

use std::io::{self, Read, Seek, Write};

mod guid;
pub(crate) mod ondisk;

pub use guid::{types, Guid};
use ondisk::{
    crc, encode_entries, entry_array_sectors, fix_protective_mbr, headers, invalid, protective_mbr,
    read_at, read_raw, update, write_at, Header,
};

/// Logical sector size, in bytes.
pub const SECTOR: u64 = 512;
/// Entries in each array written by [`write()`], and the size of one.
pub const ENTRY_COUNT: u32 = 128;
pub const ENTRY_SIZE: u32 = 128;
/// First usable LBA of a table written by [`write()`].
pub const FIRST_USABLE_LBA: u64 = 34;
/// [`grow_last_partition`] ends the partition on a multiple of this many
/// sectors (1 MiB), minus one.
pub const GROW_ALIGN_SECTORS: u64 = 2048;

/// Where a grown last partition ends: at `last_usable` rounded down to
/// [`GROW_ALIGN_SECTORS`] (minus one), never before `current_last` (shared
/// by the GPT and the MBR grower).
pub fn grown_last_lba(last_usable: u64, current_last: u64) -> u64 {
    let aligned = ((last_usable + 1) / GROW_ALIGN_SECTORS * GROW_ALIGN_SECTORS).saturating_sub(1);
    aligned.max(current_last)
}

/// Last usable LBA of a table written by [`write()`] on a disk of
/// `disk_sectors` sectors.
pub fn last_usable_lba(disk_sectors: u64) -> u64 {
    disk_sectors.saturating_sub(1 + entry_array_sectors(ENTRY_COUNT, ENTRY_SIZE) + 1)
}

/// One used entry of the partition array.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units.
    pub name: String,
}

/// A partition table: the disk GUID and the used entries, in array order
/// (slot `i` is the kernel's partition `i + 1` when there are no gaps).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

/// What [`grow_last_partition`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grow {
    /// The partition already ended at the end of the disk; its entry was not
    /// written. (A backup header or protective MBR left stale by an
    /// interrupted earlier call is still repaired.)
    AlreadyFull,
    Grown {
        old_last_lba: u64,
        new_last_lba: u64,
    },
}

impl Grow {
    /// What moving a partition's end from `old_last_lba` to `new_last_lba`
    /// was (shared by the GPT and the MBR grower).
    pub fn from_ends(old_last_lba: u64, new_last_lba: u64) -> Grow {
        if new_last_lba > old_last_lba {
            Grow::Grown {
                old_last_lba,
                new_last_lba,
            }
        } else {
            Grow::AlreadyFull
        }
    }
}

/// Writes a protective MBR, both headers and both entry arrays for `table`
/// on a disk of `disk_sectors` sectors. Partitions go into slots 0, 1, ... in
/// the order given; they must lie in the usable area and not overlap.
pub fn write(disk: &mut (impl Write + Seek), disk_sectors: u64, table: &Table) -> io::Result<()> {
    let entries = encode_entries(disk_sectors, table)?;
    let (primary, backup) = headers(disk_sectors, table.disk_guid, crc(&entries));
    write_at(disk, 0, &protective_mbr(disk_sectors))?;
    write_at(disk, 1, &primary.encode())?;
    write_at(disk, primary.entries_lba, &entries)?;
    write_at(disk, backup.entries_lba, &entries)?;
    write_at(disk, backup.my_lba, &backup.encode())?;
    disk.flush()
}

/// Reads the primary table (header at LBA 1), checking its signature, CRCs
/// and bounds. It does not look at the backup: see [`read_backup`].
pub fn read(disk: &mut (impl Read + Seek), disk_sectors: u64) -> io::Result<Table> {
    read_raw(disk, 1, disk_sectors)?.table()
}

/// Reads the backup table whose header is in the disk's last sector.
pub fn read_backup(disk: &mut (impl Read + Seek), disk_sectors: u64) -> io::Result<Table> {
    read_raw(disk, disk_sectors.saturating_sub(1), disk_sectors)?.table()
}

/// Grows the partition called `name`, which must be the last one on the
/// disk, to end at the disk's last usable LBA rounded down to 1 MiB (minus
/// one), and rewrites both tables for a disk of `disk_sectors` sectors.
///
/// Check-before-write: every sector is compared first and only written if
/// it differs, so a second call writes nothing. The disk should be opened
/// with `O_SYNC` (`flush` is called between steps but does not reach the
/// medium on a plain `File`). The writes are ordered so that a power cut at
/// any point leaves a table that the kernel and the next call can read, and
/// the next call finishes the job:
///
/// 1. backup entries, then backup header, at the *new* end of the disk.
///    Until the header is complete the primary table (untouched, still
///    valid) is what everyone reads; the old backup is never touched.
/// 2. primary entries, then primary header. If this is cut, the primary
///    fails its CRC; the next call reads the backup at the end of the disk,
///    which step 1 made complete and grown, and rewrites the primary from
///    it. (Linux itself only falls back to that backup with `gpt` on its
///    command line; kiln-init repairs such a disk before it looks for
///    partitions.)
/// 3. the size in the protective MBR (only if it is a plain protective MBR).
///    A stale size is harmless (the kernel only logs it), so a cut here
///    loses nothing; the next call fixes it.
pub fn grow_last_partition(
    disk: &mut (impl Read + Write + Seek),
    disk_sectors: u64,
    name: &str,
) -> io::Result<Grow> {
    let src = match read_raw(disk, 1, disk_sectors) {
        Ok(t) => t,
        Err(primary) => {
            let last = disk_sectors.saturating_sub(1);
            read_raw(disk, last, disk_sectors).map_err(|backup| {
                invalid(format!(
                    "no valid partition table: primary: {primary}; \
                     backup at the end of the disk: {backup}"
                ))
            })?
        }
    };
    let h = &src.header;
    let es = h.entries_sectors();
    let backup_entries_lba = disk_sectors
        .checked_sub(1 + es)
        .filter(|&lba| lba > h.first_usable)
        .ok_or_else(|| invalid(format!("a disk of {disk_sectors} sectors is too small")))?;
    let last_usable = backup_entries_lba - 1;

    let parts = src.slots()?;
    let (slot, part) = parts.iter().find(|(_, p)| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = parts.iter().map(|(_, p)| p.name.as_str()).collect();
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no partition named {name:?} (the table has {names:?})"),
        )
    })?;
    if let Some((_, later)) = parts
        .iter()
        .find(|(s, p)| s != slot && p.last_lba >= part.last_lba)
    {
        return Err(invalid(format!(
            "partition {name:?} is not the last one on the disk: {:?} ends at LBA {}, after it",
            later.name, later.last_lba
        )));
    }
    if part.last_lba > last_usable {
        return Err(invalid(format!(
            "partition {name:?} ends at LBA {}, past the last usable LBA {last_usable} of a \
             {disk_sectors}-sector disk; is the disk size right?",
            part.last_lba
        )));
    }
    let new_last = grown_last_lba(last_usable, part.last_lba);

    let mut entries = src.entries.clone();
    let off = *slot * h.entry_size as usize + 40;
    entries[off..off + 8].copy_from_slice(&new_last.to_le_bytes());
    let entries_crc = crc(&entries);
    let primary = Header {
        my_lba: 1,
        alternate_lba: disk_sectors - 1,
        last_usable,
        entries_lba: if src.header.my_lba == 1 {
            h.entries_lba
        } else {
            2
        },
        entries_crc,
        ..*h
    };
    let backup = Header {
        my_lba: disk_sectors - 1,
        alternate_lba: 1,
        entries_lba: backup_entries_lba,
        ..primary
    };

    update(disk, backup.entries_lba, &entries)?;
    update(disk, backup.my_lba, &backup.encode())?;
    disk.flush()?;
    update(disk, primary.entries_lba, &entries)?;
    update(disk, primary.my_lba, &primary.encode())?;
    disk.flush()?;
    let mbr = read_at(disk, 0, 1)?;
    if let Some(fixed) = fix_protective_mbr(&mbr, disk_sectors) {
        write_at(disk, 0, &fixed)?;
        disk.flush()?;
    }

    Ok(Grow::from_ends(part.last_lba, new_last))
}

#[cfg(test)]
mod tests {
    use super::ondisk::{u32le, u64le, SIGNATURE};
    use super::*;
    use std::io::Cursor;
    use std::io::SeekFrom;

    const MIB: u64 = 2048;

    fn sample() -> Table {
        let part = |t, n: u8, first, last, name: &str| Partition {
            type_guid: t,
            unique_guid: Guid::from_hash(&[n; 32]),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.into(),
        };
        Table {
            disk_guid: Guid::from_hash(b"disk guid derived from the spec hash"),
            partitions: vec![
                part(types::ESP, 1, MIB, 2 * MIB - 1, "kiln-esp"),
                part(types::ROOT_X86_64, 2, 2 * MIB, 4 * MIB - 1, "kiln-root-a"),
                part(types::LINUX_FS, 3, 4 * MIB, 5 * MIB - 1, "kiln-data"),
            ],
        }
    }

    /// A 6 MiB image as the builder writes it.
    fn image() -> (Vec<u8>, u64) {
        let n = 6 * MIB;
        let mut disk = Cursor::new(vec![0u8; (n * SECTOR) as usize]);
        write(&mut disk, n, &sample()).unwrap();
        (disk.into_inner(), n)
    }

    /// The image "flashed" to a 10 MiB + 40 sectors card: the data partition
    /// can then end at 10 MiB - 1 (the backup needs 33 sectors).
    fn flashed() -> (Vec<u8>, u64) {
        let (mut bytes, _) = image();
        let n = 10 * MIB + 40;
        bytes.resize((n * SECTOR) as usize, 0);
        (bytes, n)
    }

    #[test]
    fn write_then_read_round_trips() {
        let (bytes, n) = image();
        let mut disk = Cursor::new(bytes);
        assert_eq!(read(&mut disk, n).unwrap(), sample());
        assert_eq!(read_backup(&mut disk, n).unwrap(), sample());
        let b = disk.into_inner();
        assert_eq!(b[450], 0xee);
        assert_eq!(u32le(&b, 458) as u64, n - 1);
        assert_eq!(&b[512..520], SIGNATURE);
    }

    #[test]
    fn write_rejects_bad_tables() {
        let n = 6 * MIB;
        let mut disk = Cursor::new(Vec::new());
        let mut t = sample();
        t.partitions[2].last_lba = n - 33;
        assert!(write(&mut disk, n, &t)
            .unwrap_err()
            .to_string()
            .contains("usable area"));
        let mut t = sample();
        t.partitions[1].first_lba = 2 * MIB - 1;
        assert!(write(&mut disk, n, &t)
            .unwrap_err()
            .to_string()
            .contains("overlap"));
        let mut t = sample();
        t.partitions[0].name = "x".repeat(37);
        assert!(write(&mut disk, n, &t).is_err());
    }

    #[test]
    fn corruption_is_detected() {
        let (bytes, n) = image();
        let mut b = bytes.clone();
        b[512 + 48] ^= 1; // last usable LBA in the primary header
        let err = read(&mut Cursor::new(b), n).unwrap_err().to_string();
        assert!(err.contains("header at LBA 1 fails its CRC"), "{err}");

        let mut b = bytes.clone();
        b[2 * 512 + 2 * 128 + 56] ^= 1; // a name in the primary entries
        let err = read(&mut Cursor::new(b), n).unwrap_err().to_string();
        assert!(err.contains("entry array") && err.contains("CRC"), "{err}");

        let mut b = bytes;
        b[512] = b'X';
        let err = read(&mut Cursor::new(b), n).unwrap_err().to_string();
        assert!(err.contains("no GPT signature"), "{err}");
    }

    #[test]
    fn grow_fills_a_bigger_disk_and_is_idempotent() {
        let (bytes, n) = flashed();
        let mut disk = Cursor::new(bytes);
        // The backup is not at the end yet: only the primary reads.
        assert!(read_backup(&mut disk, n).is_err());
        let got = grow_last_partition(&mut disk, n, "kiln-data").unwrap();
        assert_eq!(
            got,
            Grow::Grown {
                old_last_lba: 5 * MIB - 1,
                new_last_lba: 10 * MIB - 1
            }
        );
        let mut want = sample();
        want.partitions[2].last_lba = 10 * MIB - 1;
        assert_eq!(read(&mut disk, n).unwrap(), want);
        assert_eq!(read_backup(&mut disk, n).unwrap(), want);
        let b = disk.get_ref();
        assert_eq!(u32le(b, 458) as u64, n - 1);
        assert_eq!(u64le(b, 512 + 48), n - 34);

        let before = disk.get_ref().clone();
        let mut counted = WriteBudget::new(before.clone(), 0);
        assert_eq!(
            grow_last_partition(&mut counted, n, "kiln-data").unwrap(),
            Grow::AlreadyFull
        );
        assert_eq!(counted.inner.into_inner(), before);
    }

    #[test]
    fn grow_on_an_unchanged_image_writes_nothing() {
        let (bytes, n) = image();
        let mut disk = WriteBudget::new(bytes.clone(), 0);
        // 6 MiB disk: the last usable LBA rounds down to 5 MiB - 1, where it ends.
        assert_eq!(
            grow_last_partition(&mut disk, n, "kiln-data").unwrap(),
            Grow::AlreadyFull
        );
        assert_eq!(disk.inner.into_inner(), bytes);
    }

    #[test]
    fn grow_refuses_wrong_partitions() {
        let (bytes, n) = flashed();
        let mut disk = Cursor::new(bytes);
        let err = grow_last_partition(&mut disk, n, "kiln-root-a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the last"), "{err}");
        let err = grow_last_partition(&mut disk, n, "nope")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no partition named") && err.contains("kiln-esp"),
            "{err}"
        );
        let err = grow_last_partition(&mut disk, 5 * MIB, "kiln-data")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
    }

    /// A disk that takes `budget` more bytes, then fails every write: a
    /// power cut, possibly in the middle of a sector.
    struct WriteBudget {
        inner: Cursor<Vec<u8>>,
        budget: usize,
    }

    impl WriteBudget {
        fn new(bytes: Vec<u8>, budget: usize) -> Self {
            WriteBudget {
                inner: Cursor::new(bytes),
                budget,
            }
        }
    }

    impl Read for WriteBudget {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read(buf)
        }
    }

    impl Seek for WriteBudget {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    impl Write for WriteBudget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("power cut"));
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.inner.write(&buf[..n])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_power_cut_at_any_point_is_finished_by_the_next_call() {
        let (start, n) = flashed();
        let mut done = Cursor::new(start.clone());
        grow_last_partition(&mut done, n, "kiln-data").unwrap();
        let done = done.into_inner();
        let total = (33 + 33 + 1) * SECTOR as usize;
        let (old_last, new_last) = (5 * MIB - 1, 10 * MIB - 1);
        let mut budget = 0;
        while budget <= total {
            let mut disk = WriteBudget::new(start.clone(), budget);
            let cut = grow_last_partition(&mut disk, n, "kiln-data");
            let after = disk.inner.into_inner();
            // What the next call reads: the primary, else the backup at the end.
            let seen = read(&mut Cursor::new(after.clone()), n)
                .or_else(|_| read_backup(&mut Cursor::new(after.clone()), n))
                .unwrap_or_else(|e| panic!("cut after {budget} bytes: unreadable: {e}"));
            let last = seen.partitions[2].last_lba;
            assert!(
                last == old_last || last == new_last,
                "cut after {budget} bytes: {last}"
            );
            let mut resumed = Cursor::new(after);
            let again = grow_last_partition(&mut resumed, n, "kiln-data").unwrap();
            assert!(resumed.into_inner() == done, "cut after {budget} bytes");
            if cut.is_ok() {
                assert_eq!(again, Grow::AlreadyFull);
            }
            budget += if budget % 512 == 0 { 200 } else { 312 };
        }
    }

    #[test]
    fn sgdisk_and_sfdisk_accept_the_tables() {
        let Ok(out) = std::process::Command::new("sgdisk")
            .arg("--version")
            .output()
        else {
            eprintln!("sgdisk not installed: skipped");
            return;
        };
        assert!(out.status.success());
        let dir = std::env::temp_dir().join(format!("kiln-gpt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (written, _) = image();
        let (mut grown, n) = flashed();
        grow_last_partition(&mut Cursor::new(&mut grown), n, "kiln-data").unwrap();
        for (name, bytes) in [("written.img", written), ("grown.img", grown)] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            let out = std::process::Command::new("sgdisk")
                .arg("-v")
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("No problems found"),
                "{name}: {text}"
            );
            if let Ok(out) = std::process::Command::new("sfdisk")
                .arg("--dump")
                .arg(&path)
                .output()
            {
                let text = String::from_utf8_lossy(&out.stdout);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success() && err.is_empty(), "{name}: {err}");
                assert!(
                    text.contains("label: gpt") && text.contains("name=\"kiln-data\""),
                    "{text}"
                );
                assert!(
                    text.contains("type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
                    "{text}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
