//! Spec + board + command-line choices resolved into one [`BuildPlan`]
//! before any work starts: every input is read and checked here, so bad
//! input never gets as far as a download.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::board::{data_dir, Arch, Board, BootFlavor};
use crate::boot;
use crate::output::appliance::{appliance, ApplianceInput, SettingError};
use crate::output::ova::Ova;
use crate::output::Format;
use crate::rootfs::supplied_kernel::{FileRef, KernelPlan};
use crate::rootfs::BASE_PACKAGES;
use crate::spec::{locate_in, locate_key, InstallSpec, OvaSettings, Spec};

/// Timestamps in the image when neither the spec nor the environment sets
/// `SOURCE_DATE_EPOCH` (2024-01-01T00:00:00Z): a fixed value keeps builds
/// reproducible by default.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub name: String,
    pub board: Board,
    /// Userland packages to resolve: base, board, boot loader, spec. The
    /// kernel is resolved on its own (see `build`).
    pub packages: Vec<String>,
    /// kiln's base overlay, then the spec's (absolute paths).
    pub overlays: Vec<PathBuf>,
    pub k3s: K3sPlan,
    /// Validated node config to bake in, as written.
    pub baked_node: Option<Vec<u8>>,
    /// Air-gap image tarballs (file name, checked bytes), in spec order.
    pub airgap_images: Vec<(String, Vec<u8>)>,
    pub mirror: Option<String>,
    pub epoch: u64,
    pub out_dir: PathBuf,
    /// Hash of everything the user chose; UUIDs derive from it.
    pub seed: [u8; 32],
    pub refresh_packages: bool,
    /// Also write an installer stick image, with these target rules.
    pub installer: Option<InstallSpec>,
    /// Written after the raw image, in this order (no `Img`).
    pub outputs: Vec<Format>,
    /// The appliance the OVA/OVF outputs describe, checked; `None` when
    /// neither is asked for.
    pub ova: Option<Ova>,
    /// Reuse stage outputs from earlier builds (`kiln build --no-cache`
    /// turns it off).
    pub stage_cache: bool,
    /// Packages and stage outputs (`packages::cache_dir()`; `kiln bench`
    /// points a cold build at an empty one).
    pub cache_dir: PathBuf,
    /// The kernel the spec supplies; none: the board's kernel package.
    pub kernel: Option<KernelPlan>,
    /// Where the image will be published, for the Pi Imager JSON (a URL
    /// the file name is appended to); none: a `file://` URL of `out_dir`.
    pub imager_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum K3sPlan {
    TestDouble,
    File {
        path: PathBuf,
        sha256: Option<String>,
        version: Option<String>,
    },
    Url {
        url: String,
        sha256: String,
        version: Option<String>,
    },
}

/// Command-line choices that shape a build.
#[derive(Debug, Clone, Default)]
pub struct BuildArgs {
    pub spec: Option<PathBuf>,
    pub board: Option<String>,
    pub out_dir: PathBuf,
    pub refresh_packages: bool,
    /// `--installer`: also write the installer stick image.
    pub installer: bool,
    /// `--format`: replaces the board's `outputs:` when given.
    pub formats: Vec<Format>,
    pub no_stage_cache: bool,
    /// `--imager-url`: where the Pi Imager JSON says the image is.
    pub imager_url: Option<String>,
}

