//! streamOptimized VMDK: the disk format of an OVA, written by kiln itself.
//!
//! The layout follows VMware's *Virtual Disk Format 5.0* technote (it ships
//! in the public vmware/open-vmdk repository), section "Stream-Optimized
//! Compressed". Every block starts on a 512-byte sector:
//!
//! ```text
//! sector 0      sparse extent header, version 3, gdOffset = GD_AT_END
//! sector 1..21  embedded descriptor (text, NUL padded), then zeros
//! sector 128    (overHead, one grain in) for each grain table that has
//!               data, in disk order:
//!                 grain marker (lba, size) + zlib data, padded   (per grain)
//!                 ...
//!                 GT marker, grain table (512 entries, 4 sectors)
//!               GD marker, grain directory (one u32 per 32 MiB of capacity)
//!               footer marker, footer (the header with the real gdOffset)
//!               end-of-stream marker             <- always the last sector
//! ```
//!
//! A reader that streams (an OVF import sending the disk over the network)
//! walks the markers and stops at the end-of-stream marker; a reader that seeks (qemu, Workstation)
//! reads the footer from the last three sectors, then the grain directory and
//! tables. Both see the same disk.
//!
//! Choices, and why:
//!
//! - Grains are 64 KiB (128 sectors), 512 entries a grain table, as the
//!   technote and every VMware tool use. A grain that is all zeros is not
//!   stored (its table entry stays 0 = "not present, reads as zeros"), and a
//!   grain table with no grain is not written either (its directory entry
//!   stays 0), so a 32 GiB disk with 300 MiB written stores only those grains.
//!   The data starts one grain into the file (`overHead` = 128 sectors).
//!   VMware's own stream writer (`StreamVmdkWriter` in its Java transfer
//!   library) does all three the same way.
//! - Grain data is a zlib stream (RFC 1950: deflate with the 2-byte header
//!   and Adler-32), although the technote says "RFC 1951": that is what
//!   VMware's own writers produce (open-vmdk's `vmdk-convert` calls zlib's
//!   `deflateInit`, `StreamVmdkWriter` uses `java.util.zip.Deflater`) and
//!   what qemu expects (`uncompress()`).
//!   Every grain is compressed whole (a short last grain is zero-padded to
//!   64 KiB), because qemu rejects a grain that inflates to less.
//! - Header version 3 with flags 0x30001 (valid new-line detection,
//!   compressed grains, markers). ESXi refuses version 1 streamOptimized
//!   disks ("sparse VMDK version too old"), the trap of old qemu-img output.
//! - The end-of-stream marker is the very last sector and nothing follows
//!   it, so a streaming reader that stops there has consumed the whole file
//!   (data after it would be sent to a reader that no longer listens).
//! - Reproducible: no timestamps; the content ID (`CID`, `ddb.longContentID`)
//!   is derived from a seed the caller passes (the spec's hash), not random;
//!   each grain is compressed on its own, so splitting the work across
//!   threads cannot change a byte.
//!
//! The raw image is read once, front to back. On Linux the holes of a sparse
//! raw image are skipped with `SEEK_DATA`/`SEEK_HOLE` instead of being read as
//! zeros; elsewhere (or on a file system that cannot tell) every byte is read
//! and all-zero grains are dropped all the same.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{ensure, Context, Result};
use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};

use super::{write_atomically, Container, Written};

/// Bytes in a sector; every block of the file starts on one.
pub const SECTOR: u64 = 512;
/// Sectors in a grain (the unit of allocation and compression).
const GRAIN_SECTORS: u64 = 128;
/// Bytes in a grain: the virtual capacity must be a multiple of it.
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Entries in a grain table; one table covers 32 MiB.
const GTES_PER_GT: u64 = 512;
/// Sectors of one grain table (512 entries of 4 bytes).
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// Sectors reserved for the embedded descriptor (as open-vmdk and qemu do:
/// room for tools that edit it in place).
const DESCRIPTOR_SECTORS: u64 = 20;
/// Where the first grain marker starts: header and descriptor rounded up to
/// a grain, as VMware's writer does.
const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;
/// The largest virtual disk vSphere supports (62 TiB).
pub const MAX_CAPACITY: u64 = 62 << 40;

const MAGIC: u32 = 0x564d_444b; // "KDMV" on disk
const VERSION: u32 = 3;
const FLAG_VALID_NEWLINE_TEST: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const FLAGS: u32 = FLAG_VALID_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS;
const COMPRESSION_DEFLATE: u16 = 1;
const GD_AT_END: u64 = u64::MAX;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Grains read and compressed together (4 MiB): enough to keep every core
/// busy, little enough to keep memory flat.
const BATCH_GRAINS: usize = 64;

