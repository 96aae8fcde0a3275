//! The archive describes itself (issue 14): delete the index, `index rebuild`
//! from the manifests in storage (local and S3, with and without zstd), and
//! everything is as before; objects no manifest names (a crash between the
//! writes) are adopted after hashing; `index backup` under concurrent writes.
//! All through the real binary against the simulator.

use crate::harness::*;
use crate::s3_server::S3Server;
use malog::index::{Index, WriterLock};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) fn malog(h: &Harness, args: &[&str]) -> Command {
    // Written once: rewriting it while a pass reads it would race.
    let config = h.dir.path().join("config.toml");
    let config = if config.exists() {
        config
    } else {
        h.config_path()
    };
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("malog"));
    cmd.arg("--config").arg(config).args(args);
    for var in ["RUST_LOG", "MALOG_CRASH_AT", "AWS_ACCESS_KEY_ID"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs the binary off the async runtime so the in-process servers keep serving.
pub(crate) async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub(crate) async fn ok(h: &Harness, args: &[&str]) -> std::process::Output {
    let out = run(malog(h, args)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "malog {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `query --format json` without the attempt counters and errors, which a
/// rebuild does not keep.
async fn query(h: &Harness) -> Vec<Value> {
    let out = ok(h, &["query", "--format", "json"]).await;
    let mut rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for row in &mut rows {
        let row = row.as_object_mut().unwrap();
        row.remove("attempts");
        row.remove("last_error");
    }
    rows
}

pub(crate) fn delete_index(h: &Harness) {
    let index = h.config().index_path;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = index.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn jobs() -> Vec<malog::sim::SimJob> {
    vec![
        finished_job("done-a", 30, &[70_000, 1, 300_000]),
        finished_job("done-b", 30, &[5_000]),
    ]
}

/// Backfill, delete the index, rebuild, and check: same rows, verify passes,
/// and a rerun asks for no link and downloads nothing (every task is sealed).
async fn rebuild_round_trip(h: &Harness) {
    ok(h, &["backfill"]).await;
    let before = query(h).await;
    assert_eq!(before.len(), 4);
    assert!(before.iter().all(|r| r["sealed"] == true), "{before:?}");

    delete_index(h);
    let dry = ok(h, &["index", "rebuild", "--dry-run", "--format", "json"]).await;
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["restored"], 4, "{dry}");
    assert!(!h.config().index_path.exists(), "a dry run writes nothing");

    let out = ok(h, &["index", "rebuild", "--format", "json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["restored"], 4, "{report}");
    assert_eq!(report["adopted"], 0, "{report}");
    assert_eq!(report["unaccounted"], Value::Array(vec![]), "{report}");
    assert_eq!(query(h).await, before);
    // Exit 0: no mismatch.
    ok(h, &["verify"]).await;

    h.sim.reset_stats();
    ok(h, &["backfill"]).await;
    let stats = h.sim.stats();
    assert_eq!(stats.link_requests, 0, "{stats:?}");
    assert_eq!(stats.downloads, 0, "{stats:?}");
    assert_eq!(query(h).await, before);
}

/// GUARD: a lost index (file, -wal and -shm) is rebuilt from a local archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_a_local_archive() {
    let h = Harness::start(jobs()).await;
    rebuild_round_trip(&h).await;
}

/// GUARD: the same with zstd objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_a_local_zstd_archive() {
    let mut h = Harness::start(jobs()).await;
    h.extra = format!("{FAST_FETCH}\n[storage]\ncompression = \"zstd\"\n");
    rebuild_round_trip(&h).await;
}

/// GUARD: the same from an S3 listing, with and without zstd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_an_s3_archive() {
    for compression in ["none", "zstd"] {
        let server = S3Server::start().await;
        let mut h = Harness::start(jobs()).await;
        h.extra = format!(
            "{FAST_FETCH}{}",
            server.storage_toml(h.dir.path(), "malog/archive", compression)
        );
        rebuild_round_trip(&h).await;
    }
}

/// Every task's archived copy (read through `cat`) equals the source's log.
async fn assert_archive_equals_source(h: &Harness, tasks: &[(&str, &str)]) {
    for (job, task) in tasks {
        let out = ok(h, &["cat", job, task]).await;
        assert!(
            out.stdout == h.sim.log_bytes(job, task),
            "{job}/{task}: the archived copy differs from the source"
        );
    }
}

const TASKS: [(&str, &str); 4] = [
    ("done-a", "worker-0"),
    ("done-a", "worker-1"),
    ("done-a", "worker-2"),
    ("done-b", "worker-0"),
];

/// GUARD: a process killed after its objects are durable and before their
/// manifests are written leaves objects no manifest names; rebuild adopts
/// them after hashing (unsealed: the next pass checks them with the source).
/// Killed after the manifests and before the index rows, rebuild restores
/// them from the manifests. Either way, then archive == source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_writes_then_rebuild() {
    for (point, adopted) in [("manifest", true), ("index", false)] {
        let h = Harness::start(jobs()).await;
        let crashed = run({
            let mut cmd = malog(&h, &["backfill"]);
            cmd.env("MALOG_CRASH_AT", point);
            cmd
        })
        .await;
        assert!(
            !crashed.status.success(),
            "{point}: the pass should have been killed"
        );
        let index = Index::open_read_only(&h.config().index_path).unwrap();
        let archived = index
            .query(&Default::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.has_copy())
            .count();
        assert_eq!(archived, 0, "{point}: the index must not hold the rows yet");
        drop(index);
        assert!(
            !h.archive_files().is_empty(),
            "{point}: objects are durable"
        );

        let out = ok(&h, &["index", "rebuild", "--format", "json"]).await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let found = report["adopted"].as_u64().unwrap() + report["restored"].as_u64().unwrap();
        assert_eq!(found, h.archive_files().len() as u64, "{point}: {report}");
        if adopted {
            assert!(report["adopted"].as_u64().unwrap() > 0, "{report}");
            let rows = query(&h).await;
            assert!(
                rows.iter()
                    .filter(|r| r["state"] == "archived")
                    .all(|r| r["sealed"] == false),
                "adopted copies are never sealed: {rows:?}"
            );
        } else {
            assert!(report["restored"].as_u64().unwrap() > 0, "{report}");
        }
        ok(&h, &["verify"]).await;
        ok(&h, &["backfill"]).await;
        assert_archive_equals_source(&h, &TASKS).await;
        ok(&h, &["verify"]).await;
    }
}

/// GUARD: rebuild is refused (exit 4) while another malog holds the writer lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_is_refused_while_a_writer_runs() {
    let h = Harness::start(jobs()).await;
    ok(&h, &["backfill"]).await;
    let lock = WriterLock::acquire(&h.config().index_path).unwrap();
    let out = run(malog(&h, &["index", "rebuild"])).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(lock);
    ok(&h, &["index", "rebuild"]).await;
}

