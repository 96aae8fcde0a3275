//! Where archived logs live, behind one contract.
//!
//! The contract, for every backend (the local folder and any S3-compatible bucket):
//! - [`Storage::create`] returns an [`ObjectWriter`]; bytes written to it are
//!   invisible under the final key until [`ObjectWriter::finish`] returns, and a
//!   previous object under that key stays intact until then.
//! - When `finish` returns `Ok`, the object is durable (local: file and directory
//!   fsynced; S3: the PUT or CompleteMultipartUpload acknowledged). Only then may the
//!   index call it archived.
//! - [`ObjectWriter::abort`] (or dropping the writer) leaves nothing under the final
//!   key and discards what was staged (local staging file, S3 multipart upload).
//!   Aborting is idempotent; leftovers of a crash are swept by
//!   [`Storage::sweep_staging`].
//! - Memory per writer is bounded whatever the log size (a buffer locally; a few
//!   parts on S3; plus the zstd window when compressing).
//!
//! Compression wraps every backend the same way: the writer compresses as it goes,
//! appends the codec's suffix (`.zst`) to the key, and reports size and sha256 of
//! both the original log and the stored bytes in [`StoredObject`]. Readers say how
//! an object was stored ([`Storage::open_log`]), because the index row records it:
//! changing the setting never makes old objects unreadable.
//!
//! Key layout and sanitising live in [`layout`]. This module knows nothing of the
//! index or of ModelArts.

mod commit;
pub mod compress;
pub mod layout;
pub mod local;
mod pagecache;
pub mod s3;

pub use commit::SyncMode;
pub use compress::Compression;
pub use layout::{ArchiveKey, KeyLayout, KeyParts};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

use crate::config::StorageConfig;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

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
}

impl StoreError {
    /// Whether trying the same write again later may succeed: a remote failure
    /// (object_store has already retried it) may be transient; a missing object,
    /// bad credentials or a local disk error will not go away by themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Remote { .. })
    }

    /// Whether this is a configuration problem the operator must fix (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, StoreError::Credentials { .. })
    }
}

/// Labels stored with an object (S3 user metadata): which task's log it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMeta {
    pub job_id: String,
    pub task_id: String,
}

/// Where a finished object lives and what it holds, as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The key actually written: the layout's key plus the compression suffix.
    pub key: ArchiveKey,
    /// Human-readable location: a file path, or `s3://bucket/key`.
    pub location: String,
    /// Size of the original log in bytes.
    pub size: u64,
    /// sha256 of the original log, hex.
    pub sha256: String,
    /// Size of the stored object (equals `size` without compression).
    pub stored_size: u64,
    /// sha256 of the stored object, hex.
    pub stored_sha256: String,
    pub compression: Compression,
}

/// Sizes and digests of an object read back in full (`verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    pub stored_size: u64,
    pub stored_sha256: String,
    pub log_size: u64,
    pub log_sha256: String,
}

/// What storage says about an object without reading it (`verify --metadata-only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size of the stored object.
    pub stored_size: u64,
    /// The original log's sha256 from the object's metadata (S3 only).
    pub log_sha256: Option<String>,
}

/// The configured backend plus the compression of new objects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Backend,
    compression: Compression,
    zstd_level: i32,
}

/// An enum rather than a trait object: there are few backends, and async trait
/// methods are not object-safe.
#[derive(Debug, Clone)]
enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

