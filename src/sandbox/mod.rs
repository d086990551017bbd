//! An in-process fake of the Amazon endpoints AMC Sync uses (DESIGN.md 4.11):
//! Login with Amazon (authorize + token), `GET /v2/profiles`, the AMC
//! Audiences metadata, records and job-status operations.
//!
//! It validates as strictly as the real API (see [`crate::amazon`] for the
//! references): bearer token validity and expiry, the
//! `Amazon-Advertising-API-ClientId` header, the
//! `application/vnd.amcaudiences.v1+json` media type, bare-number
//! `audienceId`s (a quoted one → 400), `externalUserId` against
//! `^[0-9a-zA-Z_-]{1,128}$`, hashedPII values of 64 lowercase hex, 1–10,000
//! records, name 10–128 characters, ttl range, the currency list. Audience ids
//! it issues exceed 2^63.
//!
//! It keeps every accepted record ([`Sandbox::received`], and
//! `GET /__sandbox/received`), and injects faults from [`SandboxOptions`] or
//! at run time ([`Sandbox::update_faults`], `POST /__sandbox/faults`): 429 with
//! `Retry-After`, 5xx, delays, connection resets, expired access tokens,
//! `invalid_grant`, failed jobs; records whose `externalUserId` matches
//! [`SandboxOptions::invalid_user_pattern`] come back in `invalidRecords` of a
//! `PARTIALLYSUCCEEDED` job.
//!
//! Sandbox-specific endpoints (never at Amazon): `GET /__sandbox/received`,
//! `GET|POST /__sandbox/faults`, `GET /__sandbox/stats`.

mod api;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::amazon::{Credentials, InvalidRecord, JobState, Record, Secret};

/// Faults to inject. Counters apply to the next N matching requests and
/// count down; `u32::MAX` means "until cleared". Transport faults (`delay`,
/// `reset`, `rate_limit`, `server_error`) apply to Ads API paths (`/amc/…`,
/// `/v2/…`), in that order of precedence after the delay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Next N API requests answer 429.
    pub rate_limit: u32,
    /// `Retry-After` value sent with 429 (`"2"`, or an HTTP-date); none when unset.
    pub retry_after: Option<String>,
    /// Next N API requests answer `server_error_status`.
    pub server_error: u32,
    /// Status for `server_error` (default 503 when 0).
    pub server_error_status: u16,
    /// Next N API requests are delayed by `delay_ms` before being handled.
    pub delay: u32,
    /// Delay in milliseconds.
    pub delay_ms: u64,
    /// Next N API requests: the connection is dropped (reset) with no response.
    pub reset: u32,
    /// Next N authenticated requests: the access token presented is treated
    /// as expired (revoked, 401).
    pub expire_tokens: u32,
    /// Next N `refresh_token` grants answer `invalid_grant` (`u32::MAX`: the
    /// refresh token is dead until cleared).
    pub invalid_grant: u32,
    /// Next N accepted upload jobs end `FAILED` (their records are not kept).
    pub fail_jobs: u32,
}

/// How to run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Address to bind (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// LWA client id (default: random per start).
    pub client_id: Option<String>,
    /// LWA client secret (default: random per start).
    pub client_secret: Option<String>,
    /// Refresh token of the pre-consented test user (default: random).
    pub refresh_token: Option<String>,
    /// Access token lifetime (`expires_in`; default 3,600 s as at Amazon).
    pub token_ttl: Duration,
    /// Job status polls answered `PENDING` before the terminal state (default 1).
    pub job_pending_polls: u32,
    /// Regex: records whose `externalUserId` matches are reported in
    /// `invalidRecords` (job `PARTIALLYSUCCEEDED`). Default `^invalid_`.
    pub invalid_user_pattern: Option<String>,
    /// Regex: a records upload containing a record whose `externalUserId`
    /// matches is refused as a whole with 400 (as Amazon refuses a request
    /// with an invalid record). Default `^rejected_`.
    pub reject_user_pattern: Option<String>,
    /// Faults active from the start.
    pub faults: Faults,
    /// Keep the raw bytes of every accepted records body ([`Sandbox::raw_bodies`]).
    pub keep_raw_bodies: bool,
    /// Largest request body accepted (413 above; default 64 MiB).
    pub max_body_bytes: usize,
    /// First audience id issued (default 9,223,372,036,854,775,907 > 2^63).
    pub first_audience_id: u128,
    /// `GET /ap/oa` approves at once (default, for tests and the demo);
    /// `false` shows a consent page with Allow / Cancel buttons.
    pub auto_approve: bool,
    /// Authorization-code lifetime (default 300 s, as at Amazon).
    pub code_ttl: Duration,
    /// Registered "Allowed Return URLs"; empty: any loopback `http://` URI.
    pub allowed_return_urls: Vec<String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id: None,
            client_secret: None,
            refresh_token: None,
            token_ttl: Duration::from_secs(3600),
            job_pending_polls: 1,
            invalid_user_pattern: Some("^invalid_".into()),
            reject_user_pattern: Some("^rejected_".into()),
            faults: Faults::default(),
            keep_raw_bodies: false,
            max_body_bytes: 64 << 20,
            first_audience_id: 9_223_372_036_854_775_907,
            auto_approve: true,
            code_ttl: Duration::from_secs(300),
            allowed_return_urls: Vec::new(),
        }
    }
}

