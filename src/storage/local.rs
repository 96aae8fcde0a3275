//! The local-folder backend: write to `<root>/.staging/`, then fsync, rename into
//! place and fsync the directory, in batches shared by concurrent writers
//! (`commit.rs`).
//!
//! The staging folder sits under the root so that the rename never crosses a file
//! system. Its name starts with a dot, which no sanitised key segment can produce
//! as a whole path, and `query`/`verify` never look there.
//!
//! Resume across restarts: a writer given a resume token (the source's validators)
//! keeps `<staging>.meta` beside its `.part` file, recording the token and how many
//! bytes are durable (fsynced every [`SYNC_EVERY`] bytes). After a crash,
//! [`LocalStore::resume`] truncates the `.part` file to that length, so a power cut
//! cannot leave unwritten pages inside the resumed prefix.
//!
//! Extending a copy ([`LocalStore::extend`]): the staging file starts as a
//! clone of the archived file (shared blocks, XFS or Btrfs) and is committed
//! like any other, so the old copy stays until the new one is durable. Where
//! the file system cannot share blocks, the delta is appended to the archived
//! file in place, or (`append_in_place = false`, or a file a kept version
//! links to) the staging file starts as a copy made inside the kernel
//! (`copy_file_range`), never through this process's memory: `append.rs`.

mod append;

pub use append::{PendingAppend, RolledBack};

