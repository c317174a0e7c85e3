//! A built image's boot partition, found by GPT name or as partition 1 of
//! an MBR disk: `node.yaml` written there, where someone flashing a card
//! would drop it and kiln-firstboot's boot-partition datasource reads it
//! (`kiln boot --node` puts it there for boards whose kernel has no QEMU
//! fw_cfg driver), and files read from it (`kiln boot` takes a Pi image's
//! kernel, initramfs, DTB and `cmdline.txt` from there).

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_node::datasource::boot_partition::NODE_FILE;
use kiln_node::gpt::{self, SECTOR};
use kiln_node::layout::{ESP_PARTITION, INSTALLER_PARTITION};
use kiln_node::mbr;

/// Blocks written back: only those the change touched, so a sparse image
/// stays sparse.
const BLOCK: usize = 4096;

/// Reads files (paths relative to the partition's root) from the image's
/// boot partition.
pub fn read(image: &Path, paths: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut file =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let (_, bytes) = read_esp(&mut file, image)?;
    let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new())
        .context("reading the boot partition (FAT)")?;
    paths
        .iter()
        .map(|path| {
            let mut data = Vec::new();
            fs.root_dir()
                .open_file(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| {
                    format!(
                        "reading {path} from the boot partition of {}",
                        image.display()
                    )
                })?;
            Ok(data)
        })
        .collect()
}

/// Writes (or replaces) `node.yaml` on the image's boot partition: a node
/// image's ESP (GPT name), a Pi card's partition 1 (MBR), or an installer
/// stick's partition (the installer copies it onto the disk it installs).
pub fn put(image: &Path, config: &[u8]) -> Result<()> {
    put_files(image, &[(NODE_FILE, config)])
}

/// Writes (or replaces) `files` (name, bytes) in the root of the image's
/// boot partition, as [`put`] writes `node.yaml`.
pub fn put_files(image: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let (offset, before) = read_esp(&mut file, image)?;
    let mut volume = Cursor::new(before.clone());
    {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
            .context("reading the boot partition (FAT)")?;
        for (name, bytes) in files {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(bytes)
                .with_context(|| format!("writing {name} on the boot partition"))?;
        }
        fs.unmount()?;
    }
    let after = volume.into_inner();
    for (i, (old, new)) in before.chunks(BLOCK).zip(after.chunks(BLOCK)).enumerate() {
        if old != new {
            file.seek(SeekFrom::Start(offset + (i * BLOCK) as u64))?;
            file.write_all(new)?;
        }
    }
    file.sync_all()
        .with_context(|| format!("writing {}", image.display()))
}

/// The boot partition (by its GPT name, or partition 1 of an MBR) of the image open as
/// `file`: its byte offset and its bytes.
fn read_esp(file: &mut File, image: &Path) -> Result<(u64, Vec<u8>)> {
    if let Ok(table) = mbr::read(file) {
        // A Raspberry Pi card: the boot partition is partition 1.
        let part = table
            .get(1)
            .with_context(|| format!("{}: its MBR has no partition 1", image.display()))?;
        return read_range(file, part.first_lba, part.last_lba);
    }
    let sectors = file.metadata()?.len() / SECTOR;
    let table = gpt::read(file, sectors)
        .with_context(|| format!("reading the partition table of {}", image.display()))?;
    let part = table
        .partitions
        .iter()
        .find(|p| p.name == ESP_PARTITION || p.name == INSTALLER_PARTITION)
        .with_context(|| format!("{} has no {ESP_PARTITION} partition", image.display()))?;
    read_range(file, part.first_lba, part.last_lba)
}

/// Sectors `first..=last`, and their byte offset.
fn read_range(file: &mut File, first: u64, last: u64) -> Result<(u64, Vec<u8>)> {
    let offset = first * SECTOR;
    let mut bytes = vec![0; ((last + 1 - first) * SECTOR) as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut bytes)?;
    Ok((offset, bytes))
}

