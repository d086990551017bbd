//! Interactive Login with Amazon (DESIGN.md 4.6, 4.7): the authorization-code
//! grant with `state` and PKCE, a loopback redirect, verification with
//! `GET /v2/profiles`, and the secrets saved to the keychain.
//!
//! One [`LoginManager`] serves both front ends:
//! * the agent's admin API (`POST /api/login/start`, `GET /api/login/callback`,
//!   `GET /api/login/status`) for the tray app and the dashboard;
//! * `amc-sync login` when no agent runs: the CLI listens on the redirect
//!   URI's loopback port itself for the one callback.
//!
//! Rules ([`crate::amazon::lwa`] cites them): a fresh 256-bit `state` and
//! PKCE verifier per attempt; the callback must present a pending `state`
//! (compared in constant time) and is accepted once; pending attempts expire
//! after [`LOGIN_TIMEOUT`]; the code (valid 5 minutes at Amazon, single use)
//! is exchanged with the same `redirect_uri`, the client secret and the
//! verifier; only credentials that list profiles are saved.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::credentials::{self, Connection, CredentialsError, NewLogin, ProfileSummary};
use crate::amazon::lwa::{self, AuthorizeRequest, CallbackParams, CodeExchange, LwaError, Pkce};
use crate::amazon::{AmazonClient, ApiError, ClientOptions, Credentials, Secret};
use crate::config::{Config, Region};
use crate::secrets::SecretChoice;

/// How long a started login waits for its callback: 10 minutes.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Most logins pending at once (older ones are dropped first).
const MAX_PENDING: usize = 16;

/// Why a login failed. Messages never contain the code, verifier, secrets
/// or tokens; [`LoginError::code`] gives the admin API's stable code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No client id / client secret given and none stored.
    #[error(
        "the LWA client id and client secret of your security profile are needed for the first login"
    )]
    MissingClient,
    /// An invalid argument (region, client id, scope, redirect URI).
    #[error("{0}")]
    Invalid(String),
    /// The callback's `state` is not one this agent started, or was already used.
    #[error(
        "the login response does not belong to a login started here (wrong or reused state); start the login again"
    )]
    StateMismatch,
    /// The login was started more than [`LOGIN_TIMEOUT`] ago.
    #[error("the login attempt expired after 10 minutes; start it again")]
    Expired,
    /// Amazon redirected with an error (`access_denied` when the user cancelled).
    #[error("Amazon did not grant access ({error}){}", if .description.is_empty() { String::new() } else { format!(": {}", .description) })]
    Denied {
        /// LWA's `error`.
        error: String,
        /// LWA's `error_description`.
        description: String,
    },
    /// The callback carried neither a code nor an error.
    #[error("the login response has no authorization code")]
    MissingCode,
    /// The code exchange failed (expired or reused code, bad verifier,
    /// wrong client secret, unreachable endpoint).
    #[error(transparent)]
    Exchange(#[from] LwaError),
    /// The new credentials could not list profiles (`GET /v2/profiles`).
    #[error("the new credentials were not accepted by the Amazon Ads API (GET /v2/profiles): {0}")]
    Profiles(ApiError),
    /// Saving failed.
    #[error("saving the login: {0}")]
    Save(#[from] CredentialsError),
}

impl LoginError {
    /// Stable code for JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            LoginError::MissingClient => "login_client_missing",
            LoginError::Invalid(_) => "invalid_field",
            LoginError::StateMismatch => "login_state_mismatch",
            LoginError::Expired => "login_expired",
            LoginError::Denied { .. } => "login_denied",
            LoginError::MissingCode => "login_failed",
            LoginError::Exchange(_) => "login_code_rejected",
            LoginError::Profiles(_) => "login_not_verified",
            LoginError::Save(_) => "login_not_saved",
        }
    }
}

struct Pending {
    state: String,
    region: Region,
    client_id: String,
    client_secret: Secret,
    scope: String,
    redirect_uri: String,
    verifier: Secret,
    started: Instant,
}

/// A started login.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// Open this in a browser.
    pub authorize_url: String,
    /// The attempt's `state` (poll [`LoginManager::outcome`] with it).
    pub state: String,
    /// The redirect URI Amazon will send the browser to.
    pub redirect_uri: String,
    /// Seconds before the attempt expires.
    pub expires_in_secs: u64,
    /// The region being logged into.
    pub region: Region,
}