/// The virtual disk controller the disk is attached to. It sets
/// `ddb.adapterType` and the geometry in the descriptor; the OVF descriptor
/// names the same controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// LSI Logic parallel SCSI: every guest has a driver (`mptspi`).
    LsiLogic,
    /// VMware paravirtual SCSI (`vmw_pvscsi`): the fast one, kiln's default.
    Pvscsi,
    /// IDE: slow; for guests without SCSI drivers.
    Ide,
}

impl Adapter {
    pub const ALL: [Adapter; 3] = [Adapter::LsiLogic, Adapter::Pvscsi, Adapter::Ide];

    /// The name in `ddb.adapterType` and in board files.
    pub fn as_str(self) -> &'static str {
        match self {
            Adapter::LsiLogic => "lsilogic",
            Adapter::Pvscsi => "pvscsi",
            Adapter::Ide => "ide",
        }
    }

    /// The BIOS geometry VMware records for a disk of `sectors` sectors on
    /// this adapter: IDE uses 16 heads and 63 sectors a track (at most 16383
    /// cylinders); SCSI uses the BusLogic/LSI translation (64/32 below 1 GiB,
    /// 128/32 below 2 GiB, 255/63 above). Cylinders round down.
    pub fn geometry(self, sectors: u64) -> Geometry {
        let (heads, per_track, max_cylinders) = match self {
            Adapter::Ide => (16, 63, 16383),
            Adapter::LsiLogic | Adapter::Pvscsi => {
                let (h, s) = if sectors < (1 << 30) / SECTOR {
                    (64, 32)
                } else if sectors < (2 << 30) / SECTOR {
                    (128, 32)
                } else {
                    (255, 63)
                };
                (h, s, u64::MAX)
            }
        };
        Geometry {
            cylinders: (sectors / (heads * per_track)).clamp(1, max_cylinders),
            heads,
            sectors: per_track,
        }
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Adapter {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Adapter::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .with_context(|| {
                format!("unknown disk adapter {s:?}; use one of lsilogic, pvscsi, ide")
            })
    }
}

/// Cylinders, heads and sectors per track (`ddb.geometry.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u64,
    pub heads: u64,
    pub sectors: u64,
}

/// What to write, besides the raw image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkOptions {
    /// Virtual capacity in bytes: at least the raw image's size, a multiple
    /// of 64 KiB. The guest sees this size; only written grains are stored.
    pub capacity: u64,
    pub adapter: Adapter,
    /// Identifies the image (e.g. the spec's hash): the content ID derives
    /// from it, so the same seed gives the same bytes.
    pub seed: Vec<u8>,
}

/// A written VMDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkWritten {
    /// The file: path, stored size in bytes (the OVF `File ovf:size`), sha256.
    pub file: Written,
    /// Virtual capacity in bytes (the OVF `Disk ovf:capacity`).
    pub capacity: u64,
    /// Bytes of the grains stored, uncompressed (the OVF `ovf:populatedSize`).
    pub populated: u64,
}

/// The VMDK container, for `kiln build`'s list of outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmdk {
    pub options: VmdkOptions,
}

impl Container for Vmdk {
    fn extension(&self) -> &'static str {
        "vmdk"
    }

    fn write(&self, raw: &Path, out: &Path) -> Result<Written> {
        write(raw, out, &self.options).map(|w| w.file)
    }
}

