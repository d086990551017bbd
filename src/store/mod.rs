//! Durable SQLite store (DESIGN.md 4.5): the queue between hashing and upload.
//!
//! One database file, WAL journal, `synchronous=FULL`, foreign keys on,
//! versioned migrations (`PRAGMA user_version`), and an exclusive
//! `<db>.lock` so only one agent uses a data dir ([`StoreError::Locked`]).
//!
//! **Only hashed data is stored.** Every `hashedPII` value entering the store
//! is checked to be 64 lowercase hex characters and every `externalUserId`
//! against Amazon's `^[0-9a-zA-Z_-]{1,128}$`; a change failing either is
//! dead-lettered without the offending value. Segment `messageId`s are kept
//! only as SHA-256 digests. Free-text dead-letter messages are the caller's
//! responsibility and must never quote input values.
//!
//! Main operations:
//! * [`Store::enqueue_batch`]: one transaction for a batch of
//!   [`IncomingItem`]s (changes, dead letters, file checkpoints), with
//!   per-user coalescing (see [`ItemOutcome`]) and `messageId` dedup.
//! * [`Writer`] / [`WriterHandle`]: a dedicated thread owning the [`Store`]
//!   that group-commits concurrent submissions (one fsync per group).
//! * [`Store::pending_batch`] / [`Store::ack_uploaded`]: FIFO dequeue per
//!   audience and acknowledgement that keeps rows changed since dequeue.
//!
//! Units: times are milliseconds since the Unix epoch (`*_ms`), sizes are
//! records unless stated, file offsets are bytes.

mod jobs;
mod lock;
mod queue;
mod retry;
mod schema;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{Action, HashedPii, MemberChange, Source, UserConsent};

pub use jobs::{Job, UploadCounts};
pub use retry::RetryOutcome;
pub use writer::{PendingCommit, Writer, WriterHandle, WriterStats};

/// Maximum number of distinct `hashedPII` objects kept per record (Amazon's
/// limit per record).
pub const MAX_HASHED_PII: usize = 100;

/// How long SQLite waits for a lock held by another connection, in ms.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// SQLite page cache of the store's connection, in KiB (negative `cache_size`
/// = KiB). Bounded because the idle agent targets ≤ 30 MB RSS.
pub const CACHE_KIB: i64 = 16_384;

/// Largest `ttl` Amazon accepts for an audience, in seconds.
pub const MAX_TTL_SECS: u32 = 34_300_800;

/// Reason codes the store itself assigns to items it dead-letters.
pub mod reason {
    /// The change's `audience_key` names no local audience.
    pub const UNKNOWN_AUDIENCE: &str = "unknown_audience";
    /// The `externalUserId` does not match `^[0-9a-zA-Z_-]{1,128}$`.
    pub const INVALID_EXTERNAL_USER_ID: &str = "invalid_external_user_id";
    /// A `hashedPII` value is not 64 lowercase hex characters (raw PII must
    /// never be stored, so the change is refused and the value dropped).
    pub const INVALID_HASHED_PII: &str = "invalid_hashed_pii";
    /// The record's country code is not ISO 3166-1 alpha-2 shaped or `UNKNOWN`.
    pub const INVALID_COUNTRY_CODE: &str = "invalid_country_code";
}

/// Errors of the store. `Clone` so the [`Writer`] can hand the same failure
/// to every submitter of a group.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds `<db>.lock`. `pid` is the holder's process id
    /// when it could be read (not on Windows, where the file is unreadable
    /// while locked).
    #[error("the data directory is in use by another agent{} (lock file {})", fmt_pid(*.pid), .path.display())]
    Locked {
        /// The holder's process id, if readable.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
    /// The disk (or the file system quota) is full: nothing was committed.
    /// Callers acknowledging clients answer "retry later" (HTTP 503).
    #[error("disk full: the store could not commit")]
    DiskFull,
    /// A file-system error outside SQLite (lock file, data dir).
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// Any other SQLite failure (corruption, I/O error, constraint).
    #[error("SQLite error: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// The database was written by a newer build (schema `found` > `supported`).
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored JSON column could not be decoded (corruption or a bug).
    #[error("corrupt stored JSON: {0}")]
    CorruptJson(Arc<serde_json::Error>),
    /// An argument failed validation (the value itself is never included).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which argument.
        field: &'static str,
        /// Why, in words.
        reason: &'static str,
    },
    /// No local audience has this key.
    #[error("unknown audience {key:?}")]
    UnknownAudience {
        /// The local audience key.
        key: String,
    },
    /// [`Store::create_audience`] with a key that already exists.
    #[error("audience {key:?} already exists")]
    AudienceExists {
        /// The local audience key.
        key: String,
    },
    /// The [`Writer`] thread has stopped (shut down, or it panicked).
    #[error("the store writer has stopped")]
    WriterClosed,
}

