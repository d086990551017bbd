//! The Segment HTTP Tracking API compatible intake (DESIGN.md 4.1).
//!
//! Routes ([`router`]):
//!
//! | route | body | effect |
//! |---|---|---|
//! | `POST /v1/batch`, `POST /v1/import` | `{"batch":[…], "writeKey"?, "context"?, "integrations"?, "sentAt"?}` | every item goes through the [`Pipeline`]; top-level `context`/`integrations` are merged into each item (item values win), a top-level `sentAt` fills items without one |
//! | `POST /v1/track`, `POST /v1/identify` | one message | `type` is implied by the path (set when missing; a different `type` dead-letters the message as `type_mismatch`) |
//! | `POST /v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` | one message | authenticated, validated, counted ([`stats`]) and ignored |
//!
//! `GET /healthz` is served by the admin API ([`crate::agent::admin`]) with its
//! loopback `Host` check.
//!
//! **Auth**: the write key as HTTP Basic username (`base64("<key>:")`; a
//! missing colon is tolerated), or `writeKey` in the body. Either one
//! matching (constant-time comparison) is enough; otherwise `401
//! {"code":"unauthorized"}`. The body is parsed before the body `writeKey`
//! can be checked, so a request without a valid Basic header that is too
//! large or not JSON gets its `400` before the `401`; nothing is ever
//! written for an unauthenticated request.
//!
//! **Answers**: `200 {"success":true}` only after the pipeline returned, i.e.
//! after the SQLite commit. Errors are `{"code","message"}` (the Python SDK
//! needs both keys):
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `request_too_large` | body over [`MAX_REQUEST_BYTES`], raw or after gzip decoding (nothing committed) |
//! | 400 | `message_too_large` | `/v1/track`…: the message is over [`MAX_MESSAGE_BYTES`]; it is dead-lettered `message_too_large` (committed) |
//! | 400 | `batch_too_large` | over [`MAX_BATCH_ITEMS`] items (nothing committed) |
//! | 408 | `request_timeout` | the body took longer than [`BODY_READ_TIMEOUT`] |
//! | 400 | `invalid_json` | the (decoded) body is not JSON |
//! | 400 | `invalid_batch` | batch body without a `batch` array |
//! | 400 | `invalid_message` | single-message body that is not a JSON object |
//! | 400 | `invalid_gzip`, `unsupported_encoding`, `invalid_body` | bad `Content-Encoding`/body stream |
//! | 401 | `unauthorized` | wrong or missing write key |
//! | 503 | `store_unavailable` | the store could not commit (disk full, writer stopped): retry |
//! | 500 | `internal_error` | the intake task panicked (nothing acknowledged) |
//!
//! **Per-message problems inside a valid batch never fail their siblings**
//! (DESIGN.md 4.1, Segment semantics): an item that is not a JSON object is
//! dead-lettered `not_an_object`, an item over [`MAX_MESSAGE_BYTES`] is
//! dead-lettered `message_too_large` (without its payload), mapping
//! rejections are dead-lettered by the pipeline with their reason; the
//! answer is still `200` once everything is committed. Duplicate
//! `messageId`s are accepted and dropped by the store.
//!
//! **Limits**: the raw body is read by the handler itself rather than with
//! axum's `DefaultBodyLimit` (which the intake routes disable): axum's limit
//! answers `413 text/plain`, and hyper then closes the connection while the
//! client is still uploading, so the client usually sees a connection reset
//! instead of the JSON `400`. The handler stops buffering at
//! [`MAX_REQUEST_BYTES`], drains (discards) up to [`DRAIN_LIMIT_BYTES`] so the
//! client can read the answer, and answers at once when `Content-Length`
//! already says the body is over that. Gzip is decoded with the output capped
//! at [`MAX_REQUEST_BYTES`] + 1 (no gzip bombs).
//!
//! **Privacy**: logs carry counts and reason codes only, never bodies or
//! values; error messages never echo input values.
//!
//! **Message size** is the compact JSON serialization of the message (for
//! `/v1/track`… without `writeKey`; for batch items before the batch-level
//! `context` is merged in), so whitespace and indentation do not count. It is
//! only computed when the decoded body is over [`MAX_MESSAGE_BYTES`] (a body
//! within the limit cannot hold a larger message as sent).

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::agent::pipeline::{IngestSummary, Input, Pipeline};
use crate::ingest::file::merge_batch_level;
use crate::model::Source;
use crate::store::StoreError;

