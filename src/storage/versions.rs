//! Keeping an archived object as a version before a rewritten log's new object
//! replaces it: the version keys, and how each backend makes the old bytes
//! durable under one without reading them.
//!
//! Version `n` of the object stored under `<log key><suffix>` (the suffix is
//! the compression's, `.zst` or none) lives under `<log key>.v<n><suffix>`,
//! beside it: `worker-0.log.v1`, `worker-0.log.v2.zst`. Numbers start at 1
//! and go up; a version is never overwritten or deleted by malog. The next
//! number is found in storage itself (the first free one), so keeping works
//! the same after the index was lost.
//!
//! Local: a hard link (the old inode stays, the new object's rename then
//! replaces only the key's directory entry), with a copy through the staging
//! folder where the file system has no hard links; then the folder is fsynced.
//! S3: CopyObject (server side, metadata included).
//!
//! Idempotent across crashes and retries: when the newest existing version is
//! the current object already (same inode; on S3 same size and sha256
//! metadata), that version is returned instead of a new one. A pass that kept
//! a version and then failed to store the new log therefore does not keep the
//! same bytes twice when it tries again. And when the object under the key is
//! not the one the index describes ([`Indexed`]: a crash after the new object
//! replaced it, before the index said so) while the newest version is, that
//! version is returned: the indexed copy is kept already, and the new object
//! is not taken for it. (Locally only sizes tell them apart; S3 objects also
//! carry the log's sha256.)
//!
//! Whether a log was rewritten is not decided here (see `fetch/history.rs`).

use super::local::io_err;
use super::{ArchiveKey, Backend, Compression, LocalStore, S3Store, Storage, StoreError};
use std::path::Path;

/// More versions than this of one log is a loop, not history.
const MAX_VERSIONS: u32 = 100_000;

/// An archived object kept as a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    /// 1, 2, …: the number in the key.
    pub n: u32,
    pub key: ArchiveKey,
    /// A file path, or `s3://bucket/key`.
    pub location: String,
}

/// What the index says of the object a version is kept of.
#[derive(Debug, Clone, Copy)]
pub struct Indexed<'a> {
    /// The stored object's size (`None`: not recorded).
    pub stored_size: Option<u64>,
    /// The log's sha256 (S3 objects carry it as metadata).
    pub log_sha256: &'a str,
}

/// The key of version `n` of the object stored under `key` with `compression`.
pub fn version_key(key: &ArchiveKey, compression: Compression, n: u32) -> ArchiveKey {
    let suffix = compression.suffix();
    let stored = key.as_str();
    let log = match stored.strip_suffix(suffix) {
        Some(log) if !suffix.is_empty() => log,
        _ => stored,
    };
    ArchiveKey::from_stored(&format!("{log}.v{n}{suffix}"))
        .expect("a valid key with more characters in its last segment stays valid")
}

/// Whether a stored key is a kept version's (`….v<n>`, before an optional
/// compression suffix), as [`version_key`] makes them.
pub fn is_version_key(key: &str) -> bool {
    let log = key.strip_suffix(Compression::Zstd.suffix()).unwrap_or(key);
    log.rsplit_once(".v").is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

impl Storage {
    /// Keeps the object under `key` (stored with `compression`) as its next
    /// version, durably, and returns it; see the module docs. The object
    /// under `key` is left as it is.
    pub async fn keep_version(
        &self,
        key: &ArchiveKey,
        compression: Compression,
        indexed: &Indexed<'_>,
    ) -> Result<KeptVersion, StoreError> {
        let (n, version) = match &self.backend {
            Backend::Local(store) => {
                let (store, key, size) = (store.clone(), key.clone(), indexed.stored_size);
                tokio::task::spawn_blocking(move || keep_local(&store, &key, compression, size))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: ".".into(),
                        source: std::io::Error::other(format!("keeping a version failed: {e}")),
                    })??
            }
            Backend::S3(store) => keep_s3(store, key, compression, indexed).await?,
        };
        Ok(KeptVersion {
            n,
            location: self.location(&version),
            key: version,
        })
    }
}