fn fmt_pid(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::DiskFull
        } else {
            StoreError::Sqlite(Arc::new(e))
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::CorruptJson(Arc::new(e))
    }
}

/// Where an Amazon audience is created: the DSP advertiser or the AMC connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `targetResource.advertiserId`: ASCII digits (may exceed 2^53).
    AdvertiserId(String),
    /// `targetResource.connectionId`.
    ConnectionId(String),
}

/// What [`Store::create_audience`] needs (config `audiences` entry, DESIGN 4.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudience {
    /// Local key (`^[0-9A-Za-z_.:-]{1,128}$`), e.g. Segment's computation key.
    pub key: String,
    /// ISO 3166-1 alpha-2 country of the audience.
    pub country_code: String,
    /// Free description (≤ 1000 characters).
    pub description: String,
    /// Advertiser or connection the audience belongs to.
    pub target: Target,
    /// `metadata.externalAudienceId`, if configured.
    pub external_audience_id: Option<String>,
    /// `metadata.ttl` in seconds (0..=34,300,800).
    pub ttl_secs: Option<u32>,
    /// `audienceFees[0].cpmCents`.
    pub cpm_cents: Option<u32>,
    /// `audienceFees[0].currency` (3 uppercase letters, e.g. `USD`).
    pub currency: Option<String>,
}

/// A local audience as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audience {
    /// Local row id (foreign key of pending/membership rows).
    pub id: i64,
    /// Local key.
    pub key: String,
    /// Amazon `audienceId` (ASCII digits), once created on Amazon.
    pub audience_id: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    pub country_code: String,
    /// Free description.
    pub description: String,
    /// Advertiser or connection.
    pub target: Target,
    /// `metadata.externalAudienceId`.
    pub external_audience_id: Option<String>,
    /// `metadata.ttl`, seconds.
    pub ttl_secs: Option<u32>,
    /// CPM fee, cents.
    pub cpm_cents: Option<u32>,
    /// Fee currency.
    pub currency: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// The region (`NA`, `EU`, `FE`) `audience_id` was created in; `None`
    /// when unknown (set by hand, or created before regions were tracked).
    pub audience_region: Option<String>,
}

impl Audience {
    /// The Amazon `audienceId` to use in `region`: the recorded one unless it
    /// is known to belong to another region (then the audience must be
    /// created there first).
    pub fn audience_id_in(&self, region: &str) -> Option<&str> {
        match &self.audience_region {
            Some(r) if r != region => None,
            _ => self.audience_id.as_deref(),
        }
    }
}

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterSource {
    /// The HTTP endpoint.
    Http,
    /// The drop folder or `amc-sync ingest`.
    File,
    /// Amazon rejected the record (job `invalidRecords`, or an isolated 400).
    Upload,
}

impl DeadLetterSource {
    /// Stored spelling: `http`, `file` or `upload`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterSource::Http => "http",
            DeadLetterSource::File => "file",
            DeadLetterSource::Upload => "upload",
        }
    }

    fn parse(s: &str) -> DeadLetterSource {
        match s {
            "http" => DeadLetterSource::Http,
            "file" => DeadLetterSource::File,
            _ => DeadLetterSource::Upload,
        }
    }
}

impl From<Source> for DeadLetterSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Http => DeadLetterSource::Http,
            Source::File => DeadLetterSource::File,
        }
    }
}

