//! Command-line interface. Exit codes (DESIGN.md 4.9): 0 ok, 1 runtime
//! failure, 2 usage or configuration error.

mod config_cmd;
mod normalize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// AMC Sync keeps Amazon Ads DSP / AMC audiences in sync with audience
/// membership events, normalizing and SHA-256-hashing PII on this device.
#[derive(Debug, Parser)]
#[command(name = "amc-sync", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Normalize and hash PII exactly as AMC Sync uploads it (no data is stored or sent).
    ///
    /// "Why is my match rate low?" starts here: see what a value becomes before it is hashed.
    Normalize(normalize::Args),
    /// Check the configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Normalize(args) => normalize::run(args),
        Command::Config(cmd) => config_cmd::run(cmd),
    }
}
