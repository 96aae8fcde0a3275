//! One storage conformance suite, run against every backend: the local folder and
//! a real S3 server (s3s-fs on 127.0.0.1, see `s3_server`), each without and with
//! zstd compression. Then the S3-only upload-path faults.
//!
//! Every case checks the contract of `malog::storage`: nothing visible under the
//! final key until `finish`, the previous object intact until then, nothing left
//! behind by an abort, a drop or a failure, and the bytes read back equal to the
//! bytes written (size and sha256 of the log and of the stored object).

use crate::s3_server::{S3Op, S3Server};
use malog::storage::{
    ArchiveKey, Compression, KeyLayout, KeyParts, LocalStore, S3Store, Storage, StoreError,
    StoredObject, SyncMode,
};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A little over two S3 parts (the tests use 5 MiB parts).
const LARGE: usize = 12 * 1024 * 1024 + 17;
/// The chunk size the fetcher sees from the network, roughly.
const CHUNK: usize = 64 * 1024;

pub struct Fixture {
    pub storage: Storage,
    pub compression: Compression,
    /// The S3 server and a raw client (for HEAD and metadata), when on S3.
    pub s3: Option<(S3Server, S3Store)>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn local(compression: Compression) -> Fixture {
        Fixture::local_with(compression, SyncMode::File).await
    }