/// A completed login.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    /// The region logged into (now the active region).
    pub region: Region,
    /// Profiles found in that region.
    pub profiles: Vec<ProfileSummary>,
    /// Where the secrets went (`keychain` or `file`).
    pub secret_store: Option<crate::secrets::SecretBackend>,
    /// Set when the 0600 file fallback was used.
    pub secret_store_warning: Option<String>,
}

/// Outcome of an attempt, for `GET /api/login/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Waiting for the browser.
    Pending,
    /// Logged in.
    Ok {
        /// What was saved.
        #[serde(flatten)]
        completed: Completed,
    },
    /// Failed.
    Error {
        /// Stable code.
        code: String,
        /// Human text.
        message: String,
    },
    /// No such attempt (never started, or forgotten).
    Unknown,
}

/// What a new login needs.
#[derive(Debug, Default, Clone)]
pub struct StartRequest {
    /// Region to log into (default: the active one).
    pub region: Option<Region>,
    /// LWA client id (default: the stored one, else the config's `client_id`).
    pub client_id: Option<String>,
    /// LWA client secret (default: the stored one).
    pub client_secret: Option<Secret>,
    /// Scope (default: the config's, else `advertising::campaign_management`).
    pub scope: Option<String>,
}

/// Runs interactive logins for one data dir.
pub struct LoginManager {
    data_dir: PathBuf,
    config: Config,
    choice: SecretChoice,
    http: reqwest::Client,
    pending: Mutex<Vec<Pending>>,
    outcomes: Mutex<HashMap<String, Outcome>>,
    on_change: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The port of the agent serving the callback, when logins run inside it.
    listen_port: Option<u16>,
}

