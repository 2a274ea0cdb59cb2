//! [`DirLock`]: one server per `--data-dir`. Two servers writing one SQLite file would each
//! answer from their own in-memory chain and delete each other's pending transactions, so the
//! second is refused at start.
//!
//! The lock is an exclusive `flock` on [`LOCK_FILE`] inside the data directory, held for the
//! life of the server (the kernel drops it when the process exits, `kill -9` included, so a
//! stale file never blocks a restart). The file holds the owner's PID, only to name it in the
//! refusal; the lock, not the file's existence, is what counts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The lock file's name inside `--data-dir`.
pub const LOCK_FILE: &str = "pool-server.lock";

/// An exclusive lock on a data directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `data_dir` (which must exist) for this process and writes its PID into the lock
    /// file.
    ///
    /// # Errors
    /// When another process holds the lock (the message names its PID), or the lock file
    /// cannot be written (a read-only or foreign directory).
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| crate::store::cannot_write(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The owner writes its PID right after locking; an empty file means it is just
                // starting.
                let _ = file.read_to_string(&mut text);
                let owner = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("PID {pid}"),
                    Err(_) => "PID unknown".to_owned(),
                };
                anyhow::bail!(
                    "data directory {} is in use by another pool-server ({owner}; lock file {}); \
                     stop it first, or give this one another --data-dir",
                    data_dir.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let pid = std::process::id();
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{pid}")?;
            file.flush()
        })()
        .map_err(|e| crate::store::cannot_write(&path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// Returns the lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Returns whether `e` means "not allowed to write here" rather than "broken".
pub(crate) fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem)
}
