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
//! [`Storage::extend`] starts a writer whose object begins as a copy of the
//! archived one, so a grown log costs only its new bytes (`growth.rs`); the
//! contract above holds for it (the old object stays until `finish`), except
//! for the append in place below, where the old object's bytes stay and only
//! readers bounded by the committed size see the object "unchanged".
//!
//! Local storage may instead append the delta to the archived file itself
//! (`local/append.rs`): then the object's committed size is the one the index
//! records, and every reader of an archived copy is bounded by it
//! ([`Storage::open_copy`], [`Storage::open_log`], [`Storage::open_from`],
//! [`Storage::digest`]), so bytes of an unfinished append are never read. The
//! writer cuts such bytes back at the start of the next pass
//! ([`Storage::pending_appends`]).
//!
//! [`Storage::keep_version`] keeps an archived object under a version key
//! (`versions.rs`) before a rewritten log's new object replaces it.
//!
//! Key layout and sanitising live in [`layout`]. This module knows nothing of the
//! index or of ModelArts.

mod commit;
pub mod compress;
mod error;
mod growth;
pub mod layout;
mod listing;
pub mod local;
pub mod manifest;
mod pagecache;
pub mod s3;
mod versions;
mod writer;

pub use commit::SyncMode;
pub use compress::Compression;
pub use error::StoreError;
pub use growth::{Base, Growth, OVERLAP};
pub use layout::{ArchiveKey, KeyLayout, KeyParts, ParsedKey};
pub use listing::Listed;
pub use local::{LocalStore, PendingAppend, RolledBack};
pub use s3::{S3Config, S3Store};
pub use versions::{Indexed, KeptVersion, is_version_key, version_key};
pub use writer::ObjectWriter;
use writer::{BackendWriter, Compressed};

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

