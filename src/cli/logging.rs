//! Logging for long-running commands (`run`): `tracing` to stderr and, via
//! `tracing-appender`, to daily-rolling files `<log dir>/amc-sync.YYYY-MM-DD.log`
//! keeping the newest [`MAX_LOG_FILES`]. `--log-format json` switches both to
//! JSON lines. Filter with `RUST_LOG` (default `info`).
//!
//! Privacy by construction: the code logs counts, reason codes, audience keys
//! and file names — never field values — so no layer here needs to redact.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// stderr that never fails: a closed or full stderr must not crash the agent
/// (the `fmt` layer reports its own write errors on stderr, which panics when
/// stderr itself is broken). Lost console lines are acceptable; the log file
/// still has them.
#[derive(Debug, Clone, Copy)]
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn quiet_stderr() -> QuietStderr {
    QuietStderr
}

/// Daily log files kept (two weeks).
pub const MAX_LOG_FILES: usize = 14;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Returns the guard that flushes the file
/// writer on drop (keep it alive until exit), or an error message when the
/// log dir cannot be used (logging then goes to stderr only).
pub fn init(format: LogFormat, log_dir: Option<&Path>) -> (Option<WorkerGuard>, Option<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut warning = None;
    let file = log_dir.and_then(|dir| {
        let built = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                RollingFileAppender::builder()
                    .rotation(Rotation::DAILY)
                    .filename_prefix("amc-sync")
                    .filename_suffix("log")
                    .max_log_files(MAX_LOG_FILES)
                    .build(dir)
                    .map_err(|e| e.to_string())
            });
        match built {
            Ok(appender) => Some(tracing_appender::non_blocking(appender)),
            Err(e) => {
                warning = Some(format!(
                    "cannot write logs to {}: {e}; logging to stderr only",
                    dir.display()
                ));
                None
            }
        }
    });
    let (writer_guard, result) = match (file, format) {
        (Some((nb, guard)), LogFormat::Text) => {
            let w = quiet_stderr.and(nb.with_max_level(tracing::Level::TRACE));
            let r = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(w)
                .with_ansi(false)
                .try_init();
            (Some(guard), r)
        }
        (Some((nb, guard)), LogFormat::Json) => {
            let w = quiet_stderr.and(nb.with_max_level(tracing::Level::TRACE));
            let r = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(w)
                .try_init();
            (Some(guard), r)
        }
        (None, LogFormat::Text) => (
            None,
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(quiet_stderr)
                .try_init(),
        ),
        (None, LogFormat::Json) => (
            None,
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(quiet_stderr)
                .try_init(),
        ),
    };
    if let Err(e) = result {
        warning.get_or_insert(format!("logging already initialised: {e}"));
    }
    (writer_guard, warning)
}