/// Writes the raw disk image `raw` as a streamOptimized VMDK at `out`
/// (atomically: a temporary file beside it, renamed when complete).
pub fn write(raw: &Path, out: &Path, options: &VmdkOptions) -> Result<VmdkWritten> {
    let file =
        File::open(raw).with_context(|| format!("opening the raw image {}", raw.display()))?;
    let raw_len = file
        .metadata()
        .with_context(|| format!("reading the size of {}", raw.display()))?
        .len();
    let extent_name = out
        .file_name()
        .with_context(|| format!("{} names no file; give a file name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let mut grains = 0;
    let file_written = write_atomically(out, |w| {
        grains = write_stream(&file, raw_len, &extent_name, options, w)
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    })?;
    Ok(VmdkWritten {
        file: file_written,
        capacity: options.capacity,
        populated: grains * GRAIN_BYTES,
    })
}

/// Writes the VMDK for the first `raw_len` bytes of `raw` to `out`, naming
/// the extent `extent_name` in the descriptor (the VMDK's own file name).
/// Returns the number of grains stored.
pub fn write_stream(
    raw: &File,
    raw_len: u64,
    extent_name: &str,
    options: &VmdkOptions,
    out: impl Write,
) -> Result<u64> {
    check_capacity(raw_len, options.capacity)?;
    let capacity_sectors = options.capacity / SECTOR;
    let descriptor = descriptor(extent_name, options)?;

    let mut stream = Stream::new(out, capacity_sectors);
    stream.put(&header(capacity_sectors, GD_AT_END))?;
    let mut desc = descriptor.into_bytes();
    desc.resize(((OVERHEAD_SECTORS - 1) * SECTOR) as usize, 0);
    stream.put(&desc)?;
    debug_assert_eq!(stream.sector, OVERHEAD_SECTORS);

    let mut reader = GrainReader::new(raw, raw_len);
    let mut batch = Vec::with_capacity(BATCH_GRAINS);
    loop {
        batch.clear();
        while batch.len() < BATCH_GRAINS {
            match reader.next_grain()? {
                Some(grain) => batch.push(grain),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        for ((index, _), data) in batch.iter().zip(compress_all(&batch)?) {
            stream.grain(*index, &data)?;
        }
    }
    stream.finish()
}

pub fn check_capacity(raw_len: u64, capacity: u64) -> Result<()> {
    ensure!(
        capacity >= raw_len,
        "the disk capacity ({}) is smaller than the raw image ({}); raise the capacity to at least {}",
        human(capacity),
        human(raw_len),
        human(raw_len.next_multiple_of(GRAIN_BYTES)),
    );
    ensure!(
        capacity > 0 && capacity.is_multiple_of(GRAIN_BYTES),
        "the disk capacity ({capacity} bytes) is not a positive multiple of 64 KiB; round it up to {} bytes",
        capacity.next_multiple_of(GRAIN_BYTES).max(GRAIN_BYTES),
    );
    ensure!(
        capacity <= MAX_CAPACITY,
        "the disk capacity ({}) is larger than vSphere's limit of 62 TiB; lower it",
        human(capacity),
    );
    Ok(())
}

/// Sizes for messages: whole GiB or MiB when exact, else bytes.
fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The content ID pair VMware writes (`CID` and the 128-bit
/// `ddb.longContentID`, which ends with the CID), derived from `seed`.
fn content_id(seed: &[u8]) -> (u32, String) {
    let h = Sha256::new()
        .chain_update(b"kiln vmdk content id\0")
        .chain_update(seed)
        .finalize();
    let mut cid = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    // ffffffff means "no parent" and fffffffe is reserved: never use them.
    if cid >= 0xffff_fffe {
        cid = 0x7fff_fffe;
    }
    let long = format!("{}{cid:08x}", crate::packages::hex(&h[..12]));
    (cid, long)
}

/// The embedded descriptor.
fn descriptor(extent_name: &str, options: &VmdkOptions) -> Result<String> {
    ensure!(
        !extent_name.is_empty()
            && !extent_name
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control()),
        "the VMDK file name {extent_name:?} cannot go into a VMDK descriptor; use a name without quotes, backslashes or control characters",
    );
    let sectors = options.capacity / SECTOR;
    let (cid, long_cid) = content_id(&options.seed);
    let g = options.adapter.geometry(sectors);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {sectors} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{per_track}\"\n\
         ddb.longContentID = \"{long_cid}\"\n\
         ddb.toolsInstallType = \"4\"\n\
         ddb.toolsVersion = \"2147483647\"\n\
         ddb.virtualHWVersion = \"4\"\n",
        adapter = options.adapter,
        cylinders = g.cylinders,
        heads = g.heads,
        per_track = g.sectors,
    );
    // toolsInstallType 4 + toolsVersion 2^31-1: "open-vm-tools, managed by
    // the guest", so vSphere does not offer to install VMware Tools.
    // virtualHWVersion is obsolete (read by ESX 3.x only); VMware writes 4.
    ensure!(
        text.len() < (DESCRIPTOR_SECTORS * SECTOR) as usize,
        "the VMDK descriptor does not fit its {} bytes; use a shorter file name",
        DESCRIPTOR_SECTORS * SECTOR,
    );
    Ok(text)
}

/// The sparse extent header (also the footer, with the real `gd_offset`).
fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; SECTOR as usize] {
    let mut h = [0u8; SECTOR as usize];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: no redundant GD
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
    h[72] = 0; // uncleanShutdown
    h[73..77].copy_from_slice(b"\n \r\n"); // new-line detection characters
    h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
    h
}

/// A metadata marker: `num_sectors` of metadata of `kind` follow it.
fn marker(num_sectors: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut m = [0u8; SECTOR as usize];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    // m[8..12]: size 0 = not a grain
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The output side: tracks the sector position, the grain table being
/// filled and the grain directory.
struct Stream<W> {
    out: W,
    /// Next sector to write.
    sector: u64,
    capacity_sectors: u64,
    gd: Vec<u32>,
    /// The grain table being filled, for grains `gt_index * 512 ..`.
    gt: Vec<u32>,
    gt_index: u64,
    gt_used: bool,
    grains: u64,
}

impl<W: Write> Stream<W> {
    fn new(out: W, capacity_sectors: u64) -> Self {
        let gts = capacity_sectors.div_ceil(GTES_PER_GT * GRAIN_SECTORS);
        Stream {
            out,
            sector: 0,
            capacity_sectors,
            gd: vec![0; gts as usize],
            gt: vec![0; GTES_PER_GT as usize],
            gt_index: 0,
            gt_used: false,
            grains: 0,
        }
    }

    /// Writes `parts` back to back, then zeros to the next sector boundary.
    fn put_parts(&mut self, parts: &[&[u8]]) -> Result<()> {
        let mut len = 0;
        for part in parts {
            self.out
                .write_all(part)
                .context("writing the VMDK; is the disk full?")?;
            len += part.len() as u64;
        }
        let pad = len.next_multiple_of(SECTOR) - len;
        self.out
            .write_all(&[0u8; SECTOR as usize][..pad as usize])
            .context("writing the VMDK; is the disk full?")?;
        self.sector += len.div_ceil(SECTOR);
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.put_parts(&[bytes])
    }

    /// The current sector as a grain table or directory entry (32 bits).
    fn sector_entry(&self) -> Result<u32> {
        u32::try_from(self.sector).ok().with_context(|| {
            "the VMDK would grow past 2 TiB, the most its 32-bit tables can address; \
             ship less data in the image"
                .to_string()
        })
    }

    /// Stores grain `index` (compressed as a zlib stream).
    fn grain(&mut self, index: u64, zlib: &[u8]) -> Result<()> {
        let gt_index = index / GTES_PER_GT;
        if gt_index != self.gt_index {
            self.flush_gt()?;
            self.gt_index = gt_index;
        }
        self.gt[(index % GTES_PER_GT) as usize] = self.sector_entry()?;
        self.gt_used = true;
        let lba = index * GRAIN_SECTORS;
        let size = u32::try_from(zlib.len()).expect("a compressed grain fits 32 bits");
        self.put_parts(&[&lba.to_le_bytes(), &size.to_le_bytes(), zlib])?;
        self.grains += 1;
        Ok(())
    }

    /// Writes the grain table being filled, if it has any grain.
    fn flush_gt(&mut self) -> Result<()> {
        if !self.gt_used {
            return Ok(());
        }
        self.put(&marker(GT_SECTORS, MARKER_GT))?;
        self.gd[self.gt_index as usize] = self.sector_entry()?;
        let table: Vec<u8> = self.gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.put(&table)?;
        self.gt.fill(0);
        self.gt_used = false;
        Ok(())
    }

    /// Writes the last grain table, the directory, the footer and the
    /// end-of-stream marker. Returns the number of grains stored.
    fn finish(mut self) -> Result<u64> {
        self.flush_gt()?;
        let gd: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.put(&marker((gd.len() as u64).div_ceil(SECTOR), MARKER_GD))?;
        let gd_offset = self.sector;
        self.put(&gd)?;
        self.put(&marker(1, MARKER_FOOTER))?;
        self.put(&header(self.capacity_sectors, gd_offset))?;
        self.put(&marker(0, MARKER_EOS))?;
        self.out
            .flush()
            .context("writing the VMDK; is the disk full?")?;
        Ok(self.grains)
    }
}

/// Reads the grains of the raw image that hold data, in disk order.
struct GrainReader<'a> {
    file: &'a File,
    len: u64,
    /// Byte ranges that may hold data (the rest are holes), ascending.
    ranges: Vec<(u64, u64)>,
    range: usize,
    /// The first grain not yet looked at.
    next: u64,
}

impl<'a> GrainReader<'a> {
    fn new(file: &'a File, len: u64) -> Self {
        GrainReader {
            file,
            len,
            ranges: data_ranges(file, len),
            range: 0,
            next: 0,
        }
    }

    /// The next grain with a non-zero byte: its index and its 64 KiB
    /// (zero-padded past the end of the image).
    fn next_grain(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        while let Some(&(start, end)) = self.ranges.get(self.range) {
            let index = self.next.max(start / GRAIN_BYTES);
            if index * GRAIN_BYTES >= end {
                self.range += 1;
                continue;
            }
            self.next = index + 1;
            let offset = index * GRAIN_BYTES;
            let mut grain = vec![0u8; GRAIN_BYTES as usize];
            let n = (self.len - offset).min(GRAIN_BYTES) as usize;
            self.file
                .read_exact_at(&mut grain[..n], offset)
                .with_context(|| format!("reading the raw image at byte {offset}"))?;
            if !is_zero(&grain) {
                return Ok(Some((index, grain)));
            }
        }
        Ok(None)
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks_exact(8)
        .all(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) == 0)
        && bytes.chunks_exact(8).remainder().iter().all(|b| *b == 0)
}

/// The byte ranges of `file` that hold data, from `SEEK_DATA`/`SEEK_HOLE`.
/// Falls back to the whole file where the file system cannot tell.
#[cfg(target_os = "linux")]
fn data_ranges(file: &File, len: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let whole = vec![(0, len)];
    let mut ranges = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        // SAFETY: lseek on a descriptor we own; it only moves the file
        // offset, which this module never uses (all reads are positional).
        let start = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if start < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => ranges, // no data after pos
                _ => whole,
            };
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 || end < start {
            return whole;
        }
        let (start, end) = (start as u64, (end as u64).min(len));
        if start >= len {
            break;
        }
        ranges.push((start, end));
        pos = end;
    }
    ranges
}

