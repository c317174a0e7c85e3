//! `<name>.rpi-imager.json`: a Raspberry Pi Imager repository with the one
//! image just built, so a user opens it with Pi Imager's custom repository
//! option, picks the image, and gets Pi Imager's OS customisation dialog
//! (`init_format: cloudinit`; kiln-firstboot reads what it writes, see
//! `kiln_node::datasource::pi_imager`).
//!
//! Field names and meanings as in Pi Imager's `os_list` schema: `extract_*`
//! describe the raw image, `image_download_*` the file Pi Imager downloads
//! (the `.img.xz` when the build wrote one, else the `.img`).

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{write_atomically, Written};

/// One `os_list` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    pub description: String,
    pub url: String,
    pub release_date: String,
    pub extract_size: u64,
    pub extract_sha256: String,
    pub image_download_size: u64,
    pub image_download_sha256: String,
    pub init_format: &'static str,
    /// Pi Imager's device tags (`pi4-64bit`, ...); it hides the image for
    /// other boards.
    pub devices: Vec<String>,
}

#[derive(Serialize)]
struct Repository<'a> {
    os_list: [&'a Entry; 1],
}

/// The repository text.
pub fn render(entry: &Entry) -> String {
    let mut text = serde_json::to_string_pretty(&Repository { os_list: [entry] })
        .expect("plain data serializes");
    text.push('\n');
    text
}

/// Writes `out` (atomically).
pub fn write(entry: &Entry, out: &Path) -> Result<Written> {
    let text = render(entry);
    write_atomically(out, |w| Ok(std::io::Write::write_all(w, text.as_bytes())?))
}

/// `YYYY-MM-DD` of a Unix time (the build's `SOURCE_DATE_EPOCH`, so the
/// file is the same on every rebuild).
pub fn date(epoch: u64) -> String {
    let (year, month, day) = crate::fs::fat::civil_from_days(epoch / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_the_epoch() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_704_067_200), "2024-01-01");
        assert_eq!(date(1_709_164_800), "2024-02-29");
        assert_eq!(date(1_795_000_000), "2026-11-18");
    }

    #[test]
    fn one_entry_in_pi_imagers_shape() {
        let e = Entry {
            name: "kiln (rpi3)".into(),
            description: "d".into(),
            url: "https://example.invalid/k.img.xz".into(),
            release_date: date(0),
            extract_size: 10,
            extract_sha256: "a".repeat(64),
            image_download_size: 5,
            image_download_sha256: "b".repeat(64),
            init_format: "cloudinit",
            devices: vec!["pi3-64bit".into()],
        };
        let v: serde_json::Value = serde_json::from_str(&render(&e)).unwrap();
        let entry = &v["os_list"][0];
        assert_eq!(v["os_list"].as_array().unwrap().len(), 1);
        assert_eq!(entry["init_format"], "cloudinit");
        assert_eq!(entry["extract_size"], 10);
        assert_eq!(entry["image_download_size"], 5);
        assert_eq!(entry["devices"][0], "pi3-64bit");
        assert_eq!(entry["release_date"], "1970-01-01");
    }
}
