//! The Amazon connection of a data dir (DESIGN.md 4.6, 4.7): which region is
//! active, the LWA client id, the profiles found at login — and where the
//! secrets are.
//!
//! * `<data dir>/connection.json` (0600) holds only public facts:
//!   `{"region":"EU","clientId":"amzn1.application-oa2-client.…","scope":…,
//!   "secretStore":"keychain","regions":{"EU":{"loggedInAtMs":…,"profiles":[…]}}}`.
//! * The client secret (`client_secret`) and one refresh token per region
//!   (`refresh_token:NA`, `refresh_token:EU`, `refresh_token:FE`: LWA tokens
//!   are issued per region's authorization host) live in the OS keychain, or
//!   in the documented 0600 fallback file ([`crate::secrets`]).
//! * The environment (`AMC_SYNC_CLIENT_ID`, `AMC_SYNC_CLIENT_SECRET`,
//!   `AMC_SYNC_REFRESH_TOKEN`, all three set) overrides both, for CI and
//!   containers.
//!
//! A region switch changes only `region`: the API and token hosts follow it;
//! the queue is untouched; without a refresh token for the new region the
//! agent reports `needs_login`. Secrets never reach SQLite, logs or `--json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::amazon::{Credentials, Profile, Secret};
use crate::config::Region;
use crate::secrets::{self, SecretBackend, SecretChoice, SecretError, SecretStore};

/// File name of the connection record inside the data dir.
pub const CONNECTION_FILE: &str = "connection.json";
/// Environment variable: LWA client id.
pub const ENV_CLIENT_ID: &str = "AMC_SYNC_CLIENT_ID";
/// Environment variable: LWA client secret.
pub const ENV_CLIENT_SECRET: &str = "AMC_SYNC_CLIENT_SECRET";
/// Environment variable: LWA refresh token.
pub const ENV_REFRESH_TOKEN: &str = "AMC_SYNC_REFRESH_TOKEN";
/// Secret name of the LWA client secret.
pub const CLIENT_SECRET: &str = "client_secret";

/// Secret name of `region`'s refresh token.
pub fn refresh_token_name(region: Region) -> String {
    format!("refresh_token:{}", region.as_str())
}

/// Errors reading or writing the connection. Messages never contain secrets.
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
    #[error("{path}: unreadable connection file (run `amc-sync logout`, then log in again)")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The secret store failed.
    #[error(transparent)]
    Secrets(#[from] SecretError),
}

/// Where the credentials in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// The `AMC_SYNC_*` environment variables.
    Environment,
    /// The OS keychain.
    Keychain,
    /// The 0600 fallback file.
    File,
}

impl CredentialSource {
    /// `environment`, `keychain`, `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Environment => "environment",
            CredentialSource::Keychain => "keychain",
            CredentialSource::File => "file",
        }
    }
}

/// One advertising profile found at login (`GET /v2/profiles`), for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSummary {
    /// The profile id, as digits (may exceed 2^53).
    pub profile_id: String,
    /// Marketplace country.
    pub country_code: String,
    /// Currency.
    pub currency_code: String,
    /// Account name.
    pub name: String,
    /// Account type (`seller`, `vendor`, `agency`).
    #[serde(rename = "type")]
    pub kind: String,
}

impl From<&Profile> for ProfileSummary {
    fn from(p: &Profile) -> ProfileSummary {
        ProfileSummary {
            profile_id: p.profile_id.as_str().to_string(),
            country_code: p.country_code.clone(),
            currency_code: p.currency_code.clone(),
            name: p.account_info.name.clone(),
            kind: p.account_info.kind.clone(),
        }
    }
}

/// A completed login in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionLogin {
    /// When, ms since the epoch.
    pub logged_in_at_ms: i64,
    /// The profiles `GET /v2/profiles` returned then.
    #[serde(default)]
    pub profiles: Vec<ProfileSummary>,
}