/// The hashed part of a rejected item, kept for inspection and retry.
///
/// The store sanitizes it before writing: an `external_user_id` or
/// `audience_key` of the wrong shape, a country code of the wrong shape and
/// any `hashed_pii` object holding a non-digest value are dropped, so raw
/// input cannot leak in through this path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPayload {
    /// Local audience key, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_key: Option<String>,
    /// A valid `externalUserId`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_user_id: Option<String>,
    /// The intended action, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Event time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<i64>,
    /// Country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Hashed identifiers (digests only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashed_pii: Vec<HashedPii>,
    /// Consent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_consent: Option<UserConsent>,
    /// 1-based line (or row) number in the source file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl DeadLetterPayload {
    /// The payload of a whole (hashed) change.
    pub fn from_change(c: &MemberChange) -> DeadLetterPayload {
        DeadLetterPayload {
            audience_key: Some(c.audience_key.clone()),
            external_user_id: Some(c.external_user_id.clone()),
            action: Some(c.action),
            event_time_ms: Some(c.event_time_ms),
            country_code: Some(c.country_code.clone()),
            hashed_pii: vec![c.hashed_pii.clone()],
            user_consent: c.user_consent.clone(),
            line: None,
        }
    }

    /// Drops every value that is not of a hashed/identifier shape.
    fn sanitized(mut self) -> DeadLetterPayload {
        if self
            .audience_key
            .as_deref()
            .is_some_and(|k| !valid_audience_key(k))
        {
            self.audience_key = None;
        }
        if self
            .external_user_id
            .as_deref()
            .is_some_and(|k| !valid_external_user_id(k))
        {
            self.external_user_id = None;
        }
        if self
            .country_code
            .as_deref()
            .is_some_and(|c| !valid_country_code(c))
        {
            self.country_code = None;
        }
        self.hashed_pii.retain(valid_hashed_pii);
        self
    }
}

/// A dead letter to record (an item that cannot be queued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// Where it came from.
    pub source: DeadLetterSource,
    /// Stable reason code (`consent_required`, `unknown_audience`, …).
    pub reason: String,
    /// Human explanation. Must not contain input values.
    pub message: String,
    /// Hashed payload, sanitized on write.
    pub payload: Option<DeadLetterPayload>,
    /// Segment `messageId` of the rejected message, for dedup of retries.
    pub message_id: Option<String>,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Row id (increasing).
    pub id: i64,
    /// Where it came from.
    pub source: DeadLetterSource,
    /// Reason code.
    pub reason: String,
    /// Explanation.
    pub message: String,
    /// Hashed payload.
    pub payload: Option<DeadLetterPayload>,
    /// When it was recorded, ms since the epoch.
    pub created_at_ms: i64,
    /// Whether a retry was requested for it.
    pub retried: bool,
}

/// Filter for [`Store::dead_letters`]. `Default` matches every dead letter;
/// results come by increasing id (decreasing with `newest_first`), at most
/// `limit` (default 100) at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this reason code.
    pub reason: Option<String>,
    /// Only this source.
    pub source: Option<DeadLetterSource>,
    /// Only retried (`Some(true)`) or not yet retried (`Some(false)`) ones.
    pub retried: Option<bool>,
    /// Only ids strictly greater than this (keyset paging).
    pub after_id: i64,
    /// At most this many rows.
    pub limit: u32,
    /// Only dead letters whose payload names this local audience key.
    pub audience: Option<String>,
    /// The newest `limit` rows, by decreasing id (default: oldest first).
    pub newest_first: bool,
}

impl Default for DeadLetterFilter {
    fn default() -> Self {
        DeadLetterFilter {
            reason: None,
            source: None,
            retried: None,
            after_id: 0,
            limit: 100,
            audience: None,
            newest_first: false,
        }
    }
}

/// State of a drop-folder file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Partly committed; resume at `byte_offset`.
    Reading,
    /// Fully committed.
    Done,
    /// Could not be parsed.
    Failed,
}

impl FileState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Reading => "reading",
            FileState::Done => "done",
            FileState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> FileState {
        match s {
            "done" => FileState::Done,
            "failed" => FileState::Failed,
            _ => FileState::Reading,
        }
    }
}

/// Progress of one drop-folder file. Commit it in the same
/// [`Store::enqueue_batch`] as the rows it covers
/// ([`IncomingItem::FileCheckpoint`]) so a crash never loses or duplicates rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// Content fingerprint chosen by the folder reader (primary key).
    pub fingerprint: String,
    /// Path where the file was read.
    pub path: String,
    /// Bytes of the file fully committed.
    pub byte_offset: u64,
    /// Rows queued so far.
    pub rows_ok: u64,
    /// Rows rejected (dead-lettered) so far.
    pub rows_rejected: u64,
    /// Progress state.
    pub state: FileState,
}

/// One thing to commit with [`Store::enqueue_batch`] / [`WriterHandle::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingItem {
    /// A hashed membership change to queue.
    Change {
        /// The change.
        change: MemberChange,
        /// Segment `messageId`: a messageId already seen in an earlier
        /// submission is accepted and dropped ([`ItemOutcome::Duplicate`]).
        /// Items of the same submission may share one (a message can map to
        /// several changes).
        message_id: Option<String>,
        /// Where it came from (used if the store dead-letters it).
        source: Source,
    },
    /// An item that could not be turned into a change.
    DeadLetter(NewDeadLetter),
    /// Drop-folder progress, committed atomically with the batch.
    FileCheckpoint(FileCheckpoint),
}