/// A record the sandbox accepted, with the job that carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRecord {
    /// The upload job.
    pub job_request_id: String,
    /// The record as sent.
    #[serde(flatten)]
    pub record: Record,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStats {
    /// Successful `refresh_token` grants.
    pub token_refreshes: u64,
    /// Successful `authorization_code` grants.
    pub code_grants: u64,
    /// Requests to Ads API paths (faulted ones included).
    pub api_requests: u64,
    /// Upload requests accepted (202).
    pub uploads_accepted: u64,
    /// Records accepted (excluding invalid ones).
    pub records_accepted: u64,
    /// Audiences created.
    pub audiences_created: u64,
    /// 401s answered.
    pub unauthorized: u64,
    /// 400s answered.
    pub bad_requests: u64,
    /// Faults injected (429, 5xx, resets).
    pub faults_injected: u64,
    /// Time spent in the records-upload handler (parse, validate, keep the
    /// records), microseconds: the sandbox's own share of an upload.
    #[serde(default)]
    pub records_handler_micros: u64,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub audience_id: String,
    pub polls_left: u32,
    pub final_state: JobState,
    pub invalid: Vec<InvalidRecord>,
    pub records: usize,
}

#[derive(Debug)]
pub(crate) struct AuthCode {
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub faults: Faults,
    pub access_tokens: HashMap<String, Instant>,
    pub codes: HashMap<String, AuthCode>,
    /// Refresh tokens LWA accepts (the configured one plus one per code grant).
    pub refresh_tokens: std::collections::HashSet<String>,
    /// See [`SandboxOptions::auto_approve`] (changeable at run time).
    pub auto_approve: bool,
    /// See [`SandboxOptions::code_ttl`] (changeable at run time).
    pub code_ttl: Duration,
    pub audiences: BTreeMap<String, serde_json::Value>,
    pub next_audience_id: u128,
    pub jobs: HashMap<String, Job>,
    pub received: BTreeMap<String, Vec<ReceivedRecord>>,
    pub raw_bodies: Vec<Bytes>,
    pub stats: SandboxStats,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub token_ttl: Duration,
    pub job_pending_polls: u32,
    pub invalid_user: Option<regex::Regex>,
    pub reject_user: Option<regex::Regex>,
    pub keep_raw_bodies: bool,
    pub max_body_bytes: usize,
    pub allowed_return_urls: Vec<String>,
    pub state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Random lowercase hex (`2 * bytes` characters).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running sandbox. Dropping it stops the server.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts a sandbox on the current Tokio runtime.
///
/// # Panics
/// If the address cannot be bound or the invalid-user pattern is not a
/// regex (use [`try_start`] to handle those).
pub async fn start(opts: SandboxOptions) -> Sandbox {
    try_start(opts).await.expect("start the sandbox")
}

/// Starts a sandbox; errors when the address cannot be bound or the
/// invalid-user pattern is not a valid regex.
///
/// # Errors
/// The bind error, or `InvalidInput` for a bad pattern.
pub async fn try_start(opts: SandboxOptions) -> std::io::Result<Sandbox> {
    let invalid_user =
        match &opts.invalid_user_pattern {
            Some(p) => Some(regex::Regex::new(p).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?),
            None => None,
        };
    let reject_user =
        match &opts.reject_user_pattern {
            Some(p) => Some(regex::Regex::new(p).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?),
            None => None,
        };
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let refresh_token = opts
        .refresh_token
        .unwrap_or_else(|| format!("Atzr|sandbox-{}", random_hex(24)));
    let shared = Arc::new(Shared {
        client_id: opts
            .client_id
            .unwrap_or_else(|| format!("amzn1.application-oa2-client.sandbox{}", random_hex(12))),
        client_secret: opts
            .client_secret
            .unwrap_or_else(|| format!("amzn1.oa2-cs.v1.sandbox{}", random_hex(24))),
        refresh_token: refresh_token.clone(),
        token_ttl: opts.token_ttl,
        job_pending_polls: opts.job_pending_polls,
        invalid_user,
        reject_user,
        keep_raw_bodies: opts.keep_raw_bodies,
        max_body_bytes: opts.max_body_bytes,
        allowed_return_urls: opts.allowed_return_urls,
        state: Mutex::new(State {
            faults: opts.faults,
            next_audience_id: opts.first_audience_id,
            refresh_tokens: std::iter::once(refresh_token).collect(),
            auto_approve: opts.auto_approve,
            code_ttl: opts.code_ttl,
            ..State::default()
        }),
    });
    let router = api::router(shared.clone());
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, router, shared.clone(), stop_rx));
    Ok(Sandbox {
        addr,
        shared,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

impl Sandbox {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` — the API base URL (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `<base>/auth/o2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/auth/o2/token", self.base_url())
    }

    /// `<base>/ap/oa`.
    pub fn authorize_url(&self) -> String {
        format!("{}/ap/oa", self.base_url())
    }

    /// The LWA client id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The LWA client secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// The pre-consented test user's refresh token.
    pub fn refresh_token(&self) -> &str {
        &self.shared.refresh_token
    }

    /// Revokes every refresh token issued so far (a user removing the app's
    /// access): refreshes then answer `invalid_grant`. Returns how many.
    pub fn revoke_refresh_tokens(&self) -> usize {
        let mut st = self.shared.lock();
        let n = st.refresh_tokens.len();
        st.refresh_tokens.clear();
        st.access_tokens.clear();
        n
    }

    /// Switches auto-approval of `GET /ap/oa` (off: a consent page).
    pub fn set_auto_approve(&self, on: bool) {
        self.shared.lock().auto_approve = on;
    }

    /// Sets the lifetime of authorization codes issued from now on.
    pub fn set_code_ttl(&self, ttl: Duration) {
        self.shared.lock().code_ttl = ttl;
    }

    /// The credentials, ready for [`crate::amazon::AmazonClient::new`].
    pub fn credentials(&self) -> Credentials {
        Credentials {
            client_id: self.shared.client_id.clone(),
            client_secret: Secret::new(self.shared.client_secret.clone()),
            refresh_token: Secret::new(self.shared.refresh_token.clone()),
        }
    }

    /// Every accepted record, by audience id (digits), in arrival order.
    pub fn received(&self) -> BTreeMap<String, Vec<ReceivedRecord>> {
        self.shared.lock().received.clone()
    }

    /// Number of accepted records over all audiences.
    pub fn received_count(&self) -> usize {
        self.shared.lock().received.values().map(Vec::len).sum()
    }

    /// Raw bodies of accepted records uploads (only with
    /// [`SandboxOptions::keep_raw_bodies`]).
    pub fn raw_bodies(&self) -> Vec<Bytes> {
        self.shared.lock().raw_bodies.clone()
    }

    /// Audiences created so far, by id: their metadata as last written
    /// (`name`, `description`, `targetResource`, `countryCode`, `metadata`).
    pub fn audiences(&self) -> BTreeMap<String, serde_json::Value> {
        self.shared.lock().audiences.clone()
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Edits the faults in place.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }

    /// Counters.
    pub fn stats(&self) -> SandboxStats {
        self.shared.lock().stats.clone()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The one-line JSON description of a running sandbox:
/// `{"base_url","token_url","authorize_url","client_id","client_secret","refresh_token"}`.
/// (The credentials are the sandbox's own test values, not real secrets.)
pub fn startup_line(sb: &Sandbox) -> String {
    serde_json::json!({
        "base_url": sb.base_url(),
        "token_url": sb.token_url(),
        "authorize_url": sb.authorize_url(),
        "client_id": sb.client_id(),
        "client_secret": sb.client_secret(),
        "refresh_token": sb.refresh_token(),
    })
    .to_string()
}

/// Prints [`startup_line`] to stdout and flushes (for `amc-sync sandbox`).
pub fn print_startup_line(sb: &Sandbox) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", startup_line(sb));
    let _ = out.flush();
}
