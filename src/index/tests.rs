//! Index tests on real SQLite files in temp dirs.

use super::*;
use crate::model::{Compression, JobPhase, SourceValidators, TaskId, TaskState};

fn job(id: &str, tasks: &[&str], ended: Option<i64>) -> Job {
    Job {
        id: JobId::from(id),
        name: format!("name-{id}"),
        phase: if ended.is_some() {
            JobPhase::Completed
        } else {
            JobPhase::Running
        },
        created_at_ms: 1,
        ended_at_ms: ended,
        tasks: tasks.iter().map(|t| TaskId::from(*t)).collect(),
        record: None,
    }
}

fn archived(job: &str, task: &str, sealed: bool) -> TaskUpdate {
    TaskUpdate::Archived {
        job: JobId::from(job),
        task: TaskId::from(task),
        job_phase: JobPhase::Completed,
        size: 42,
        sha256: "ab".repeat(32),
        storage_key: format!("p/{job}/{task}.log"),
        location: format!("/a/p/{job}/{task}.log"),
        stored_size: 42,
        stored_sha256: "ab".repeat(32),
        compression: Compression::None,
        validators: SourceValidators {
            etag: Some("\"e1\"".into()),
            last_modified: None,
            length: Some(42),
        },
        at_ms: 1_000,
        sealed,
        growth: "{}".into(),
        unconfirmed: false,
    }
}

fn open() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("sub/index.sqlite")).unwrap();
    (dir, index)
}

#[test]
fn jobs_register_pending_tasks_and_updates_apply() {
    let (_dir, mut ix) = open();
    ix.record_jobs(&[job("a", &["worker-0", "worker-1"], Some(5))], 10)
        .unwrap();
    let rows = ix.query(&QueryFilter::default()).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.state == "pending" && !r.has_copy()));

    ix.record_updates(&[archived("a", "worker-0", false)])
        .unwrap();
    let row = ix.task("a", "worker-0").unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.size, row.job_name.as_str()),
        ("archived", Some(42), "name-a")
    );
    assert_eq!(row.validators.etag.as_deref(), Some("\"e1\""));
    assert_eq!(row.fetched_at.as_deref(), Some("1970-01-01T00:00:01.000Z"));

    // A failure keeps the previous copy described.
    ix.record_updates(&[TaskUpdate::Failed {
        job: JobId::from("a"),
        task: TaskId::from("worker-0"),
        job_phase: JobPhase::Completed,
        state: TaskState::Failed,
        error: "HTTP 500".into(),
        attempts: 3,
        at_ms: 2_000,
    }])
    .unwrap();
    let row = ix.task("a", "worker-0").unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts, row.has_copy()),
        ("failed", 3, true)
    );
    let failed = ix
        .query(&QueryFilter {
            state: Some(TaskState::Failed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(failed.len(), 1);
}

#[test]
fn gone_keeps_copies_and_marks_others_lost() {
    let (_dir, mut ix) = open();
    ix.record_jobs(&[job("a", &["worker-0", "worker-1"], Some(5))], 10)
        .unwrap();
    ix.record_updates(&[archived("a", "worker-0", false)])
        .unwrap();
    let gone = |t: &str| TaskUpdate::Gone {
        job: JobId::from("a"),
        task: TaskId::from(t),
        error: "gone".into(),
        at_ms: 3,
    };
    ix.record_updates(&[gone("worker-0"), gone("worker-1")])
        .unwrap();
    let r0 = ix.task("a", "worker-0").unwrap().unwrap();
    let r1 = ix.task("a", "worker-1").unwrap().unwrap();
    assert_eq!((r0.state.as_str(), r0.sealed), ("archived", true));
    assert_eq!((r1.state.as_str(), r1.sealed), ("lost", false));
}

/// GUARD: a job counts as sealed only when every one of its tasks is.
#[test]
fn sealed_jobs_need_every_task_sealed() {
    let (_dir, mut ix) = open();
    ix.record_jobs(
        &[
            job("a", &["worker-0", "worker-1"], Some(5)),
            job("b", &["worker-0"], None),
        ],
        10,
    )
    .unwrap();
    ix.record_updates(&[
        archived("a", "worker-0", true),
        archived("b", "worker-0", true),
    ])
    .unwrap();
    assert!(
        ix.sealed_jobs().unwrap().is_empty(),
        "job b is not final, job a has an unsealed task"
    );
    ix.record_updates(&[archived("a", "worker-1", true)])
        .unwrap();
    assert!(
        ix.sealed_jobs().unwrap().is_empty(),
        "job a's record (events, metrics) is not sealed yet"
    );
    ix.record_job_records(&[], &[JobId::from("a")], 11).unwrap();
    assert_eq!(
        ix.sealed_jobs().unwrap(),
        HashMap::from([(JobId::from("a"), 2)])
    );
}

#[test]
fn runs_are_recorded_and_readers_see_writes() {
    let (dir, ix) = open();
    let id = ix.begin_run(100).unwrap();
    ix.finish_run(
        id,
        200,
        "ok",
        &RunTotals {
            fetched: 3,
            bytes: 9,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let reader = Index::open_read_only(&dir.path().join("sub/index.sqlite")).unwrap();
    let runs = reader.run_history(5).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].outcome.as_deref(), runs[0].fetched, runs[0].bytes),
        (Some("ok"), 3, 9)
    );
    // Reopening applies no migration twice.
    drop(ix);
    Index::open(&dir.path().join("sub/index.sqlite")).unwrap();
}

#[test]
fn missing_and_garbage_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sqlite");
    assert!(matches!(
        Index::open_read_only(&missing),
        Err(IndexError::Missing { .. })
    ));
    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let err = Index::open(&garbage).err().expect("garbage is rejected");
    assert!(err.to_string().contains("garbage.sqlite"), "{err}");
}

