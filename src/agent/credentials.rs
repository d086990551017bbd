//! Where the agent gets its Login with Amazon credentials (DESIGN.md 4.7).
//!
//! Order: the environment (`AMC_SYNC_CLIENT_ID`, `AMC_SYNC_CLIENT_SECRET`,
//! `AMC_SYNC_REFRESH_TOKEN`, all three set), else the data dir's
//! `credentials.json`, written by `amc-sync login --from-env` with mode 0600
//! inside the 0700 data dir. That file is DESIGN.md's documented fallback
//! for machines without an OS keychain; the keychain itself (`keyring`)
//! arrives with the login issue. The file lives in the data dir rather than
//! the config dir so that two agents with different data dirs can hold
//! different Amazon accounts. Secrets never reach SQLite, logs or `--json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::amazon::{Credentials, Secret};

/// File name inside the data dir.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// Environment variable: LWA client id.
pub const ENV_CLIENT_ID: &str = "AMC_SYNC_CLIENT_ID";
/// Environment variable: LWA client secret.
pub const ENV_CLIENT_SECRET: &str = "AMC_SYNC_CLIENT_SECRET";
/// Environment variable: LWA refresh token.
pub const ENV_REFRESH_TOKEN: &str = "AMC_SYNC_REFRESH_TOKEN";

/// Errors reading or writing the credentials file. Messages never contain
/// the secrets.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("{path}: unreadable credentials file (re-run `amc-sync login`)")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

/// Where the credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// The `AMC_SYNC_*` environment variables.
    Environment,
    /// `<data dir>/credentials.json` (0600).
    File,
}

/// Credentials from the environment, when all three variables are set and non-empty.
pub fn from_env() -> Option<Credentials> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Some(Credentials {
        client_id: get(ENV_CLIENT_ID)?,
        client_secret: Secret::new(get(ENV_CLIENT_SECRET)?),
        refresh_token: Secret::new(get(ENV_REFRESH_TOKEN)?),
    })
}

/// The credentials in force for `data_dir`: environment first, then the file.
///
/// # Errors
/// An unreadable or corrupt credentials file.
pub fn load(data_dir: &Path) -> Result<Option<(Credentials, CredentialSource)>, CredentialsError> {
    if let Some(c) = from_env() {
        return Ok(Some((c, CredentialSource::Environment)));
    }
    let path = data_dir.join(CREDENTIALS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialsError::Io { path, source }),
    };
    let s: Stored =
        serde_json::from_slice(&bytes).map_err(|_| CredentialsError::Corrupt { path })?;
    Ok(Some((
        Credentials {
            client_id: s.client_id,
            client_secret: Secret::new(s.client_secret),
            refresh_token: Secret::new(s.refresh_token),
        },
        CredentialSource::File,
    )))
}

/// Saves credentials to `<data_dir>/credentials.json` atomically, mode 0600.
///
/// # Errors
/// [`CredentialsError::Io`].
pub fn save(data_dir: &Path, c: &Credentials) -> Result<PathBuf, CredentialsError> {
    let path = data_dir.join(CREDENTIALS_FILE);
    let tmp = data_dir.join(format!(".{CREDENTIALS_FILE}.tmp"));
    let io = |source| CredentialsError::Io {
        path: path.clone(),
        source,
    };
    let stored = Stored {
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.expose().to_string(),
        refresh_token: c.refresh_token.expose().to_string(),
    };
    let bytes = serde_json::to_vec_pretty(&stored)
        .map_err(|_| CredentialsError::Corrupt { path: path.clone() })?;
    super::state::write_private(&path, &tmp, &bytes).map_err(io)?;
    Ok(path)
}

/// A fingerprint of a credential set (SHA-256 over its parts), to notice
/// a new login without comparing or logging the secrets themselves.
pub fn fingerprint(c: &Credentials) -> String {
    crate::pii::sha256_hex(&format!(
        "{}\u{0}{}\u{0}{}",
        c.client_id,
        c.client_secret.expose(),
        c.refresh_token.expose()
    ))
}

/// Removes the stored credentials (`amc-sync logout`); `Ok(false)` when none.
///
/// # Errors
/// [`CredentialsError::Io`].
pub fn remove(data_dir: &Path) -> Result<bool, CredentialsError> {
    let path = data_dir.join(CREDENTIALS_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CredentialsError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_credentials_load_back_with_mode_0600_and_debug_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials {
            client_id: "amzn1.application-oa2-client.x".into(),
            client_secret: Secret::new("canary-secret-123"),
            refresh_token: Secret::new("Atzr|canary-refresh"),
        };
        let path = save(dir.path(), &c).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // The environment wins when set; tests run without those variables.
        if from_env().is_none() {
            let (back, src) = load(dir.path()).unwrap().unwrap();
            assert_eq!(src, CredentialSource::File);
            assert_eq!(back.refresh_token.expose(), "Atzr|canary-refresh");
            let dbg = format!("{back:?}");
            assert!(!dbg.contains("canary"), "{dbg}");
        }
        assert!(remove(dir.path()).unwrap());
        assert!(!remove(dir.path()).unwrap());
    }

    #[test]
    fn corrupt_file_is_an_error_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CREDENTIALS_FILE),
            "{\"clientSecret\": \"canary",
        )
        .unwrap();
        if from_env().is_none() {
            let e = load(dir.path()).unwrap_err().to_string();
            assert!(!e.contains("canary"), "{e}");
        }
    }
}