fn keep_local(
    store: &LocalStore,
    key: &ArchiveKey,
    compression: Compression,
    indexed_size: Option<u64>,
) -> Result<(u32, ArchiveKey), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let source = store.path_of(key);
    let current = match std::fs::metadata(&source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        }
        other => other.map_err(io_err(&source))?,
    };
    let mut newest = None;
    for n in 1..=MAX_VERSIONS {
        let version = version_key(key, compression, n);
        let path = store.path_of(&version);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => newest = Some((n, version, meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().expect("a key always has a file name");
                let indexed = |m: &std::fs::Metadata| indexed_size.is_none_or(|s| s == m.len());
                if let Some((k, kept, meta)) = newest
                    && ((meta.dev(), meta.ino()) == (current.dev(), current.ino())
                        || (!indexed(&current) && indexed(&meta)))
                {
                    sync_dir(dir)?;
                    return Ok((k, kept));
                }
                link_or_copy(store, &source, &version, &path)?;
                sync_dir(dir)?;
                return Ok((n, version));
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(too_many(key))
}

/// A hard link; where the file system refuses one, a copy made durable in the
/// staging folder and renamed into place (never a half-written version).
fn link_or_copy(
    store: &LocalStore,
    source: &Path,
    version: &ArchiveKey,
    path: &Path,
) -> Result<(), StoreError> {
    match std::fs::hard_link(source, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(io_err(path)(e)),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no hard link; copying the version");
            let staging = store.staging_path(version);
            std::fs::copy(source, &staging).map_err(io_err(&staging))?;
            std::fs::File::open(&staging)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&staging))?;
            std::fs::rename(&staging, path).map_err(io_err(path))
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

async fn keep_s3(
    store: &S3Store,
    key: &ArchiveKey,
    compression: Compression,
    indexed: &Indexed<'_>,
) -> Result<(u32, ArchiveKey), StoreError> {
    let current = store.head(key).await?;
    let described = |h: &super::s3::S3Head| {
        indexed.stored_size.is_none_or(|s| s == h.size)
            && h.log_sha256
                .as_deref()
                .is_none_or(|s| s == indexed.log_sha256)
    };
    let mut newest = None;
    for n in 1..=MAX_VERSIONS {
        let version = version_key(key, compression, n);
        match store.head(&version).await {
            Ok(head) => newest = Some((n, version, head)),
            Err(StoreError::NotFound { .. }) => {
                let same = |h: &super::s3::S3Head| {
                    h.size == current.size
                        && h.log_sha256.is_some()
                        && h.log_sha256 == current.log_sha256
                };
                if let Some((k, kept, head)) = newest
                    && (same(&head) || (!described(&current) && described(&head)))
                {
                    return Ok((k, kept));
                }
                store.copy(key, &version).await?;
                return Ok((n, version));
            }
            Err(e) => return Err(e),
        }
    }
    Err(too_many(key))
}

fn too_many(key: &ArchiveKey) -> StoreError {
    StoreError::Codec {
        key: key.to_string(),
        message: format!("more than {MAX_VERSIONS} versions; not keeping another"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SyncMode;

    #[test]
    fn version_keys_are_recognised() {
        for (key, is) in [
            ("p/j/worker-0.log.v1", true),
            ("p/j/worker-0.log.v12.zst", true),
            ("p/j/worker-0.log", false),
            ("p/j/worker-0.log.zst", false),
            ("p/j/worker-0.v", false),
            ("p/j/worker-0.vx1", false),
        ] {
            assert_eq!(is_version_key(key), is, "{key}");
        }
    }

    #[test]
    fn version_keys_keep_the_compression_suffix_last() {
        let plain = ArchiveKey::from_stored("p/j/worker-0.log").unwrap();
        let zst = ArchiveKey::from_stored("p/j/worker-0.log.zst").unwrap();
        assert_eq!(
            version_key(&plain, Compression::None, 1).as_str(),
            "p/j/worker-0.log.v1"
        );
        assert_eq!(
            version_key(&zst, Compression::Zstd, 12).as_str(),
            "p/j/worker-0.log.v12.zst"
        );
    }

    /// GUARD: keeping a version links the old bytes under the next free
    /// number, survives the key being replaced, and keeping the same object
    /// again (a retried pass) returns the version it already has.
    #[tokio::test]
    async fn local_versions_are_numbered_and_not_duplicated() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalStore::open_root(root.path().to_owned(), SyncMode::File)
            .await
            .unwrap();
        let storage = Storage::local(store);
        let key = ArchiveKey::from_stored("j/worker-0.log").unwrap();
        let path = root.path().join("j/worker-0.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"first").unwrap();

        let keep = |size: u64| {
            let (storage, key) = (storage.clone(), key.clone());
            async move {
                let indexed = Indexed {
                    stored_size: Some(size),
                    log_sha256: "",
                };
                storage
                    .keep_version(&key, Compression::None, &indexed)
                    .await
            }
        };
        let v1 = keep(5).await.unwrap();
        assert_eq!((v1.n, v1.key.as_str()), (1, "j/worker-0.log.v1"));
        assert_eq!(keep(5).await.unwrap(), v1, "a retry keeps no duplicate");

        // The new object replaces the key by rename, as the committer does.
        let staged = root.path().join("new");
        std::fs::write(&staged, b"second").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        assert_eq!(
            std::fs::read(root.path().join(v1.key.as_str())).unwrap(),
            b"first"
        );
        // The index still describes the first copy (a crash before it was
        // told of the second): the version holding it is the one kept.
        assert_eq!(keep(5).await.unwrap(), v1);
        let v2 = keep(6).await.unwrap();
        assert_eq!(v2.n, 2);
        assert_eq!(
            std::fs::read(root.path().join(v2.key.as_str())).unwrap(),
            b"second"
        );

        let missing = ArchiveKey::from_stored("j/none.log").unwrap();
        let indexed = Indexed {
            stored_size: None,
            log_sha256: "",
        };
        let err = storage
            .keep_version(&missing, Compression::None, &indexed)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
}
