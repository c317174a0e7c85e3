//! `kiln build`: bad input fails before any work with a message that says
//! where and what to fix, leaves no image behind; good input is reproducible.

use std::path::Path;

use crate::util::{
    cpio_file, fat_file, kiln, partition, run, scratch, selftest_image, squashfs_file, Run,
};

/// Writes `spec` into a fresh dir and builds it there.
fn build_spec(name: &str, spec: &str, extra: &[(&str, &[u8])]) -> (Run, std::path::PathBuf) {
    let dir = scratch(name);
    std::fs::write(dir.join("spec.yaml"), spec).unwrap();
    for (file, data) in extra {
        std::fs::write(dir.join(file), data).unwrap();
    }
    let r = run(kiln()
        .arg("build")
        .arg(dir.join("spec.yaml"))
        .arg("--out")
        .arg(dir.join("out")));
    (r, dir)
}

#[track_caller]
fn assert_no_image(dir: &Path) {
    let out = dir.join("out");
    let images: Vec<_> = std::fs::read_dir(&out)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        images.iter().all(|f| !f.ends_with(".img")),
        "an image was left behind: {images:?}"
    );
}

#[test]
fn unknown_board_lists_the_boards() {
    let (r, dir) = build_spec(
        "bad-board",
        "board: raspberry-pi-9\nk3s: {test-double: true}\n",
        &[],
    );
    r.failure(1, "unknown board `raspberry-pi-9`; available boards: ")
        .failure(1, "qemu-x86_64");
    assert_no_image(&dir);
}

#[test]
fn malformed_yaml_is_placed() {
    let (r, dir) = build_spec(
        "bad-yaml",
        "board: qemu-x86_64\npackages: [curl\nk3s: {test-double: true}\n",
        &[],
    );
    r.failure(1, "spec.yaml:3:");
    assert_no_image(&dir);
}

#[test]
fn unknown_key_is_placed() {
    let (r, dir) = build_spec(
        "bad-key",
        "board: qemu-x86_64\nk3s: {test-double: true}\noverlay: [x]\n",
        &[],
    );
    r.failure(1, "spec.yaml:3:1: unknown field `overlay`, expected one of");
    assert_no_image(&dir);
}

#[test]
fn missing_package_is_named() {
    let (r, dir) = build_spec(
        "bad-package",
        "board: qemu-x86_64\nk3s: {test-double: true}\npackages: [kiln-no-such-package]\n",
        &[],
    );
    r.failure(1, "package not found for amd64: kiln-no-such-package");
    assert_no_image(&dir);
}

#[test]
fn bad_k3s_checksum_is_refused() {
    let spec = "board: qemu-x86_64\nk3s:\n  path: k3s\n  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n";
    let (r, dir) = build_spec("bad-checksum", spec, &[("k3s", b"not really k3s")]);
    r.failure(1, "checksum mismatch for k3s binary")
        .failure(1, "expected sha256 0000");
    assert_no_image(&dir);
}

#[test]
fn missing_or_wrong_airgap_image_is_refused() {
    let zeros = "0".repeat(64);
    let spec = format!(
        "board: qemu-x86_64\nk3s: {{test-double: true}}\nairgap-images:\n  - {{path: images.tar.zst, sha256: {zeros}}}\n"
    );
    let (r, dir) = build_spec("airgap-missing", &spec, &[]);
    r.failure(1, "reading air-gap image ").failure(
        1,
        "images.tar.zst; paths in airgap-images are relative to the spec",
    );
    assert_no_image(&dir);
    let (r, dir) = build_spec(
        "airgap-checksum",
        &spec,
        &[("images.tar.zst", b"not these")],
    );
    r.failure(1, "checksum mismatch for air-gap image ")
        .failure(1, &format!("expected sha256 {zeros}, got "))
        .failure(1, "check airgap-images in the spec or the file");
    assert_no_image(&dir);
    let spec = format!(
        "board: qemu-x86_64\nk3s: {{test-double: true}}\nairgap-images:\n  - {{path: images.zip, sha256: {zeros}}}\n"
    );
    let (r, dir) = build_spec("airgap-suffix", &spec, &[]);
    r.failure(
        1,
        "spec.yaml:3:1: air-gap image `images.zip` is not a tarball k3s imports",
    );
    assert_no_image(&dir);
}

#[test]
fn invalid_baked_node_config_is_refused() {
    let spec = "board: qemu-x86_64\nk3s: {test-double: true}\nnode-file: node.yaml\n";
    let (r, dir) = build_spec("bad-baked-node", spec, &[("node.yaml", b"role: agent\n")]);
    r.failure(1, "baked node config is invalid: node.yaml");
    assert_no_image(&dir);
}