impl std::fmt::Debug for LoginManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginManager")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl LoginManager {
    /// A manager for `data_dir` with the URLs, redirect URI and scope of
    /// `config` (its `region` is the default region).
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(
        data_dir: PathBuf,
        config: Config,
        choice: SecretChoice,
    ) -> Result<LoginManager, LoginError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("amc-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LoginError::Exchange(LwaError::Transport(e.to_string())))?;
        Ok(LoginManager {
            data_dir,
            config,
            choice,
            http,
            pending: Mutex::new(Vec::new()),
            outcomes: Mutex::new(HashMap::new()),
            on_change: None,
            listen_port: None,
        })
    }

    /// Calls `f` after every saved login (the agent reloads its client).
    pub fn on_change(mut self, f: Arc<dyn Fn() + Send + Sync>) -> LoginManager {
        self.on_change = Some(f);
        self
    }

    /// Logins run inside an agent listening on `port`: a redirect URI on
    /// another port is refused at start (the answer would never arrive).
    pub fn with_listen_port(mut self, port: u16) -> LoginManager {
        self.listen_port = Some(port);
        self
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The configuration in use (default region, URLs, redirect URI).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config with `region` in force (hosts follow the region unless
    /// overridden, e.g. by the sandbox's base URL).
    pub fn config_for(&self, region: Region) -> Config {
        let mut c = self.config.clone();
        c.region = region;
        c
    }

    /// The region in force (connection, else config).
    pub fn active_region(&self) -> Region {
        Connection::load(&self.data_dir)
            .map(|c| c.active_region(self.config.region))
            .unwrap_or(self.config.region)
    }

    /// Starts a login: a fresh `state` and PKCE pair, the authorization URL.
    ///
    /// # Errors
    /// [`LoginError::MissingClient`] when no client id/secret is given or
    /// stored; [`LoginError::Invalid`] for a bad client id or scope.
    pub fn start(&self, req: StartRequest) -> Result<Started, LoginError> {
        let region = req.region.unwrap_or_else(|| self.active_region());
        let stored = credentials::stored_client(&self.data_dir)?;
        let client_id = req
            .client_id
            .filter(|c| !c.trim().is_empty())
            .or_else(|| stored.as_ref().map(|(id, _)| id.clone()))
            .or_else(|| self.config.client_id.clone())
            .ok_or(LoginError::MissingClient)?;
        let client_id = client_id.trim().to_string();
        if client_id.len() > 256 || client_id.chars().any(|c| c.is_control() || c == ' ') {
            return Err(LoginError::Invalid(
                "clientId must be the security profile's client id (amzn1.application-oa2-client.…)"
                    .into(),
            ));
        }
        let client_secret = match req.client_secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => match stored {
                Some((id, s)) if id == client_id => s,
                _ => return Err(LoginError::MissingClient),
            },
        };
        let scope = req
            .scope
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.config.effective_scope().to_string());
        if scope.chars().any(char::is_control) {
            return Err(LoginError::Invalid("scope must be printable".into()));
        }
        let redirect_uri = self.config.effective_redirect_uri();
        if let Some(port) = self.listen_port
            && crate::config::validate_redirect_uri(&redirect_uri)
                .is_ok_and(|(addr, _)| addr.port() != port)
        {
            return Err(LoginError::Invalid(format!(
                "redirect_uri {redirect_uri} does not point at this agent (port {port}): Amazon's \
                 answer would not arrive. Set redirect_uri to http://127.0.0.1:{port}/api/login/callback \
                 (and register it in the security profile), or run the agent on that port"
            )));
        }
        let pkce = Pkce::generate()?;
        let state = lwa::new_state()?;
        let cfg = self.config_for(region);
        let authorize_url = AuthorizeRequest {
            authorize_url: &cfg.effective_authorize_url(),
            client_id: &client_id,
            scope: &scope,
            redirect_uri: &redirect_uri,
            state: &state,
            code_challenge: &pkce.challenge,
        }
        .url();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|p| p.started.elapsed() < LOGIN_TIMEOUT);
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
        }
        pending.push(Pending {
            state: state.clone(),
            region,
            client_id,
            client_secret,
            scope,
            redirect_uri: redirect_uri.clone(),
            verifier: pkce.verifier,
            started: Instant::now(),
        });
        drop(pending);
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(state.clone(), Outcome::Pending);
        tracing::info!(region = region.as_str(), "Login with Amazon started");
        Ok(Started {
            authorize_url,
            state,
            redirect_uri,
            expires_in_secs: LOGIN_TIMEOUT.as_secs(),
            region,
        })
    }

    /// Cancels every pending attempt (logout): a later callback for one of
    /// them is refused, and its outcome says it was cancelled.
    pub fn cancel_all(&self) {
        let cancelled: Vec<String> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .map(|p| p.state)
            .collect();
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        for s in cancelled {
            outcomes.insert(
                s,
                Outcome::Error {
                    code: "login_cancelled".into(),
                    message: "the login was cancelled by a logout".into(),
                },
            );
        }
    }

    /// The outcome of the attempt with this `state`.
    pub fn outcome(&self, state: &str) -> Outcome {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(k, _)| lwa::same_state(k, state))
            .map_or(Outcome::Unknown, |(_, v)| v.clone())
    }

    /// Handles the redirect's query string: checks `state`, exchanges the
    /// code, verifies with `GET /v2/profiles`, saves the secrets and the
    /// connection, and tells the agent.
    ///
    /// # Errors
    /// [`LoginError`]; the attempt is consumed either way.
    pub async fn complete(&self, query: &str) -> Result<Completed, LoginError> {
        let params = lwa::parse_callback(query);
        let state = match &params {
            CallbackParams::Code { state, .. }
            | CallbackParams::Error { state, .. }
            | CallbackParams::Invalid { state } => state.clone(),
        };
        let result = self.complete_inner(params, &state).await;
        if !state.is_empty() {
            let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = outcomes
                .iter_mut()
                .find(|(k, _)| lwa::same_state(k, &state))
                .map(|(_, v)| v)
                // A replayed callback (reloaded tab) must not turn a finished
                // attempt into an error; a stray one without a code leaves it pending.
                .filter(|v| matches!(v, Outcome::Pending))
                .filter(|_| !matches!(result, Err(LoginError::MissingCode)))
            {
                *slot = match &result {
                    Ok(c) => Outcome::Ok {
                        completed: c.clone(),
                    },
                    Err(e) => Outcome::Error {
                        code: e.code().to_string(),
                        message: e.to_string(),
                    },
                };
            }
            if outcomes.len() > 4 * MAX_PENDING {
                outcomes.retain(|_, v| matches!(v, Outcome::Pending));
            }
        }
        match &result {
            Ok(c) => tracing::info!(
                region = c.region.as_str(),
                profiles = c.profiles.len(),
                "Login with Amazon completed"
            ),
            Err(e) => tracing::warn!(code = e.code(), error = %e, "Login with Amazon failed"),
        }
        result
    }

    fn take_pending(&self, state: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let i = pending
            .iter()
            .position(|p| !state.is_empty() && lwa::same_state(&p.state, state))?;
        Some(pending.remove(i))
    }

    async fn complete_inner(
        &self,
        params: CallbackParams,
        state: &str,
    ) -> Result<Completed, LoginError> {
        if matches!(params, CallbackParams::Invalid { .. }) {
            // Not an answer from Amazon: the attempt stays pending.
            let known = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|p| !state.is_empty() && lwa::same_state(&p.state, state));
            return Err(if known {
                LoginError::MissingCode
            } else {
                LoginError::StateMismatch
            });
        }
        let pending = self.take_pending(state).ok_or(LoginError::StateMismatch)?;
        if pending.started.elapsed() >= LOGIN_TIMEOUT {
            return Err(LoginError::Expired);
        }
        let code = match params {
            CallbackParams::Code { code, .. } => code,
            CallbackParams::Error {
                error, description, ..
            } => return Err(LoginError::Denied { error, description }),
            CallbackParams::Invalid { .. } => return Err(LoginError::MissingCode),
        };
        let cfg = self.config_for(pending.region);
        let tokens = CodeExchange {
            token_url: &cfg.effective_token_url(),
            code: &code,
            redirect_uri: &pending.redirect_uri,
            code_verifier: &pending.verifier,
            client_id: &pending.client_id,
            client_secret: &pending.client_secret,
        }
        .send(&self.http)
        .await?;
        let creds = Credentials {
            client_id: pending.client_id.clone(),
            client_secret: pending.client_secret.clone(),
            refresh_token: tokens.refresh_token.unwrap_or_default(),
        };
        let client = AmazonClient::new(&ClientOptions::from_config(&cfg), creds.clone())
            .map_err(LoginError::Profiles)?;
        let profiles = client.list_profiles().await.map_err(LoginError::Profiles)?;
        let profiles: Vec<ProfileSummary> = profiles.iter().map(ProfileSummary::from).collect();
        let conn = credentials::save_login(
            &self.data_dir,
            &NewLogin {
                region: pending.region,
                credentials: &creds,
                scope: &pending.scope,
                profiles: profiles.clone(),
            },
            self.choice,
        )?;
        if let Some(f) = &self.on_change {
            f();
        }
        Ok(Completed {
            region: pending.region,
            profiles,
            secret_store: conn.secret_store,
            secret_store_warning: conn.secret_store_warning,
        })
    }
}

