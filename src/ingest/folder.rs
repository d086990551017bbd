//! The drop folder (DESIGN.md 4.2): files of Segment messages or CRM rows,
//! committed in chunks with a checkpoint, then moved out of the way.
//!
//! Two layers:
//!
//! * [`process_file`] reads one file with [`FileReader`] and commits it
//!   through the [`Pipeline`] in chunks (default 5,000 items or 2 MiB). Each
//!   chunk's rows and the file's [`FileCheckpoint`] (fingerprint + byte
//!   offset) are committed in **one transaction**, so a crash mid-file resumes
//!   exactly after the last committed chunk: no row lost, none committed
//!   twice. `.json` documents are parsed whole and committed as one chunk.
//!   Rejected rows are streamed to `<rejected_dir>/<file>.errors.ndjson`
//!   (`{"line","reason","message"}`, never a raw value). `amc-sync ingest`
//!   uses this layer directly and never moves the user's files.
//! * [`spawn`] watches a folder (`notify` events + a scan at start-up + a
//!   periodic rescan, since events get lost on network file systems), waits
//!   until each file is complete (name rules, then size and mtime unchanged
//!   for a settle interval), processes files one at a time on its own thread
//!   ([`process_drop_file`]) and applies the lifecycle: `processed/` (or
//!   delete), `rejected/`, `failed/`. Store failures (disk full) leave the
//!   file in place with its checkpoint and are retried with backoff.
//!
//! # File fingerprint
//! SHA-256 over a version tag, the file size, its modification time (ns) and
//! its first and last 64 KiB. It does not include the path, so a file renamed
//! or moved (which keeps its mtime) keeps its checkpoint; any rewrite changes
//! the mtime and so the fingerprint. The same content saved again as a new
//! file (new mtime) is processed again, on purpose: re-dropping an export is
//! an explicit request. Reading it costs at most 128 KiB whatever the size.
//!
//! # Counts in checkpoints
//! `rows_ok` = items read minus `rows_rejected` (duplicates, stale and
//! ignored messages count as ok); `rows_rejected` = dead-lettered items.
//! The committed checkpoint carries the counts known before the commit (parse
//! rejections); when the pipeline dead-letters more, a follow-up write
//! corrects them (counts are informational; the offset is what is atomic).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::Watcher as _;
use sha2::{Digest, Sha256};

use crate::agent::pipeline::{InFlight, IngestSummary, Input, Pipeline, Prepared, Rejection};
use crate::config::Config;
use crate::ingest::file::{FileError, FileFormat, FileReader};
use crate::model::Source;
use crate::store::{FileCheckpoint, FileState, IncomingItem, StoreError};

/// Default items per committed chunk.
pub const DEFAULT_CHUNK_ITEMS: usize = 10_000;
/// Default bytes of file per committed chunk (2 MiB: bounds memory to a few
/// tens of MB whatever the file size; see the issue note for measurements).
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
/// Default settle interval: size and mtime must stay unchanged this long.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// Default full rescan interval of the drop folder.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(30);
/// Bytes hashed at each end of a file for its fingerprint.
const FINGERPRINT_EDGE: u64 = 64 * 1024;

/// Sub-folder of fully committed files.
pub const PROCESSED_DIR: &str = "processed";
/// Sub-folder of rejected-row reports.
pub const REJECTED_DIR: &str = "rejected";
/// Sub-folder of files that could not be parsed at all.
pub const FAILED_DIR: &str = "failed";

/// Errors of the drop folder.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The file cannot be read as its format (it goes to `failed/`), or
    /// reading it failed ([`FileError::Io`]: retried later).
    #[error(transparent)]
    File(#[from] FileError),
    /// The store could not commit (e.g. disk full): the file stays in place
    /// with its checkpoint and is retried later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file-system operation of the folder itself (creating folders,
    /// writing reports, moving files) failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl FolderError {
    /// Stable reason code (`io_error`, `store_error`, or the [`FileError`] code).
    pub fn code(&self) -> &'static str {
        match self {
            FolderError::File(e) => e.code(),
            FolderError::Store(StoreError::DiskFull) => "disk_full",
            FolderError::Store(_) => "store_error",
            FolderError::Io { .. } => "io_error",
        }
    }

    /// Whether trying again later may succeed (store and I/O failures). A
    /// non-retryable error means the file itself is unusable (`failed/`).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, FolderError::File(e) if !matches!(e, FileError::Io(_)))
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + use<> {
    let path = path.to_path_buf();
    move |source| FolderError::Io { op, path, source }
}

/// A cancellation check polled between chunks.
pub type StopCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Options of [`process_file`].
#[derive(Clone)]
pub struct ProcessOptions {
    /// Where `<file>.errors.ndjson` reports go (created when needed).
    pub rejected_dir: PathBuf,
    /// Items per committed chunk (≥ 1).
    pub chunk_items: usize,
    /// File bytes per committed chunk (≥ 1).
    pub chunk_bytes: u64,
    /// Stop after this many committed chunks (the checkpoint stays
    /// `reading`): tests simulate a crash with it; `None` = no limit.
    pub max_chunks: Option<u64>,
    /// Read a file again even if its checkpoint says `done`.
    pub reprocess_done: bool,
    /// Polled after each committed chunk: `true` stops reading (shutdown);
    /// the file resumes from its checkpoint next time.
    pub should_stop: Option<StopCheck>,
}

