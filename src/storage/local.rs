//! The local-folder backend: write to `<root>/.staging/`, fsync, rename into place,
//! fsync the directory.
//!
//! The staging folder sits under the root so that the rename never crosses a file
//! system. Its name starts with a dot, which no sanitised key segment can produce
//! as a whole path, and `query`/`verify` never look there.

use super::{ArchiveKey, StoreError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::fs;
use tokio::io::{AsyncWriteExt, BufWriter};

const STAGING_DIR: &str = ".staging";
/// Write buffer: large enough that a 16 KiB network chunk is not a syscall each.
const WRITE_BUFFER: usize = 1 << 20;

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
        let file = fs::File::create(&staging).await.map_err(io_err(&staging))?;
        Ok(LocalWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            staging,
            target: self.path_of(key),
        })
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

    pub async fn sweep_staging(&self) -> Result<usize, StoreError> {
        let dir = self.root.join(STAGING_DIR);
        let mut entries = fs::read_dir(&dir).await.map_err(io_err(&dir))?;
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await.map_err(io_err(&dir))? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "part") {
                fs::remove_file(&path).await.map_err(io_err(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// An object being written to its staging file.
pub struct LocalWriter {
    /// `None` once finished or aborted.
    file: Option<BufWriter<fs::File>>,
    staging: PathBuf,
    target: PathBuf,
}

impl LocalWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("write after finish or abort");
        file.write_all(chunk).await.map_err(io_err(&self.staging))
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
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // A writer dropped mid-stream (a cancelled task) must not leave its staging
        // file behind; a blocking unlink of one file is acceptable here.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.staging);
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
