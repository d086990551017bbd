//! The local admin API (DESIGN.md 4.8), on the agent's listener under
//! `/api/…`. So far: `GET /api/status` and `POST /api/flush[?wait=true]`; the
//! full set (audiences, dead letters, login, settings) arrives with the
//! dashboard issue.
//!
//! Protection: a per-install admin token (`Authorization: Bearer <token>`,
//! from the data dir's `agent.json`, readable only by the agent's user) and a
//! `Host` check (loopback names only), so neither another local user nor a
//! web page (DNS rebinding, CSRF) can drive the agent.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::store::WriterHandle;
use crate::sync::engine::SyncHandle;

/// Shared state of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    /// The admin bearer token.
    pub token: Arc<str>,
    /// The sync engine.
    pub sync: SyncHandle,
    /// The store (for job states).
    pub writer: WriterHandle,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// Longest `POST /api/flush?wait=true` (seconds).
pub const MAX_FLUSH_WAIT: Duration = Duration::from_secs(600);

/// The admin routes (merge into the agent's router).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/flush", post(flush))
        .route("/api/dead-letters/retry", post(retry_dead_letters))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// A refused admin request: status, stable code, message.
struct Refused(StatusCode, &'static str, &'static str);

impl Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Refused> {
    if !host_is_loopback(headers) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "the admin API answers loopback hosts only",
        ));
    }
    if headers.contains_key(header::ORIGIN) {
        // Browsers send Origin on cross-site requests; the CLI never does.
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        let ok = ["http://127.0.0.1", "http://localhost"]
            .iter()
            .any(|p| origin.starts_with(p));
        if !ok {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "cross-origin requests are refused",
            ));
        }
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.token.as_bytes();
    let ok = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok && !expected.is_empty() {
        Ok(())
    } else {
        Err(Refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        ))
    }
}

async fn status(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    axum::Json(state.sync.status()).into_response()
}

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
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let before = state.sync.rounds();
    state.sync.flush();
    if !q.wait {
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"flushing": true, "status": state.sync.status()})),
        )
            .into_response();
    }
    let timeout = Duration::from_secs(q.timeout.unwrap_or(120)).min(MAX_FLUSH_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    // Wait for the round to finish, then for its jobs to reach a terminal state.
    loop {
        let round_done = state.sync.rounds() > before;
        let w = state.writer.clone();
        let (open, pending) = tokio::task::spawn_blocking(move || {
            w.call(|s| {
                Ok((
                    s.open_jobs()?.len(),
                    s.pending_counts()?.values().sum::<u64>(),
                ))
            })
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or((0, 0));
        if round_done && open == 0 {
            return axum::Json(json!({
                "flushed": pending == 0,
                "pending": pending,
                "openJobs": 0,
                "status": state.sync.status()
            }))
            .into_response();
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                StatusCode::ACCEPTED,
                axum::Json(json!({"flushed": false, "pending": pending, "openJobs": open, "status": state.sync.status()})),
            )
                .into_response();
        }
        if round_done {
            state.sync.poll_jobs_now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("127.0.0.1:8787", true),
            ("localhost:8787", true),
            ("[::1]:8787", true),
            ("evil.example:8787", false),
            ("127.0.0.1.evil.example", false),
        ] {
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(host_is_loopback(&h), ok, "{host}");
        }
    }
}

#[derive(Debug, Deserialize)]
struct RetryBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ids: Option<Vec<i64>>,
}

async fn retry_dead_letters(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let Ok(req) = serde_json::from_slice::<RetryBody>(if body.is_empty() { b"{}" } else { &body })
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "expected {\"reason\"?, \"ids\"?}",
        );
    };
    let w = state.writer.clone();
    let result = tokio::task::spawn_blocking(move || {
        w.call(move |s| {
            let filter = crate::store::DeadLetterFilter {
                reason: req.reason,
                ..Default::default()
            };
            s.retry_dead_letters(&filter, req.ids.as_deref())
        })
    })
    .await;
    match result {
        Ok(Ok(out)) => {
            if out.requeued > 0 {
                state.sync.flush();
            }
            axum::Json(out).into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database could not be updated",
        ),
    }
}
