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
const YEARLY: &str = "0 0 0 1 1 *";

fn daemon_config(cron: &str, fetch: &str) -> String {
    format!(
        "{fetch}\n[schedule]\ncron = \"{cron}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n"
    )
}

/// A running `malog run` child process.
struct Daemon {
    child: Child,
    /// Every stderr line so far (JSON log records).
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Daemon {
    async fn spawn(h: &Harness, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("malog"));
        cmd.arg("--config")
            .arg(h.config_path())
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

    fn count_log(&self, needle: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a log line contains `needle`; returns it.
    async fn wait_log(&mut self, needle: &str) -> String {
        let what = format!("a log line with {needle:?}");
        let log = self.log.clone();
        let found = wait_for(&what, &mut self.child, &log, || async {
            log.lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await;
        found
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
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
    async fn wait_metrics<T>(&mut self, what: &str, f: impl Fn(&Metrics) -> Option<T>) -> T {
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

    async fn stop(mut self) {
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
struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// Parses the text format (version 0.0.4) strictly enough to catch a broken
    /// exposition: HELP/TYPE syntax, a TYPE before each family's samples, metric
    /// and label names, quoted and escaped label values, numeric values.
    fn parse(text: &str) -> Result<Metrics, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        let name_ok = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        for (i, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| err("bad TYPE"))?;
                if !name_ok(name)
                    || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                {
                    return Err(err("bad TYPE"));
                }
                if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(err("second TYPE for a family"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                if !name_ok(name) {
                    return Err(err("bad HELP"));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| err("no value"))?;
            let name = &line[..name_end];
            if !name_ok(name) {
                return Err(err("bad metric name"));
            }
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                loop {
                    let start = chars.peek().map(|(i, _)| *i).ok_or_else(|| err("open labels"))?;
                    if body[start..].starts_with('}') {
                        rest = &body[start + 1..];
                        break;
                    }
                    let eq = body[start..].find('=').ok_or_else(|| err("label without ="))? + start;
                    let label = &body[start..eq];
                    if !name_ok(label) || label.contains(':') {
                        return Err(err("bad label name"));
                    }
                    if body.as_bytes().get(eq + 1) != Some(&b'"') {
                        return Err(err("unquoted label value"));
                    }
                    let mut value = String::new();
                    let mut pos = eq + 2;
                    loop {
                        let c = body[pos..].chars().next().ok_or_else(|| err("open quote"))?;
                        pos += c.len_utf8();
                        match c {
                            '"' => break,
                            '\\' => {
                                let e = body[pos..].chars().next().ok_or_else(|| err("bad escape"))?;
                                pos += e.len_utf8();
                                value.push(match e {
                                    'n' => '\n',
                                    '\\' => '\\',
                                    '"' => '"',
                                    _ => return Err(err("bad escape")),
                                });
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(label.to_owned(), value);
                    if body[pos..].starts_with(',') {
                        pos += 1;
                    }
                    chars = body[pos..].char_indices().peekable();
                    // Re-base the iterator on the remaining text.
                    let remaining = &body[pos..];
                    if remaining.starts_with('}') {
                        rest = &remaining[1..];
                        break;
                    }
                    let offset = pos;
                    let _ = offset;
                    let next_eq = remaining.find('=').ok_or_else(|| err("label without ="))?;
                    let label = &remaining[..next_eq];
                    let _ = label;
                    // Continue the outer loop from the remaining text.
                    let body_rest = remaining;
                    let _ = body_rest;
                    let _ = chars.peek();
                    // Simplest: recurse on the rest by rewriting `body`.
                    return Metrics::parse_rest(name, labels, remaining, &types, &mut samples, text, i)
                        .and_then(|()| Metrics::parse(&text.lines().skip(i + 1).collect::<Vec<_>>().join("\n")))
                        .map(|m| {
                            let mut all = samples;
                            all.extend(m.samples);
                            Metrics { samples: all }
                        });
                }
            }
            let mut fields = rest.split_whitespace();
            let value = fields.next().ok_or_else(|| err("no value"))?;
            let value = parse_value(value).ok_or_else(|| err("bad value"))?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
            }
            let family = family_of(name, &types).ok_or_else(|| err("sample before its TYPE"))?;
            let _ = family;
            samples.push((name.to_owned(), labels, value));
        }
        Ok(Metrics { samples })
    }
}
