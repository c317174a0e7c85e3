//! Shared helpers: running `kiln`, temp dirs, and the one self-test image
//! every boot test shares (built once per test run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(rel: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(rel)
}

/// Where tests put what they make; kept after the run for inspection.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kiln` at a lower CPU priority (nice 10), for everything but booting:
/// builds run beside a boot in the suite, and a starved TCG guest misses
/// its own drivers' timeouts (raspi2b's SD driver oopsed that way).
pub fn kiln() -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = kiln_vm();
    // SAFETY: setpriority is a plain syscall, safe between fork and exec.
    // Not `nice kiln`: tests run kiln with an empty PATH.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpriority(libc::PRIO_PROCESS, 0, 10) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// `kiln` at normal priority, for `kiln boot`: the guest gets the CPU
/// before the builds beside it.
pub fn kiln_vm() -> Command {
    with_data_dir(Command::new(env!("CARGO_BIN_EXE_kiln")))
}

fn with_data_dir(mut cmd: Command) -> Command {
    cmd.env("KILN_DATA_DIR", workspace());
    cmd
}

/// The result of a command, with stdout and stderr as text.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

pub fn run(cmd: &mut Command) -> Run {
    Run::of(cmd.output().expect("kiln runs"))
}

/// QEMU under TCG is CPU-bound: one VM at a time keeps boots from starving
/// each other on a 2-core CI machine.
pub fn qemu_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct BuiltImage {
    pub image: PathBuf,
    pub sha256: String,
    pub summary: String,
}

/// The boards the self-test image is built for and booted on.
pub const BOARDS: [&str; 7] = [
    "qemu-x86_64",
    "qemu-aarch64",
    "qemu-armv7",
    "vmware-ova",
    "rpi3",
    "rpi2",
    "rpi4",
];

/// The self-test image (tests/fixtures/selftest) for `board`, built once
/// per run: the same spec and overlay on every board (`--board`).
pub fn selftest_image(board: &str) -> &'static BuiltImage {
    static IMAGES: [OnceLock<BuiltImage>; BOARDS.len()] = [const { OnceLock::new() }; BOARDS.len()];
    let i = BOARDS
        .iter()
        .position(|b| *b == board)
        .unwrap_or_else(|| panic!("no self-test image for {board}"));
    IMAGES[i].get_or_init(|| build_selftest(board, &format!("selftest-build-{board}")))
}

pub fn build_selftest(board: &str, dir: &str) -> BuiltImage {
    build_selftest_with(board, dir, &[])
}

/// [`build_selftest`] with more `kiln build` arguments (`--installer`).
pub fn build_selftest_with(board: &str, dir: &str, extra: &[&str]) -> BuiltImage {
    let out = scratch(dir);
    let r = run(kiln()
        .arg("build")
        .arg(fixture("selftest/spec.yaml"))
        .args(["--board", board, "--out"])
        .arg(&out)
        .args(extra))
    .success();
    let image = out.join("kiln-selftest.img");
    assert_eq!(
        r.stdout.lines().next().unwrap_or_default(),
        image.display().to_string(),
        "stdout names the image"
    );
    let sidecar = std::fs::read_to_string(out.join("kiln-selftest.json")).unwrap();
    let sha256 = sidecar
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"sha256\": \""))
        .map(|s| s.trim_end_matches([',', '"']).to_string())
        .expect("sidecar has sha256");
    BuiltImage {
        image,
        sha256,
        summary: r.stderr,
    }
}

/// A private, sparse copy of an image (tests never boot the shared file).
pub fn copy_image(src: &Path, dir: &Path) -> PathBuf {
    let dest = dir.join(src.file_name().unwrap());
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(src.with_extension("json"), dest.with_extension("json")).unwrap();
    dest
}

/// The bytes of the GPT partition called `name`.
pub fn partition(image: &Path, name: &str) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(image).unwrap();
    let sectors = file.metadata().unwrap().len() / 512;
    let table = kiln_node::gpt::read(&mut file, sectors).unwrap();
    let p = table
        .partitions
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no partition {name} in {}", image.display()));
    let mut data = vec![0; ((p.last_lba + 1 - p.first_lba) * 512) as usize];
    file.seek(SeekFrom::Start(p.first_lba * 512)).unwrap();
    file.read_exact(&mut data).unwrap();
    data
}

pub fn fat_file(volume: Vec<u8>, path: &str) -> Vec<u8> {
    use std::io::Read;
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(volume), fatfs::FsOptions::new()).unwrap();
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path)
        .unwrap_or_else(|e| panic!("{path} on the boot partition: {e}"))
        .read_to_end(&mut data)
        .unwrap();
    data
}

/// A file of the initramfs: a gzip'd newc cpio, after the uncompressed
/// early-microcode cpio if there is one.
pub fn cpio_file(initrd: &[u8], name: &str) -> Vec<u8> {
    let (_, main) = split_initrd(initrd);
    plain_cpio_file(flate2::read::GzDecoder::new(main), name)
}

/// An initrd's uncompressed cpio in front (early microcode), if any, and
/// the compressed rest.
pub fn split_initrd(initrd: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if !initrd.starts_with(b"070701") {
        return (None, initrd);
    }
    let trailer = initrd
        .windows(10)
        .position(|w| w == b"TRAILER!!!")
        .expect("the early cpio ends with a trailer");
    let gz = trailer
        + initrd[trailer..]
            .windows(2)
            .position(|w| w == [0x1f, 0x8b])
            .expect("a gzip'd cpio follows the early one");
    (Some(&initrd[..gz]), &initrd[gz..])
}

/// A file of an uncompressed newc cpio stream.
pub fn plain_cpio_file(input: impl std::io::Read, name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut input: Box<dyn Read + '_> = Box::new(input);
    loop {
        let mut entry = cpio::NewcReader::new(input).unwrap();
        if entry.entry().is_trailer() {
            panic!("no {name} in the cpio");
        }
        let found = entry.entry().name() == name;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if found {
            return data;
        }
        input = entry.finish().unwrap();
    }
}

/// Every path in a squashfs (`/usr/bin/k3s`, ...).
pub fn squashfs_paths(root: &[u8]) -> Vec<String> {
    let fs = backhand::FilesystemReader::from_reader(std::io::Cursor::new(root)).unwrap();
    fs.files()
        .map(|n| n.fullpath.to_string_lossy().into_owned())
        .collect()
}

pub fn squashfs_file(root: &[u8], path: &str) -> Vec<u8> {
    use std::io::Read;
    let fs = backhand::FilesystemReader::from_reader(std::io::Cursor::new(root)).unwrap();
    let node = fs
        .files()
        .find(|n| n.fullpath == Path::new(path))
        .unwrap_or_else(|| panic!("no {path} in the root"));
    let backhand::InnerNode::File(file) = &node.inner else {
        panic!("{path} is not a regular file in the root");
    };
    let mut data = Vec::new();
    fs.file(file).reader().read_to_end(&mut data).unwrap();
    data
}
