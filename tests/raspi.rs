//! The Raspberry Pi images, read back as the Pi's boot ROM and firmware
//! would (QEMU cannot run them, so this is the firmware path's proof): an
//! MBR card, a FAT32 partition 1 with the firmware files, device trees,
//! `config.txt` and `cmdline.txt` that name what is there, a root squashfs
//! that `unsquashfs` lists, and an image that fits a 2 GB card.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use kiln::board::{Arch, Board};
use kiln::boot::node_file;
use kiln_node::mbr;

use crate::util::{scratch, selftest_image};

/// What a card sold as "2 GB" holds at least (they hold a little under
/// 2,000,000,000 bytes; the smallest seen hold about 1.9 GB).
const TWO_GB_CARD: u64 = 1_900_000_000;

fn partition_bytes(image: &Path, p: &mbr::Partition) -> Vec<u8> {
    let mut file = std::fs::File::open(image).unwrap();
    let mut data = vec![0; ((p.last_lba + 1 - p.first_lba) * 512) as usize];
    file.seek(SeekFrom::Start(p.first_lba * 512)).unwrap();
    file.read_exact(&mut data).unwrap();
    data
}

/// A card written from the Pi `image` compared with the image: how many
/// sectors differ, and which of those something reads (anything but the
/// root slots past the squashfs).
pub(crate) fn compare_card(image: &[u8], card: &[u8]) -> (usize, Vec<usize>) {
    let table = mbr::read(&mut std::io::Cursor::new(image)).unwrap();
    let parts: Vec<&mbr::Partition> = table.partitions.iter().flatten().collect();
    let squashfs_end = {
        let at = (parts[1].first_lba * 512) as usize;
        at + u64::from_le_bytes(image[at + 40..at + 48].try_into().unwrap()) as usize
    };
    let slots = (parts[1].first_lba * 512) as usize..((parts[2].last_lba + 1) * 512) as usize;
    let differ: Vec<usize> = (0..image.len())
        .step_by(512)
        .filter(|&at| image[at..at + 512] != card[at..at + 512])
        .collect();
    let read_garbage = differ
        .iter()
        .filter(|&&at| !slots.contains(&at) || at < squashfs_end)
        .map(|at| at / 512)
        .collect();
    (differ.len(), read_garbage)
}

