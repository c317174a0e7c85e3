//! `kiln flash` of the rpi3 self-test image (raw, `.xz`, `.zst`) onto card
//! files, as a user runs it, and every refusal that can be met without a
//! real disk. The refusals that need one (the running system's disk, a
//! mounted or fixed disk) are unit-tested on fake `/sys` and `/proc` trees
//! in `builder/src/flash/target.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::raspi::{compare_card, compressed_rpi3};
use crate::util::{kiln, run, scratch, selftest_image, Run};

/// A card file of `len` bytes, every byte `fill`.
fn card(dir: &Path, name: &str, len: u64, fill: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![fill; len as usize]).unwrap();
    path
}

fn flash(args: &[&Path], flags: &[&str]) -> Run {
    let mut cmd: Command = kiln();
    cmd.arg("flash").args(args).args(flags).stdin(Stdio::null());
    run(&mut cmd)
}

fn bmap_of(image: &Path) -> PathBuf {
    PathBuf::from(format!("{}.bmap", image.display()))
}

fn sha256(path: &Path) -> String {
    kiln::packages::sha256_file(path).unwrap()
}

#[test]
fn flash_writes_raw_xz_and_zst_images_and_reads_them_back() {
    let built = selftest_image("rpi3");
    let compressed = compressed_rpi3();
    let image = std::fs::read(&built.image).unwrap();
    let len = image.len() as u64;
    let dir = scratch("flash");
    let bmap = bmap_of(&built.image);

    // .xz with the raw image's map onto a used card one MiB bigger: the
    // mapped blocks land, garbage stays only where nothing reads, and the
    // card past the image is untouched.
    let used = card(&dir, "used.img", len + (1 << 20), 0xa5);
    let xz = compressed.join("kiln-selftest.img.xz");
    let r = flash(&[&xz, &used], &["--yes", "--bmap", bmap.to_str().unwrap()]).success();
    assert_eq!(r.stdout.trim(), used.display().to_string());
    assert!(
        r.stderr.contains("read back and verified"),
        "no summary: {}",
        r.stderr
    );
    assert!(r.stderr.contains("MB/s"), "no throughput: {}", r.stderr);
    let got = std::fs::read(&used).unwrap();
    let (differ, read_garbage) = compare_card(&image, &got[..image.len()]);
    assert!(
        read_garbage.is_empty(),
        "garbage left where something reads: sectors {:?}",
        &read_garbage[..read_garbage.len().min(5)]
    );
    assert!(differ > 0, "the map was not used: every block was written");
    assert!(
        got[image.len()..].iter().all(|b| *b == 0xa5),
        "past the image"
    );
    drop(got);

    // .zst without a map onto a card of exactly the image's size: every
    // byte, so the card is the image.
    let exact = card(&dir, "exact.img", len, 0x5a);
    let zst = compressed.join("kiln-selftest.img.zst");
    flash(&[&zst, &exact], &["--yes", "--no-bmap"]).success();
    assert_eq!(sha256(&exact), built.sha256, ".zst without a map");

    // The raw image, its map found next to it, onto a fresh (zeroed) card:
    // byte for byte, as bmaptool's copy is.
    let fresh = card(&dir, "fresh.img", len, 0);
    let r = flash(&[&built.image, &fresh], &["--yes"]).success();
    assert!(r.stderr.contains(".img.bmap maps it"), "{}", r.stderr);
    assert_eq!(sha256(&fresh), built.sha256, "raw with its map");
    for f in [used, exact, fresh] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn flash_refuses_and_leaves_the_card_as_it_was() {
    let built = selftest_image("rpi3");
    let len = std::fs::metadata(&built.image).unwrap().len();
    let dir = scratch("flash-refusals");

    // One sector too small.
    let small = card(&dir, "small.img", len - 512, 0x33);
    flash(&[&built.image, &small], &["--yes"]).failure(1, "use a bigger card");
    let untouched = std::fs::read(&small).unwrap();
    assert!(
        untouched.len() as u64 == len - 512 && untouched.iter().all(|b| *b == 0x33),
        "a refused card was changed"
    );
    drop(untouched);
    std::fs::remove_file(&small).unwrap();

    // A target that is not there, and one that is a directory.
    flash(&[&built.image, &dir.join("none.img")], &["--yes"]).failure(1, "truncate -s 2G");
    flash(&[&built.image, &dir], &["--yes"]).failure(1, "neither a disk nor a regular file");

    // Nobody to ask and no --yes.
    let target = card(&dir, "card.img", len, 0x44);
    flash(&[&built.image, &target], &[]).failure(1, "pass --yes");
    assert!(
        std::fs::read(&target).unwrap().iter().all(|b| *b == 0x44),
        "written without a yes"
    );

    // A map that is not this image's: another size, then a wrong checksum.
    let foreign = dir.join("foreign.bmap");
    std::fs::copy(bmap_of(&selftest_image("rpi2").image), &foreign).unwrap();
    flash(
        &[&built.image, &target],
        &["--yes", "--bmap", foreign.to_str().unwrap()],
    )
    .failure(1, "use the map made with this image");
    let own = std::fs::read_to_string(bmap_of(&built.image)).unwrap();
    let first_sum = own.split("chksum=\"").nth(1).unwrap()[..64].to_string();
    std::fs::write(&foreign, own.replace(&first_sum, &"0".repeat(64))).unwrap();
    let r = flash(
        &[&built.image, &target],
        &["--yes", "--bmap", foreign.to_str().unwrap()],
    )
    .failure(1, "do not match its block map");
    assert!(r.stderr.contains("first MiB was zeroed"), "{}", r.stderr);

    // A damaged download: the .xz with a flipped byte in its middle. The
    // write stops, and the card's first MiB is zeroed so it never boots
    // half-written.
    let mut xz = std::fs::read(compressed_rpi3().join("kiln-selftest.img.xz")).unwrap();
    let middle = xz.len() / 2;
    xz[middle] ^= 0xff;
    let damaged = dir.join("damaged.img.xz");
    std::fs::write(&damaged, xz).unwrap();
    // Without a map its size is learnt by decompressing it once: the damage
    // shows before anything is written.
    std::fs::write(&target, vec![0x44u8; len as usize]).unwrap();
    flash(&[&damaged, &target], &["--yes", "--no-bmap"]).failure(1, "decompressing");
    assert_eq!(
        std::fs::read(&target)
            .unwrap()
            .iter()
            .filter(|b| **b != 0x44)
            .count(),
        0,
        "written although the image was damaged"
    );
    // With a map the write starts, stops at the damage, and zeroes the
    // first MiB.
    flash(
        &[&damaged, &target],
        &["--yes", "--bmap", bmap_of(&built.image).to_str().unwrap()],
    )
    .failure(1, "first MiB was zeroed");
    let head = std::fs::read(&target).unwrap();
    assert!(
        head[..1 << 20].iter().all(|b| *b == 0),
        "first MiB not zeroed"
    );
    std::fs::remove_file(&target).unwrap();
}