/// Contents of `connection.json` (no secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The active region; `None`: the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The LWA client id (public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scope granted at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Where the secrets are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store: Option<SecretBackend>,
    /// Why the file fallback is used, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_warning: Option<String>,
    /// Completed logins per region (`"NA"`, `"EU"`, `"FE"`).
    #[serde(default)]
    pub regions: BTreeMap<Region, RegionLogin>,
}

impl Connection {
    /// Reads `<data_dir>/connection.json` (default when absent).
    ///
    /// # Errors
    /// I/O failure or a corrupt file.
    pub fn load(data_dir: &Path) -> Result<Connection, CredentialsError> {
        let path = data_dir.join(CONNECTION_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|_| CredentialsError::Corrupt { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Connection::default()),
            Err(source) => Err(CredentialsError::Io { path, source }),
        }
    }

    /// For writers (login, logout, region switch): like [`Connection::load`],
    /// but an unreadable file is replaced by an empty connection (with a
    /// warning) instead of blocking the repair.
    ///
    /// # Errors
    /// I/O failure other than a corrupt file.
    pub fn load_or_reset(data_dir: &Path) -> Result<Connection, CredentialsError> {
        match Connection::load(data_dir) {
            Err(CredentialsError::Corrupt { path }) => {
                tracing::warn!(file = %path.display(), "replacing an unreadable connection file");
                Ok(Connection::default())
            }
            other => other,
        }
    }

    /// Writes `<data_dir>/connection.json` atomically, mode 0600.
    ///
    /// # Errors
    /// I/O failure.
    pub fn save(&self, data_dir: &Path) -> Result<(), CredentialsError> {
        let path = data_dir.join(CONNECTION_FILE);
        let tmp = data_dir.join(format!(".{CONNECTION_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|_| CredentialsError::Corrupt { path: path.clone() })?;
        super::state::write_private(&path, &tmp, &bytes)
            .map_err(|source| CredentialsError::Io { path, source })
    }

    /// The region in force: the connection's, else `default` (the config's).
    pub fn active_region(&self, default: Region) -> Region {
        self.region.unwrap_or(default)
    }

    /// The secret store holding this connection's secrets.
    pub fn store(&self, data_dir: &Path) -> Option<Box<dyn SecretStore>> {
        self.secret_store
            .map(|b| secrets::open_backend(data_dir, b))
    }
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

/// The credentials in force and what they are for.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Client id, client secret, refresh token of the active region.
    pub credentials: Credentials,
    /// Where they came from.
    pub source: CredentialSource,
    /// The active region.
    pub region: Region,
}

/// The credentials in force for `data_dir`: the environment first, then the
/// connection's secrets for its active region (`default_region` when the
/// connection names none). `Ok(None)`: not logged in (in that region).
///
/// # Errors
/// An unreadable connection file or a failing secret store.
pub fn load(data_dir: &Path, default_region: Region) -> Result<Option<Loaded>, CredentialsError> {
    let conn = Connection::load(data_dir)?;
    let region = conn.active_region(default_region);
    if let Some(c) = from_env() {
        return Ok(Some(Loaded {
            credentials: c,
            source: CredentialSource::Environment,
            region,
        }));
    }
    let (Some(client_id), Some(store)) = (conn.client_id.clone(), conn.store(data_dir)) else {
        return Ok(None);
    };
    let Some(client_secret) = store.get(CLIENT_SECRET)? else {
        return Ok(None);
    };
    let Some(refresh_token) = store.get(&refresh_token_name(region))? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        credentials: Credentials {
            client_id,
            client_secret,
            refresh_token,
        },
        source: match store.backend() {
            SecretBackend::Keychain => CredentialSource::Keychain,
            _ => CredentialSource::File,
        },
        region,
    }))
}

