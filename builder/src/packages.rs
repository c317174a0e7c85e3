//! Debian packages: resolved and downloaded with the host's `apt` under a
//! private configuration (its own lists, cache and an empty dpkg status), so
//! the host's package database is never read or touched and no root is
//! needed. apt verifies the archive signatures; kiln records sha256 per
//! package for the lock file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// One resolved, downloaded package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub path: PathBuf,
}

/// An apt source line: where a suite comes from and which key signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
}

impl Source {
    /// The one-line `deb [arch=... signed-by=...] uri suite components`
    /// form apt and mmdebstrap read.
    pub fn deb_line(&self, arch: &str) -> String {
        let key = self
            .signed_by
            .as_ref()
            .map(|k| format!(" signed-by={k}"))
            .unwrap_or_default();
        format!(
            "deb [arch={arch}{key}] {} {} {}",
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// Where kiln keeps downloads between builds.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/kiln")
}

/// The sources for `suite` (plus its -updates and -security suites) taken
/// from the host's apt configuration, or built from `mirror` when given,
/// with the archive `components` the board needs (`main`, and e.g.
/// `non-free-firmware`): the mirror is the host's, only the component list
/// is the board's, since every Debian mirror carries all components.
pub fn sources_for(
    suite: &str,
    mirror: Option<&str>,
    components: &[String],
) -> Result<Vec<Source>> {
    let host = read_host_sources(Path::new("/etc/apt"));
    let wanted = [
        suite.to_string(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ];
    if let Some(mirror) = mirror {
        let keyring = host
            .iter()
            .find_map(|s| s.signed_by.clone())
            .or_else(|| Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()));
        let mut out: Vec<Source> = wanted[..2]
            .iter()
            .map(|s| Source {
                uri: mirror.trim_end_matches('/').to_string(),
                suite: s.clone(),
                components: components.to_vec(),
                signed_by: keyring.clone(),
            })
            .collect();
        // The security archive lives elsewhere; keep the host's if it has one.
        out.extend(
            host.into_iter()
                .filter(|s| s.suite == wanted[2])
                .map(|s| Source {
                    components: components.to_vec(),
                    ..s
                }),
        );
        return Ok(out);
    }
    let picked = select_sources(host, &wanted, components);
    if !picked.iter().any(|s| s.suite == suite) {
        bail!(
            "the host's apt sources have no `{suite}` suite; set `mirror:` in the spec \
             to a Debian mirror URL (the Debian archive keyring must be installed)"
        );
    }
    Ok(picked)
}

/// Keeps the host sources whose suite is one of `wanted`, first URI per
/// suite, with `components` (whatever the host enabled there).
fn select_sources(host: Vec<Source>, wanted: &[String], components: &[String]) -> Vec<Source> {
    let mut seen = BTreeSet::new();
    host.into_iter()
        .filter(|s| wanted.contains(&s.suite))
        .filter(|s| seen.insert(s.suite.clone()))
        .map(|s| Source {
            components: components.to_vec(),
            ..s
        })
        .collect()
}

fn read_host_sources(etc: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(etc.join("sources.list")) {
        out.extend(parse_one_line_sources(&text));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822_sources(&text)),
            Some("list") => out.extend(parse_one_line_sources(&text)),
            _ => {}
        }
    }
    out
}

/// Parses deb822 `.sources` stanzas (`Types`, `URIs`, `Suites`, ...).
pub fn parse_deb822_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Option<String> {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if !enabled || !is_deb {
            continue;
        }
        let components: Vec<String> = field("Components")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                out.push(Source {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: components.clone(),
                    signed_by: field("Signed-By"),
                });
            }
        }
    }
    out
}

/// Parses one-line `deb [opts] URI suite components...` sources.
pub fn parse_one_line_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned);
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_owned).collect(),
            signed_by,
        });
    }
    out
}

/// A private apt configuration for one suite and architecture.
pub struct Apt {
    root: PathBuf,
    arch: String,
    /// The source list differs from the one the cached lists came from.
    sources_changed: bool,
}

