//! Secrets with redacted `Debug` (DESIGN.md 4.7: the LWA client secret,
//! refresh token and access tokens never appear in logs, errors or dumps).

use std::fmt;

/// A secret string (client secret, refresh token, access token).
///
/// `Debug` prints `Secret(***)`; there is no `Display` and no `Serialize`, so
/// a secret cannot end up in a log line, an error message or a config dump by
/// accident. Read it with [`Secret::expose`] only where it goes on the wire.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// LWA application credentials plus the user's refresh token.
///
/// `client_id` is public (it is sent as `Amazon-Advertising-API-ClientId` on
/// every call, [HDR]); the other two are [`Secret`]s.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// LWA security profile client id (`amzn1.application-oa2-client.…`).
    pub client_id: String,
    /// LWA client secret.
    pub client_secret: Secret,
    /// The user's LWA refresh token (`Atzr|…`).
    pub refresh_token: Secret,
}

/// Replaces every occurrence of a non-trivial secret in `text` by `***`
/// (defence in depth for messages echoed from a server).
pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.0.len() >= 4 && out.contains(s.0.as_str()) {
            out = out.replace(s.0.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("canary-123456");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let c = Credentials {
            client_id: "id".into(),
            client_secret: s.clone(),
            refresh_token: Secret::new("Atzr|canary"),
        };
        let d = format!("{c:?} {c:#?}");
        assert!(!d.contains("canary"), "{d}");
        assert_eq!(scrub("x canary-123456 y", &[&s]), "x *** y");
    }
}
