//! Metrics: their names and meanings, the Prometheus recorder, and the few
//! helpers the pipeline calls.
//!
//! Every metric goes through the `metrics` facade. Until [`install`] is called
//! (only `malog run` calls it) the facade has no recorder and each
//! `counter!`/`gauge!` is a cheap no-op, so `backfill`, `demo` and the tests pay
//! nothing. The recorder renders the Prometheus text format; the daemon serves it
//! at `/metrics` (see [`crate::daemon`]). The table in the README lists every
//! metric; keep it in step with [`describe`].
//!
//! Besides the recorder, two process-wide atomics count downloads started and
//! finished, so the daemon can report pass progress to systemd (`STATUS=`)
//! without reading its own metrics back.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const PASSES: &str = "malog_passes_total";
pub const PASS_DURATION: &str = "malog_pass_duration_seconds";
pub const PASS_RUNNING: &str = "malog_pass_running";
pub const TASKS: &str = "malog_tasks_total";
pub const ARCHIVED_BYTES: &str = "malog_archived_bytes_total";
pub const DOWNLOAD_BYTES: &str = "malog_download_bytes_total";
pub const GROWN: &str = "malog_grown_logs_total";
pub const CONFIRMATIONS: &str = "malog_confirmations_total";
pub const REWRITTEN: &str = "malog_rewritten_logs_total";
pub const API_REQUESTS: &str = "malog_api_requests_total";
pub const API_THROTTLED: &str = "malog_api_throttled_total";
pub const RETRIES: &str = "malog_retries_total";
pub const DOWNLOADS_IN_FLIGHT: &str = "malog_downloads_in_flight";
pub const LAST_SUCCESS: &str = "malog_last_success_timestamp_seconds";
pub const RETENTION_RISK: &str = "malog_retention_risk_tasks";
pub const INDEX_TASKS: &str = "malog_index_tasks";
pub const TICKS_DROPPED: &str = "malog_ticks_dropped_total";
pub const CONFIG_RELOADS: &str = "malog_config_reloads_total";
pub const BUILD_INFO: &str = "malog_build_info";
pub const WEB_PAGE_VIEWS: &str = "malog_web_page_views_total";
pub const WEB_SEARCH_DURATION: &str = "malog_web_search_duration_seconds";

/// Pass outcomes: as recorded in the index's `runs.outcome`, plus `skipped` (another
/// process held the index's writer lock).
pub const PASS_OUTCOMES: [&str; 4] = ["ok", "partial", "failed", "skipped"];
/// Task outcomes of a pass, as in [`RunTotals`].
pub const TASK_OUTCOMES: [&str; 6] = [
    "fetched",
    "unchanged",
    "sealed",
    "not_ready",
    "failed",
    "lost",
];
/// Task states in the index.
pub const TASK_STATES: [&str; 5] = ["pending", "archived", "failed", "not_ready", "lost"];

/// Histogram buckets for a pass, in seconds: from a no-op rerun to a large backfill.
const PASS_BUCKETS: [f64; 12] = [
    0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static DOWNLOADS_STARTED: AtomicU64 = AtomicU64::new(0);
static DOWNLOADS_DONE: AtomicU64 = AtomicU64::new(0);

/// Installs the Prometheus recorder for this process (once; later calls return
/// the same handle). Call `run_upkeep` on the handle now and then.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(PASS_DURATION.to_owned()), &PASS_BUCKETS)
                .expect("static buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in malog");
            describe();
            handle
        })
        .clone()
}