/// What the boot loader would start: the kernel and initrd named by the
/// image's systemd-boot entry ([`super::uefi::entry`]) or, without one,
/// its `extlinux.conf` ([`super::extlinux::config`]), copied into `dir`,
/// and the command line. For QEMU machines whose firmware cannot read the
/// disk (OVMF has no pvscsi driver) or is not emulated (the Jetson Nano's
/// U-Boot): QEMU starts the same kernel.
pub fn loader_entry(image: &Path, dir: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let read = |path: &str| -> Result<Vec<u8>> {
        Ok(read(image, &[path.trim_start_matches('/')])?.remove(0))
    };
    let (conf, [linux, initrd_key, options]) = match read(super::uefi::ENTRY) {
        Ok(data) => (data, ["linux", "initrd", "options"]),
        Err(_) => (
            read(super::extlinux::CONFIG)
                .with_context(|| format!("no {} either", super::uefi::ENTRY))?,
            ["kernel", "initrd", "append"],
        ),
    };
    let entry = String::from_utf8(conf).context("the boot loader's entry is not text")?;
    let field = |key: &str| {
        entry
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
            .with_context(|| format!("the boot loader's entry has no `{key}` line"))
    };
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, read(field(linux)?)?)?;
    let initrd = dir.join("initrd.img");
    std::fs::write(&initrd, read(field(initrd_key)?)?)?;
    Ok((kernel, initrd, field(options)?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::image::DiskTable;
    use crate::disk::layout::{place, PartitionPlan};
    use crate::fs::fat;
    use kiln_node::gpt::{types, Guid};

    /// A disk with a FAT boot partition and another one after it.
    fn disk(path: &Path) {
        disk_with(
            path,
            DiskTable::Gpt {
                disk_guid: Guid::from_hash(b"disk"),
            },
        )
    }

    fn disk_with(path: &Path, table: DiskTable) {
        let plans = [(ESP_PARTITION, types::ESP), ("other", types::LINUX_FS)].map(|(name, t)| {
            PartitionPlan {
                name: name.into(),
                type_guid: t,
                unique_guid: Guid::from_hash(name.as_bytes()),
                mbr_type: 0x0c,
                size_bytes: 64 << 20,
            }
        });
        let esp = fat::build(
            &fat::FatSpec {
                size_bytes: 64 << 20,
                label: "KILN-ESP".into(),
                volume_id: 1,
                fat32: true,
                mtime: 1_700_000_000,
            },
            &[fat::FatFile {
                path: "kiln/vmlinuz".into(),
                data: b"kernel".to_vec(),
            }],
        )
        .unwrap();
        let other = vec![0xaa; 1 << 20];
        crate::disk::image::write(path, &place(&plans), table, &[Some(&esp), Some(&other)])
            .unwrap();
    }

    fn read_back(image: &Path) -> (Vec<u8>, Vec<u8>) {
        let mut file = std::fs::File::open(image).unwrap();
        let sectors = file.metadata().unwrap().len() / SECTOR;
        let table = gpt::read(&mut file, sectors).unwrap();
        let p = &table.partitions[1];
        let mut other = vec![0; ((p.last_lba + 1 - p.first_lba) * SECTOR) as usize];
        file.seek(SeekFrom::Start(p.first_lba * SECTOR)).unwrap();
        file.read_exact(&mut other).unwrap();
        let node = read(image, &[NODE_FILE]).unwrap().remove(0);
        (node, other)
    }

    #[test]
    fn reads_and_writes_the_first_partition_of_an_mbr_disk() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("pi.img");
        disk_with(
            &image,
            DiskTable::Mbr {
                disk_id: 0x1234_5678,
            },
        );
        assert_eq!(
            read(&image, &["kiln/vmlinuz"]).unwrap(),
            [b"kernel".to_vec()]
        );
        put(&image, b"role: agent\n").unwrap();
        assert_eq!(
            read(&image, &[NODE_FILE]).unwrap(),
            [b"role: agent\n".to_vec()]
        );
        let e = read(&image, &["config.txt"]).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("reading config.txt from the boot partition of"),
            "{e:#}"
        );
    }

    #[test]
    fn put_writes_and_replaces_node_yaml_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        disk(&image);
        put(
            &image,
            b"role: server\ncluster-init: true\nhostname: a-long-host-name\n",
        )
        .unwrap();
        put(&image, b"role: server\nhostname: b\n").unwrap();
        let (node, other) = read_back(&image);
        assert_eq!(node, b"role: server\nhostname: b\n");
        assert!(other[..1 << 20].iter().all(|b| *b == 0xaa));
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&image).unwrap();
        assert!(meta.blocks() * 512 < 8 << 20, "the image stays sparse");
    }

    #[test]
    fn an_image_without_a_boot_partition_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("zero.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let e = put(&image, b"role: server\n").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("reading the partition table of"),
            "{e:#}"
        );
    }
}