/// Lists older than this are refreshed before resolving.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Apt {
    /// Creates (or reuses) the private apt tree under the cache dir.
    pub fn new(cache: &Path, suite: &str, arch: &str, sources: &[Source]) -> Result<Apt> {
        which("apt-get").context(
            "kiln resolves Debian packages with the host's apt; install apt (Debian/Ubuntu)",
        )?;
        // One private tree per component set, so boards with and without
        // non-free-firmware do not refresh each other's lists.
        let mut tag = format!("{suite}-{arch}");
        for c in sources.iter().flat_map(|s| &s.components) {
            if c != "main" && !tag.ends_with(&format!("-{c}")) {
                tag.push_str(&format!("-{c}"));
            }
        }
        let root = cache.join("apt").join(tag);
        for dir in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/lib/dpkg",
            "var/cache/apt/archives/partial",
        ] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let list: String = sources.iter().map(|s| s.deb_line(arch) + "\n").collect();
        let status = root.join("var/lib/dpkg/status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let conf = format!(
            "Dir \"{root}/\";\n\
             Dir::State::status \"{root}/var/lib/dpkg/status\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             APT::Install-Recommends \"false\";\n\
             APT::Install-Suggests \"false\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"3\";\n\
             Debug::NoLocking \"true\";\n\
             {sandbox}",
            root = root.display(),
            // apt drops to `_apt` for downloads when root; that user cannot
            // write into our private cache, so stay as root there.
            sandbox = if running_as_root() {
                "APT::Sandbox::User \"root\";\n"
            } else {
                ""
            },
        );
        let sources_changed = write_if_changed(&root.join("etc/apt/sources.list"), &list)?;
        write_if_changed(&root.join("etc/apt/apt.conf"), &conf)?;
        Ok(Apt {
            root,
            arch: arch.to_string(),
            sources_changed,
        })
    }

    fn apt_get(&self) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.env("APT_CONFIG", self.root.join("etc/apt/apt.conf"))
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Refreshes the package lists when missing, stale or `force`d. An index
    /// that fails (a mirror mid-sync) is retried, then reported as a warning:
    /// only a package that cannot be resolved is an error.
    pub fn update(&self, force: bool) -> Result<Vec<String>> {
        let lists = self.root.join("var/lib/apt/lists");
        if !force && !self.sources_changed && lists_fresh(&lists) {
            return Ok(Vec::new());
        }
        let mut failed = Vec::new();
        for attempt in 0..2 {
            let out = self
                .apt_get()
                .arg("update")
                .output()
                .context("running apt-get update")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            failed = text
                .lines()
                .filter(|l| l.starts_with("Err:") || l.starts_with("E: Failed to fetch"))
                .map(str::to_owned)
                .collect();
            if out.status.success() && failed.is_empty() {
                return Ok(Vec::new());
            }
            if attempt == 0 {
                log::warn!("apt-get update reported errors; retrying once");
            }
        }
        if !has_package_lists(&lists) {
            bail!(
                "apt-get update fetched no package lists: {}; check the network and the mirror",
                failed.join("; ")
            );
        }
        Ok(failed
            .into_iter()
            .map(|l| format!("package index not updated: {l}"))
            .collect())
    }

    /// Downloads what is not cached yet. A failed run is retried once, as
    /// `update` is: apt's own retries do not cover a download it loses
    /// between its partial and its archive directory ("rename failed"),
    /// seen on a fresh cache; the second run fetches only what is missing.
    fn download(&self, wanted: &[String]) -> Result<()> {
        let mut stderr = String::new();
        for attempt in 0..2 {
            let dl = self
                .apt_get()
                .args([
                    "install",
                    "--download-only",
                    "--no-install-recommends",
                    "-y",
                    "-q",
                ])
                .args(wanted)
                .output()
                .context("running apt-get install --download-only")?;
            if dl.status.success() {
                return Ok(());
            }
            stderr = String::from_utf8_lossy(&dl.stderr).trim().to_string();
            if attempt == 0 {
                log::warn!("downloading packages failed; retrying once: {stderr}");
            }
        }
        bail!("downloading packages failed: {stderr}")
    }

    /// Resolves `wanted` with its dependency closure (no recommends) and
    /// downloads what is not cached. Returns packages sorted by name.
    pub fn fetch(&self, wanted: &[String]) -> Result<Vec<Package>> {
        let key = self.resolution_key(wanted);
        if let Some(packages) = key.as_deref().and_then(|k| self.cached_resolution(k)) {
            return Ok(packages);
        }
        let packages = self.resolve_and_download(wanted)?;
        if let Some(key) = key {
            // Only a speed-up: a cache that cannot be written is no error.
            let _ = self.store_resolution(&key, &packages);
        }
        Ok(packages)
    }

    /// Names the resolution of `wanted` against exactly these package
    /// lists: a refreshed list changes the key, so a cached answer is
    /// never stale.
    fn resolution_key(&self, wanted: &[String]) -> Option<String> {
        let lists = self.root.join("var/lib/apt/lists");
        let mut entries: Vec<(String, u64, u128)> = std::fs::read_dir(&lists)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let mtime = meta.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH);
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    mtime.ok()?.as_nanos(),
                ))
            })
            .collect();
        entries.sort();
        let mut hasher = Sha256::new();
        hasher.update(format!("{}\n{wanted:?}\n{entries:?}", self.arch));
        Some(hex(&hasher.finalize()))
    }

    fn resolution_path(&self, key: &str) -> PathBuf {
        self.root.join("var/cache/kiln-resolved").join(key)
    }

    fn cached_resolution(&self, key: &str) -> Option<Vec<Package>> {
        let text = std::fs::read_to_string(self.resolution_path(key)).ok()?;
        let packages: Vec<Package> = text
            .lines()
            .map(|line| {
                let mut f = line.split(' ');
                let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
                Some(self.package(name, version, arch))
            })
            .collect::<Option<_>>()?;
        packages.iter().all(|p| p.path.exists()).then_some(packages)
    }

    fn store_resolution(&self, key: &str, packages: &[Package]) -> Result<()> {
        let path = self.resolution_path(key);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let text: String = packages
            .iter()
            .map(|p| format!("{} {} {}\n", p.name, p.version, p.arch))
            .collect();
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The package with its path in the private archive cache.
    fn package(&self, name: &str, version: &str, arch: &str) -> Package {
        let file = format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"));
        Package {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            path: self.root.join("var/cache/apt/archives").join(file),
        }
    }

    fn resolve_and_download(&self, wanted: &[String]) -> Result<Vec<Package>> {
        let sim = self
            .apt_get()
            .args(["install", "--simulate", "--no-install-recommends", "-y"])
            .args(wanted)
            .output()
            .context("running apt-get install --simulate")?;
        let text = String::from_utf8_lossy(&sim.stdout).into_owned()
            + &String::from_utf8_lossy(&sim.stderr);
        if !sim.status.success() {
            bail!("{}", explain_apt_failure(&text, &self.arch));
        }
        let mut packages: Vec<Package> = parse_simulation(&text)
            .iter()
            .map(|p| self.package(&p.name, &p.version, &p.arch))
            .collect();
        // A warm cache needs no second apt run: that run alone costs as
        // much as the resolution.
        if packages.iter().any(|p| !p.path.exists()) {
            self.download(wanted)?;
        }
        if let Some(p) = packages.iter().find(|p| !p.path.exists()) {
            bail!(
                "apt reported {} {} but {} is missing",
                p.name,
                p.version,
                p.path.display()
            );
        }
        packages.sort();
        Ok(packages)
    }
}

