//! Login with Amazon authorization-code grant with `state` and PKCE ([LWA],
//! [PKCE]).
//!
//! * **[LWA]** "Authorization Code Grant":
//!   <https://developer.amazon.com/docs/login-with-amazon/authorization-code-grant.html>
//!   and Amazon Ads "Create an authorization grant":
//!   <https://advertising.amazon.com/API/docs/en-us/guides/get-started/create-authorization-grant>.
//!   Authorization request `GET <authorize_url>?client_id=…&scope=…&response_type=code&redirect_uri=…&state=…`;
//!   the user is redirected to `redirect_uri?code=…&scope=…&state=…` or
//!   `redirect_uri?error=…&error_description=…&state=…`. The code is valid
//!   for 5 minutes and single use; it is exchanged with a form-encoded
//!   `POST <token_url>` (`grant_type=authorization_code`, `code`,
//!   `redirect_uri`, `client_id`, `client_secret`), **no `Authorization`
//!   header**.
//! * **[PKCE]** RFC 7636: `code_verifier` = 43–128 characters of
//!   `[A-Za-z0-9-._~]`; `code_challenge` = BASE64URL(SHA-256(verifier)) without
//!   padding, `code_challenge_method=S256`; the verifier goes with the token
//!   request. LWA supports PKCE for the authorization-code grant.
//! * **[STATE]** RFC 6749 §10.12: an unguessable `state` bound to the
//!   session, compared on the redirect, prevents login CSRF.

use base64::Engine as _;
use sha2::Digest as _;

use super::form;
use super::secret::scrub;
use super::{Secret, TokenResponse};

/// Scope Amazon Ads API access needs ([LWA], Amazon Ads "Create an
/// authorization grant").
pub const DEFAULT_SCOPE: &str = "advertising::campaign_management";

/// How long an authorization code is valid at Amazon ([LWA]): 300 seconds.
pub const CODE_LIFETIME_SECS: u64 = 300;

/// Errors of the authorization-code flow. Messages never contain the code,
/// the verifier, the client secret or tokens.
#[derive(Debug, thiserror::Error)]
pub enum LwaError {
    /// The OS random generator failed.
    #[error("cannot generate random bytes: {0}")]
    Random(String),
    /// LWA refused the token request (`error`, `error_description`): for the
    /// authorization-code grant `invalid_grant` means the code expired, was
    /// already used, was issued for another `redirect_uri`, or the PKCE
    /// verifier does not match; `invalid_client` means a wrong client id or
    /// secret.
    #[error("Login with Amazon refused the authorization code ({error}): {description}")]
    Refused {
        /// LWA's `error` (`invalid_grant`, `invalid_client`, …).
        error: String,
        /// LWA's `error_description`.
        description: String,
        /// HTTP status.
        status: u16,
    },
    /// The token endpoint could not be reached or answered garbage.
    #[error("Login with Amazon token endpoint: {0}")]
    Transport(String),
}

/// Fills `n` random bytes from the OS generator.
fn random_bytes(n: usize) -> Result<Vec<u8>, LwaError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| LwaError::Random(e.to_string()))?;
    Ok(b)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE pair ([PKCE] §4.1–4.2, method `S256`).
#[derive(Debug, Clone)]
pub struct Pkce {
    /// `code_verifier`: 43 characters of base64url (32 random bytes).
    pub verifier: Secret,
    /// `code_challenge` = BASE64URL(SHA-256(verifier)), 43 characters.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair from 32 random bytes.
    ///
    /// # Errors
    /// [`LwaError::Random`].
    pub fn generate() -> Result<Pkce, LwaError> {
        let verifier = b64url(&random_bytes(32)?);
        let challenge = challenge_for(&verifier);
        Ok(Pkce {
            verifier: Secret::new(verifier),
            challenge,
        })
    }
}

/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))` ([PKCE] §4.2).
pub fn challenge_for(verifier: &str) -> String {
    b64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// A fresh `state` value: 32 random bytes as base64url (43 characters).
///
/// # Errors
/// [`LwaError::Random`].
pub fn new_state() -> Result<String, LwaError> {
    Ok(b64url(&random_bytes(32)?))
}

/// Constant-time string equality (for `state`).
pub fn same_state(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The authorization request a browser opens ([LWA] + [PKCE]).
#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    /// `https://www.amazon.com/ap/oa` (NA), `https://eu.account.amazon.com/ap/oa`
    /// (EU), `https://apac.account.amazon.com/ap/oa` (FE), or the sandbox's.
    pub authorize_url: &'a str,
    /// The LWA security profile's client id.
    pub client_id: &'a str,
    /// Space-separated scopes ([`DEFAULT_SCOPE`]).
    pub scope: &'a str,
    /// An Allowed Return URL registered in the security profile.
    pub redirect_uri: &'a str,
    /// The anti-CSRF `state`.
    pub state: &'a str,
    /// The PKCE `code_challenge` (method S256).
    pub code_challenge: &'a str,
}

impl AuthorizeRequest<'_> {
    /// The full URL: `<authorize_url>?client_id=…&scope=…&response_type=code&redirect_uri=…&state=…&code_challenge=…&code_challenge_method=S256`.
    pub fn url(&self) -> String {
        let sep = if self.authorize_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}{}",
            self.authorize_url,
            form::encode(&[
                ("client_id", self.client_id),
                ("scope", self.scope),
                ("response_type", "code"),
                ("redirect_uri", self.redirect_uri),
                ("state", self.state),
                ("code_challenge", self.code_challenge),
                ("code_challenge_method", "S256"),
            ])
        )
    }
}

