//! Classification of Amazon Ads API and LWA failures (DESIGN.md 4.6 "Errors").

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// What went wrong, classified by what the caller should do about it.
///
/// Messages never contain credentials: request headers and form bodies are
/// never formatted, and server messages are scrubbed of the known secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Try again later with backoff: HTTP 5xx, timeouts, connection
    /// refused/reset, a response that could not be read. [ERR]: 5xx are
    /// transient; DESIGN.md 4.6: unlimited retries with backoff.
    #[error("retryable failure: {0}")]
    Retryable(String),
    /// HTTP 429. [ERR]: honour `Retry-After` (delta-seconds or an HTTP-date,
    /// RFC 9110 §10.2.3) when present; otherwise back off exponentially.
    #[error("rate limited (HTTP 429){}", .retry_after.map(|d| format!(", retry after {} ms", d.as_millis())).unwrap_or_default())]
    RateLimited {
        /// The server's `Retry-After`, converted to a duration from now.
        retry_after: Option<Duration>,
    },
    /// HTTP 401 from the API even after one token refresh: the access token
    /// is not accepted (the client already refreshed once and retried).
    #[error("unauthorized (HTTP 401): {message}")]
    Unauthorized {
        /// Amazon's message, if any.
        message: String,
    },
    /// HTTP 400 with Amazon's `message`: the request (or a record in it) is
    /// invalid. DESIGN.md 4.6: split the batch to isolate bad records.
    #[error("invalid request (HTTP 400): {message}")]
    InvalidRequest {
        /// Amazon's `message` (or `details`) field, else the response text.
        message: String,
    },
    /// Any other 4xx (403, 404, 413, 415, …), or an unexpected response
    /// shape: retrying the same request will not help.
    #[error("permanent failure (HTTP {status}): {message}")]
    Permanent {
        /// HTTP status (0 when the failure is not an HTTP status).
        status: u16,
        /// What failed.
        message: String,
    },
    /// [LWA]: the token endpoint answered `invalid_grant` — the refresh token
    /// is revoked or expired. The user must log in again (`needs_login`).
    #[error("needs login: {message}")]
    NeedsLogin {
        /// LWA's `error_description`, if any.
        message: String,
    },
}

impl ApiError {
    /// True for failures worth retrying unchanged (`Retryable`, `RateLimited`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Retryable(_) | ApiError::RateLimited { .. })
    }

    /// The server-requested delay of a 429, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A stable snake_case code for status, metrics and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Retryable(_) => "retryable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Permanent { .. } => "permanent",
            ApiError::NeedsLogin { .. } => "needs_login",
        }
    }

    /// Classifies a transport error (no HTTP status): always retryable —
    /// timeouts, refused and reset connections, truncated responses.
    pub(crate) fn from_transport(e: &reqwest::Error) -> ApiError {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "response body could not be read"
        } else {
            "connection error"
        };
        // reqwest's Display names the URL only (never headers or bodies); add
        // the innermost cause ("connection reset", "connection closed before
        // message completed") for operators.
        let mut cause = String::new();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        if cause.is_empty() {
            ApiError::Retryable(format!("{kind}: {e}"))
        } else {
            ApiError::Retryable(format!("{kind}: {e}: {cause}"))
        }
    }

    /// Classifies an API response that is not a success. `body` is the
    /// response text (already scrubbed of secrets by the caller).
    pub(crate) fn from_status(
        status: StatusCode,
        retry_after: Option<&str>,
        body: &str,
    ) -> ApiError {
        let message = amazon_message(body);
        match status.as_u16() {
            429 => ApiError::RateLimited {
                retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
            },
            401 => ApiError::Unauthorized { message },
            400 => ApiError::InvalidRequest { message },
            s if status.is_server_error() => ApiError::Retryable(format!("HTTP {s}: {message}")),
            // 408 Request Timeout is a transport-level timeout.
            408 => ApiError::Retryable(format!("HTTP 408: {message}")),
            s => ApiError::Permanent { status: s, message },
        }
    }
}

/// Extracts Amazon's error text: `message`, else `details`, else `code`, else
/// the (truncated) body. [ERR]: Ads API errors are `{"code": …, "message"|"details": …}`.
pub(crate) fn amazon_message(body: &str) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["message", "details", "error_description", "error", "code"] {
            if let Some(serde_json::Value::String(s)) = map.get(key)
                && !s.is_empty()
            {
                return truncate(s, 1000);
            }
        }
    }
    truncate(body.trim(), 300)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an
/// HTTP-date converted to the delay from `now` (a date in the past → zero).
/// `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_are_classified() {
        let c = |s: u16, body: &str| {
            ApiError::from_status(StatusCode::from_u16(s).unwrap(), Some("3"), body)
        };
        assert_eq!(
            c(429, ""),
            ApiError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(c(500, ""), ApiError::Retryable(_)));
        assert!(matches!(c(503, ""), ApiError::Retryable(_)));
        assert!(matches!(c(401, ""), ApiError::Unauthorized { .. }));
        assert_eq!(
            c(400, r#"{"code":"400","message":"bad audienceId"}"#),
            ApiError::InvalidRequest {
                message: "bad audienceId".into()
            }
        );
        assert!(matches!(
            c(403, ""),
            ApiError::Permanent { status: 403, .. }
        ));
        assert!(matches!(
            c(404, ""),
            ApiError::Permanent { status: 404, .. }
        ));
        assert!(matches!(
            c(415, ""),
            ApiError::Permanent { status: 415, .. }
        ));
    }
}
