//! The on-disk encoding: headers, entry arrays, the protective MBR, and
//! sector I/O.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{
    last_usable_lba, Guid, Partition, Table, ENTRY_COUNT, ENTRY_SIZE, FIRST_USABLE_LBA, SECTOR,
};

pub(super) const SIGNATURE: &[u8; 8] = b"EFI PART";
pub(super) const REVISION: u32 = 0x0001_0000;
pub(super) const HEADER_SIZE: u32 = 92;
/// A partition name is at most 36 UTF-16 code units.
pub(super) const NAME_UNITS: usize = 36;
/// Refuse entry arrays bigger than this when reading (a corrupt header).
pub(super) const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub(super) my_lba: u64,
    pub(super) alternate_lba: u64,
    pub(super) first_usable: u64,
    pub(super) last_usable: u64,
    pub(super) disk_guid: Guid,
    pub(super) entries_lba: u64,
    pub(super) entry_count: u32,
    pub(super) entry_size: u32,
    pub(super) entries_crc: u32,
}

impl Header {
    pub(super) fn entries_sectors(&self) -> u64 {
        entry_array_sectors(self.entry_count, self.entry_size)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut s = vec![0u8; SECTOR as usize];
        s[0..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&REVISION.to_le_bytes());
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid.0);
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let c = crc(&s[..HEADER_SIZE as usize]);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        s
    }

    /// Checks everything that does not need the entry array.
    pub(super) fn decode(s: &[u8], lba: u64, disk_sectors: u64) -> Result<Header, String> {
        if &s[0..8] != SIGNATURE {
            return Err(format!("no GPT signature at LBA {lba}"));
        }
        let size = u32le(s, 12);
        if !(HEADER_SIZE..=SECTOR as u32).contains(&size) {
            return Err(format!("header at LBA {lba} has a bad size {size}"));
        }
        let mut copy = s[..size as usize].to_vec();
        copy[16..20].fill(0);
        let (stored, computed) = (u32le(s, 16), crc(&copy));
        if stored != computed {
            return Err(format!(
                "header at LBA {lba} fails its CRC (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        if u32le(s, 8) >> 16 != 1 {
            return Err(format!(
                "header at LBA {lba} has unknown revision {:08x}",
                u32le(s, 8)
            ));
        }
        let h = Header {
            my_lba: u64le(s, 24),
            alternate_lba: u64le(s, 32),
            first_usable: u64le(s, 40),
            last_usable: u64le(s, 48),
            disk_guid: Guid(s[56..72].try_into().unwrap_or_default()),
            entries_lba: u64le(s, 72),
            entry_count: u32le(s, 80),
            entry_size: u32le(s, 84),
            entries_crc: u32le(s, 88),
        };
        let array_bytes = u64::from(h.entry_count) * u64::from(h.entry_size);
        if h.my_lba != lba {
            Err(format!(
                "header at LBA {lba} says it is at LBA {}",
                h.my_lba
            ))
        } else if h.entry_size < 128 || h.entry_size % 8 != 0 || array_bytes > MAX_ENTRY_ARRAY_BYTES
        {
            Err(format!(
                "header at LBA {lba} has a bad entry array ({} entries of {} bytes)",
                h.entry_count, h.entry_size
            ))
        } else if h.first_usable > h.last_usable || h.last_usable >= disk_sectors {
            Err(format!(
                "header at LBA {lba} has a usable area {}..={} that does not fit \
                 a disk of {disk_sectors} sectors",
                h.first_usable, h.last_usable
            ))
        } else if h.entries_lba < 1 || h.entries_lba + h.entries_sectors() > disk_sectors {
            Err(format!(
                "header at LBA {lba} puts its entry array at LBA {}, outside the disk",
                h.entries_lba
            ))
        } else {
            Ok(h)
        }
    }
}

/// A header and its entry array, both checked.
pub(super) struct RawTable {
    pub(super) header: Header,
    pub(super) entries: Vec<u8>,
}

impl RawTable {
    /// Used entries with their slot numbers.
    pub(super) fn slots(&self) -> io::Result<Vec<(usize, Partition)>> {
        let h = &self.header;
        let mut out = Vec::new();
        for (slot, e) in self.entries.chunks_exact(h.entry_size as usize).enumerate() {
            let type_guid = Guid(e[0..16].try_into().unwrap_or_default());
            if type_guid == Guid::ZERO {
                continue;
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
            let p = Partition {
                type_guid,
                unique_guid: Guid(e[16..32].try_into().unwrap_or_default()),
                first_lba: u64le(e, 32),
                last_lba: u64le(e, 40),
                attributes: u64le(e, 48),
                name: String::from_utf16_lossy(&units[..end]),
            };
            if p.first_lba > p.last_lba
                || p.first_lba < h.first_usable
                || p.last_lba > h.last_usable
            {
                return Err(invalid(format!(
                    "partition {} ({:?}) spans LBA {}..={}, outside the usable area {}..={}",
                    slot + 1,
                    p.name,
                    p.first_lba,
                    p.last_lba,
                    h.first_usable,
                    h.last_usable
                )));
            }
            out.push((slot, p));
        }
        Ok(out)
    }

    pub(super) fn table(&self) -> io::Result<Table> {
        Ok(Table {
            disk_guid: self.header.disk_guid,
            partitions: self.slots()?.into_iter().map(|(_, p)| p).collect(),
        })
    }
}

pub(super) fn read_raw(
    disk: &mut (impl Read + Seek),
    lba: u64,
    disk_sectors: u64,
) -> io::Result<RawTable> {
    if lba == 0 || lba >= disk_sectors {
        return Err(invalid(format!(
            "LBA {lba} is outside a disk of {disk_sectors} sectors"
        )));
    }
    let header = Header::decode(&read_at(disk, lba, 1)?, lba, disk_sectors).map_err(invalid)?;
    let mut entries = read_at(disk, header.entries_lba, header.entries_sectors())?;
    entries.truncate(header.entry_count as usize * header.entry_size as usize);
    let computed = crc(&entries);
    if computed != header.entries_crc {
        return Err(invalid(format!(
            "entry array of the header at LBA {lba} fails its CRC \
             (stored {:08x}, computed {computed:08x})",
            header.entries_crc
        )));
    }
    Ok(RawTable { header, entries })
}

pub(super) fn encode_entries(disk_sectors: u64, table: &Table) -> io::Result<Vec<u8>> {
    let last_usable = last_usable_lba(disk_sectors);
    if last_usable < FIRST_USABLE_LBA {
        return Err(bad_input(format!(
            "a disk of {disk_sectors} sectors is too small for a GPT"
        )));
    }
    if table.partitions.len() > ENTRY_COUNT as usize {
        return Err(bad_input(format!(
            "{} partitions, at most {ENTRY_COUNT}",
            table.partitions.len()
        )));
    }
    let mut sorted: Vec<&Partition> = table.partitions.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    for w in sorted.windows(2) {
        if w[1].first_lba <= w[0].last_lba {
            return Err(bad_input(format!(
                "partitions {:?} and {:?} overlap",
                w[0].name, w[1].name
            )));
        }
    }
    let mut out = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (p, e) in table
        .partitions
        .iter()
        .zip(out.chunks_exact_mut(ENTRY_SIZE as usize))
    {
        if p.first_lba < FIRST_USABLE_LBA || p.first_lba > p.last_lba || p.last_lba > last_usable {
            return Err(bad_input(format!(
                "partition {:?} spans LBA {}..={}, outside the usable area \
                 {FIRST_USABLE_LBA}..={last_usable}",
                p.name, p.first_lba, p.last_lba
            )));
        }
        if p.type_guid == Guid::ZERO {
            return Err(bad_input(format!(
                "partition {:?} has the all-zero type GUID",
                p.name
            )));
        }
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > NAME_UNITS {
            return Err(bad_input(format!(
                "partition name {:?} is longer than {NAME_UNITS} UTF-16 units",
                p.name
            )));
        }
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.unique_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (i, u) in name.iter().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
    Ok(out)
}

/// Primary and backup headers for a table written by [`write()`].
pub(super) fn headers(disk_sectors: u64, disk_guid: Guid, entries_crc: u32) -> (Header, Header) {
    let es = entry_array_sectors(ENTRY_COUNT, ENTRY_SIZE);
    let primary = Header {
        my_lba: 1,
        alternate_lba: disk_sectors - 1,
        first_usable: FIRST_USABLE_LBA,
        last_usable: last_usable_lba(disk_sectors),
        disk_guid,
        entries_lba: 2,
        entry_count: ENTRY_COUNT,
        entry_size: ENTRY_SIZE,
        entries_crc,
    };
    let backup = Header {
        my_lba: disk_sectors - 1,
        alternate_lba: 1,
        entries_lba: disk_sectors - 1 - es,
        ..primary
    };
    (primary, backup)
}

pub(super) fn mbr_size_field(disk_sectors: u64) -> u32 {
    u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX)
}

pub(super) fn protective_mbr(disk_sectors: u64) -> Vec<u8> {
    let mut s = vec![0u8; SECTOR as usize];
    let e = &mut s[446..462];
    // Status, CHS of the first sector (0/0/2), type, CHS of the last (max).
    e[..8].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&mbr_size_field(disk_sectors).to_le_bytes());
    s[510..512].copy_from_slice(&[0x55, 0xaa]);
    s
}

/// For a plain protective MBR (one entry, type 0xEE from LBA 1) whose size is
/// not the disk's: the corrected sector. `None` if it is right, or if it is
/// anything else (a hybrid MBR, no MBR), which is then left alone.
pub(super) fn fix_protective_mbr(s: &[u8], disk_sectors: u64) -> Option<Vec<u8>> {
    if s[510..512] != [0x55, 0xaa] {
        return None;
    }
    let entry = |i: usize| &s[446 + 16 * i..462 + 16 * i];
    let used: Vec<usize> = (0..4).filter(|&i| entry(i)[4] != 0).collect();
    let [i] = used[..] else { return None };
    let e = entry(i);
    let want = mbr_size_field(disk_sectors);
    if e[4] != 0xee || u32le(e, 8) != 1 || u32le(e, 12) == want {
        return None;
    }
    let mut fixed = s.to_vec();
    let off = 446 + 16 * i + 12;
    fixed[off..off + 4].copy_from_slice(&want.to_le_bytes());
    Some(fixed)
}

pub(super) fn entry_array_sectors(count: u32, size: u32) -> u64 {
    (u64::from(count) * u64::from(size)).div_ceil(SECTOR)
}

/// Writes `data` at `lba` unless the disk already holds exactly that.
pub(crate) fn update(
    disk: &mut (impl Read + Write + Seek),
    lba: u64,
    data: &[u8],
) -> io::Result<()> {
    let sectors = (data.len() as u64).div_ceil(SECTOR);
    if read_at(disk, lba, sectors)?[..data.len()] != *data {
        write_at(disk, lba, data)?;
    }
    Ok(())
}

pub(crate) fn read_at(
    disk: &mut (impl Read + Seek),
    lba: u64,
    sectors: u64,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (sectors * SECTOR) as usize];
    disk.seek(SeekFrom::Start(lba * SECTOR))?;
    disk.read_exact(&mut buf).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading {sectors} sectors at LBA {lba}: {e}"),
        )
    })?;
    Ok(buf)
}

pub(crate) fn write_at(disk: &mut (impl Write + Seek), lba: u64, data: &[u8]) -> io::Result<()> {
    disk.seek(SeekFrom::Start(lba * SECTOR))?;
    disk.write_all(data)
        .map_err(|e| io::Error::new(e.kind(), format!("writing at LBA {lba}: {e}")))
}

pub(super) fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub(super) fn u32le(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(super) fn u64le(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub(crate) fn bad_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
