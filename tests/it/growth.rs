//! Growing logs cost their growth: a grown log is fetched from its archived
//! size minus the overlap and appended to the copy, in every backend (local
//! plain, local zstd, S3 plain and zstd on s3s-fs); a rewritten log, or a
//! server that ignores Range, is downloaded whole; a crash between the delta
//! and the swap leaves a consistent archive; a final job's copy built from
//! deltas is confirmed by one full download before it is sealed.

use crate::harness::*;
use crate::s3_server::S3Server;
use malog::index::Index;
use malog::sim::{Fault, FaultKind, FaultTarget};
use malog::storage::{ArchiveKey, OVERLAP, Storage};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const JOB: &str = "live";
const TASK: &str = "worker-0";
/// Larger than the overlap, not a multiple of anything.
const FIRST: u64 = 1024 * 1024 + 17;
const GROWTH: u64 = 300_001;

/// Where the archive lives in one run of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Backend {
    Local,
    LocalZstd,
    S3,
    S3Zstd,
}

pub(crate) const BACKENDS: [Backend; 4] = [
    Backend::Local,
    Backend::LocalZstd,
    Backend::S3,
    Backend::S3Zstd,
];

impl Backend {
    /// The `[storage]` TOML for this backend (S3 objects under `prefix`), and
    /// the S3 server, which must outlive the harness's passes.
    pub(crate) async fn storage(
        self,
        dir: &std::path::Path,
        prefix: &str,
    ) -> (String, Option<S3Server>) {
        match self {
            Backend::Local => (String::new(), None),
            Backend::LocalZstd => ("\n[storage]\ncompression = \"zstd\"\n".to_owned(), None),
            Backend::S3 | Backend::S3Zstd => {
                let server = S3Server::start().await;
                let compression = if self == Backend::S3Zstd {
                    "zstd"
                } else {
                    "none"
                };
                let toml = server.storage_toml(dir, prefix, compression);
                (toml, Some(server))
            }
        }
    }
}

/// A running job with one log of `FIRST` bytes, archived into `backend`. The
/// S3 server must outlive the harness's passes.
async fn harness(backend: Backend) -> (Harness, Option<S3Server>) {
    let mut h = Harness::start(vec![running_job(JOB, &[FIRST])]).await;
    let (storage, server) = backend.storage(h.dir.path(), "growth").await;
    // seal_grace sits in [fetch]: a final job's copy may be sealed at once.
    h.extra = format!("{FAST_FETCH}seal_grace = \"1ms\"\n{storage}");
    (h, server)
}

/// The archived log read back through storage, and the stored object's own
/// digest, both checked against the index row.
async fn assert_archive_equals_source(h: &Harness, context: &str) {
    let config = h.config();
    let storage = Storage::from_config(&config.storage).await.unwrap();
    let index = Index::open_read_only(&config.index_path).unwrap();
    let copy = index.stored_copy(JOB, TASK).unwrap().expect("a copy");
    let key = ArchiveKey::from_stored(&copy.storage_key).unwrap();
    let compression = copy.compression;
    let mut got = Vec::new();
    storage
        // The whole object, not only what the index committed: no
        // uncommitted tail may be left behind either.
        .open_log(&key, compression, None)
        .await
        .unwrap()
        .read_to_end(&mut got)
        .await
        .unwrap();
    let source = h.sim.log_bytes(JOB, TASK);
    assert_eq!(got.len(), source.len(), "{context}: length");
    assert!(
        got == source,
        "{context}: the archive differs from the source"
    );
    let sha = hex::encode(Sha256::digest(&source));
    assert_eq!(
        (copy.size, copy.sha256.as_str()),
        (source.len() as u64, sha.as_str()),
        "{context}"
    );
    // What `verify` re-hashes: the stored bytes, and the log decoded from them.
    let digest = storage.digest(&key, compression, None).await.unwrap();
    assert_eq!(Some(digest.stored_size), copy.stored_size, "{context}");
    assert_eq!(Some(digest.stored_sha256), copy.stored_sha256, "{context}");
    assert_eq!(
        (digest.log_size, digest.log_sha256),
        (copy.size, sha),
        "{context}"
    );
}

