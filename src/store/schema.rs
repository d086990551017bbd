//! Versioned schema migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. [`MIGRATIONS`]
//! is append-only: never edit a shipped entry, add a new one. All pending
//! migrations are applied in one `IMMEDIATE` transaction, so a crash leaves
//! the database either fully at the old version or fully at the new one.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Ordered migrations; entry `i` moves the schema from version `i` to `i + 1`.
///
/// Conventions: times are milliseconds since the Unix epoch (`*_at`,
/// `event_time_ms`); Amazon ids (`audience_id`, `advertiser_id`) are TEXT
/// digits because they exceed 2^53; `hashed_pii` columns hold a JSON array of
/// `HashedPii` objects (64-hex digests only); `action` is `CREATE`/`DELETE`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('last_seq', 0);

    CREATE TABLE audiences (
        id                   INTEGER PRIMARY KEY,
        key                  TEXT NOT NULL UNIQUE,
        audience_id          TEXT CHECK (audience_id IS NULL
                                 OR (length(audience_id) BETWEEN 1 AND 40
                                     AND audience_id NOT GLOB '*[^0-9]*')),
        country_code         TEXT NOT NULL,
        description          TEXT NOT NULL DEFAULT '',
        advertiser_id        TEXT,
        connection_id        TEXT,
        external_audience_id TEXT,
        ttl_secs             INTEGER,
        cpm_cents            INTEGER,
        currency             TEXT,
        created_at           INTEGER NOT NULL
    );

    -- One row per (audience, external_user_id) awaiting upload. `seq` is the
    -- FIFO position and the row's version: every modification assigns a new,
    -- never reused seq (allocated from meta.last_seq).
    CREATE TABLE pending (
        seq              INTEGER PRIMARY KEY,
        audience         INTEGER NOT NULL REFERENCES audiences(id),
        external_user_id TEXT NOT NULL,
        action           TEXT NOT NULL CHECK (action IN ('CREATE', 'DELETE')),
        event_time_ms    INTEGER NOT NULL,
        country_code     TEXT NOT NULL,
        hashed_pii       TEXT NOT NULL,
        user_consent     TEXT,
        updated_at       INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX pending_user ON pending (audience, external_user_id);
    CREATE INDEX pending_fifo ON pending (audience, seq);

    -- Last state Amazon acknowledged per (audience, external_user_id).
    CREATE TABLE membership (
        audience         INTEGER NOT NULL REFERENCES audiences(id),
        external_user_id TEXT NOT NULL,
        action           TEXT NOT NULL CHECK (action IN ('CREATE', 'DELETE')),
        event_time_ms    INTEGER NOT NULL,
        country_code     TEXT NOT NULL,
        hashed_pii       TEXT NOT NULL,
        user_consent     TEXT,
        uploaded_at      INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX membership_user ON membership (audience, external_user_id);

    CREATE TABLE dead_letters (
        id         INTEGER PRIMARY KEY,
        source     TEXT NOT NULL,
        reason     TEXT NOT NULL,
        message    TEXT NOT NULL,
        payload    TEXT,
        created_at INTEGER NOT NULL,
        retried    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX dead_letters_reason ON dead_letters (reason, id);

    -- SHA-256 of the messageId (never the id itself), for the dedup window.
    CREATE TABLE seen_messages (
        message_hash BLOB PRIMARY KEY,
        seen_at      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX seen_messages_at ON seen_messages (seen_at);

    CREATE TABLE files (
        fingerprint   TEXT PRIMARY KEY,
        path          TEXT NOT NULL,
        byte_offset   INTEGER NOT NULL,
        rows_ok       INTEGER NOT NULL,
        rows_rejected INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('reading', 'done', 'failed')),
        updated_at    INTEGER NOT NULL
    );
    "#,
    // 2: upload jobs (AMC Audiences API `jobRequestId`s awaiting a terminal state).
    r#"
    CREATE TABLE jobs (
        id             INTEGER PRIMARY KEY,
        audience       INTEGER NOT NULL REFERENCES audiences(id),
        job_request_id TEXT NOT NULL UNIQUE,
        records        INTEGER NOT NULL,
        state          TEXT NOT NULL,
        invalid        INTEGER NOT NULL DEFAULT 0,
        polls          INTEGER NOT NULL DEFAULT 0,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    );
    CREATE INDEX jobs_open ON jobs (state, id);
    -- The users a job carried, so a FAILED job's records are dead-lettered by name.
    CREATE TABLE job_records (
        job              INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        external_user_id TEXT NOT NULL
    );
    CREATE INDEX job_records_job ON job_records (job);
    "#,
    // 3: the region an `audience_id` belongs to (an Amazon audience exists in
    // one region only; NULL: recorded before regions were tracked, or set by
    // hand with `audiences set-id` — valid in whichever region is active).
    r#"
    ALTER TABLE audiences ADD COLUMN audience_region TEXT
        CHECK (audience_region IS NULL OR audience_region IN ('NA', 'EU', 'FE'));
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every migration above the database's `user_version`, in one
/// transaction. Returns the version after migrating.
///
/// # Errors
/// [`StoreError::SchemaTooNew`] when the file was written by a newer build;
/// [`StoreError::Sqlite`] / [`StoreError::DiskFull`] when a statement fails
/// (nothing is applied then).
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    let start = usize::try_from(current).unwrap_or(0);
    for sql in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(sql)?;
    }
    if current != latest {
        tx.pragma_update(None, "user_version", latest)?;
    }
    tx.commit()?;
    Ok(latest)
}
