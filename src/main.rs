//! The `gatehouse` binary: parse the command line, run the command, turn its outcome into an
//! exit code. No logic lives here.

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = gatehouse::cli::Cli::parse();
    match gatehouse::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