impl BuildPlan {
    pub fn resolve(args: &BuildArgs) -> Result<BuildPlan> {
        let (spec, spec_text, spec_dir) = match &args.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading spec {}; check the path", path.display()))?;
                let spec = Spec::parse(&text, path)?;
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (spec, text, dir)
            }
            None => {
                let Some(board) = &args.board else {
                    bail!("give a spec file or --board; `kiln boards` lists the boards");
                };
                let spec = Spec {
                    board: board.clone(),
                    k3s: Some(crate::spec::K3sSource {
                        test_double: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (spec, format!("board: {board}\n"), PathBuf::from("."))
            }
        };
        let board_name = args.board.clone().unwrap_or_else(|| spec.board.clone());
        let board = Board::load(&board_name)?;

        let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
        packages.extend(boot::packages(board.boot).iter().map(|p| p.to_string()));
        packages.extend(board.packages.iter().cloned());
        packages.extend(spec.packages.iter().cloned());
        packages.sort();
        packages.dedup();

        let mut overlays = vec![data_dir().join("overlays/base")];
        overlays.extend(board.overlays.iter().map(|o| data_dir().join(o)));
        for o in &spec.overlays {
            let dir = spec_dir.join(o);
            if !dir.is_dir() {
                let (line, col) = locate_key(&spec_text, "overlays");
                bail!(
                    "{}:{}:{}: overlay {} is not a directory; paths are relative to the spec",
                    args.spec.as_deref().unwrap_or(Path::new("spec")).display(),
                    line.unwrap_or(0),
                    col.unwrap_or(0),
                    dir.display()
                );
            }
            overlays.push(dir);
        }

        let k3s = match &spec.k3s {
            None => bail!(
                "the spec names no k3s binary; add `k3s: {{path: ...}}`, `k3s: {{url: ..., sha256: ...}}` \
                 or, for tests, `k3s: {{test-double: true}}`"
            ),
            Some(k) if k.test_double => K3sPlan::TestDouble,
            Some(k) => match (&k.path, &k.url, &k.sha256) {
                (Some(p), _, sum) => K3sPlan::File {
                    path: spec_dir.join(p),
                    sha256: sum.clone(),
                    version: k.version.clone(),
                },
                (None, Some(url), Some(sum)) => {
                    K3sPlan::Url { url: url.clone(), sha256: sum.clone(), version: k.version.clone() }
                }
                _ => unreachable!("Spec::parse checks the k3s source"),
            },
        };

        let baked_node = match (&spec.node, &spec.node_file) {
            (Some(value), _) => Some(serde_yaml::to_string(value)?.into_bytes()),
            (None, Some(file)) => {
                let path = spec_dir.join(file);
                Some(std::fs::read(&path).with_context(|| {
                    format!(
                        "reading node-file {}; paths are relative to the spec",
                        path.display()
                    )
                })?)
            }
            (None, None) => None,
        };
        if let Some(bytes) = &baked_node {
            let source = spec
                .node_file
                .as_ref()
                .map_or("spec `node`".to_string(), |f| f.display().to_string());
            kiln_node::config::parse_bytes(bytes, &source)
                .map_err(|e| anyhow::anyhow!("baked node config is invalid: {e}"))?;
        }

        let mut airgap_images = Vec::new();
        for image in &spec.airgap_images {
            let path = spec_dir.join(&image.path);
            let data = std::fs::read(&path).with_context(|| {
                format!(
                    "reading air-gap image {}; paths in airgap-images are relative to the spec",
                    path.display()
                )
            })?;
            crate::build::check_sha256(
                &data,
                &image.sha256,
                &format!("air-gap image {}", path.display()),
                "airgap-images",
            )?;
            let name = image.path.file_name().expect("Spec::parse checks the name");
            airgap_images.push((name.to_string_lossy().into_owned(), data));
        }

        let epoch = match (spec.source_date_epoch, std::env::var("SOURCE_DATE_EPOCH")) {
            (Some(e), _) => e,
            (None, Ok(e)) => e
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a number")?,
            (None, Err(_)) => DEFAULT_EPOCH,
        };

        let file_ref = |f: &crate::spec::FileSource| match (&f.path, &f.url) {
            (Some(p), _) => FileRef::Path(spec_dir.join(p), f.sha256.clone()),
            (None, Some(u)) => FileRef::Url(u.clone(), f.sha256.clone()),
            (None, None) => unreachable!("Spec::parse checks the kernel sources"),
        };
        let kernel = spec.kernel.as_ref().map(|k| KernelPlan {
            image: file_ref(&k.image),
            modules: file_ref(&k.modules),
            dtb: k.dtb.as_ref().map(file_ref),
        });
        if kernel.is_none() && board.kernel.package.is_none() {
            bail!(
                "board {} has no kernel package: the spec must supply the kernel \
                 (kernel: {{image: ..., modules: ..., dtb: ...}}, each a path or url with sha256; \
                 see the board's section in the README)",
                board.name
            );
        }
        let installer = spec
            .install
            .clone()
            .or_else(|| args.installer.then(InstallSpec::default));
        if installer.is_some() && board.boot != crate::board::BootFlavor::UefiSystemdBoot {
            bail!(
                "board {} boots with {:?}: the installer needs a UEFI board (it boots the \
                 stick with systemd-boot); flash this board's image directly",
                board.name,
                board.boot
            );
        }

        let board_text = serde_yaml::to_string(&format!("{board:?}"))?;
        let mut h = Sha256::new();
        h.update(spec_text.as_bytes());
        h.update(board_text.as_bytes());
        let seed: [u8; 32] = h.finalize().into();

        let mut outputs = if args.formats.is_empty() {
            board.outputs.clone()
        } else {
            args.formats.clone()
        };
        outputs.retain(|f| *f != Format::Img);
        outputs.sort();
        outputs.dedup();
        if outputs.contains(&Format::PiImager) && board.raspi.is_none() {
            bail!(
                "board {} is not a Raspberry Pi: --format pi-imager (a Raspberry Pi Imager \
                 repository JSON) is for the rpi2, rpi3 and rpi4 boards",
                board.name
            );
        }

        let mut plan = BuildPlan {
            name: spec.name.clone().unwrap_or_else(|| board.name.clone()),
            board,
            packages,
            overlays,
            k3s,
            baked_node,
            airgap_images,
            mirror: spec.mirror.clone(),
            epoch,
            out_dir: args.out_dir.clone(),
            seed,
            refresh_packages: args.refresh_packages,
            installer,
            stage_cache: !args.no_stage_cache,
            cache_dir: crate::packages::cache_dir(),
            outputs,
            ova: None,
            kernel,
            imager_url: args.imager_url.clone(),
        };
        let spec_file = args.spec.as_deref().unwrap_or(Path::new("spec"));
        plan.ova = plan_ova(&plan, spec.ova.as_ref(), &spec_text, spec_file)?;
        Ok(plan)
    }

    /// A stable 16-byte value for `purpose` (a GUID, a volume id, ...).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    pub fn image_path(&self) -> PathBuf {
        self.out_dir.join(format!("{}.img", self.name))
    }