/// GUARD: an appended log costs its growth plus the overlap, twice in a row
/// (the second delta extends a copy that is already a delta: two frames with
/// zstd), and the archive equals the source, in every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_log_fetches_only_the_delta() {
    for backend in BACKENDS {
        let (h, _server) = harness(backend).await;
        let first = h.run().await;
        assert_eq!(first.totals.downloaded, FIRST, "{backend:?}");
        let mut size = FIRST;
        for round in 1..=2 {
            let context = format!("{backend:?} round {round}");
            let old = size;
            size += GROWTH * round;
            h.sim.set_task_size(JOB, TASK, size);
            h.sim.reset_stats();
            let report = h.run().await;
            assert_eq!(report.outcome(), "ok", "{context}: {:?}", report.failures);
            let served = h.sim.bytes_served_for(JOB, TASK);
            assert_eq!(served, size - old + OVERLAP, "{context}: only the delta");
            assert_eq!(h.sim.stats().range_requests, 1, "{context}");
            let t = &report.totals;
            assert_eq!((t.fetched, t.grown, t.bytes), (1, 1, size), "{context}");
            assert_eq!(t.downloaded, served, "{context}");
            let row = h.row(JOB, TASK);
            assert!(row.unconfirmed && !row.sealed, "{context}: {row:?}");
            assert_archive_equals_source(&h, &context).await;
        }
        assert_eq!(h.staging_files(), 0, "{backend:?}");
    }
}

/// GUARD: a log rewritten with a larger size fails the overlap check and is
/// downloaded whole; the archive equals the new log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_larger_log_is_downloaded_whole() {
    for backend in BACKENDS {
        let (h, _server) = harness(backend).await;
        h.run().await;
        let size = FIRST + GROWTH;
        h.sim.set_task_seed(JOB, TASK, 4242);
        h.sim.set_task_size(JOB, TASK, size);
        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let t = &report.totals;
        assert_eq!((t.fetched, t.grown), (1, 0), "{backend:?}");
        let stats = h.sim.stats();
        assert_eq!(
            stats.downloads, 2,
            "{backend:?}: the ranged try, then the whole log"
        );
        assert!(
            h.sim.bytes_served_for(JOB, TASK) >= size,
            "{backend:?}: {stats:?}"
        );
        assert!(!h.row(JOB, TASK).unconfirmed);
        assert_archive_equals_source(&h, &format!("{backend:?}")).await;
    }
}

/// GUARD: a server that answers a range request with 200 and the whole log
/// costs one full download, used as it is; the archive equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_gets_a_full_download() {
    for backend in BACKENDS {
        let (h, _server) = harness(backend).await;
        h.run().await;
        let size = FIRST + GROWTH;
        h.sim.set_task_size(JOB, TASK, size);
        h.sim
            .inject(Fault::new(FaultTarget::Download, FaultKind::IgnoreRange).task(TASK));
        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let stats = h.sim.stats();
        assert_eq!(
            (stats.downloads, stats.range_requests),
            (1, 0),
            "{backend:?}"
        );
        assert_eq!(h.sim.bytes_served_for(JOB, TASK), size, "{backend:?}");
        assert_eq!((report.totals.fetched, report.totals.grown), (1, 0));
        assert!(!h.row(JOB, TASK).unconfirmed);
        assert_archive_equals_source(&h, &format!("{backend:?}")).await;
    }
}

/// GUARD: when the job becomes final, a copy built from deltas gets one full
/// download that confirms it, and is then sealed: no more requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_job_is_confirmed_once_then_sealed() {
    for backend in BACKENDS {
        let (h, _server) = harness(backend).await;
        h.run().await;
        let size = FIRST + GROWTH;
        h.sim.set_task_size(JOB, TASK, size);
        h.run().await;
        assert!(h.row(JOB, TASK).unconfirmed);

        h.sim.set_job_phase(JOB, "Completed");
        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let t = &report.totals;
        assert_eq!(
            (t.confirmed, t.replaced, t.fetched),
            (1, 0, 0),
            "{backend:?}"
        );
        assert_eq!(
            h.sim.bytes_served_for(JOB, TASK),
            size,
            "{backend:?}: one full download"
        );
        let row = h.row(JOB, TASK);
        assert!(row.sealed && !row.unconfirmed, "{backend:?}: {row:?}");
        assert_archive_equals_source(&h, &format!("{backend:?}")).await;

        h.sim.reset_stats();
        let again = h.run().await;
        let stats = h.sim.stats();
        assert_eq!(
            (stats.link_requests, stats.downloads),
            (0, 0),
            "{backend:?}"
        );
        assert_eq!(again.totals.confirmed, 0);
    }
}