/// Largest request body, in bytes, raw and after decompression (500 KiB;
/// Segment: "500 KB per batch request").
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Largest single message, in bytes (32 KiB; Segment: "32 KB per call").
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 2_500;
/// How much of an oversize body is read and discarded before answering, so
/// the client gets the `400` instead of a connection reset.
pub const DRAIN_LIMIT_BYTES: usize = 4 * MAX_REQUEST_BYTES;

/// Longest time a client may take to send a request body (slow clients must
/// not hold connections, or a shutdown, forever): 30 seconds.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Shared state of the intake routes.
#[derive(Clone)]
pub struct HttpState {
    /// The intake pipeline (mapping, hashing, group-committed store).
    pub pipeline: Arc<Pipeline>,
    /// The Segment `writeKey` clients must present (rotatable at run time
    /// by the admin API). An empty key accepts nobody.
    pub write_key: WriteKey,
}

/// The Segment `writeKey` the intake accepts, shared with the admin API so
/// that `POST /api/settings/write-key/rotate` takes effect at once: every
/// request reads the current key. Cheap to clone (one `Arc`). `Debug` never
/// shows the key.
#[derive(Clone)]
pub struct WriteKey(Arc<std::sync::RwLock<Arc<str>>>);

impl WriteKey {
    /// A shared key holding `key`.
    pub fn new(key: &str) -> WriteKey {
        WriteKey(Arc::new(std::sync::RwLock::new(Arc::from(key))))
    }

    /// The current key.
    pub fn get(&self) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the key: requests authenticated after this call must present
    /// `key`; the old key is refused from now on.
    pub fn set(&self, key: &str) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(key);
    }
}

impl From<&str> for WriteKey {
    fn from(key: &str) -> WriteKey {
        WriteKey::new(key)
    }
}

impl std::fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteKey(…)")
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").finish_non_exhaustive()
    }
}

/// Process-wide intake counters since start (for status and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests to the `/v1/*` routes.
    pub requests: u64,
    /// Requests answered `200`.
    pub accepted_requests: u64,
    /// Requests answered `400` or `401`.
    pub rejected_requests: u64,
    /// Requests answered `503` because the store could not commit.
    pub store_failures: u64,
    /// Messages handed to the pipeline (batch items and single messages).
    pub messages: u64,
    /// Messages ignored: `/v1/page|screen|group|alias` calls and
    /// non-audience messages inside batches.
    pub ignored: u64,
    /// Messages dead-lettered (any reason).
    pub dead_lettered: u64,
}

struct Counters {
    requests: AtomicU64,
    accepted_requests: AtomicU64,
    rejected_requests: AtomicU64,
    store_failures: AtomicU64,
    messages: AtomicU64,
    ignored: AtomicU64,
    dead_lettered: AtomicU64,
}

static COUNTERS: Counters = Counters {
    requests: AtomicU64::new(0),
    accepted_requests: AtomicU64::new(0),
    rejected_requests: AtomicU64::new(0),
    store_failures: AtomicU64::new(0),
    messages: AtomicU64::new(0),
    ignored: AtomicU64::new(0),
    dead_lettered: AtomicU64::new(0),
};

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The intake counters of this process (all routers share them).
pub fn stats() -> HttpStats {
    let c = &COUNTERS;
    HttpStats {
        requests: c.requests.load(Ordering::Relaxed),
        accepted_requests: c.accepted_requests.load(Ordering::Relaxed),
        rejected_requests: c.rejected_requests.load(Ordering::Relaxed),
        store_failures: c.store_failures.load(Ordering::Relaxed),
        messages: c.messages.load(Ordering::Relaxed),
        ignored: c.ignored.load(Ordering::Relaxed),
        dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
    }
}

