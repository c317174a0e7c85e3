use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Check a node.yaml (or an image spec) without building anything.
///
/// Prints `ok` or every problem with file, line and column.
#[derive(Debug, clap::Args)]
pub struct ValidateCmd {
    /// node.yaml files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The files are image specs, not node configs.
    #[arg(long)]
    pub spec: bool,
}

impl ValidateCmd {
    pub fn run(self) -> Result<()> {
        let mut failed = 0;
        for file in &self.files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let result = if self.spec {
                crate::spec::Spec::parse(&text, file)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                kiln_node::config::parse(&text, &file.display().to_string())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => println!("{}: ok", file.display()),
                Err(e) => {
                    eprintln!("{e}");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            bail!("{failed} of {} files invalid", self.files.len());
        }
        Ok(())
    }
}