#[cfg(not(target_os = "linux"))]
fn data_ranges(_file: &File, len: u64) -> Vec<(u64, u64)> {
    vec![(0, len)]
}

/// Compresses every grain of `batch` as its own zlib stream, spread over the
/// available cores; the result is in the same order.
fn compress_all(batch: &[(u64, Vec<u8>)]) -> Result<Vec<Vec<u8>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = batch.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    let mut z = Compress::new(Compression::default(), true);
                    part.iter()
                        .map(|(_, data)| deflate(&mut z, data))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for worker in workers {
            match worker.join() {
                Ok(part) => out.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// One zlib stream (RFC 1950) of `data`.
fn deflate(z: &mut Compress, data: &[u8]) -> Result<Vec<u8>> {
    z.reset();
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = z.total_in() as usize;
        match z
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
            .context("compressing a grain")?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => out.reserve(out.capacity().max(4096)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::{run, tool};
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Instant;

    const MIB: u64 = 1 << 20;

    fn options(capacity: u64) -> VmdkOptions {
        VmdkOptions {
            capacity,
            adapter: Adapter::Pvscsi,
            seed: b"test image".to_vec(),
        }
    }

    /// Deterministic bytes, half text-like (compressible), half noise.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 2 == 0 {
                    b"kiln bakes images "[i % 18]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    /// A sparse raw image of `len` bytes with `writes` at their offsets.
    fn raw_image(dir: &Path, len: u64, writes: &[(u64, Vec<u8>)]) -> PathBuf {
        let path = dir.join("disk.raw");
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for (offset, data) in writes {
            f.write_all_at(data, *offset).unwrap();
        }
        path
    }

    /// The image as a guest sees it: the raw bytes padded with zeros.
    fn expected_disk(raw: &Path, capacity: u64) -> Vec<u8> {
        let mut disk = std::fs::read(raw).unwrap();
        disk.resize(capacity as usize, 0);
        disk
    }

    /// An image with data in the first grain, across a grain boundary, a
    /// grain of written zeros, data in the second grain table (past 32 MiB)
    /// and in the short last grain.
    fn sample(dir: &Path) -> (PathBuf, u64) {
        let len = 40 * MIB + 3 * SECTOR;
        let raw = raw_image(
            dir,
            len,
            &[
                (0, pattern(10_000, 1)),
                (GRAIN_BYTES - 100, pattern(300, 2)),
                (5 * MIB, vec![0; GRAIN_BYTES as usize]),
                (33 * MIB + 17, pattern(200_000, 3)),
                (len - 700, pattern(700, 4)),
            ],
        );
        (raw, 64 * MIB)
    }

    fn vmdk_bytes(raw: &Path, opts: &VmdkOptions) -> (Vec<u8>, u64) {
        let f = File::open(raw).unwrap();
        let len = f.metadata().unwrap().len();
        let mut out = Vec::new();
        let grains = write_stream(&f, len, "disk.vmdk", opts, &mut out).unwrap();
        (out, grains)
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn sector(b: &[u8], n: u64) -> &[u8] {
        &b[(n * SECTOR) as usize..((n + 1) * SECTOR) as usize]
    }

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, GRAIN_BYTES, "a grain inflates to 64 KiB");
        out
    }

    /// Reads the VMDK as a streaming importer does: marker after marker from
    /// the overhead to the end-of-stream marker. Returns the disk and the
    /// marker kinds seen ("grain", "gt", "gd", "footer", "eos").
    fn read_streaming(b: &[u8], capacity: u64) -> (Vec<u8>, Vec<&'static str>) {
        let mut disk = vec![0u8; capacity as usize];
        let mut kinds = Vec::new();
        let mut s = u64_at(b, 64);
        loop {
            let at = (s * SECTOR) as usize;
            let (val, size) = (u64_at(b, at), u32_at(b, at + 8) as u64);
            if size != 0 {
                let data = inflate(&b[at + 12..at + 12 + size as usize]);
                let offset = (val * SECTOR) as usize;
                disk[offset..offset + GRAIN_BYTES as usize].copy_from_slice(&data);
                kinds.push("grain");
                s += (12 + size).div_ceil(SECTOR);
                continue;
            }
            let kind = match u32_at(b, at + 12) {
                MARKER_EOS => "eos",
                MARKER_GT => "gt",
                MARKER_GD => "gd",
                MARKER_FOOTER => "footer",
                other => panic!("unknown marker {other} at sector {s}"),
            };
            assert!(
                sector(b, s)[16..].iter().all(|x| *x == 0),
                "marker padding is zero"
            );
            kinds.push(kind);
            if kind == "eos" {
                assert_eq!(val, 0);
                assert_eq!(
                    (s + 1) * SECTOR,
                    b.len() as u64,
                    "nothing follows the end-of-stream marker"
                );
                return (disk, kinds);
            }
            s += 1 + val;
        }
    }

    /// Reads the VMDK as a seeking reader does: footer, directory, tables.
    fn read_by_tables(b: &[u8]) -> Vec<u8> {
        let footer = &b[b.len() - 1024..b.len() - 512];
        let capacity = u64_at(footer, 12) * SECTOR;
        let gd_offset = u64_at(footer, 56);
        let mut disk = vec![0u8; capacity as usize];
        let gts = capacity.div_ceil(GTES_PER_GT * GRAIN_BYTES);
        for g in 0..gts {
            let gde = u32_at(b, (gd_offset * SECTOR + g * 4) as usize) as u64;
            if gde == 0 {
                continue;
            }
            for e in 0..GTES_PER_GT {
                let gte = u32_at(b, (gde * SECTOR + e * 4) as usize) as u64;
                if gte == 0 {
                    continue;
                }
                let at = (gte * SECTOR) as usize;
                let index = g * GTES_PER_GT + e;
                assert_eq!(u64_at(b, at), index * GRAIN_SECTORS, "grain marker lba");
                let size = u32_at(b, at + 8) as usize;
                let offset = (index * GRAIN_BYTES) as usize;
                disk[offset..offset + GRAIN_BYTES as usize]
                    .copy_from_slice(&inflate(&b[at + 12..at + 12 + size]));
            }
        }
        disk
    }

    #[test]
    fn layout_follows_the_technote() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, capacity) = sample(dir.path());
        let (b, grains) = vmdk_bytes(&raw, &options(capacity));
        assert_eq!(b.len() as u64 % SECTOR, 0);

        // Header: magic, version 3, flags 0x30001, 128-sector grains,
        // descriptor at 1 (20 sectors), 512 GTEs, GD at the end, deflate.
        let h = sector(&b, 0);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32_at(h, 4), 3);
        assert_eq!(u32_at(h, 8), 0x30001);
        assert_eq!(u64_at(h, 12), capacity / SECTOR);
        assert_eq!(u64_at(h, 20), 128);
        assert_eq!((u64_at(h, 28), u64_at(h, 36)), (1, 20));
        assert_eq!(u32_at(h, 44), 512);
        assert_eq!(u64_at(h, 48), 0);
        assert_eq!(u64_at(h, 56), u64::MAX);
        assert_eq!(u64_at(h, 64), 128);
        assert_eq!(&h[72..79], b"\0\n \r\n\x01\0");

        // Footer: the same header with the real grain directory offset,
        // between its marker and the end-of-stream marker.
        let n = b.len() as u64 / SECTOR;
        let footer = sector(&b, n - 2);
        assert_eq!(&footer[..56], &h[..56]);
        assert_eq!(&footer[64..], &h[64..]);
        let gd_offset = u64_at(footer, 56);
        assert_eq!(u32_at(sector(&b, gd_offset - 1), 12), MARKER_GD);
        assert_eq!(u32_at(sector(&b, n - 3), 12), MARKER_FOOTER);
        assert_eq!(u64_at(sector(&b, n - 3), 0), 1);
        assert_eq!(sector(&b, n - 1), &[0u8; 512][..]);

        // Grains 0, 1 (boundary), 528 + 1..4 (33 MiB + 200 KB) and the last
        // one; the written zeros at 5 MiB are not stored.
        assert_eq!(grains, 2 + 4 + 1);
        let expected = expected_disk(&raw, capacity);
        let (streamed, kinds) = read_streaming(&b, capacity);
        assert_eq!(
            kinds,
            [
                "grain", "grain", "gt", "grain", "grain", "grain", "grain", "grain", "gt", "gd",
                "footer", "eos"
            ]
        );
        assert!(
            streamed == expected,
            "the streamed disk differs from the input"
        );
        assert!(
            read_by_tables(&b) == expected,
            "the disk read through the tables differs from the input"
        );
    }

    #[test]
    fn descriptor_names_type_adapter_geometry_and_content_id() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), MIB, &[(0, pattern(100, 9))]);
        let mut opts = options(32 << 30);
        opts.adapter = Adapter::LsiLogic;
        let (b, _) = vmdk_bytes(&raw, &opts);
        let text = std::str::from_utf8(&b[512..512 * 21])
            .unwrap()
            .trim_end_matches('\0');
        let (cid, long) = content_id(b"test image");
        let expected = format!(
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\n\
             createType=\"streamOptimized\"\n\n# Extent description\nRW 67108864 SPARSE \"disk.vmdk\"\n\n\
             # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"4177\"\n\
             ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.longContentID = \"{long}\"\n\
             ddb.toolsInstallType = \"4\"\nddb.toolsVersion = \"2147483647\"\nddb.virtualHWVersion = \"4\"\n"
        );
        assert_eq!(text, expected);
        assert_eq!(long.len(), 32);
        assert!(long.ends_with(&format!("{cid:08x}")));
        assert!(descriptor("a\"b.vmdk", &opts).is_err());
    }

    #[test]
    fn geometry_matches_vmware() {
        let gib = (1 << 30) / SECTOR;
        let g = |a: Adapter, s| {
            let g = a.geometry(s);
            (g.cylinders, g.heads, g.sectors)
        };
        assert_eq!(g(Adapter::LsiLogic, 32 * gib), (4177, 255, 63));
        assert_eq!(g(Adapter::Pvscsi, 32 * gib), (4177, 255, 63));
        assert_eq!(g(Adapter::Pvscsi, 100 * MIB / SECTOR), (100, 64, 32));
        assert_eq!(g(Adapter::LsiLogic, gib + gib / 2), (768, 128, 32));
        assert_eq!(g(Adapter::Pvscsi, 2048 * gib), (267349, 255, 63));
        assert_eq!(g(Adapter::Ide, 32 * gib), (16383, 16, 63));
        assert_eq!(g(Adapter::Ide, 100 * MIB / SECTOR), (203, 16, 63));
        assert_eq!(g(Adapter::Ide, 1), (1, 16, 63));
    }

    #[test]
    fn adapters_parse_by_their_descriptor_name() {
        for a in Adapter::ALL {
            assert_eq!(a.as_str().parse::<Adapter>().unwrap(), a);
        }
        let err = "buslogic".parse::<Adapter>().unwrap_err().to_string();
        assert!(err.contains("use one of lsilogic, pvscsi, ide"), "{err}");
    }

    #[test]
    fn all_zero_image_stores_no_grains() {
        let dir = tempfile::tempdir().unwrap();
        // A hole, and the same size of zeros really written.
        for written in [false, true] {
            let zeros = if written {
                vec![(0, vec![0u8; 4 * MIB as usize])]
            } else {
                vec![]
            };
            let raw = raw_image(dir.path(), 4 * MIB, &zeros);
            let (b, grains) = vmdk_bytes(&raw, &options(64 * MIB));
            assert_eq!(grains, 0);
            let (disk, kinds) = read_streaming(&b, 64 * MIB);
            assert_eq!(kinds, ["gd", "footer", "eos"]);
            assert!(disk.iter().all(|x| *x == 0));
            // overhead + GD marker + GD + footer marker + footer + EOS
            assert_eq!(b.len() as u64, (128 + 1 + 1 + 1 + 1 + 1) * SECTOR);
        }
    }

    #[test]
    fn same_input_gives_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, capacity) = sample(dir.path());
        let a = write(&raw, &dir.path().join("a.vmdk"), &options(capacity)).unwrap();
        let b = write(&raw, &dir.path().join("b.vmdk"), &options(capacity)).unwrap();
        // The extent names differ ("a.vmdk", "b.vmdk"); write the same name twice.
        let c = write(&raw, &dir.path().join("sub/a.vmdk"), &options(capacity)).unwrap();
        assert_eq!(a.file.sha256, c.file.sha256);
        assert_ne!(a.file.sha256, b.file.sha256);
        assert_eq!(
            std::fs::read(&a.file.path).unwrap(),
            std::fs::read(&c.file.path).unwrap()
        );
        assert_eq!(a.file.bytes, std::fs::metadata(&a.file.path).unwrap().len());
        assert_eq!(a.populated, 7 * GRAIN_BYTES);
        assert_eq!(a.capacity, capacity);
        // The returned sha256 is the file's.
        let on_disk: [u8; 32] = Sha256::digest(std::fs::read(&a.file.path).unwrap()).into();
        assert_eq!(on_disk, a.file.sha256);
        // Another seed changes the content ID, nothing else.
        let mut other = options(capacity);
        other.seed = b"another image".to_vec();
        let d = write(&raw, &dir.path().join("sub2/a.vmdk"), &other).unwrap();
        assert_ne!(d.file.sha256, a.file.sha256);
        assert_eq!(d.file.bytes, a.file.bytes);
    }

    #[test]
    fn bad_capacity_fails_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 8 * MIB, &[(0, pattern(10, 1))]);
        let out = dir.path().join("x.vmdk");
        let err = format!("{:#}", write(&raw, &out, &options(4 * MIB)).unwrap_err());
        assert!(
            err.contains("the disk capacity (4 MiB) is smaller than the raw image (8 MiB); raise the capacity to at least 8 MiB"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            write(&raw, &out, &options(8 * MIB + 512)).unwrap_err()
        );
        assert!(
            err.contains("not a positive multiple of 64 KiB; round it up to 8454144 bytes"),
            "{err}"
        );
        let err = format!("{:#}", write(&raw, &out, &options(64 << 40)).unwrap_err());
        assert!(
            err.contains("larger than vSphere's limit of 62 TiB"),
            "{err}"
        );
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn holes_are_skipped_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 256 * MIB, &[(100 * MIB, pattern(5000, 7))]);
        let f = File::open(&raw).unwrap();
        let ranges = data_ranges(&f, 256 * MIB);
        if ranges == [(0, 256 * MIB)] {
            eprintln!("skipping: this file system does not report holes (SEEK_DATA)");
            return;
        }
        let covered: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        assert!(covered < 2 * MIB, "{ranges:?}");
        let mut reader = GrainReader::new(&f, 256 * MIB);
        let (index, data) = reader.next_grain().unwrap().unwrap();
        assert_eq!(index, 100 * MIB / GRAIN_BYTES);
        assert_eq!(&data[..5000], &pattern(5000, 7)[..]);
        assert!(reader.next_grain().unwrap().is_none());
    }

    fn qemu_img() -> Option<PathBuf> {
        tool("qemu-img")
    }

    /// `qemu-img check` finds the VMDK clean and `qemu-img compare` finds
    /// it identical to the raw image (the capacity past the raw image's end
    /// reading as zeros).
    fn qemu_check_and_compare(qemu_img: &Path, raw: &Path, vmdk: &Path) {
        run(Command::new(qemu_img)
            .args(["check", "-f", "vmdk"])
            .arg(vmdk));
        run(Command::new(qemu_img)
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .args([raw, vmdk]));
    }

    fn qemu_info(qemu_img: &Path, vmdk: &Path) -> serde_json::Value {
        let info = run(Command::new(qemu_img)
            .args(["info", "--output=json"])
            .arg(vmdk));
        serde_json::from_str(&info).unwrap()
    }

    #[test]
    fn qemu_img_reads_it_back() {
        let Some(qemu_img) = qemu_img() else { return };
        let dir = tempfile::tempdir().unwrap();
        let (raw, capacity) = sample(dir.path());
        let vmdk = dir.path().join("disk.vmdk");
        write(&raw, &vmdk, &options(capacity)).unwrap();

        let info = qemu_info(&qemu_img, &vmdk);
        assert_eq!(info["format"], "vmdk", "{info}");
        assert_eq!(info["virtual-size"], capacity, "{info}");
        let data = &info["format-specific"]["data"];
        assert_eq!(data["create-type"], "streamOptimized", "{info}");
        assert_eq!(data["extents"][0]["compressed"], true, "{info}");
        assert_eq!(data["extents"][0]["cluster-size"], GRAIN_BYTES, "{info}");

        qemu_check_and_compare(&qemu_img, &raw, &vmdk);

        let back = dir.path().join("back.raw");
        run(Command::new(&qemu_img)
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .args([&vmdk, &back]));
        assert!(
            std::fs::read(&back).unwrap() == expected_disk(&raw, capacity),
            "qemu-img convert gives back other bytes than the input"
        );
    }

    #[test]
    fn qemu_img_reads_an_all_zero_disk() {
        let Some(qemu_img) = qemu_img() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(dir.path(), 8 * MIB, &[]);
        let vmdk = dir.path().join("zero.vmdk");
        let w = write(&raw, &vmdk, &options(8 * MIB)).unwrap();
        assert_eq!(w.populated, 0);
        let info = qemu_info(&qemu_img, &vmdk);
        assert_eq!(info["virtual-size"], 8 * MIB, "{info}");
        qemu_check_and_compare(&qemu_img, &raw, &vmdk);
    }

    #[test]
    fn large_virtual_disk_with_little_data_is_fast() {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_image(
            dir.path(),
            300 * MIB,
            &[
                (0, pattern(MIB as usize, 11)),
                (150 * MIB, pattern(3 * MIB as usize, 12)),
                (300 * MIB - 4096, pattern(4096, 13)),
            ],
        );
        let vmdk = dir.path().join("big.vmdk");
        let capacity = 64 << 30;
        let started = Instant::now();
        let w = write(&raw, &vmdk, &options(capacity)).unwrap();
        let took = started.elapsed();
        assert!(took.as_secs() < 10, "writing took {took:?}");
        assert_eq!(w.populated, (16 + 48 + 1) * GRAIN_BYTES);
        // 64 GiB = 2048 grain tables: the directory is 16 sectors.
        assert!(w.file.bytes < 4 * MIB, "{} bytes", w.file.bytes);

        let Some(qemu_img) = qemu_img() else { return };
        let info = qemu_info(&qemu_img, &vmdk);
        assert_eq!(info["virtual-size"], capacity, "{info}");
        qemu_check_and_compare(&qemu_img, &raw, &vmdk);
    }
}