/// The intake routes (see the module docs). No fallback is set, so the
/// router can be merged with the admin API's.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/track", post(track))
        .route("/v1/identify", post(identify))
        .route("/v1/page", post(page))
        .route("/v1/screen", post(screen))
        .route("/v1/group", post(group))
        .route("/v1/alias", post(alias))
        // The handlers enforce their own limits (module docs: "Limits").
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// What a `/v1/*` route does with its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/v1/batch`, `/v1/import`.
    Batch,
    /// `/v1/track`, `/v1/identify`: one message of this type.
    Single(&'static str),
    /// `/v1/page|screen|group|alias`: accepted and ignored.
    Ignored(&'static str),
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Batch => "batch",
            Endpoint::Single(t) | Endpoint::Ignored(t) => t,
        }
    }
}

async fn batch(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Batch, s, headers, body).await
}
async fn track(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Single("track"), s, headers, body).await
}
async fn identify(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Single("identify"), s, headers, body).await
}
async fn page(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Ignored("page"), s, headers, body).await
}
async fn screen(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Ignored("screen"), s, headers, body).await
}
async fn group(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Ignored("group"), s, headers, body).await
}
async fn alias(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Ignored("alias"), s, headers, body).await
}

/// An error answer: status + `{"code","message"}`. Messages never contain
/// input values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong write key (HTTP Basic username or body writeKey)".into(),
        }
    }

    fn request_too_large() -> ApiError {
        ApiError::bad_request(
            "request_too_large",
            format!("request body exceeds {MAX_REQUEST_BYTES} bytes"),
        )
    }

    fn store(e: &StoreError) -> ApiError {
        let message = match e {
            StoreError::DiskFull => "disk full: nothing was committed; retry later",
            StoreError::WriterClosed => {
                "the store is shut down: nothing was committed; retry later"
            }
            _ => "the store could not commit: nothing was committed; retry later",
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"code": self.code, "message": self.message}));
        if self.status == StatusCode::UNAUTHORIZED {
            (
                self.status,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"amc-sync\"")],
                body,
            )
                .into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

/// A successful `/v1/*` outcome.
enum Accepted {
    /// `200 {"success":true}`.
    Ok,
    /// Committed (dead letter recorded), but the client is told `400`.
    CommittedButRejected(ApiError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

async fn handle(endpoint: Endpoint, state: HttpState, headers: HeaderMap, body: Body) -> Response {
    bump(&COUNTERS.requests, 1);
    let result = async {
        // The body is read (or drained) first so that every answer reaches
        // the client rather than a connection reset.
        let raw = tokio::time::timeout(BODY_READ_TIMEOUT, read_body(&headers, body))
            .await
            .map_err(|_| ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "request_timeout",
                message: format!(
                    "the request body was not received within {} seconds",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            })??;
        let encoding = content_encoding(&headers)?;
        let header_ok =
            basic_auth_key(&headers).is_some_and(|k| key_matches(&state.write_key.get(), k));
        tokio::task::spawn_blocking(move || process(endpoint, &state, header_ok, encoding, &raw))
            .await
            .map_err(|_| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal_error",
                message: "the intake task failed; nothing was acknowledged".into(),
            })?
    }
    .await;
    match result {
        Ok(Accepted::Ok) => {
            bump(&COUNTERS.accepted_requests, 1);
            (StatusCode::OK, axum::Json(json!({"success": true}))).into_response()
        }
        Ok(Accepted::CommittedButRejected(e)) | Err(e) => {
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                bump(&COUNTERS.store_failures, 1);
            } else if e.status.is_client_error() {
                bump(&COUNTERS.rejected_requests, 1);
            }
            tracing::debug!(
                endpoint = endpoint.name(),
                status = e.status.as_u16(),
                code = e.code,
                "http intake: request rejected"
            );
            e.into_response()
        }
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let mut enc = Encoding::Identity;
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = v.to_str().unwrap_or("");
        for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                if enc == Encoding::Gzip {
                    return Err(unsupported_encoding());
                }
                enc = Encoding::Gzip;
            } else if !token.eq_ignore_ascii_case("identity") {
                return Err(unsupported_encoding());
            }
        }
    }
    Ok(enc)
}