    pub fn installer_path(&self) -> PathBuf {
        self.out_dir.join(format!("{}-installer.img", self.name))
    }
}

/// The checked appliance when the outputs need one (an `ova:` section is
/// checked even when they don't, so a mistake in it never waits).
fn plan_ova(
    plan: &BuildPlan,
    settings: Option<&OvaSettings>,
    spec_text: &str,
    spec_file: &Path,
) -> Result<Option<Ova>> {
    let wanted = plan
        .outputs
        .iter()
        .any(|f| matches!(f, Format::Ova | Format::Ovf));
    if !wanted && settings.is_none() {
        return Ok(None);
    }
    let board = &plan.board;
    if wanted && board.arch != Arch::Amd64 {
        bail!(
            "board {} is {}: the OVA/OVF outputs are for vSphere on x86_64; use an amd64 board such as vmware-ova",
            board.name,
            board.arch.debian()
        );
    }
    let input = ApplianceInput {
        name: &plan.name,
        board: &board.name,
        image_bytes: crate::disk::image_bytes(plan),
        firmware_efi: board.boot == BootFlavor::UefiSystemdBoot,
        seed: &plan.seed,
        epoch: plan.epoch,
    };
    let default = OvaSettings::default();
    match appliance(&input, settings.unwrap_or(&default)) {
        Ok(ova) => Ok(wanted.then_some(ova)),
        Err(SettingError { key, error }) => {
            let (line, col) = match key.split_once('.') {
                Some((section, name)) => locate_in(spec_text, "ova", &[name, section]),
                None => locate_in(spec_text, "ova", &[key.as_str()]),
            };
            let place = match (line, col) {
                (Some(l), Some(c)) => format!(":{l}:{c}"),
                _ => String::new(),
            };
            let key = if key.is_empty() {
                "ova".into()
            } else {
                format!("ova.{key}")
            };
            bail!("{}{place}: {key}: {error:#}", spec_file.display())
        }
    }
}