impl IncomingItem {
    /// A change with no messageId.
    pub fn change(change: MemberChange, source: Source) -> IncomingItem {
        IncomingItem::Change {
            change,
            message_id: None,
            source,
        }
    }
}

/// What happened to one [`IncomingItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    /// No pending row existed: a new one was queued.
    Inserted,
    /// Same action as the pending row: distinct `hashedPII` objects were
    /// merged (capped at [`MAX_HASHED_PII`]); newest event time and consent kept.
    Merged,
    /// Different action and a later (or equal) event time: the change replaced
    /// the pending row, identifiers included.
    Replaced,
    /// Different action but older than the pending row (or than the last
    /// uploaded state): ignored.
    Stale,
    /// Its messageId was seen before: accepted and dropped.
    Duplicate,
    /// Recorded as a dead letter (given as one, or refused by the store;
    /// see [`reason`]).
    DeadLettered,
    /// A file checkpoint was written.
    Checkpointed,
}

/// Result of one committed batch: per-item outcomes (same order as the
/// input) and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// One outcome per input item, in input order.
    pub outcomes: Vec<ItemOutcome>,
    /// Count of [`ItemOutcome::Inserted`].
    pub inserted: u64,
    /// Count of [`ItemOutcome::Merged`].
    pub merged: u64,
    /// Count of [`ItemOutcome::Replaced`].
    pub replaced: u64,
    /// Count of [`ItemOutcome::Stale`].
    pub stale: u64,
    /// Count of [`ItemOutcome::Duplicate`].
    pub duplicates: u64,
    /// Count of [`ItemOutcome::DeadLettered`].
    pub dead_lettered: u64,
    /// Count of [`ItemOutcome::Checkpointed`].
    pub checkpoints: u64,
    /// `hashedPII` objects dropped because a record reached [`MAX_HASHED_PII`].
    pub pii_dropped: u64,
}

impl BatchOutcome {
    fn push(&mut self, o: ItemOutcome) {
        match o {
            ItemOutcome::Inserted => self.inserted += 1,
            ItemOutcome::Merged => self.merged += 1,
            ItemOutcome::Replaced => self.replaced += 1,
            ItemOutcome::Stale => self.stale += 1,
            ItemOutcome::Duplicate => self.duplicates += 1,
            ItemOutcome::DeadLettered => self.dead_lettered += 1,
            ItemOutcome::Checkpointed => self.checkpoints += 1,
        }
        self.outcomes.push(o);
    }
}

/// A queued record, as returned by [`Store::pending_batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRecord {
    /// FIFO position and version; pass it back to [`Store::ack_uploaded`].
    pub seq: i64,
    /// Amazon `externalUserId`.
    pub external_user_id: String,
    /// `CREATE` or `DELETE`.
    pub action: Action,
    /// Newest event time merged into the row, ms since the epoch.
    pub event_time_ms: i64,
    /// Record country.
    pub country_code: String,
    /// 0..=100 distinct hashed identifier objects.
    pub hashed_pii: Vec<HashedPii>,
    /// Consent of the newest event.
    pub user_consent: Option<UserConsent>,
    /// Last modification, ms since the epoch.
    pub updated_at_ms: i64,
}

/// Result of [`Store::ack_uploaded`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    /// Rows deleted from `pending` and written to `membership`.
    pub acked: u64,
    /// Rows kept because they changed (new seq) or vanished since dequeue.
    pub kept: u64,
}