fn assert_pi_card(board_name: &str) {
    let board = Board::load(board_name).unwrap();
    let raspi = board.raspi.clone().expect("a Pi board");
    let built = selftest_image(board_name);
    let image = &built.image;
    let len = std::fs::metadata(image).unwrap().len();
    assert!(
        len <= TWO_GB_CARD,
        "{board_name}: a {len}-byte image does not fit a 2 GB card"
    );

    // MBR: FAT32 boot, root A, root B, data, packed in that order.
    let table = mbr::read(&mut std::fs::File::open(image).unwrap()).unwrap();
    let parts: Vec<&mbr::Partition> = table.partitions.iter().flatten().collect();
    let kinds: Vec<u8> = parts.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [0x0c, 0x83, 0x83, 0x83],
        "{board_name}: partition types"
    );
    for pair in parts.windows(2) {
        assert_eq!(pair[0].last_lba + 1, pair[1].first_lba);
    }
    assert_eq!(parts[0].first_lba, 2048, "1 MiB aligned");
    assert!((parts[3].last_lba + 1) * 512 <= len);
    assert_eq!(
        (parts[0].last_lba + 1 - parts[0].first_lba) * 512,
        board.disk.esp_mib << 20
    );

    // FAT32, labelled for people who put the card in a laptop.
    let boot = partition_bytes(image, parts[0]);
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(boot), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_label().trim(), "KILN-BOOT");

    let [config, cmdline] =
        <[Vec<u8>; 2]>::try_from(node_file::read(image, &["config.txt", "cmdline.txt"]).unwrap())
            .unwrap();
    let config = String::from_utf8(config).unwrap();
    let cmdline = String::from_utf8(cmdline).unwrap();
    let lines: Vec<&str> = config.lines().collect();
    for line in ["[all]", "enable_uart=1", "upstream_kernel=1"] {
        assert!(
            lines.contains(&line),
            "{board_name}: config.txt lacks {line}:\n{config}"
        );
    }
    assert_eq!(
        lines.contains(&"arm_64bit=1"),
        board.arch == Arch::Arm64,
        "{board_name}: arm_64bit=1 only on arm64:\n{config}"
    );
    let (kernel, initrd) = kiln::boot::raspi::kernel_and_initrd(&config).unwrap();
    assert!(lines.contains(&format!("initramfs {initrd} followkernel").as_str()));
    for (section, extra) in &raspi.config {
        assert!(lines.contains(&format!("[{section}]").as_str()));
        for line in extra {
            assert!(lines.contains(&line.as_str()), "{board_name}: {line}");
        }
    }

    // cmdline.txt: one line, the board's console, kiln's keys, and the
    // signature of this very card.
    assert_eq!(cmdline.lines().count(), 1);
    assert!(cmdline.starts_with(&board.kernel.cmdline), "{cmdline}");
    assert!(
        cmdline
            .trim_end()
            .ends_with(&format!("kiln.mbr={:08x}", table.disk_id)),
        "{board_name}: cmdline.txt does not name this card's signature: {cmdline}"
    );
    assert!(cmdline.contains(" ro kiln.root=kiln-root-a "));

    // Everything config.txt names, and every firmware file and DTB the
    // board lists, is on the partition.
    let mut names: Vec<&str> = vec![&kernel, &initrd];
    names.extend(raspi.firmware.iter().map(String::as_str));
    names.extend(raspi.dtbs.iter().map(String::as_str));
    let files = node_file::read(image, &names).unwrap();
    for (name, data) in names.iter().zip(&files) {
        assert!(
            data.len() > 1000,
            "{board_name}: {name} is {} bytes",
            data.len()
        );
    }
    let kernel_data = &files[0];
    match board.arch {
        // arm64 Image header: "ARM\x64" at 56.
        Arch::Arm64 => assert_eq!(&kernel_data[56..60], b"ARMd"),
        // zImage magic at 0x24.
        _ => assert_eq!(&kernel_data[0x24..0x28], &0x016f_2818u32.to_le_bytes()),
    }
    assert_eq!(
        &files[1][..2],
        &[0x1f, 0x8b],
        "{board_name}: a gzip'd initramfs"
    );
    for (name, data) in names
        .iter()
        .zip(&files)
        .filter(|(n, _)| n.ends_with(".dtb"))
    {
        assert_eq!(
            &data[..4],
            &[0xd0, 0x0d, 0xfe, 0xed],
            "{name} is a device tree"
        );
    }
    if raspi.firmware.iter().any(|f| f == "bootcode.bin") {
        assert!(names.contains(&"start.elf") && names.contains(&"fixup.dat"));
    }

    // The root, as any squashfs tool reads it; the firmware left it.
    let dir = scratch(&format!("raspi-root-{board_name}"));
    let root = dir.join("root.squashfs");
    std::fs::write(&root, partition_bytes(image, parts[1])).unwrap();
    let out = Command::new("unsquashfs")
        .arg("-l")
        .arg("-d")
        .arg("r")
        .arg(&root)
        .output()
        .expect("unsquashfs runs (scripts/setup-host.sh installs squashfs-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for path in [
        "r/usr/bin/k3s",
        "r/usr/bin/kiln-firstboot",
        "r/usr/lib/kiln/node.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == path),
            "{board_name}: unsquashfs lists no {path}"
        );
    }
    assert!(!listing.contains("r/usr/lib/raspi-firmware"));

    // The sidecars: `sha256sum -c` reads the checksum, and bmaptool's copy
    // of the image through our block map is the image, byte for byte.
    let with = |ext: &str| {
        let mut p = image.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p)
    };
    let sum = std::fs::read_to_string(with(".sha256")).unwrap();
    assert_eq!(sum, format!("{}  kiln-selftest.img\n", built.sha256));
    // Pi Imager's repository: the raw image is the download (no .xz asked
    // for), found through a file:// URL of the out dir.
    let entry = imager_entry(&image.with_file_name("kiln-selftest.rpi-imager.json"));
    assert_eq!(entry["extract_size"], len);
    assert_eq!(entry["extract_sha256"], built.sha256.as_str());
    assert_eq!(entry["image_download_size"], len);
    assert_eq!(entry["image_download_sha256"], built.sha256.as_str());
    assert_eq!(
        entry["url"],
        format!("file://{}", image.display()).as_str(),
        "{board_name}: url"
    );
    assert_eq!(entry["init_format"], "cloudinit");
    assert_eq!(entry["release_date"], "2024-01-01");
    let devices: Vec<&str> = entry["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(devices, raspi.imager_devices, "{board_name}: devices");
    assert!(
        entry["name"].as_str().unwrap().contains("TEST DOUBLE"),
        "an image with the k3s double must say so in Pi Imager: {}",
        entry["name"]
    );
    let copy = dir.join("bmaptool-copy.img");
    let out = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(with(".bmap"))
        .arg(image)
        .arg(&copy)
        .output()
        .expect("bmaptool runs (scripts/setup-host.sh installs bmap-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        kiln::packages::sha256_file(&copy).unwrap(),
        built.sha256,
        "{board_name}: bmaptool copy with kiln's bmap differs from the image"
    );
    // A used card: a flasher writes the mapped blocks and leaves what the
    // card held in the others (bmaptool truncates a regular file, so a used
    // card is played here: garbage, then the mapped blocks). Only the root
    // slots past the squashfs may keep garbage; the tables, the boot and
    // data file systems (whose zero blocks are free-cluster entries and
    // bitmaps) and the squashfs must come out as in the image.
    let want = std::fs::read(image).unwrap();
    let mut got = vec![0xa5u8; want.len()];
    let bmap = std::fs::read_to_string(with(".bmap")).unwrap();
    let ranges = bmap
        .lines()
        .filter(|l| l.trim_start().starts_with("<Range"))
        .filter_map(|l| l.split("> ").nth(1)?.split(" </Range>").next());
    for range in ranges {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let span = a * 4096..((b + 1) * 4096).min(want.len());
        got[span.clone()].copy_from_slice(&want[span]);
    }
    let (differ, read_garbage) = compare_card(&want, &got);
    assert!(
        read_garbage.is_empty(),
        "{board_name}: a flasher following the bmap leaves garbage where something reads: \
         sectors {:?}",
        &read_garbage[..read_garbage.len().min(5)]
    );
    assert!(
        differ > 0,
        "{board_name}: the bmap maps every block (nothing skipped)"
    );
    eprintln!(
        "{board_name}: {len} bytes raw ({} MiB), {} files on the boot partition",
        len >> 20,
        names.len() + 2
    );
}

