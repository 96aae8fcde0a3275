//! Where archived logs live, behind one contract.
//!
//! The contract, for every backend:
//! - [`Storage::create`] returns an [`ObjectWriter`]; bytes written to it are
//!   invisible under the final key until [`ObjectWriter::finish`] returns, and a
//!   previous object under that key stays intact until then.
//! - When `finish` returns `Ok`, the object is durable (for the local backend: file
//!   and directory fsynced). Only then may the index call it archived.
//! - [`ObjectWriter::abort`] (or dropping the writer) leaves nothing under the final
//!   key; leftovers of a crash are swept by [`Storage::sweep_staging`].
//!
//! Key layout and sanitising live in [`layout`]. This module knows nothing of the
//! index or of ModelArts.

pub mod layout;
pub mod local;

pub use layout::{ArchiveKey, KeyLayout, KeyParts};
pub use local::LocalStore;

use std::path::PathBuf;
use tokio::io::AsyncRead;

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
}

/// Where a finished object lives, as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: ArchiveKey,
    /// Human-readable location (a file path for the local backend).
    pub location: String,
    pub size: u64,
}

/// The configured backend. An enum rather than a trait object: there are few
/// backends, and async trait methods are not object-safe.
#[derive(Debug, Clone)]
pub enum Storage {
    Local(LocalStore),
}

/// A streaming upload in progress; see the module docs for the contract.
pub enum ObjectWriter {
    Local(local::LocalWriter),
}

impl Storage {
    pub async fn create(&self, key: &ArchiveKey) -> Result<ObjectWriter, StoreError> {
        match self {
            Storage::Local(s) => Ok(ObjectWriter::Local(s.create(key).await?)),
        }
    }

    pub async fn open(
        &self,
        key: &ArchiveKey,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        match self {
            Storage::Local(s) => Ok(Box::new(s.open(key).await?)),
        }
    }

    /// Removes staging leftovers of interrupted writes; returns how many.
    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        match self {
            Storage::Local(s) => s.sweep_staging().await,
        }
    }

    pub fn location(&self, key: &ArchiveKey) -> String {
        match self {
            Storage::Local(s) => s.path_of(key).display().to_string(),
        }
    }
}

impl ObjectWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        match self {
            ObjectWriter::Local(w) => w.write(chunk).await,
        }
    }

    /// Makes the object durable and visible under its key.
    pub async fn finish(self) -> Result<StoredObject, StoreError> {
        match self {
            ObjectWriter::Local(w) => w.finish().await,
        }
    }

    /// Discards the object; nothing appears under the key. Idempotent.
    pub async fn abort(self) {
        match self {
            ObjectWriter::Local(w) => w.abort().await,
        }
    }
}