/// The durable store. Owns one SQLite connection and the data-dir lock; not
/// `Sync` — share it through a [`Writer`].
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The single-agent lock; `None` for a read-only handle.
    lock: Option<lock::LockFile>,
    /// Local audience key → row id (audiences are only created through this
    /// `Store`, which holds the lock, so the cache cannot go stale).
    audience_ids: HashMap<String, i64>,
    /// Last allocated `pending.seq` (mirrors `meta.last_seq`).
    last_seq: i64,
    /// Write transactions committed by [`Store::enqueue_batch`] and the writer.
    commits: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("lock", &self.lock.as_ref().map(lock::LockFile::path))
            .field("last_seq", &self.last_seq)
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, takes `<path>.lock`,
    /// sets WAL / `synchronous=FULL` / `busy_timeout` / foreign keys and
    /// applies pending migrations in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds the lock;
    /// [`StoreError::Io`] for lock-file errors; [`StoreError::SchemaTooNew`];
    /// [`StoreError::Sqlite`] / [`StoreError::DiskFull`] from SQLite.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = lock::LockFile::acquire(&path)?;
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                field: "path",
                reason: "the file system does not support SQLite WAL mode",
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)?;
        let last_seq: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })?;
        Ok(Store {
            conn,
            path,
            lock: Some(lock),
            audience_ids: HashMap::new(),
            last_seq,
            commits: 0,
        })
    }

    /// Whether another process holds the agent lock of the database at
    /// `path` (`Some(pid)`, the pid when readable), probed without taking it.
    pub fn lock_holder(path: impl AsRef<Path>) -> Option<Option<u32>> {
        lock::holder(path.as_ref())
    }

    /// Opens an existing database read-only, without taking the agent lock,
    /// so `amc-sync status` and friends can read while an agent runs (WAL
    /// readers never block the writer). Every write method fails with
    /// [`StoreError::Sqlite`] (read-only database).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the file does not exist or is not a store;
    /// [`StoreError::SchemaTooNew`] for a database of a newer build.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = i64::try_from(schema::MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: known,
            });
        }
        let last_seq: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        Ok(Store {
            conn,
            path,
            lock: None,
            audience_ids: HashMap::new(),
            last_seq,
            commits: 0,
        })
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database (`PRAGMA user_version`).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Number of write transactions committed by [`Store::enqueue_batch`]
    /// (and by the [`Writer`]'s group commits) since open.
    pub fn commit_count(&self) -> u64 {
        self.commits
    }

    // ----- audiences -------------------------------------------------------

    /// Creates a local audience (no Amazon `audienceId` yet).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when a field fails validation (key shape,
    /// country, digits of `advertiserId`, ttl range, currency shape,
    /// description length); [`StoreError::AudienceExists`]; SQLite errors.
    pub fn create_audience(&mut self, a: &NewAudience) -> Result<Audience, StoreError> {
        if !valid_audience_key(&a.key) {
            return Err(invalid("key", "must match ^[0-9A-Za-z_.:-]{1,128}$"));
        }
        if !valid_country_code(&a.country_code) {
            return Err(invalid("country_code", "must be ISO 3166-1 alpha-2"));
        }
        if a.description.chars().count() > 1000 {
            return Err(invalid("description", "longer than 1000 characters"));
        }
        let (advertiser_id, connection_id) = match &a.target {
            Target::AdvertiserId(d) => {
                if !is_digits(d) {
                    return Err(invalid("advertiser_id", "must be ASCII digits"));
                }
                (Some(d.as_str()), None)
            }
            Target::ConnectionId(c) => {
                if c.is_empty() {
                    return Err(invalid("connection_id", "must not be empty"));
                }
                (None, Some(c.as_str()))
            }
        };
        if a.ttl_secs.is_some_and(|t| t > MAX_TTL_SECS) {
            return Err(invalid("ttl_secs", "must be at most 34,300,800 seconds"));
        }
        if let Some(c) = &a.currency
            && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(invalid("currency", "must be 3 uppercase letters"));
        }
        if self.audience_row_id(&a.key)?.is_some() {
            return Err(StoreError::AudienceExists { key: a.key.clone() });
        }
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO audiences (key, country_code, description, advertiser_id, connection_id,
                 external_audience_id, ttl_secs, cpm_cents, currency, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                a.key,
                a.country_code,
                a.description,
                advertiser_id,
                connection_id,
                a.external_audience_id,
                a.ttl_secs,
                a.cpm_cents,
                a.currency,
                now
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        self.audience_ids.insert(a.key.clone(), id);
        Ok(Audience {
            id,
            key: a.key.clone(),
            audience_id: None,
            country_code: a.country_code.clone(),
            description: a.description.clone(),
            target: a.target.clone(),
            external_audience_id: a.external_audience_id.clone(),
            ttl_secs: a.ttl_secs,
            cpm_cents: a.cpm_cents,
            currency: a.currency.clone(),
            created_at_ms: now,
            audience_region: None,
        })
    }

    /// The local audience with this key, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audience(&self, key: &str) -> Result<Option<Audience>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{AUDIENCE_SELECT} WHERE key = ?1"))?;
        Ok(st.query_row([key], audience_from_row).optional()?)
    }

    /// All local audiences, ordered by key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audiences(&self) -> Result<Vec<Audience>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{AUDIENCE_SELECT} ORDER BY key"))?;
        let rows = st.query_map([], audience_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records the Amazon `audienceId` (returned by `POST
    /// /amc/audiences/metadata`) for a local audience.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] unless `audience_id` is 1–40 ASCII digits;
    /// [`StoreError::UnknownAudience`]; SQLite errors.
    pub fn set_amazon_audience_id(
        &mut self,
        key: &str,
        audience_id: &str,
    ) -> Result<(), StoreError> {
        self.set_amazon_audience_id_in(key, audience_id, None)
    }

    /// Records the Amazon `audienceId` and the region (`NA`, `EU`, `FE`) it
    /// was created in (`None`: valid in any region).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] unless `audience_id` is 1–40 ASCII digits and
    /// the region one of the three; [`StoreError::UnknownAudience`]; SQLite errors.
    pub fn set_amazon_audience_id_in(
        &mut self,
        key: &str,
        audience_id: &str,
        region: Option<&str>,
    ) -> Result<(), StoreError> {
        if !is_digits(audience_id) || audience_id.len() > 40 {
            return Err(invalid("audience_id", "must be 1-40 ASCII digits"));
        }
        if region.is_some_and(|r| !matches!(r, "NA" | "EU" | "FE")) {
            return Err(invalid("audience_region", "must be NA, EU or FE"));
        }
        let n = self.conn.execute(
            "UPDATE audiences SET audience_id = ?2, audience_region = ?3 WHERE key = ?1",
            params![key, audience_id, region],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownAudience {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// Forgets an audience's Amazon `audienceId`, so the next upload creates
    /// the audience at Amazon again (after a 404 "Audience not found": a
    /// wrong region/account, or an `external_audience_id` from elsewhere).
    ///
    /// # Errors
    /// [`StoreError::UnknownAudience`], SQLite errors.
    pub fn clear_amazon_audience_id(&mut self, key: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE audiences SET audience_id = NULL, audience_region = NULL WHERE key = ?1",
            params![key],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownAudience {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    fn audience_row_id(&mut self, key: &str) -> Result<Option<i64>, StoreError> {
        audience_row_id(&self.conn, &mut self.audience_ids, key)
    }

    // ----- counts, dead letters, files, dedup window -----------------------

    /// Pending records per local audience key (audiences with none are
    /// included with 0). Scans the `pending_fifo` index: O(queue), meant for
    /// status pages, not hot paths.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pending_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.key, (SELECT count(*) FROM pending p WHERE p.audience = a.id)
             FROM audiences a",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, n) = row?;
            out.insert(k, nonneg(n));
        }
        Ok(out)
    }

    /// When the change that has waited longest was queued or last updated
    /// (ms since the epoch): per audience the head of its queue (`seq` order,
    /// the `pending_fifo` index), the oldest of those. `None` when nothing is
    /// pending. O(audiences).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT min((SELECT p.updated_at FROM pending p WHERE p.audience = a.id
                         ORDER BY p.seq LIMIT 1))
             FROM audiences a",
        )?;
        Ok(st.query_row([], |r| r.get::<_, Option<i64>>(0))?)
    }

    /// Dead letters matching `filter`, by increasing id (decreasing with
    /// [`DeadLetterFilter::newest_first`]).
    ///
    /// # Errors
    /// SQLite errors; [`StoreError::CorruptJson`] for an undecodable payload.
    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let mut st = self.conn.prepare_cached(if filter.newest_first {
            "SELECT id, source, reason, message, payload, created_at, retried
             FROM dead_letters
             WHERE id > ?1
               AND (?2 IS NULL OR reason = ?2)
               AND (?3 IS NULL OR source = ?3)
               AND (?4 IS NULL OR retried = ?4)
               AND (?6 IS NULL OR json_extract(payload, '$.audienceKey') = ?6)
             ORDER BY id DESC LIMIT ?5"
        } else {
            "SELECT id, source, reason, message, payload, created_at, retried
             FROM dead_letters
             WHERE id > ?1
               AND (?2 IS NULL OR reason = ?2)
               AND (?3 IS NULL OR source = ?3)
               AND (?4 IS NULL OR retried = ?4)
               AND (?6 IS NULL OR json_extract(payload, '$.audienceKey') = ?6)
             ORDER BY id LIMIT ?5"
        })?;
        let rows = st.query_map(
            params![
                filter.after_id,
                filter.reason,
                filter.source.map(DeadLetterSource::as_str),
                filter.retried,
                filter.limit,
                filter.audience
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, source, reason, message, payload, created_at_ms, retried) = row?;
            let payload = match payload {
                Some(p) => Some(serde_json::from_str(&p)?),
                None => None,
            };
            out.push(DeadLetter {
                id,
                source: DeadLetterSource::parse(&source),
                reason,
                message,
                payload,
                created_at_ms,
                retried,
            });
        }
        Ok(out)
    }

    /// Number of dead letters per reason code, not counting those already
    /// re-queued by `dead-letters retry`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn dead_letter_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT reason, count(*) FROM dead_letters WHERE retried = 0 GROUP BY reason",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, n) = row?;
            out.insert(k, nonneg(n));
        }
        Ok(out)
    }

    /// Flags dead letters as retried (the caller re-submits their payloads).
    /// Returns how many rows changed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_dead_letters_retried(&mut self, ids: &[i64]) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        {
            let mut st = tx.prepare_cached(
                "UPDATE dead_letters SET retried = 1 WHERE id = ?1 AND retried = 0",
            )?;
            for id in ids {
                n += st.execute([id])? as u64;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// The checkpoint of the file with this fingerprint, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn file_checkpoint(&self, fingerprint: &str) -> Result<Option<FileCheckpoint>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT fingerprint, path, byte_offset, rows_ok, rows_rejected, state
             FROM files WHERE fingerprint = ?1",
        )?;
        Ok(st
            .query_row([fingerprint], |r| {
                Ok(FileCheckpoint {
                    fingerprint: r.get(0)?,
                    path: r.get(1)?,
                    byte_offset: nonneg(r.get(2)?),
                    rows_ok: nonneg(r.get(3)?),
                    rows_rejected: nonneg(r.get(4)?),
                    state: FileState::parse(&r.get::<_, String>(5)?),
                })
            })
            .optional()?)
    }

    /// Writes a file checkpoint on its own (prefer committing it with its
    /// rows via [`IncomingItem::FileCheckpoint`]).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for offsets/counts above `i64::MAX`; SQLite errors.
    pub fn set_file_checkpoint(&mut self, cp: &FileCheckpoint) -> Result<(), StoreError> {
        queue::write_checkpoint(&self.conn, cp, now_ms())
    }

    /// Forgets messageIds seen before `older_than_ms` (end of the dedup
    /// window). Returns how many were removed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn prune_seen_messages(&mut self, older_than_ms: i64) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM seen_messages WHERE seen_at < ?1",
            [older_than_ms],
        )?;
        Ok(n as u64)
    }
}