impl std::fmt::Debug for ProcessOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessOptions")
            .field("rejected_dir", &self.rejected_dir)
            .field("chunk_items", &self.chunk_items)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("max_chunks", &self.max_chunks)
            .field("reprocess_done", &self.reprocess_done)
            .field("should_stop", &self.should_stop.is_some())
            .finish()
    }
}

impl ProcessOptions {
    /// Defaults (5,000 items / 2 MiB chunks, no limit) writing reports to `rejected_dir`.
    pub fn new(rejected_dir: impl Into<PathBuf>) -> ProcessOptions {
        ProcessOptions {
            rejected_dir: rejected_dir.into(),
            chunk_items: DEFAULT_CHUNK_ITEMS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_chunks: None,
            reprocess_done: false,
            should_stop: None,
        }
    }

    fn stopped(&self) -> bool {
        self.should_stop.as_ref().is_some_and(|f| f())
    }
}

/// How far [`process_file`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Read to the end and committed (checkpoint `done`).
    Done,
    /// The checkpoint already said `done`: nothing was read.
    AlreadyDone,
    /// Stopped early (`max_chunks` or `should_stop`): committed up to
    /// `byte_offset`, checkpoint `reading`; process it again to resume.
    Interrupted,
}

impl FileStatus {
    /// `done`, `already_done` or `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Done => "done",
            FileStatus::AlreadyDone => "already_done",
            FileStatus::Interrupted => "interrupted",
        }
    }
}

/// What [`process_file`] did with one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file read.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
    /// Its fingerprint (checkpoint key).
    pub fingerprint: String,
    /// Its size in bytes.
    pub size: u64,
    /// How far it got.
    pub status: FileStatus,
    /// Offset this run started from (non-zero when resuming a checkpoint).
    pub resumed_from: u64,
    /// Offset committed at the end of this run.
    pub byte_offset: u64,
    /// Chunks (transactions) committed by this run.
    pub chunks: u64,
    /// Counts of this run (its `rejections` are empty: they went to the report file).
    pub summary: IngestSummary,
    /// Items read without rejection, over every run of this file.
    pub rows_ok: u64,
    /// Items rejected, over every run of this file.
    pub rows_rejected: u64,
    /// The rejected-rows report, once the file is done and any row was rejected.
    pub rejected_file: Option<PathBuf>,
}

/// The fingerprint of a file (see the module docs): 64 lowercase hex characters.
///
/// # Errors
/// The file cannot be opened or read.
pub fn fingerprint(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    let size = meta.len();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(b"amc-sync-file-v2\0");
    // The name decides a CSV's audience and action (`vip.remove.csv`), so two
    // copies under different names are different files.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(size.to_le_bytes());
    h.update(mtime_ns.to_le_bytes());
    let mut buf = Vec::with_capacity(FINGERPRINT_EDGE as usize);
    Read::by_ref(&mut f)
        .take(FINGERPRINT_EDGE)
        .read_to_end(&mut buf)?;
    h.update(&buf);
    if size > FINGERPRINT_EDGE {
        let tail = (size - FINGERPRINT_EDGE).max(FINGERPRINT_EDGE);
        f.seek(SeekFrom::Start(tail))?;
        buf.clear();
        f.take(FINGERPRINT_EDGE).read_to_end(&mut buf)?;
        h.update(&buf);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// One chunk handed from the reader thread to the committing thread: its
/// inputs already mapped and hashed (raw messages never pile up, so chunks
/// can be large while memory stays small).
struct Chunk {
    prepared: Prepared,
    /// Parsed inputs not yet mapped (at most [`MAP_BATCH`]).
    inputs: Vec<Input>,
    /// Offset just past the chunk's last item.
    end_offset: u64,
}

/// Inputs the reader thread parses before mapping them: bounds the raw
/// messages held in memory.
const MAP_BATCH: usize = 256;

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            prepared: Prepared::default(),
            inputs: Vec::with_capacity(MAP_BATCH),
            end_offset: 0,
        }
    }

    /// Maps the parsed inputs into `prepared`.
    fn map(&mut self, pipeline: &Pipeline) -> Result<(), StoreError> {
        if !self.inputs.is_empty() {
            let inputs = std::mem::replace(&mut self.inputs, Vec::with_capacity(MAP_BATCH));
            self.prepared
                .append(pipeline.prepare(inputs, Source::File)?);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.inputs.len() + usize::try_from(self.prepared.received()).unwrap_or(usize::MAX)
    }
}

/// Streams rejection lines to a hidden partial report, renamed into place
/// when the file is done (so a resumed file keeps its earlier lines).
struct RejectSink {
    dir: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<File>>,
    truncate: bool,
}

impl RejectSink {
    fn new(dir: &Path, fingerprint: &str, fresh: bool) -> RejectSink {
        RejectSink {
            dir: dir.to_path_buf(),
            partial: dir.join(format!(".{}.errors.ndjson.part", &fingerprint[..16])),
            out: None,
            truncate: fresh,
        }
    }

