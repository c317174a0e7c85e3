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

pub fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
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
pub const BOARDS: [&str; 3] = ["qemu-x86_64", "qemu-aarch64", "qemu-armv7"];

/// The self-test image (tests/fixtures/selftest) for `board`, built once
/// per run: the same spec and overlay on every board (`--board`).
pub fn selftest_image(board: &str) -> &'static BuiltImage {
    static IMAGES: [OnceLock<BuiltImage>; BOARDS.len()] = [const { OnceLock::new() }; 3];
    let i = BOARDS
        .iter()
        .position(|b| *b == board)
        .unwrap_or_else(|| panic!("no self-test image for {board}"));
    IMAGES[i].get_or_init(|| build_selftest(board, &format!("selftest-build-{board}")))
}

pub fn build_selftest(board: &str, dir: &str) -> BuiltImage {
    let out = scratch(dir);
    let r = run(kiln()
        .arg("build")
        .arg(fixture("selftest/spec.yaml"))
        .args(["--board", board, "--out"])
        .arg(&out))
    .success();
    let image = out.join("kiln-selftest.img");
    assert_eq!(
        r.stdout.trim(),
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
