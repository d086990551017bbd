//! Where Login with Amazon secrets live (DESIGN.md 4.7): the LWA client
//! secret and the refresh tokens (one per region).
//!
//! * [`KeychainStore`]: the OS keychain through the `keyring` crate (macOS
//!   Keychain, Windows Credential Manager, the freedesktop Secret Service on
//!   Linux). Entries: service `amc-sync`, user `<install id>/<name>`, where the
//!   install id is derived from the data dir so two agents with two data
//!   dirs keep two accounts apart.
//! * [`FileStore`]: the documented fallback for a headless box without a
//!   Secret Service — `<data dir>/credentials.json`, mode 0600 inside the
//!   0700 data dir, written atomically. Using it is reported as a warning and
//!   in `status`.
//! * [`MemoryStore`], for tests.
//!
//! Choice ([`SecretBackend`]): `AMC_SYNC_SECRET_STORE=keychain|file|auto`
//! (default `auto`: the keychain when a probe of it works, else the file).
//! Secret values only ever leave as [`Secret`], which never prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::amazon::Secret;

/// Keychain service name.
pub const KEYCHAIN_SERVICE: &str = "amc-sync";
/// Fallback file inside the data dir.
pub const SECRETS_FILE: &str = "credentials.json";
/// Environment variable choosing the backend: `keychain`, `file` or `auto`.
pub const ENV_SECRET_STORE: &str = "AMC_SYNC_SECRET_STORE";

/// Errors of a secret store. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The keychain refused or is unavailable.
    #[error("OS keychain: {0}")]
    Keychain(String),
    /// The fallback file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The fallback file is not the expected JSON.
    #[error("{path}: unreadable secrets file (run `amc-sync logout` and log in again)")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// An unknown `AMC_SYNC_SECRET_STORE` value.
    #[error("{ENV_SECRET_STORE} must be keychain, file or auto (got {0:?})")]
    BadChoice(String),
}

/// Which backend holds the secrets (as shown by `status` and the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretBackend {
    /// The OS keychain.
    Keychain,
    /// `<data dir>/credentials.json` (0600).
    File,
    /// In memory (tests).
    Memory,
}

impl SecretBackend {
    /// `keychain`, `file`, `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretBackend::Keychain => "keychain",
            SecretBackend::File => "file",
            SecretBackend::Memory => "memory",
        }
    }
}

/// A named-secret store.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> SecretBackend;
    /// The secret called `name`, if stored.
    ///
    /// # Errors
    /// The backend failed (not "absent": that is `Ok(None)`).
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError>;
    /// Stores (or replaces) `name`.
    ///
    /// # Errors
    /// The backend failed.
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError>;
    /// Removes `name`; `Ok(false)` when it was absent.
    ///
    /// # Errors
    /// The backend failed.
    fn delete(&self, name: &str) -> Result<bool, SecretError>;
}

/// The install id of a data dir: the first 16 hex digits of SHA-256 of its
/// absolute path.
pub fn install_id(data_dir: &Path) -> String {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    crate::pii::sha256_hex(&abs.to_string_lossy())[..16].to_string()
}

/// The OS keychain (`keyring`).
#[derive(Debug, Clone)]
pub struct KeychainStore {
    prefix: String,
}

impl KeychainStore {
    /// Entries for `data_dir`'s install.
    pub fn new(data_dir: &Path) -> KeychainStore {
        KeychainStore {
            prefix: install_id(data_dir),
        }
    }

    fn entry(&self, name: &str) -> Result<keyring::Entry, SecretError> {
        keyring::Entry::new(KEYCHAIN_SERVICE, &format!("{}/{name}", self.prefix))
            .map_err(|e| SecretError::Keychain(keychain_message(&e)))
    }

    /// Whether the keychain answers: the platform store was set up and a
    /// lookup of an absent entry says "no entry" rather than failing.
    pub fn available(&self) -> Result<(), SecretError> {
        if let Err(e) = keyring::Entry::store_status() {
            return Err(SecretError::Keychain(keychain_message(e)));
        }
        match self.entry("probe")?.get_password() {
            Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(SecretError::Keychain(keychain_message(&e))),
        }
    }
}

/// The error's kind without any payload the platform might echo.
fn keychain_message(e: &keyring::Error) -> String {
    match e {
        keyring::Error::NoEntry => "no such entry".into(),
        keyring::Error::NoDefaultStore => "no keychain service is available".into(),
        keyring::Error::NoStorageAccess(inner) | keyring::Error::PlatformFailure(inner) => {
            let text = inner.to_string();
            text.chars().take(200).collect()
        }
        other => {
            let text = other.to_string();
            text.chars().take(200).collect()
        }
    }
}

impl SecretStore for KeychainStore {
    fn backend(&self) -> SecretBackend {
        SecretBackend::Keychain
    }

    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        match self.entry(name)?.get_password() {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(SecretError::Keychain(keychain_message(&e))),
        }
    }

    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.entry(name)?
            .set_password(value.expose())
            .map_err(|e| SecretError::Keychain(keychain_message(&e)))
    }

    fn delete(&self, name: &str) -> Result<bool, SecretError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(SecretError::Keychain(keychain_message(&e))),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct FileContents {
    secrets: BTreeMap<String, String>,
}

