//! Command-line interface. Exit codes (DESIGN.md 4.9): 0 ok, 1 runtime
//! failure, 2 usage or configuration error.

mod amazon_cmds;
mod common;
mod config_cmd;
mod dashboard;
mod demo;
mod ingest;
mod logging;
mod login_cmds;
mod normalize;
mod run;
mod store_cmds;

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
    /// Run the agent: Segment-compatible HTTP intake and the watched drop folder.
    Run(run::Args),
    /// See the whole job once: sandbox Amazon API + the agent + sample traffic, then a summary.
    #[command(long_about = demo::LONG_ABOUT)]
    Demo(demo::Args),
    /// Ingest NDJSON / JSON / CSV files once, with a progress bar (files are not moved).
    Ingest(ingest::Args),
    /// Upload queued changes now (through the running agent, or in-process).
    Flush(amazon_cmds::FlushArgs),
    /// Log in with Amazon (browser, state + PKCE); secrets go to the OS keychain.
    Login(login_cmds::LoginArgs),
    /// Remove the stored Amazon secrets (keychain and fallback file); the queue is kept.
    Logout(login_cmds::LogoutArgs),
    /// Show or switch the Amazon Ads region (NA, EU, FE); the queue is kept.
    Region(login_cmds::RegionArgs),
    /// Run the sandbox Amazon Ads API (audiences, records, jobs, LWA) for trials and tests.
    Sandbox(amazon_cmds::SandboxArgs),
    /// Normalize and hash PII exactly as AMC Sync uploads it (no data is stored or sent).
    ///
    /// "Why is my match rate low?" starts here: see what a value becomes before it is hashed.
    Normalize(normalize::Args),
    /// Check the configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Show the agent, write key, queue per audience and dead letters.
    Status(store_cmds::StatusArgs),
    /// Inspect records that could not be queued or uploaded, with reason codes.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(store_cmds::DeadLettersCommand),
    /// List or create local audiences.
    #[command(subcommand)]
    Audiences(store_cmds::AudiencesCommand),
    /// Open the running agent's dashboard in the browser (or print its URL).
    Dashboard(dashboard::Args),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            if e.use_stderr() && is_normalize_invocation() {
                // clap quotes the offending argument, which for `normalize`
                // may be PII (an unquoted value split in two): say what is
                // wrong without repeating it.
                eprintln!(
                    "error: {} (values are not repeated here; quote a VALUE that contains \
                     spaces, put `--` before one that starts with `-`, or pass `-` to read it \
                     from stdin)\n\nFor more information, try 'amc-sync normalize --help'.",
                    e.kind().as_str().unwrap_or("invalid arguments")
                );
            } else {
                let _ = e.print();
            }
            return ExitCode::from(code);
        }
    };
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Sandbox(_) | Command::Demo(_)
    ) {
        restore_default_sigpipe();
    }
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Flush(args) => amazon_cmds::flush(args),
        Command::Login(args) => login_cmds::login(args),
        Command::Logout(args) => login_cmds::logout(args),
        Command::Region(args) => login_cmds::region(args),
        Command::Sandbox(args) => amazon_cmds::sandbox(args),
        Command::Normalize(args) => normalize::run(args),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Status(args) => store_cmds::status(args),
        Command::DeadLetters(cmd) => store_cmds::dead_letters(cmd),
        Command::Audiences(cmd) => store_cmds::audiences(cmd),
        Command::Dashboard(args) => dashboard::run(args),
    }
}

/// True when the first non-option argument is `normalize`.
fn is_normalize_invocation() -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_some_and(|a| a == "normalize")
}

/// Short-lived commands die quietly on a closed pipe (`amc-sync status | head`)
/// like other Unix tools, instead of panicking in `println!`. The agent
/// (`run`) keeps Rust's default (SIGPIPE ignored) and handles write errors.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up on the main thread before any other
    // thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
