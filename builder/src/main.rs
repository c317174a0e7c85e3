use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kiln::cli::Cli::parse();
    kiln::logger::init(cli.quiet);
    cli.run()
}
