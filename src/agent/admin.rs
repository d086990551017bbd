//! The local admin API (DESIGN.md 4.8; the contract is `docs/admin-api.md`),
//! on the agent's listener next to the Segment intake:
//!
//! | route | token | what |
//! |---|---|---|
//! | `GET /healthz` | no | `{"status":"ok"}` |
//! | `GET /metrics` | no | Prometheus text format 0.0.4 (`render_metrics`) |
//! | `GET /api/status` | yes | the status object (`status_json`) |
//! | `POST /api/flush[?wait=true&timeout=secs]` | yes | upload now (409 `conflict` while paused) |
//! | `POST /api/pause`, `POST /api/resume` | yes | `{"paused":bool}`, persisted in `settings.json` |
//! | `GET/POST /api/audiences` | yes | list / create (rules of [`crate::agent::audiences`]) |
//! | `GET /api/dead-letters?reason=&audience=&limit=` | yes | newest first, hashed data only |
//! | `POST /api/dead-letters/retry` | yes | re-queue retryable dead letters |
//! | `GET/PUT /api/settings` | yes | drop folder, schedule, profile ([`crate::agent::settings`]) |
//! | `POST /api/settings/write-key/rotate` | yes | new Segment write key, the old one is refused at once |
//! | `GET /`, `GET /<asset>` | no | the embedded `ui/` dashboard, with CSP and `nosniff` |
//!
//! Connection, login, logout and region routes live in `agent::login`, which
//! reuses the checks here (`authorized`, `check_loopback`, `json_body`,
//! `error`, `field_error`, `Refused`).
//!
//! Protection: a per-install admin token (`Authorization: Bearer <token>`,
//! from the data dir's `agent.json`, readable only by the agent's user), a
//! `Host` check (loopback names only: DNS-rebinding defence) and an `Origin`
//! check (loopback origins and the Tauri app only: CSRF defence), so neither
//! another local user nor a web page can drive the agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::agent::audiences::{self, AudienceInput};
use crate::agent::pipeline::Pipeline;
use crate::agent::settings::{
    MAX_SCHEDULE_INTERVAL_SECS, MIN_SCHEDULE_INTERVAL_SECS, Settings, SettingsError,
};
use crate::agent::state::{AgentState, DB_FILE, new_write_key};
use crate::config::Region;
use crate::ingest::http::WriteKey;
use crate::pii::Profile;
use crate::store::{DeadLetterFilter, Store, StoreError, WriterHandle};
use crate::sync::engine::{AuthState, SyncHandle, SyncStatus};

/// Facts about the running agent that the admin API reports.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// The Amazon region shown in status (the configured one; the login
    /// module reports the connection's).
    pub region: Region,
    /// The listener's URL (`http://127.0.0.1:8787`).
    pub listen: String,
    /// The watched drop folder, `None` when not watching.
    pub drop_dir: Option<PathBuf>,
    /// Records per upload request (config `schedule.batch_size`).
    pub batch_size: u32,
    /// The normalization profile in force.
    pub profile: Profile,
}

/// Shared state of the admin routes. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    /// The admin bearer token (64 hex characters).
    pub token: Arc<str>,
    /// The sync engine.
    pub sync: SyncHandle,
    /// The store's writer (audience creation, dead-letter retry; the
    /// fallback for reads).
    pub writer: WriterHandle,
    /// The intake's write key (rotated by `POST /api/settings/write-key/rotate`).
    pub write_key: WriteKey,
    /// The intake pipeline (ingest counters for `/metrics`).
    pub pipeline: Arc<Pipeline>,
    /// The data dir (`agent.json`, `settings.json`, the database).
    pub data_dir: PathBuf,
    /// What status and settings report.
    pub info: Arc<AgentInfo>,
    /// Serializes read-modify-write of `settings.json` and `agent.json`.
    files: Arc<tokio::sync::Mutex<()>>,
    /// Read-only connection for status queries (opened on first use), so
    /// counting the queue never holds up the writer.
    reader: Arc<Mutex<Option<Store>>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl AdminState {
    /// The admin state of a running agent.
    pub fn new(
        token: &str,
        sync: SyncHandle,
        writer: WriterHandle,
        write_key: WriteKey,
        pipeline: Arc<Pipeline>,
        data_dir: PathBuf,
        info: AgentInfo,
    ) -> AdminState {
        AdminState {
            token: Arc::from(token),
            sync,
            writer,
            write_key,
            pipeline,
            data_dir,
            info: Arc::new(info),
            files: Arc::new(tokio::sync::Mutex::new(())),
            reader: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs a read on the read-only connection (falling back to the writer)
    /// on a blocking thread.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Store) -> Result<R, StoreError> + Send + Sync + 'static,
    {
        let reader = self.reader.clone();
        let writer = self.writer.clone();
        let path = self.data_dir.join(DB_FILE);
        let f = Arc::new(f);
        tokio::task::spawn_blocking(move || {
            let mut r = reader.lock().unwrap_or_else(PoisonError::into_inner);
            if r.is_none() {
                *r = Store::open_read_only(&path).ok();
            }
            if let Some(store) = r.as_ref() {
                match f(store) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        tracing::debug!(error = %e, "admin read on the read connection");
                        *r = None;
                    }
                }
            }
            drop(r);
            let f = f.clone();
            writer.call(move |s| f(s))
        })
        .await
        .unwrap_or(Err(StoreError::WriterClosed))
    }
}