/// GUARD: retention risks are the not-archived tasks of jobs that ended before
/// the cut-off; archived, lost and still-running ones are not listed.
#[test]
fn status_queries_counts_history_and_retention_risks() {
    let (_dir, mut ix) = open();
    ix.record_jobs(
        &[
            job("old", &["w0", "w1", "w2", "w3"], Some(1_000)),
            job("new", &["w0"], Some(50_000)),
            job("running", &["w0"], None),
        ],
        60_000,
    )
    .unwrap();
    let failed = |task: &str, state: TaskState| TaskUpdate::Failed {
        job: JobId::from("old"),
        task: TaskId::from(task),
        job_phase: JobPhase::Completed,
        state,
        error: "HTTP 500".into(),
        attempts: 3,
        at_ms: 2_000,
    };
    ix.record_updates(&[
        archived("old", "w0", true),
        failed("w1", TaskState::Failed),
        TaskUpdate::Gone {
            job: JobId::from("old"),
            task: TaskId::from("w3"),
            error: "gone".into(),
            at_ms: 2_000,
        },
    ])
    .unwrap();

    let risks = ix.retention_risks(10_000).unwrap();
    let got: Vec<(&str, &str, &str)> = risks
        .iter()
        .map(|r| (r.job_id.as_str(), r.task_id.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(got, [("old", "w1", "failed"), ("old", "w2", "pending")]);
    assert_eq!(risks[0].attempts, 3);
    assert_eq!(risks[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(risks[0].job_ended_at_ms, 1_000);
    assert!(ix.retention_risks(500).unwrap().is_empty());

    let counts = ix.state_counts().unwrap();
    let get = |s: &str| {
        counts
            .iter()
            .find(|c| c.state == s)
            .map(|c| (c.tasks, c.sealed))
    };
    assert_eq!(get("archived"), Some((1, 1)));
    assert_eq!(get("pending"), Some((3, 0)));
    assert_eq!(get("failed"), Some((1, 0)));
    assert_eq!(get("lost"), Some((1, 0)));

    let first = ix.begin_run(100).unwrap();
    let totals = RunTotals {
        fetched: 2,
        failed: 1,
        lost: 1,
        bytes: 9,
        ..RunTotals::default()
    };
    ix.finish_run(first, 200, "ok", &totals, None).unwrap();
    let second = ix.begin_run(300).unwrap();
    ix.finish_run(
        second,
        400,
        "failed",
        &RunTotals::default(),
        Some("disk full"),
    )
    .unwrap();
    let history = ix.run_history(10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].error.as_deref(), Some("disk full"));
    assert_eq!(
        (history[1].fetched, history[1].failed, history[1].bytes),
        (2, 2, 9)
    );
    let ok = ix.last_run_with_outcome("ok").unwrap().unwrap();
    assert_eq!((ok.run_id, ok.ended_at_ms), (first, Some(200)));
    assert!(ix.last_run_with_outcome("partial").unwrap().is_none());
}

/// GUARD: rows archived before migration 0002 describe their stored object as the
/// log itself (uncompressed), and new rows record what the writer reports.
#[test]
fn migration_0002_fills_stored_object_of_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let mut conn = Connection::open(&path).unwrap();
        Migrations::new(vec![M::up(include_str!(
            "../../migrations/0001_create_index.sql"
        ))])
        .to_latest(&mut conn)
        .unwrap();
        conn.execute_batch(
            "INSERT INTO jobs VALUES ('a', 'n', 'Completed', 1, 2, 2, 3);
             INSERT INTO tasks (job_id, task_id, state, size, sha256, storage_key)
               VALUES ('a', 'w0', 'archived', 42, 'abc', 'p/a/w0.log');
             INSERT INTO tasks (job_id, task_id, state) VALUES ('a', 'w1', 'pending');",
        )
        .unwrap();
    }
    let mut ix = Index::open(&path).unwrap();
    let old = ix.stored_copy("a", "w0").unwrap().unwrap();
    assert_eq!(
        (
            old.stored_size,
            old.stored_sha256.as_deref(),
            old.compression.as_str()
        ),
        (Some(42), Some("abc"), "none")
    );
    assert!(ix.stored_copy("a", "w1").unwrap().is_none());

    let mut update = archived("a", "w1", false);
    if let TaskUpdate::Archived {
        stored_size,
        stored_sha256,
        compression,
        storage_key,
        ..
    } = &mut update
    {
        *stored_size = 7;
        *stored_sha256 = "cd".into();
        *compression = Compression::Zstd;
        *storage_key = "p/a/w1.log.zst".into();
    }
    ix.record_updates(&[update]).unwrap();
    let new = ix.stored_copy("a", "w1").unwrap().unwrap();
    assert_eq!(
        (new.size, new.stored_size, new.compression.as_str()),
        (42, Some(7), "zstd")
    );
    assert_eq!(new.storage_key, "p/a/w1.log.zst");
    assert_eq!(ix.stored_copies(&QueryFilter::default()).unwrap().len(), 2);
}

/// GUARD: root reading the index (e.g. `malog query` while the service is stopped)
/// leaves the WAL files owned by the index's owner, so the service can still write.
/// SQLite's unix VFS does this itself when running as root; this test keeps it so.
/// Needs root, as the scenario does (CI runs as root).
#[test]
fn reader_hands_wal_files_to_the_index_owner() {
    use std::os::unix::fs::MetadataExt;
    let (dir, ix) = open();
    let path = dir.path().join("sub/index.sqlite");
    drop(ix);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::os::unix::fs::chown(&path, Some(4242), Some(4242))
        .expect("this test needs root to chown the index");
    let reader = Index::open_read_only(&path).unwrap();
    reader.run_history(1).unwrap();
    let shm = std::fs::metadata(format!("{}-shm", path.display())).expect("reading creates -shm");
    assert_eq!((shm.uid(), shm.gid()), (4242, 4242));
}

/// GUARD: `states_after` shows a batch's result without committing it, and
/// `restore` writes those rows into a fresh index exactly (what `index
/// rebuild` relies on).
#[test]
fn states_after_rolls_back_and_restore_round_trips() {
    let (dir, mut ix) = open();
    ix.record_jobs(&[job("a", &["worker-0", "worker-1"], Some(5))], 10)
        .unwrap();
    let updates = [archived("a", "worker-0", true)];
    let states = ix.states_after(&updates, &[JobId::from("a")]).unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].job.name, "name-a");
    assert!(states[0].tasks[0].has_copy() && states[0].tasks[0].sealed);
    // Nothing was committed.
    assert!(!ix.task("a", "worker-0").unwrap().unwrap().has_copy());

    ix.record_updates(&updates).unwrap();
    let mut fresh = Index::open(&dir.path().join("fresh.sqlite")).unwrap();
    fresh.restore(&states).unwrap();
    assert_eq!(
        fresh.query(&QueryFilter::default()).unwrap(),
        ix.query(&QueryFilter::default()).unwrap()
    );
    let backup = dir.path().join("backup.sqlite");
    ix.backup_into(&backup).unwrap();
    let copy = Index::open_read_only(&backup).unwrap();
    copy.check_integrity_full().unwrap();
    assert_eq!(copy.query(&QueryFilter::default()).unwrap().len(), 2);
}
