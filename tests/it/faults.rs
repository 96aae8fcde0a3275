//! Fault scenarios from the simulator's knobs: each must end archived and
//! byte-exact (or in the right state), never with a partial file.

use crate::harness::*;
use malog::sim::{Fault, FaultKind, FaultTarget};
use std::time::Duration;

const SIZE: u64 = 2 * 1024 * 1024;

async fn one_task() -> Harness {
    Harness::start(vec![finished_job("j", 30, &[SIZE])]).await
}

fn assert_archived_exact(h: &Harness) {
    let row = h.row("j", "worker-0");
    assert_eq!(row.state, "archived", "{row:?}");
    assert!(h.archived_bytes("j", "worker-0") == h.sim.log_bytes("j", "worker-0"));
    assert_eq!(h.staging_files(), 0);
}

/// GUARD: a broken body resumes with Range from where it stopped (the young link
/// reused), and the resumed file's sha256 is that of the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_body_resumes_with_range() {
    let h = one_task().await;
    h.sim.inject(
        Fault::new(
            FaultTarget::Download,
            FaultKind::ResetMidBody { after: SIZE / 4 },
        )
        .times(2),
    );
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_archived_exact(&h);
    let expected_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        h.sim.log_bytes("j", "worker-0"),
    ));
    assert_eq!(h.row("j", "worker-0").sha256.unwrap(), expected_sha);
    let stats = h.sim.stats();
    assert_eq!(
        stats.link_requests, 1,
        "a young link is reused by the retries"
    );
    assert_eq!(stats.range_requests, 2, "both retries resumed: {stats:?}");
    assert!(
        stats.bytes_served < SIZE + SIZE / 2,
        "not downloaded again from 0: {stats:?}"
    );
}

