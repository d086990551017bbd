//! A client of the agent's own admin API over loopback HTTP
//! (docs/admin-api.md). The tray never duplicates the agent's logic: every
//! menu action is one of these calls.

use std::time::Duration;

use serde_json::Value;

use crate::status::AgentStatus;

/// Where the agent's admin API is and the token it requires.
#[derive(Clone)]
pub struct AdminClient {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A failed admin call: the agent's stable error code (or a local one such
/// as `unreachable`) and a message fit for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status, when the agent answered.
    pub status: Option<u16>,
    /// `code` from the agent's JSON error, else `unreachable` / `http_<status>`.
    pub code: String,
    /// Human-readable message (never contains the token).
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How long one admin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl AdminClient {
    /// A client for the agent at `base_url` (`http://127.0.0.1:8787`).
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS backend initialisation).
    pub fn new(base_url: &str, token: &str) -> Result<AdminClient, String> {
        let http = reqwest::Client::builder()
            .no_proxy() // loopback only: a system proxy must never see the token
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(AdminClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// The dashboard URL with the admin token in the fragment (never sent to
    /// the server).
    pub fn dashboard_url(&self) -> String {
        format!("{}/#token={}", self.base_url, self.token)
    }

    /// `GET /api/status`.
    ///
    /// # Errors
    /// The agent is unreachable or refused the call.
    pub async fn status(&self) -> Result<AgentStatus, ApiError> {
        let v = self.call(reqwest::Method::GET, "/api/status", None).await?;
        serde_json::from_value(v).map_err(|e| ApiError {
            status: None,
            code: "invalid_response".into(),
            message: format!("unexpected status from the agent: {e}"),
        })
    }

    /// `POST path` with an optional JSON body.
    ///
    /// # Errors
    /// The agent is unreachable or refused the call.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// `PUT path` with a JSON body.
    ///
    /// # Errors
    /// The agent is unreachable or refused the call.
    pub async fn put(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            // `.json` sets Content-Type: application/json, as the contract requires.
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| ApiError {
            status: None,
            code: "unreachable".into(),
            message: format!(
                "the agent did not answer: {}",
                e.without_url() // the URL holds no secret, but keep messages short
            ),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ApiError {
            status: Some(status.as_u16()),
            code: "unreachable".into(),
            message: format!("reading the agent's answer: {}", e.without_url()),
        })?;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(json);
        }
        let code = json
            .get("code")
            .and_then(Value::as_str)
            .map_or_else(|| format!("http_{}", status.as_u16()), str::to_string);
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{path}: HTTP {status}"), str::to_string);
        Err(ApiError {
            status: Some(status.as_u16()),
            code,
            message,
        })
    }
}