impl Storage {
    /// A local folder, without compression.
    pub fn local(store: LocalStore) -> Storage {
        Storage {
            backend: Backend::Local(store),
            compression: Compression::None,
            zstd_level: compress::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// An S3 bucket, without compression.
    pub fn s3(store: S3Store) -> Storage {
        Storage {
            backend: Backend::S3(store),
            compression: Compression::None,
            zstd_level: compress::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Compress new objects this way (existing ones are read as recorded).
    pub fn with_compression(mut self, compression: Compression, zstd_level: i32) -> Storage {
        self.compression = compression;
        self.zstd_level = zstd_level;
        self
    }

    /// Opens the configured backend: creates the local folder, or builds the S3
    /// client (reading its credentials). Sends no request.
    pub async fn from_config(config: &StorageConfig) -> Result<Storage, StoreError> {
        let storage = match &config.s3 {
            Some(s3) => Storage::s3(S3Store::connect(s3)?),
            None => Storage::local(LocalStore::open_root(config.root.clone(), config.sync).await?),
        };
        Ok(storage.with_compression(config.compression, config.zstd_level))
    }

    /// How new objects are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The key a log rendered as `key` is stored under (with the compression suffix).
    pub fn stored_key(&self, key: &ArchiveKey) -> ArchiveKey {
        key.with_suffix(self.compression.suffix())
    }

    /// Starts writing the log for `key`, labelled with the task the key was
    /// rendered for (if any).
    pub async fn create(&self, key: &ArchiveKey) -> Result<ObjectWriter, StoreError> {
        let meta = key.origin().cloned().unwrap_or_default();
        self.create_with(key, &meta).await
    }

    /// Starts writing the log for `key` with explicit labels.
    pub async fn create_with(
        &self,
        key: &ArchiveKey,
        meta: &LogMeta,
    ) -> Result<ObjectWriter, StoreError> {
        let key = self.stored_key(key);
        let backend = match &self.backend {
            Backend::Local(s) => BackendWriter::Local(s.create(&key)),
            Backend::S3(s) => {
                BackendWriter::S3(s.create(&key, meta, self.compression.content_type()))
            }
        };
        let compressed = match self.compression {
            Compression::None => None,
            Compression::Zstd => Some(Compressed {
                encoder: compress::Encoder::new(self.zstd_level),
                stored: Tally::default(),
            }),
        };
        Ok(ObjectWriter {
            backend,
            key,
            compression: self.compression,
            compressed,
            log: Tally::default(),
        })
    }

    /// Picks up a write of the log for `key` that an earlier process left behind
    /// (local backend, uncompressed only): the writer continues after the durable
    /// prefix, whose size and sha256 are recomputed from the staging file. Returns
    /// the writer and the resume token given to [`ObjectWriter::make_resumable`].
    pub async fn resume(
        &self,
        key: &ArchiveKey,
    ) -> Result<Option<(ObjectWriter, String)>, StoreError> {
        let Backend::Local(store) = &self.backend else {
            return Ok(None);
        };
        if self.compression != Compression::None {
            return Ok(None);
        }
        let key = self.stored_key(key);
        let Some((writer, len, token)) = store.resume(&key).await? else {
            return Ok(None);
        };
        let mut prefix = store.open_staging(&key).await?.take(len);
        let mut tally = Tally::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = prefix
                .read(&mut buf)
                .await
                .map_err(|source| StoreError::Io {
                    path: store.path_of(&key),
                    source,
                })?;
            if n == 0 {
                break;
            }
            tally.update(&buf[..n]);
        }
        if tally.size != len {
            writer.abort().await;
            return Ok(None);
        }
        Ok(Some((
            ObjectWriter {
                backend: BackendWriter::Local(writer),
                key,
                compression: Compression::None,
                compressed: None,
                log: tally,
            },
            token,
        )))
    }

    /// Stores a small document (a job's record, events, metrics) under `key`
    /// exactly as given, never compressed, with the same atomicity and
    /// durability as a log.
    pub async fn put_document(
        &self,
        key: &ArchiveKey,
        bytes: &[u8],
    ) -> Result<StoredObject, StoreError> {
        let plain = Storage {
            compression: Compression::None,
            ..self.clone()
        };
        let mut writer = plain.create(key).await?;
        if let Err(e) = writer.write(bytes).await {
            writer.abort().await;
            return Err(e);
        }
        writer.finish().await
    }

    /// The stored bytes under `key`, as they are (compressed or not).
    pub async fn open(
        &self,
        key: &ArchiveKey,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        match &self.backend {
            Backend::Local(s) => Ok(Box::new(s.open(key).await?)),
            Backend::S3(s) => s.open(key).await,
        }
    }

    /// The original log under `key`, decoded as the index says it was stored.
    pub async fn open_log(
        &self,
        key: &ArchiveKey,
        compression: Compression,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        Ok(compress::decode(self.open(key).await?, compression))
    }

    /// Reads the object in full: size and sha256 of the stored bytes and, decoding
    /// them, of the log. A compressed object that does not decode is an error.
    pub async fn digest(
        &self,
        key: &ArchiveKey,
        compression: Compression,
    ) -> Result<ObjectDigest, StoreError> {
        let codec_err = |e: std::io::Error| StoreError::Codec {
            key: key.to_string(),
            message: format!("read error: {e}"),
        };
        let mut raw = Hashing::new(self.open(key).await?);
        let mut log = Tally::default();
        let mut buf = vec![0u8; 1 << 20];
        match compression {
            Compression::None => {
                drain(&mut raw, &mut buf, &mut log)
                    .await
                    .map_err(codec_err)?;
            }
            Compression::Zstd => {
                let mut decoder =
                    async_compression::tokio::bufread::ZstdDecoder::new(BufReader::new(raw));
                drain(&mut decoder, &mut buf, &mut log)
                    .await
                    .map_err(|e| StoreError::Codec {
                        key: key.to_string(),
                        message: format!("does not decode as zstd: {e}"),
                    })?;
                // Whatever follows the frame still counts for the stored digest.
                raw = decoder.into_inner().into_inner();
                drain(&mut raw, &mut buf, &mut Tally::default())
                    .await
                    .map_err(codec_err)?;
            }
        }
        let (stored_size, stored_sha256) = raw.tally.finish();
        let (log_size, log_sha256) = log.finish();
        Ok(ObjectDigest {
            stored_size,
            stored_sha256,
            log_size,
            log_sha256,
        })
    }

    /// Size (and, on S3, the log's sha256 metadata) without reading the object.
    pub async fn head(&self, key: &ArchiveKey) -> Result<ObjectHead, StoreError> {
        match &self.backend {
            Backend::Local(s) => Ok(ObjectHead {
                stored_size: s.head(key).await?,
                log_sha256: None,
            }),
            Backend::S3(s) => {
                let head = s.head(key).await?;
                Ok(ObjectHead {
                    stored_size: head.size,
                    log_sha256: head.log_sha256,
                })
            }
        }
    }

    /// Removes the object under `key`; a missing one is not an error.
    pub async fn delete(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local(s) => s.delete(key).await,
            Backend::S3(s) => s.delete(key).await,
        }
    }

    /// Removes leftovers of interrupted writes (staging files, stale multipart
    /// uploads); returns how many.
    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.sweep_staging().await,
            Backend::S3(s) => s.sweep_staging().await,
        }
    }

