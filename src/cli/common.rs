//! Options and helpers shared by the subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amc_sync::agent::state::DB_FILE;
use amc_sync::config::{self, Config};
use amc_sync::store::{Store, StoreError};

/// `--data-dir` and `--config`, accepted by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Data directory (database, state, drop folder, logs). Default:
    /// $AMC_SYNC_DATA_DIR, else the OS data dir (Linux ~/.local/share/amc-sync).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file. Default: $AMC_SYNC_CONFIG, else the OS config dir's config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A command's failure: message and exit code (1 runtime, 2 usage/config).
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What to print after `error: `.
    pub message: String,
}

impl Failure {
    /// Exit code 2: usage or configuration error.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// Exit code 1: runtime failure.
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Prints the error and returns the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// Converts a command result to an exit code.
pub fn finish(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

impl Common {
    /// Loads the configuration (exit 2 on error, with file:line:column).
    pub fn load_config(&self) -> Result<(Config, Option<PathBuf>), Failure> {
        Config::load(self.config.as_deref()).map_err(|e| Failure::usage(e.to_string()))
    }

    /// The data dir in force, created if missing.
    pub fn data_dir(&self) -> Result<PathBuf, Failure> {
        let dir = config::data_dir(self.data_dir.as_deref()).ok_or_else(|| {
            Failure::usage("no data directory: pass --data-dir or set AMC_SYNC_DATA_DIR")
        })?;
        std::fs::create_dir_all(&dir).map_err(|e| {
            Failure::runtime(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        Ok(dir)
    }

    /// The data dir in force, without creating it (read-only commands).
    pub fn data_dir_no_create(&self) -> Result<PathBuf, Failure> {
        config::data_dir(self.data_dir.as_deref()).ok_or_else(|| {
            Failure::usage("no data directory: pass --data-dir or set AMC_SYNC_DATA_DIR")
        })
    }
}

/// Opens the store for writing; a running agent holding the data dir is a
/// usage error that names its pid.
pub fn open_store(data_dir: &Path) -> Result<Store, Failure> {
    Store::open(data_dir.join(DB_FILE)).map_err(|e| match e {
        StoreError::Locked { pid, .. } => Failure::usage(format!(
            "an AMC Sync agent{} is running on {}; stop it first, or use the running agent \
             (its drop folder instead of `ingest`; the dashboard's Audiences view, \
             `amc-sync dashboard`, to create audiences)",
            pid.map_or(String::new(), |p| format!(" (pid {p})")),
            data_dir.display()
        )),
        other => Failure::runtime(format!("cannot open the database: {other}")),
    })
}

/// Opens the store for reading, never taking the agent lock (a `status` loop
/// must not make a starting agent fail): read-only, beside a running agent
/// or not. Returns the store and the lock holder's pid when an agent (or
/// another command) holds the data dir (`Some(0)` when its pid is unknown).
/// `Ok(None)` when the data dir has no database yet.
pub fn open_store_for_read(data_dir: &Path) -> Result<Option<(Store, Option<u32>)>, Failure> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let holder = Store::lock_holder(&path).map(|pid| pid.unwrap_or(0));
    let store = Store::open_read_only(&path)
        .map_err(|e| Failure::runtime(format!("cannot read the database: {e}")))?;
    Ok(Some((store, holder)))
}
