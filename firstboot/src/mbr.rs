//! MBR (DOS) partition tables, for the Raspberry Pi (its boot ROM reads
//! only MBR): write one (the builder), read one back, and grow the last
//! partition to the end of a bigger card (kiln-init, on every boot; it does
//! nothing once the partition fills the card).
//!
//! The same shape as [`crate::gpt`], and the same sector I/O underneath:
//! plain data in and out, generic over the disk, 512-byte sectors. Only the
//! four primary entries are used; partition `n` is slot `n - 1`.
//!
//! | bytes | what |
//! |---|---|
//! | 440..444 | disk signature (the `PARTUUID=SSSSSSSS-NN` prefix) |
//! | 446..510 | four 16-byte entries: status, CHS first, type, CHS last, LBA first, sectors |
//! | 510..512 | `55 AA` |
//!
//! Growing rewrites sector 0 and nothing else: one sector, checked before it
//! is written, so a power cut leaves either the old or the new table, both
//! valid, and the next boot finishes the job.

use std::io::{self, Read, Seek, Write};

use crate::gpt::ondisk::{bad_input, invalid, read_at, update, write_at};
use crate::gpt::{grown_last_lba, Grow};

/// Partition types kiln writes.
pub mod types {
    /// FAT32 with LBA addressing: what the Pi's boot ROM looks for.
    pub const FAT32_LBA: u8 = 0x0c;
    pub const LINUX: u8 = 0x83;
    /// The protective entry of a GPT disk: not an MBR disk.
    pub const GPT_PROTECTIVE: u8 = 0xee;
}

const SIGNATURE_OFFSET: usize = 440;
const ENTRIES_OFFSET: usize = 446;
const ENTRY_SIZE: usize = 16;
/// MBR sizes and offsets are 32-bit sector counts (2 TiB).
const MAX_SECTORS: u64 = u32::MAX as u64;

/// One primary entry in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub kind: u8,
    pub bootable: bool,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
}

/// A table: the disk signature and the four primary slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub disk_id: u32,
    pub partitions: [Option<Partition>; 4],
}

impl Table {
    /// Partition `number` (1-based), if that slot is used.
    pub fn get(&self, number: u64) -> Option<&Partition> {
        let slot = usize::try_from(number.checked_sub(1)?).ok()?;
        self.partitions.get(slot)?.as_ref()
    }
}

/// CHS address of `lba` in the 255-head, 63-sector geometry every tool
/// uses; past cylinder 1023, the "use LBA" marker.
fn chs(lba: u64) -> [u8; 3] {
    let (c, h, s) = (lba / (255 * 63), (lba / 63) % 255, lba % 63 + 1);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    [h as u8, (s as u8) | ((c >> 2) as u8 & 0xc0), c as u8]
}

