//! The core pipeline end to end: cold backfill, reruns, changes, sealing, discovery.

use crate::harness::*;
use malog::model::JobId;
use malog::run::RunScope;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// GUARD: a cold backfill archives every task byte-exact, with the right sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_backfill_is_byte_exact() {
    let h = Harness::start(vec![
        finished_job("job-a", 30, &[1, 70_000, 3 * 1024 * 1024 + 17]),
        finished_job("job-b", 30, &[0]),
    ])
    .await;
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!((report.totals.tasks, report.totals.fetched), (4, 4));
    for (job, task) in [
        ("job-a", "worker-0"),
        ("job-a", "worker-1"),
        ("job-a", "worker-2"),
        ("job-b", "worker-0"),
    ] {
        let expected = h.sim.log_bytes(job, task);
        let got = h.archived_bytes(job, task);
        assert_eq!(got.len(), expected.len(), "{job}/{task}");
        assert!(got == expected, "{job}/{task} differs");
        let row = h.row(job, task);
        assert_eq!(row.state, "archived");
        assert_eq!(row.sha256.unwrap(), hex::encode(Sha256::digest(&expected)));
        assert_eq!(row.size, Some(expected.len() as u64));
    }
    assert_eq!(
        report.totals.bytes,
        (1 + 70_000 + 3 * 1024 * 1024 + 17) as u64
    );
    // The default layout, and nothing left in staging.
    let pid = &h.sim_config.project_id;
    assert!(
        h.archive_root()
            .join(format!("{pid}/job-a/worker-2.log"))
            .is_file()
    );
    assert_eq!(h.staging_files(), 0);
}

/// GUARD: a rerun with nothing changed downloads nothing, and sealed tasks cost no API call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_fetches_nothing_and_sealed_jobs_cost_no_call() {
    let h = Harness::start(vec![
        finished_job("old", 30, &[5000, 6000]),
        running_job("live", &[4000]),
    ])
    .await;
    let first = h.run().await;
    assert_eq!(first.totals.fetched, 3);
    // The finished job was archived long after it ended: sealed at once.
    assert!(h.row("old", "worker-0").sealed);
    assert!(!h.row("live", "worker-0").sealed);

    h.sim.reset_stats();
    let second = h.run().await;
    let stats = h.sim.stats();
    assert_eq!(second.totals.fetched, 0);
    assert_eq!(
        second.totals.unchanged, 1,
        "the running job's log is re-checked"
    );
    assert_eq!(second.totals.sealed, 2);
    assert_eq!(stats.downloads, 0, "{stats:?}");
    assert_eq!(stats.not_modified, 1, "{stats:?}");
    assert_eq!(
        stats.link_requests, 1,
        "only the running task asks for a link: {stats:?}"
    );
}

/// GUARD: a grown log is fetched again, and only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grown_log_is_refetched() {
    let h = Harness::start(vec![running_job("live", &[10_000, 20_000])]).await;
    h.run().await;
    h.sim.set_task_size("live", "worker-1", 50_000);
    h.sim.reset_stats();
    let report = h.run().await;
    assert_eq!((report.totals.fetched, report.totals.unchanged), (1, 1));
    assert_eq!(h.sim.stats().downloads, 1);
    assert_eq!(
        h.archived_bytes("live", "worker-1"),
        h.sim.log_bytes("live", "worker-1")
    );
    assert_eq!(h.row("live", "worker-1").size, Some(50_000));
}

/// GUARD: a job that finishes is sealed once a copy made after its end + grace exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_gets_sealed() {
    let mut h = Harness::start(vec![running_job("j", &[1000])]).await;
    h.extra.push_str("seal_grace = \"1ms\"\n");
    h.run().await;
    assert!(!h.row("j", "worker-0").sealed);
    h.sim.set_job_phase("j", "Completed");
    let report = h.run().await;
    assert_eq!(report.totals.unchanged, 1);
    assert!(h.row("j", "worker-0").sealed);
    h.sim.reset_stats();
    h.run().await;
    assert_eq!(h.sim.stats().link_requests, 0);
}

/// GUARD: discovery pages through more than one page (50) and de-duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_pages_through_all_jobs() {
    let h = Harness::with_config(malog::sim::SimConfig::generated(120, 2, 300)).await;
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!((report.totals.jobs, report.totals.fetched), (120, 240));
    assert_eq!(h.sim.stats().search_requests, 3, "pages of 50, 50, 20");
    assert_eq!(h.archive_files().len(), 240);
}