    pub async fn local_with(compression: Compression, sync: SyncMode) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_root(dir.path().join("archive"), sync)
            .await
            .unwrap();
        Fixture {
            storage: Storage::local(store).with_compression(compression, 3),
            compression,
            s3: None,
            dir,
        }
    }

    pub async fn s3(compression: Compression) -> Fixture {
        let server = S3Server::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = server.config(dir.path(), "archive/v1");
        // Every upload counts as stale, so the sweep case needs no waiting.
        let store = S3Store::connect(&config)
            .unwrap()
            .with_stale_after(Duration::ZERO);
        Fixture {
            storage: Storage::s3(store.clone()).with_compression(compression, 3),
            compression,
            s3: Some((server, store)),
            dir,
        }
    }

    fn server(&self) -> Option<&S3Server> {
        self.s3.as_ref().map(|(s, _)| s)
    }

    async fn write(&self, key: &ArchiveKey, data: &[u8]) -> StoredObject {
        let mut w = self.storage.create(key).await.unwrap();
        for chunk in data.chunks(CHUNK) {
            w.write(chunk).await.unwrap();
        }
        w.finish().await.unwrap()
    }

    async fn read_log(&self, stored: &StoredObject) -> Vec<u8> {
        let mut out = Vec::new();
        self.storage
            .open_log(&stored.key, stored.compression, Some(stored.stored_size))
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    /// Whether anything is readable under `key` as stored (with the suffix).
    async fn visible(&self, key: &ArchiveKey) -> bool {
        match self.storage.open(&self.storage.stored_key(key)).await {
            Ok(_) => true,
            Err(StoreError::NotFound { .. }) => false,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// Staging files (local) or open uploads and their part files (S3).
    fn leftovers(&self) -> usize {
        match self.server() {
            Some(s) => s.open_uploads() + s.part_files().len(),
            None => std::fs::read_dir(self.dir.path().join("archive/.staging"))
                .unwrap()
                .count(),
        }
    }

    /// On S3, waits (bounded) until `n` parts are stored: a part still uploading
    /// when a crashed process's upload is swept would land after the sweep.
    async fn parts_settled(&self, n: usize) {
        let Some(server) = self.server() else { return };
        for _ in 0..250 {
            if server.part_files().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{n} parts not stored after 5 s");
    }

    /// Waits (bounded) until a background abort has removed every leftover.
    async fn no_leftovers_soon(&self) {
        for _ in 0..100 {
            if self.leftovers() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.leftovers(), 0, "leftovers after 2 s");
    }
}

fn key(s: &str) -> ArchiveKey {
    ArchiveKey::from_stored(s).unwrap()
}

/// A key rendered by the layout, so it carries its job and task ids.
fn task_key(job: &str, task: &str) -> ArchiveKey {
    KeyLayout::parse("p/{job_id}/{task_id}.log")
        .unwrap()
        .render(KeyParts {
            source: "s",
            region: "r",
            project_id: "p",
            job_id: job,
            job_name: "n",
            task_id: task,
        })
}

/// Incompressible bytes (xorshift), so the compressed object is large too.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn log_text(lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|i| format!("step {i} loss=0.{:04} lr=3e-4\n", (i * 7919) % 10_000).into_bytes())
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The object's own account of itself agrees with what was written and with a
/// full re-read.
async fn assert_describes(f: &Fixture, stored: &StoredObject, data: &[u8]) {
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, sha(data));
    assert_eq!(stored.compression, f.compression);
    assert_eq!(
        stored.key.as_str().ends_with(".zst"),
        f.compression == Compression::Zstd
    );
    if f.compression == Compression::None {
        assert_eq!(
            (stored.stored_size, &stored.stored_sha256),
            (stored.size, &stored.sha256)
        );
    }
    let digest = f
        .storage
        .digest(&stored.key, stored.compression, Some(stored.stored_size))
        .await
        .unwrap();
    assert_eq!(digest.log_size, stored.size);
    assert_eq!(digest.log_sha256, stored.sha256);
    assert_eq!(digest.stored_size, stored.stored_size);
    assert_eq!(digest.stored_sha256, stored.stored_sha256);
    assert!(f.read_log(stored).await == data);
    assert_eq!(
        f.storage.head(&stored.key).await.unwrap().stored_size,
        stored.stored_size
    );
}

async fn put_small_then_get(f: &Fixture) {
    let data = log_text(100);
    let k = task_key("job-1", "worker-0");
    let stored = f.write(&k, &data).await;
    assert_describes(f, &stored, &data).await;
    assert!(stored.location.ends_with(stored.key.as_str()), "{stored:?}");
    if let Some((server, store)) = &f.s3 {
        assert_eq!(server.calls(S3Op::PutObject), 1, "one PUT below a part");
        assert_eq!(server.calls(S3Op::CreateMultipartUpload), 0);
        let head = store.head(&stored.key).await.unwrap();
        assert_eq!(head.log_sha256.as_deref(), Some(stored.sha256.as_str()));
        assert_eq!(head.metadata["job-id"], "job-1");
        assert_eq!(head.metadata["task-id"], "worker-0");
        assert_eq!(head.metadata["log-size"], data.len().to_string());
        assert_eq!(
            head.content_type.as_deref(),
            Some(f.compression.content_type())
        );
        assert_eq!(head.content_encoding, None, "no Content-Encoding, ever");
        assert_eq!(
            stored.location,
            format!("s3://malog-test/archive/v1/{}", stored.key)
        );
    }
    assert_eq!(f.leftovers(), 0);
}

async fn put_empty(f: &Fixture) {
    let k = key("p/j/empty.log");
    let w = f.storage.create(&k).await.unwrap();
    let stored = w.finish().await.unwrap();
    assert_describes(f, &stored, b"").await;
}

async fn put_large_streams_in_parts(f: &Fixture) {
    let data = noise(LARGE, 7);
    let k = task_key("job-2", "worker-1");
    let stored = f.write(&k, &data).await;
    assert_describes(f, &stored, &data).await;
    if let Some((server, store)) = &f.s3 {
        assert_eq!(server.calls(S3Op::CreateMultipartUpload), 1);
        assert!(server.calls(S3Op::UploadPart) >= 3, "parts of 5 MiB");
        assert_eq!(server.calls(S3Op::PutObject), 0);
        // The sha256, known only at the end, was added by a copy in place.
        let head = store.head(&stored.key).await.unwrap();
        assert_eq!(head.log_sha256.as_deref(), Some(stored.sha256.as_str()));
        assert_eq!(head.metadata["job-id"], "job-2");
        assert_eq!(head.metadata["task-id"], "worker-1");
        assert_eq!(head.content_encoding, None);
    }
    assert_eq!(f.leftovers(), 0);
}

async fn overwrite_replaces(f: &Fixture) {
    let k = key("p/j/w.log");
    f.write(&k, b"first version\n").await;
    let data = log_text(5000);
    let stored = f.write(&k, &data).await;
    assert_describes(f, &stored, &data).await;
}

async fn abort_mid_stream_leaves_nothing(f: &Fixture) {
    let old = key("p/j/old.log");
    let before = f.write(&old, b"the archived copy\n").await;
    // A rewrite of an existing object, and a brand-new object, both broken off
    // past the first part (so an S3 multipart upload is open).
    for k in [old.clone(), key("p/j/new.log")] {
        let mut w = f.storage.create(&k).await.unwrap();
        for chunk in noise(LARGE / 2 + CHUNK, 3).chunks(CHUNK) {
            w.write(chunk).await.unwrap();
        }
        w.abort().await;
    }
    assert!(!f.visible(&key("p/j/new.log")).await);
    assert!(f.read_log(&before).await == b"the archived copy\n");
    assert_eq!(f.leftovers(), 0);
    if let Some(server) = f.server() {
        assert_eq!(server.calls(S3Op::AbortMultipartUpload), 2);
    }
}

async fn drop_mid_stream_leaves_nothing(f: &Fixture) {
    let k = key("p/j/dropped.log");
    let mut w = f.storage.create(&k).await.unwrap();
    for chunk in noise(LARGE / 2 + CHUNK, 4).chunks(CHUNK) {
        w.write(chunk).await.unwrap();
    }
    drop(w);
    f.no_leftovers_soon().await;
    assert!(!f.visible(&k).await);
}

/// Abort is idempotent: before any byte, and on a writer whose upload is gone.
async fn abort_is_idempotent(f: &Fixture) {
    let k = key("p/j/never.log");
    f.storage.create(&k).await.unwrap().abort().await;
    let mut w = f.storage.create(&k).await.unwrap();
    for chunk in noise(LARGE / 2 + CHUNK, 5).chunks(CHUNK) {
        w.write(chunk).await.unwrap();
    }
    // Someone (the sweep of another process) aborted the upload already.
    f.parts_settled(1).await;
    assert_eq!(f.storage.sweep_staging().await.unwrap(), 1);
    w.abort().await;
    assert!(!f.visible(&k).await);
    assert_eq!(f.leftovers(), 0);
}

async fn delete_removes(f: &Fixture) {
    let k = key("p/j/gone.log");
    let stored = f.write(&k, b"x").await;
    f.storage.delete(&stored.key).await.unwrap();
    assert!(!f.visible(&k).await);
    f.storage.delete(&stored.key).await.unwrap();
}

async fn missing_is_not_found(f: &Fixture) {
    let k = key("p/j/missing.log");
    assert!(matches!(
        f.storage.open(&k).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        f.storage.head(&k).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// GUARD: what a crashed process left (no abort, no drop) goes at the next start.
async fn sweep_removes_crash_leftovers(f: &Fixture) {
    let k = key("p/j/crashed.log");
    let mut w = f.storage.create(&k).await.unwrap();
    for chunk in noise(LARGE / 2 + CHUNK, 6).chunks(CHUNK) {
        w.write(chunk).await.unwrap();
    }
    std::mem::forget(w);
    f.parts_settled(1).await;
    assert!(f.leftovers() > 0);
    assert_eq!(f.storage.sweep_staging().await.unwrap(), 1);
    assert_eq!(f.leftovers(), 0);
    assert!(!f.visible(&k).await);
    assert_eq!(f.storage.sweep_staging().await.unwrap(), 0);
}

macro_rules! suite {
    ($name:ident, $fixture:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = $fixture.await;
                    super::$case(&f).await;
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        suite!(local, Fixture::local(Compression::None), [$($case),*]);
        suite!(local_zstd, Fixture::local(Compression::Zstd), [$($case),*]);
        suite!(local_syncfs, Fixture::local_with(Compression::None, SyncMode::Filesystem), [$($case),*]);
        suite!(s3, Fixture::s3(Compression::None), [$($case),*]);
        suite!(s3_zstd, Fixture::s3(Compression::Zstd), [$($case),*]);
    };
}

conformance!(
    put_small_then_get,
    put_empty,
    put_large_streams_in_parts,
    overwrite_replaces,
    abort_mid_stream_leaves_nothing,
    drop_mid_stream_leaves_nothing,
    abort_is_idempotent,
    delete_removes,
    missing_is_not_found,
    sweep_removes_crash_leftovers,
);

// S3 upload-path faults. object_store retries each request (`max_retries`, here
// 3); what still fails aborts the upload and leaves nothing.

async fn s3_fixture() -> Fixture {
    Fixture::s3(Compression::None).await
}

async fn try_write(f: &Fixture, k: &ArchiveKey, data: &[u8]) -> Result<StoredObject, StoreError> {
    let mut w = f.storage.create(k).await?;
    for chunk in data.chunks(CHUNK) {
        if let Err(e) = w.write(chunk).await {
            w.abort().await;
            return Err(e);
        }
    }
    w.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_transient_part_and_put_failures_are_retried() {
    let f = s3_fixture().await;
    let server = f.server().unwrap();
    server.fail(S3Op::UploadPart, 2);
    server.fail(S3Op::PutObject, 1);
    server.fail(S3Op::CompleteMultipartUpload, 1);
    let data = noise(LARGE, 11);
    let stored = try_write(&f, &key("p/j/big.log"), &data).await.unwrap();
    assert_describes(&f, &stored, &data).await;
    let small = try_write(&f, &key("p/j/small.log"), b"tiny").await.unwrap();
    assert!(f.read_log(&small).await == b"tiny");
    assert_eq!(server.calls(S3Op::PutObject), 2);
    assert_eq!(f.leftovers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_persistent_part_failure_aborts_the_upload() {
    let f = s3_fixture().await;
    f.server().unwrap().fail(S3Op::UploadPart, 1000);
    let k = key("p/j/big.log");
    let err = try_write(&f, &k, &noise(LARGE, 12)).await.unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(!f.visible(&k).await);
    assert_eq!(f.leftovers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failed_completion_leaves_nothing_and_keeps_the_old_copy() {
    let f = s3_fixture().await;
    let k = key("p/j/w.log");
    let old = f.write(&k, b"old copy").await;
    f.server()
        .unwrap()
        .fail(S3Op::CompleteMultipartUpload, 1000);
    try_write(&f, &k, &noise(LARGE, 13)).await.unwrap_err();
    assert!(f.read_log(&old).await == b"old copy");
    assert_eq!(f.leftovers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failed_single_put_leaves_nothing() {
    let f = s3_fixture().await;
    f.server().unwrap().fail(S3Op::PutObject, 1000);
    let k = key("p/j/small.log");
    try_write(&f, &k, b"small log").await.unwrap_err();
    assert!(!f.visible(&k).await);
}

/// GUARD: the metadata copy is a nicety; its failure leaves a complete object
/// (with its ids, without the sha256 metadata) and a successful write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_metadata_copy_failure_keeps_the_object() {
    let f = s3_fixture().await;
    f.server().unwrap().fail(S3Op::CopyObject, 1000);
    let data = noise(LARGE, 14);
    let stored = try_write(&f, &task_key("j", "w"), &data).await.unwrap();
    assert_describes(&f, &stored, &data).await;
    let head = f.s3.as_ref().unwrap().1.head(&stored.key).await.unwrap();
    assert_eq!(head.log_sha256, None);
    assert_eq!(head.metadata["job-id"], "j");
    assert_eq!(f.leftovers(), 0);
}

/// GUARD: a wrong secret key is reported by the first request, not taken for a
/// missing feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_fails_the_sweep() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = server.config(dir.path(), "");
    std::fs::write(config.secret_key_file.as_ref().unwrap(), "wrong").unwrap();
    let storage = Storage::s3(S3Store::connect(&config).unwrap());
    let err = storage.sweep_staging().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(!text.contains(crate::s3_server::SECRET_KEY), "{text}");
}

/// GUARD: the health probe sends a request on S3 (a buffered write would not)
/// and reports a server that rejects the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reaches_the_backend() {
    let probe = key(".malog-probe");
    let f = Fixture::local(Compression::None).await;
    f.storage.probe(&probe).await.unwrap();
    assert_eq!(f.leftovers(), 0);
    let f = s3_fixture().await;
    f.storage.probe(&probe).await.unwrap();
    let config = f.server().unwrap().config(f.dir.path(), "");
    std::fs::write(config.secret_key_file.as_ref().unwrap(), "wrong").unwrap();
    let wrong = Storage::s3(S3Store::connect(&config).unwrap());
    assert!(wrong.probe(&probe).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_credentials_are_a_usage_error() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = server.config(dir.path(), "");
    config.secret_key_file = Some(dir.path().join("no-such-file"));
    let err = S3Store::connect(&config).unwrap_err();
    assert!(err.is_usage(), "{err}");
    assert!(err.to_string().contains("storage.secret_key_file"), "{err}");
}

/// GUARD: the S3 health probe checks that we may write (a HEAD would pass with
/// read-only keys), and leaves no upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_probe_checks_write_permission_and_leaves_nothing() {
    let f = s3_fixture().await;
    let server = f.server().unwrap();
    let k = key(".malog-healthz/probe");
    f.storage.probe(&k).await.unwrap();
    assert_eq!(server.calls(S3Op::CreateMultipartUpload), 1);
    assert_eq!(server.calls(S3Op::AbortMultipartUpload), 1);
    assert!(!f.visible(&k).await);
    assert_eq!(f.leftovers(), 0);
    server.fail(S3Op::CreateMultipartUpload, 1000);
    f.storage.probe(&k).await.unwrap_err();
}
