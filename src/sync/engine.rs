//! The sync engine (DESIGN.md 4.6, issue 4): uploads queued, hashed changes
//! to the Amazon Ads AMC Audiences API on a schedule, and polls upload jobs.
//!
//! * **Schedule**: a round every `interval` (default 15 minutes), when a
//!   batch has filled since the last round ([`UploadTrigger`]), and on demand
//!   ([`SyncHandle::flush`]).
//! * **Per audience**: the Amazon audience is created on first use; pending
//!   records are read in queue order, planned into requests of ≤ `batch_size`
//!   records and ≤ `max_body_bytes`, and sent. Each audience has its own
//!   backoff: one failing audience never blocks another.
//! * **Errors** (AMC Audiences API behaviour, DESIGN.md 4.6): 400 → the batch
//!   is split in halves until the bad records are isolated and dead-lettered
//!   (`amazon_rejected_record`); 401 → the client refreshes the token once and
//!   retries, then the engine stops uploading with auth state `needs_login`
//!   (intake and queue go on, nothing is dropped); `invalid_grant` → the same;
//!   429 → wait `Retry-After` when given, else exponential backoff with
//!   jitter; 5xx, timeouts, resets → exponential backoff with jitter, retried
//!   forever, backlog visible in status.
//! * **At-least-once**: a batch leaves the queue only in the transaction that
//!   records its `jobRequestId` ([`crate::store::Store::complete_upload`]); a
//!   crash between the 202 and that commit re-sends the batch, never loses it.
//! * **Jobs** are polled until terminal; `invalidRecords` (and every record of
//!   a `FAILED` job) become dead letters with Amazon's reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::amazon::{
    AmazonClient, ApiError, AudienceFee, AudienceMetadata, AudienceRequest, Digits, Record,
    TargetResource, encode_records_body, record_encoded_len,
};
use crate::store::{AckOutcome, Audience, PendingRecord, Store, StoreError, Target, WriterHandle};
use crate::sync::planner::{self, Limits};

/// File in the data dir where the engine publishes its state for `status`.
pub const SYNC_STATE_FILE: &str = "sync.json";

/// Engine settings.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Time between scheduled rounds (default 900 s).
    pub interval: Duration,
    /// Records per request (1–10,000; default 10,000).
    pub batch_size: usize,
    /// Encoded body cap per request, bytes (default 4,000,000).
    pub max_body_bytes: usize,
    /// First backoff after a failure (default 1 s); doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest backoff (default 15 min).
    pub backoff_max: Duration,
    /// First job-poll interval (default 2 s); grows to `poll_max`.
    pub poll_initial: Duration,
    /// Longest job-poll interval (default 60 s).
    pub poll_max: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            interval: Duration::from_secs(900),
            batch_size: planner::MAX_RECORDS_PER_REQUEST,
            max_body_bytes: 4_000_000,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(900),
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(60),
        }
    }
}

impl SyncOptions {
    /// From the config's `[schedule]`.
    pub fn from_config(cfg: &crate::config::Config) -> SyncOptions {
        SyncOptions {
            interval: Duration::from_secs(cfg.schedule.upload_interval_secs),
            batch_size: usize::try_from(cfg.schedule.batch_size).unwrap_or(10_000),
            max_body_bytes: usize::try_from(cfg.schedule.max_body_bytes).unwrap_or(4_000_000),
            ..SyncOptions::default()
        }
    }
}

/// Whether uploads can run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthState {
    /// Credentials work.
    #[default]
    Ok,
    /// The refresh token was refused (`invalid_grant`) or API calls stay 401:
    /// log in again; the queue keeps growing meanwhile.
    NeedsLogin,
    /// No Amazon credentials configured (`amc-sync login`).
    NoCredentials,
}

/// One audience's upload state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceSync {
    /// Records accepted by Amazon since the agent started.
    pub uploaded: u64,
    /// Records dead-lettered by uploads since the agent started.
    pub failed: u64,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// No upload before this time (ms since the epoch) because of backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_until_ms: Option<i64>,
    /// The last error (reason code and Amazon's message), cleared on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Last successful upload, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_upload_ms: Option<i64>,
}

/// How many errors [`SyncStatus::recent_errors`] keeps.
pub const RECENT_ERRORS: usize = 20;

/// One upload or job-poll error, for the dashboard's error list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentError {
    /// When it happened, ms since the epoch.
    pub at_ms: i64,
    /// The local audience key, when the error concerned one audience.
    pub audience: Option<String>,
    /// Reason code and Amazon's message (no secrets, no PII).
    pub message: String,
}