/// Explicit ids and filters: only the selected jobs are archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ids_and_name_filter() {
    let h = Harness::start(vec![
        finished_job("keep-1", 30, &[100]),
        finished_job("skip-1", 30, &[100]),
        finished_job("other", 30, &[100]),
    ])
    .await;
    let text = h.config_text().replace(
        "discover = true",
        "discover = true\nname_pattern = \"^job-keep\"\nids = [\"other\"]",
    );
    let archiver = h.archiver_from_text(&text).await;
    let report = pass(&archiver).await;
    assert_eq!(report.totals.fetched, 2, "{report:?}");

    // --job overrides the selection.
    let scope = RunScope {
        jobs: vec![JobId::from("skip-1")],
        ..Default::default()
    };
    let report = archiver
        .run_once(&scope, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.totals.jobs, report.totals.fetched), (1, 1));
}

/// GUARD: a dry run plans without asking for links or writing the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_makes_no_link_request() {
    let h = Harness::start(vec![finished_job("a", 30, &[100, 200])]).await;
    let archiver = h.archiver().await;
    let scope = RunScope {
        dry_run: true,
        ..Default::default()
    };
    let report = archiver
        .run_once(&scope, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.preview.unwrap().items, 2);
    assert_eq!(h.sim.stats().link_requests, 0);
    assert_eq!(h.sim.stats().downloads, 0);
    assert!(h.archive_files().is_empty());
}

/// Jobs still being created (no tasks) are not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_without_tasks_is_not_ready_not_failed() {
    let mut creating = running_job("new", &[]);
    creating.phase = "Creating".into();
    let h = Harness::start(vec![creating, finished_job("a", 30, &[10])]).await;
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok");
    assert_eq!(report.totals.fetched, 1);
}

/// GUARD: a row whose archived object went missing is fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_is_refetched() {
    let h = Harness::start(vec![running_job("live", &[10_000])]).await;
    h.run().await;
    let location = h.row("live", "worker-0").location.unwrap();
    std::fs::remove_file(&location).unwrap();
    let report = h.run().await;
    assert_eq!((report.totals.fetched, report.totals.unchanged), (1, 0));
    assert_eq!(
        h.archived_bytes("live", "worker-0"),
        h.sim.log_bytes("live", "worker-0")
    );
}

/// GUARD: a copy found missing whose job then turns out to be deleted is
/// `lost`, not recorded archived and sealed around an object that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_copy_of_a_deleted_job_is_lost() {
    let h = Harness::start(vec![running_job("live", &[10_000])]).await;
    h.run().await;
    let location = h.row("live", "worker-0").location.unwrap();
    std::fs::remove_file(&location).unwrap();
    h.sim.inject(
        malog::sim::Fault::status(
            malog::sim::FaultTarget::Link,
            400,
            "ModelArts.2775",
            "The training job does not exist.",
        )
        .times(100),
    );
    let report = h.run().await;
    assert_eq!(report.totals.lost, 1, "{:?}", report.failures);
    let row = h.row("live", "worker-0");
    assert_eq!(row.state, "lost", "{row:?}");
    assert!(!row.has_copy() && !row.sealed, "{row:?}");
}

/// GUARD: a pass that fails early (here the index loses a table under it)
/// still finishes its `runs` row, as `failed` with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_failure_finishes_the_run_row() {
    let h = Harness::start(vec![finished_job("a", 30, &[100])]).await;
    h.run().await;
    let archiver = h.archiver().await;
    let path = archiver.config.index_path.clone();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE jobs")
        .unwrap();
    let result = archiver
        .run_once(&RunScope::default(), CancellationToken::new())
        .await;
    assert!(result.is_err(), "the pass fails");
    let index = malog::index::Index::open_read_only(&path).unwrap();
    let runs = index.run_history(10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r.ended_at_ms.is_some()),
        "every run is finished: {runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.outcome.as_deref() == Some("failed")),
        "{runs:?}"
    );
}

/// Discovery filters: creation bound and phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_filters_by_age_and_phase() {
    let mut old = finished_job("old", 24 * 40, &[100]);
    old.create_time_ms = now_ms() - 40 * 24 * HOUR_MS;
    let mut failed = finished_job("failed", 2, &[100]);
    failed.phase = "Failed".into();
    let h = Harness::start(vec![
        old,
        failed,
        finished_job("recent", 2, &[100]),
        running_job("live", &[100]),
    ])
    .await;
    let text = h.config_text().replace(
        "discover = true",
        "discover = true\ncreated_after = \"30d\"\nphases = [\"Completed\", \"Failed\"]",
    );
    let archiver = h.archiver_from_text(&text).await;
    let report = pass(&archiver).await;
    let index = malog::index::Index::open_read_only(&archiver.config.index_path).unwrap();
    let mut jobs: Vec<String> = index
        .query(&malog::index::QueryFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["failed", "recent"], "{report:?}");
}