/// The HTML page the browser shows after the redirect (no secrets; the
/// message is escaped).
pub fn callback_page(result: &Result<Completed, LoginError>) -> String {
    let (title, body) = match result {
        Ok(c) => (
            "Connected to Amazon Ads".to_string(),
            format!(
                "AMC Sync is connected to Amazon Ads ({}) and found {} advertising profile(s). \
                 You can close this tab.",
                c.region.as_str(),
                c.profiles.len()
            ),
        ),
        Err(e) => ("Login failed".to_string(), e.to_string()),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>AMC Sync — {t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em\">\
         <h1 id=\"login-result\" data-ok=\"{ok}\">{t}</h1><p>{b}</p></body></html>",
        t = html_escape(&title),
        b = html_escape(&body),
        ok = result.is_ok()
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

// ------------------------------------------------------------------ admin API

/// Checks a request before a handler runs; `Err` is the ready refusal.
#[allow(clippy::result_large_err)]
pub type Guard =
    Arc<dyn Fn(&axum::http::HeaderMap) -> Result<(), axum::response::Response> + Send + Sync>;

/// State of the login routes of the admin API (docs/admin-api.md,
/// "Connection").
#[derive(Clone)]
pub struct LoginRoutes {
    /// The login manager of this data dir.
    pub manager: Arc<LoginManager>,
    /// The engine (reload after logout / region switch; auth state).
    pub sync: crate::sync::engine::SyncHandle,
    /// Admin checks: loopback Host, Origin, Bearer admin token.
    pub guard: Guard,
    /// Host/Origin checks only (the browser redirect carries no token).
    pub host_guard: Guard,
}

impl std::fmt::Debug for LoginRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRoutes").finish_non_exhaustive()
    }
}

/// The connection as the admin API shows it (`GET /api/connection`): no secrets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    /// `ok`, `needs_login` or `no_credentials`.
    pub state: &'static str,
    /// The active region.
    pub region: Region,
    /// The LWA client id, when stored or configured.
    pub client_id: Option<String>,
    /// Whether a client secret is stored (a new login can reuse it).
    pub client_secret_stored: bool,
    /// The scope of the last login (else the configured one).
    pub scope: String,
    /// Profiles found at the last login in the active region.
    pub profiles: Vec<ProfileSummary>,
    /// `keychain`, `file` or `environment`.
    pub secret_store: Option<&'static str>,
    /// Why the 0600 file is used instead of the keychain.
    pub secret_store_warning: Option<String>,
    /// Last login in the active region, ms since the epoch.
    pub logged_in_at_ms: Option<i64>,
    /// Regions with a stored login.
    pub logged_in_regions: Vec<Region>,
    /// The redirect URI to register as an Allowed Return URL.
    pub redirect_uri: String,
    /// Why the stored login could not be read (a corrupt file; the next
    /// login or logout replaces it).
    pub problem: Option<String>,
}

