//! Stage outputs kept between builds, each named by the hash of everything
//! that went into it, so a build reruns only the stages whose inputs
//! changed. The kiln binary itself is one of the inputs: a kiln with other
//! code never reads a cache entry an older kiln wrote.
//!
//! Entries are zstd-compressed files under `<cache>/stages/`, written
//! atomically; an entry that cannot be read is rebuilt, never trusted.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::packages::hex;

/// How many entries to keep: a few boards' worth of package roots.
const KEEP_ENTRIES: usize = 8;

/// A value that can be kept in the cache.
pub trait Cacheable: Sized {
    fn encode(&self, out: &mut Encoder);
    fn decode(input: &mut Decoder) -> Result<Self>;
}

pub struct StageCache {
    dir: Option<PathBuf>,
}

/// Whether a stage ran or came from the cache, for the build summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Built,
    Cached,
}

impl StageCache {
    pub fn at(dir: PathBuf) -> StageCache {
        StageCache { dir: Some(dir) }
    }

    /// A cache that never hits and stores nothing (`kiln build --no-cache`).
    pub fn disabled() -> StageCache {
        StageCache { dir: None }
    }

    /// The entry for `inputs`, or `make`'s result, stored for next time.
    pub fn get_or_make<T: Cacheable>(
        &self,
        stage: &str,
        inputs: &[u8],
        make: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Outcome)> {
        let Some(dir) = &self.dir else {
            return Ok((make()?, Outcome::Built));
        };
        let path = dir.join(format!("{stage}-{}", key(stage, inputs)));
        if let Some(value) = read_entry(&path) {
            return Ok((value, Outcome::Cached));
        }
        let value = make()?;
        if let Err(e) = write_entry(&path, &value) {
            // Only a speed-up: a full or read-only cache is no build error.
            log::warn!("could not cache the {stage} stage: {e:#}");
        }
        prune(dir);
        Ok((value, Outcome::Built))
    }
}

fn key(stage: &str, inputs: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(kiln_identity());
    h.update(stage.as_bytes());
    h.update([0]);
    h.update(inputs);
    hex(&h.finalize())
}

/// The hash of the running kiln binary: stage outputs depend on its code.
fn kiln_identity() -> &'static [u8] {
    static ID: OnceLock<Vec<u8>> = OnceLock::new();
    ID.get_or_init(|| {
        std::env::current_exe()
            .and_then(std::fs::read)
            .map(|exe| Sha256::digest(exe).to_vec())
            // Unknown code must never match an entry: a fresh random id.
            .unwrap_or_else(|_| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                Sha256::digest(format!("{}-{nanos}", std::process::id())).to_vec()
            })
    })
}

fn read_entry<T: Cacheable>(path: &std::path::Path) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    let mut data = Vec::new();
    zstd::stream::read::Decoder::new(file)
        .ok()?
        .read_to_end(&mut data)
        .ok()?;
    let mut input = Decoder::new(&data);
    match T::decode(&mut input) {
        Ok(value) if input.data.is_empty() => {
            // Fresh mtime: pruning drops the least recently used entries.
            let _ = std::fs::File::options()
                .append(true)
                .open(path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Some(value)
        }
        _ => None,
    }
}

fn write_entry<T: Cacheable>(path: &std::path::Path, value: &T) -> Result<()> {
    let dir = path.parent().expect("entries live in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Encoder::default();
    value.encode(&mut out);
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp)?;
    let mut z = zstd::stream::write::Encoder::new(file, 1)?;
    z.multithread(available_threads())?;
    z.write_all(&out.data)?;
    z.finish()?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn available_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn prune(dir: &std::path::Path) {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in entries.into_iter().skip(KEEP_ENTRIES) {
        let _ = std::fs::remove_file(path);
    }
}

/// Length-prefixed little-endian fields: no schema to keep in step with
/// another crate, and the binary's hash in the key versions the layout.
#[derive(Default)]
pub struct Encoder {
    data: Vec<u8>,
}

impl Encoder {
    pub fn u32(&mut self, v: u32) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.data.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

pub struct Decoder<'a> {
    data: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder { data }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.data.len() < n {
            bail!("cache entry truncated");
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = usize::try_from(self.u64()?)?;
        Ok(self.take(n)?.to_vec())
    }
    pub fn str(&mut self) -> Result<String> {
        Ok(String::from_utf8(self.bytes()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Pair(String, Vec<u8>);

    impl Cacheable for Pair {
        fn encode(&self, out: &mut Encoder) {
            out.str(&self.0);
            out.bytes(&self.1);
        }
        fn decode(input: &mut Decoder) -> Result<Self> {
            Ok(Pair(input.str()?, input.bytes()?))
        }
    }

    #[test]
    fn second_call_with_same_inputs_is_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StageCache::at(dir.path().into());
        let make = || Ok(Pair("a".into(), vec![1, 2, 3]));
        let (first, outcome) = cache.get_or_make("s", b"in", make).unwrap();
        assert_eq!(outcome, Outcome::Built);
        let (second, outcome) = cache
            .get_or_make("s", b"in", || -> Result<Pair> { bail!("must not run") })
            .unwrap();
        assert_eq!((second, outcome), (first, Outcome::Cached));
        let (_, outcome) = cache.get_or_make("s", b"other", make).unwrap();
        assert_eq!(outcome, Outcome::Built, "other inputs, other entry");
    }

    #[test]
    fn a_damaged_entry_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StageCache::at(dir.path().into());
        let make = || Ok(Pair("a".into(), vec![7; 1000]));
        cache.get_or_make("s", b"in", make).unwrap();
        let entry = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() / 2]).unwrap();
        let (value, outcome) = cache.get_or_make("s", b"in", make).unwrap();
        assert_eq!(outcome, Outcome::Built);
        assert_eq!(value, make().unwrap());
    }

    #[test]
    fn disabled_cache_always_builds() {
        let cache = StageCache::disabled();
        for _ in 0..2 {
            let (_, outcome) = cache
                .get_or_make("s", b"in", || Ok(Pair("a".into(), vec![])))
                .unwrap();
            assert_eq!(outcome, Outcome::Built);
        }
    }
}