fn unsupported_encoding() -> ApiError {
    ApiError::bad_request(
        "unsupported_encoding",
        "Content-Encoding must be gzip or identity",
    )
}

/// Reads the raw body up to [`MAX_REQUEST_BYTES`]; an oversize body is
/// drained up to [`DRAIN_LIMIT_BYTES`] (so the client reads our answer) and
/// rejected.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT_BYTES as u64) {
        return Err(ApiError::request_too_large());
    }
    let cap = declared.map_or(0, |n| {
        usize::try_from(n).unwrap_or(0).min(MAX_REQUEST_BYTES)
    });
    let mut buf = Vec::with_capacity(cap);
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the request body could not be read",
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_LIMIT_BYTES {
            break;
        }
        if total <= MAX_REQUEST_BYTES {
            buf.extend_from_slice(&data);
        }
    }
    if total > MAX_REQUEST_BYTES {
        return Err(ApiError::request_too_large());
    }
    Ok(buf)
}

/// Decompresses a gzip body, refusing output over [`MAX_REQUEST_BYTES`].
fn gunzip(raw: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(MAX_REQUEST_BYTES + 1));
    flate2::read::MultiGzDecoder::new(raw)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::bad_request("invalid_gzip", "the gzip body could not be decoded"))?;
    if out.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::request_too_large());
    }
    Ok(out)
}

/// The HTTP Basic username (`base64("<key>:")`, or `base64("<key>")` without
/// the colon).
fn basic_auth_key(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(rest))
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(match text.split_once(':') {
        Some((user, _)) => user.to_string(),
        None => text,
    })
}

/// Whether `presented` equals the configured key, in time independent of
/// where they differ (the length is not secret: keys are 32 hex chars).
fn key_matches(expected: &str, presented: impl AsRef<str>) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_ref().as_bytes());
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Decode, parse, authenticate, validate and ingest: the blocking part of a
/// request.
fn process(
    endpoint: Endpoint,
    state: &HttpState,
    header_ok: bool,
    encoding: Encoding,
    raw: &[u8],
) -> Result<Accepted, ApiError> {
    let decoded;
    let body: &[u8] = match encoding {
        Encoding::Identity => raw,
        Encoding::Gzip => {
            decoded = gunzip(raw)?;
            &decoded
        }
    };
    let body_len = body.len();
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let body_ok = value
        .get("writeKey")
        .and_then(Value::as_str)
        .is_some_and(|k| key_matches(&state.write_key.get(), k));
    if !(header_ok || body_ok) {
        return Err(ApiError::unauthorized());
    }
    match endpoint {
        Endpoint::Batch => {
            let inputs = batch_inputs(value, body_len)?;
            if inputs.is_empty() {
                return Ok(Accepted::Ok);
            }
            ingest(endpoint, state, inputs)?;
            Ok(Accepted::Ok)
        }
        Endpoint::Single(kind) => {
            let (input, too_large) = single_input(kind, value, body_len)?;
            ingest(endpoint, state, vec![input])?;
            if too_large {
                return Ok(Accepted::CommittedButRejected(message_too_large_error()));
            }
            Ok(Accepted::Ok)
        }
        Endpoint::Ignored(kind) => {
            if !value.is_object() {
                return Err(not_an_object_error());
            }
            if body_len > MAX_MESSAGE_BYTES {
                return Err(message_too_large_error());
            }
            bump(&COUNTERS.ignored, 1);
            tracing::debug!(endpoint = kind, "http intake: message ignored");
            Ok(Accepted::Ok)
        }
    }
}

