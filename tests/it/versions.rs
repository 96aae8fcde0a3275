//! Never overwrite history: a log whose new content does not begin with the
//! archived copy (rewritten, truncated) keeps the copy as a version, in every
//! backend (local plain and zstd, S3 plain and zstd on s3s-fs); a grown log
//! does not. The real binary lists (`query --versions`), prints (`cat
//! --version`) and checks (`verify`) the versions, and `index rebuild` finds
//! them again in the job's manifest.

use crate::archive::delete_index;
use crate::growth::{BACKENDS, Backend};
use crate::harness::*;
use crate::s3_server::S3Server;
use crate::storage_e2e::{malog, run};
use sha2::{Digest, Sha256};

const JOB: &str = "rerun";
/// Larger than the overlap: re-checked with a delta request first.
const BIG: u64 = 1024 * 1024 + 17;
/// Smaller than the overlap: re-checked by a whole download.
const SMALL: u64 = 5_003;
const S3_PREFIX: &str = "versions";

/// A running job with a big and a small log, archived once into `backend`.
async fn archived(backend: Backend) -> (Harness, Option<S3Server>) {
    let mut h = Harness::start(vec![running_job(JOB, &[BIG, SMALL])]).await;
    let (storage, server) = backend.storage(h.dir.path(), S3_PREFIX).await;
    // seal_grace sits in [fetch]: a final job's copy may be confirmed at once.
    h.extra = format!("{FAST_FETCH}seal_grace = \"1ms\"\n{storage}");
    let first = h.run().await;
    assert_eq!(first.outcome(), "ok", "{backend:?}: {:?}", first.failures);
    (h, server)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn binary(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut cmd = malog(h);
    cmd.args(args);
    run(cmd).await
}

/// `query --versions --format json` of the job.
async fn versions(h: &Harness) -> Vec<serde_json::Value> {
    let out = binary(
        h,
        &["query", "--versions", "--job", JOB, "--format", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

/// `cat` of a task's current copy, or of one of its versions.
async fn cat(h: &Harness, task: &str, version: Option<u32>) -> Vec<u8> {
    let n = version.map(|n| n.to_string());
    let mut args = vec!["cat", JOB, task];
    if let Some(n) = &n {
        args.extend(["--version", n.as_str()]);
    }
    let out = binary(h, &args).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    out.stdout
}

/// `verify --format json`: its exit code and report.
async fn verify(h: &Harness) -> (Option<i32>, serde_json::Value) {
    let out = binary(h, &["verify", "--format", "json"]).await;
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

/// Flips a byte in the middle of a stored object, where it lives.
fn corrupt(h: &Harness, server: Option<&S3Server>, version: &serde_json::Value) {
    let key = version["storage_key"].as_str().unwrap();
    let path = match server {
        Some(server) => server.object_file(&format!("{S3_PREFIX}/{key}")),
        None => h.archive_root().join(key),
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
}

/// GUARD: a rewritten log (the big one, whose delta's overlap then differs,
/// and the small one, downloaded whole) keeps its old copy as version 1,
/// detected while streaming (each log is downloaded once more, not twice);
/// `cat --version 1` gives the old bytes, `verify` checks the versions and
/// finds one corrupted. In every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_log_keeps_its_old_version() {
    for backend in BACKENDS {
        let (h, server) = archived(backend).await;
        let old_big = h.sim.log_bytes(JOB, "worker-0");
        let old_small = h.sim.log_bytes(JOB, "worker-1");
        h.sim.set_task_seed(JOB, "worker-0", 4242);
        h.sim.set_task_size(JOB, "worker-0", BIG + 1000);
        h.sim.set_task_seed(JOB, "worker-1", 4343);
        h.sim.reset_stats();
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let t = &report.totals;
        assert_eq!((t.fetched, t.rewritten, t.grown), (2, 2, 0), "{backend:?}");
        assert_eq!(
            h.sim.bytes_served_for(JOB, "worker-1"),
            SMALL,
            "{backend:?}: the small log is downloaded once"
        );

        let rows = versions(&h).await;
        assert_eq!(rows.len(), 2, "{backend:?}: {rows:?}");
        for (row, task, old) in [
            (&rows[0], "worker-0", &old_big),
            (&rows[1], "worker-1", &old_small),
        ] {
            assert_eq!(row["task_id"], task, "{backend:?}");
            assert_eq!(row["version"], 1, "{backend:?}");
            assert_eq!(row["reason"], "rewritten", "{backend:?}");
            assert_eq!(row["size"], old.len() as u64, "{backend:?}");
            assert_eq!(row["sha256"], sha(old), "{backend:?}");
            let kept = cat(&h, task, Some(1)).await;
            assert!(&kept == old, "{backend:?} {task}: version 1 is the old log");
            let now = cat(&h, task, None).await;
            assert!(
                now == h.sim.log_bytes(JOB, task),
                "{backend:?} {task}: the current copy is the new log"
            );
        }
        let key = rows[0]["storage_key"].as_str().unwrap();
        let suffix = if matches!(backend, Backend::LocalZstd | Backend::S3Zstd) {
            ".log.v1.zst"
        } else {
            ".log.v1"
        };
        assert!(key.ends_with(&format!("worker-0{suffix}")), "{key}");

        let (code, report) = verify(&h).await;
        assert_eq!(code, Some(0), "{backend:?}: {report}");
        assert_eq!(
            (report["checked"].clone(), report["versions"].clone()),
            (4.into(), 2.into())
        );

        // The versions are in the job's manifest: a rebuilt index has them.
        delete_index(&h);
        let out = binary(&h, &["index", "rebuild", "--format", "json"]).await;
        assert_eq!(out.status.code(), Some(0), "{backend:?}: {out:?}");
        assert_eq!(
            versions(&h).await,
            rows,
            "{backend:?}: versions after a rebuild"
        );
        let (code, report) = verify(&h).await;
        assert_eq!(code, Some(0), "{backend:?}: {report}");
        assert_eq!(report["versions"], 2, "{backend:?}: {report}");

        corrupt(&h, server.as_ref(), &rows[0]);
        let (code, report) = verify(&h).await;
        assert_eq!(code, Some(1), "{backend:?}: {report}");
        let mismatches = report["mismatches"].as_array().unwrap();
        assert_eq!(mismatches.len(), 1, "{backend:?}: {report}");
        assert_eq!(
            (&mismatches[0]["task_id"], &mismatches[0]["version"]),
            (&"worker-0".into(), &1.into()),
            "{backend:?}"
        );
    }
}

/// GUARD: a truncated log keeps its old copy (reason `truncated`); a second
/// rewrite keeps the next version, and every version reads back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_log_keeps_its_old_version_and_versions_accumulate() {
    for backend in [Backend::Local, Backend::S3Zstd] {
        let (h, _server) = archived(backend).await;
        let first = h.sim.log_bytes(JOB, "worker-0");
        h.sim.set_task_size(JOB, "worker-0", BIG / 3);
        let report = h.run().await;
        assert_eq!(
            report.totals.rewritten, 1,
            "{backend:?}: {:?}",
            report.failures
        );
        let second = h.sim.log_bytes(JOB, "worker-0");
        h.sim.set_task_seed(JOB, "worker-0", 7);
        let report = h.run().await;
        assert_eq!(
            report.totals.rewritten, 1,
            "{backend:?}: {:?}",
            report.failures
        );

        let rows = versions(&h).await;
        let reasons: Vec<_> = rows
            .iter()
            .map(|r| (r["version"].clone(), r["reason"].clone()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1.into(), "truncated".into()),
                (2.into(), "rewritten".into())
            ],
            "{backend:?}"
        );
        assert!(cat(&h, "worker-0", Some(1)).await == first, "{backend:?}");
        assert!(cat(&h, "worker-0", Some(2)).await == second, "{backend:?}");
        assert!(cat(&h, "worker-0", None).await == h.sim.log_bytes(JOB, "worker-0"));
        let (code, report) = verify(&h).await;
        assert_eq!(code, Some(0), "{backend:?}: {report}");

        let missing = binary(&h, &["cat", JOB, "worker-0", "--version", "3"]).await;
        assert_eq!(missing.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("no version 3"));
    }
}

/// GUARD: a grown log (by a delta, and the small one by a whole download
/// whose start is the copy) is replaced by its longer successor: no version,
/// nothing beside the logs in storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grown_log_keeps_no_version() {
    for backend in BACKENDS {
        let (h, server) = archived(backend).await;
        h.sim.set_task_size(JOB, "worker-0", BIG + 300_001);
        h.sim.set_task_size(JOB, "worker-1", SMALL + 999);
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let t = &report.totals;
        assert_eq!((t.fetched, t.grown, t.rewritten), (2, 1, 0), "{backend:?}");
        assert!(versions(&h).await.is_empty(), "{backend:?}");
        let keys: Vec<String> = match &server {
            Some(server) => server.object_keys(),
            None => h
                .archive_files()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        };
        assert!(
            keys.iter().all(|k| !k.contains(".v1")),
            "{backend:?}: {keys:?}"
        );
        for task in ["worker-0", "worker-1"] {
            assert!(cat(&h, task, None).await == h.sim.log_bytes(JOB, task));
        }
    }
}

/// GUARD: a copy built from deltas whose job then ends with a rewritten log:
/// the final confirmation's full download finds the start differs, replaces
/// the copy (counted as `replaced`) and keeps it as a version first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_confirmation_of_a_rewritten_log_keeps_the_copy() {
    for backend in [Backend::LocalZstd, Backend::S3] {
        let (h, _server) = archived(backend).await;
        h.sim.set_task_size(JOB, "worker-0", BIG + 300_001);
        let grown = h.run().await;
        assert_eq!(grown.totals.grown, 1, "{backend:?}");
        let copy = h.sim.log_bytes(JOB, "worker-0");

        h.sim.set_task_seed(JOB, "worker-0", 99);
        h.sim.set_job_phase(JOB, "Completed");
        let report = h.run().await;
        assert_eq!(report.outcome(), "ok", "{backend:?}: {:?}", report.failures);
        let t = &report.totals;
        assert_eq!(
            (t.confirmed, t.replaced, t.rewritten),
            (1, 1, 1),
            "{backend:?}"
        );
        assert!(cat(&h, "worker-0", Some(1)).await == copy, "{backend:?}");
        assert!(cat(&h, "worker-0", None).await == h.sim.log_bytes(JOB, "worker-0"));
        assert!(h.row(JOB, "worker-0").sealed, "{backend:?}");
        let (code, report) = verify(&h).await;
        assert_eq!(code, Some(0), "{backend:?}: {report}");
    }
}