/// What the engine publishes (in memory and in `sync.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Credentials state.
    pub auth: AuthState,
    /// Uploads paused by the user ([`SyncHandle::set_paused`]): no upload
    /// rounds; intake, queueing and job polling go on.
    #[serde(default)]
    pub paused: bool,
    /// Last round that uploaded something, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_upload_ms: Option<i64>,
    /// Next scheduled round, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_upload_ms: Option<i64>,
    /// Last error of any audience or of the job poller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Per audience key.
    pub audiences: BTreeMap<String, AudienceSync>,
    /// The last [`RECENT_ERRORS`] errors, oldest first.
    #[serde(default)]
    pub recent_errors: Vec<RecentError>,
}

impl SyncStatus {
    /// Sets `last_error` and appends to `recent_errors` (keeping the last
    /// [`RECENT_ERRORS`]).
    fn note_error(&mut self, audience: Option<&str>, message: String) {
        if self.recent_errors.len() >= RECENT_ERRORS {
            let excess = self.recent_errors.len() + 1 - RECENT_ERRORS;
            self.recent_errors.drain(..excess);
        }
        self.recent_errors.push(RecentError {
            at_ms: now_ms(),
            audience: audience.map(str::to_string),
            message: message.clone(),
        });
        self.last_error = Some(message);
    }

    /// Records Amazon rejecting records (they are dead letters now) in
    /// `recent_errors`, without marking the upload path as failing.
    fn note_rejection(&mut self, audience: &str, records: u64, reason: &str) {
        let last = self.last_error.clone();
        self.note_error(
            Some(audience),
            format!("{records} record(s) rejected by Amazon ({reason}); see the dead letters"),
        );
        self.last_error = last;
    }
}

/// Signals "a batch has filled" from the intake to the engine.
#[derive(Debug)]
pub struct UploadTrigger {
    queued_since_round: AtomicU64,
    threshold: u64,
    notify: Notify,
}

impl UploadTrigger {
    /// A trigger that fires when `threshold` changes were queued since the last round.
    pub fn new(threshold: u64) -> Arc<UploadTrigger> {
        Arc::new(UploadTrigger {
            queued_since_round: AtomicU64::new(0),
            threshold: threshold.max(1),
            notify: Notify::new(),
        })
    }

    /// Called by the intake after a commit with the number of changes queued.
    pub fn queued(&self, n: u64) {
        let total = self.queued_since_round.fetch_add(n, Ordering::Relaxed) + n;
        if n > 0 && total >= self.threshold {
            self.notify.notify_one();
        }
    }

    fn reset(&self) {
        self.queued_since_round.store(0, Ordering::Relaxed);
    }
}

/// Cheap handle to a running engine: flush on demand, pause, read status.
#[derive(Clone, Debug)]
pub struct SyncHandle {
    interval_ms: Arc<AtomicU64>,
    reschedule: Arc<Notify>,
    force: Arc<std::sync::atomic::AtomicBool>,
    reload: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<Notify>,
    poll: Arc<Notify>,
    status: Arc<Mutex<SyncStatus>>,
    rounds: Arc<AtomicU64>,
}