#[test]
fn rpi3_card_layout_firmware_and_root() {
    assert_pi_card("rpi3");
}

#[test]
fn rpi2_card_layout_firmware_and_root() {
    assert_pi_card("rpi2");
}

#[test]
fn rpi4_card_layout_firmware_and_root() {
    assert_pi_card("rpi4");
}

/// The one `os_list` entry of a Pi Imager repository file.
fn imager_entry(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut repo: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = repo["os_list"].as_array_mut().unwrap();
    assert_eq!(list.len(), 1, "{text}");
    list.remove(0)
}

/// The rpi3 self-test image written as `.img.xz` and `.img.zst` (built once
/// per run; `tests/flash.rs` flashes them too).
pub(crate) fn compressed_rpi3() -> &'static Path {
    static OUT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    OUT.get_or_init(|| {
        let out = scratch("raspi-compressed");
        crate::util::run(
            crate::util::kiln()
                .arg("build")
                .arg(crate::util::fixture("selftest/spec.yaml"))
                .args([
                    "--board",
                    "rpi3",
                    "--format",
                    "xz",
                    "--format",
                    "zst",
                    "--format",
                    "pi-imager",
                    "--imager-url",
                    "https://images.example.invalid/kiln/",
                    "--out",
                ])
                .arg(&out),
        )
        .success();
        out
    })
}

/// `--format xz --format zst`: both files decompress to the image the
/// shared build made (same spec, same bytes), written with every core.
#[test]
fn rpi3_compressed_images_decompress_to_the_raw_image() {
    let built = selftest_image("rpi3");
    let out = compressed_rpi3();
    let xz = std::fs::File::open(out.join("kiln-selftest.img.xz")).unwrap();
    let zst = std::fs::File::open(out.join("kiln-selftest.img.zst")).unwrap();
    for (name, mut reader) in [
        (
            "xz",
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(xz)) as Box<dyn Read>,
        ),
        (
            "zst",
            Box::new(zstd::stream::read::Decoder::new(zst).unwrap()),
        ),
    ] {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        std::io::copy(&mut reader, &mut h).unwrap();
        let got = kiln::packages::hex(&sha2::Digest::finalize(h));
        assert_eq!(got, built.sha256, "the .{name} does not hold the image");
    }
    assert!(
        !out.join("kiln-selftest.img.bmap").exists(),
        "--format replaces the board's outputs"
    );
    // With an .xz written, Pi Imager downloads it from where --imager-url
    // says it will be, and checks what it unpacks against the raw image.
    let xz = out.join("kiln-selftest.img.xz");
    let entry = imager_entry(&out.join("kiln-selftest.rpi-imager.json"));
    assert_eq!(
        entry["url"],
        "https://images.example.invalid/kiln/kiln-selftest.img.xz"
    );
    assert_eq!(
        entry["image_download_size"],
        std::fs::metadata(&xz).unwrap().len()
    );
    assert_eq!(
        entry["image_download_sha256"],
        kiln::packages::sha256_file(&xz).unwrap().as_str()
    );
    assert_eq!(entry["extract_sha256"], built.sha256.as_str());
}

/// A Pi Imager repository is for Pi boards only, said before anything is
/// built.
#[test]
fn pi_imager_json_is_refused_for_a_board_that_is_not_a_pi() {
    let dir = scratch("pi-imager-not-a-pi");
    crate::util::run(
        crate::util::kiln()
            .args([
                "build",
                "--board",
                "qemu-x86_64",
                "--format",
                "pi-imager",
                "--out",
            ])
            .arg(dir.join("out")),
    )
    .failure(
        1,
        "board qemu-x86_64 is not a Raspberry Pi: --format pi-imager (a Raspberry Pi \
         Imager repository JSON) is for the rpi2, rpi3 and rpi4 boards",
    );
    assert!(!dir.join("out").exists(), "output left behind");
}
