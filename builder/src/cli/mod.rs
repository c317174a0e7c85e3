//! The command line: one struct per command, its doc comments are the help.
//! Commands turn their arguments into plain data and call the library.

mod bench;
mod boot;
mod build;
mod flash;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln bakes immutable edge OS images with k3s inside.
///
/// From one YAML spec, kiln builds a disk image for a board (QEMU, Raspberry
/// Pi, VMware, NUC, Jetson): a read-only squashfs root with systemd and the
/// k3s binary, a data partition that grows to fill the disk on first boot,
/// and a first-boot service that makes the node a k3s server or agent.
/// kiln needs no root, no Docker and no emulation to build.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, help_expected = true, max_term_width = 80)]
pub struct Cli {
    /// Print less (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Build(build::BuildCmd),
    Boot(boot::BootCmd),
    Flash(flash::FlashCmd),
    Validate(validate::ValidateCmd),
    Boards(BoardsCmd),
    Bench(bench::BenchCmd),
}

/// List the boards kiln can build for.
#[derive(Debug, clap::Args)]
pub struct BoardsCmd {}

impl Cli {
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Build(cmd) => cmd.run(),
            Command::Boot(cmd) => return cmd.run(),
            Command::Flash(cmd) => cmd.run(),
            Command::Validate(cmd) => cmd.run(),
            Command::Boards(_) => list_boards(),
            Command::Bench(cmd) => cmd.run(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kiln: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn list_boards() -> anyhow::Result<()> {
    for name in crate::board::available() {
        let board = crate::board::Board::load(&name)?;
        println!(
            "{:<16} {:<6} {}",
            board.name,
            board.arch.debian(),
            board.description
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