/// Sector 0 for `table` on a disk of `disk_sectors` sectors. Partitions
/// must lie on the disk after sector 0, within 2 TiB, and not overlap.
pub fn encode(table: &Table, disk_sectors: u64) -> io::Result<[u8; 512]> {
    let mut s = [0u8; 512];
    s[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4].copy_from_slice(&table.disk_id.to_le_bytes());
    let used: Vec<(usize, &Partition)> = table
        .partitions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.as_ref()?)))
        .collect();
    for (i, p) in &used {
        let n = i + 1;
        if p.first_lba == 0 || p.last_lba < p.first_lba || p.last_lba >= disk_sectors {
            return Err(bad_input(format!(
                "partition {n} (sectors {}..={}) is not on a {disk_sectors}-sector disk after sector 0",
                p.first_lba, p.last_lba
            )));
        }
        let size = p.last_lba + 1 - p.first_lba;
        if p.first_lba > MAX_SECTORS || size > MAX_SECTORS {
            return Err(bad_input(format!(
                "partition {n} is past the 2 TiB an MBR can address"
            )));
        }
        if let Some((j, _)) = used
            .iter()
            .find(|(j, q)| j != i && q.first_lba <= p.last_lba && p.first_lba <= q.last_lba)
        {
            return Err(bad_input(format!("partitions {n} and {} overlap", j + 1)));
        }
        let e = &mut s[ENTRIES_OFFSET + i * ENTRY_SIZE..][..ENTRY_SIZE];
        e[0] = if p.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(p.first_lba));
        e[4] = p.kind;
        e[5..8].copy_from_slice(&chs(p.last_lba));
        e[8..12].copy_from_slice(&(p.first_lba as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(size as u32).to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    Ok(s)
}

/// Reads sector 0 as an MBR table. A GPT disk's protective MBR is an
/// error: the disk is not an MBR disk.
pub fn decode(s: &[u8]) -> io::Result<Table> {
    if s.len() < 512 || s[510..512] != [0x55, 0xaa] {
        return Err(invalid("no MBR boot signature (55 AA) in sector 0"));
    }
    let mut partitions: [Option<Partition>; 4] = Default::default();
    for (i, slot) in partitions.iter_mut().enumerate() {
        let e = &s[ENTRIES_OFFSET + i * ENTRY_SIZE..][..ENTRY_SIZE];
        let kind = e[4];
        if kind == types::GPT_PROTECTIVE {
            return Err(invalid(
                "sector 0 is a GPT protective MBR, not an MBR table",
            ));
        }
        if e[0] & 0x7f != 0 {
            return Err(invalid(format!(
                "partition {} has status byte {:#04x}: not an MBR table",
                i + 1,
                e[0]
            )));
        }
        let first = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")) as u64;
        let size = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")) as u64;
        if kind == 0 || size == 0 {
            continue;
        }
        *slot = Some(Partition {
            kind,
            bootable: e[0] == 0x80,
            first_lba: first,
            last_lba: first + size - 1,
        });
    }
    let disk_id = u32::from_le_bytes(
        s[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    Ok(Table {
        disk_id,
        partitions,
    })
}

/// Writes `table` to sector 0 of a disk of `disk_sectors` sectors.
pub fn write(disk: &mut (impl Write + Seek), disk_sectors: u64, table: &Table) -> io::Result<()> {
    write_at(disk, 0, &encode(table, disk_sectors)?)?;
    disk.flush()
}

/// Reads the table in sector 0.
pub fn read(disk: &mut (impl Read + Seek)) -> io::Result<Table> {
    decode(&read_at(disk, 0, 1)?)
}

/// Grows partition `number` (1-based), which must end last on the disk, to
/// the disk's end rounded down to 1 MiB (see [`grown_last_lba`]), capped at
/// what an MBR can address. Check-before-write: a second call writes
/// nothing and says [`Grow::AlreadyFull`].
pub fn grow_last_partition(
    disk: &mut (impl Read + Write + Seek),
    disk_sectors: u64,
    number: u64,
) -> io::Result<Grow> {
    let mut table = read(disk)?;
    let part = table.get(number).cloned().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("the MBR has no partition {number}"),
        )
    })?;
    if let Some((i, later)) = table
        .partitions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.as_ref()?)))
        .find(|(i, p)| *i as u64 + 1 != number && p.last_lba >= part.last_lba)
    {
        return Err(invalid(format!(
            "partition {number} is not the last one on the disk: partition {} ends at \
             sector {}, after it",
            i + 1,
            later.last_lba
        )));
    }
    if part.last_lba >= disk_sectors {
        return Err(invalid(format!(
            "partition {number} ends at sector {}, past the end of a {disk_sectors}-sector \
             disk; is the disk size right?",
            part.last_lba
        )));
    }
    let limit = (disk_sectors - 1).min(part.first_lba + MAX_SECTORS - 1);
    let new_last = grown_last_lba(limit, part.last_lba);
    let slot = (number - 1) as usize;
    table.partitions[slot] = Some(Partition {
        last_lba: new_last,
        ..part.clone()
    });
    update(disk, 0, &encode(&table, disk_sectors)?)?;
    disk.flush()?;
    Ok(Grow::from_ends(part.last_lba, new_last))
}