    /// Whether the backend answers and accepts our credentials now (health
    /// checks). Local: a probe write to staging, aborted. S3: a HEAD of `key`
    /// (absent is fine), since a small S3 write sends nothing before `finish`.
    pub async fn probe(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local(s) => s.probe(key).await,
            Backend::S3(s) => match s.head(key).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Where the object under `key` lives (a path, or `s3://bucket/key`).
    pub fn location(&self, key: &ArchiveKey) -> String {
        match &self.backend {
            Backend::Local(s) => s.path_of(key).display().to_string(),
            Backend::S3(s) => s.location(key),
        }
    }
}

/// A streaming write in progress; see the module docs for the contract.
pub struct ObjectWriter {
    backend: BackendWriter,
    key: ArchiveKey,
    compression: Compression,
    /// Present when compressing; without it the stored object is the log itself
    /// (hashed once).
    compressed: Option<Compressed>,
    /// What the caller wrote: the original log.
    log: Tally,
}

/// The encoder fed every chunk, its output going to the backend, and a tally of
/// that output.
struct Compressed {
    encoder: compress::Encoder,
    stored: Tally,
}

enum BackendWriter {
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

    /// Lets a later process resume this write after a crash, where the backend
    /// can (local, uncompressed); `token` is opaque to storage.
    pub fn make_resumable(&mut self, token: String) {
        if let (BackendWriter::Local(w), None) = (&mut self.backend, &self.compressed) {
            w.make_resumable(token);
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.log.update(chunk);
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
        })
    }

    /// Discards the object; nothing appears under the key. Idempotent.
    pub async fn abort(self) {
        self.backend.abort().await
    }
}

/// A running size and sha256.
#[derive(Default)]
struct Tally {
    size: u64,
    hasher: Sha256,
}

impl Tally {
    fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.hasher.update(bytes);
    }

    fn finish(&mut self) -> (u64, String) {
        let hasher = std::mem::take(&mut self.hasher);
        (self.size, hex::encode(hasher.finalize()))
    }
}

/// Passes reads through, tallying every byte.
struct Hashing<R> {
    inner: R,
    tally: Tally,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            tally: Tally::default(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            this.tally.update(&buf.filled()[before..]);
        }
        poll
    }
}

async fn drain<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    tally: &mut Tally,
) -> std::io::Result<()> {
    loop {
        let n = reader.read(buf).await?;
        if n == 0 {
            return Ok(());
        }
        tally.update(&buf[..n]);
    }
}