/// GUARD: when the log changes between attempts, If-Range makes the server send
/// the whole new log, and the archive holds exactly the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_log_during_resume_restarts_from_zero() {
    let h = Harness::start(vec![running_job("j", &[SIZE])]).await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::ResetMidBody { after: SIZE / 4 },
    ));
    // The link fault fires on the second link request: grow the log just before.
    let sim = h.sim.clone();
    let grower = tokio::spawn(async move {
        while sim.stats().link_requests < 1 || sim.stats().faults_fired < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sim.set_task_seed("j", "worker-0", 99);
    });
    let report = h.run().await;
    grower.await.unwrap();
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert!(h.archived_bytes("j", "worker-0") == h.sim.log_bytes("j", "worker-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_body_is_never_archived() {
    let h = one_task().await;
    h.sim
        .inject(Fault::new(FaultTarget::Download, FaultKind::ShortBody { after: 1000 }).times(4));
    let report = h.run().await;
    assert_eq!(report.outcome(), "partial");
    assert_eq!(report.totals.failed, 1);
    let row = h.row("j", "worker-0");
    assert_eq!(
        (row.state.as_str(), row.has_copy(), row.attempts),
        ("failed", false, 4)
    );
    assert!(
        h.archive_files().is_empty(),
        "nothing under a final name: {:?}",
        h.archive_files()
    );
    // The next run picks it up.
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok");
    assert_archived_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_past_idle_timeout_is_retried() {
    let mut h = one_task().await;
    h.extra = FAST_FETCH.replace("idle_timeout = \"2s\"", "idle_timeout = \"300ms\"");
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 4096,
            duration: Duration::from_secs(5),
        },
    ));
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_archived_exact(&h);
    assert_eq!(h.sim.stats().downloads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_link_gets_a_fresh_one() {
    let h = one_task().await;
    h.sim
        .inject(Fault::new(FaultTarget::Link, FaultKind::ExpiredLink));
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_archived_exact(&h);
    assert_eq!(h.sim.stats().link_requests, 2);
}

/// GUARD: a dead link (403 from the log host) costs a fresh link, not one of
/// the task's attempts: as many dead links in a row as `max_attempts` still
/// end archived, in one pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_links_cost_a_fresh_link_not_an_attempt() {
    let h = one_task().await;
    h.sim
        .inject(Fault::new(FaultTarget::Download, FaultKind::ExpiredLink).times(4));
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_archived_exact(&h);
    let stats = h.sim.stats();
    assert_eq!(
        (stats.links_denied, stats.link_requests),
        (4, 5),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_honours_retry_after_and_recovers() {
    let h = one_task().await;
    h.sim.inject(Fault {
        times: 2,
        ..Fault::new(
            FaultTarget::Link,
            FaultKind::Status {
                status: 429,
                error_code: "APIG.0308".into(),
                error_msg: "The throttling threshold has been reached".into(),
                retry_after: Some(1),
            },
        )
    });
    let started = std::time::Instant::now();
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
    assert_archived_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported() {
    let h = one_task().await;
    h.sim
        .inject(Fault::status(FaultTarget::Download, 503, "", "busy").times(2));
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_archived_exact(&h);

    let h = one_task().await;
    h.sim
        .inject(Fault::status(FaultTarget::Link, 500, "ModelArts.0001", "internal").times(100));
    let report = h.run().await;
    assert_eq!(report.outcome(), "partial");
    let row = h.row("j", "worker-0");
    assert_eq!(row.state, "failed");
    let error = row.last_error.unwrap();
    assert!(
        error.contains("job j task worker-0") && error.contains("HTTP 500"),
        "{error}"
    );
    assert_eq!(h.sim.stats().link_requests, 4, "bounded by max_attempts");
}

/// GUARD: bad credentials are reported as such and not retried (the gateway locks
/// an AK after five failures in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_not_retried() {
    let h = Harness::start(vec![
        finished_job("a", 30, &[10]),
        finished_job("b", 30, &[10]),
    ])
    .await;
    std::fs::write(h.dir.path().join("sk"), "wrong-secret").unwrap();
    let archiver = h.archiver().await;
    let report = pass(&archiver).await;
    assert_eq!(report.outcome(), "partial");
    assert_eq!(h.sim.stats().auth_failures, 1, "one search, no retry");
    let error = &report.failures[0].error;
    assert!(
        error.contains("authentication failed") && error.contains("HUAWEICLOUD_SDK_AK"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_states_from_api_errors() {
    let h = Harness::start(vec![running_job("j", &[100, 100, 100])]).await;
    h.sim.inject(
        Fault::status(
            FaultTarget::Link,
            400,
            "ModelArts.2818",
            "log not generated",
        )
        .task("worker-0"),
    );
    h.sim.inject(
        Fault::status(FaultTarget::Link, 400, "ModelArts.2819", "log cleared").task("worker-1"),
    );
    let report = h.run().await;
    assert_eq!(h.row("j", "worker-0").state, "not_ready");
    assert_eq!(h.row("j", "worker-1").state, "lost");
    assert_eq!(h.row("j", "worker-2").state, "archived");
    assert_eq!(
        (
            report.totals.not_ready,
            report.totals.lost,
            report.totals.fetched
        ),
        (1, 1, 1)
    );
    assert_eq!(report.outcome(), "partial", "a lost log is reported");
}

/// GUARD: a deleted job keeps its archived logs (sealed) and does not stop the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_job_keeps_its_archive() {
    let h = Harness::start(vec![
        running_job("gone", &[100]),
        running_job("stays", &[100]),
    ])
    .await;
    // Select explicitly so the deleted job is still asked for.
    let text = h
        .config_text()
        .replace("discover = true", "ids = [\"gone\", \"stays\"]");
    let archiver = h.archiver_from_text(&text).await;
    let scope = malog::run::RunScope::default();
    archiver
        .run_once(&scope, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    h.sim.remove_job("gone");
    h.sim.set_task_size("stays", "worker-0", 300);
    let report = archiver
        .run_once(&scope, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.totals.fetched, 1);
    let index = malog::index::Index::open_read_only(&archiver.config.index_path).unwrap();
    let row = index.task("gone", "worker-0").unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.sealed, row.has_copy()),
        ("archived", true, true)
    );
}

/// GUARD: with explicit ids, bad credentials cost one authentication failure in
/// total, not one per worker (the gateway locks an AK after five in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_cost_one_failure_with_many_jobs() {
    let ids: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    let jobs = ids.iter().map(|id| finished_job(id, 30, &[10])).collect();
    let h = Harness::start(jobs).await;
    std::fs::write(h.dir.path().join("sk"), "wrong-secret").unwrap();
    let list = ids
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = h
        .config_text()
        .replace("discover = true", &format!("ids = [{list}]"));
    let archiver = h.archiver_from_text(&text).await;
    let report = pass(&archiver).await;
    assert_eq!(report.failures.len(), 6, "every job is reported");
    assert_eq!(h.sim.stats().auth_failures, 1);
}

/// GUARD: a service that keeps failing is not flooded: the breaker stops asking
/// after a few failures in a row, and the run ends partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_storm_is_not_flooded() {
    let h = Harness::start(vec![finished_job("j", 30, &[10; 20])]).await;
    h.sim
        .inject(Fault::status(FaultTarget::Link, 503, "", "down").times(10_000));
    let report = h.run().await;
    assert_eq!(report.outcome(), "partial");
    assert_eq!(report.totals.failed, 20);
    let links = h.sim.stats().link_requests;
    assert!(
        links <= 8 + 4,
        "at most the breaker threshold plus in-flight requests, got {links}"
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.error.contains("unavailable")),
        "{:?}",
        report.failures[0]
    );
}