/// HELP lines, and zero values for every label combination we know of, so that
/// rates and alerts work from the first scrape. Longer than 80 lines for a
/// reason: one flat list of every metric malog exports, read as a catalogue.
fn describe() {
    describe_counter!(
        PASSES,
        "Archive passes by outcome (ok, partial, failed, skipped)."
    );
    describe_histogram!(PASS_DURATION, Unit::Seconds, "Duration of archive passes.");
    describe_gauge!(PASS_RUNNING, "1 while an archive pass runs.");
    describe_counter!(TASKS, "Tasks handled by passes, by outcome.");
    describe_counter!(ARCHIVED_BYTES, Unit::Bytes, "Bytes of logs newly archived.");
    describe_counter!(
        DOWNLOAD_BYTES,
        Unit::Bytes,
        "Bytes received from log links, including attempts that were retried."
    );
    describe_counter!(
        GROWN,
        "Logs archived by appending only what they grew to the archived copy."
    );
    describe_counter!(
        CONFIRMATIONS,
        "Full downloads of final logs that checked a copy built from deltas, by result (match, mismatch: the copy was replaced)."
    );
    describe_counter!(
        REWRITTEN,
        "Logs found rewritten (their start differs from the archived copy), whose old copy was kept as a version."
    );
    describe_counter!(
        API_REQUESTS,
        "ModelArts API requests by HTTP status (2xx for success, transport for no answer)."
    );
    describe_counter!(
        API_THROTTLED,
        "ModelArts API requests answered as throttled."
    );
    describe_counter!(
        RETRIES,
        "Retries scheduled after a retryable failure (API or download)."
    );
    describe_gauge!(
        DOWNLOADS_IN_FLIGHT,
        "Tasks being fetched (from the link request to the stored object, retries included)."
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "End of the last pass whose outcome was ok, Unix time (0: none yet)."
    );
    describe_gauge!(
        RETENTION_RISK,
        "Tasks of jobs that ended more than alerts.retention_warn_after ago and are not archived."
    );
    describe_gauge!(INDEX_TASKS, "Tasks in the index by state.");
    describe_counter!(
        TICKS_DROPPED,
        "Schedule ticks dropped because a pass was still running."
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads (SIGHUP) by result.");
    describe_counter!(
        WEB_PAGE_VIEWS,
        "Web pages served, by page (jobs, job, log, search, download) and status class."
    );
    describe_histogram!(
        WEB_SEARCH_DURATION,
        Unit::Seconds,
        "Duration of web searches, by kind (archive, log)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which malog runs."
    );

    for outcome in PASS_OUTCOMES {
        counter!(PASSES, "outcome" => outcome).absolute(0);
    }
    for result in ["ok", "error"] {
        counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
    counter!(ARCHIVED_BYTES).absolute(0);
    counter!(DOWNLOAD_BYTES).absolute(0);
    counter!(GROWN).absolute(0);
    counter!(REWRITTEN).absolute(0);
    for result in ["match", "mismatch"] {
        counter!(CONFIRMATIONS, "result" => result).absolute(0);
    }
    counter!(RETRIES).absolute(0);
    counter!(TICKS_DROPPED).absolute(0);
    gauge!(DOWNLOADS_IN_FLIGHT).set(0.0);
    gauge!(PASS_RUNNING).set(0.0);
    gauge!(LAST_SUCCESS).set(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// How one ModelArts API call was answered, as the source client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiAnswer {
    /// A 2xx answer.
    Ok,
    /// An HTTP error status; `throttled` when it asked us to slow down.
    Status { status: u16, throttled: bool },
    /// No HTTP answer: connection, timeout or decoding trouble.
    Transport,
}

impl ApiAnswer {
    fn label(self) -> String {
        match self {
            ApiAnswer::Ok => "2xx".to_owned(),
            ApiAnswer::Status { status, .. } => status.to_string(),
            ApiAnswer::Transport => "transport".to_owned(),
        }
    }
}

/// Counts one ModelArts API call of a source by its answer. Called by the source client.
pub fn record_api_call(source: &str, answer: ApiAnswer) {
    let source = source.to_owned();
    counter!(API_REQUESTS, "source" => source.clone(), "status" => answer.label()).increment(1);
    if let ApiAnswer::Status {
        throttled: true, ..
    } = answer
    {
        counter!(API_THROTTLED, "source" => source).increment(1);
    }
}

/// Zero values for the metrics labelled by source, so that rates and alerts
/// work from the first scrape. Called once the config's sources are known.
pub fn describe_sources<'a>(sources: impl IntoIterator<Item = &'a str>) {
    for source in sources {
        let source = source.to_owned();
        for outcome in TASK_OUTCOMES {
            counter!(TASKS, "source" => source.clone(), "outcome" => outcome).absolute(0);
        }
        for state in TASK_STATES {
            gauge!(INDEX_TASKS, "source" => source.clone(), "state" => state).set(0.0);
        }
        counter!(API_THROTTLED, "source" => source.clone()).absolute(0);
        gauge!(RETENTION_RISK, "source" => source).set(0.0);
    }
}

/// Counts one retry about to be scheduled.
pub fn record_retry() {
    counter!(RETRIES).increment(1);
}

/// Counts bytes received from a log link.
pub fn record_download_bytes(n: u64) {
    counter!(DOWNLOAD_BYTES).increment(n);
}

/// Held by each download while it runs; dropping it (finished, failed or
/// cancelled) takes it off the in-flight gauge.
#[must_use = "the download counts as in flight only while the guard lives"]
pub struct DownloadGuard(());

/// Marks one download as in flight until the guard drops.
pub fn download_started() -> DownloadGuard {
    DOWNLOADS_STARTED.fetch_add(1, Ordering::Relaxed);
    gauge!(DOWNLOADS_IN_FLIGHT).increment(1.0);
    DownloadGuard(())
}

impl Drop for DownloadGuard {
    fn drop(&mut self) {
        DOWNLOADS_DONE.fetch_add(1, Ordering::Relaxed);
        gauge!(DOWNLOADS_IN_FLIGHT).decrement(1.0);
    }
}

/// Downloads (started, finished) in this process so far.
pub fn download_counts() -> (u64, u64) {
    (
        DOWNLOADS_STARTED.load(Ordering::Relaxed),
        DOWNLOADS_DONE.load(Ordering::Relaxed),
    )
}

/// Records a finished pass: its outcome and duration.
pub fn record_pass(outcome: &str, seconds: f64) {
    counter!(PASSES, "outcome" => outcome.to_owned()).increment(1);
    metrics::histogram!(PASS_DURATION).record(seconds);
}

/// Adds one source's tasks of a pass by outcome (`fetched`, `unchanged`, …).
pub fn record_pass_tasks(source: &str, by_outcome: &[(&'static str, u64)]) {
    for &(outcome, n) in by_outcome {
        counter!(TASKS, "source" => source.to_owned(), "outcome" => outcome).increment(n);
    }
}

/// Adds a pass's archived bytes.
pub fn record_archived_bytes(bytes: u64) {
    counter!(ARCHIVED_BYTES).increment(bytes);
}

/// Adds a pass's logs archived from deltas, and the full downloads that checked
/// such copies once their job was final (`replaced`: the copy was different).
pub fn record_deltas(grown: u64, confirmed: u64, replaced: u64) {
    counter!(GROWN).increment(grown);
    counter!(CONFIRMATIONS, "result" => "match").increment(confirmed.saturating_sub(replaced));
    counter!(CONFIRMATIONS, "result" => "mismatch").increment(replaced);
}

/// A rewritten log whose old copy was kept as a version.
pub fn record_rewritten() {
    counter!(REWRITTEN).increment(1);
}

/// A pass that did not start because another process held the index's writer lock.
pub fn record_pass_skipped() {
    counter!(PASSES, "outcome" => "skipped").increment(1);
}

pub fn set_pass_running(running: bool) {
    gauge!(PASS_RUNNING).set(if running { 1.0 } else { 0.0 });
}

/// `ended_at_ms`: end of the last ok pass, epoch milliseconds.
pub fn set_last_success(ended_at_ms: i64) {
    gauge!(LAST_SUCCESS).set(ended_at_ms as f64 / 1000.0);
}

/// Sets one source's tasks at retention risk.
pub fn set_retention_risk(source: &str, tasks: usize) {
    gauge!(RETENTION_RISK, "source" => source.to_owned()).set(tasks as f64);
}

/// Sets one source's per-state task gauges from (state, tasks) pairs; states
/// absent are 0.
pub fn set_index_tasks(source: &str, counts: &[(&str, u64)]) {
    for state in TASK_STATES {
        let n = counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |&(_, n)| n);
        gauge!(INDEX_TASKS, "source" => source.to_owned(), "state" => state).set(n as f64);
    }
}

pub fn record_tick_dropped() {
    counter!(TICKS_DROPPED).increment(1);
}

pub fn record_reload(ok: bool) {
    counter!(CONFIG_RELOADS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// Counts one web page served (`page`: jobs, job, log, search, download, …).
pub fn record_page_view(page: &'static str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(WEB_PAGE_VIEWS, "page" => page, "status" => class).increment(1);
}

/// Records how long one web search took (`kind`: archive or log).
pub fn record_web_search(kind: &'static str, seconds: f64) {
    metrics::histogram!(WEB_SEARCH_DURATION, "kind" => kind).record(seconds);
}
