//! The `.modinfo` section of a kernel module, read straight from the ELF
//! file (32 or 64 bit, either byte order), so no host `modinfo` or `depmod`
//! is needed and modules of any architecture can be indexed.

use anyhow::{bail, ensure, Context, Result};

/// The `key=value` strings of a module's `.modinfo` section, in file order.
pub fn read(elf: &[u8]) -> Result<Vec<(String, String)>> {
    let section = modinfo_section(elf)?;
    Ok(section
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    big: bool,
}

impl<'a> Elf<'a> {
    fn bytes(&self, off: u64, len: u64) -> Result<&'a [u8]> {
        let start = usize::try_from(off).ok();
        let end = off.checked_add(len).and_then(|e| usize::try_from(e).ok());
        match (start, end) {
            (Some(s), Some(e)) if e <= self.data.len() => Ok(&self.data[s..e]),
            _ => bail!(
                "ELF offset {off}+{len} is past the end of the file ({} bytes)",
                self.data.len()
            ),
        }
    }

    fn uint(&self, off: u64, size: u64) -> Result<u64> {
        let b = self.bytes(off, size)?;
        let mut v: u64 = 0;
        for i in 0..b.len() {
            let byte = if self.big { b[i] } else { b[b.len() - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    }

    /// A pointer-sized field (`Elf32_Off`/`Elf64_Off`, `..._Addr`, `..._Xword`).
    fn word(&self, off: u64) -> Result<u64> {
        self.uint(off, if self.is64 { 8 } else { 4 })
    }
}

/// Section header fields kiln needs.
struct Section {
    name: u32,
    offset: u64,
    size: u64,
    link: u32,
    kind: u32,
}

const SHT_NOBITS: u32 = 8;

fn modinfo_section(data: &[u8]) -> Result<&[u8]> {
    ensure!(
        data.len() >= 52 && data[..4] == *b"\x7fELF",
        "not an ELF file (a kernel module must be one)"
    );
    let elf = Elf {
        data,
        is64: match data[4] {
            1 => false,
            2 => true,
            c => bail!("unknown ELF class {c}"),
        },
        big: match data[5] {
            1 => false,
            2 => true,
            e => bail!("unknown ELF byte order {e}"),
        },
    };
    // e_shoff, e_shentsize, e_shnum, e_shstrndx
    let (shoff, rest) = if elf.is64 { (0x28, 0x3a) } else { (0x20, 0x2e) };
    let shoff = elf.word(shoff)?;
    let shentsize = elf.uint(rest, 2)?;
    let mut shnum = elf.uint(rest + 2, 2)?;
    let mut shstrndx = elf.uint(rest + 4, 2)? as u32;
    ensure!(shoff != 0, "the ELF file has no section headers");
    let section = |i: u64| -> Result<Section> {
        let base = shoff + i * shentsize;
        Ok(if elf.is64 {
            Section {
                name: elf.uint(base, 4)? as u32,
                kind: elf.uint(base + 4, 4)? as u32,
                offset: elf.uint(base + 0x18, 8)?,
                size: elf.uint(base + 0x20, 8)?,
                link: elf.uint(base + 0x28, 4)? as u32,
            }
        } else {
            Section {
                name: elf.uint(base, 4)? as u32,
                kind: elf.uint(base + 4, 4)? as u32,
                offset: elf.uint(base + 0x10, 4)?,
                size: elf.uint(base + 0x14, 4)?,
                link: elf.uint(base + 0x18, 4)? as u32,
            }
        })
    };
    // Extended numbering: the real counts live in section 0.
    if shnum == 0 {
        shnum = section(0)?.size;
    }
    if shstrndx == 0xffff {
        shstrndx = section(0)?.link;
    }
    ensure!(
        u64::from(shstrndx) < shnum,
        "the ELF section name table index {shstrndx} is out of range"
    );
    let names = section(u64::from(shstrndx))?;
    let names = elf.bytes(names.offset, names.size)?;
    for i in 0..shnum {
        let s = section(i)?;
        let name = names
            .get(s.name as usize..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .context("an ELF section name points outside the name table")?;
        if name == b".modinfo" {
            ensure!(s.kind != SHT_NOBITS, "the .modinfo section has no data");
            return elf.bytes(s.offset, s.size);
        }
    }
    bail!("no .modinfo section (is this a kernel module?)")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal relocatable ELF with one `.modinfo` section, as the kernel
    /// build writes it (enough for the parser; nothing else is valid).
    pub(crate) fn fake_module(is64: bool, big: bool, modinfo: &[&str]) -> Vec<u8> {
        let mut info = Vec::new();
        for kv in modinfo {
            info.extend_from_slice(kv.as_bytes());
            info.push(0);
        }
        let names = b"\0.modinfo\0.shstrtab\0".to_vec();
        let ehsize: usize = if is64 { 64 } else { 52 };
        let shentsize: usize = if is64 { 64 } else { 40 };
        let info_off = ehsize;
        let names_off = info_off + info.len();
        let shoff = (names_off + names.len()).next_multiple_of(8);
        let put = |out: &mut Vec<u8>, v: u64, n: usize| {
            let b = v.to_le_bytes();
            let mut f: Vec<u8> = b[..n].to_vec();
            if big {
                f.reverse();
            }
            out.extend_from_slice(&f);
        };
        let w = if is64 { 8 } else { 4 };
        let mut out = vec![0x7f, b'E', b'L', b'F', if is64 { 2 } else { 1 }];
        out.push(if big { 2 } else { 1 });
        out.push(1);
        out.resize(16, 0);
        put(&mut out, 1, 2); // e_type ET_REL
        put(&mut out, 62, 2); // e_machine
        put(&mut out, 1, 4); // e_version
        put(&mut out, 0, w); // e_entry
        put(&mut out, 0, w); // e_phoff
        put(&mut out, shoff as u64, w); // e_shoff
        put(&mut out, 0, 4); // e_flags
        put(&mut out, ehsize as u64, 2);
        put(&mut out, 0, 2); // e_phentsize
        put(&mut out, 0, 2); // e_phnum
        put(&mut out, shentsize as u64, 2);
        put(&mut out, 3, 2); // e_shnum
        put(&mut out, 2, 2); // e_shstrndx
        assert_eq!(out.len(), ehsize);
        out.extend_from_slice(&info);
        out.extend_from_slice(&names);
        out.resize(shoff, 0);
        let mut sh = |name: u64, kind: u64, off: usize, size: usize| {
            let start = out.len();
            put(&mut out, name, 4);
            put(&mut out, kind, 4);
            put(&mut out, 0, w); // flags
            put(&mut out, 0, w); // addr
            put(&mut out, off as u64, w);
            put(&mut out, size as u64, w);
            put(&mut out, 0, 4); // link
            put(&mut out, 0, 4); // info
            put(&mut out, 1, w); // addralign
            put(&mut out, 0, w); // entsize
            assert_eq!(out.len() - start, shentsize);
        };
        sh(0, 0, 0, 0);
        sh(1, 1, info_off, info.len());
        sh(10, 3, names_off, names.len());
        out
    }

    #[test]
    fn reads_modinfo_of_every_elf_flavor() {
        for is64 in [false, true] {
            for big in [false, true] {
                let elf = fake_module(is64, big, &["license=GPL", "depends=a,b", "softdep=pre: c"]);
                let info = read(&elf).unwrap();
                assert_eq!(
                    info,
                    vec![
                        ("license".into(), "GPL".into()),
                        ("depends".into(), "a,b".into()),
                        ("softdep".into(), "pre: c".into()),
                    ],
                    "is64={is64} big={big}"
                );
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(read(b"not an elf file at all, clearly not, no no no no no").is_err());
        let mut elf = fake_module(true, false, &["depends="]);
        elf.truncate(100);
        assert!(read(&elf).is_err());
    }
}