use super::commit::{Committer, Staged, SyncMode};
use super::pagecache;
use super::{ArchiveKey, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::fs;

const STAGING_DIR: &str = ".staging";
/// Write buffer: large enough that a 16 KiB network chunk is not a syscall (and
/// a blocking-thread hop) each.
const WRITE_BUFFER: usize = 1 << 20;
/// A resumable staging file is fsynced, and its durable length recorded, this often.
pub const SYNC_EVERY: u64 = 32 << 20;
/// Resumable staging files older than this are swept anyway.
const RESUME_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The sidecar of a resumable staging file.
#[derive(serde::Serialize, serde::Deserialize)]
struct ResumeMeta {
    /// Opaque to storage: the fetch layer's validators of the source log.
    token: String,
    /// Bytes of the `.part` file known to be on disk.
    durable: u64,
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    committer: Committer,
    /// The resumable staging files the last sweep kept; `None` before any sweep.
    /// Lets [`LocalStore::resume`] answer "nothing to resume" without a file
    /// system call per log (only a crashed process leaves resumable files, and
    /// every pass sweeps first).
    resumable: Arc<Mutex<Option<HashSet<PathBuf>>>>,
    /// Grow copies in place where blocks cannot be shared (`append.rs`).
    append_in_place: bool,
    /// The file system refused to clone a file once: do not ask again.
    clone_refused: Arc<AtomicBool>,
}

/// Opening an archived object failed: a missing file is the contract's
/// `NotFound`, anything else an I/O error naming the path.
fn open_error(key: &ArchiveKey, path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound {
            key: key.to_string(),
        }
    } else {
        io_err(path)(e)
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl LocalStore {
    /// Opens (and creates) the archive root.
    pub async fn open_root(root: PathBuf, sync: SyncMode) -> Result<LocalStore, StoreError> {
        let staging = root.join(STAGING_DIR);
        fs::create_dir_all(&staging)
            .await
            .map_err(io_err(&staging))?;
        Ok(LocalStore {
            root,
            committer: Committer::start(sync),
            resumable: Arc::default(),
            append_in_place: true,
            clone_refused: Arc::default(),
        })
    }

    /// Whether a grown copy may be appended to in place where the file system
    /// cannot share blocks (`[storage] append_in_place`; default true).
    pub fn with_append_in_place(mut self, allowed: bool) -> LocalStore {
        self.append_in_place = allowed;
        self
    }

    /// Every file under the root except the staging folder (`index rebuild`).
    pub async fn list(&self) -> Result<Vec<super::listing::Listed>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || super::listing::walk_local(&root, STAGING_DIR))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: self.root.clone(),
                    source: std::io::Error::other(format!("listing failed: {e}")),
                })
            })
    }

    pub fn path_of(&self, key: &ArchiveKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// One staging file per key: a crashed write of the same key is simply replaced.
    pub(super) fn staging_path(&self, key: &ArchiveKey) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        self.root
            .join(STAGING_DIR)
            .join(format!("{}.part", &digest[..32]))
    }

    /// A writer for `key`; its staging file is created at the first write.
    pub fn create(&self, key: &ArchiveKey) -> LocalWriter {
        LocalWriter::new(self, None, self.staging_path(key), key, 0)
    }

    /// A writer for `key` that continues the `len` bytes of the file now
    /// under `key`: a staging file sharing its blocks, the file itself (an
    /// append in place) or a staging file copied inside the kernel, in that
    /// order (`append.rs`); what is written next is appended. Never resumable
    /// by a later process: a crash leaves a staging file that the next sweep
    /// removes, or an appended tail that the next pass cuts back, and the next
    /// pass extends the old copy again.
    pub async fn extend(&self, key: &ArchiveKey, len: u64) -> Result<LocalWriter, StoreError> {
        let staging = self.staging_path(key);
        let source = self.path_of(key);
        let ways = append::Extend {
            staging: staging.clone(),
            source: source.clone(),
            key: key.to_string(),
            len,
            in_place: self.append_in_place,
            clone_refused: self.clone_refused.clone(),
        };
        let opened = tokio::task::spawn_blocking(move || ways.open())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let (file, in_place) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(reason)) => {
                return Err(StoreError::NotExtendable {
                    key: key.to_string(),
                    reason,
                });
            }
            Err(e) => {
                let _ = fs::remove_file(&staging).await;
                return Err(io_err(&source)(e));
            }
        };
        let mut writer = LocalWriter::new(self, Some(file), staging, key, len);
        writer.in_place = in_place.then_some(len);
        Ok(writer)
    }

    /// The appends in place that a crash (or a failed pass) may have left
    /// unfinished: each must be cut back to the size the index committed
    /// ([`LocalStore::roll_back_append`]) before anything reads past it.
    pub async fn pending_appends(&self) -> Result<Vec<PendingAppend>, StoreError> {
        let dir = self.root.join(STAGING_DIR);
        let found = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || append::pending(&dir)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        Ok(found
            .map_err(io_err(&dir))?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// Cuts the file of an unfinished append back to `committed` (what the
    /// index says is stored; `None`: leave the file as it is), then forgets
    /// the intent.
    pub async fn roll_back_append(
        &self,
        pending: &PendingAppend,
        committed: Option<u64>,
    ) -> Result<RolledBack, StoreError> {
        let Some(key) = pending.archive_key() else {
            return Err(StoreError::NotFound {
                key: pending.key.clone(),
            });
        };
        let target = self.path_of(&key);
        let intent = self.staging_path(&key).with_extension(append::INTENT);
        let record = pending.clone();
        let done = tokio::task::spawn_blocking({
            let target = target.clone();
            move || {
                let outcome = match committed {
                    Some(size) => append::roll_back(&target, &record, size)?,
                    None => RolledBack::Intact,
                };
                std::fs::remove_file(&intent)?;
                Ok(outcome)
            }
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        done.map_err(io_err(&target))
    }

    /// Writes a staging file for `key` and removes it: can we write here now?
    pub async fn probe(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        let staging = self.staging_path(key);
        let path = staging.clone();
        let result = tokio::task::spawn_blocking(move || {
            let written =
                create_staging(&path).and_then(|mut file| file.write_all(b"malog health probe\n"));
            let _ = std::fs::remove_file(&path);
            written
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        result.map_err(io_err(&staging))
    }

    /// Reopens the staging file an interrupted process left for `key`, cut to
    /// its durable length; returns the writer (appending), that length and the
    /// resume token. `None` when there is nothing usable to resume.
    pub async fn resume(
        &self,
        key: &ArchiveKey,
    ) -> Result<Option<(LocalWriter, u64, String)>, StoreError> {
        let staging = self.staging_path(key);
        if let Some(known) = self
            .resumable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            && !known.remove(&staging)
        {
            return Ok(None);
        }
        let Ok(text) = fs::read(meta_path(&staging)).await else {
            return Ok(None);
        };
        let Ok(meta) = serde_json::from_slice::<ResumeMeta>(&text) else {
            return Ok(None);
        };
        let file = match fs::OpenOptions::new().write(true).open(&staging).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&staging)(e)),
        };
        let len = file.metadata().await.map_err(io_err(&staging))?.len();
        if len < meta.durable {
            return Ok(None);
        }
        file.set_len(meta.durable).await.map_err(io_err(&staging))?;
        let mut file = file;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::End(0))
            .await
            .map_err(io_err(&staging))?;
        let file = file.into_std().await;
        let mut writer = LocalWriter::new(self, Some(file), staging, key, meta.durable);
        writer.token = Some(meta.token.clone());
        writer.has_sidecar = true;
        Ok(Some((writer, meta.durable, meta.token)))
    }

    /// The staging file of `key`, for re-hashing a resumed prefix.
    pub async fn open_staging(&self, key: &ArchiveKey) -> Result<fs::File, StoreError> {
        let staging = self.staging_path(key);
        fs::File::open(&staging).await.map_err(io_err(&staging))
    }

    /// The size of the object under `key`.
    pub async fn head(&self, key: &ArchiveKey) -> Result<u64, StoreError> {
        let path = self.path_of(key);
        match fs::metadata(&path).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes the object; a missing one is not an error.
    pub async fn delete(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        let path = self.path_of(key);
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub async fn open(&self, key: &ArchiveKey) -> Result<fs::File, StoreError> {
        let path = self.path_of(key);
        fs::File::open(&path)
            .await
            .map_err(|e| open_error(key, &path, e))
    }

    /// [`LocalStore::open`] for a thread that may block (see
    /// [`super::Storage::open_blocking`]).
    pub fn open_blocking(&self, key: &ArchiveKey) -> Result<std::fs::File, StoreError> {
        let path = self.path_of(key);
        std::fs::File::open(&path).map_err(|e| open_error(key, &path, e))
    }

    /// [`LocalStore::open`], positioned at byte `offset`.
    pub async fn open_from(&self, key: &ArchiveKey, offset: u64) -> Result<fs::File, StoreError> {
        use tokio::io::AsyncSeekExt;
        let mut file = self.open(key).await?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io_err(&self.path_of(key)))?;
        Ok(file)
    }

    /// Locks the staging folder itself (`flock` on the directory, so no lock
    /// file sits among the staging files) for this process; see
    /// [`super::Storage::lock_writer`]. The OS drops it with the handle or the process.
    pub fn lock_writer(&self) -> Result<std::fs::File, StoreError> {
        let path = self.root.join(STAGING_DIR);
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        match crate::filelock::lock(&file) {
            Ok(true) => Ok(file),
            Ok(false) => Err(StoreError::Busy {
                path: self.root.clone(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes leftovers of interrupted writes, keeping resumable ones (with a
    /// `.meta` sidecar) for a week, and sidecars a crash left half-written
    /// (`.meta-new`); returns how many files went.
    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        let dir = self.root.join(STAGING_DIR);
        let mut entries = fs::read_dir(&dir).await.map_err(io_err(&dir))?;
        let mut removed = 0;
        let mut kept = HashSet::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err(&dir))? {
            let path = entry.path();
            let (part, meta) = match path.extension().and_then(|e| e.to_str()) {
                Some("part") => (path.clone(), meta_path(&path)),
                Some("meta") => (path.with_extension("part"), path.clone()),
                // Written, then renamed over `.meta`: a leftover is never current.
                Some("meta-new" | append::INTENT_NEW) => {
                    fs::remove_file(&path).await.map_err(io_err(&path))?;
                    removed += 1;
                    continue;
                }
                _ => continue,
            };
            let resumable = fs::metadata(&part).await.is_ok()
                && fs::metadata(&meta)
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < RESUME_MAX_AGE);
            if resumable {
                kept.insert(part);
            } else {
                fs::remove_file(&path).await.map_err(io_err(&path))?;
                removed += 1;
            }
        }
        *self
            .resumable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kept);
        Ok(removed)
    }
}

fn meta_path(staging: &Path) -> PathBuf {
    staging.with_extension("meta")
}

/// An object being written to its staging file.
///
/// Bytes collect in a buffer and go to the file in large writes on a blocking
/// thread, one write in flight while the next buffer fills, so the network and
/// the disk work at the same time. Each write of a large log also starts the
/// kernel's write-back of what it wrote, so the final fsync waits for little
/// instead of for the whole log, and drops what was written well before from
/// the page cache (`pagecache.rs`). The file is created by the first write, so
/// a small log costs one blocking call (create + write) before its commit.
pub struct LocalWriter {
    /// With the writer while no write is in flight; `None` before the first.
    file: Option<std::fs::File>,
    /// Bytes not yet handed to a write.
    buf: Vec<u8>,
    /// The buffer of the write in flight, back for reuse once it is done.
    spare: Vec<u8>,
    in_flight: Option<tokio::task::JoinHandle<Flushed>>,
    /// Finished or aborted: the staging file is no longer this writer's.
    done: bool,
    staging: PathBuf,
    target: PathBuf,
    committer: Committer,
    /// Set when the write may be resumed by a later process.
    token: Option<String>,
    /// The `.meta` sidecar exists (written with the first fsync: before it,
    /// nothing is durable and there is nothing to resume).
    has_sidecar: bool,
    /// Bytes accepted so far.
    written: u64,
    /// `written` when the last fsync was asked for.
    synced: u64,
    /// Set when appending to the archived file itself: its committed size,
    /// which an abandoned write cuts it back to.
    in_place: Option<u64>,
}

/// What a write on the blocking thread hands back.
struct Flushed {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// `Ok(true)` when the write also fsynced and recorded the sidecar.
    result: std::io::Result<bool>,
}

/// One write of a buffer to the staging file.
struct WriteOp {
    staging: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// Where `buf` starts in the file.
    offset: u64,
    /// Start write-back of these bytes and drop older ones from the page
    /// cache (not for the last write: the commit starts write-back of whole
    /// batches).
    writeback: bool,
    /// Fsync, then record this sidecar (path, contents).
    record: Option<(PathBuf, Vec<u8>)>,
}

impl WriteOp {
    fn run(self) -> Flushed {
        let WriteOp {
            staging,
            file,
            buf,
            offset,
            writeback,
            record,
        } = self;
        let mut file = match file {
            Some(file) => file,
            None => match create_staging(&staging) {
                Ok(file) => file,
                Err(e) => {
                    return Flushed {
                        file: None,
                        buf,
                        result: Err(e),
                    };
                }
            },
        };
        let result = (|| {
            file.write_all(&buf)?;
            if writeback {
                pagecache::start_writeback(&file, offset, buf.len() as u64);
                pagecache::drop_behind(&file, offset, buf.len() as u64);
            }
            let Some((path, text)) = record else {
                return Ok(false);
            };
            file.sync_data()?;
            // Atomic (temp file + rename): a crash leaves the old or the new
            // sidecar, both true.
            let tmp = path.with_extension("meta-new");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            Ok(true)
        })();
        Flushed {
            file: Some(file),
            buf,
            result,
        }
    }
}

impl LocalWriter {
    fn new(
        store: &LocalStore,
        file: Option<std::fs::File>,
        staging: PathBuf,
        key: &ArchiveKey,
        written: u64,
    ) -> LocalWriter {
        LocalWriter {
            file,
            buf: Vec::new(),
            spare: Vec::new(),
            in_flight: None,
            done: false,
            staging,
            target: store.path_of(key),
            committer: store.committer.clone(),
            token: None,
            has_sidecar: false,
            written,
            synced: written,
            in_place: None,
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        assert!(!self.done, "write after finish or abort");
        if !self.buf.is_empty() && self.buf.len() + chunk.len() > WRITE_BUFFER {
            self.flush(true).await?;
        }
        // The buffer grows with what is written, up to WRITE_BUFFER: a small
        // object (a manifest, a short log) costs its size, not the whole
        // buffer, and many are written at once.
        self.buf.extend_from_slice(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Waits for the write in flight (if any), then starts writing the buffer.
    async fn flush(&mut self, writeback: bool) -> Result<(), StoreError> {
        self.settle().await?;
        let record = match &self.token {
            Some(token) if writeback && self.written - self.synced >= SYNC_EVERY => {
                let meta = ResumeMeta {
                    token: token.clone(),
                    durable: self.written,
                };
                self.synced = self.written;
                let text = serde_json::to_vec(&meta).expect("plain struct serialises");
                Some((meta_path(&self.staging), text))
            }
            _ => None,
        };
        let buf = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        let op = WriteOp {
            staging: self.staging.clone(),
            file: self.file.take(),
            offset: self.written - buf.len() as u64,
            buf,
            writeback,
            record,
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || op.run()));
        Ok(())
    }

    /// Waits for the write in flight and takes back its file and buffer.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(op) = self.in_flight.take() else {
            return Ok(());
        };
        let flushed = op.await.map_err(|e| StoreError::Io {
            path: self.staging.clone(),
            source: std::io::Error::other(format!("write task failed: {e}")),
        })?;
        self.file = flushed.file;
        self.spare = flushed.buf;
        self.spare.clear();
        if flushed.result.map_err(io_err(&self.staging))? {
            self.has_sidecar = true;
        }
        Ok(())
    }

    /// Lets a later process resume this write once part of it is durable;
    /// `token` describes the source. Logs shorter than [`SYNC_EVERY`] never
    /// get a sidecar: they restart from 0.
    pub fn make_resumable(&mut self, token: String) {
        self.token = Some(token);
    }

    /// Makes the file durable under its final name (in a batch with other
    /// writers' files, see `commit.rs`); returns that path.
    pub async fn finish(mut self) -> Result<PathBuf, StoreError> {
        assert!(!self.done, "finish called once");
        self.flush(false).await?;
        self.settle().await?;
        // The memory goes now: the file may wait a while for its batch.
        self.buf = Vec::new();
        self.spare = Vec::new();
        let file = self
            .file
            .take()
            .expect("a completed write leaves the file open");
        self.done = true;
        if let Some(committed) = self.in_place {
            return self.finish_in_place(file, committed).await;
        }
        let staged = Staged {
            file,
            staging: self.staging.clone(),
            target: self.target.clone(),
            sidecar: self.has_sidecar.then(|| meta_path(&self.staging)),
        };
        self.committer.commit(staged).await?;
        Ok(self.target.clone())
    }

    /// An append in place is done once its bytes are durable (the file's new
    /// size with them); the caller's index update commits it. On an error the
    /// file is cut back to `committed`.
    async fn finish_in_place(
        &self,
        file: std::fs::File,
        committed: u64,
    ) -> Result<PathBuf, StoreError> {
        let target = self.target.clone();
        let synced = tokio::task::spawn_blocking(move || {
            let synced = file.sync_data();
            if synced.is_ok() {
                pagecache::drop_cached(&file);
            } else {
                drop(file);
                append::undo(&target, committed);
            }
            synced
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        synced.map_err(io_err(&self.target))?;
        Ok(self.target.clone())
    }

    /// Leaves the write for a later process to resume, as a crash would but
    /// with everything received kept (a graceful stop): the bytes written so far
    /// are made durable and recorded in the sidecar. Without a resume token
    /// there is nothing a later process could check them against, so the
    /// staging file goes, as with [`LocalWriter::abort`].
    pub async fn suspend(mut self) {
        let Some(token) = self.token.clone() else {
            return self.abort().await;
        };
        if self.settle().await.is_err() || self.written == 0 {
            return self.abort().await;
        }
        let meta = ResumeMeta {
            token,
            durable: self.written,
        };
        let buf = std::mem::take(&mut self.buf);
        let op = WriteOp {
            staging: self.staging.clone(),
            file: self.file.take(),
            offset: self.written - buf.len() as u64,
            buf,
            writeback: false,
            record: Some((
                meta_path(&self.staging),
                serde_json::to_vec(&meta).expect("plain struct serialises"),
            )),
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || op.run()));
        match self.settle().await {
            Ok(()) => {
                self.done = true;
                tracing::info!(bytes = self.written, file = %self.staging.display(), "download stopped; kept for the next pass to resume");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep a stopped download for resuming");
                self.abort().await;
            }
        }
    }

    pub async fn abort(mut self) {
        let _ = self.settle().await;
        self.done = true;
        self.file.take();
        if let Some(committed) = self.in_place {
            let target = self.target.clone();
            let _ = tokio::task::spawn_blocking(move || append::undo(&target, committed)).await;
            return;
        }
        let _ = fs::remove_file(&self.staging).await;
        let _ = fs::remove_file(meta_path(&self.staging)).await;
    }
}

/// A fresh staging file; a sidecar left by an interrupted write of the same key
/// goes first, so it can never describe this file.
pub(super) fn create_staging(staging: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(meta_path(staging)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::File::create(staging)
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // A writer dropped mid-stream (a cancelled task) must not leave its staging
        // file behind. A write still in flight could create the file after an
        // unlink here, so the cleanup waits for it when a runtime is at hand;
        // otherwise the next pass's sweep removes what is left.
        if self.done {
            return;
        }
        let staging = std::mem::take(&mut self.staging);
        // An append in place is cut back instead (the archived file stays).
        let in_place = self.in_place.map(|n| (self.target.clone(), n));
        let remove = move || match in_place {
            Some((target, committed)) => append::undo(&target, committed),
            None => {
                let _ = std::fs::remove_file(&staging);
                let _ = std::fs::remove_file(meta_path(&staging));
            }
        };
        match (self.in_flight.take(), tokio::runtime::Handle::try_current()) {
            (Some(op), Ok(runtime)) => {
                runtime.spawn(async move {
                    let _ = op.await;
                    let _ = tokio::task::spawn_blocking(remove).await;
                });
            }
            // A blocking unlink of one file is acceptable here.
            _ => remove(),
        }
    }
}

#[cfg(test)]
mod tests;