const AUDIENCE_SELECT: &str =
    "SELECT id, key, audience_id, country_code, description, advertiser_id,
    connection_id, external_audience_id, ttl_secs, cpm_cents, currency, created_at,
    audience_region FROM audiences";

fn audience_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Audience> {
    let advertiser: Option<String> = r.get(5)?;
    let connection: Option<String> = r.get(6)?;
    let target = match (advertiser, connection) {
        (Some(a), _) => Target::AdvertiserId(a),
        (None, c) => Target::ConnectionId(c.unwrap_or_default()),
    };
    Ok(Audience {
        id: r.get(0)?,
        key: r.get(1)?,
        audience_id: r.get(2)?,
        country_code: r.get(3)?,
        description: r.get(4)?,
        target,
        external_audience_id: r.get(7)?,
        ttl_secs: r.get(8)?,
        cpm_cents: r.get(9)?,
        currency: r.get(10)?,
        created_at_ms: r.get(11)?,
        audience_region: r.get(12)?,
    })
}

fn audience_row_id(
    conn: &Connection,
    cache: &mut HashMap<String, i64>,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    if let Some(id) = cache.get(key) {
        return Ok(Some(*id));
    }
    let mut st = conn.prepare_cached("SELECT id FROM audiences WHERE key = ?1")?;
    let id: Option<i64> = st.query_row([key], |r| r.get(0)).optional()?;
    if let Some(id) = id {
        cache.insert(key.to_string(), id);
    }
    Ok(id)
}