impl LoginManager {
    /// The connection view; `auth` is the engine's current auth state.
    ///
    /// # Errors
    /// An unreadable connection file.
    pub fn view(
        &self,
        auth: crate::sync::engine::AuthState,
    ) -> Result<ConnectionView, CredentialsError> {
        use crate::sync::engine::AuthState;
        let mut problem = None;
        let conn = Connection::load(&self.data_dir).unwrap_or_else(|e| {
            problem = Some(e.to_string());
            Connection::default()
        });
        let region = conn.active_region(self.config.region);
        let loaded = credentials::load(&self.data_dir, self.config.region).unwrap_or_else(|e| {
            problem = Some(e.to_string());
            None
        });
        let state = match (&loaded, auth) {
            (None, _) => {
                if conn.regions.is_empty() {
                    "no_credentials"
                } else {
                    "needs_login"
                }
            }
            (Some(_), AuthState::NeedsLogin) => "needs_login",
            (Some(_), _) => "ok",
        };
        let login = conn.regions.get(&region);
        let secret_stored = match conn.store(&self.data_dir) {
            Some(s) => s.get(credentials::CLIENT_SECRET).is_ok_and(|v| v.is_some()),
            None => false,
        };
        Ok(ConnectionView {
            state,
            region,
            client_id: conn
                .client_id
                .clone()
                .or_else(|| self.config.client_id.clone()),
            client_secret_stored: secret_stored,
            scope: conn
                .scope
                .clone()
                .unwrap_or_else(|| self.config.effective_scope().to_string()),
            profiles: login.map(|l| l.profiles.clone()).unwrap_or_default(),
            secret_store: match &loaded {
                Some(l) if l.source == credentials::CredentialSource::Environment => {
                    Some("environment")
                }
                _ => conn.secret_store.map(crate::secrets::SecretBackend::as_str),
            },
            secret_store_warning: conn.secret_store_warning.clone(),
            logged_in_at_ms: login.map(|l| l.logged_in_at_ms),
            logged_in_regions: conn.regions.keys().copied().collect(),
            redirect_uri: self.config.effective_redirect_uri(),
            problem,
        })
    }
}

// The helpers return the ready-made error `Response` for an early return from
// the handler; boxing it would only add an allocation on the error path.
#[allow(clippy::result_large_err)]
mod routes {
    use axum::Router;
    use axum::extract::{Query, RawQuery, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde::Deserialize;
    use serde_json::json;

    use super::{LoginRoutes, StartRequest, callback_page};
    use crate::agent::credentials;
    use crate::amazon::Secret;
    use crate::config::Region;

    fn error(status: StatusCode, code: &str, message: &str) -> Response {
        (
            status,
            axum::Json(json!({"code": code, "message": message})),
        )
            .into_response()
    }

    fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(body).map_err(|e| {
            // Category only: the body may hold the client secret.
            let what = match e.classify() {
                serde_json::error::Category::Data => "unexpected field or type",
                _ => "invalid JSON",
            };
            error(StatusCode::BAD_REQUEST, "invalid_json", what)
        })
    }