/// The stored client secret (to start another login without asking again).
///
/// # Errors
/// The secret store failed.
/// An unreadable connection or secrets file counts as "none stored" (the
/// next login replaces it).
///
/// # Errors
/// The secret store failed (other than a corrupt fallback file).
pub fn stored_client(data_dir: &Path) -> Result<Option<(String, Secret)>, CredentialsError> {
    let conn = match Connection::load(data_dir) {
        Err(CredentialsError::Corrupt { .. }) => return Ok(None),
        other => other?,
    };
    let (Some(id), Some(store)) = (conn.client_id.clone(), conn.store(data_dir)) else {
        return Ok(None);
    };
    match store.get(CLIENT_SECRET) {
        Ok(s) => Ok(s.map(|s| (id, s))),
        Err(SecretError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A completed login to save.
#[derive(Debug)]
pub struct NewLogin<'a> {
    /// The region logged into (becomes the active region).
    pub region: Region,
    /// LWA credentials (refresh token of `region`).
    pub credentials: &'a Credentials,
    /// The scope granted.
    pub scope: &'a str,
    /// Profiles found (`GET /v2/profiles`).
    pub profiles: Vec<ProfileSummary>,
}

/// Saves a login: secrets to the keychain (or the fallback per `choice`),
/// the public facts to `connection.json`. Returns the updated connection.
///
/// # Errors
/// The secret store or the file failed.
pub fn save_login(
    data_dir: &Path,
    login: &NewLogin<'_>,
    choice: SecretChoice,
) -> Result<Connection, CredentialsError> {
    let mut conn = Connection::load_or_reset(data_dir)?;
    // Reuse the backend already holding this install's secrets, so tokens of
    // other regions stay reachable; else choose.
    let (store, warning) = match conn.secret_store {
        Some(b) if choice == SecretChoice::Auto => (secrets::open_backend(data_dir, b), None),
        _ => secrets::open_for_writing(data_dir, choice)?,
    };
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    if conn.client_id.as_deref() != Some(login.credentials.client_id.as_str()) {
        // Another security profile: the other regions' tokens belong to the old one.
        for r in [Region::NA, Region::EU, Region::FE] {
            store.delete(&refresh_token_name(r))?;
        }
        conn.regions.clear();
    }
    store.set(CLIENT_SECRET, &login.credentials.client_secret)?;
    store.set(
        &refresh_token_name(login.region),
        &login.credentials.refresh_token,
    )?;
    conn.client_id = Some(login.credentials.client_id.clone());
    conn.scope = Some(login.scope.to_string());
    if store.backend() != SecretBackend::Keychain || conn.secret_store.is_none() {
        conn.secret_store_warning = warning.or(conn.secret_store_warning.take());
    }
    if store.backend() == SecretBackend::Keychain {
        conn.secret_store_warning = None;
    }
    conn.secret_store = Some(store.backend());
    conn.region = Some(login.region);
    conn.regions.insert(
        login.region,
        RegionLogin {
            logged_in_at_ms: now_ms(),
            profiles: login.profiles.clone(),
        },
    );
    conn.save(data_dir)?;
    Ok(conn)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What `logout` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutOutcome {
    /// Secrets removed from the keychain or the fallback file.
    pub secrets_removed: u32,
    /// Where they were.
    pub secret_store: Option<SecretBackend>,
}

/// Removes the client secret and every refresh token (keychain and fallback
/// file), and forgets the client id and logins; keeps the active region.
///
/// # Errors
/// The secret store or the file failed.
pub fn logout(data_dir: &Path) -> Result<LogoutOutcome, CredentialsError> {
    let mut conn = Connection::load_or_reset(data_dir)?;
    let mut removed = 0;
    let mut stores: Vec<Box<dyn SecretStore>> = vec![Box::new(secrets::FileStore::new(data_dir))];
    if conn.secret_store == Some(SecretBackend::Keychain) {
        stores.push(Box::new(secrets::KeychainStore::new(data_dir)));
    }
    for store in &stores {
        for name in [
            CLIENT_SECRET.to_string(),
            refresh_token_name(Region::NA),
            refresh_token_name(Region::EU),
            refresh_token_name(Region::FE),
        ] {
            if store.delete(&name)? {
                removed += 1;
            }
        }
    }
    let outcome = LogoutOutcome {
        secrets_removed: removed,
        secret_store: conn.secret_store,
    };
    conn.client_id = None;
    conn.scope = None;
    conn.secret_store = None;
    conn.secret_store_warning = None;
    conn.regions.clear();
    conn.save(data_dir)?;
    Ok(outcome)
}

/// Makes `region` the active region (API and token hosts follow). Returns
/// the updated connection.
///
/// # Errors
/// The file failed.
pub fn set_region(data_dir: &Path, region: Region) -> Result<Connection, CredentialsError> {
    let mut conn = Connection::load_or_reset(data_dir)?;
    conn.region = Some(region);
    conn.save(data_dir)?;
    Ok(conn)
}

/// A fingerprint of a credential set and its region (SHA-256 over the
/// parts), to notice a new login or a region switch without comparing or
/// logging the secrets themselves.
pub fn fingerprint(c: &Credentials, region: Region) -> String {
    crate::pii::sha256_hex(&format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        region.as_str(),
        c.client_id,
        c.client_secret.expose(),
        c.refresh_token.expose()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(rt: &str) -> Credentials {
        Credentials {
            client_id: "amzn1.application-oa2-client.x".into(),
            client_secret: Secret::new("canary-secret-123"),
            refresh_token: Secret::new(rt),
        }
    }

    #[test]
    fn file_fallback_keeps_one_refresh_token_per_region_and_logout_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (region, rt) in [
            (Region::NA, "Atzr|canary-na"),
            (Region::EU, "Atzr|canary-eu"),
        ] {
            save_login(
                d,
                &NewLogin {
                    region,
                    credentials: &creds(rt),
                    scope: "advertising::campaign_management",
                    profiles: vec![],
                },
                SecretChoice::File,
            )
            .unwrap();
        }
        let conn = Connection::load(d).unwrap();
        assert_eq!(conn.region, Some(Region::EU));
        assert_eq!(conn.secret_store, Some(SecretBackend::File));
        let json = std::fs::read_to_string(d.join(CONNECTION_FILE)).unwrap();
        assert!(
            !json.contains("canary"),
            "connection.json holds no secret: {json}"
        );
        if from_env().is_none() {
            let l = load(d, Region::NA).unwrap().unwrap();
            assert_eq!(l.region, Region::EU);
            assert_eq!(l.source, CredentialSource::File);
            assert_eq!(l.credentials.refresh_token.expose(), "Atzr|canary-eu");
            set_region(d, Region::NA).unwrap();
            let l = load(d, Region::EU).unwrap().unwrap();
            assert_eq!(l.credentials.refresh_token.expose(), "Atzr|canary-na");
            set_region(d, Region::FE).unwrap();
            assert!(load(d, Region::NA).unwrap().is_none(), "no FE login yet");
        }
        let out = logout(d).unwrap();
        assert_eq!(out.secrets_removed, 3);
        assert!(!d.join(secrets::SECRETS_FILE).exists());
        if from_env().is_none() {
            assert!(load(d, Region::NA).unwrap().is_none());
        }
        assert_eq!(Connection::load(d).unwrap().region, Some(Region::FE));
    }

    #[test]
    fn corrupt_connection_file_is_repaired_by_logout_and_region_switch() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(CONNECTION_FILE), "{\"region\":\"NA\",\"regions\":{").unwrap();
        assert!(Connection::load(d).is_err());
        logout(d).unwrap();
        assert_eq!(Connection::load(d).unwrap(), Connection::default());
        std::fs::write(d.join(CONNECTION_FILE), "garbage").unwrap();
        assert_eq!(set_region(d, Region::EU).unwrap().region, Some(Region::EU));
    }

    #[test]
    fn fingerprint_changes_with_region_and_token() {
        let c = creds("a");
        assert_ne!(fingerprint(&c, Region::NA), fingerprint(&c, Region::EU));
        assert_ne!(
            fingerprint(&c, Region::NA),
            fingerprint(&creds("b"), Region::NA)
        );
    }
}
