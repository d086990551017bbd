//! `<data dir>/settings.json`: what the dashboard changes at run time
//! (docs/admin-api.md "Settings", "Uploads"). Values here override the config
//! file; the drop folder and profile apply at the next start, the schedule
//! and `paused` at once (and across restarts).
//!
//! Shape (every key optional; unknown keys are kept as they are, so other
//! modules may add their own):
//!
//! ```json
//! {"paused": false, "dropDir": "/abs/path", "scheduleIntervalSecs": 900, "profile": "amazon"}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::state::write_private;
use crate::pii::Profile;

/// File name of the settings inside a data dir.
pub const SETTINGS_FILE: &str = "settings.json";

/// Shortest upload interval a user may set (seconds).
pub const MIN_SCHEDULE_INTERVAL_SECS: u64 = 60;
/// Longest upload interval a user may set (seconds, one day).
pub const MAX_SCHEDULE_INTERVAL_SECS: u64 = 86_400;

/// Errors reading or writing `settings.json`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// File system error (path included).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a JSON object of the expected shape.
    #[error("{path}: corrupt settings file ({message})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (serde's message; the file holds no secrets).
        message: String,
    },
}

/// Contents of `settings.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Uploads paused by the user (`POST /api/pause`); intake continues.
    #[serde(default)]
    pub paused: bool,
    /// Drop folder (absolute path), applied at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_dir: Option<PathBuf>,
    /// Upload interval in seconds
    /// ([`MIN_SCHEDULE_INTERVAL_SECS`]–[`MAX_SCHEDULE_INTERVAL_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_interval_secs: Option<u64>,
    /// Normalization profile, applied at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Keys this version does not know, kept on save.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    /// Reads `<data_dir>/settings.json`; defaults when it does not exist.
    ///
    /// # Errors
    /// [`SettingsError`] on I/O failure or a corrupt file (an interval out of
    /// range counts as corrupt).
    pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
        let path = data_dir.join(SETTINGS_FILE);
        let s: Settings = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SettingsError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => return Err(SettingsError::Io { path, source }),
        };
        if s.schedule_interval_secs.is_some_and(|i| {
            !(MIN_SCHEDULE_INTERVAL_SECS..=MAX_SCHEDULE_INTERVAL_SECS).contains(&i)
        }) {
            return Err(SettingsError::Corrupt {
                path,
                message: format!(
                    "scheduleIntervalSecs must be {MIN_SCHEDULE_INTERVAL_SECS}–{MAX_SCHEDULE_INTERVAL_SECS}"
                ),
            });
        }
        Ok(s)
    }

    /// Writes the settings atomically (temp file + fsync + rename), mode 0600.
    ///
    /// # Errors
    /// [`SettingsError::Io`].
    pub fn save(&self, data_dir: &Path) -> Result<(), SettingsError> {
        let path = data_dir.join(SETTINGS_FILE);
        let tmp = data_dir.join(format!(".{SETTINGS_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| SettingsError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private(&path, &tmp, &bytes).map_err(|source| SettingsError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_defaults_and_round_trip_keeps_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            br#"{"paused":true,"scheduleIntervalSecs":120,"profile":"segment","region":"EU"}"#,
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert!(s.paused);
        assert_eq!(s.schedule_interval_secs, Some(120));
        assert_eq!(s.profile, Some(Profile::Segment));
        s.save(dir.path()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(SETTINGS_FILE)).unwrap())
                .unwrap();
        assert_eq!(v["region"], "EU");
        assert_eq!(v["paused"], true);
    }

    #[test]
    fn out_of_range_interval_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            br#"{"scheduleIntervalSecs":5}"#,
        )
        .unwrap();
        assert!(matches!(
            Settings::load(dir.path()),
            Err(SettingsError::Corrupt { .. })
        ));
    }
}
