//! `amc-sync`: the command-line entry point. See `amc-sync --help`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