/// The `[storage]` section, validated by `config`; the backends read only this.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The archive folder of `kind = "local"` (unused with S3).
    pub root: PathBuf,
    pub layout: KeyLayout,
    /// Set for `kind = "s3"`.
    pub s3: Option<S3Config>,
    /// For new objects; existing ones are read as the index recorded them.
    pub compression: Compression,
    pub zstd_level: i32,
    /// How the local backend makes a batch of finished logs durable.
    pub sync: SyncMode,
    /// Whether the local backend may grow a copy by appending to its file
    /// where the file system cannot share blocks (`local/append.rs`).
    pub append_in_place: bool,
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
    /// What extending this copy later needs.
    pub growth: Growth,
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
            None => Storage::local(
                LocalStore::open_root(config.root.clone(), config.sync)
                    .await?
                    .with_append_in_place(config.append_in_place),
            ),
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
            tail: growth::Tail::default(),
        })
    }

    /// Whether [`Storage::extend`] can start from `base` for the log rendered
    /// as `key`: same stored key and compression as a new object would get.
    pub fn can_extend(&self, key: &ArchiveKey, base: &Base) -> bool {
        base.compression == self.compression && self.stored_key(key) == base.key
    }

    /// Starts writing the log for `key` as the archived copy `base` plus what
    /// the caller writes next (the bytes after `base.size`). `tail` is the
    /// copy's last [`Base::overlap_len`] bytes, as the source repeated them.
    /// The sizes and sha256 continue from `base` (its hash states), so
    /// [`ObjectWriter::finish`] reports the whole log exactly.
    ///
    /// Local: the old bytes are copied inside the kernel into the staging
    /// file. S3: the old object is streamed into the new upload (object_store
    /// has no UploadPartCopy), its size and sha256 checked on the way. With
    /// zstd the delta becomes one more frame. Fails with
    /// [`StoreError::NotExtendable`] when the copy is not what `base` says.
    pub async fn extend(
        &self,
        key: &ArchiveKey,
        base: &Base,
        tail: &[u8],
    ) -> Result<ObjectWriter, StoreError> {
        let refuse = |reason: &str| StoreError::NotExtendable {
            key: base.key.to_string(),
            reason: reason.to_owned(),
        };
        if !self.can_extend(key, base) {
            return Err(refuse("stored under another name or compression"));
        }
        let log = Tally::resume(base.size, base.growth.log_hasher())
            .ok_or_else(|| refuse("no usable hash state"))?;
        let compressed = match self.compression {
            Compression::None => None,
            Compression::Zstd => Some(Compressed {
                encoder: compress::Encoder::new(self.zstd_level),
                stored: Tally::resume(base.stored_size, base.growth.stored_hasher())
                    .ok_or_else(|| refuse("no usable hash state of the stored object"))?,
            }),
        };
        let backend = match &self.backend {
            Backend::Local(s) => BackendWriter::Local(s.extend(&base.key, base.stored_size).await?),
            Backend::S3(s) => {
                let meta = key.origin().cloned().unwrap_or_default();
                let mut writer = s.create(&base.key, &meta, self.compression.content_type());
                if let Err(e) = self.copy_into(&mut writer, base).await {
                    writer.abort().await;
                    return Err(e);
                }
                BackendWriter::S3(writer)
            }
        };
        let mut last = growth::Tail::default();
        last.update(tail);
        Ok(ObjectWriter {
            backend,
            key: base.key.clone(),
            compression: self.compression,
            compressed,
            log,
            tail: last,
        })
    }

    /// Streams the stored object of `base` into `writer`, checking that it is
    /// the object the index describes.
    async fn copy_into(&self, writer: &mut s3::S3Writer, base: &Base) -> Result<(), StoreError> {
        let mut old = self.open(&base.key).await?;
        let mut seen = Tally::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = old.read(&mut buf).await.map_err(|e| StoreError::Remote {
                what: base.key.to_string(),
                message: format!("reading the archived copy: {e}"),
            })?;
            if n == 0 {
                break;
            }
            seen.update(&buf[..n]);
            writer.write(&buf[..n]).await?;
        }
        let (size, sha256) = seen.finish();
        if size != base.stored_size || sha256 != base.stored_sha256 {
            return Err(StoreError::NotExtendable {
                key: base.key.to_string(),
                reason: format!("the stored object ({size} bytes) is not the one in the index"),
            });
        }
        Ok(())
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
        let mut last = growth::Tail::default();
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
            last.update(&buf[..n]);
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
                tail: last,
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

    /// An archived copy's stored bytes, never past `stored_size` (what the
    /// index committed; `None`: the whole object): a local file may carry
    /// the bytes of an append in place that is not committed yet.
    pub async fn open_copy(
        &self,
        key: &ArchiveKey,
        stored_size: Option<u64>,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        let whole = self.open(key).await?;
        Ok(match stored_size {
            Some(limit) => Box::new(whole.take(limit)),
            None => whole,
        })
    }

    /// [`Storage::open`] for a reader on a thread that may block (a search),
    /// called on such a thread inside the runtime (`spawn_blocking`). A local
    /// file is opened and read directly, each read one system call: through
    /// the async file every buffer would cost a hop to tokio's blocking pool
    /// and back, which made `grep` several times slower than `rg`. An S3
    /// object is the async stream, bridged. Bounded like [`Storage::open_copy`].
    pub fn open_blocking(
        &self,
        key: &ArchiveKey,
        stored_size: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let whole: Box<dyn Read + Send> = match &self.backend {
            Backend::Local(s) => Box::new(s.open_blocking(key)?),
            Backend::S3(s) => {
                let stream = tokio::runtime::Handle::current().block_on(s.open(key))?;
                Box::new(tokio_util::io::SyncIoBridge::new(stream))
            }
        };
        Ok(match stored_size {
            Some(limit) => Box::new(whole.take(limit)),
            None => whole,
        })
    }

    /// The stored bytes under `key` from byte `offset` on, without reading what
    /// comes before: a seek on a local file, a ranged GET on S3. The web page
    /// reads pages of plain logs this way (a compressed object cannot be
    /// entered in the middle). `offset` must be below the object's size;
    /// reading stops at `stored_size` as in [`Storage::open_copy`].
    pub async fn open_from(
        &self,
        key: &ArchiveKey,
        offset: u64,
        stored_size: Option<u64>,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        let rest: Box<dyn AsyncRead + Send + Unpin> = match &self.backend {
            Backend::Local(s) => Box::new(s.open_from(key, offset).await?),
            Backend::S3(s) => s.open_from(key, offset).await?,
        };
        Ok(match stored_size {
            Some(limit) => Box::new(rest.take(limit.saturating_sub(offset))),
            None => rest,
        })
    }

    /// The original log under `key`, decoded as the index says it was stored,
    /// from its first `stored_size` stored bytes (see [`Storage::open_copy`]).
    pub async fn open_log(
        &self,
        key: &ArchiveKey,
        compression: Compression,
        stored_size: Option<u64>,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StoreError> {
        Ok(compress::decode(
            self.open_copy(key, stored_size).await?,
            compression,
        ))
    }

    /// Reads the object in full (up to `stored_size`, see
    /// [`Storage::open_copy`]): size and sha256 of the stored bytes and,
    /// decoding them, of the log. A compressed object that does not decode is
    /// an error.
    pub async fn digest(
        &self,
        key: &ArchiveKey,
        compression: Compression,
        stored_size: Option<u64>,
    ) -> Result<ObjectDigest, StoreError> {
        let codec_err = |e: std::io::Error| StoreError::Codec {
            key: key.to_string(),
            message: format!("read error: {e}"),
        };
        let mut raw = Hashing::new(self.open_copy(key, stored_size).await?);
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
                // A grown copy is several frames, one per delta.
                decoder.multiple_members(true);
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

    /// Takes the archive's writer lock, held for a pass (local backend: an OS
    /// lock on a file in the staging folder, so two malog processes with
    /// different indexes never sweep each other's staging files). S3 needs none:
    /// its sweep only takes multipart uploads a day old. A second holder gets
    /// [`StoreError::Busy`].
    pub fn lock_writer(&self) -> Result<Option<std::fs::File>, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.lock_writer().map(Some),
            Backend::S3(_) => Ok(None),
        }
    }

    /// Appends in place left unfinished (local backend; none on S3): see
    /// [`LocalStore::pending_appends`].
    pub async fn pending_appends(&self) -> Result<Vec<PendingAppend>, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.pending_appends().await,
            Backend::S3(_) => Ok(Vec::new()),
        }
    }

    /// Cuts an unfinished append back to `committed`: see
    /// [`LocalStore::roll_back_append`].
    pub async fn roll_back_append(
        &self,
        pending: &PendingAppend,
        committed: Option<u64>,
    ) -> Result<RolledBack, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.roll_back_append(pending, committed).await,
            Backend::S3(_) => Ok(RolledBack::Replaced),
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

    /// Whether the backend answers, accepts our credentials and lets us write
    /// now (health checks), leaving nothing behind. Local: a probe file in
    /// staging, written and removed. S3: a multipart upload started and aborted.
    pub async fn probe(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local(s) => s.probe(key).await,
            Backend::S3(s) => s.probe(key).await,
        }
    }

    /// Writes a small object under `key`, reads it back and deletes it: whether
    /// the archive accepts all three now (`malog doctor`). The object is deleted
    /// even when reading it back fails.
    pub async fn round_trip(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        const BODY: &[u8] = b"malog storage probe\n";
        let mut writer = self.create_with(key, &LogMeta::default()).await?;
        // On an error the writer is dropped, which discards what was staged.
        writer.write(BODY).await?;
        let stored = writer.finish().await?;
        let read = async {
            let mut reader = self
                .open_log(&stored.key, stored.compression, Some(stored.stored_size))
                .await?;
            let mut back = Vec::new();
            reader
                .read_to_end(&mut back)
                .await
                .map_err(|e| StoreError::Codec {
                    key: stored.key.to_string(),
                    message: format!("read error: {e}"),
                })?;
            Ok::<_, StoreError>(back)
        }
        .await;
        let deleted = self.delete(&stored.key).await;
        let back = read?;
        deleted?;
        if back != BODY {
            return Err(StoreError::Codec {
                key: stored.key.to_string(),
                message: "reading the probe object back gave other bytes than were written"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Where the object under `key` lives (a path, or `s3://bucket/key`).
    pub fn location(&self, key: &ArchiveKey) -> String {
        match &self.backend {
            Backend::Local(s) => s.path_of(key).display().to_string(),
            Backend::S3(s) => s.location(key),
        }
    }
}

/// A running size and sha256.
#[derive(Default)]
struct Tally {
    size: u64,
    hasher: Sha256,
}

impl Tally {
    /// A tally that has already seen `size` bytes, continuing from `hasher`.
    fn resume(size: u64, hasher: Option<Sha256>) -> Option<Tally> {
        Some(Tally {
            size,
            hasher: hasher?,
        })
    }

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The growth record of a copy holding exactly `log` (uncompressed).
    pub fn growth_record(log: &[u8]) -> String {
        let mut tail = growth::Tail::default();
        tail.update(log);
        Growth::new(&Sha256::new_with_prefix(log), None, &tail).encode()
    }
}
