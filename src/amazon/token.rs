//! Login with Amazon access tokens: refresh, cache, single flight ([LWA]).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::amazon_message;
use super::secret::scrub;
use super::{ApiError, Credentials, Secret, form};

/// Refresh this long before the token's `expires_in` runs out (clamped to half
/// the token's lifetime, so short-lived sandbox tokens are still cached).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// [LWA] successful token response:
/// `{"access_token":"Atza|…","refresh_token":"Atzr|…","token_type":"bearer","expires_in":3600}`.
#[derive(Deserialize)]
pub struct TokenResponse {
    /// The access token (`Atza|…`).
    pub access_token: Secret,
    /// The refresh token (returned by both grants; unchanged on refresh).
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// `bearer`.
    #[serde(default)]
    pub token_type: String,
    /// Lifetime in seconds (3,600).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

fn default_expires_in() -> u64 {
    3600
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    /// When to stop using it (expiry minus the margin).
    refresh_at: Instant,
}

/// Obtains and caches LWA access tokens for one set of [`Credentials`].
///
/// * [LWA] refresh: `POST <token_url>` with
///   `Content-Type: application/x-www-form-urlencoded` and the form
///   `grant_type=refresh_token&refresh_token=…&client_id=…&client_secret=…`;
///   **no `Authorization` header** (the LWA endpoint rejects requests that
///   carry one).
/// * The token is reused until [`DEFAULT_REFRESH_MARGIN`] before its
///   `expires_in` (3,600 s at Amazon).
/// * Single flight: concurrent callers needing a token wait for one refresh.
/// * `invalid_grant` → [`ApiError::NeedsLogin`]; 429 / 5xx / transport errors
///   are retryable; other failures ( `invalid_client`, …) are permanent.
#[derive(Debug)]
pub struct TokenManager {
    http: reqwest::Client,
    token_url: String,
    credentials: Credentials,
    margin: Duration,
    cached: Mutex<Option<Cached>>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl TokenManager {
    /// A manager posting to `token_url` (e.g. [`crate::config::Region::token_url`]
    /// or `Config::effective_token_url`).
    pub fn new(
        http: reqwest::Client,
        token_url: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        TokenManager {
            http,
            token_url: token_url.into(),
            credentials,
            margin: DEFAULT_REFRESH_MARGIN,
            cached: Mutex::new(None),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Overrides the refresh margin (default 60 s).
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The LWA client id (sent as `Amazon-Advertising-API-ClientId`).
    pub fn client_id(&self) -> &str {
        &self.credentials.client_id
    }

    /// The token endpoint in use.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// How many successful refreshes this manager has made.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid access token: the cached one, or a fresh one (one refresh at a
    /// time; callers arriving during a refresh get its result).
    ///
    /// # Errors
    /// [`ApiError::NeedsLogin`] on `invalid_grant`; retryable and permanent
    /// errors as classified for the token endpoint.
    pub async fn access_token(&self) -> Result<Secret, ApiError> {
        let mut guard = self.cached.lock().await;
        if let Some(c) = guard.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        *guard = None;
        let resp = self.refresh().await?;
        let lifetime = Duration::from_secs(resp.expires_in);
        let margin = self.margin.min(lifetime / 2);
        let token = resp.access_token;
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        Ok(token)
    }

    /// Forgets `token` if it is still the cached one (after the API answered
    /// 401 to it), so the next [`Self::access_token`] refreshes. Concurrent
    /// callers that saw the same 401 cause a single refresh.
    pub async fn invalidate(&self, token: &Secret) {
        let mut guard = self.cached.lock().await;
        if guard.as_ref().is_some_and(|c| &c.token == token) {
            *guard = None;
        }
    }

    /// Exchanges the refresh token for a new access token ([LWA]).
    async fn refresh(&self) -> Result<TokenResponse, ApiError> {
        let c = &self.credentials;
        let body = form::encode(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", c.refresh_token.expose()),
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose()),
        ]);
        let resp = self
            .http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ApiError::from_transport(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::from_transport(&e))?;
        let secrets = [&c.client_secret, &c.refresh_token];
        if status.is_success() {
            let parsed: TokenResponse =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Permanent {
                    status: status.as_u16(),
                    message: format!("unexpected LWA token response: {}", e.classify_name()),
                })?;
            if parsed.access_token.is_empty() {
                return Err(ApiError::Permanent {
                    status: status.as_u16(),
                    message: "LWA token response without access_token".into(),
                });
            }
            self.refreshes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(parsed);
        }
        let text = scrub(&String::from_utf8_lossy(&bytes), &secrets);
        #[derive(Deserialize)]
        struct LwaError {
            #[serde(default)]
            error: String,
        }
        let code = serde_json::from_str::<LwaError>(&text)
            .map(|e| e.error)
            .unwrap_or_default();
        if code == "invalid_grant" {
            return Err(ApiError::NeedsLogin {
                message: format!(
                    "the refresh token was rejected (invalid_grant): {}",
                    amazon_message(&text)
                ),
            });
        }
        match ApiError::from_status(status, retry_after.as_deref(), &text) {
            // A 400/401 from the token endpoint (invalid_client,
            // unauthorized_client, invalid_request): the stored credentials
            // are wrong or were rotated. Retrying cannot fix it; the user must
            // log in again, exactly as for invalid_grant.
            ApiError::InvalidRequest { message } | ApiError::Unauthorized { message } => {
                Err(ApiError::NeedsLogin {
                    message: format!(
                        "Login with Amazon refused the client id or client secret ({}): {message}",
                        if code.is_empty() {
                            "no error code"
                        } else {
                            code.as_str()
                        }
                    ),
                })
            }
            other => Err(other),
        }
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The category only: a JSON error message may quote the input.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}