    fn view(st: &LoginRoutes) -> Response {
        match st.manager.view(st.sync.status().auth) {
            Ok(v) => axum::Json(v).into_response(),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "connection_unreadable",
                &e.to_string(),
            ),
        }
    }

    async fn connection(State(st): State<LoginRoutes>, headers: HeaderMap) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        view(&st)
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct StartBody {
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_secret: Option<Secret>,
        #[serde(default)]
        scope: Option<String>,
    }

    fn parse_region(r: &str) -> Result<Region, Response> {
        r.parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"code": "invalid_field", "field": "region",
                    "message": "region must be NA, EU or FE"})),
            )
                .into_response()
        })
    }

    async fn start(
        State(st): State<LoginRoutes>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        let b: StartBody = match parse_json(&body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let region = match b.region.as_deref().map(parse_region).transpose() {
            Ok(r) => r,
            Err(r) => return r,
        };
        let req = StartRequest {
            region,
            client_id: b.client_id,
            client_secret: b.client_secret,
            scope: b.scope,
        };
        match st.manager.start(req) {
            Ok(s) => axum::Json(s).into_response(),
            Err(e @ super::LoginError::Invalid(_)) => (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"code": e.code(), "field": "clientId", "message": e.to_string()}),
                ),
            )
                .into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
        }
    }

    async fn callback(
        State(st): State<LoginRoutes>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
    ) -> Response {
        if let Err(r) = (st.host_guard)(&headers) {
            return r;
        }
        let result = st.manager.complete(q.as_deref().unwrap_or("")).await;
        let status = if result.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            callback_page(&result),
        )
            .into_response()
    }

    #[derive(Deserialize)]
    struct StatusQuery {
        #[serde(default)]
        state: String,
    }

    async fn login_status(
        State(st): State<LoginRoutes>,
        headers: HeaderMap,
        Query(q): Query<StatusQuery>,
    ) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        match st.manager.outcome(&q.state) {
            super::Outcome::Unknown => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no login with this state (never started here, or the agent restarted)",
            ),
            o => axum::Json(o).into_response(),
        }
    }

    async fn logout(State(st): State<LoginRoutes>, headers: HeaderMap) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        st.manager.cancel_all();
        match credentials::logout(st.manager.data_dir()) {
            Ok(out) => {
                st.sync.reload_credentials();
                tracing::info!(
                    secrets_removed = out.secrets_removed,
                    "logged out of Amazon Ads"
                );
                // AMC_SYNC_CLIENT_ID/_SECRET/_REFRESH_TOKEN in the agent's
                // environment still apply after a logout: say so.
                axum::Json(
                    json!({"loggedOut": true, "secretsRemoved": out.secrets_removed,
                    "environmentCredentials": credentials::from_env().is_some()}),
                )
                .into_response()
            }
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "logout_failed",
                &e.to_string(),
            ),
        }
    }

    async fn get_region(State(st): State<LoginRoutes>, headers: HeaderMap) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        axum::Json(json!({"region": st.manager.active_region()})).into_response()
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RegionBody {
        #[serde(default)]
        region: String,
    }

    async fn put_region(
        State(st): State<LoginRoutes>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        if let Err(r) = (st.guard)(&headers) {
            return r;
        }
        let b: RegionBody = match parse_json(&body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let region = match parse_region(&b.region) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if let Err(e) = credentials::set_region(st.manager.data_dir(), region) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "region_not_saved",
                &e.to_string(),
            );
        }
        tracing::info!(
            region = region.as_str(),
            "region switched; queued changes are kept"
        );
        st.sync.reload_credentials();
        view(&st)
    }

    /// The routes (merge into the agent's router).
    pub fn router(state: LoginRoutes) -> Router {
        Router::new()
            .route("/api/connection", get(connection))
            .route("/api/login/start", post(start))
            .route("/api/login/callback", get(callback))
            .route("/api/login/status", get(login_status))
            .route("/api/logout", post(logout))
            .route("/api/region", get(get_region).put(put_region))
            .with_state(state)
    }
}

pub use routes::router;