#[test]
fn missing_apt_is_explained() {
    let dir = scratch("no-apt");
    std::fs::write(
        dir.join("spec.yaml"),
        "board: qemu-x86_64\nk3s: {test-double: true}\n",
    )
    .unwrap();
    let r = run(kiln()
        .arg("build")
        .arg(dir.join("spec.yaml"))
        .arg("--out")
        .arg(dir.join("out"))
        .env("PATH", dir.join("empty-path")));
    r.failure(1, "install apt");
    assert_no_image(&dir);
}

#[test]
fn missing_cross_toolchain_says_what_to_run() {
    let dir = scratch("no-cross");
    let r = run(kiln()
        .args(["build", "--board", "qemu-aarch64", "--out"])
        .arg(dir.join("out"))
        .env("KILN_CROSS_RUST_BIN", "/nonexistent"));
    let r = r.failure(
        1,
        "the cross toolchain for aarch64-unknown-linux-gnu is missing (/nonexistent/cargo \
         (Debian's cargo-web) is missing); install it once with `scripts/setup-cross.sh`",
    );
    assert!(
        !r.stderr.contains("resolving and fetching packages"),
        "found before any download:\n{}",
        r.stderr
    );
    assert_no_image(&dir);
}

#[test]
fn summary_names_the_double_and_sizes() {
    let built = selftest_image("qemu-x86_64");
    for needle in [
        "kiln: build complete",
        "k3s TEST DOUBLE",
        "WARNING: this image carries the k3s TEST DOUBLE",
        "squashfs",
        "sha256",
    ] {
        assert!(
            built.summary.contains(needle),
            "summary lacks {needle:?}:\n{}",
            built.summary
        );
    }
}

/// Same spec twice, same bytes: the shared self-test image and a second
/// build of it, per board.
/// The second build runs every stage (`--no-cache`) while the first may
/// have reused cached stage outputs: equal bytes prove both the build and
/// the stage cache faithful.
fn assert_reproducible(board: &str) {
    let first = selftest_image(board);
    let second = crate::util::build_selftest_with(
        board,
        &format!("selftest-build-again-{board}"),
        &["--no-cache"],
    );
    assert!(
        !second.summary.contains("reused"),
        "{board}: --no-cache still reused a stage:\n{}",
        second.summary
    );
    assert_eq!(
        first.sha256, second.sha256,
        "{board}: two builds of the same spec report different sha256"
    );
    assert!(
        same_bytes(&first.image, &second.image),
        "{board}: two builds of the same spec differ"
    );
}

#[test]
fn same_spec_builds_the_same_bytes_x86_64() {
    assert_reproducible("qemu-x86_64");
}

#[test]
fn same_spec_builds_the_same_bytes_aarch64() {
    assert_reproducible("qemu-aarch64");
}

#[test]
fn same_spec_builds_the_same_bytes_armv7() {
    assert_reproducible("qemu-armv7");
}

/// The in-image binaries, read back out of the built image: `/init` from
/// the initramfs on the boot partition, `kiln-firstboot` and `k3s` from
/// the squashfs root. Each must be a static executable for the board's
/// machine (what `file` shows as "ARM aarch64, statically linked").
fn assert_in_image_binaries_fit(board: &str) {
    let arch = kiln::board::Board::load(board).unwrap().arch;
    let image = &selftest_image(board).image;
    let esp = partition(image, kiln_node::layout::ESP_PARTITION);
    let initrd = fat_file(esp, "kiln/initrd.img");
    let root = partition(image, kiln_node::layout::ROOT_A_PARTITION);
    let mut binaries = vec![("/init".to_string(), cpio_file(&initrd, "init"))];
    for path in ["/usr/bin/kiln-firstboot", "/usr/bin/k3s"] {
        binaries.push((path.to_string(), squashfs_file(&root, path)));
    }
    for (path, data) in binaries {
        let info = kiln::nodebin::elf_info(&data)
            .unwrap_or_else(|| panic!("{board}: {path} is not an ELF file"));
        assert_eq!(
            (info.machine, info.class64),
            (
                kiln::nodebin::elf_machine(arch),
                arch != kiln::board::Arch::Armhf
            ),
            "{board}: {path} is built for the wrong machine"
        );
        kiln::nodebin::check_static_elf(&data, arch)
            .unwrap_or_else(|e| panic!("{board}: {path}: {e:#}"));
    }
}

#[test]
fn in_image_binaries_are_static_for_the_arch_x86_64() {
    assert_in_image_binaries_fit("qemu-x86_64");
}

#[test]
fn in_image_binaries_are_static_for_the_arch_aarch64() {
    assert_in_image_binaries_fit("qemu-aarch64");
}

#[test]
fn in_image_binaries_are_static_for_the_arch_armv7() {
    assert_in_image_binaries_fit("qemu-armv7");
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let m = b.read_exact(&mut y[..n]).map(|_| n);
        if m.is_err() || x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}