    fn open(&mut self) -> Result<&mut BufWriter<File>, FolderError> {
        if self.out.is_none() {
            fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
            let file = OpenOptions::new()
                .create(true)
                .append(!self.truncate)
                .write(true)
                .truncate(self.truncate)
                .open(&self.partial)
                .map_err(io_err("open", &self.partial))?;
            self.truncate = false;
            self.out = Some(BufWriter::new(file));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    fn write(&mut self, rejections: &[Rejection]) -> Result<(), FolderError> {
        if rejections.is_empty() {
            return Ok(());
        }
        let partial = self.partial.clone();
        let out = self.open()?;
        for r in rejections {
            let line = serde_json::json!({
                "line": r.line,
                "reason": r.reason,
                "message": r.message,
            });
            writeln!(out, "{line}").map_err(io_err("write", &partial))?;
        }
        out.flush().map_err(io_err("write", &partial))
    }

    /// Drops a stale partial report of an earlier attempt that never committed.
    fn reset(&mut self) {
        if self.truncate {
            let _ = fs::remove_file(&self.partial);
        }
    }

    /// Renames the partial report to `<dir>/<file name>.errors.ndjson`.
    fn finish(mut self, file_name: &str) -> Result<Option<PathBuf>, FolderError> {
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(io_err("write", &self.partial))?;
        }
        match fs::metadata(&self.partial) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => {
                let _ = fs::remove_file(&self.partial);
                return Ok(None);
            }
            Err(_) => return Ok(None),
        }
        let dest = unique_path(&self.dir, file_name, "errors.ndjson");
        fs::rename(&self.partial, &dest).map_err(io_err("rename", &self.partial))?;
        Ok(Some(dest))
    }
}