/// Turns apt's resolver output into one error that says what to fix.
fn explain_apt_failure(text: &str, arch: &str) -> String {
    let missing: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("E: Unable to locate package ").or_else(|| {
                l.strip_prefix("E: Package '")
                    .and_then(|r| r.split('\'').next())
            })
        })
        .collect();
    if !missing.is_empty() {
        return format!(
            "package not found for {arch}: {}; check the name in the spec's `packages` \
             (apt-cache search can help)",
            missing.join(", ")
        );
    }
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E:") || l.contains(" : Depends:"))
        .collect();
    format!(
        "apt could not resolve the package set: {}",
        errors.join("; ")
    )
}

/// Reads `Inst name (version suite [arch])` lines of `apt-get -s install`.
pub fn parse_simulation(text: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let inner = rest.split_once('(')?.1.split_once(')')?.0;
            let version = inner.split_whitespace().next()?;
            let arch = inner.split_once('[')?.1.split_once(']')?.0;
            Some(Package {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
                path: PathBuf::new(),
            })
        })
        .collect()
}

fn lists_fresh(lists: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(lists.join("lock")).or_else(|_| std::fs::metadata(lists))
    else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::MAX);
    has_package_lists(lists) && age < LISTS_MAX_AGE
}

fn has_package_lists(lists: &Path) -> bool {
    std::fs::read_dir(lists)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
}

