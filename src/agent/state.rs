//! Files of a data dir (DESIGN.md 4.5, 4.9):
//!
//! * `amc-sync.db` — the SQLite store (plus `-wal`, `-shm`, `.lock`);
//! * `agent.json` — 0600: the Segment `writeKey` clients must send, the admin
//!   token of the local admin API, and the address of the running agent
//!   (written at start, cleared at clean exit). Not an Amazon secret: LWA
//!   credentials live in the OS keychain.
//! * `drop/` — the default drop folder; `logs/` — daily-rolling logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the store inside a data dir.
pub const DB_FILE: &str = "amc-sync.db";
/// File name of the agent state inside a data dir.
pub const STATE_FILE: &str = "agent.json";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system error (path included).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path}: corrupt state file ({message})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The OS random generator failed.
    #[error("cannot generate a random key: {0}")]
    Random(String),
}

/// Contents of `agent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The Segment source `writeKey` this agent accepts (32 hex characters).
    pub write_key: String,
    /// Bearer token of the admin API (`/api/…`), 64 hex characters.
    pub admin_token: String,
    /// Address of the running agent, when one runs (`http://127.0.0.1:8787`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_url: Option<String>,
    /// PID of the running agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Writes `bytes` to `path` atomically (temp file `tmp` in the same folder,
/// fsync, rename), readable only by the owner (mode 0600 on Unix). Used for
/// every file that holds a key or a secret.
///
/// # Errors
/// The I/O error.
pub fn write_private(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)
}

fn random_hex(bytes: usize) -> Result<String, StateError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| StateError::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh Segment write key: 32 lowercase hex characters (128 random bits).
///
/// # Errors
/// [`StateError::Random`] when the OS random generator fails.
pub fn new_write_key() -> Result<String, StateError> {
    random_hex(16)
}

impl AgentState {
    /// Reads `<data_dir>/agent.json`, creating it with a fresh write key and
    /// admin token on first use.
    ///
    /// # Errors
    /// [`StateError`] on I/O failure or a corrupt file.
    pub fn load_or_create(data_dir: &Path) -> Result<AgentState, StateError> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let st = AgentState {
                    write_key: new_write_key()?,
                    admin_token: random_hex(32)?,
                    listen_url: None,
                    pid: None,
                };
                st.save(data_dir)?;
                Ok(st)
            }
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Reads the state file if it exists.
    ///
    /// # Errors
    /// [`StateError`] on I/O failure or a corrupt file.
    pub fn load(data_dir: &Path) -> Result<Option<AgentState>, StateError> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes the state atomically (temp file + fsync + rename), mode 0600.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(&self, data_dir: &Path) -> Result<(), StateError> {
        let path = data_dir.join(STATE_FILE);
        let tmp = data_dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private(&path, &tmp, &bytes).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_creates_keys_that_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = AgentState::load_or_create(dir.path()).unwrap();
        assert_eq!(a.write_key.len(), 32);
        assert_eq!(a.admin_token.len(), 64);
        let b = AgentState::load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{").unwrap();
        assert!(matches!(
            AgentState::load_or_create(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }
}
