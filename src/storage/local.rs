//! The local-folder backend: write to `<root>/.staging/`, fsync, rename into place,
//! fsync the directory.
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

use super::{ArchiveKey, StoreError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::fs;
use tokio::io::{AsyncWriteExt, BufWriter};

const STAGING_DIR: &str = ".staging";
/// Write buffer: large enough that a 16 KiB network chunk is not a syscall each.
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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl LocalStore {
    /// Opens (and creates) the archive root.
    pub async fn open_root(root: PathBuf) -> Result<LocalStore, StoreError> {
        let staging = root.join(STAGING_DIR);
        fs::create_dir_all(&staging)
            .await
            .map_err(io_err(&staging))?;
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, key: &ArchiveKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// One staging file per key: a crashed write of the same key is simply replaced.
    fn staging_path(&self, key: &ArchiveKey) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        self.root
            .join(STAGING_DIR)
            .join(format!("{}.part", &digest[..32]))
    }

    pub async fn create(&self, key: &ArchiveKey) -> Result<LocalWriter, StoreError> {
        let staging = self.staging_path(key);
        let _ = fs::remove_file(meta_path(&staging)).await;
        let file = fs::File::create(&staging).await.map_err(io_err(&staging))?;
        Ok(LocalWriter::new(file, staging, self.path_of(key), 0))
    }

    /// Reopens the staging file an interrupted process left for `key`, cut to
    /// its durable length; returns the writer (appending), that length and the
    /// resume token. `None` when there is nothing usable to resume.
    pub async fn resume(
        &self,
        key: &ArchiveKey,
    ) -> Result<Option<(LocalWriter, u64, String)>, StoreError> {
        let staging = self.staging_path(key);
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
        let mut writer = LocalWriter::new(file, staging, self.path_of(key), meta.durable);
        writer.token = Some(meta.token.clone());
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
        match fs::File::open(&path).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes leftovers of interrupted writes, keeping resumable ones (with a
    /// `.meta` sidecar) for a week; returns how many files went.
    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        let dir = self.root.join(STAGING_DIR);
        let mut entries = fs::read_dir(&dir).await.map_err(io_err(&dir))?;
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await.map_err(io_err(&dir))? {
            let path = entry.path();
            let (part, meta) = match path.extension().and_then(|e| e.to_str()) {
                Some("part") => (path.clone(), meta_path(&path)),
                Some("meta") => (path.with_extension("part"), path.clone()),
                _ => continue,
            };
            let resumable = fs::metadata(&part).await.is_ok()
                && fs::metadata(&meta)
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < RESUME_MAX_AGE);
            if !resumable {
                fs::remove_file(&path).await.map_err(io_err(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn meta_path(staging: &Path) -> PathBuf {
    staging.with_extension("meta")
}

/// An object being written to its staging file.
pub struct LocalWriter {
    /// `None` once finished or aborted.
    file: Option<BufWriter<fs::File>>,
    staging: PathBuf,
    target: PathBuf,
    /// Set when the write may be resumed by a later process.
    token: Option<String>,
    written: u64,
    /// `written` at the last fsync.
    durable: u64,
}

impl LocalWriter {
    fn new(file: fs::File, staging: PathBuf, target: PathBuf, written: u64) -> LocalWriter {
        LocalWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            staging,
            target,
            token: None,
            written,
            durable: written,
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("write after finish or abort");
        file.write_all(chunk).await.map_err(io_err(&self.staging))?;
        self.written += chunk.len() as u64;
        if self.token.is_some() && self.written - self.durable >= SYNC_EVERY {
            self.sync_and_record().await?;
        }
        Ok(())
    }

    /// Lets a later process resume this write; `token` describes the source.
    pub async fn make_resumable(&mut self, token: String) -> Result<(), StoreError> {
        self.token = Some(token);
        self.record().await
    }

    async fn sync_and_record(&mut self) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("write after finish or abort");
        file.flush().await.map_err(io_err(&self.staging))?;
        file.get_mut()
            .sync_data()
            .await
            .map_err(io_err(&self.staging))?;
        self.durable = self.written;
        self.record().await
    }

    /// Writes the sidecar atomically (temp file + rename): a crash leaves the old
    /// or the new one, both true.
    async fn record(&self) -> Result<(), StoreError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let meta = ResumeMeta {
            token: token.clone(),
            durable: self.durable,
        };
        let path = meta_path(&self.staging);
        let tmp = path.with_extension("meta-new");
        let text = serde_json::to_vec(&meta).expect("plain struct serialises");
        fs::write(&tmp, text).await.map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).await.map_err(io_err(&path))
    }

    /// Makes the file durable under its final name; returns that path.
    pub async fn finish(mut self) -> Result<PathBuf, StoreError> {
        let mut file = self.file.take().expect("finish called once");
        let staging = self.staging.clone();
        let result = async {
            file.flush().await.map_err(io_err(&staging))?;
            file.get_mut().sync_all().await.map_err(io_err(&staging))?;
            drop(file);
            let parent = self
                .target
                .parent()
                .expect("a key always has a file name")
                .to_owned();
            fs::create_dir_all(&parent).await.map_err(io_err(&parent))?;
            fs::rename(&staging, &self.target)
                .await
                .map_err(io_err(&self.target))?;
            // The rename is durable only once the directory entry is.
            let dir = fs::File::open(&parent).await.map_err(io_err(&parent))?;
            dir.sync_all().await.map_err(io_err(&parent))
        }
        .await;
        let _ = fs::remove_file(meta_path(&self.staging)).await;
        match result {
            Ok(()) => Ok(self.target.clone()),
            Err(e) => {
                let _ = fs::remove_file(&self.staging).await;
                Err(e)
            }
        }
    }

    pub async fn abort(mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.staging).await;
        let _ = fs::remove_file(meta_path(&self.staging)).await;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // A writer dropped mid-stream (a cancelled task) must not leave its staging
        // file behind; a blocking unlink of one file is acceptable here.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.staging);
            let _ = std::fs::remove_file(meta_path(&self.staging));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn key(s: &str) -> ArchiveKey {
        ArchiveKey::from_stored(s).unwrap()
    }

    async fn read(store: &LocalStore, k: &ArchiveKey) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .open(k)
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    /// GUARD: an object is invisible until finish, and an old copy survives an aborted rewrite.
    #[tokio::test]
    async fn staged_write_then_rename() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_root(dir.path().join("a")).await.unwrap();
        let k = key("p/j/worker-0.log");
        let mut w = store.create(&k).await.unwrap();
        w.write(b"hello ").await.unwrap();
        assert!(!store.path_of(&k).exists());
        w.write(b"world").await.unwrap();
        let path = w.finish().await.unwrap();
        assert_eq!(path, store.path_of(&k));
        assert_eq!(store.head(&k).await.unwrap(), 11);
        assert_eq!(read(&store, &k).await, b"hello world");

        let mut w = store.create(&k).await.unwrap();
        w.write(b"partial").await.unwrap();
        w.abort().await;
        assert_eq!(read(&store, &k).await, b"hello world");

        let mut w = store.create(&k).await.unwrap();
        w.write(b"dropped").await.unwrap();
        drop(w);
        assert_eq!(read(&store, &k).await, b"hello world");
        assert_eq!(store.sweep_staging().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sweep_removes_leftovers_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_root(dir.path().to_owned()).await.unwrap();
        std::fs::write(dir.path().join(".staging/x.part"), b"junk").unwrap();
        assert_eq!(store.sweep_staging().await.unwrap(), 1);
        assert!(matches!(
            store.open(&key("nope")).await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