/// Writes `text` unless the file already holds it; says whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Finds a host tool on PATH.
pub fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("host tool `{tool}` not found on PATH"))
}

/// sha256 of a file, hex.
/// Streams the file through the hash: images are hundreds of MiB and
/// mostly holes, so reading them whole would cost that much memory.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_stanzas_expand_suites() {
        let text =
            "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /k.gpg\n\nTypes: deb-src\nURIs: http://x.invalid\n\
                    Suites: bookworm\nComponents: main\n";
        let s = parse_deb822_sources(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].suite, "bookworm-updates");
        assert_eq!(s[0].signed_by.as_deref(), Some("/k.gpg"));
    }

    #[test]
    fn one_line_sources_with_options() {
        let s = parse_one_line_sources(
            "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian/ bookworm main contrib\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].uri, "http://m.invalid/debian");
        assert_eq!(s[0].components, vec!["main", "contrib"]);
        assert_eq!(s[0].signed_by.as_deref(), Some("/k.gpg"));
    }

    #[test]
    fn selection_keeps_first_uri_per_suite_with_the_boards_components() {
        let host = parse_one_line_sources(
            "deb http://a.invalid bookworm main non-free\ndeb http://b.invalid bookworm main\n\
             deb http://a.invalid bookworm-security main\ndeb http://c.invalid noble main\n",
        );
        let suites = ["bookworm".into(), "bookworm-security".into()];
        let picked = select_sources(host.clone(), &suites, &["main".into()]);
        assert_eq!(picked.len(), 2);
        assert_eq!(picked[0].uri, "http://a.invalid");
        assert_eq!(picked[0].components, vec!["main"]);
        // A board that needs firmware adds the component on the host's own
        // mirror, even where the host enabled only main.
        let firmware = ["main".into(), "non-free-firmware".into()];
        let picked = select_sources(host, &suites, &firmware);
        assert_eq!(picked[1].uri, "http://a.invalid");
        assert_eq!(picked[1].components, vec!["main", "non-free-firmware"]);
    }

    #[test]
    fn simulation_lines_are_parsed() {
        let p = parse_simulation(
            "NOTE: x\nInst libc6 (2.36-9+deb12u9 Debian:12.9/stable [amd64])\n\
             Inst systemd (1:252.33-1~deb12u1 Debian-Security:12/stable-security [amd64]) []\nConf libc6\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].version, "1:252.33-1~deb12u1");
        assert_eq!(p[1].arch, "amd64");
    }

    #[test]
    fn missing_package_error_names_it() {
        let msg = explain_apt_failure("E: Unable to locate package nosuchpkg\n", "amd64");
        assert!(
            msg.contains("package not found for amd64: nosuchpkg"),
            "{msg}"
        );
    }
}