/// GUARD: the request-rate cap holds in every sliding second, across all
/// workers and request kinds (a burst-sized token bucket let almost twice the
/// rate through): concurrency 32, 2,000 tasks, and the simulator's count of the
/// most API requests that arrived within one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_stays_under_the_cap() {
    const CAP: u64 = 100;
    let jobs: Vec<_> = (0..250)
        .map(|i| finished_job(&format!("j{i:03}"), 30, &[100; 8]))
        .collect();
    let mut h = Harness::start(jobs).await;
    h.extra = FAST_FETCH.replace("concurrency = 4", "concurrency = 32");
    let text = h.config_text().replace(
        "requests_per_second = 1000",
        &format!("requests_per_second = {CAP}"),
    );
    let archiver = h.archiver_from_text(&text).await;
    let report = pass(&archiver).await;
    assert_eq!(report.totals.fetched, 2000);
    let stats = h.sim.stats();
    assert!(stats.search_requests + stats.link_requests >= 2005);
    assert!(
        stats.max_api_requests_per_second <= CAP,
        "{} API requests within one second, cap {CAP}",
        stats.max_api_requests_per_second
    );
    // The window counter itself works: the cap is nearly used.
    assert!(stats.max_api_requests_per_second >= CAP / 2, "{stats:?}");
}

/// About half of all requests fail: API requests get 429 (10 %) or 500 (10 %);
/// downloads get those or a reset mid-body, a short body, a stall past the idle
/// timeout or an expired link (10 % each).
fn flaky_network() -> malog::sim::FaultRates {
    malog::sim::FaultRates {
        throttled: 0.1,
        server_error: 0.1,
        reset_mid_body: 0.1,
        short_body: 0.1,
        stall: 0.1,
        expired_link: 0.1,
        stall_for: Duration::from_secs(2),
    }
}

const FLAKY_FETCH: &str = r#"
[fetch]
concurrency = 8
max_attempts = 4
backoff_initial = "10ms"
backoff_max = "100ms"
idle_timeout = "300ms"
"#;

/// GUARD: under a flaky network (the rates of [`flaky_network`]), a backfill
/// of 40 logs archives every one within two passes, retrying what failed in
/// further rounds at the end of a pass instead of waiting for the next pass,
/// and spends at most three times the API requests of a fault-free backfill.
/// (The issue that asked for this saw 8 of 40 logs still failed after two
/// passes when each task had only `max_attempts` tries per pass.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_network_archives_everything_within_two_passes() {
    let jobs: Vec<_> = (0..5)
        .map(|i| finished_job(&format!("j{i}"), 30, &[40_000; 8]))
        .collect();
    let api = |h: &Harness| {
        let s = h.sim.stats();
        s.search_requests + s.detail_requests + s.link_requests
    };
    let mut calm = Harness::start(jobs.clone()).await;
    calm.extra = FLAKY_FETCH.to_owned();
    assert_eq!(calm.run().await.totals.fetched, 40);
    let fault_free = api(&calm);

    let mut h = Harness::start(jobs).await;
    h.extra = FLAKY_FETCH.to_owned();
    h.sim.set_fault_rates(flaky_network());
    let first = h.run().await;
    let mut archived = first.totals.fetched;
    let mut passes = 1;
    if archived < 40 {
        let second = h.run().await;
        archived += second.totals.fetched;
        passes = 2;
        assert_eq!(archived, 40, "after two passes: {:?}", second.failures);
    }
    eprintln!(
        "flaky network: {passes} pass(es), {} API requests vs {fault_free} fault-free, {} faults",
        api(&h),
        h.sim.stats().faults_fired
    );
    assert!(h.sim.stats().faults_fired >= 20, "{:?}", h.sim.stats());
    assert!(
        api(&h) <= 3 * fault_free,
        "{} API requests, fault-free {fault_free}",
        api(&h)
    );
    for i in 0..5 {
        for t in 0..8 {
            let (job, task) = (format!("j{i}"), format!("worker-{t}"));
            assert!(h.archived_bytes(&job, &task) == h.sim.log_bytes(&job, &task));
        }
    }
    assert_eq!(h.staging_files(), 0);
}