impl SyncHandle {
    /// Asks for an upload round now, including audiences that are backing
    /// off after errors (a manual flush means "try again now").
    pub fn flush(&self) {
        self.force.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Tells the engine the credentials changed (login, logout, region
    /// switch): the next round reloads them through the client loader even
    /// when uploads are not blocked, and switches to `no_credentials` when
    /// there are none any more. Wakes the engine.
    pub fn reload_credentials(&self) {
        self.reload.store(true, Ordering::Release);
        self.force.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Asks for a job-status poll now (without an upload round).
    pub fn poll_jobs_now(&self) {
        self.poll.notify_one();
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rounds completed since start (a flush waits for this to increase).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }

    /// Pauses (`true`) or resumes (`false`) uploads at once. Paused: no
    /// upload round starts (a round in progress finishes its current
    /// audience); intake and the queue go on, and accepted jobs are still
    /// polled. Resuming starts a round now so the backlog leaves at once.
    /// Not persisted here: the agent keeps it in `settings.json`.
    pub fn set_paused(&self, paused: bool) {
        let was = {
            let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut s.paused, paused)
        };
        if was && !paused {
            self.wake.notify_one();
        }
    }

    /// Whether uploads are paused.
    pub fn is_paused(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .paused
    }

    /// The time between scheduled rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Acquire))
    }

    /// Changes the time between scheduled rounds at once: the next round is
    /// due `interval` after the last one (now, if that is past).
    pub fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.interval_ms.store(ms, Ordering::Release);
        self.reschedule.notify_one();
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    /// Records accepted by Amazon (202).
    pub uploaded: u64,
    /// Requests sent.
    pub requests: u64,
    /// Records dead-lettered (isolated 400s, oversized records).
    pub dead_lettered: u64,
    /// Audiences created at Amazon.
    pub audiences_created: u64,
    /// Audiences skipped or stopped because of an error or backoff.
    pub audiences_failed: u64,
}

/// The engine. Create with [`SyncEngine::new`], run with [`SyncEngine::run`].
pub struct SyncEngine {
    client: Mutex<Option<AmazonClient>>,
    /// Re-reads the credentials (after `amc-sync login`), returning a
    /// fingerprint and a client; checked while uploads are blocked.
    loader: Option<ClientLoader>,
    loaded_fingerprint: Mutex<Option<String>>,
    /// A manual flush uploads audiences that are backing off too.
    force: Arc<std::sync::atomic::AtomicBool>,
    /// Set by [`SyncHandle::reload_credentials`].
    reload: Arc<std::sync::atomic::AtomicBool>,
    writer: WriterHandle,
    opts: SyncOptions,
    status: Arc<Mutex<SyncStatus>>,
    wake: Arc<Notify>,
    poll: Arc<Notify>,
    trigger: Option<Arc<UploadTrigger>>,
    state_file: Option<PathBuf>,
    rounds: Arc<AtomicU64>,
    /// Read-only connection for reading pending pages (opened on first use).
    reader: Arc<Mutex<Option<Store>>>,
    /// Time between scheduled rounds, ms ([`SyncHandle::set_interval`]).
    interval_ms: Arc<AtomicU64>,
    /// Wakes the loop to recompute the next round after an interval change.
    reschedule: Arc<Notify>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Exponential backoff with full jitter in [d/2, d]: `initial · 2^(failures-1)`,
/// capped at `max`.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    let mut b = [0u8; 4];
    let r = if getrandom::fill(&mut b).is_ok() {
        u32::from_le_bytes(b)
    } else {
        0
    };
    let half = exp / 2;
    half + Duration::from_nanos(
        u64::try_from(half.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(r))
            / u64::from(u32::MAX).max(1),
    )
}

enum Stop {
    /// Credentials are dead: stop the whole round.
    Auth(AuthState, String),
    /// This audience backs off.
    Audience(String, Wait),
}

/// How long an audience waits after a failure.
#[derive(Clone, Copy)]
enum Wait {
    /// Exponential backoff with jitter.
    Backoff,
    /// The server's `Retry-After`.
    Server(Duration),
    /// Backoff, but at least this long (capped at `backoff_max`).
    AtLeast(Duration),
}

/// Loads the current credentials: `(fingerprint, client)`, or `None` when
/// there are none. The fingerprint changes when the credentials change.
pub type ClientLoader = Arc<dyn Fn() -> Option<(String, AmazonClient)> + Send + Sync>;

/// Longest `Retry-After` honoured (1 hour): a larger value from a
/// misbehaving server must not park an audience for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl SyncEngine {
    /// Lets the engine pick up new credentials without a restart: while
    /// uploads are blocked (`needs_login`, `no_credentials`) each round calls
    /// `loader` and switches to the new client when the fingerprint changed.
    pub fn with_client_loader(
        mut self,
        loader: ClientLoader,
        current_fingerprint: Option<String>,
    ) -> SyncEngine {
        self.loader = Some(loader);
        *self
            .loaded_fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = current_fingerprint;
        self
    }

