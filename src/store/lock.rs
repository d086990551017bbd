//! Single-agent lock: an exclusive advisory lock on `<db>.lock`, holding the
//! owner's process id as decimal ASCII.
//!
//! The lock is released by the OS when the holder exits (even on SIGKILL), so
//! a stale file never blocks a new agent. The file itself is left in place on
//! close: deleting it would race with a concurrent opener.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;

/// How long [`LockFile::acquire`] retries a held lock before giving up.
const ACQUIRE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Who holds the lock of database `db`, without taking it: `None` when nobody
/// does, `Some(pid)` (pid when readable) when an agent or command holds it.
/// Probes with a shared lock that is released at once.
pub(crate) fn holder(db: &Path) -> Option<Option<u32>> {
    let path = LockFile::path_for(db);
    let mut file = OpenOptions::new().read(true).open(path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(read_pid(&mut file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// An acquired lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// The lock path used for database `db`: `<db>.lock`.
    pub(crate) fn path_for(db: &Path) -> PathBuf {
        let mut s = db.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the exclusive lock without blocking and records our pid.
    ///
    /// # Errors
    /// [`StoreError::Locked`] with the holder's pid when it is readable (on
    /// Windows the locked file cannot be read by others, so `pid` is `None`);
    /// [`StoreError::Io`] when the file cannot be created or written.
    pub(crate) fn acquire(db: &Path) -> Result<LockFile, StoreError> {
        let path = Self::path_for(db);
        let io_err = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            source: Arc::new(e),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        // A short-lived reader probing the lock (`amc-sync status`) may hold it
        // for an instant: retry briefly before reporting another holder.
        let deadline = std::time::Instant::now() + ACQUIRE_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        pid: read_pid(&mut file),
                        path,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(LockFile { file, path })
    }

    /// Where the lock lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock as well; unlocking first
        // makes the release immediate even if a clone of the fd leaked.
        let _ = self.file.unlock();
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut buf = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    Read::by_ref(file).take(32).read_to_string(&mut buf).ok()?;
    buf.trim().parse().ok()
}