fn integrity_ok(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

/// 40 jobs × 3 logs (120), one job archived, and a backfill of the rest
/// running in the background.
async fn pass_in_flight() -> (Harness, std::process::Child) {
    let many: Vec<_> = (0..40)
        .map(|i| finished_job(&format!("job-{i:02}"), 30, &[20_000, 30_000, 1_000]))
        .collect();
    let h = Harness::start(many).await;
    ok(&h, &["backfill", "--job", "job-00"]).await;
    let pass = malog(&h, &["backfill"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (h, pass)
}

/// GUARD: `index backup` while a pass writes gives copies that pass
/// integrity_check and hold a consistent prefix of the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_a_pass_writes() {
    let (h, pass) = pass_in_flight().await;
    let mut copies = 0;
    for i in 0..8 {
        let target = h.dir.path().join(format!("backup-{i}.sqlite"));
        ok(&h, &["index", "backup", target.to_str().unwrap()]).await;
        integrity_ok(&target);
        copies += 1;
    }
    let out = tokio::task::spawn_blocking(move || pass.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(copies, 8);
    // A backup of the finished index holds every row.
    let target = h.dir.path().join("final.sqlite");
    ok(&h, &["index", "backup", target.to_str().unwrap()]).await;
    integrity_ok(&target);
    let rows: i64 = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE state = 'archived'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 120);
}

/// GUARD: the index, its `-wal` and `-shm` deleted while a pass writes (a bad
/// clean-up, a restore gone wrong): the pass finishes writing objects and
/// manifests, and `index rebuild` then finds every log of it, `verify`
/// passes, and a rerun asks for no link and downloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_deleted_mid_run_then_rebuild() {
    let (h, pass) = pass_in_flight().await;
    // Mid-run: some logs of the pass are in storage, not all.
    for _ in 0..600 {
        if h.archive_files().len() >= 12 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mid = h.archive_files().len();
    delete_index(&h);
    let out = tokio::task::spawn_blocking(move || pass.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        mid < 120,
        "the index was deleted after the pass had stored everything ({mid} logs)"
    );
    // Whatever the pass said of its index, its objects and manifests are durable.
    assert_eq!(h.archive_files().len(), 120, "{out:?}");

    let out = ok(&h, &["index", "rebuild", "--format", "json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["restored"], 120, "{report}");
    assert_eq!(report["adopted"], 0, "{report}");
    let rows = query(&h).await;
    assert_eq!(rows.len(), 120);
    assert!(rows.iter().all(|r| r["sealed"] == true), "{rows:?}");
    ok(&h, &["verify"]).await;

    h.sim.reset_stats();
    ok(&h, &["backfill"]).await;
    let stats = h.sim.stats();
    assert_eq!((stats.link_requests, stats.downloads), (0, 0), "{stats:?}");
}