/// Reads `path` and commits it through `pipeline` in chunks, each with the
/// file's checkpoint in the same transaction (see the module docs). Resumes
/// from a `reading` checkpoint; returns [`FileStatus::AlreadyDone`] without
/// reading for a `done` one (unless `opts.reprocess_done`). `progress` gets
/// (bytes committed, file size) after each chunk.
///
/// The file is not moved: that is [`process_drop_file`]'s job.
///
/// # Errors
/// [`FolderError::File`] when the file cannot be opened as its format
/// (unsupported extension, invalid JSON document, CSV without id column…) or
/// reading fails; [`FolderError::Store`] when a commit fails (what was
/// committed before stays, with its checkpoint); [`FolderError::Io`] when
/// the rejection report cannot be written.
pub fn process_file(
    pipeline: &Pipeline,
    path: &Path,
    opts: &ProcessOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<FileReport, FolderError> {
    let format = FileFormat::from_path(path).ok_or(FileError::UnsupportedFormat)?;
    let fp = fingerprint(path).map_err(FileError::Io)?;
    let size = fs::metadata(path).map_err(FileError::Io)?.len();
    let key = fp.clone();
    let checkpoint = pipeline.writer().call(move |s| s.file_checkpoint(&key))?;
    let file_name = display_name(path);
    let mut report = FileReport {
        path: path.to_path_buf(),
        format,
        fingerprint: fp.clone(),
        size,
        status: FileStatus::Done,
        resumed_from: 0,
        byte_offset: 0,
        chunks: 0,
        summary: IngestSummary::default(),
        rows_ok: 0,
        rows_rejected: 0,
        rejected_file: None,
    };
    match &checkpoint {
        Some(cp) if cp.state == FileState::Done && !opts.reprocess_done => {
            report.status = FileStatus::AlreadyDone;
            report.byte_offset = cp.byte_offset;
            report.resumed_from = cp.byte_offset;
            report.rows_ok = cp.rows_ok;
            report.rows_rejected = cp.rows_rejected;
            // A crash between the final commit and the report rename leaves
            // the partial report: finish it now.
            report.rejected_file =
                RejectSink::new(&opts.rejected_dir, &fp, false).finish(&file_name)?;
            progress(size, size);
            return Ok(report);
        }
        Some(cp) if cp.state == FileState::Reading => {
            report.resumed_from = cp.byte_offset;
            report.rows_ok = cp.rows_ok;
            report.rows_rejected = cp.rows_rejected;
        }
        _ => {}
    }
    let start = report.resumed_from;
    let reader = FileReader::open(path, start)?;
    let mut sink = RejectSink::new(&opts.rejected_dir, &fp, start == 0);
    sink.reset();
    progress(start, size);
    let chunk_items = opts.chunk_items.max(1);
    let chunk_bytes = opts.chunk_bytes.max(1);
    let path_text = path.display().to_string();

    // Two stages overlap (two cores): a reader thread parses, maps and
    // hashes chunk k+1 while the store writer commits chunk k. The
    // rendezvous channel and the single commit in flight bound memory to
    // about three chunks of hashed changes (raw messages are mapped in
    // batches of MAP_BATCH and dropped at once).
    let (tx, rx) = mpsc::sync_channel::<Result<Chunk, FolderError>>(0);
    std::thread::scope(|scope| -> Result<FileReport, FolderError> {
        scope.spawn(move || {
            read_chunks(pipeline, reader, start, chunk_items, chunk_bytes, &tx);
        });
        let mut committed = start;
        let mut finished = false;
        let mut stop = false;
        let mut in_flight: Option<ChunkInFlight> = None;
        while let Ok(next) = rx.recv() {
            let chunk = next?;
            let prepared = chunk.prepared;
            // The previous chunk is committed (or not) before this one is
            // submitted, so its checkpoint corrections come first.
            if let Some(f) = in_flight.take() {
                committed = finish_chunk(pipeline, f, &mut report, &mut sink, size, progress)?;
                if opts.max_chunks.is_some_and(|m| report.chunks >= m) || opts.stopped() {
                    stop = true;
                    break;
                }
            }
            let last = chunk.end_offset == u64::MAX;
            let end = if last {
                committed.max(size)
            } else {
                chunk.end_offset
            };
            let received = prepared.received();
            let est_rejected = report.rows_rejected + prepared.rejected();
            let est_ok = report.rows_ok + received - prepared.rejected();
            let state = if last {
                FileState::Done
            } else {
                FileState::Reading
            };
            let cp = FileCheckpoint {
                fingerprint: fp.clone(),
                path: path_text.clone(),
                byte_offset: end,
                rows_ok: est_ok,
                rows_rejected: est_rejected,
                state,
            };
            let inflight =
                pipeline.submit(prepared, vec![IncomingItem::FileCheckpoint(cp.clone())])?;
            in_flight = Some(ChunkInFlight {
                inflight,
                cp,
                received,
                last,
            });
            if last {
                break;
            }
        }
        if let Some(f) = in_flight.take().filter(|_| !stop) {
            let last = f.last;
            committed = finish_chunk(pipeline, f, &mut report, &mut sink, size, progress)?;
            finished = last;
        }
        // Dropping the receiver ends the reader thread at its next send.
        drop(rx);
        report.byte_offset = committed;
        if finished {
            report.status = FileStatus::Done;
            report.rejected_file = sink.finish(&file_name)?;
        } else {
            report.status = FileStatus::Interrupted;
        }
        tracing::info!(
            file = %file_name,
            status = report.status.as_str(),
            received = report.summary.received,
            queued = report.summary.queued,
            rejected = report.summary.dead_lettered(),
            resumed_from = report.resumed_from,
            offset = report.byte_offset,
            "file ingested"
        );
        Ok(report)
    })
}

/// A chunk submitted to the store, not yet known to be committed.
struct ChunkInFlight {
    inflight: InFlight,
    cp: FileCheckpoint,
    received: u64,
    last: bool,
}

/// Waits for a chunk's commit and books it: counts, a corrected checkpoint
/// when the store refused rows the estimate did not know about, the
/// rejection report, progress. Returns the committed offset.
fn finish_chunk(
    pipeline: &Pipeline,
    f: ChunkInFlight,
    report: &mut FileReport,
    sink: &mut RejectSink,
    size: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, FolderError> {
    let ChunkInFlight {
        inflight,
        mut cp,
        received,
        ..
    } = f;
    let mut summary = inflight.wait()?;
    report.chunks += 1;
    let end = cp.byte_offset;
    let rejected = summary.dead_lettered();
    report.rows_rejected += rejected;
    report.rows_ok += received.saturating_sub(rejected);
    if report.rows_rejected != cp.rows_rejected || report.rows_ok != cp.rows_ok {
        cp.rows_ok = report.rows_ok;
        cp.rows_rejected = report.rows_rejected;
        pipeline
            .writer()
            .call(move |s| s.set_file_checkpoint(&cp))?;
    }
    let rejections = std::mem::take(&mut summary.rejections);
    sink.write(&rejections)?;
    report.summary.absorb(summary);
    progress(end, size);
    Ok(end)
}

/// The reader thread: sends chunks cut at item boundaries that carry an
/// offset (a `.json` document only has one, at its end). The last chunk is
/// marked by `end_offset == u64::MAX` (possibly empty): a full chunk is held
/// back until the next item shows that more follow, so the final rows and
/// the `done` state commit together.
fn read_chunks(
    pipeline: &Pipeline,
    reader: FileReader,
    start: u64,
    chunk_items: usize,
    chunk_bytes: u64,
    tx: &mpsc::SyncSender<Result<Chunk, FolderError>>,
) {
    let mut chunk = Chunk::new();
    let mut held: Option<Chunk> = None;
    let mut chunk_start = start;
    for item in reader {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        if let Some(full) = held.take()
            && tx.send(Ok(full)).is_err()
        {
            return;
        }
        let message = item.message.map_err(|e| (e.code(), e.to_string()));
        chunk.inputs.push(Input {
            message,
            line: Some(item.line),
        });
        if chunk.inputs.len() >= MAP_BATCH
            && let Err(e) = chunk.map(pipeline)
        {
            let _ = tx.send(Err(e.into()));
            return;
        }
        if item.end_offset > 0 {
            chunk.end_offset = item.end_offset;
            if chunk.len() >= chunk_items
                || item.end_offset.saturating_sub(chunk_start) >= chunk_bytes
            {
                chunk_start = item.end_offset;
                if let Err(e) = chunk.map(pipeline) {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
                held = Some(std::mem::replace(&mut chunk, Chunk::new()));
            }
        }
    }
    if let Err(e) = chunk.map(pipeline) {
        let _ = tx.send(Err(e.into()));
        return;
    }
    let last = match held {
        Some(full) if chunk.len() == 0 => full,
        Some(full) => {
            if tx.send(Ok(full)).is_err() {
                return;
            }
            chunk
        }
        None => chunk,
    };
    let _ = tx.send(Ok(Chunk {
        end_offset: u64::MAX,
        ..last
    }));
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned())
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for name-collision suffixes.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().cast_signed());
    let (y, m, d, hh, mm, ss) = crate::mapping::time::civil_from_unix_secs(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// `dir/<stem>.<ext>`, or with a UTC timestamp before `ext` when that name
/// is taken (`data.20261101T120000Z.csv`, then `…Z-2.csv`, …).
fn unique_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let join = |s: &str| {
        if ext.is_empty() {
            dir.join(s)
        } else {
            dir.join(format!("{s}.{ext}"))
        }
    };
    let plain = join(stem);
    if !plain.exists() {
        return plain;
    }
    let stamp = utc_stamp(SystemTime::now());
    let mut n = 1u32;
    loop {
        let candidate = if n == 1 {
            join(&format!("{stem}.{stamp}"))
        } else {
            join(&format!("{stem}.{stamp}-{n}"))
        };
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Where a file named `name` lands in `dir`, keeping its extension.
fn unique_dest(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    match (p.file_stem(), p.extension()) {
        (Some(stem), Some(ext)) => {
            unique_path(dir, &stem.to_string_lossy(), &ext.to_string_lossy())
        }
        _ => unique_path(dir, name, ""),
    }
}

// ----- the watched folder ---------------------------------------------------

/// Options of the watched drop folder.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    /// The watched folder (its `processed/`, `rejected/`, `failed/` live inside).
    pub dir: PathBuf,
    /// Size and mtime must stay unchanged this long before a file is read.
    pub settle: Duration,
    /// Full rescan interval (besides `notify` events).
    pub rescan_interval: Duration,
    /// Delete committed files instead of moving them to `processed/`.
    pub delete_processed: bool,
    /// Items per committed chunk.
    pub chunk_items: usize,
    /// File bytes per committed chunk.
    pub chunk_bytes: u64,
    /// First retry delay after a store or I/O failure (doubles each time).
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl FolderOptions {
    /// Defaults for `dir`: settle 2 s, rescan 30 s, move to `processed/`.
    pub fn new(dir: impl Into<PathBuf>) -> FolderOptions {
        FolderOptions {
            dir: dir.into(),
            settle: DEFAULT_SETTLE,
            rescan_interval: DEFAULT_RESCAN,
            delete_processed: false,
            chunk_items: DEFAULT_CHUNK_ITEMS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }

    /// From the config: `drop_dir` (default `<data_dir>/drop`) and
    /// `delete_processed_files`.
    pub fn from_config(cfg: &Config, data_dir: &Path) -> FolderOptions {
        let mut o = FolderOptions::new(
            cfg.drop_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("drop")),
        );
        o.delete_processed = cfg.delete_processed_files;
        o
    }

    fn process_options(&self, should_stop: Option<StopCheck>) -> ProcessOptions {
        ProcessOptions {
            rejected_dir: self.dir.join(REJECTED_DIR),
            chunk_items: self.chunk_items,
            chunk_bytes: self.chunk_bytes,
            max_chunks: None,
            // A file found in the drop folder is a new drop even when an
            // identical one (same name, size, mtime, content) was read before
            // and moved to processed/ — e.g. a list copied in again with its
            // timestamp kept. Re-reading is idempotent.
            reprocess_done: true,
            should_stop,
        }
    }
}

/// What [`process_drop_file`] did.
#[derive(Debug)]
pub enum DropOutcome {
    /// Fully committed, then moved to `moved_to` (`None`: deleted).
    Processed {
        /// The ingest report.
        report: FileReport,
        /// Where the file now is (`processed/…`), unless deleted.
        moved_to: Option<PathBuf>,
    },
    /// Could not be parsed: moved to `failed/` next to `<name>.error.json`.
    Failed {
        /// Reason code ([`FileError::code`]).
        code: &'static str,
        /// What is wrong (no input values).
        message: String,
        /// Where the file now is.
        moved_to: PathBuf,
    },
    /// Stopped before the end (shutdown); resumes from its checkpoint.
    Interrupted(FileReport),
}

/// Processes one drop-folder file and applies the lifecycle: committed →
/// `processed/` (or deleted), rejected rows → `rejected/<file>.errors.ndjson`,
/// unparseable → `failed/` with `failed/<file>.error.json`.
///
/// # Errors
/// Retryable failures ([`FolderError::is_retryable`]: store, I/O): the file
/// stays in place with whatever checkpoint was committed.
pub fn process_drop_file(
    pipeline: &Pipeline,
    path: &Path,
    opts: &FolderOptions,
    should_stop: Option<StopCheck>,
) -> Result<DropOutcome, FolderError> {
    let popts = opts.process_options(should_stop);
    match process_file(pipeline, path, &popts, &|_, _| {}) {
        Ok(report) if report.status == FileStatus::Interrupted => {
            Ok(DropOutcome::Interrupted(report))
        }
        Ok(report)
            if fs::metadata(path).is_ok_and(|m| m.len() > report.byte_offset.max(report.size)) =>
        {
            // The file grew after it was read to its end (a writer paused
            // longer than the settle time): moving it now would lose the
            // tail. Leave it; once it settles again it is a new file (new
            // fingerprint) and is read whole — re-reading rows is idempotent
            // (same changes coalesce, messageIds dedup).
            tracing::warn!(
                file = %display_name(path),
                read = report.byte_offset,
                "drop folder: file grew while it was being read; it will be read again once complete"
            );
            Ok(DropOutcome::Interrupted(report))
        }
        Ok(report) => {
            let moved_to = if opts.delete_processed {
                fs::remove_file(path).map_err(io_err("delete", path))?;
                None
            } else {
                let dir = opts.dir.join(PROCESSED_DIR);
                fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                let dest = unique_dest(&dir, &display_name(path));
                fs::rename(path, &dest).map_err(io_err("move", path))?;
                Some(dest)
            };
            Ok(DropOutcome::Processed { report, moved_to })
        }
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => fail_file(pipeline, path, opts, &e),
    }
}

fn fail_file(
    pipeline: &Pipeline,
    path: &Path,
    opts: &FolderOptions,
    e: &FolderError,
) -> Result<DropOutcome, FolderError> {
    let dir = opts.dir.join(FAILED_DIR);
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let name = display_name(path);
    let dest = unique_dest(&dir, &name);
    let dest_name = display_name(&dest);
    let code = e.code();
    let message = e.to_string();
    let report = serde_json::json!({
        "file": name,
        "code": code,
        "message": message,
        "failedAt": utc_stamp(SystemTime::now()),
    });
    let report_path = dir.join(format!("{dest_name}.error.json"));
    fs::write(&report_path, format!("{report:#}\n")).map_err(io_err("write", &report_path))?;
    // Record the failure for status pages (best effort: the move matters).
    if let Ok(fp) = fingerprint(path) {
        let cp = FileCheckpoint {
            fingerprint: fp,
            path: path.display().to_string(),
            byte_offset: 0,
            rows_ok: 0,
            rows_rejected: 0,
            state: FileState::Failed,
        };
        if let Err(err) = pipeline.writer().call(move |s| s.set_file_checkpoint(&cp)) {
            tracing::warn!(file = %name, error = %err, "cannot record the failed file");
        }
    }
    fs::rename(path, &dest).map_err(io_err("move", path))?;
    tracing::warn!(file = %name, code, "file cannot be parsed: moved to failed/");
    Ok(DropOutcome::Failed {
        code,
        message,
        moved_to: dest,
    })
}

/// Why a directory entry is or is not a drop-folder candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// Supported extension, not a temporary name.
    Candidate,
    /// Hidden or temporary (`.x`, `*.tmp`, `*.part`, `*.crdownload`): silently skipped.
    Ignored,
    /// Some other extension: skipped, logged once.
    Unsupported,
}

fn classify(path: &Path) -> NameKind {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return NameKind::Unsupported;
    };
    let lower = name.to_ascii_lowercase();
    if lower.starts_with('.')
        || [".tmp", ".part", ".crdownload"]
            .iter()
            .any(|s| lower.ends_with(s))
    {
        return NameKind::Ignored;
    }
    if FileFormat::from_path(path).is_some() {
        NameKind::Candidate
    } else {
        NameKind::Unsupported
    }
}

struct Candidate {
    size: u64,
    mtime: Option<SystemTime>,
    stable_since: Instant,
    next_attempt: Instant,
    failures: u32,
}

struct Loop {
    pipeline: Arc<Pipeline>,
    opts: FolderOptions,
    stop: StopCheck,
    candidates: HashMap<PathBuf, Candidate>,
    warned: HashSet<PathBuf>,
    /// Files recently moved to `processed/`, watched for late writes.
    recent: Vec<Moved>,
}

/// How long a file moved to `processed/` is watched for late writes (a
/// producer that paused longer than the settle time and then went on
/// writing through its open handle).
pub const LATE_WRITE_WATCH: Duration = Duration::from_secs(3600);

/// A file moved to `processed/` and what it looked like when moved.
struct Moved {
    path: PathBuf,
    size: u64,
    mtime: Option<std::time::SystemTime>,
    stable_since: Option<Instant>,
    until: Instant,
}

impl Loop {
    /// Adds `path` as a candidate if it is an eligible regular file in the folder.
    fn consider(&mut self, path: &Path, now: Instant) {
        if path.parent() != Some(self.opts.dir.as_path()) || self.candidates.contains_key(path) {
            return;
        }
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        match classify(path) {
            NameKind::Candidate => {
                self.candidates.insert(
                    path.to_path_buf(),
                    Candidate {
                        size: meta.len(),
                        mtime: meta.modified().ok(),
                        stable_since: now,
                        next_attempt: now,
                        failures: 0,
                    },
                );
            }
            NameKind::Ignored => {}
            NameKind::Unsupported => {
                if self.warned.insert(path.to_path_buf()) {
                    tracing::warn!(
                        file = %display_name(path),
                        "drop folder: unsupported file type ignored (use .ndjson, .jsonl, .json or .csv)"
                    );
                }
            }
        }
    }

    fn scan(&mut self, now: Instant) {
        match fs::read_dir(&self.opts.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    self.consider(&e.path(), now);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.opts.dir.display(), error = %e, "drop folder: cannot list")
            }
        }
    }

    /// Re-stats candidates: drops vanished ones, restarts the settle clock of changed ones.
    fn observe(&mut self, now: Instant) {
        self.candidates.retain(|path, c| {
            let Ok(meta) = fs::metadata(path) else {
                return false;
            };
            let mtime = meta.modified().ok();
            if meta.len() != c.size || mtime != c.mtime {
                c.size = meta.len();
                c.mtime = mtime;
                c.stable_since = now;
            }
            true
        });
    }

    /// The settled candidate due first (oldest mtime, then name).
    fn ready(&self, now: Instant) -> Option<PathBuf> {
        self.candidates
            .iter()
            .filter(|(_, c)| {
                now.duration_since(c.stable_since) >= self.opts.settle && now >= c.next_attempt
            })
            .min_by(|a, b| (a.1.mtime, a.0).cmp(&(b.1.mtime, b.0)))
            .map(|(p, _)| p.clone())
    }

    fn process(&mut self, path: &Path) {
        let name = display_name(path);
        let outcome = process_drop_file(&self.pipeline, path, &self.opts, Some(self.stop.clone()));
        match outcome {
            Ok(DropOutcome::Processed { report, moved_to }) => {
                self.candidates.remove(path);
                if let Some(dest) = &moved_to
                    && let Ok(meta) = fs::metadata(dest)
                {
                    self.recent.push(Moved {
                        path: dest.clone(),
                        size: meta.len(),
                        mtime: meta.modified().ok(),
                        stable_since: None,
                        until: Instant::now() + LATE_WRITE_WATCH,
                    });
                }
                tracing::info!(
                    file = %name,
                    status = report.status.as_str(),
                    rows_ok = report.rows_ok,
                    rows_rejected = report.rows_rejected,
                    dead_letters = ?report.summary.dead_letters,
                    moved_to = moved_to.as_ref().map(|p| display_name(p)),
                    "drop folder: file done"
                );
            }
            Ok(DropOutcome::Failed { .. }) => {
                self.candidates.remove(path);
            }
            Ok(DropOutcome::Interrupted(_)) => {
                // Shutdown: the loop exits; the checkpoint resumes it next time.
            }
            Err(e) => {
                let retry_initial = self.opts.retry_initial;
                let retry_max = self.opts.retry_max;
                if let Some(c) = self.candidates.get_mut(path) {
                    c.failures = c.failures.saturating_add(1);
                    let delay = retry_initial
                        .saturating_mul(1u32 << c.failures.saturating_sub(1).min(16))
                        .min(retry_max);
                    c.next_attempt = Instant::now() + delay;
                    tracing::warn!(
                        file = %name,
                        code = e.code(),
                        error = %e,
                        attempt = c.failures,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "drop folder: file left in place, will retry"
                    );
                }
            }
        }
    }

    /// Re-reads a processed file that changed after it was moved (late
    /// writes through an open handle), once it settles again. Re-reading the
    /// whole file is idempotent (same changes coalesce, messageIds dedup), so
    /// nothing written late is lost.
    fn check_late_writes(&mut self, now: Instant) {
        self.recent.retain(|m| now < m.until && m.path.exists());
        let settle = self.opts.settle;
        let mut due = Vec::new();
        for m in &mut self.recent {
            let Ok(meta) = fs::metadata(&m.path) else {
                continue;
            };
            let mtime = meta.modified().ok();
            if meta.len() != m.size || mtime != m.mtime {
                m.size = meta.len();
                m.mtime = mtime;
                m.stable_since = Some(now);
            } else if let Some(since) = m.stable_since
                && now.duration_since(since) >= settle
            {
                m.stable_since = None;
                due.push(m.path.clone());
            }
        }
        for path in due {
            tracing::warn!(
                file = %display_name(&path),
                "drop folder: a processed file was written to after it was moved; reading it again"
            );
            let popts = self.opts.process_options(Some(self.stop.clone()));
            if let Err(e) = process_file(&self.pipeline, &path, &popts, &|_, _| {}) {
                tracing::warn!(file = %display_name(&path), code = e.code(), error = %e, "drop folder: re-reading a processed file");
            }
        }
    }

    fn run(mut self, events: &mpsc::Receiver<notify::Result<notify::Event>>, watching: bool) {
        let tick =
            (self.opts.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        // Without events, poll the folder more often.
        let rescan = if watching {
            self.opts.rescan_interval
        } else {
            self.opts.rescan_interval.min(Duration::from_secs(5))
        };
        let mut next_scan = Instant::now();
        tracing::info!(dir = %self.opts.dir.display(), watching, "drop folder: watching");
        while !(self.stop)() {
            let now = Instant::now();
            if now >= next_scan {
                self.scan(now);
                next_scan = now + rescan;
            }
            let mut handle = |ev: notify::Result<notify::Event>, this: &mut Self| match ev {
                Ok(ev) => {
                    if ev.need_rescan() {
                        next_scan = Instant::now();
                    }
                    for p in &ev.paths {
                        this.consider(p, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "drop folder: watch error; rescanning");
                    next_scan = Instant::now();
                }
            };
            match events.recv_timeout(tick) {
                Ok(ev) => handle(ev, &mut self),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(tick),
            }
            while let Ok(ev) = events.try_recv() {
                handle(ev, &mut self);
            }
            let now = Instant::now();
            self.observe(now);
            if let Some(path) = self.ready(now) {
                self.process(&path);
            }
            self.check_late_writes(Instant::now());
        }
        tracing::info!(dir = %self.opts.dir.display(), "drop folder: stopped");
    }
}

/// Starts watching `opts.dir` on a dedicated thread (`amc-sync-folder`),
/// which also runs the blocking [`Pipeline`] calls, one file at a time.
///
/// Creates the folder and its `processed/`, `rejected/`, `failed/`
/// sub-folders, scans it at once (files left from before, including ones
/// half-committed per their checkpoint), then reacts to `notify` events and
/// rescans every `opts.rescan_interval` (every 5 s at most if `notify`
/// cannot watch the folder). The thread exits when `shutdown` turns `true` or
/// its sender is dropped, after the chunk being committed (a large file
/// resumes from its checkpoint next time); join the handle to wait for it.
///
/// # Errors
/// [`FolderError::Io`] if a folder cannot be created or the thread cannot start.
pub fn spawn(
    pipeline: Arc<Pipeline>,
    opts: FolderOptions,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<JoinHandle<()>, FolderError> {
    for sub in ["", PROCESSED_DIR, REJECTED_DIR, FAILED_DIR] {
        let d = opts.dir.join(sub);
        fs::create_dir_all(&d).map_err(io_err("create", &d))?;
    }
    // Canonical path, so event paths compare equal to `dir/<name>`.
    let mut opts = opts;
    if let Ok(c) = fs::canonicalize(&opts.dir) {
        opts.dir = c;
    }
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })
    .and_then(|mut w| {
        w.watch(&opts.dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "drop folder: file events unavailable; polling instead");
            None
        }
    };
    let stop: StopCheck = Arc::new(move || shutdown.has_changed().is_err() || *shutdown.borrow());
    let dir = opts.dir.clone();
    let state = Loop {
        pipeline,
        opts,
        stop,
        candidates: HashMap::new(),
        warned: HashSet::new(),
        recent: Vec::new(),
    };
    std::thread::Builder::new()
        .name("amc-sync-folder".into())
        .spawn(move || {
            let watching = watcher.is_some();
            let _watcher = watcher;
            state.run(&rx, watching);
        })
        .map_err(io_err("spawn watcher for", &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        for (n, k) in [
            ("a.csv", NameKind::Candidate),
            ("A.NDJSON", NameKind::Candidate),
            ("b.jsonl", NameKind::Candidate),
            ("c.json", NameKind::Candidate),
            (".hidden.csv", NameKind::Ignored),
            ("a.csv.part", NameKind::Ignored),
            ("a.csv.TMP", NameKind::Ignored),
            ("a.csv.crdownload", NameKind::Ignored),
            ("notes.txt", NameKind::Unsupported),
            ("noext", NameKind::Unsupported),
        ] {
            assert_eq!(classify(Path::new(n)), k, "{n}");
        }
    }

    #[test]
    fn utc_stamp_formats_civil_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_793_534_400); // 2026-11-01T12:00:00Z
        assert_eq!(utc_stamp(t), "20261101T120000Z");
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
    }

    #[test]
    fn unique_names_get_a_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let first = unique_dest(dir.path(), "x.csv");
        assert_eq!(first, dir.path().join("x.csv"));
        fs::write(&first, b"1").unwrap();
        let second = unique_dest(dir.path(), "x.csv");
        let s = display_name(&second);
        assert!(s.starts_with("x.") && s.ends_with("Z.csv"), "{s}");
        fs::write(&second, b"2").unwrap();
        let third = display_name(&unique_dest(dir.path(), "x.csv"));
        assert!(third.ends_with("Z-2.csv"), "{third}");
    }

    #[test]
    fn fingerprint_depends_on_the_name_and_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.ndjson");
        fs::write(&a, vec![b'x'; 200_000]).unwrap();
        let fa = fingerprint(&a).unwrap();
        assert_eq!(fingerprint(&a).unwrap(), fa, "stable");
        // The name decides a CSV's audience and action: a renamed copy is another file.
        let b = dir.path().join("b.ndjson");
        fs::rename(&a, &b).unwrap();
        let fb = fingerprint(&b).unwrap();
        assert_ne!(fb, fa);
        let mut data = vec![b'x'; 200_000];
        data[199_000] = b'y';
        fs::write(&b, data).unwrap();
        assert_ne!(fingerprint(&b).unwrap(), fb);
        assert_eq!(fa.len(), 64);
    }
}
