//! GUIDs as GPT stores them, and the partition type GUIDs kiln uses.

use std::fmt;

/// A GUID, stored in on-disk byte order: the first three fields
/// little-endian, the last eight bytes as written ("mixed-endian").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the textual form, `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`
    /// (either case, no braces).
    pub fn parse(s: &str) -> Option<Guid> {
        parse_guid(s.as_bytes())
    }

    /// A GUID derived from a hash (reproducible builds): its first 16 bytes,
    /// with the RFC 9562 version 4 and variant bits set so that tools treat
    /// it as a random GUID. Shorter input is padded with zeroes.
    pub fn from_hash(bytes: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        let n = bytes.len().min(16);
        b[..n].copy_from_slice(&bytes[..n]);
        // The version is the top nibble of the third field, which is stored
        // little-endian: byte 7. The variant is the top bits of byte 8.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

/// The textual form in upper case, as `sgdisk` and the UEFI spec print it.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

/// `const` so that [`types`] can be written as text.
const fn parse_guid(s: &[u8]) -> Option<Guid> {
    if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    // Text byte i (0..16, big-endian reading order) lands at on-disk index
    // ORDER[i].
    const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    let (mut i, mut pos) = (0, 0);
    while i < 16 {
        if s[pos] == b'-' {
            pos += 1;
        }
        let (Some(hi), Some(lo)) = (hex(s[pos]), hex(s[pos + 1])) else {
            return None;
        };
        out[ORDER[i]] = (hi << 4) | lo;
        pos += 2;
        i += 1;
    }
    Some(Guid(out))
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const fn guid(s: &str) -> Guid {
    match parse_guid(s.as_bytes()) {
        Some(g) => g,
        None => panic!("bad GUID literal"),
    }
}

/// Partition type GUIDs (UEFI spec; the root ones from the UAPI Discoverable
/// Partitions Specification).
pub mod types {
    use super::{guid, Guid};

    /// EFI system partition.
    pub const ESP: Guid = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    /// Generic Linux filesystem data.
    pub const LINUX_FS: Guid = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    /// Root partition, x86-64.
    pub const ROOT_X86_64: Guid = guid("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    /// Root partition, 64-bit ARM.
    pub const ROOT_ARM64: Guid = guid("B921B045-1DF0-41C3-AF44-4C6F280D3FAE");
    /// Root partition, 32-bit ARM.
    pub const ROOT_ARM: Guid = guid("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3");
    /// `/var` partition.
    pub const VAR: Guid = guid("4D21B016-B534-45C2-A9FB-5C16E091FD2D");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip_and_byte_order() {
        let s = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let g = Guid::parse(s).unwrap();
        assert_eq!(g.0[..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(g.0[8..], [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert_eq!(g, types::ESP);
        assert_eq!(g.to_string(), s);
        assert_eq!(Guid::parse(&s.to_lowercase()), Some(g));
        assert_eq!(Guid::parse("C12A7328F81F11D2BA4B00A0C93EC93B"), None);
        assert_eq!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93G"), None);
    }

    #[test]
    fn guid_from_hash_sets_version_and_variant() {
        let text = Guid::from_hash(&[0xff; 32]).to_string();
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89AB".contains(&text[19..20]), "{text}");
        assert_eq!(Guid::from_hash(&[1, 2, 3]).0[..3], [1, 2, 3]);
    }
}
