//! Overlays: directory trees copied over the root, in order. Files keep their
//! permission bits and become root-owned; `*.tera` files are rendered with
//! the image's facts and lose the suffix.

use std::path::Path;

use anyhow::{Context, Result};

use super::tree::{Node, Tree};

/// Copies `dir` into `tree`, rendering templates with `context`.
pub fn apply(dir: &Path, tree: &mut Tree, context: &tera::Context) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "overlay {} is not a directory; check `overlays` in the spec",
            dir.display()
        );
    }
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                stack.push(path.clone());
            }
            entries.push(path);
        }
    }
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(dir)
            .expect("below the overlay")
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        if meta.is_dir() {
            tree.insert(&rel, Node::dir(mode));
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            tree.insert(&rel, Node::symlink(&target.to_string_lossy()));
        } else if let Some(dest) = rel.strip_suffix(".tera") {
            let template = std::fs::read_to_string(&path)
                .with_context(|| format!("reading template {}", path.display()))?;
            let text = tera::Tera::one_off(&template, context, false)
                .with_context(|| format!("rendering template {}", path.display()))?;
            tree.insert(dest, Node::file(text.into_bytes(), mode));
        } else {
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            tree.insert(&rel, Node::file(data, mode));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_modes_and_renders_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        let tool = dir.path().join("usr/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(dir.path().join("motd.tera"), "image {{ image }}\n").unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("image", "demo");
        let mut tree = Tree::default();
        apply(dir.path(), &mut tree, &ctx).unwrap();
        assert_eq!(tree.get("usr/bin/tool").unwrap().mode, 0o750);
        assert_eq!(tree.file_data("motd").unwrap().as_ref(), b"image demo\n");
        assert!(tree.get("motd.tera").is_none());
    }

    #[test]
    fn missing_overlay_is_a_clear_error() {
        let e = apply(
            Path::new("/nonexistent/overlay"),
            &mut Tree::default(),
            &tera::Context::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
