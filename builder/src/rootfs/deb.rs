//! Unpacks a Debian package's `data.tar.*` into a [`Tree`], the way dpkg
//! would place the files but without running anything: no maintainer
//! scripts, no root, nothing written to the host.

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::tree::{normalize, Kind, Node, Tree};

/// Top-level directories that live under `/usr` in a merged-/usr system
/// (bookworm's default). Package paths are moved there and the top-level
/// names become symlinks.
pub const MERGED_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Paths never shipped: documentation, manuals, translations. Copyright
/// files stay (they are the packages' licences).
fn excluded(path: &str) -> bool {
    const DROP: &[&str] = &[
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
        "usr/share/lintian/",
        "usr/share/bug/",
        "usr/share/doc-base/",
        "usr/share/bash-completion/",
        "usr/share/zsh/",
        "usr/share/fish/",
    ];
    if DROP
        .iter()
        .any(|d| path.starts_with(d) || format!("{path}/") == *d)
    {
        return true;
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        // Keep `usr/share/doc/<pkg>/` and its `copyright`, nothing else.
        let mut parts = rest.splitn(2, '/');
        let _pkg = parts.next();
        return matches!(parts.next(), Some(file) if file != "copyright");
    }
    false
}

/// Maps a package path to where it lives in a merged-/usr tree.
pub fn merged_usr_path(path: &str) -> String {
    let first = path.split('/').next().unwrap_or("");
    if MERGED_USR_DIRS.contains(&first) {
        format!("usr/{path}")
    } else {
        path.to_string()
    }
}

/// Unpacks the `.deb` at `deb` into `tree`.
pub fn unpack(deb: &Path, tree: &mut Tree) -> Result<()> {
    let file = std::fs::File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    unpack_from(file, tree).with_context(|| format!("unpacking {}", deb.display()))
}

pub fn unpack_from(reader: impl Read + Seek, tree: &mut Tree) -> Result<()> {
    let mut archive = ar::Archive::new(reader);
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.context("reading the ar archive")?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let decoder: Box<dyn Read> = match name.as_str() {
            // dpkg writes multi-block xz: the kernel package (~400 MiB of
            // modules) decodes on all cores instead of one.
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new_parallel(&mut entry)),
            "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(&mut entry)?),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(&mut entry)),
            "data.tar" => Box::new(&mut entry),
            n if n.starts_with("data.tar") => bail!("unsupported compression for {n}"),
            _ => continue,
        };
        return unpack_tar(decoder, tree);
    }
    bail!("no data.tar member; is this a Debian package?")
}

fn unpack_tar(reader: impl Read, tree: &mut Tree) -> Result<()> {
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().context("reading data.tar")? {
        let mut entry = entry.context("reading a data.tar entry")?;
        let raw = entry.path_bytes();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Some(path) = normalize(&raw) else {
            bail!("unsafe path {raw:?} in package")
        };
        if path.is_empty() {
            continue;
        }
        let path = merged_usr_path(&path);
        if excluded(&path) {
            continue;
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::with_capacity(header.size().unwrap_or(0) as usize);
                entry
                    .read_to_end(&mut data)
                    .with_context(|| format!("reading {path}"))?;
                Kind::File(Arc::from(data))
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().context("symlink without target")?;
                Kind::Symlink(String::from_utf8_lossy(&target).into_owned())
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without target")?;
                let target = normalize(&String::from_utf8_lossy(&target))
                    .map(|t| merged_usr_path(&t))
                    .context("unsafe hard link target")?;
                match tree.get(&target) {
                    Some(n) => n.kind.clone(),
                    None if excluded(&target) => continue,
                    None => bail!("hard link {path} to {target}, which is not unpacked"),
                }
            }
            tar::EntryType::Char => Kind::CharDevice {
                major: header.device_major()?.unwrap_or(0),
                minor: header.device_minor()?.unwrap_or(0),
            },
            other => bail!("unsupported entry type {other:?} at {path}"),
        };
        tree.insert(
            &path,
            Node {
                kind,
                mode,
                uid,
                gid,
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_moves_top_level_dirs() {
        assert_eq!(merged_usr_path("bin/sh"), "usr/bin/sh");
        assert_eq!(merged_usr_path("lib64/ld.so"), "usr/lib64/ld.so");
        assert_eq!(merged_usr_path("etc/passwd"), "etc/passwd");
        assert_eq!(merged_usr_path("library/x"), "library/x");
    }

    #[test]
    fn docs_are_dropped_but_copyright_kept() {
        assert!(excluded("usr/share/man/man1/ls.1.gz"));
        assert!(excluded("usr/share/doc/systemd/README.gz"));
        assert!(!excluded("usr/share/doc/systemd/copyright"));
        assert!(!excluded("usr/share/doc/systemd"));
        assert!(!excluded("usr/share/mandoc"));
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o4755);
            h.set_uid(0);
            h.set_gid(42);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_entries_keep_modes_owners_and_links() {
        use tar::EntryType as E;
        let data = tar_with(&[
            ("./bin/", E::Directory, b"", ""),
            ("./bin/su", E::Regular, b"su!", ""),
            ("./bin/su2", E::Link, b"", "./bin/su"),
            ("./usr/bin/sh", E::Symlink, b"", "dash"),
            ("./usr/share/man/man1/x.1", E::Regular, b"doc", ""),
        ]);
        let mut t = Tree::default();
        unpack_tar(&data[..], &mut t).unwrap();
        let su = t.get("usr/bin/su").unwrap();
        assert_eq!((su.mode, su.gid), (0o4755, 42));
        assert_eq!(t.file_data("usr/bin/su2").unwrap().as_ref(), b"su!");
        assert_eq!(
            t.get("usr/bin/sh").unwrap().kind,
            Kind::Symlink("dash".into())
        );
        assert!(t.get("usr/share/man/man1/x.1").is_none());
    }

    #[test]
    fn escaping_paths_are_refused() {
        let data = tar_with(&[("x", tar::EntryType::Regular, b"", "")]);
        // tar::Builder refuses `..` itself, so patch the name in the header.
        let mut data = data;
        data[..5].copy_from_slice(b"../x\0");
        let mut h = tar::Header::from_byte_slice(&data[..512]).clone();
        h.set_cksum();
        data[..512].copy_from_slice(h.as_bytes());
        let err = unpack_tar(&data[..], &mut Tree::default()).unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{err}");
    }
}
