//! Tests of `local`.

use super::*;
use tokio::io::AsyncReadExt;

async fn open(root: PathBuf) -> LocalStore {
    LocalStore::open_root(root, SyncMode::File).await.unwrap()
}

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
    let store = open(dir.path().join("a")).await;
    let k = key("p/j/worker-0.log");
    let mut w = store.create(&k);
    w.write(b"hello ").await.unwrap();
    assert!(!store.path_of(&k).exists());
    w.write(b"world").await.unwrap();
    let path = w.finish().await.unwrap();
    assert_eq!(path, store.path_of(&k));
    assert_eq!(store.head(&k).await.unwrap(), 11);
    assert_eq!(read(&store, &k).await, b"hello world");

    let mut w = store.create(&k);
    w.write(b"partial").await.unwrap();
    w.abort().await;
    assert_eq!(read(&store, &k).await, b"hello world");

    let mut w = store.create(&k);
    w.write(b"dropped").await.unwrap();
    drop(w);
    assert_eq!(read(&store, &k).await, b"hello world");
    assert_eq!(store.sweep_staging().await.unwrap(), 0);
}

/// GUARD: writers finishing together are committed together, each with its
/// own result: one that cannot be placed fails alone and leaves no staging
/// file, the others are in place with their bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_finishes_commit_together_and_fail_alone() {
    for sync in [SyncMode::File, SyncMode::Filesystem] {
        concurrent_finishes(sync).await;
    }
}

async fn concurrent_finishes(sync: SyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open_root(dir.path().to_owned(), sync)
        .await
        .unwrap();
    // A file where the bad key needs a directory.
    std::fs::write(dir.path().join("blocked"), b"not a directory").unwrap();
    let keys: Vec<String> = (0..40)
        .map(|i| format!("job-{}/worker-{i}.log", i % 7))
        .chain(["blocked/worker-0.log".to_owned()])
        .collect();
    let results = futures::future::join_all(keys.iter().map(|k| {
        let store = store.clone();
        async move {
            let mut w = store.create(&key(k));
            w.write(k.as_bytes()).await.unwrap();
            w.write(&vec![b'x'; 3 * WRITE_BUFFER / 2]).await.unwrap();
            w.finish().await
        }
    }))
    .await;
    for (k, result) in keys.iter().zip(&results) {
        if k.starts_with("blocked/") {
            assert!(matches!(result, Err(StoreError::Io { .. })), "{result:?}");
        } else {
            assert_eq!(result.as_ref().unwrap(), &store.path_of(&key(k)));
            let bytes = read(&store, &key(k)).await;
            assert!(bytes.starts_with(k.as_bytes()));
            assert_eq!(bytes.len(), k.len() + 3 * WRITE_BUFFER / 2);
        }
    }
    let staging = std::fs::read_dir(dir.path().join(STAGING_DIR)).unwrap();
    assert_eq!(staging.count(), 0);
}

/// GUARD: an empty log still becomes an (empty) file.
#[tokio::test]
async fn empty_log_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path().to_owned()).await;
    let k = key("j/empty.log");
    store.create(&k).finish().await.unwrap();
    assert_eq!(store.head(&k).await.unwrap(), 0);
}

/// GUARD: an archived log does not stay in the page cache, in either
/// sync mode (the host's cache is not the archive's).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn finished_logs_leave_the_page_cache() {
    use crate::storage::pagecache::tests::{disk_dir, resident};
    for sync in [SyncMode::File, SyncMode::Filesystem] {
        let dir = disk_dir();
        let store = LocalStore::open_root(dir.path().to_owned(), sync)
            .await
            .unwrap();
        let k = key("j/worker-0.log");
        let mut w = store.create(&k);
        w.write(&vec![b'x'; 3 * WRITE_BUFFER]).await.unwrap();
        let path = w.finish().await.unwrap();
        let pages = resident(&path);
        assert!(pages.iter().all(|&r| !r), "{sync:?}: pages still cached");
    }
}

/// GUARD: a crash between writing a sidecar and renaming it leaves a
/// `.meta-new` file; the sweep removes it with the other leftovers.
#[tokio::test]
async fn sweep_removes_leftovers_and_missing_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path().to_owned()).await;
    std::fs::write(dir.path().join(".staging/x.part"), b"junk").unwrap();
    std::fs::write(dir.path().join(".staging/y.meta-new"), b"{\"tok").unwrap();
    assert_eq!(store.sweep_staging().await.unwrap(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path().join(".staging"))
            .unwrap()
            .count(),
        0
    );
    assert!(matches!(
        store.open(&key("nope")).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// GUARD: two stores over the same root (two configs with different
/// indexes) cannot both hold the writer lock; it frees with the handle.
#[tokio::test]
async fn one_writer_per_archive_root() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open(dir.path().to_owned()).await,
        open(dir.path().to_owned()).await,
    );
    let held = a.lock_writer().unwrap();
    assert!(matches!(b.lock_writer(), Err(StoreError::Busy { .. })));
    drop(held);
    b.lock_writer().unwrap();
}
