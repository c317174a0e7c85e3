//! Air-gap images: the tarballs the image carries under
//! [`AIRGAP_IMAGES_DIR`] (spec `airgap-images`, read-only root) become
//! symlinks in k3s's `<data-dir>/agent/images/`, which k3s imports from
//! when it starts. Links, not copies: the data partition holds no second
//! copy, and a new root image brings new tarballs without a stale one left
//! behind under the same name. Every boot checks each link and fixes it.

use std::fs;
use std::io::Write;

use super::files::data_dir;
use super::fsutil::{replace_symlink, Written};
use super::{io_context, say, Error, Options};
use crate::config::NodeConfig;
use crate::layout::AIRGAP_IMAGES_DIR;

/// Links every tarball in the image into k3s's images directory, one
/// console line each. An image without tarballs says nothing.
pub fn link_images(opts: &Options, c: &NodeConfig, out: &mut dyn Write) -> Result<(), Error> {
    let mut names: Vec<String> = match fs::read_dir(opts.path(AIRGAP_IMAGES_DIR)) {
        Ok(dir) => dir
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_context(format!("reading {AIRGAP_IMAGES_DIR}"))(e)),
    };
    names.sort();
    let images = format!("{}/agent/images", data_dir(c));
    for name in names {
        let link = format!("{images}/{name}");
        let target = format!("{AIRGAP_IMAGES_DIR}/{name}");
        let done = replace_symlink(&opts.path(&link), &target)
            .map_err(io_context(format!("linking {link}")))?;
        let what = match done {
            Written::Changed => "linked",
            Written::Unchanged => "already linked",
        };
        say(out, format!("air-gap image {name}: {what} in {images}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{Root, FW_CFG_RAW};
    use super::*;

    #[test]
    fn tarballs_are_linked_into_the_images_dir_at_every_boot() {
        let root = Root::new("airgap");
        root.put(FW_CFG_RAW, "role: agent\nserver: https://10.0.0.1:6443\ntoken: t\nk3s-args: {data-dir: /data/k3s}\n");
        root.put(&format!("{AIRGAP_IMAGES_DIR}/b-apps.tar.zst"), "b");
        root.put(&format!("{AIRGAP_IMAGES_DIR}/a-k3s.tar"), "a");
        fs::create_dir_all(root.path(&format!("{AIRGAP_IMAGES_DIR}/not-a-file"))).unwrap();
        let (r, out) = root.apply();
        r.unwrap();
        let said: Vec<&str> = out
            .iter()
            .map(String::as_str)
            .filter(|l| l.contains("air-gap"))
            .collect();
        assert_eq!(
            said,
            [
                "kiln: air-gap image a-k3s.tar: linked in /data/k3s/agent/images",
                "kiln: air-gap image b-apps.tar.zst: linked in /data/k3s/agent/images",
            ]
        );
        let link = root.path("/data/k3s/agent/images/b-apps.tar.zst");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/kiln/airgap-images/b-apps.tar.zst")
        );
        // A later boot (or a power cut before the marker) finds them done;
        // a link someone broke is mended.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        let (r, out) = root.apply();
        r.unwrap();
        assert!(
            out.contains(
                &"kiln: air-gap image a-k3s.tar: already linked in /data/k3s/agent/images"
                    .to_string()
            ),
            "{out:?}"
        );
        assert!(
            out.contains(
                &"kiln: air-gap image b-apps.tar.zst: linked in /data/k3s/agent/images".to_string()
            ),
            "{out:?}"
        );
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/kiln/airgap-images/b-apps.tar.zst")
        );
    }

    #[test]
    fn an_image_without_tarballs_says_nothing() {
        let root = Root::new("airgap-none");
        root.put(FW_CFG_RAW, "role: server\ncluster-init: true\n");
        let (r, out) = root.apply();
        r.unwrap();
        assert!(!out.iter().any(|l| l.contains("air-gap")), "{out:?}");
        assert!(!root.path("/var/lib/rancher/k3s/agent/images").exists());
    }
}
