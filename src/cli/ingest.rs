//! `amc-sync ingest FILE…`: one-shot ingestion of NDJSON / JSON / CSV files
//! into the local queue (DESIGN.md 4.2, 4.9), with a progress bar.
//!
//! Unlike the drop folder it never moves or deletes the user's files. Files
//! are committed in chunks with a checkpoint, so an interrupted run resumes
//! where it stopped when started again on the same file, and a file already
//! ingested is skipped (`--force` reads it again). Rejected rows go to
//! `<data_dir>/rejected/<file>.errors.ndjson` (line, reason code, message;
//! never raw values).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use amc_sync::agent::pipeline::Pipeline;
use amc_sync::ingest::file::FileFormat;
use amc_sync::ingest::folder::{self, FileReport, FileStatus, ProcessOptions};
use amc_sync::store::Writer;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::common::{Common, Failure, open_store};

/// Arguments of `amc-sync ingest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Formats by extension: .ndjson/.jsonl (one Segment message per line), .json (a batch object
or an array), .csv (a CRM list; the audience may come from the file name
<audience_key>[.add|.remove].csv). Rejected rows are listed in <data dir>/rejected/.
Exit codes: 0 every file read (even with rejected rows), 1 runtime failure, 2 usage error.")]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Print one JSON summary instead of text (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Keep the input files where they are. Always the case for `ingest` (only the
    /// drop folder moves files); accepted so scripts can say so explicitly.
    #[arg(long)]
    keep_files: bool,
    /// Read files again even if they were already ingested completely.
    #[arg(long)]
    force: bool,
    /// Files to ingest (.ndjson, .jsonl, .json, .csv).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// One file's result, for the summary.
enum Outcome {
    Read(Box<FileReport>),
    Error { code: &'static str, message: String },
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    match ingest(&args) {
        Ok(code) => code,
        Err(f) => {
            if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "error": {"code": f.code, "message": f.message}})
                );
                ExitCode::from(f.code)
            } else {
                f.report()
            }
        }
    }
}

fn ingest(args: &Args) -> Result<ExitCode, Failure> {
    let _ = args.keep_files; // ingest never moves or deletes its inputs
    for f in &args.files {
        if !f.is_file() {
            return Err(Failure::usage(format!(
                "{}: no such file (or not a regular file)",
                f.display()
            )));
        }
        if FileFormat::from_path(f).is_none() {
            return Err(Failure::usage(format!(
                "{}: unsupported file type (expected .ndjson, .jsonl, .json or .csv)",
                f.display()
            )));
        }
    }
    let (cfg, _) = args.common.load_config()?;
    let data_dir = args.common.data_dir()?;
    let store = open_store(&data_dir)?;
    let writer = Writer::spawn(store)
        .map_err(|e| Failure::runtime(format!("cannot start the store writer: {e}")))?;
    let pipeline = Pipeline::new(&cfg, writer.handle())
        .map_err(|e| Failure::runtime(format!("cannot prepare the audiences: {e}")))?;
    let mut opts = ProcessOptions::new(data_dir.join(folder::REJECTED_DIR));
    opts.reprocess_done = args.force;
    let show_bar = !args.json && std::io::stderr().is_terminal();

    let mut results: Vec<(PathBuf, Outcome)> = Vec::new();
    let mut failed = false;
    for path in &args.files {
        let bar = if show_bar {
            let style = ProgressStyle::with_template(
                "{msg:20!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            ProgressBar::new(0)
                .with_style(style)
                .with_message(file_name(path))
        } else {
            ProgressBar::hidden()
        };
        let r = folder::process_file(&pipeline, path, &opts, &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        match r {
            Ok(report) => {
                if !args.json {
                    print_text(path, &report);
                }
                results.push((path.clone(), Outcome::Read(Box::new(report))));
            }
            Err(e) => {
                failed = true;
                let stop = matches!(e, folder::FolderError::Store(_));
                if !args.json {
                    eprintln!("error: {}: {e} ({})", path.display(), e.code());
                    if stop {
                        eprintln!(
                            "  what was committed before is kept; run the command again to resume"
                        );
                    }
                }
                results.push((
                    path.clone(),
                    Outcome::Error {
                        code: e.code(),
                        message: e.to_string(),
                    },
                ));
                if stop {
                    break;
                }
            }
        }
    }
    drop(pipeline);
    if let Err(e) = writer.shutdown() {
        failed = true;
        if !args.json {
            eprintln!("error: the store writer stopped abnormally: {e}");
        }
    }
    if args.json {
        let files: Vec<Value> = results.iter().map(|(p, o)| file_json(p, o)).collect();
        println!(
            "{}",
            json!({"ok": !failed, "dataDir": data_dir.display().to_string(), "files": files})
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Ndjson => "ndjson",
        FileFormat::Json => "json",
        FileFormat::Csv => "csv",
    }
}

fn print_text(path: &std::path::Path, r: &FileReport) {
    let name = path.display();
    let s = &r.summary;
    match r.status {
        FileStatus::AlreadyDone => {
            println!(
                "{name}: already ingested ({} rows ok, {} rejected); nothing to do (--force reads it again)",
                r.rows_ok, r.rows_rejected
            );
        }
        FileStatus::Done | FileStatus::Interrupted => {
            let resumed = if r.resumed_from > 0 {
                format!(" (resumed at byte {})", r.resumed_from)
            } else {
                String::new()
            };
            println!(
                "{name}{resumed}: {} received, {} queued ({} coalesced), {} duplicates, {} stale, {} ignored, {} dead letters",
                s.received,
                s.queued,
                s.coalesced,
                s.duplicates,
                s.stale,
                s.ignored,
                s.dead_lettered()
            );
            if !s.dead_letters.is_empty() {
                let by_reason: Vec<String> = s
                    .dead_letters
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                println!("  dead letters by reason: {}", by_reason.join(", "));
            }
        }
    }
    if let Some(f) = &r.rejected_file {
        println!("  rejected lines: {}", f.display());
    }
}

fn file_json(path: &std::path::Path, o: &Outcome) -> Value {
    match o {
        Outcome::Read(r) => {
            let s = &r.summary;
            json!({
                "path": path.display().to_string(),
                "status": r.status.as_str(),
                "format": format_name(r.format),
                "bytes": r.size,
                "fingerprint": r.fingerprint,
                "resumedFrom": r.resumed_from,
                "received": s.received,
                "queued": s.queued,
                "coalesced": s.coalesced,
                "stale": s.stale,
                "duplicates": s.duplicates,
                "ignored": s.ignored,
                "deadLetters": s.dead_letters,
                "rowsOk": r.rows_ok,
                "rowsRejected": r.rows_rejected,
                "rejectedFile": r.rejected_file.as_ref().map(|p| p.display().to_string()),
            })
        }
        Outcome::Error { code, message } => json!({
            "path": path.display().to_string(),
            "status": "error",
            "error": {"code": code, "message": message},
        }),
    }
}