    fn current_client(&self) -> Option<AmazonClient> {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads the credentials when uploads are blocked on them, or when
    /// [`SyncHandle::reload_credentials`] asked (login, logout, region
    /// switch); switches client when the fingerprint changed.
    fn reload_credentials(&self) {
        let forced = self.reload.swap(false, Ordering::AcqRel);
        let blocked = self.with_status(|s| s.auth != AuthState::Ok);
        let Some(loader) = &self.loader else { return };
        if !blocked && !forced {
            return;
        }
        let loaded = loader();
        let mut current = self
            .loaded_fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some((fp, client)) = loaded else {
            if forced && current.is_some() {
                *current = None;
                *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
                self.with_status(|s| {
                    s.auth = AuthState::NoCredentials;
                    s.last_error = None;
                });
                tracing::info!(
                    "Amazon credentials removed or not valid in this region; uploads wait for a login"
                );
            }
            return;
        };
        if current.as_deref() == Some(fp.as_str()) {
            return;
        }
        *current = Some(fp);
        let region = client.region();
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(client);
        self.with_status(|s| {
            s.auth = AuthState::Ok;
            s.last_error = None;
        });
        tracing::info!(
            region = region.as_str(),
            "Amazon credentials loaded; uploads resume"
        );
    }

    /// A new engine. `client` is `None` when no credentials are configured
    /// (the engine then only publishes `no_credentials`). `state_file` is
    /// where the status is published for `amc-sync status`.
    pub fn new(
        client: Option<AmazonClient>,
        writer: WriterHandle,
        opts: SyncOptions,
        trigger: Option<Arc<UploadTrigger>>,
        state_file: Option<PathBuf>,
    ) -> SyncEngine {
        let auth = if client.is_some() {
            AuthState::Ok
        } else {
            AuthState::NoCredentials
        };
        let interval_ms = u64::try_from(opts.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        SyncEngine {
            client: Mutex::new(client),
            loader: None,
            loaded_fingerprint: Mutex::new(None),
            force: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            reload: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            writer,
            opts,
            status: Arc::new(Mutex::new(SyncStatus {
                auth,
                ..SyncStatus::default()
            })),
            wake: Arc::new(Notify::new()),
            poll: Arc::new(Notify::new()),
            trigger,
            state_file,
            rounds: Arc::new(AtomicU64::new(0)),
            reader: Arc::new(Mutex::new(None)),
            interval_ms: Arc::new(AtomicU64::new(interval_ms)),
            reschedule: Arc::new(Notify::new()),
        }
    }

    /// A handle for flushing and reading status.
    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            interval_ms: self.interval_ms.clone(),
            reschedule: self.reschedule.clone(),
            force: self.force.clone(),
            reload: self.reload.clone(),
            wake: self.wake.clone(),
            poll: self.poll.clone(),
            status: self.status.clone(),
            rounds: self.rounds.clone(),
        }
    }