/// Longest `POST /api/flush?wait=true` (seconds).
pub const MAX_FLUSH_WAIT: Duration = Duration::from_secs(600);

/// Largest `limit` of `GET /api/dead-letters`.
pub const MAX_DEAD_LETTER_PAGE: u32 = 1000;

/// Hours in `uploadsByHour`.
pub const UPLOAD_HOURS: i64 = 24;

/// `Content-Security-Policy` of the dashboard's files.
pub const UI_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                          script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The admin routes (merge into the agent's router). Includes a catch-all
/// `GET /{*path}` for the dashboard's files: other routers merged beside it
/// must not define a fallback or a root catch-all.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/flush", post(flush))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/api/audiences", get(list_audiences).post(create_audience))
        .route("/api/dead-letters", get(list_dead_letters))
        .route("/api/dead-letters/retry", post(retry_dead_letters))
        .route("/api/settings", get(get_settings).put(put_settings))
        .route("/api/settings/write-key/rotate", post(rotate_write_key))
        .route("/", get(ui_index))
        .route("/{*path}", get(ui_asset))
        .with_state(state)
}

// ----- errors and checks (shared with the login router) ---------------------

/// A JSON error `{"code", "message"}` with `status` (docs/admin-api.md "Errors").
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// A validation error `{"code", "message", "field"}`.
pub(crate) fn field_error(status: StatusCode, code: &str, field: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message, "field": field})),
    )
        .into_response()
}

/// A refused request: HTTP status, stable code (`forbidden_host`,
/// `forbidden_origin`, `unauthorized`) and message. Turn it into the JSON
/// error with [`IntoResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// 401 or 403.
    pub status: StatusCode,
    /// The stable error code.
    pub code: &'static str,
    /// Human text (no secrets).
    pub message: &'static str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// A request error with an optional `field` (validation), small enough to
/// return in `Result`s; becomes `{"code","message","field"?}` with
/// [`IntoResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The stable error code (`invalid_json`, `invalid_field`, …).
    pub code: &'static str,
    /// Human text (never a secret or a submitted value).
    pub message: &'static str,
    /// The offending field, for validation errors.
    pub field: Option<String>,
}

impl ApiError {
    /// 400 `invalid_field` naming `field`.
    pub fn invalid_field(field: &str, message: &'static str) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message,
            field: Some(field.to_string()),
        }
    }

    fn plain(status: StatusCode, code: &'static str, message: &'static str) -> ApiError {
        ApiError {
            status,
            code,
            message,
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self.field {
            Some(f) => field_error(self.status, self.code, f, self.message),
            None => error(self.status, self.code, self.message),
        }
    }
}

/// The host of an `authority` (`host[:port]`, `[v6][:port]`), when the port,
/// if any, is 1–5 digits; `None` for anything else.
fn authority_host(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        let port = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(':')?)
        };
        (&authority[..=end], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(host)
}

/// True for `localhost` and loopback IP literals (`127.0.0.1`, `[::1]`).
fn is_loopback_name(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map_or_else(
            || host.parse::<std::net::Ipv4Addr>().map(std::net::IpAddr::V4),
            |v6| v6.parse::<std::net::Ipv6Addr>().map(std::net::IpAddr::V6),
        );
    ip.is_ok_and(|ip| ip.is_loopback())
}

/// Whether the `Host` header names a loopback host (`127.0.0.1`,
/// `localhost`, `[::1]`, any port). A missing or malformed header is not.
pub(crate) fn host_is_loopback(headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(authority_host)
        .is_some_and(is_loopback_name)
}

/// Whether a browser `Origin` may call the admin API: exactly
/// `http://<loopback host>[:port]` (as [`host_is_loopback`]), or the Tauri
/// app's `tauri://localhost` / `http://tauri.localhost`. Parsed, not
/// prefix-matched: `http://127.0.0.1.evil.com` is refused.
pub(crate) fn origin_allowed(origin: &str) -> bool {
    if origin == "tauri://localhost" || origin == "http://tauri.localhost" {
        return true;
    }
    origin
        .strip_prefix("http://")
        .and_then(authority_host)
        .is_some_and(is_loopback_name)
}