/// What came back on the redirect URI ([LWA] "Authorization Response").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackParams {
    /// `?code=…&state=…`.
    Code {
        /// The authorization code (single use, 5 minutes).
        code: Secret,
        /// The `state` echoed back.
        state: String,
    },
    /// `?error=…&error_description=…&state=…` (e.g. `access_denied` when the
    /// user clicked Cancel).
    Error {
        /// LWA's `error`.
        error: String,
        /// LWA's `error_description` (may be empty).
        description: String,
        /// The `state` echoed back (may be empty).
        state: String,
    },
    /// Neither a code nor an error.
    Invalid {
        /// The `state` echoed back (may be empty).
        state: String,
    },
}

/// Parses a redirect's query string (without the `?`).
pub fn parse_callback(query: &str) -> CallbackParams {
    let pairs = form::decode(query.as_bytes());
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let state = get("state").unwrap_or_default();
    if let Some(error) = get("error").filter(|e| !e.is_empty()) {
        return CallbackParams::Error {
            error,
            description: get("error_description").unwrap_or_default(),
            state,
        };
    }
    match get("code").filter(|c| !c.is_empty()) {
        Some(code) => CallbackParams::Code {
            code: Secret::new(code),
            state,
        },
        None => CallbackParams::Invalid { state },
    }
}

/// The token request of the authorization-code grant ([LWA], [PKCE] §4.5).
#[derive(Debug)]
pub struct CodeExchange<'a> {
    /// The LWA token endpoint.
    pub token_url: &'a str,
    /// The authorization code from the redirect.
    pub code: &'a Secret,
    /// The same `redirect_uri` the authorization request used.
    pub redirect_uri: &'a str,
    /// The PKCE verifier.
    pub code_verifier: &'a Secret,
    /// The security profile's client id.
    pub client_id: &'a str,
    /// The security profile's client secret.
    pub client_secret: &'a Secret,
}

impl CodeExchange<'_> {
    /// Posts the exchange and returns the tokens (the refresh token is
    /// required: without it there is nothing to keep).
    ///
    /// # Errors
    /// [`LwaError::Refused`] with LWA's error code; [`LwaError::Transport`].
    pub async fn send(&self, http: &reqwest::Client) -> Result<TokenResponse, LwaError> {
        let body = form::encode(&[
            ("grant_type", "authorization_code"),
            ("code", self.code.expose()),
            ("redirect_uri", self.redirect_uri),
            ("client_id", self.client_id),
            ("client_secret", self.client_secret.expose()),
            ("code_verifier", self.code_verifier.expose()),
        ]);
        let resp = http
            .post(self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| LwaError::Transport(super::ApiError::from_transport(&e).to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| LwaError::Transport(super::ApiError::from_transport(&e).to_string()))?;
        if status.is_success() {
            let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| {
                LwaError::Transport("unexpected token response (not the LWA JSON)".into())
            })?;
            if parsed.access_token.is_empty()
                || parsed.refresh_token.as_ref().is_none_or(Secret::is_empty)
            {
                return Err(LwaError::Transport(
                    "token response without access_token or refresh_token".into(),
                ));
            }
            return Ok(parsed);
        }
        let text = scrub(
            &String::from_utf8_lossy(&bytes),
            &[self.code, self.code_verifier, self.client_secret],
        );
        #[derive(serde::Deserialize, Default)]
        struct Body {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let b: Body = serde_json::from_str(&text).unwrap_or_default();
        if b.error.is_empty() && status.is_server_error() {
            return Err(LwaError::Transport(format!("HTTP {}", status.as_u16())));
        }
        Err(LwaError::Refused {
            error: if b.error.is_empty() {
                format!("HTTP {}", status.as_u16())
            } else {
                b.error
            },
            description: b.error_description.chars().take(300).collect(),
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        // RFC 7636 Appendix B test vector.
        assert_eq!(
            challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::generate().unwrap();
        assert_eq!(p.verifier.expose().len(), 43);
        assert!(
            p.verifier
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(p.challenge, challenge_for(p.verifier.expose()));
        assert_ne!(new_state().unwrap(), new_state().unwrap());
    }

    #[test]
    fn authorize_url_carries_every_parameter_encoded() {
        let url = AuthorizeRequest {
            authorize_url: "https://www.amazon.com/ap/oa",
            client_id: "amzn1.application-oa2-client.abc",
            scope: DEFAULT_SCOPE,
            redirect_uri: "http://127.0.0.1:8787/api/login/callback",
            state: "s-1",
            code_challenge: "ch",
        }
        .url();
        assert_eq!(
            url,
            "https://www.amazon.com/ap/oa?client_id=amzn1.application-oa2-client.abc\
             &scope=advertising%3A%3Acampaign_management&response_type=code\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A8787%2Fapi%2Flogin%2Fcallback\
             &state=s-1&code_challenge=ch&code_challenge_method=S256"
        );
    }

    #[test]
    fn callback_parsing_distinguishes_code_error_and_garbage() {
        assert_eq!(
            parse_callback("code=ANabc&scope=advertising%3A%3Acampaign_management&state=xyz"),
            CallbackParams::Code {
                code: Secret::new("ANabc"),
                state: "xyz".into()
            }
        );
        assert_eq!(
            parse_callback("error=access_denied&error_description=User+denied&state=xyz"),
            CallbackParams::Error {
                error: "access_denied".into(),
                description: "User denied".into(),
                state: "xyz".into()
            }
        );
        assert_eq!(
            parse_callback("state=xyz"),
            CallbackParams::Invalid {
                state: "xyz".into()
            }
        );
        assert_eq!(
            parse_callback(""),
            CallbackParams::Invalid {
                state: String::new()
            }
        );
        assert!(same_state("abc", "abc"));
        assert!(!same_state("abc", "abd"));
        assert!(!same_state("abc", "abcd"));
    }
}