fn message_too_large_error() -> ApiError {
    ApiError::bad_request(
        "message_too_large",
        format!("message exceeds {MAX_MESSAGE_BYTES} bytes"),
    )
}

fn not_an_object_error() -> ApiError {
    ApiError::bad_request("invalid_message", "request body is not a JSON object")
}

/// A batch body → pipeline inputs (one per item, in order).
fn batch_inputs(value: Value, body_len: usize) -> Result<Vec<Input>, ApiError> {
    let invalid = || ApiError::bad_request("invalid_batch", "body must be {\"batch\": [...]}");
    let Value::Object(mut top) = value else {
        return Err(invalid());
    };
    let Some(Value::Array(items)) = top.remove("batch") else {
        return Err(invalid());
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "batch has {} items; at most {MAX_BATCH_ITEMS} are allowed",
                items.len()
            ),
        ));
    }
    let sent_at = top.get("sentAt").filter(|v| v.is_string()).cloned();
    // Each item's own size, before batch-level fields are merged into it.
    // When the whole body is within the message limit, so is every item.
    let check_size = body_len > MAX_MESSAGE_BYTES;
    let verdicts: Vec<Option<(&'static str, String)>> =
        items.iter().map(|i| item_problem(i, check_size)).collect();
    let merged = merge_batch_level(items, &top);
    Ok(merged
        .into_iter()
        .zip(verdicts)
        .map(|(item, problem)| match problem {
            Some(p) => Input {
                message: Err(p),
                line: None,
            },
            None => {
                let mut item = item;
                if let (Some(s), Value::Object(obj)) = (&sent_at, &mut item) {
                    obj.entry("sentAt").or_insert_with(|| s.clone());
                }
                Input::message(item)
            }
        })
        .collect())
}