/// The `Host` and `Origin` checks, for routes without a token (`/healthz`,
/// `/metrics`, the UI, the login callback).
///
/// # Errors
/// 403 `forbidden_host` or `forbidden_origin`.
pub(crate) fn check_loopback(headers: &HeaderMap) -> Result<(), Refused> {
    if !host_is_loopback(headers) {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            code: "forbidden_host",
            message: "the admin API answers loopback hosts only",
        });
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // Browsers send Origin on cross-site requests; the CLI never does.
        if !origin.to_str().is_ok_and(origin_allowed) {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                code: "forbidden_origin",
                message: "cross-origin requests are refused",
            });
        }
    }
    Ok(())
}

/// Every check of a token-protected `/api/*` route: [`check_loopback`], then
/// `Authorization: Bearer <token>` compared in constant time. An empty
/// `token` refuses everyone.
///
/// # Errors
/// 403 `forbidden_host` / `forbidden_origin`, 401 `unauthorized`.
pub(crate) fn authorized(token: &str, headers: &HeaderMap) -> Result<(), Refused> {
    check_loopback(headers)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = token.as_bytes();
    let same = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same && !expected.is_empty() {
        Ok(())
    } else {
        Err(Refused {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong admin token",
        })
    }
}

/// Parses a JSON request body (an empty body counts as `{}`). A body must
/// come with `Content-Type: application/json`.
///
/// # Errors
/// 415 `invalid_json` for another content type, 400
/// `invalid_json` for malformed JSON, 400 `invalid_field` (with `field` when
/// known) when the JSON does not fit `T` (unknown or missing field, wrong
/// type). Messages never repeat values.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_json",
                "send the body with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(body).map_err(|_| {
            ApiError::plain(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is not valid JSON",
            )
        })?
    };
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        // serde names fields in backticks for unknown/missing fields; type
        // errors may quote the value, so they get a generic message.
        let field = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        match field {
            Some(f) if text.starts_with("unknown") => ApiError::invalid_field(&f, "unknown field"),
            Some(f) => ApiError::invalid_field(&f, "required field missing"),
            None => ApiError::plain(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "a field has the wrong type or value",
            ),
        }
    })
}

fn store_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the database could not be read or updated",
    )
}

