//! Booting a Raspberry Pi image the closest way QEMU allows: its `raspi3b`
//! and `raspi2b` machines cannot run the Pi's VideoCore firmware, so the
//! kernel, initramfs and `cmdline.txt` come from the image's own boot
//! partition, named by its own `config.txt`, with the model's device tree
//! from there too; the card is a copy of the image padded to a power of two
//! (QEMU refuses other SD sizes), so the user's file is never changed.
//! Where the machine lacks hardware the device tree names, the board file
//! edits a copy of the device tree ([`fdt`]), as QEMU itself does for some.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{fdt, Firmware};
use crate::boot::{node_file, raspi};

/// A card: the padded copy and the firmware files, in `dir`.
pub struct Card {
    pub image: PathBuf,
    pub firmware: Firmware,
    /// What was changed for QEMU (the device tree's edits).
    pub notes: Vec<String>,
}

/// The device tree QEMU passes to the kernel: a file on the boot
/// partition, and the board's edits to it.
pub struct DeviceTree<'a> {
    pub name: &'a str,
    pub edits: &'a [fdt::Edit],
}

/// The SD card size QEMU takes for an image of `image_bytes` flashed to a
/// card of at least `want` bytes: the next power of two.
pub fn card_bytes(image_bytes: u64, want: Option<u64>) -> u64 {
    image_bytes.max(want.unwrap_or(0)).next_power_of_two()
}

/// Copies `image` into `dir` as a card of [`card_bytes`], puts `node`
/// (already validated) and `files` (name, bytes) on its boot partition,
/// and takes the boot files out.
pub fn prepare(
    image: &Path,
    dir: &Path,
    want: Option<u64>,
    node: Option<&[u8]>,
    files: &[(&str, &[u8])],
    dtb: DeviceTree,
    append: &str,
) -> Result<Card> {
    let DeviceTree { name: dtb, edits } = dtb;
    let card = dir.join("sd.img");
    let len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    sparse_copy(image, &card, card_bytes(len, want))?;
    if let Some(node) = node {
        node_file::put(&card, node).context("putting node.yaml on the card's boot partition")?;
    }
    if !files.is_empty() {
        node_file::put_files(&card, files).context("putting files on the card's boot partition")?;
    }
    let [config, cmdline] =
        <[Vec<u8>; 2]>::try_from(node_file::read(&card, &["config.txt", "cmdline.txt"])?)
            .expect("two files");
    let (kernel, initrd) = raspi::kernel_and_initrd(&String::from_utf8_lossy(&config))
        .context("config.txt on the boot partition names no kernel= and initramfs")?;
    let mut blobs = node_file::read(&card, &[&kernel, &initrd, dtb])?;
    let mut notes = Vec::new();
    if !edits.is_empty() {
        blobs[2] = fdt::edit(&blobs[2], edits)
            .with_context(|| format!("editing {dtb} for QEMU (the board's dtb-edits)"))?;
        notes.push(format!(
            "edited {dtb} for QEMU: {}",
            edits
                .iter()
                .map(fdt::Edit::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut paths = Vec::new();
    for (name, data) in [&kernel, &initrd, &dtb.to_string()].iter().zip(blobs) {
        let path = dir.join(name);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    let cmdline = String::from_utf8_lossy(&cmdline);
    let append = format!("{} {append}", cmdline.trim()).trim().to_string();
    let mut paths = paths.into_iter();
    Ok(Card {
        image: card,
        firmware: Firmware::Kernel {
            kernel: paths.next().expect("kernel"),
            initrd: paths.next(),
            dtb: paths.next(),
            append,
        },
        notes,
    })
}

/// Copies `src` to `dest` of `len` bytes, leaving holes where `src` has
/// zeros (a card-sized copy of a mostly empty image stays small).
fn sparse_copy(src: &Path, dest: &Path, len: u64) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut to = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    to.set_len(len)
        .with_context(|| format!("sizing {} (is the disk full?)", dest.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let filled = crate::output::read_full(&mut from, &mut buf)?;
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().any(|b| *b != 0) {
            to.seek(SeekFrom::Start(offset))?;
            to.write_all(&buf[..filled])
                .with_context(|| format!("writing {} (is the disk full?)", dest.display()))?;
        }
        offset += filled as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_powers_of_two_at_least_the_image() {
        assert_eq!(card_bytes(674 << 20, None), 1 << 30);
        assert_eq!(card_bytes(674 << 20, Some(2 << 30)), 2 << 30);
        assert_eq!(card_bytes(1 << 30, Some(100 << 20)), 1 << 30);
        assert_eq!(card_bytes(674 << 20, Some(3 << 30)), 4 << 30);
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let mut data = vec![0u8; 3 << 20];
        data[(2 << 20) + 5] = 7;
        std::fs::write(&src, &data).unwrap();
        let dest = dir.path().join("b");
        sparse_copy(&src, &dest, 8 << 20).unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), 8 << 20);
        assert_eq!(&got[..3 << 20], &data[..]);
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&dest).unwrap().blocks() * 512 <= 2 << 20);
    }
}
