//! `malog run` as a real process against the simulator: schedule, signals,
//! /metrics, /healthz, sd_notify, retention risks and `malog status`.
//!
//! The daemon listens on 127.0.0.1:0 and logs JSON; tests learn its address from
//! the log line and wait for states by polling (index, endpoints, log) with a
//! bounded deadline, never by sleeping a fixed time.

use crate::harness::*;
use malog::index::{Index, RunSummary};
use malog::sim::{Fault, FaultKind, FaultTarget};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every test waits for at most this long for any one condition.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

const EVERY_SECOND: &str = "* * * * * *";
/// Fires once a year: the only pass is the start-up catch-up pass.
pub(crate) const YEARLY: &str = "0 0 0 1 1 *";

pub(crate) fn daemon_config(cron: &str, fetch: &str) -> String {
    format!(
        "{fetch}\n[schedule]\ncron = \"{cron}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n"
    )
}

/// A running `malog run` child process.
pub(crate) struct Daemon {
    child: Child,
    /// Every stderr line so far (JSON log records).
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Daemon {
    async fn spawn(h: &Harness, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_config(&h.config_path(), env).await
    }

    /// A daemon over the config file at `config`.
    pub(crate) async fn spawn_config(config: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("malog"));
        cmd.arg("--config")
            .arg(config)
            .args(["--log-format", "json", "run"])
            .env_remove("HUAWEICLOUD_SDK_AK")
            .env_remove("HUAWEICLOUD_SDK_SK")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("RUST_LOG", "malog=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Daemon {
            child,
            log,
            addr: "127.0.0.1:1".parse().unwrap(),
            http: reqwest::Client::new(),
        };
        let line = daemon.wait_log("serving http://").await;
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        daemon.addr = record["fields"]["addr"].as_str().unwrap().parse().unwrap();
        daemon
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    async fn wait_log(&mut self, needle: &str) -> String {
        let what = format!("a log line with {needle:?}");
        let log = self.log.clone();
        wait_for(&what, &mut self.child, &log, || async {
            log.lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.addr);
        let response = self.http.get(url).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn metrics(&self) -> Metrics {
        let (status, text) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        Metrics::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
    }

    /// Polls /metrics until `f` returns `Some`.
    pub(crate) async fn wait_metrics<T>(
        &mut self,
        what: &str,
        f: impl Fn(&Metrics) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_alive(what);
            if let Some((200, text)) = self.get("/metrics").await {
                let m = Metrics::parse(&text).unwrap();
                if let Some(v) = f(&m) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_health(&mut self, want: u16) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_alive("health");
            if let Some((status, body)) = self.get("/healthz").await
                && status == want
            {
                return serde_json::from_str(&body).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for /healthz {want}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn assert_alive(&mut self, during: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) while waiting for {during}:\n{}",
                self.log_lines().join("\n")
            );
        }
    }

    /// Waits for the process to exit; returns its exit code and how long it took.
    async fn wait_exit(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the daemon did not exit:\n{}",
                self.log_lines().join("\n")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn stop(mut self) {
        self.signal("TERM");
        let (code, _) = self.wait_exit().await;
        assert_eq!(code, Some(0), "{}", self.log_lines().join("\n"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`] or if the
/// daemon exits meanwhile.
async fn wait_for<T, F, Fut>(
    what: &str,
    child: &mut Child,
    log: &Arc<Mutex<Vec<String>>>,
    f: F,
) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) while waiting for {what}:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The runs table, oldest first (empty while the index does not exist).
fn runs(h: &Harness) -> Vec<RunSummary> {
    let Ok(index) = Index::open_read_only(&h.config().index_path) else {
        return Vec::new();
    };
    let mut runs = index.run_history(1000).unwrap_or_default();
    runs.reverse();
    runs
}

fn finished_runs(h: &Harness) -> Vec<RunSummary> {
    runs(h)
        .into_iter()
        .filter(|r| r.ended_at_ms.is_some())
        .collect()
}

/// A parsed Prometheus text exposition.
pub(crate) struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

type Sample = (String, BTreeMap<String, String>, f64);

/// `name{label="value",...} value [timestamp]`
fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !name_ok(name) {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=').ok_or("label without =")?;
            let label = &body[..eq];
            if !name_ok(label) || label.contains(':') {
                return Err("bad label name");
            }
            body = body[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted label value")?;
            let mut value = String::new();
            let mut chars = body.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value"),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        _ => return Err("bad escape"),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.insert(label.to_owned(), value);
            body = &body[end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value");
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "bad value")?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text");
    }
    Ok((name.to_owned(), labels, value))
}

impl Metrics {
    /// Parses the text format (0.0.4) strictly enough to catch a broken
    /// exposition: HELP/TYPE syntax, one TYPE per family and before its samples,
    /// metric and label names, quoted and escaped label values, numeric values,
    /// and histogram series that end in `le="+Inf"` equal to `_count`.
    fn parse(text: &str) -> Result<Metrics, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| err("bad TYPE"))?;
                let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !name_ok(name) || !kinds.contains(&kind) {
                    return Err(err("bad TYPE"));
                }
                if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(err("second TYPE for a family"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if !name_ok(rest.split(' ').next().unwrap_or_default()) {
                    return Err(err("bad HELP"));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(err)?;
            let name = &sample.0;
            let family_known = types.contains_key(name)
                || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix).is_some_and(|f| {
                        matches!(
                            types.get(f).map(String::as_str),
                            Some("histogram" | "summary")
                        )
                    })
                });
            if !family_known {
                return Err(err("sample without a TYPE before it"));
            }
            samples.push(sample);
        }
        let m = Metrics { samples };
        for (family, kind) in &types {
            if kind == "histogram" {
                let inf = m.get(&format!("{family}_bucket"), &[("le", "+Inf")]);
                let count = m.get(&format!("{family}_count"), &[]);
                if inf != count {
                    return Err(format!("{family}: +Inf bucket {inf:?} != count {count:?}"));
                }
            }
        }
        Ok(m)
    }

    /// The value of the sample with this name whose labels include `labels`.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

#[test]
fn prometheus_parser_rejects_broken_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n";
    let m = Metrics::parse(good).unwrap();
    assert_eq!(m.get("a_total", &[("y", "q\"")]), Some(3.0));
    for bad in [
        "a_total 3\n",
        "# TYPE a_total counter\na_total{x=1} 3\n",
        "# TYPE a_total counter\na_total{x=\"1\"} three\n",
        "# TYPE a_total counter\n# TYPE a_total gauge\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",
    ] {
        assert!(Metrics::parse(bad).is_err(), "{bad:?}");
    }
}

/// GUARD: with a cron tick every second the daemon runs pass after pass, and a
/// log that grows between passes is archived again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_every_second_runs_passes_and_archives_a_change() {
    let mut h = Harness::start(vec![
        running_job("r", &[10_000]),
        finished_job("f", 30, &[5_000]),
    ])
    .await;
    h.extra = daemon_config(EVERY_SECOND, FAST_FETCH);
    let mut d = Daemon::spawn(&h, &[]).await;
    let log = d.log.clone();
    wait_for("a first ok pass", &mut d.child, &log, || async {
        finished_runs(&h)
            .iter()
            .any(|r| r.outcome.as_deref() == Some("ok"))
            .then_some(())
    })
    .await;
    let passes_before = finished_runs(&h).len();
    assert_eq!(h.row("r", "worker-0").size, Some(10_000));

    h.sim.set_task_size("r", "worker-0", 25_000);
    wait_for(
        "the grown log in the archive",
        &mut d.child,
        &log,
        || async { (h.row("r", "worker-0").size == Some(25_000)).then_some(()) },
    )
    .await;
    assert!(h.archived_bytes("r", "worker-0") == h.sim.log_bytes("r", "worker-0"));
    let passes = finished_runs(&h);
    assert!(
        passes.len() > passes_before && passes.len() >= 2,
        "{passes:?}"
    );
    d.stop().await;
}

/// GUARD: SIGTERM during a stalled download cancels it after the grace period:
/// exit 0, nothing under the final name, the pass recorded, and the staging
/// file kept with its resume sidecar (a deliberate stop loses no more than a
/// crash), so the next pass resumes it with a Range request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stalled_download_exits_cleanly() {
    const SIZE: u64 = 8 * 1024 * 1024;
    const STALL: Duration = Duration::from_secs(600);
    let mut h = Harness::start(vec![finished_job("big", 30, &[SIZE])]).await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: SIZE / 4,
            duration: STALL,
        },
    ));
    // The stall must outlast the test: no idle timeout breaks it off first.
    let fetch = FAST_FETCH.replace("idle_timeout = \"2s\"", "idle_timeout = \"1h\"");
    h.extra = daemon_config(YEARLY, &fetch);
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_metrics("a download in flight", |m| {
        (m.get("malog_downloads_in_flight", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let log = d.log.clone();
    let sim = h.sim.clone();
    wait_for("the stall to begin", &mut d.child, &log, || async {
        (sim.stats().bytes_served >= SIZE / 4).then_some(())
    })
    .await;
    // The partial download reaches its staging file in 1 MiB writes; its
    // resume sidecar would only come with the first fsync, at 32 MiB.
    let staging = h.staging_dir();
    wait_for("the partial download on disk", &mut d.child, &log, || {
        let staging = staging.clone();
        async move { (count_files(&staging) == 1).then_some(()) }
    })
    .await;

    d.signal("TERM");
    let (code, took) = d.wait_exit().await;
    let log = d.log_lines().join("\n");
    assert_eq!(code, Some(0), "{log}");
    assert!(took < STALL / 2, "cancelled, not waited out: {took:?}");
    assert!(log.contains("grace period over"), "{log}");
    assert_eq!(
        h.staging_files(),
        2,
        "the staging file and its resume sidecar are kept"
    );
    assert!(h.archive_files().is_empty(), "{:?}", h.archive_files());
    let row = h.row("big", "worker-0");
    assert_ne!(row.state, "archived");
    assert!(row.sha256.is_none() && row.location.is_none(), "{row:?}");
    let runs = runs(&h);
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].ended_at_ms.is_some(),
        "the pass is recorded as ended: {runs:?}"
    );

    // The next pass continues where the stopped one was.
    h.sim.reset_stats();
    let report = pass(&h.archiver().await).await;
    assert_eq!(report.totals.fetched, 1, "{:?}", report.failures);
    assert_eq!(h.sim.stats().range_requests, 1);
    assert!(h.sim.stats().bytes_served < SIZE, "{:?}", h.sim.stats());
    assert!(h.archived_bytes("big", "worker-0") == h.sim.log_bytes("big", "worker-0"));
    assert_eq!(h.staging_files(), 0);
}

/// GUARD: SIGHUP with a broken config keeps the daemon and its old config; a
/// later valid config is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_running() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = daemon_config(YEARLY, FAST_FETCH);
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_health(200).await;
    let path = h.dir.path().join("config.toml");

    let broken = h.config_text().replace(YEARLY, "every hour");
    std::fs::write(&path, broken).unwrap();
    d.signal("HUP");
    let line = d.wait_log("config reload failed").await;
    assert!(line.contains("schedule.cron"), "{line}");
    d.assert_alive("after a broken reload");
    d.wait_health(200).await;
    let m = d.metrics().await;
    assert_eq!(
        m.must("malog_config_reloads_total", &[("result", "error")]),
        1.0
    );

    std::fs::write(&path, h.config_text().replace(YEARLY, "0 0 0 1 2 *")).unwrap();
    d.signal("HUP");
    let line = d.wait_log("config reloaded").await;
    assert!(line.contains("0 0 0 1 2 *"), "{line}");
    let m = d.metrics().await;
    assert_eq!(
        m.must("malog_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    d.stop().await;
}

/// GUARD: /metrics is valid Prometheus text and its numbers are what happened:
/// three tasks fetched, one throttled link request retried, bytes, API statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_what_happened() {
    let started_s = now_ms() as f64 / 1000.0;
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000, 2000, 3000])]).await;
    h.sim
        .inject(Fault::throttled(FaultTarget::Link, 0).task("worker-1"));
    h.extra = daemon_config(YEARLY, FAST_FETCH);
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_metrics("one ok pass", |m| {
        (m.get("malog_passes_total", &[("outcome", "ok")]) == Some(1.0)).then_some(())
    })
    .await;
    let m = d.metrics().await;
    let stats = h.sim.stats();

    assert_eq!(m.must("malog_passes_total", &[("outcome", "partial")]), 0.0);
    assert_eq!(m.must("malog_passes_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(m.must("malog_pass_duration_seconds_count", &[]), 1.0);
    assert_eq!(m.must("malog_pass_running", &[]), 0.0);
    assert_eq!(m.must("malog_tasks_total", &[("outcome", "fetched")]), 3.0);
    assert_eq!(m.must("malog_tasks_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(m.must("malog_archived_bytes_total", &[]), 6000.0);
    assert_eq!(m.must("malog_download_bytes_total", &[]), 6000.0);
    assert_eq!(
        m.must("malog_api_requests_total", &[("status", "429")]),
        1.0
    );
    let api_ok =
        stats.search_requests + stats.detail_requests + stats.link_requests + stats.record_requests
            - 1;
    assert_eq!(
        m.must("malog_api_requests_total", &[("status", "2xx")]),
        api_ok as f64,
        "{stats:?}"
    );
    assert_eq!(m.must("malog_api_throttled_total", &[]), 1.0);
    assert_eq!(m.must("malog_retries_total", &[]), 1.0);
    assert_eq!(m.must("malog_downloads_in_flight", &[]), 0.0);
    assert_eq!(m.must("malog_retention_risk_tasks", &[]), 0.0);
    assert_eq!(m.must("malog_rewritten_logs_total", &[]), 0.0);
    assert_eq!(m.must("malog_index_tasks", &[("state", "archived")]), 3.0);
    let last = m.must("malog_last_success_timestamp_seconds", &[]);
    assert!(
        last >= started_s && last <= now_ms() as f64 / 1000.0,
        "{last} vs {started_s}"
    );
    let runs = finished_runs(&h);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].ended_at_ms.map(|ms| ms as f64 / 1000.0), Some(last));
    d.stop().await;
}

/// Makes the folder read-only in a way that binds root too: the immutable
/// attribute (`chattr +i`), or plain permissions for other users. Returns an
/// undo function.
pub fn make_read_only(dir: &std::path::Path) -> Box<dyn FnOnce()> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        let status = std::process::Command::new("chattr")
            .args(["-R", "+i"])
            .arg(dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "running as root needs `chattr +i` (ext4/xfs/btrfs) to make {} read-only",
            dir.display()
        );
        let dir = dir.to_owned();
        Box::new(move || {
            std::process::Command::new("chattr")
                .args(["-R", "-i"])
                .arg(&dir)
                .status()
                .unwrap();
        })
    } else {
        let status = std::process::Command::new("chmod")
            .args(["-R", "a-w"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
        let dir = dir.to_owned();
        Box::new(move || {
            std::process::Command::new("chmod")
                .args(["-R", "u+w"])
                .arg(&dir)
                .status()
                .unwrap();
        })
    }
}

/// GUARD: /healthz never says ok over a storage that cannot be written, and
/// recovers when it can again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_unhealthy_when_the_archive_is_read_only() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = daemon_config(YEARLY, FAST_FETCH);
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_metrics("the start-up pass", |m| {
        (m.get("malog_passes_total", &[("outcome", "ok")]) == Some(1.0)).then_some(())
    })
    .await;
    let body = d.wait_health(200).await;
    assert_eq!(body["storage"], "ok");
    assert_eq!(body["index"], "ok");

    let undo = make_read_only(&h.archive_root());
    let body = d.wait_health(503).await;
    undo();
    assert_eq!(body["status"], "unhealthy");
    assert_ne!(body["storage"], "ok", "{body}");
    assert_eq!(body["index"], "ok", "{body}");

    let body = d.wait_health(200).await;
    assert_eq!(body["status"], "ok");
    d.stop().await;
}

/// GUARD: ticks that arrive while a pass runs are dropped: passes never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ticks_never_run_two_passes() {
    let mut h = Harness::start(vec![finished_job("slow", 30, &[100_000])]).await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 1000,
            duration: Duration::from_millis(3500),
        },
    ));
    let fetch = FAST_FETCH.replace("idle_timeout = \"2s\"", "idle_timeout = \"1h\"");
    h.extra = daemon_config(EVERY_SECOND, &fetch);
    let mut d = Daemon::spawn(&h, &[]).await;
    let log = d.log.clone();
    wait_for(
        "ticks dropped during the slow pass, then more passes",
        &mut d.child,
        &log,
        || async {
            let dropped = log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("schedule tick dropped"))
                .count();
            (dropped >= 2 && finished_runs(&h).len() >= 3).then_some(())
        },
    )
    .await;
    let m = d.metrics().await;
    assert!(m.must("malog_ticks_dropped_total", &[]) >= 2.0);
    d.stop().await;
    let runs = runs(&h);
    for pair in runs.windows(2) {
        let ended = pair[0].ended_at_ms.expect("every pass ended");
        assert!(
            pair[1].started_at_ms >= ended,
            "pass {} started before pass {} ended: {runs:?}",
            pair[1].run_id,
            pair[0].run_id
        );
    }
    assert_eq!(h.sim.stats().downloads, 1, "sealed after one download");
}

/// GUARD: a task of a job that ended 26 days ago and is still not archived is
/// logged, counted and listed by `malog status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_risk_is_warned_counted_and_listed_by_status() {
    let mut h = Harness::start(vec![
        finished_job("old", 26 * 24, &[1000]),
        finished_job("fresh", 30, &[1000]),
    ])
    .await;
    h.sim.inject(
        Fault::status(FaultTarget::Link, 403, "ModelArts.0203", "no permission")
            .job("old")
            .times(1000),
    );
    h.extra = daemon_config(YEARLY, FAST_FETCH);
    let mut d = Daemon::spawn(&h, &[]).await;
    // The gauge is set right after the pass is counted: wait for both (a
    // scrape can fall between them), failing by timeout if the risk never shows.
    d.wait_metrics("a partial pass and one task at risk", |m| {
        (m.get("malog_passes_total", &[("outcome", "partial")]) == Some(1.0)
            && m.get("malog_retention_risk_tasks", &[]) == Some(1.0))
        .then_some(())
    })
    .await;
    let line = d.wait_log("retention risk").await;
    assert!(
        line.contains("\"old\"") && line.contains("worker-0"),
        "{line}"
    );

    let mut cmd = assert_cmd::Command::cargo_bin("malog").unwrap();
    cmd.arg("--config")
        .arg(h.config_path())
        .args(["status", "--format", "json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let risks = status["retention_risks"].as_array().unwrap();
    assert_eq!(risks.len(), 1, "{status}");
    assert_eq!(risks[0]["job_id"], "old");
    assert_eq!(risks[0]["task_id"], "worker-0");
    assert!(risks[0]["last_error"].as_str().unwrap().contains("403"));
    assert_eq!(status["failing"].as_array().unwrap().len(), 1);
    assert_eq!(status["passes"][0]["outcome"], "partial");
    assert_eq!(status["passes"][0]["fetched"], 1);
    assert!(
        status["next_pass"]
            .as_str()
            .unwrap()
            .contains("-01-01T00:00:00Z")
    );
    assert!(status["last_success"].is_null(), "no ok pass yet");

    let mut cmd = assert_cmd::Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path()).arg("status");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("retention risks") && text.contains("old"),
        "{text}"
    );
    d.stop().await;
}

/// GUARD: under systemd the daemon says READY=1 once ready, reports progress in
/// STATUS=, pings the watchdog while ticks arrive, and says STOPPING=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_status_watchdog_and_stopping() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = daemon_config(EVERY_SECOND, FAST_FETCH);
    let socket_path = h.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = messages.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    });
    let socket_env = socket_path.to_str().unwrap().to_owned();
    let mut d = Daemon::spawn(
        &h,
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "2000000")],
    )
    .await;
    let log = d.log.clone();
    let seen = |needle: &'static str, n: usize| {
        let messages = messages.clone();
        move || {
            let messages = messages.clone();
            async move {
                (messages
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|m| m.contains(needle))
                    .count()
                    >= n)
                    .then_some(())
            }
        }
    };
    wait_for("READY=1", &mut d.child, &log, seen("READY=1", 1)).await;
    wait_for(
        "two watchdog pings",
        &mut d.child,
        &log,
        seen("WATCHDOG=1", 2),
    )
    .await;
    wait_for(
        "pass progress in STATUS",
        &mut d.child,
        &log,
        seen("STATUS=pass running", 1),
    )
    .await;
    wait_for(
        "idle STATUS",
        &mut d.child,
        &log,
        seen("STATUS=idle; next pass at", 1),
    )
    .await;
    d.signal("TERM");
    let (code, _) = d.wait_exit().await;
    assert_eq!(code, Some(0));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let all = messages.lock().unwrap().clone();
    let ready = all.iter().position(|m| m.contains("READY=1")).unwrap();
    let stopping = all
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1 in {all:?}"));
    assert!(ready < stopping, "{all:?}");
}

/// GUARD: a storage folder that is not usable at start-up is waited for with
/// backoff (health says starting), not a crash loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_for_storage_instead_of_exiting() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = daemon_config(YEARLY, FAST_FETCH);
    // A file where the archive folder should be: nothing can be stored yet.
    std::fs::write(h.archive_root(), "not a folder").unwrap();
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_log("cannot open the archive yet").await;
    let body = d.wait_health(503).await;
    assert_eq!(body["status"], "starting", "{body}");