/// `<data dir>/credentials.json`, mode 0600, replaced atomically on each change.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileStore {
    /// The fallback file of `data_dir`.
    pub fn new(data_dir: &Path) -> FileStore {
        FileStore {
            path: data_dir.join(SECRETS_FILE),
            lock: Mutex::new(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<FileContents, SecretError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|_| SecretError::Corrupt {
                path: self.path.clone(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileContents::default()),
            Err(source) => Err(SecretError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// For writers: a corrupt file is unreadable anyway, so it is replaced
    /// (a new login or a logout must be able to repair it).
    fn read_or_reset(&self) -> Result<FileContents, SecretError> {
        match self.read() {
            Err(SecretError::Corrupt { .. }) => {
                tracing::warn!(file = %self.path.display(), "replacing an unreadable secrets file");
                Ok(FileContents::default())
            }
            other => other,
        }
    }

    fn write(&self, c: &FileContents) -> Result<(), SecretError> {
        if c.secrets.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SecretError::Io {
                    path: self.path.clone(),
                    source,
                }),
            };
        }
        let bytes = serde_json::to_vec_pretty(c).map_err(|_| SecretError::Corrupt {
            path: self.path.clone(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        crate::agent::state::write_private(&self.path, &tmp, &bytes).map_err(|source| {
            SecretError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

impl SecretStore for FileStore {
    fn backend(&self) -> SecretBackend {
        SecretBackend::File
    }

    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(self.read()?.secrets.get(name).cloned().map(Secret::new))
    }

    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut c = self.read_or_reset()?;
        c.secrets
            .insert(name.to_string(), value.expose().to_string());
        self.write(&c)
    }

    fn delete(&self, name: &str) -> Result<bool, SecretError> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut c = self.read_or_reset()?;
        let had = c.secrets.remove(name).is_some();
        if had {
            self.write(&c)?;
        }
        Ok(had)
    }
}

/// In-memory store (tests).
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Secret>>,
}

impl SecretStore for MemoryStore {
    fn backend(&self) -> SecretBackend {
        SecretBackend::Memory
    }
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned())
    }
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), value.clone());
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<bool, SecretError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some())
    }
}

/// What the user asked for with [`ENV_SECRET_STORE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretChoice {
    /// Keychain if it works, else the file (with a warning).
    Auto,
    /// The keychain only (an error when it is unavailable).
    Keychain,
    /// The file only.
    File,
}

impl SecretChoice {
    /// From [`ENV_SECRET_STORE`] (unset or empty = `Auto`).
    ///
    /// # Errors
    /// [`SecretError::BadChoice`].
    pub fn from_env() -> Result<SecretChoice, SecretError> {
        match std::env::var(ENV_SECRET_STORE)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "auto" => Ok(SecretChoice::Auto),
            "keychain" | "keyring" => Ok(SecretChoice::Keychain),
            "file" => Ok(SecretChoice::File),
            other => Err(SecretError::BadChoice(other.to_string())),
        }
    }
}

/// A store for new secrets of `data_dir`, chosen per `choice`; the warning
/// to show when the file fallback was taken because the keychain failed.
///
/// # Errors
/// [`SecretChoice::Keychain`] with no working keychain.
pub fn open_for_writing(
    data_dir: &Path,
    choice: SecretChoice,
) -> Result<(Box<dyn SecretStore>, Option<String>), SecretError> {
    match choice {
        SecretChoice::File => Ok((Box::new(FileStore::new(data_dir)), None)),
        SecretChoice::Keychain => {
            let k = KeychainStore::new(data_dir);
            k.available()?;
            Ok((Box::new(k), None))
        }
        SecretChoice::Auto => {
            let k = KeychainStore::new(data_dir);
            match k.available() {
                Ok(()) => Ok((Box::new(k), None)),
                Err(e) => {
                    let f = FileStore::new(data_dir);
                    let warning = format!(
                        "no usable OS keychain ({e}); secrets are kept in {} (mode 0600) instead",
                        f.path().display()
                    );
                    Ok((Box::new(f), Some(warning)))
                }
            }
        }
    }
}

/// The store a recorded backend refers to.
pub fn open_backend(data_dir: &Path, backend: SecretBackend) -> Box<dyn SecretStore> {
    match backend {
        SecretBackend::Keychain => Box::new(KeychainStore::new(data_dir)),
        SecretBackend::File | SecretBackend::Memory => Box::new(FileStore::new(data_dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_with_mode_0600_and_removes_the_file_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path());
        assert_eq!(s.get("client_secret").unwrap(), None);
        s.set("client_secret", &Secret::new("canary-secret-1"))
            .unwrap();
        s.set("refresh_token:NA", &Secret::new("Atzr|canary"))
            .unwrap();
        assert_eq!(
            s.get("client_secret").unwrap().unwrap().expose(),
            "canary-secret-1"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(s.delete("client_secret").unwrap());
        assert!(!s.delete("client_secret").unwrap());
        assert!(s.path().exists());
        assert!(s.delete("refresh_token:NA").unwrap());
        assert!(!s.path().exists(), "an empty store leaves no file");
    }

    #[test]
    fn corrupt_file_error_does_not_echo_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRETS_FILE), "{\"secrets\": canary-x").unwrap();
        let e = FileStore::new(dir.path()).get("a").unwrap_err().to_string();
        assert!(!e.contains("canary"), "{e}");
    }

    #[test]
    fn corrupt_secrets_file_is_replaced_by_a_write_and_removed_by_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::new(dir.path());
        std::fs::write(s.path(), "{\"secrets\": {").unwrap();
        assert!(!s.delete("client_secret").unwrap());
        s.set("client_secret", &Secret::new("x")).unwrap();
        assert_eq!(s.get("client_secret").unwrap().unwrap().expose(), "x");
    }

    #[test]
    fn install_ids_differ_per_data_dir() {
        assert_ne!(install_id(Path::new("/a")), install_id(Path::new("/b")));
        assert_eq!(install_id(Path::new("/a")).len(), 16);
    }
}