/// GUARD: a copy whose old bytes went bad (same size) is carried into the
/// delta unseen, but the final confirmation finds the mismatch, counts it and
/// replaces the copy with the downloaded log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_confirmation_replaces_a_wrong_copy() {
    let (h, _server) = harness(Backend::Local).await;
    h.run().await;
    let path = h.row(JOB, TASK).location.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    h.sim.set_task_size(JOB, TASK, FIRST + GROWTH);
    let grown = h.run().await;
    assert_eq!(grown.totals.grown, 1);

    h.sim.set_job_phase(JOB, "Completed");
    let report = h.run().await;
    let t = &report.totals;
    assert_eq!(
        (t.confirmed, t.replaced, t.fetched),
        (1, 1, 1),
        "{report:?}"
    );
    let row = h.row(JOB, TASK);
    assert!(row.sealed && !row.unconfirmed, "{row:?}");
    assert_archive_equals_source(&h, "replaced").await;
}

/// GUARD: `kill -9` after the delta has started arriving (the staging copy is
/// made, or the append in place begun) and before the swap or the index
/// update: the old copy's bytes stay in place and in the index, and the next
/// pass extends it again to an exact copy (`growth_in_place.rs` has the
/// appended bytes themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_delta_and_swap_leaves_a_consistent_archive() {
    for backend in [Backend::Local, Backend::LocalZstd] {
        let (h, _server) = harness(backend).await;
        h.run().await;
        let old_row = h.row(JOB, TASK);
        let old_bytes = std::fs::read(old_row.location.as_ref().unwrap()).unwrap();
        let size = FIRST + GROWTH;
        h.sim.set_task_size(JOB, TASK, size);
        let stall_at = OVERLAP + GROWTH / 2;
        h.sim.inject(
            Fault::new(
                FaultTarget::Download,
                FaultKind::Stall {
                    after: stall_at,
                    duration: Duration::from_secs(60),
                },
            )
            .task(TASK),
        );
        let text = h
            .config_text()
            .replace("idle_timeout = \"2s\"", "idle_timeout = \"120s\"");
        std::fs::write(h.dir.path().join("config.toml"), &text).unwrap();
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("malog"))
            .arg("--config")
            .arg(h.dir.path().join("config.toml"))
            .arg("backfill")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The delta is at the stall and its staging copy exists.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while h.sim.bytes_served_for(JOB, TASK) < stall_at || h.staging_files() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: never reached the stall"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            h.row(JOB, TASK),
            old_row,
            "{backend:?}: the index still holds the old copy"
        );
        let now = std::fs::read(old_row.location.as_ref().unwrap()).unwrap();
        assert!(
            now.get(..old_bytes.len()) == Some(&old_bytes[..]),
            "{backend:?}: the old copy's bytes are untouched"
        );

        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        assert_eq!(report.totals.grown, 1, "{backend:?}");
        assert_eq!(
            h.sim.bytes_served_for(JOB, TASK),
            GROWTH + OVERLAP,
            "{backend:?}"
        );
        assert_eq!(h.staging_files(), 0, "{backend:?}");
        assert_archive_equals_source(&h, &format!("{backend:?} after the crash")).await;
    }
}

/// GUARD: a delta whose body breaks is resumed where it broke (Range +
/// If-Range on the extended copy), not restarted: the growth and the overlap
/// are served once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_delta_resumes_where_it_broke() {
    for backend in [Backend::Local, Backend::S3Zstd] {
        let (h, _server) = harness(backend).await;
        h.run().await;
        let size = FIRST + GROWTH;
        h.sim.set_task_size(JOB, TASK, size);
        h.sim.inject(
            Fault::new(
                FaultTarget::Download,
                FaultKind::ResetMidBody {
                    after: OVERLAP + GROWTH / 3,
                },
            )
            .task(TASK),
        );
        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        assert_eq!(report.totals.grown, 1, "{backend:?}");
        assert_eq!(h.sim.stats().range_requests, 2, "{backend:?}");
        assert_eq!(
            h.sim.bytes_served_for(JOB, TASK),
            GROWTH + OVERLAP,
            "{backend:?}"
        );
        assert_archive_equals_source(&h, &format!("{backend:?} resumed")).await;
    }
}