/// Why a batch item is dead-lettered before mapping, if it is.
fn item_problem(item: &Value, check_size: bool) -> Option<(&'static str, String)> {
    if !item.is_object() {
        return Some((
            "not_an_object",
            "batch item is not a JSON object".to_string(),
        ));
    }
    if check_size && json_len_exceeds(item, MAX_MESSAGE_BYTES) {
        return Some((
            "message_too_large",
            format!("message exceeds {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    None
}

/// Whether `v`'s compact JSON serialization is longer than `limit` bytes
/// (stops serializing as soon as it is).
fn json_len_exceeds<T: serde::Serialize + ?Sized>(v: &T, limit: usize) -> bool {
    struct Counter {
        n: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter { n: 0, limit };
    serde_json::to_writer(&mut c, v).is_err()
}

/// A single-message body → its pipeline input, and whether it was too large
/// (then the input is the `message_too_large` dead letter).
fn single_input(
    kind: &'static str,
    value: Value,
    body_len: usize,
) -> Result<(Input, bool), ApiError> {
    let Value::Object(mut msg) = value else {
        return Err(not_an_object_error());
    };
    msg.remove("writeKey");
    // Same measure as batch items; a body within the limit needs no check.
    if body_len > MAX_MESSAGE_BYTES && json_len_exceeds(&msg, MAX_MESSAGE_BYTES) {
        let input = Input {
            message: Err((
                "message_too_large",
                format!("message exceeds {MAX_MESSAGE_BYTES} bytes"),
            )),
            line: None,
        };
        return Ok((input, true));
    }
    let input = match msg.get("type") {
        None | Some(Value::Null) => {
            msg.insert("type".into(), Value::from(kind));
            Input::message(Value::Object(msg))
        }
        Some(Value::String(t)) if t == kind => Input::message(Value::Object(msg)),
        Some(_) => Input {
            message: Err((
                "type_mismatch",
                format!("the message type does not match the endpoint /v1/{kind}"),
            )),
            line: None,
        },
    };
    Ok((input, false))
}

/// Runs the pipeline (blocking: the caller is on a blocking thread) and logs
/// counts and reason codes.
fn ingest(endpoint: Endpoint, state: &HttpState, inputs: Vec<Input>) -> Result<(), ApiError> {
    let n = inputs.len() as u64;
    bump(&COUNTERS.messages, n);
    match state.pipeline.ingest(inputs, Source::Http, Vec::new()) {
        Ok(summary) => {
            log_summary(endpoint, &summary);
            bump(&COUNTERS.ignored, summary.ignored);
            bump(&COUNTERS.dead_lettered, summary.dead_lettered());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(
                endpoint = endpoint.name(),
                messages = n,
                error = %e,
                "http intake: the store could not commit; answered 503"
            );
            Err(ApiError::store(&e))
        }
    }
}

fn log_summary(endpoint: Endpoint, s: &IngestSummary) {
    // Reason codes and counts only: never message contents.
    let reasons = Value::Object(
        s.dead_letters
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect::<Map<String, Value>>(),
    );
    tracing::debug!(
        endpoint = endpoint.name(),
        received = s.received,
        queued = s.queued,
        coalesced = s.coalesced,
        stale = s.stale,
        duplicates = s.duplicates,
        ignored = s.ignored,
        dead_lettered = s.dead_lettered(),
        reasons = %reasons,
        "http intake: batch committed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_auth_username_with_or_without_colon_or_padding() {
        assert_eq!(
            basic_auth_key(&auth(&format!("Basic {}", b64("k1:")))),
            Some("k1".into())
        );
        assert_eq!(
            basic_auth_key(&auth(&format!("basic {}", b64("k1:pw")))),
            Some("k1".into())
        );
        assert_eq!(
            basic_auth_key(&auth(&format!("Basic {}", b64("k1")))),
            Some("k1".into())
        );
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("k12:");
        assert_eq!(
            basic_auth_key(&auth(&format!("Basic {unpadded}"))),
            Some("k12".into())
        );
        assert_eq!(basic_auth_key(&auth("Bearer abc")), None);
        assert_eq!(basic_auth_key(&auth("Basic !!!")), None);
        assert_eq!(basic_auth_key(&HeaderMap::new()), None);
    }

    #[test]
    fn key_comparison() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abc", "abd"));
        assert!(!key_matches("abc", "ab"));
        assert!(
            !key_matches("", ""),
            "an empty configured key accepts nobody"
        );
    }

    #[test]
    fn content_encodings() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(content_encoding(&HeaderMap::new()), Ok(Encoding::Identity));
        assert_eq!(content_encoding(&h("GZIP")), Ok(Encoding::Gzip));
        assert_eq!(content_encoding(&h("identity")), Ok(Encoding::Identity));
        assert_eq!(
            content_encoding(&h("br")).unwrap_err().code,
            "unsupported_encoding"
        );
        assert_eq!(
            content_encoding(&h("gzip, gzip")).unwrap_err().code,
            "unsupported_encoding"
        );
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_decoded_and_bombs_are_capped() {
        assert_eq!(gunzip(&gz(b"{\"a\":1}")).unwrap(), b"{\"a\":1}");
        let exact = vec![b' '; MAX_REQUEST_BYTES];
        assert_eq!(gunzip(&gz(&exact)).unwrap().len(), MAX_REQUEST_BYTES);
        // 64 MiB of zeros compress to ~64 KiB; decoding stops at the cap.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < MAX_REQUEST_BYTES);
        assert_eq!(gunzip(&bomb).unwrap_err().code, "request_too_large");
        assert_eq!(gunzip(b"not gzip").unwrap_err().code, "invalid_gzip");
    }

    #[test]
    fn message_size_is_the_compact_serialization() {
        let pad = "x".repeat(MAX_MESSAGE_BYTES - 8);
        let v = json!({"a": pad}); // {"a":"…"} = len + 8
        assert!(!json_len_exceeds(&v, MAX_MESSAGE_BYTES));
        let v = json!({"a": format!("{pad}y")});
        assert!(json_len_exceeds(&v, MAX_MESSAGE_BYTES));
    }

    #[test]
    fn batch_items_merge_context_and_sent_at_and_bad_items_become_dead_letters() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let inputs = batch_inputs(
            json!({
                "batch": [
                    {"type": "track", "context": {"ip": "1"}},
                    7,
                    {"type": "track", "properties": {"big": big}},
                    {"type": "identify", "sentAt": "2026-01-01T00:00:00Z"},
                ],
                "context": {"ip": "9", "personas": {"computation_key": "k"}},
                "integrations": {"All": false},
                "sentAt": "2026-11-01T00:00:00Z",
                "writeKey": "secret",
            }),
            1 << 20,
        )
        .unwrap();
        assert_eq!(inputs.len(), 4);
        let m0 = inputs[0].message.as_ref().unwrap();
        assert_eq!(m0["context"]["ip"], "1");
        assert_eq!(m0["context"]["personas"]["computation_key"], "k");
        assert_eq!(m0["integrations"]["All"], false);
        assert_eq!(m0["sentAt"], "2026-11-01T00:00:00Z");
        assert!(m0.get("writeKey").is_none());
        assert_eq!(inputs[1].message.as_ref().unwrap_err().0, "not_an_object");
        assert_eq!(
            inputs[2].message.as_ref().unwrap_err().0,
            "message_too_large"
        );
        assert_eq!(
            inputs[3].message.as_ref().unwrap()["sentAt"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn batch_shape_errors() {
        for v in [json!([]), json!({"batch": {}}), json!({"type": "track"})] {
            assert_eq!(batch_inputs(v, 0).unwrap_err().code, "invalid_batch");
        }
        let many: Vec<Value> = (0..=MAX_BATCH_ITEMS).map(|_| json!({})).collect();
        assert_eq!(
            batch_inputs(json!({"batch": many}), 0).unwrap_err().code,
            "batch_too_large"
        );
        let ok: Vec<Value> = (0..MAX_BATCH_ITEMS).map(|_| json!({})).collect();
        assert_eq!(
            batch_inputs(json!({"batch": ok}), 0).unwrap().len(),
            MAX_BATCH_ITEMS
        );
    }

    #[test]
    fn single_message_type_is_implied_by_the_path() {
        let (i, big) = single_input("track", json!({"event": "x", "writeKey": "k"}), 10).unwrap();
        assert!(!big);
        let m = i.message.unwrap();
        assert_eq!(m["type"], "track");
        assert!(
            m.get("writeKey").is_none(),
            "the write key never reaches the pipeline"
        );
        let (i, _) = single_input("identify", json!({"type": "identify"}), 10).unwrap();
        assert!(i.message.is_ok());
        let (i, _) = single_input("identify", json!({"type": "track"}), 10).unwrap();
        assert_eq!(i.message.unwrap_err().0, "type_mismatch");
        // Whitespace does not count: the measure is the compact serialization.
        let (_, big) = single_input("track", json!({}), MAX_MESSAGE_BYTES + 1).unwrap();
        assert!(!big);
        let pad = "x".repeat(MAX_MESSAGE_BYTES);
        let (i, big) = single_input("track", json!({"p": pad}), MAX_MESSAGE_BYTES + 9).unwrap();
        assert!(big);
        assert_eq!(i.message.unwrap_err().0, "message_too_large");
        assert_eq!(
            single_input("track", json!([1]), 3).unwrap_err().code,
            "invalid_message"
        );
    }

    #[test]
    fn store_errors_are_503_never_success() {
        for e in [
            StoreError::DiskFull,
            StoreError::WriterClosed,
            StoreError::Invalid {
                field: "f",
                reason: "r",
            },
        ] {
            let a = ApiError::store(&e);
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(a.code, "store_unavailable");
        }
    }
}
