//! [`StoreError`]: every way a storage operation can fail, classified by meaning
//! (not found, I/O, remote, usage, busy, not durable), with what the caller
//! needs to act on it.

use std::path::PathBuf;

/// Storage failures, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found in the archive")]
    NotFound { key: String },
    #[error("storage I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An S3 request failed (after object_store's own retries), or the client could
    /// not be set up. `what` names the object or bucket.
    #[error("S3 {what}: {message}")]
    Remote { what: String, message: String },
    /// S3 keys missing or unreadable. Never carries a key's value.
    #[error("S3 credentials: {message}")]
    Credentials { message: String },
    #[error("{key}: {message}")]
    Codec { key: String, message: String },
    /// The archived copy cannot be the start of the new one (it changed, or
    /// its record is unusable); the log must be stored whole.
    #[error("archived copy {key} cannot be extended: {reason}")]
    NotExtendable { key: String, reason: String },
    /// The new bytes are under the final name, but making that durable failed
    /// (directory fsync or `syncfs` after the rename): the old copy is gone and
    /// the new one may not survive a crash.
    #[error("storage I/O error on {path} after the new copy replaced the old one: {source}")]
    NotDurable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "archive {path} is being written by another malog process (daemon or backfill, possibly with another index); try again when it has finished"
    )]
    Busy { path: PathBuf },
}

impl StoreError {
    /// Whether trying the same write again later may succeed: a remote failure
    /// (object_store has already retried it) may be transient; a missing object,
    /// bad credentials or a local disk error will not go away by themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Remote { .. })
    }

    /// Whether the failed write had already replaced the previous copy.
    pub fn replaced_copy(&self) -> bool {
        matches!(self, StoreError::NotDurable { .. })
    }

    /// Whether this is a configuration problem the operator must fix (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, StoreError::Credentials { .. })
    }
}