    /// The current time between scheduled rounds.
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Acquire))
    }

    fn with_status<R>(&self, f: impl FnOnce(&mut SyncStatus) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner))
    }

    async fn store<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let w = self.writer.clone();
        match tokio::task::spawn_blocking(move || w.call(f)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::WriterClosed),
        }
    }

    fn publish(&self) {
        let Some(path) = &self.state_file else { return };
        let status = self.with_status(|s| s.clone());
        let Ok(bytes) = serde_json::to_vec_pretty(&status) else {
            return;
        };
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// Runs rounds and job polls until `shutdown` turns true.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut poll_every = self.opts.poll_initial;
        let start = tokio::time::Instant::now();
        let mut next_round = start;
        let mut next_poll = start;
        let mut last_round = start;
        loop {
            let wake_at = next_round.min(next_poll);
            let trigger = self.trigger.clone();
            let fired = async move {
                match trigger {
                    Some(t) => t.notify.notified().await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.wake.notified() => next_round = tokio::time::Instant::now(),
                () = self.poll.notified() => next_poll = tokio::time::Instant::now(),
                () = fired => next_round = tokio::time::Instant::now(),
                () = self.reschedule.notified() => {
                    next_round = last_round + self.interval();
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= next_round {
                last_round = now;
                let report = self.upload_round().await;
                if report.uploaded > 0 || report.requests > 0 {
                    tracing::info!(
                        uploaded = report.uploaded,
                        requests = report.requests,
                        dead_lettered = report.dead_lettered,
                        audiences_failed = report.audiences_failed,
                        "upload round"
                    );
                    poll_every = self.opts.poll_initial;
                    next_poll = now + poll_every;
                }
                // Retry sooner than the schedule when an audience is backing off.
                let soonest_backoff = self.with_status(|s| {
                    s.audiences
                        .values()
                        .filter_map(|a| a.backoff_until_ms)
                        .min()
                });
                let mut next = now + self.interval();
                if let Some(until) = soonest_backoff {
                    let wait = Duration::from_millis(
                        u64::try_from((until - now_ms()).max(0)).unwrap_or(0),
                    );
                    next = next.min(now + wait);
                }
                next_round = next;
                let next_ms = now_ms() + ms(next.saturating_duration_since(now));
                self.with_status(|s| s.next_upload_ms = Some(next_ms));
                self.rounds.fetch_add(1, Ordering::Release);
            }
            if tokio::time::Instant::now() >= next_poll {
                let open = self.poll_jobs().await;
                if open > 0 {
                    next_poll = tokio::time::Instant::now() + poll_every;
                    poll_every = (poll_every * 2).min(self.opts.poll_max);
                } else {
                    next_poll = tokio::time::Instant::now() + self.interval();
                    poll_every = self.opts.poll_initial;
                }
            }
            self.publish();
        }
        self.publish();
    }

    /// One upload round over every audience with pending records (skipping
    /// those in backoff). Never returns an error: failures are recorded per
    /// audience in the status.
    pub async fn upload_round(&self) -> RoundReport {
        let mut report = RoundReport::default();
        if let Some(t) = &self.trigger {
            t.reset();
        }
        self.reload_credentials();
        let force = self.force.swap(false, Ordering::AcqRel);
        let Some(client) = self.current_client() else {
            self.with_status(|s| s.auth = AuthState::NoCredentials);
            return report;
        };
        if self.with_status(|s| s.auth == AuthState::NeedsLogin) {
            return report;
        }
        // Paused by the user: nothing is uploaded (credentials were still
        // reloaded above; the queue keeps everything).
        if self.with_status(|s| s.paused) {
            return report;
        }
        let audiences = match self.store(|s| s.audiences()).await {
            Ok(a) => a,
            Err(e) => {
                self.with_status(|s| s.note_error(None, format!("database: {e}")));
                return report;
            }
        };
        let now = now_ms();
        for a in audiences {
            // Paused (SyncHandle::set_paused) mid-round: stop after the
            // current audience.
            if self.with_status(|s| s.paused) {
                break;
            }
            let in_backoff = self.with_status(|s| {
                s.audiences
                    .get(&a.key)
                    .and_then(|x| x.backoff_until_ms)
                    .is_some_and(|t| t > now)
            });
            if in_backoff && !force {
                report.audiences_failed += 1;
                continue;
            }
            match self.upload_audience(&client, &a, &mut report).await {
                Ok(()) => self.with_status(|s| {
                    let e = s.audiences.entry(a.key.clone()).or_default();
                    e.failures = 0;
                    e.backoff_until_ms = None;
                    e.last_error = None;
                }),
                Err(Stop::Auth(state, msg)) => {
                    tracing::warn!(audience = %a.key, "uploads paused: {msg}");
                    self.with_status(|s| {
                        s.auth = state;
                        s.note_error(Some(&a.key), msg);
                    });
                    report.audiences_failed += 1;
                    break;
                }
                Err(Stop::Audience(msg, retry_after)) => {
                    report.audiences_failed += 1;
                    let (initial, max) = (self.opts.backoff_initial, self.opts.backoff_max);
                    self.with_status(|s| {
                        let e = s.audiences.entry(a.key.clone()).or_default();
                        e.failures = e.failures.saturating_add(1);
                        let exp = backoff(initial, max, e.failures);
                        let wait = match retry_after {
                            Wait::Backoff => exp,
                            Wait::Server(r) => r.min(MAX_RETRY_AFTER),
                            Wait::AtLeast(d) => exp.max(d.min(max)),
                        };
                        e.backoff_until_ms = Some(now_ms() + ms(wait));
                        e.last_error = Some(msg.clone());
                        s.note_error(Some(&a.key), format!("{}: {msg}", a.key));
                    });
                    tracing::warn!(audience = %a.key, error = %msg, "upload failed; backing off");
                }
            }
        }
        if report.uploaded > 0 {
            self.with_status(|s| s.last_upload_ms = Some(now_ms()));
        }
        report
    }

    fn classify(e: ApiError) -> Stop {
        match e {
            ApiError::NeedsLogin { message } => Stop::Auth(
                AuthState::NeedsLogin,
                format!(
                    "needs_login: the refresh token was refused ({message}); run `amc-sync login`"
                ),
            ),
            ApiError::Unauthorized { message } => Stop::Auth(
                AuthState::NeedsLogin,
                format!("needs_login: Amazon answered 401 after a token refresh ({message})"),
            ),
            ApiError::RateLimited { retry_after } => Stop::Audience(
                "rate_limited: Amazon answered 429".into(),
                retry_after.map_or(Wait::Backoff, Wait::Server),
            ),
            // 403/404/… will not fix themselves quickly: wait at least a minute.
            e @ ApiError::Permanent { .. } => {
                Stop::Audience(e.to_string(), Wait::AtLeast(Duration::from_secs(60)))
            }
            e => Stop::Audience(e.to_string(), Wait::Backoff),
        }
    }

    async fn ensure_amazon_audience(
        &self,
        client: &AmazonClient,
        a: &Audience,
        report: &mut RoundReport,
    ) -> Result<Digits, Stop> {
        let region = client.region().as_str();
        if let Some(id) = a.audience_id_in(region).and_then(Digits::parse) {
            return Ok(id);
        }
        if let Some(old) = &a.audience_id {
            tracing::info!(audience = %a.key, old_audience_id = %old, region,
                "the audience's Amazon id belongs to another region; creating it in this region");
        }
        let target = match &a.target {
            Target::AdvertiserId(id) => match Digits::parse(id) {
                Some(d) => TargetResource::AdvertiserId(d),
                None => {
                    return Err(Stop::Audience(
                        "invalid_advertiser_id".into(),
                        Wait::Backoff,
                    ));
                }
            },
            Target::ConnectionId(c) => TargetResource::ConnectionId(c.clone()),
        };
        let mut name = format!("AMC Sync {}", a.key);
        name = name.chars().take(128).collect();
        let req = AudienceRequest {
            name,
            description: if a.description.is_empty() {
                format!("Synced by AMC Sync from audience {}", a.key)
            } else {
                a.description.clone()
            },
            target_resource: target,
            country_code: a.country_code.clone(),
            metadata: AudienceMetadata {
                external_audience_id: a
                    .external_audience_id
                    .clone()
                    .unwrap_or_else(|| a.key.clone()),
                ttl: a.ttl_secs.map(u64::from),
                audience_fees: match (a.cpm_cents, &a.currency) {
                    (Some(c), Some(cur)) => Some(vec![AudienceFee {
                        currency: cur.clone(),
                        cpm_cents: u64::from(c),
                    }]),
                    _ => None,
                },
            },
        };
        let created = client.create_audience(&req).await.map_err(Self::classify)?;
        let key = a.key.clone();
        let id = created.audience_id.as_str().to_string();
        self.store(move |s| s.set_amazon_audience_id_in(&key, &id, Some(region)))
            .await
            .map_err(|e| Stop::Audience(format!("database: {e}"), Wait::Backoff))?;
        report.audiences_created += 1;
        tracing::info!(audience = %a.key, audience_id = %created.audience_id, "audience created at Amazon");
        Ok(created.audience_id)
    }

    /// Uploads one audience's pending records. Pipelined: the next page is
    /// read while the current one is planned and sent, and each accepted
    /// batch's [`Store::complete_upload`] runs in the background while the
    /// next batch is sent (at most [`MAX_INFLIGHT_COMPLETIONS`] at a time).
    /// Every completion is awaited before this returns, whatever the outcome,
    /// so counts are exact; a failed completion leaves its records pending
    /// (re-sent later: at-least-once).
    async fn upload_audience(
        &self,
        client: &AmazonClient,
        a: &Audience,
        report: &mut RoundReport,
    ) -> Result<(), Stop> {
        let mut inflight = Inflight::new();
        let sent = self
            .upload_audience_pages(client, a, report, &mut inflight)
            .await;
        let completed = self
            .await_completions(&a.key, &mut inflight, 0, report)
            .await;
        sent.and(completed)
    }

    fn fetch_page(
        &self,
        key: &str,
        batch_size: usize,
        after_seq: i64,
    ) -> tokio::task::JoinHandle<Result<Vec<PendingRecord>, StoreError>> {
        let w = self.writer.clone();
        let reader = self.reader.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            // Pages are read on a read-only connection (WAL: readers never
            // block the writer), keeping the writer thread free for the
            // completions and intake; the writer is the fallback.
            let mut r = reader.lock().unwrap_or_else(PoisonError::into_inner);
            if r.is_none() {
                *r = w
                    .call(|s| Ok(s.path().to_path_buf()))
                    .ok()
                    .and_then(|path| Store::open_read_only(path).ok());
            }
            if let Some(store) = r.as_mut() {
                match store.pending_batch(&key, batch_size, after_seq) {
                    Ok(page) => return Ok(page),
                    Err(e) => {
                        tracing::debug!(error = %e, "reading pending records on the read connection");
                        *r = None;
                    }
                }
            }
            drop(r);
            w.call(move |s| s.pending_batch(&key, batch_size, after_seq))
        })
    }

    async fn upload_audience_pages(
        &self,
        client: &AmazonClient,
        a: &Audience,
        report: &mut RoundReport,
        inflight: &mut Inflight,
    ) -> Result<(), Stop> {
        let batch_size = self
            .opts
            .batch_size
            .clamp(1, planner::MAX_RECORDS_PER_REQUEST);
        let limits = Limits {
            max_records: batch_size,
            max_body_bytes: self.opts.max_body_bytes,
            envelope_bytes: 64,
        };
        let db = |e: StoreError| Stop::Audience(format!("database: {e}"), Wait::Backoff);
        let mut audience_id: Option<Digits> = None;
        let mut next_page = self.fetch_page(&a.key, batch_size, 0);
        loop {
            let pending = next_page
                .await
                .unwrap_or(Err(StoreError::WriterClosed))
                .map_err(db)?;
            let Some(last) = pending.last() else { break };
            // Read the next page (rows after this one) while this one is sent.
            next_page = self.fetch_page(&a.key, batch_size, last.seq);
            let id = match &audience_id {
                Some(id) => id.clone(),
                None => {
                    let id = self.ensure_amazon_audience(client, a, report).await?;
                    audience_id = Some(id.clone());
                    id
                }
            };
            let mut seqs = Vec::with_capacity(pending.len());
            let records: Vec<Record> = pending
                .into_iter()
                .map(|p| {
                    seqs.push(p.seq);
                    into_record(p)
                })
                .collect();
            let page = Page {
                records: &records,
                seqs: &seqs,
            };
            let (batches, oversized) =
                planner::plan(records.len(), limits, |i| record_encoded_len(&records[i]));
            if !oversized.is_empty() {
                let rows: Vec<(String, i64)> =
                    oversized.iter().map(|o| page.key(o.index)).collect();
                let key = a.key.clone();
                let cap = self.opts.max_body_bytes;
                let n = self
                    .store(move |s| {
                        s.dead_letter_pending(
                            &key,
                            &rows,
                            "record_too_large",
                            &format!(
                                "the encoded record exceeds the request byte cap ({cap} bytes)"
                            ),
                        )
                    })
                    .await
                    .map_err(db)?;
                report.dead_lettered += n;
                self.count_failed(&a.key, n);
            }
            for b in batches {
                self.send_isolating(client, &a.key, &id, page, b.range, report, inflight)
                    .await?;
            }
        }
        Ok(())
    }

    /// Awaits background completions (oldest first) until at most `keep`
    /// remain, counting the uploaded records. On a failure the rest are
    /// still awaited when `keep` is 0; the first error is returned.
    async fn await_completions(
        &self,
        key: &str,
        inflight: &mut Inflight,
        keep: usize,
        report: &mut RoundReport,
    ) -> Result<(), Stop> {
        let mut first_err = None;
        while inflight.len() > keep {
            let Some((n, handle)) = inflight.pop_front() else {
                break;
            };
            match handle.await.unwrap_or(Err(StoreError::WriterClosed)) {
                Ok(_) => {
                    report.uploaded += n;
                    let now = now_ms();
                    self.with_status(|s| {
                        let e = s.audiences.entry(key.to_string()).or_default();
                        e.uploaded += n;
                        e.last_upload_ms = Some(now);
                    });
                }
                Err(e) => {
                    first_err
                        .get_or_insert(Stop::Audience(format!("database: {e}"), Wait::Backoff));
                    if keep > 0 {
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn count_failed(&self, key: &str, n: u64) {
        if n > 0 {
            self.with_status(|s| s.audiences.entry(key.to_string()).or_default().failed += n);
        }
    }

    /// Sends `range`; on 400 splits it in halves until single bad records are
    /// isolated and dead-lettered (never split on 429/5xx).
    #[allow(clippy::too_many_arguments)]
    async fn send_isolating(
        &self,
        client: &AmazonClient,
        key: &str,
        audience_id: &Digits,
        page: Page<'_>,
        range: std::ops::Range<usize>,
        report: &mut RoundReport,
        inflight: &mut Inflight,
    ) -> Result<(), Stop> {
        let mut stack = vec![range];
        while let Some(r) = stack.pop() {
            let body = encode_records_body(audience_id, &page.records[r.clone()]);
            report.requests += 1;
            match client.upload_records_body(body).await {
                Ok(job) => {
                    // Accepted: record it in the background (one transaction:
                    // pending → membership + the job) while the next batch
                    // goes out; at most MAX_INFLIGHT_COMPLETIONS wait.
                    let sent: Vec<(String, i64)> = r.clone().map(|i| page.key(i)).collect();
                    let n = sent.len() as u64;
                    let k = key.to_string();
                    let w = self.writer.clone();
                    let handle = tokio::task::spawn_blocking(move || {
                        w.call(move |s| s.complete_upload(&k, &sent, &job))
                    });
                    inflight.push_back((n, handle));
                    self.await_completions(key, inflight, MAX_INFLIGHT_COMPLETIONS, report)
                        .await?;
                }
                Err(ApiError::InvalidRequest { message }) if r.len() > 1 => {
                    tracing::info!(audience = %key, records = r.len(), "400 from Amazon; splitting the batch to isolate bad records");
                    let mid = r.start + r.len() / 2;
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                    let _ = message;
                }
                Err(ApiError::InvalidRequest { message }) => {
                    let row = vec![page.key(r.start)];
                    let k = key.to_string();
                    let n = self
                        .store(move |s| {
                            s.dead_letter_pending(&k, &row, "amazon_rejected_record", &message)
                        })
                        .await
                        .map_err(|e| Stop::Audience(format!("database: {e}"), Wait::Backoff))?;
                    report.dead_lettered += n;
                    self.count_failed(key, n);
                    if n > 0 {
                        self.with_status(|s| s.note_rejection(key, n, "amazon_rejected_record"));
                    }
                }
                Err(e) => return Err(Self::classify(e)),
            }
        }
        Ok(())
    }

    /// Polls every open job once; finished ones are recorded (invalid records
    /// dead-lettered). Returns how many stay open.
    pub async fn poll_jobs(&self) -> usize {
        let Some(client) = self.current_client() else {
            return 0;
        };
        let jobs = match self.store(|s| s.open_jobs()).await {
            Ok(j) => j,
            Err(_) => return 0,
        };
        let mut open = 0usize;
        for job in jobs {
            match client.job_status(&job.job_request_id).await {
                Ok(st) if st.job_state.is_terminal() => {
                    let invalid: Vec<(String, String)> = st
                        .invalid_records
                        .iter()
                        .map(|r| (r.external_id.clone(), r.error.clone()))
                        .collect();
                    let id = job.job_request_id.clone();
                    let state = st.job_state.as_str().to_string();
                    match self
                        .store(move |s| s.finish_job(&id, &state, &invalid))
                        .await
                    {
                        Ok(n) => {
                            self.count_failed(&job.audience_key, n);
                            if n > 0 {
                                let reason = if st.job_state.as_str() == "FAILED" {
                                    "amazon_job_failed"
                                } else {
                                    "amazon_invalid_record"
                                };
                                self.with_status(|s| {
                                    s.note_rejection(&job.audience_key, n, reason);
                                });
                            }
                            tracing::info!(
                                audience = %job.audience_key,
                                job = %job.job_request_id,
                                state = st.job_state.as_str(),
                                invalid = n,
                                "upload job finished"
                            );
                        }
                        Err(e) => {
                            open += 1;
                            tracing::warn!(error = %e, "recording a finished job");
                        }
                    }
                }
                Ok(st) => {
                    open += 1;
                    let id = job.job_request_id.clone();
                    let state = st.job_state.as_str().to_string();
                    let _ = self.store(move |s| s.job_polled(&id, &state)).await;
                }
                Err(e) => {
                    open += 1;
                    if let Stop::Auth(state, msg) = Self::classify(e.clone()) {
                        self.with_status(|s| {
                            s.auth = state;
                            s.note_error(Some(&job.audience_key), msg);
                        });
                        break;
                    }
                    tracing::warn!(job = %job.job_request_id, error = %e, "polling an upload job");
                }
            }
        }
        open
    }
}

/// Background `complete_upload`s: (records in the batch, the call).
type Inflight =
    std::collections::VecDeque<(u64, tokio::task::JoinHandle<Result<AckOutcome, StoreError>>)>;

/// Accepted batches whose `complete_upload` may still be running while the
/// next batch is sent.
const MAX_INFLIGHT_COMPLETIONS: usize = 2;

/// One page of pending records as wire records, with their queue `seq`s.
#[derive(Clone, Copy)]
struct Page<'a> {
    records: &'a [Record],
    seqs: &'a [i64],
}

impl Page<'_> {
    /// `(externalUserId, seq)` of record `i`, as the store acknowledges it.
    fn key(&self, i: usize) -> (String, i64) {
        (self.records[i].external_user_id.clone(), self.seqs[i])
    }
}

/// The wire record of a queued row (moved, not copied).
fn into_record(p: PendingRecord) -> Record {
    Record {
        external_user_id: p.external_user_id,
        country_code: Some(p.country_code).filter(|c| c != "UNKNOWN"),
        action: p.action,
        hashed_pii: p.hashed_pii,
        user_consent: p.user_consent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let i = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        for f in 1..=12u32 {
            let d = backoff(i, m, f);
            let exp = i.saturating_mul(1 << (f - 1)).min(m);
            assert!(d >= exp / 2 && d <= exp, "{f}: {d:?} vs {exp:?}");
        }
    }

    #[test]
    fn recent_errors_keep_the_last_twenty_oldest_first() {
        let mut s = SyncStatus::default();
        for i in 0..25 {
            s.note_error(Some("vip"), format!("e{i}"));
        }
        assert_eq!(s.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(s.recent_errors[0].message, "e5");
        assert_eq!(s.recent_errors[19].message, "e24");
        assert_eq!(s.last_error.as_deref(), Some("e24"));
        assert_eq!(s.recent_errors[0].audience.as_deref(), Some("vip"));
    }

    #[test]
    fn old_sync_json_without_the_new_fields_still_parses() {
        let s: SyncStatus = serde_json::from_str(r#"{"auth":"ok","audiences":{}}"#).unwrap();
        assert!(!s.paused);
        assert!(s.recent_errors.is_empty());
    }

    #[test]
    fn trigger_fires_at_the_threshold() {
        let t = UploadTrigger::new(10);
        t.queued(4);
        t.queued(5);
        assert_eq!(t.queued_since_round.load(Ordering::Relaxed), 9);
        t.queued(1);
        t.reset();
        assert_eq!(t.queued_since_round.load(Ordering::Relaxed), 0);
    }
}
