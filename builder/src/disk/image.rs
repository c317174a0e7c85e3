//! Writes the raw disk image: partition contents at their offsets (holes
//! where they are all zeros, so the file stays sparse) and the partition
//! table (GPT, or MBR for the Raspberry Pi).
//! The image is written under a temporary name and renamed when complete,
//! so an interrupted build never leaves a half-image under the final name.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln_node::gpt::{self, Guid, Partition, Table, SECTOR};
use kiln_node::mbr;

use super::layout::Layout;

/// Chunk size for hole detection: zero chunks are skipped, not written.
const CHUNK: usize = 64 * 1024;

/// The partition table and the disk's identity, derived from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskTable {
    Gpt {
        disk_guid: Guid,
    },
    /// At most four partitions, numbered in layout order.
    Mbr {
        disk_id: u32,
    },
}

/// Writes `layout` with `contents[i]` in partition `i` (None = left empty).
pub fn write(
    path: &Path,
    layout: &Layout,
    table: DiskTable,
    contents: &[Option<&[u8]>],
) -> Result<()> {
    let dir = path.parent().context("output path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-")
        .suffix(".img.partial")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary image in {}", dir.display()))?;
    write_to(tmp.as_file_mut(), layout, table, contents)?;
    tmp.as_file().sync_all().context("syncing the image")?;
    tmp.persist(path)
        .with_context(|| format!("renaming the image to {}", path.display()))?;
    Ok(())
}

pub fn write_to(
    file: &mut File,
    layout: &Layout,
    table: DiskTable,
    contents: &[Option<&[u8]>],
) -> Result<()> {
    file.set_len(layout.disk_bytes)
        .context("sizing the image (is the disk full?)")?;
    for (placed, content) in layout.partitions.iter().zip(contents) {
        let Some(data) = content else { continue };
        if data.len() as u64 > placed.size_bytes {
            bail!(
                "{} needs {} MiB but its partition has {} MiB; raise its size in the board file",
                placed.plan.name,
                (data.len() as u64).div_ceil(1 << 20),
                placed.size_bytes >> 20
            );
        }
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            if chunk.iter().all(|b| *b == 0) {
                continue;
            }
            file.seek(SeekFrom::Start(placed.offset + (i * CHUNK) as u64))?;
            file.write_all(chunk)
                .with_context(|| format!("writing {} (is the disk full?)", placed.plan.name))?;
        }
    }
    let sectors = layout.disk_bytes / SECTOR;
    match table {
        DiskTable::Gpt { disk_guid } => {
            let table = Table {
                disk_guid,
                partitions: layout
                    .partitions
                    .iter()
                    .map(|p| Partition {
                        type_guid: p.plan.type_guid,
                        unique_guid: p.plan.unique_guid,
                        first_lba: p.first_lba(),
                        last_lba: p.last_lba(),
                        attributes: 0,
                        name: p.plan.name.clone(),
                    })
                    .collect(),
            };
            gpt::write(file, sectors, &table).context("writing the partition table")?;
        }
        DiskTable::Mbr { disk_id } => {
            if layout.partitions.len() > 4 {
                bail!(
                    "an MBR holds four partitions, the layout has {}",
                    layout.partitions.len()
                );
            }
            let mut partitions: [Option<mbr::Partition>; 4] = Default::default();
            for (slot, p) in partitions.iter_mut().zip(&layout.partitions) {
                *slot = Some(mbr::Partition {
                    kind: p.plan.mbr_type,
                    bootable: false,
                    first_lba: p.first_lba(),
                    last_lba: p.last_lba(),
                });
            }
            let table = mbr::Table {
                disk_id,
                partitions,
            };
            mbr::write(file, sectors, &table).context("writing the MBR partition table")?;
        }
    }
    Ok(())
}