fn settings_unavailable(e: &SettingsError) -> Response {
    tracing::warn!(error = %e, "settings.json");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "settings.json could not be read or written",
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ab12…`: the first 4 characters of a write key.
fn key_hint(key: &str) -> String {
    format!("{}…", key.chars().take(4).collect::<String>())
}

macro_rules! guard {
    ($token:expr, $headers:expr) => {
        if let Err(r) = authorized(&$token, &$headers) {
            return r.into_response();
        }
    };
}

// ----- health, metrics ------------------------------------------------------

async fn healthz(headers: HeaderMap) -> Response {
    if let Err(r) = check_loopback(&headers) {
        return r.into_response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

/// What the store says, for status and metrics.
#[derive(Debug, Default)]
struct Snapshot {
    audiences: Vec<crate::store::Audience>,
    pending: std::collections::BTreeMap<String, u64>,
    dead: std::collections::BTreeMap<String, u64>,
    uploads: std::collections::BTreeMap<String, crate::store::UploadCounts>,
    oldest_pending_ms: Option<i64>,
    by_hour: std::collections::BTreeMap<i64, u64>,
}

async fn snapshot(state: &AdminState, since_ms: i64) -> Result<Snapshot, StoreError> {
    state
        .read(move |s| {
            Ok(Snapshot {
                audiences: s.audiences()?,
                pending: s.pending_counts()?,
                dead: s.dead_letter_counts()?,
                uploads: s.upload_counts()?,
                oldest_pending_ms: s.oldest_pending_ms()?,
                by_hour: s.uploads_by_hour(since_ms)?,
            })
        })
        .await
}

/// Prometheus text (format 0.0.4) for the store snapshot, the engine's
/// status and the intake counters. Built with a fresh
/// `metrics-exporter-prometheus` recorder per scrape, so every value is
/// read from its source of truth and nothing stale lingers: gauges
/// `amc_sync_pending_records{audience}`, `amc_sync_dead_letters{reason}`,
/// `amc_sync_auth_ok`, `amc_sync_paused`, `amc_sync_backlog_age_seconds`;
/// counters (since the agent started) `amc_sync_uploaded_records_total{audience}`,
/// `amc_sync_failed_records_total{audience}`, `amc_sync_ingested_events_total{source}`.
fn render_metrics(
    snap: &Snapshot,
    sync: &SyncStatus,
    received: &[(&'static str, u64)],
    now: i64,
) -> String {
    use metrics::{counter, describe_counter, describe_gauge, gauge};
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_gauge!(
            "amc_sync_pending_records",
            "Changes queued for upload, per audience."
        );
        describe_counter!(
            "amc_sync_uploaded_records_total",
            "Records accepted by Amazon since the agent started, per audience."
        );
        describe_counter!(
            "amc_sync_failed_records_total",
            "Records dead-lettered by uploads since the agent started, per audience."
        );
        describe_gauge!(
            "amc_sync_dead_letters",
            "Dead letters not yet retried, per reason code."
        );
        describe_gauge!(
            "amc_sync_auth_ok",
            "1 when the Amazon credentials work, else 0."
        );
        describe_gauge!(
            "amc_sync_paused",
            "1 when uploads are paused by the user, else 0."
        );
        describe_gauge!(
            "amc_sync_backlog_age_seconds",
            "Age of the oldest queued change, seconds (0 when nothing is queued)."
        );
        describe_counter!(
            "amc_sync_ingested_events_total",
            "Inputs received since the agent started, per source (http, file)."
        );
        for a in &snap.audiences {
            let pending = snap.pending.get(&a.key).copied().unwrap_or(0);
            gauge!("amc_sync_pending_records", "audience" => a.key.clone()).set(pending as f64);
            let s = sync.audiences.get(&a.key);
            counter!("amc_sync_uploaded_records_total", "audience" => a.key.clone())
                .absolute(s.map_or(0, |s| s.uploaded));
            counter!("amc_sync_failed_records_total", "audience" => a.key.clone())
                .absolute(s.map_or(0, |s| s.failed));
        }
        for (reason, n) in &snap.dead {
            gauge!("amc_sync_dead_letters", "reason" => reason.clone()).set(*n as f64);
        }
        gauge!("amc_sync_auth_ok").set(if sync.auth == AuthState::Ok { 1.0 } else { 0.0 });
        gauge!("amc_sync_paused").set(if sync.paused { 1.0 } else { 0.0 });
        let age = snap
            .oldest_pending_ms
            .map_or(0, |t| (now - t).max(0) / 1000);
        gauge!("amc_sync_backlog_age_seconds").set(age as f64);
        for (source, n) in received {
            counter!("amc_sync_ingested_events_total", "source" => *source).absolute(*n);
        }
    });
    handle.render()
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = check_loopback(&headers) {
        return r.into_response();
    }
    let now = now_ms();
    let Ok(snap) = snapshot(&state, now).await else {
        return store_unavailable();
    };
    let text = render_metrics(&snap, &state.sync.status(), &state.pipeline.received(), now);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

// ----- status -----------------------------------------------------------------

/// The `GET /api/status` object (docs/admin-api.md): the engine's status
/// merged with the store's counts. Per audience, `uploaded` is the number
/// of users whose latest change Amazon accepted and `failed` the records
/// dead-lettered by uploads (the same numbers as `amc-sync status`).
/// `uploadsByHour` has [`UPLOAD_HOURS`] entries, oldest first, the last
/// one the current hour; `nextUploadMs` is `null` while paused.
fn status_json(state: &AdminState, snap: &Snapshot, sync: &SyncStatus, now: i64) -> Value {
    let audiences: serde_json::Map<String, Value> = snap
        .audiences
        .iter()
        .map(|a| {
            let s = sync.audiences.get(&a.key).cloned().unwrap_or_default();
            let u = snap.uploads.get(&a.key).cloned().unwrap_or_default();
            (
                a.key.clone(),
                json!({
                    "pending": snap.pending.get(&a.key).copied().unwrap_or(0),
                    "uploaded": u.uploaded,
                    "failed": u.failed,
                    "failures": s.failures,
                    "backoffUntilMs": s.backoff_until_ms,
                    "lastError": s.last_error,
                    "lastUploadMs": s.last_upload_ms,
                    "audienceId": a.audience_id,
                }),
            )
        })
        .collect();
    let hour = now.div_euclid(3_600_000) * 3_600_000;
    let by_hour: Vec<Value> = (0..UPLOAD_HOURS)
        .rev()
        .map(|i| {
            let h = hour - i * 3_600_000;
            json!({"hourMs": h, "records": snap.by_hour.get(&h).copied().unwrap_or(0)})
        })
        .collect();
    let conn = crate::agent::credentials::Connection::load(&state.data_dir).unwrap_or_default();
    // Logged in elsewhere but not in the active region: that needs a login,
    // as GET /api/connection says.
    let auth = match sync.auth {
        crate::sync::engine::AuthState::NoCredentials if !conn.regions.is_empty() => {
            crate::sync::engine::AuthState::NeedsLogin
        }
        a => a,
    };
    json!({
        "auth": auth,
        "paused": sync.paused,
        // The live region: a login or `PUT /api/region` may have switched it.
        "region": conn.active_region(state.info.region).as_str(),
        "lastUploadMs": sync.last_upload_ms,
        "nextUploadMs": if sync.paused { None } else { sync.next_upload_ms },
        "lastError": sync.last_error,
        "backlogAgeSecs": snap.oldest_pending_ms.map_or(0, |t| (now - t).max(0) / 1000),
        "pendingTotal": snap.pending.values().sum::<u64>(),
        "deadLettersTotal": snap.dead.values().sum::<u64>(),
        "audiences": audiences,
        "uploadsByHour": by_hour,
        "recentErrors": sync.recent_errors,
        "dropDir": state.info.drop_dir.as_ref().map(|d| d.display().to_string()),
        "listen": state.info.listen,
        "writeKeyHint": key_hint(&state.write_key.get()),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

async fn full_status(state: &AdminState) -> Result<Value, StoreError> {
    let now = now_ms();
    let since = now.div_euclid(3_600_000) * 3_600_000 - (UPLOAD_HOURS - 1) * 3_600_000;
    let snap = snapshot(state, since).await?;
    Ok(status_json(state, &snap, &state.sync.status(), now))
}

async fn status(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    match full_status(&state).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => store_unavailable(),
    }
}

// ----- uploads ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct FlushQuery {
    #[serde(default)]
    wait: bool,
    /// Seconds, at most [`MAX_FLUSH_WAIT`].
    #[serde(default)]
    timeout: Option<u64>,
}

async fn flush(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<FlushQuery>,
) -> Response {
    guard!(state.token, headers);
    if state.sync.is_paused() {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "uploads are paused; resume them first (POST /api/resume)",
        );
    }
    let before = state.sync.rounds();
    state.sync.flush();
    let status_or_null = |v: Result<Value, StoreError>| v.unwrap_or(Value::Null);
    if !q.wait {
        return (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"flushing": true, "status": status_or_null(full_status(&state).await)}),
            ),
        )
            .into_response();
    }
    let timeout = Duration::from_secs(q.timeout.unwrap_or(120)).min(MAX_FLUSH_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    // Wait for the round to finish, then for its jobs to reach a terminal state.
    loop {
        let round_done = state.sync.rounds() > before;
        let (open, pending) = state
            .read(|s| {
                Ok((
                    s.open_jobs()?.len(),
                    s.pending_counts()?.values().sum::<u64>(),
                ))
            })
            .await
            .unwrap_or((0, 0));
        if round_done && open == 0 {
            return axum::Json(json!({
                "flushed": pending == 0,
                "pending": pending,
                "openJobs": 0,
                "status": status_or_null(full_status(&state).await)
            }))
            .into_response();
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                StatusCode::ACCEPTED,
                axum::Json(
                    json!({"flushed": false, "pending": pending, "openJobs": open,
                                  "status": status_or_null(full_status(&state).await)}),
                ),
            )
                .into_response();
        }
        if round_done {
            state.sync.poll_jobs_now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Persists `paused` in `settings.json`, then applies it.
async fn set_paused(state: &AdminState, paused: bool) -> Response {
    let _files = state.files.lock().await;
    let dir = state.data_dir.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let mut s = Settings::load(&dir)?;
        s.paused = paused;
        s.save(&dir)
    })
    .await;
    match saved {
        Ok(Ok(())) => {
            state.sync.set_paused(paused);
            tracing::info!(
                paused,
                "uploads {}",
                if paused { "paused" } else { "resumed" }
            );
            axum::Json(json!({"paused": paused})).into_response()
        }
        Ok(Err(e)) => settings_unavailable(&e),
        Err(_) => store_unavailable(),
    }
}

async fn pause(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    set_paused(&state, true).await
}

async fn resume(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    set_paused(&state, false).await
}

// ----- audiences --------------------------------------------------------------

fn audience_json(
    a: &crate::store::Audience,
    pending: u64,
    u: &crate::store::UploadCounts,
) -> Value {
    let (advertiser_id, connection_id) = match &a.target {
        crate::store::Target::AdvertiserId(d) => (Some(d.as_str()), None),
        crate::store::Target::ConnectionId(c) => (None, Some(c.as_str())),
    };
    json!({
        "key": a.key,
        "audienceId": a.audience_id,
        "region": a.audience_region,
        "countryCode": a.country_code,
        "description": a.description,
        "advertiserId": advertiser_id,
        "connectionId": connection_id,
        "externalAudienceId": a.external_audience_id.as_deref().unwrap_or(&a.key),
        "ttlSecs": a.ttl_secs,
        "cpmCents": a.cpm_cents,
        "currency": a.currency,
        "createdAtMs": a.created_at_ms,
        "pending": pending,
        "uploaded": u.uploaded,
        "failed": u.failed,
    })
}

async fn list_audiences(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    let read = state
        .read(|s| Ok((s.audiences()?, s.pending_counts()?, s.upload_counts()?)))
        .await;
    let Ok((list, pending, uploads)) = read else {
        return store_unavailable();
    };
    let items: Vec<Value> = list
        .iter()
        .map(|a| {
            audience_json(
                a,
                pending.get(&a.key).copied().unwrap_or(0),
                &uploads.get(&a.key).cloned().unwrap_or_default(),
            )
        })
        .collect();
    axum::Json(json!({"audiences": items})).into_response()
}

async fn create_audience(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guard!(state.token, headers);
    let input: AudienceInput = match json_body(&headers, &body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let new = match audiences::validate(input) {
        Ok(n) => n,
        Err(e) => {
            return field_error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                e.field,
                &e.message,
            );
        }
    };
    let w = state.writer.clone();
    let created = tokio::task::spawn_blocking(move || w.call(move |s| s.create_audience(&new)))
        .await
        .unwrap_or(Err(StoreError::WriterClosed));
    match created {
        Ok(a) => (
            StatusCode::CREATED,
            axum::Json(audience_json(&a, 0, &crate::store::UploadCounts::default())),
        )
            .into_response(),
        Err(StoreError::AudienceExists { .. }) => field_error(
            StatusCode::CONFLICT,
            "conflict",
            "key",
            "an audience with this key exists",
        ),
        Err(StoreError::Invalid { field, reason }) => {
            field_error(StatusCode::BAD_REQUEST, "invalid_field", field, reason)
        }
        Err(_) => store_unavailable(),
    }
}

// ----- dead letters -----------------------------------------------------------

async fn list_dead_letters(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(state.token, headers);
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_DEAD_LETTER_PAGE).contains(&n) => n,
        Some(_) => {
            return field_error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "limit",
                "limit must be 1–1000",
            );
        }
    };
    let nonempty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let filter = DeadLetterFilter {
        reason: nonempty("reason"),
        audience: nonempty("audience"),
        limit,
        newest_first: true,
        ..DeadLetterFilter::default()
    };
    let read = state
        .read(move |s| Ok((s.dead_letters(&filter)?, s.dead_letter_counts()?)))
        .await;
    let Ok((list, counts)) = read else {
        return store_unavailable();
    };
    let items: Vec<Value> = list
        .iter()
        .map(|d| {
            let p = d.payload.as_ref();
            json!({
                "id": d.id,
                "atMs": d.created_at_ms,
                "reason": d.reason,
                "message": d.message,
                "source": d.source.as_str(),
                "audience": p.and_then(|p| p.audience_key.clone()),
                "externalUserId": p.and_then(|p| p.external_user_id.clone()),
                // The store keeps messageId digests for dedup only.
                "messageId": Value::Null,
                "retried": d.retried,
            })
        })
        .collect();
    axum::Json(json!({"items": items, "counts": counts})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ids: Option<Vec<i64>>,
}

async fn retry_dead_letters(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guard!(state.token, headers);
    let req: RetryBody = match json_body(&headers, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let w = state.writer.clone();
    let result = tokio::task::spawn_blocking(move || {
        w.call(move |s| {
            let filter = DeadLetterFilter {
                reason: req.reason,
                ..Default::default()
            };
            s.retry_dead_letters(&filter, req.ids.as_deref())
        })
    })
    .await;
    match result {
        Ok(Ok(out)) => {
            if out.requeued > 0 && !state.sync.is_paused() {
                state.sync.flush();
            }
            axum::Json(out).into_response()
        }
        _ => store_unavailable(),
    }
}

// ----- settings ---------------------------------------------------------------

fn settings_json(state: &AdminState, s: &Settings) -> Value {
    let drop_dir = s.drop_dir.as_ref().or(state.info.drop_dir.as_ref());
    json!({
        "dropDir": drop_dir.map(|d| d.display().to_string()),
        "scheduleIntervalSecs": state.sync.interval().as_secs(),
        "batchSize": state.info.batch_size,
        "profile": s.profile.unwrap_or(state.info.profile).as_str(),
        "writeKeyHint": key_hint(&state.write_key.get()),
    })
}

async fn load_settings(state: &AdminState) -> Result<Settings, Response> {
    let dir = state.data_dir.clone();
    match tokio::task::spawn_blocking(move || Settings::load(&dir)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(settings_unavailable(&e)),
        Err(_) => Err(store_unavailable()),
    }
}

async fn get_settings(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    match load_settings(&state).await {
        Ok(s) => axum::Json(settings_json(&state, &s)).into_response(),
        Err(r) => r,
    }
}

/// A validated `PUT /api/settings` body.
#[derive(Debug, Default)]
struct SettingsChange {
    drop_dir: Option<PathBuf>,
    interval: Option<u64>,
    profile: Option<Profile>,
}

fn parse_settings_change(v: &Value) -> Result<SettingsChange, ApiError> {
    let bad = ApiError::invalid_field;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::plain(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "expected a JSON object",
        ));
    };
    let mut change = SettingsChange::default();
    for (k, v) in obj {
        match k.as_str() {
            "dropDir" => {
                let p = v
                    .as_str()
                    .filter(|p| !p.is_empty() && !p.contains('\0'))
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .ok_or_else(|| bad("dropDir", "must be an absolute path"))?;
                change.drop_dir = Some(p);
            }
            "scheduleIntervalSecs" => {
                let n = v
                    .as_u64()
                    .filter(|n| {
                        (MIN_SCHEDULE_INTERVAL_SECS..=MAX_SCHEDULE_INTERVAL_SECS).contains(n)
                    })
                    .ok_or_else(|| {
                        bad(
                            "scheduleIntervalSecs",
                            "must be a whole number of seconds, 60–86,400",
                        )
                    })?;
                change.interval = Some(n);
            }
            "profile" => {
                let p = match v.as_str() {
                    Some("amazon") => Profile::Amazon,
                    Some("segment") => Profile::Segment,
                    _ => return Err(bad("profile", "must be \"amazon\" or \"segment\"")),
                };
                change.profile = Some(p);
            }
            // Read-only values a client may send back unchanged.
            "batchSize" | "writeKeyHint" => {}
            other => return Err(bad(other, "unknown setting")),
        }
    }
    Ok(change)
}

async fn put_settings(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guard!(state.token, headers);
    let change = match json_body::<Value>(&headers, &body).and_then(|v| parse_settings_change(&v)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let _files = state.files.lock().await;
    let dir = state.data_dir.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let mut s = Settings::load(&dir)?;
        if let Some(d) = change.drop_dir {
            s.drop_dir = Some(d);
        }
        if let Some(i) = change.interval {
            s.schedule_interval_secs = Some(i);
        }
        if let Some(p) = change.profile {
            s.profile = Some(p);
        }
        s.save(&dir).map(|()| s)
    })
    .await;
    match saved {
        Ok(Ok(s)) => {
            if let Some(i) = change.interval {
                state.sync.set_interval(Duration::from_secs(i));
            }
            axum::Json(settings_json(&state, &s)).into_response()
        }
        Ok(Err(e)) => settings_unavailable(&e),
        Err(_) => store_unavailable(),
    }
}

async fn rotate_write_key(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    guard!(state.token, headers);
    let _files = state.files.lock().await;
    let dir = state.data_dir.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let key = new_write_key()?;
        let mut st = AgentState::load_or_create(&dir)?;
        st.write_key.clone_from(&key);
        st.save(&dir)?;
        Ok::<_, crate::agent::state::StateError>(key)
    })
    .await;
    match saved {
        Ok(Ok(key)) => {
            state.write_key.set(&key);
            tracing::info!("Segment write key rotated; the old key is refused from now on");
            axum::Json(json!({"writeKey": key})).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "rotating the write key");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "agent.json could not be updated; the old key stays valid",
            )
        }
        Err(_) => store_unavailable(),
    }
}

// ----- static UI --------------------------------------------------------------

/// The dashboard (`ui/`), embedded at compile time.
#[derive(rust_embed::Embed)]
#[folder = "ui/"]
struct UiAssets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "html" => "text/html; charset=utf-8",
        Some(e) if e == "js" || e == "mjs" => "text/javascript; charset=utf-8",
        Some(e) if e == "css" => "text/css; charset=utf-8",
        Some(e) if e == "svg" => "image/svg+xml",
        Some(e) if e == "png" => "image/png",
        Some(e) if e == "ico" => "image/x-icon",
        Some(e) if e == "json" => "application/json",
        Some(e) if e == "woff2" => "font/woff2",
        Some(e) if e == "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve_ui(path: &str) -> Response {
    let Some(file) = UiAssets::get(path) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such page");
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(UI_CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

async fn ui_index(headers: HeaderMap) -> Response {
    if let Err(r) = check_loopback(&headers) {
        return r.into_response();
    }
    serve_ui("index.html")
}

async fn ui_asset(headers: HeaderMap, UrlPath(path): UrlPath<String>) -> Response {
    if let Err(r) = check_loopback(&headers) {
        return r.into_response();
    }
    if path == "api" || path.starts_with("api/") {
        return error(StatusCode::NOT_FOUND, "not_found", "no such admin route");
    }
    serve_ui(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for (host, ok) in [
            ("127.0.0.1:8787", true),
            ("127.0.0.1", true),
            ("localhost:8787", true),
            ("[::1]:8787", true),
            ("[::1]", true),
            ("evil.example:8787", false),
            ("127.0.0.1.evil.example", false),
            ("localhost.evil.example:80", false),
            ("127.0.0.1:80:80", false),
            ("[::1]junk", false),
            ("", false),
        ] {
            let h = headers(&[(header::HOST, host)]);
            assert_eq!(host_is_loopback(&h), ok, "{host}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn origin_127_0_0_1_evil_com_is_refused() {
        // Regression: a prefix match accepted `http://127.0.0.1.evil.com`.
        for bad in [
            "http://127.0.0.1.evil.com",
            "http://127.0.0.1.evil.com:8787",
            "http://localhost.evil.com",
            "http://localhost@evil.com",
            "http://127.0.0.1:8787@evil.com",
            "https://127.0.0.1:8787",
            "http://evil.com",
            "null",
            "tauri://localhost.evil.com",
        ] {
            assert!(!origin_allowed(bad), "{bad}");
        }
        for good in [
            "http://127.0.0.1",
            "http://127.0.0.1:8787",
            "http://localhost:5173",
            "http://[::1]:8787",
            "tauri://localhost",
            "http://tauri.localhost",
        ] {
            assert!(origin_allowed(good), "{good}");
        }
        let h = headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://127.0.0.1.evil.com"),
        ]);
        assert_eq!(check_loopback(&h).unwrap_err().code, "forbidden_origin");
    }

    #[test]
    fn bearer_token_is_required_and_compared_exactly() {
        let token = "a".repeat(64);
        let base = [(header::HOST, "127.0.0.1:1")];
        assert_eq!(
            authorized(&token, &headers(&base)).unwrap_err().code,
            "unauthorized"
        );
        let wrong = format!("Bearer {}", "b".repeat(64));
        let h = headers(&[base[0].clone(), (header::AUTHORIZATION, wrong.as_str())]);
        assert_eq!(
            authorized(&token, &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let right = format!("Bearer {token}");
        let h = headers(&[base[0].clone(), (header::AUTHORIZATION, right.as_str())]);
        assert!(authorized(&token, &h).is_ok());
        // An empty token refuses everyone, even an empty bearer.
        let h = headers(&[base[0].clone(), (header::AUTHORIZATION, "Bearer ")]);
        assert!(authorized("", &h).is_err());
    }

    #[test]
    fn json_body_needs_json_content_type_and_names_unknown_fields() {
        let json_ct = headers(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]);
        let r = json_body::<RetryBody>(&HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_json")
        );
        let r = json_body::<RetryBody>(&json_ct, b"{nope").unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        let r = json_body::<RetryBody>(&json_ct, br#"{"bogus":1}"#).unwrap_err();
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid_field", Some("bogus"))
        );
        let r = json_body::<RetryBody>(&json_ct, br#"{"ids":"secret-value"}"#).unwrap_err();
        assert!(!r.message.contains("secret-value"));
        assert!(json_body::<RetryBody>(&HeaderMap::new(), b"").is_ok());
        let ok: RetryBody = json_body(&json_ct, br#"{"reason":"x"}"#).unwrap();
        assert_eq!(ok.reason.as_deref(), Some("x"));
    }

    #[test]
    fn metrics_render_the_contract_names() {
        let mut snap = Snapshot::default();
        snap.pending.insert("vip".into(), 7);
        snap.dead.insert("consent_required".into(), 2);
        snap.oldest_pending_ms = Some(1_000);
        let mut sync = SyncStatus {
            paused: true,
            ..SyncStatus::default()
        };
        sync.audiences.entry("vip".into()).or_default().uploaded = 5;
        let a = crate::store::Audience {
            id: 1,
            key: "vip".into(),
            audience_id: None,
            country_code: "US".into(),
            description: String::new(),
            target: crate::store::Target::AdvertiserId("1".into()),
            external_audience_id: None,
            ttl_secs: None,
            cpm_cents: None,
            currency: None,
            created_at_ms: 0,
            audience_region: None,
        };
        snap.audiences.push(a);
        let text = render_metrics(&snap, &sync, &[("http", 3), ("file", 0)], 61_000);
        for line in [
            "amc_sync_pending_records{audience=\"vip\"} 7",
            "amc_sync_uploaded_records_total{audience=\"vip\"} 5",
            "amc_sync_failed_records_total{audience=\"vip\"} 0",
            "amc_sync_dead_letters{reason=\"consent_required\"} 2",
            "amc_sync_auth_ok 1",
            "amc_sync_paused 1",
            "amc_sync_backlog_age_seconds 60",
            "amc_sync_ingested_events_total{source=\"http\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
