//! [`ObjectWriter`]: one streaming write of an object, the same for every
//! backend: it compresses as it goes (when the storage compresses), tallies
//! size and sha256 of the log and of the stored bytes, and makes the object
//! visible only in `finish` (the contract in the module docs of `storage`).

use super::*;

/// A streaming write in progress; see the module docs for the contract.
pub struct ObjectWriter {
    pub(super) backend: BackendWriter,
    pub(super) key: ArchiveKey,
    pub(super) compression: Compression,
    /// Present when compressing; without it the stored object is the log itself
    /// (hashed once).
    pub(super) compressed: Option<Compressed>,
    /// What the caller wrote: the original log.
    pub(super) log: Tally,
    /// The log's last bytes, for the next delta's overlap check.
    pub(super) tail: growth::Tail,
}

/// The encoder fed every chunk, its output going to the backend, and a tally of
/// that output.
pub(super) struct Compressed {
    pub(super) encoder: compress::Encoder,
    pub(super) stored: Tally,
}

pub(super) enum BackendWriter {
    Local(local::LocalWriter),
    S3(s3::S3Writer),
}

impl BackendWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        match self {
            BackendWriter::Local(w) => w.write(chunk).await,
            BackendWriter::S3(w) => w.write(chunk).await,
        }
    }

    async fn abort(self) {
        match self {
            BackendWriter::Local(w) => w.abort().await,
            BackendWriter::S3(w) => w.abort().await,
        }
    }
}

impl ObjectWriter {
    /// The key being written (with the compression suffix).
    pub fn key(&self) -> &ArchiveKey {
        &self.key
    }

    /// Bytes of the log written so far.
    pub fn written(&self) -> u64 {
        self.log.size
    }

    /// Size and sha256 of the log written so far (the writer goes on).
    pub fn log_digest(&self) -> (u64, String) {
        (
            self.log.size,
            hex::encode(self.log.hasher.clone().finalize()),
        )
    }

    /// Lets a later process resume this write after a crash, where the backend
    /// can (local, uncompressed); `token` is opaque to storage.
    pub fn make_resumable(&mut self, token: String) {
        if let (BackendWriter::Local(w), None) = (&mut self.backend, &self.compressed) {
            w.make_resumable(token);
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.log.update(chunk);
        self.tail.update(chunk);
        match &mut self.compressed {
            None => self.backend.write(chunk).await,
            Some(Compressed { encoder, stored }) => {
                let out = encoder.write(chunk).await.map_err(|e| StoreError::Codec {
                    key: self.key.to_string(),
                    message: format!("compression failed: {e}"),
                })?;
                if out.is_empty() {
                    return Ok(());
                }
                stored.update(&out);
                self.backend.write(&out).await
            }
        }
    }

    /// Makes the object durable and visible under its key.
    pub async fn finish(mut self) -> Result<StoredObject, StoreError> {
        if let Some(Compressed { encoder, stored }) = &mut self.compressed {
            let tail = match encoder.finish().await {
                Ok(tail) => tail,
                Err(e) => {
                    let key = self.key.to_string();
                    self.backend.abort().await;
                    return Err(StoreError::Codec {
                        key,
                        message: format!("compression failed: {e}"),
                    });
                }
            };
            stored.update(&tail);
            if let Err(e) = self.backend.write(&tail).await {
                self.backend.abort().await;
                return Err(e);
            }
        }
        let growth = Growth::new(
            &self.log.hasher,
            self.compressed.as_ref().map(|c| &c.stored.hasher),
            &self.tail,
        );
        let (size, sha256) = self.log.finish();
        let (stored_size, stored_sha256) = match &mut self.compressed {
            Some(c) => c.stored.finish(),
            None => (size, sha256.clone()),
        };
        let location = match self.backend {
            BackendWriter::Local(w) => w.finish().await?.display().to_string(),
            BackendWriter::S3(w) => {
                let meta = s3::FinalMeta {
                    log_sha256: sha256.clone(),
                    log_size: size,
                };
                w.finish(&meta).await?
            }
        };
        Ok(StoredObject {
            key: self.key,
            location,
            size,
            sha256,
            stored_size,
            stored_sha256,
            compression: self.compression,
            growth,
        })
    }

    /// Discards the object; nothing appears under the key. Idempotent.
    pub async fn abort(self) {
        self.backend.abort().await
    }

    /// Stops writing without finishing: what was written stays for a later
    /// process to resume where the backend can (local, uncompressed, made
    /// resumable); otherwise the same as [`ObjectWriter::abort`].
    pub async fn suspend(self) {
        match (self.backend, self.compressed) {
            (BackendWriter::Local(w), None) => w.suspend().await,
            (backend, _) => backend.abort().await,
        }
    }
}