fn invalid(field: &'static str, reason: &'static str) -> StoreError {
    StoreError::Invalid { field, reason }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn nonneg(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `^[0-9a-zA-Z_-]{1,128}$` (Amazon's `externalUserId`).
pub(crate) fn valid_external_user_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^[0-9A-Za-z_.:-]{1,128}$`.
pub(crate) fn valid_audience_key(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Two uppercase ASCII letters, or `UNKNOWN`.
pub(crate) fn valid_country_code(s: &str) -> bool {
    s == "UNKNOWN" || (s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()))
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every present field is a 64-char lowercase hex digest.
pub(crate) fn valid_hashed_pii(p: &HashedPii) -> bool {
    [
        &p.firstname,
        &p.lastname,
        &p.address,
        &p.postal,
        &p.phone,
        &p.city,
        &p.state,
        &p.email,
    ]
    .into_iter()
    .all(|f| f.as_deref().is_none_or(is_digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemberChange;

    fn store(dir: &tempfile::TempDir) -> Store {
        let mut s = Store::open(dir.path().join("t.db")).expect("open");
        s.create_audience(&NewAudience {
            key: "a".into(),
            country_code: "US".into(),
            description: String::new(),
            target: Target::AdvertiserId("1".into()),
            external_audience_id: None,
            ttl_secs: None,
            cpm_cents: None,
            currency: None,
        })
        .expect("audience");
        s
    }

    fn items(prefix: &str, n: usize) -> Vec<IncomingItem> {
        (0..n)
            .map(|i| {
                IncomingItem::change(
                    MemberChange {
                        audience_key: "a".into(),
                        external_user_id: format!("{prefix}{i}"),
                        action: Action::Create,
                        event_time_ms: 1,
                        country_code: "US".into(),
                        hashed_pii: HashedPii {
                            email: Some(format!("{i:064x}")),
                            ..HashedPii::default()
                        },
                        user_consent: None,
                    },
                    Source::File,
                )
            })
            .collect()
    }

    /// Caps the file size at its current page count, simulating a full disk.
    fn fill_disk(s: &Store, full: bool) {
        let pages: i64 = s
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        let max = if full { pages } else { 1_000_000_000 };
        let _: i64 = s
            .conn
            .query_row(&format!("PRAGMA max_page_count = {max}"), [], |r| r.get(0))
            .expect("max_page_count");
    }

    #[test]
    fn disk_full_fails_the_whole_batch_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store(&dir);
        fill_disk(&s, true);
        let r = s.enqueue_batch(&items("u", 2_000));
        assert!(matches!(r, Err(StoreError::DiskFull)), "{r:?}");
        fill_disk(&s, false);
        assert!(s.pending_batch("a", 10, 0).expect("read").is_empty());
        let out = s
            .enqueue_batch(&items("u", 2_000))
            .expect("after space frees");
        assert_eq!(out.inserted, 2_000);
        let b = s.pending_batch("a", 5_000, 0).expect("read");
        assert_eq!(b.len(), 2_000);
        let seqs: Vec<i64> = b.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn writer_reports_disk_full_to_submitters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let w = Writer::spawn(s).expect("spawn");
        let h = w.handle();
        h.call(|s| {
            fill_disk(s, true);
            Ok(())
        })
        .expect("call");
        assert!(matches!(
            h.submit(items("u", 2_000)),
            Err(StoreError::DiskFull)
        ));
        h.call(|s| {
            fill_disk(s, false);
            Ok(())
        })
        .expect("call");
        assert_eq!(h.submit(items("u", 2_000)).expect("submit").inserted, 2_000);
        let s = w.shutdown().expect("shutdown");
        assert_eq!(s.pending_counts().expect("counts").get("a"), Some(&2_000));
    }

    #[test]
    fn panicking_call_does_not_kill_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Writer::spawn(store(&dir)).expect("spawn");
        let h = w.handle();
        let r: Result<(), StoreError> = h.call(|_| panic!("boom"));
        assert!(matches!(r, Err(StoreError::WriterClosed)));
        assert_eq!(h.submit(items("u", 3)).expect("still serving").inserted, 3);
    }

    #[test]
    fn sanitized_payload_drops_non_hashed_values() {
        let p = DeadLetterPayload {
            audience_key: Some("a b@c".into()),
            external_user_id: Some("x@y.z".into()),
            country_code: Some("germany".into()),
            hashed_pii: vec![
                HashedPii {
                    email: Some("x@y.z".into()),
                    ..HashedPii::default()
                },
                HashedPii {
                    phone: Some("f".repeat(64)),
                    ..HashedPii::default()
                },
            ],
            ..DeadLetterPayload::default()
        }
        .sanitized();
        assert_eq!(p.audience_key, None);
        assert_eq!(p.external_user_id, None);
        assert_eq!(p.country_code, None);
        assert_eq!(p.hashed_pii.len(), 1);
    }
}