    std::fs::remove_file(h.archive_root()).unwrap();
    d.wait_metrics("the first pass after storage came up", |m| {
        (m.get("malog_passes_total", &[("outcome", "ok")]) == Some(1.0)).then_some(())
    })
    .await;
    d.wait_health(200).await;
    assert!(h.archived_bytes("a", "worker-0") == h.sim.log_bytes("a", "worker-0"));
    d.stop().await;
}

/// GUARD: a bad config at start is a usage error (exit 2), not a crash loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedule_at_start_exits_2() {
    let mut h = Harness::start(vec![]).await;
    h.extra = daemon_config("61 * * * * *", FAST_FETCH);
    let mut cmd = assert_cmd::Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path()).arg("run");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule.cron"));
}

/// GUARD: while another process (a manual `backfill`) holds the index's writer
/// lock, ticks skip their pass instead of failing it; passes resume afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_are_skipped_while_another_process_writes_the_index() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = daemon_config(EVERY_SECOND, FAST_FETCH);
    let index = Index::open(&h.config().index_path).unwrap();
    let lock = index.lock_writer().unwrap();
    let mut d = Daemon::spawn(&h, &[]).await;
    d.wait_log("pass skipped").await;
    let m = d.metrics().await;
    assert!(m.must("malog_passes_total", &[("outcome", "skipped")]) >= 1.0);
    assert_eq!(m.must("malog_passes_total", &[("outcome", "failed")]), 0.0);

    drop(lock);
    d.wait_metrics("an ok pass once the lock is free", |m| {
        (m.get("malog_passes_total", &[("outcome", "ok")]) >= Some(1.0)).then_some(())
    })
    .await;
    d.stop().await;
}