/// Formats a disk signature the way `PARTUUID=` and `kiln.mbr=` spell it.
pub fn disk_id_text(id: u32) -> String {
    format!("{id:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::SECTOR;
    use std::io::Cursor;

    const MIB: u64 = 2048;

    fn sample() -> Table {
        let p = |kind, first, last| {
            Some(Partition {
                kind,
                bootable: false,
                first_lba: first,
                last_lba: last,
            })
        };
        Table {
            disk_id: 0x1234_abcd,
            partitions: [
                p(types::FAT32_LBA, MIB, 3 * MIB - 1),
                p(types::LINUX, 3 * MIB, 5 * MIB - 1),
                p(types::LINUX, 5 * MIB, 7 * MIB - 1),
                p(types::LINUX, 7 * MIB, 8 * MIB - 1),
            ],
        }
    }

    fn image(sectors: u64) -> Cursor<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; (sectors * SECTOR) as usize]);
        write(&mut disk, 9 * MIB, &sample()).unwrap();
        disk
    }

    #[test]
    fn write_then_read_round_trips_and_matches_sfdisk_layout() {
        let mut disk = image(9 * MIB);
        assert_eq!(read(&mut disk).unwrap(), sample());
        let b = disk.into_inner();
        assert_eq!(&b[440..444], &[0xcd, 0xab, 0x34, 0x12]);
        assert_eq!(b[446 + 4], 0x0c);
        // LBA 2048 = cylinder 0, head 32, sector 33.
        assert_eq!(&b[447..450], &[32, 33, 0]);
        assert_eq!(&b[510..512], &[0x55, 0xaa]);
        assert_eq!(disk_id_text(0xab), "000000ab");
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut t = sample();
        t.partitions[1].as_mut().unwrap().first_lba = 3 * MIB - 1;
        let e = encode(&t, 9 * MIB).unwrap_err().to_string();
        assert!(e.contains("partitions 1 and 2 overlap"), "{e}");
        let e = encode(&sample(), 8 * MIB - 1).unwrap_err().to_string();
        assert!(e.contains("is not on a"), "{e}");
        let mut t = sample();
        t.partitions[3].as_mut().unwrap().last_lba = 1 << 33;
        let e = encode(&t, 1 << 34).unwrap_err().to_string();
        assert!(e.contains("2 TiB"), "{e}");
    }

    #[test]
    fn a_gpt_disk_or_blank_sector_is_not_an_mbr() {
        let mut s = encode(&sample(), 9 * MIB).unwrap();
        s[446 + 4] = types::GPT_PROTECTIVE;
        assert!(decode(&s).unwrap_err().to_string().contains("GPT"));
        let e = decode(&[0u8; 512]).unwrap_err().to_string();
        assert!(e.contains("55 AA"), "{e}");
    }

    #[test]
    fn grow_fills_a_bigger_card_once() {
        // "Flashed" to a card of 20 MiB + 5 sectors.
        let n = 20 * MIB + 5;
        let mut disk = image(n);
        let got = grow_last_partition(&mut disk, n, 4).unwrap();
        assert_eq!(
            got,
            Grow::Grown {
                old_last_lba: 8 * MIB - 1,
                new_last_lba: 20 * MIB - 1
            }
        );
        let t = read(&mut disk).unwrap();
        assert_eq!(t.get(4).unwrap().last_lba, 20 * MIB - 1);
        assert_eq!(t.get(1), sample().get(1), "the others are untouched");
        assert_eq!(t.disk_id, sample().disk_id);
        let before = disk.get_ref().clone();
        assert_eq!(
            grow_last_partition(&mut disk, n, 4).unwrap(),
            Grow::AlreadyFull
        );
        assert_eq!(disk.get_ref(), &before);
    }

    #[test]
    fn a_power_cut_leaves_old_or_new_and_the_next_boot_finishes() {
        // Sector 0 is the only sector written: cut before it, the old table
        // reads and the next call grows; after it, the grown one reads.
        let n = 20 * MIB;
        let old = image(n);
        let mut cut = old.clone();
        assert_eq!(read(&mut cut).unwrap(), sample());
        assert!(matches!(
            grow_last_partition(&mut cut, n, 4).unwrap(),
            Grow::Grown { .. }
        ));
        let mut fine = cut.clone();
        assert_eq!(
            grow_last_partition(&mut fine, n, 4).unwrap(),
            Grow::AlreadyFull
        );
        // Only sector 0 differs between before and after.
        let (a, b) = (old.get_ref(), cut.get_ref());
        assert!(a[512..] == b[512..]);
    }

    #[test]
    fn grow_refuses_what_it_must_not_touch() {
        let n = 20 * MIB;
        let mut disk = image(n);
        let e = grow_last_partition(&mut disk, n, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the last one"), "{e}");
        let e = grow_last_partition(&mut disk, 6 * MIB, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the end"), "{e}");
        let mut t = sample();
        t.partitions[3] = None;
        let mut disk = Cursor::new(vec![0u8; (n * SECTOR) as usize]);
        write(&mut disk, n, &t).unwrap();
        let e = grow_last_partition(&mut disk, n, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no partition 4"), "{e}");
    }

    #[test]
    fn grow_stops_at_two_tib() {
        let n = 3u64 << 32; // a 6 TiB card
        let mut t = sample();
        t.partitions[3].as_mut().unwrap().last_lba = 8 * MIB - 1;
        let s = encode(&t, n).unwrap();
        // A sparse stand-in: only sector 0 matters.
        let mut disk = Cursor::new(s.to_vec());
        let got = grow_last_partition(&mut disk, n, 4).unwrap();
        let Grow::Grown { new_last_lba, .. } = got else {
            panic!("{got:?}")
        };
        assert!(new_last_lba + 1 - 7 * MIB <= MAX_SECTORS);
        assert!(new_last_lba > 1 << 31);
    }
}
