//! The web page in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver) by `fantoccini`, against `malog`'s web server on
//! 127.0.0.1 over an archive the simulator filled.
//!
//! These tests never skip: without chromedriver they fail and say how to
//! install it (`apt-get install -y chromium chromium-driver`). The browser and
//! driver can be pointed elsewhere with `MALOG_CHROMIUM` / `MALOG_CHROMEDRIVER`.
//! With `MALOG_SCREENSHOTS=docs` the screenshots are written to `docs/web-*.png`
//! (what the README shows); otherwise into the test's temp folder.

use crate::harness::{Harness, finished_job, running_job};
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const XSS: &str = "<script>alert(1)</script>";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver on a free port and waits until it answers. (It is a
/// separate program, so we cannot hand it a bound listener: its /status is
/// polled instead, for at most 20 s.)
async fn start_driver() -> Driver {
    let path = std::env::var("MALOG_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned());
    assert!(
        Path::new(&path).exists(),
        "chromedriver not found at {path}: the browser tests need Chromium and its driver; \
         install them with `apt-get install -y chromium chromium-driver` (README: \"Browser tests\"), \
         or set MALOG_CHROMEDRIVER and MALOG_CHROMIUM"
    );
    let port = free_port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver at {} did not answer within 20 s", driver.url);
}

/// A headless Chromium session that downloads into `downloads`.
async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let chromium = std::env::var("MALOG_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            },
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session via chromedriver: {e}"))
}

/// Where screenshots go: `docs/` with `MALOG_SCREENSHOTS=docs`, else `scratch`.
fn screenshot_dir(scratch: &Path) -> PathBuf {
    if std::env::var("MALOG_SCREENSHOTS").is_ok_and(|v| v == "docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        scratch.to_owned()
    }
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    std::fs::write(dir.join(format!("web-{name}.png")), png).unwrap();
}

/// The web server over `harness`'s archive, with `web` appended to its config.
async fn serve(harness: &Harness, web: &str) -> (String, CancellationToken) {
    let text = format!("{}\n{web}", harness.config_text());
    let path = harness.dir.path().join("web.toml");
    std::fs::write(&path, text).unwrap();
    let config = malog::config::Config::load(&path).unwrap();
    let state = malog::web::WebState::open(&config, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(malog::web::serve(listener, state, stop.clone()));
    (format!("http://{addr}"), stop)
}

/// Replaces an archived (plain) log with `content` and points its index row at it.
fn replace_log(harness: &Harness, job: &str, task: &str, write: impl FnOnce(&mut dyn Write)) {
    let row = harness.row(job, task);
    let path = row.location.expect("archived");
    let file = std::fs::File::create(&path).unwrap();
    let mut out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        len: 0,
    };
    write(&mut out);
    out.inner.flush().unwrap();
    let sha = hex::encode(out.hash.finalize());
    let conn = rusqlite::Connection::open(harness.config().index_path).unwrap();
    conn.execute(
        "UPDATE tasks SET size = ?1, sha256 = ?2, stored_size = ?1, stored_sha256 = ?2
         WHERE job_id = ?3 AND task_id = ?4",
        rusqlite::params![out.len as i64, sha, job, task],
    )
    .unwrap();
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Waits (at most 10 s) until the browser shows a page whose URL passes `ok`:
/// a click on a link or a submit button returns before the next page loads.
async fn wait_url(client: &Client, ok: impl Fn(&url::Url) -> bool) -> url::Url {
    for _ in 0..100 {
        let url = client.current_url().await.unwrap();
        if ok(&url)
            && client
                .execute("return document.readyState", vec![])
                .await
                .unwrap()
                == serde_json::json!("complete")
        {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the browser stayed at {}",
        client.current_url().await.unwrap()
    );
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// A small archive: jobs of several names and phases, one named like an XSS
/// attack whose log holds an XSS line.
async fn small_archive() -> Harness {
    let mut xss = finished_job("job-xss", 3, &[4096]);
    xss.name = XSS.to_owned();
    let mut failed = finished_job("job-failed", 5, &[4096]);
    failed.phase = "Failed".to_owned();
    failed.name = "resnet-failed".to_owned();
    let mut bert = finished_job("job-bert", 2, &[20_000, 20_000]);
    bert.name = "bert-large".to_owned();
    let mut running = running_job("job-run", &[8192]);
    running.name = "bert-running".to_owned();
    let h = Harness::start(vec![bert, failed, xss, running]).await;
    h.run().await;
    replace_log(&h, "job-xss", "worker-0", |out| {
        writeln!(out, "epoch 1 starting").unwrap();
        writeln!(out, "{XSS}").unwrap();
        writeln!(out, "<img src=x onerror=alert(2)> NEEDLE-XSS").unwrap();
    });
    h
}

/// GUARD: the job list filters by name and phase, a job opens with its
/// record and tasks, an archive-wide search links to the matching line, a
/// download is the archived log byte for byte, and untrusted text is shown
/// as text with no script running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_jobs_search_download_and_escaping() {
    let h = small_archive().await;
    let (base, stop) = serve(&h, "[web]\n").await;
    let driver = start_driver().await;
    let downloads = h.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let shots = screenshot_dir(h.dir.path());
    let c = browser(&driver, &downloads).await;

    // Jobs: all of them, newest first.
    c.goto(&format!("{base}/jobs")).await.unwrap();
    let rows = c.find_all(Locator::Css("#jobs tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 4);
    screenshot(&c, &shots, "jobs").await;

    // The source filter: the harness's jobs belong to `default`.
    c.goto(&format!("{base}/jobs?source=default"))
        .await
        .unwrap();
    let rows = c.find_all(Locator::Css("#jobs tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 4);
    c.goto(&format!("{base}/jobs?source=elsewhere"))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Id("none")).await.is_ok(),
        "no job of another source"
    );
    c.goto(&format!("{base}/jobs")).await.unwrap();

    // Filter by name and phase through the form.
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys("bert")
        .await
        .unwrap();
    c.find(Locator::Css("select[name=phase]"))
        .await
        .unwrap()
        .select_by_value("Completed")
        .await
        .unwrap();
    c.find(Locator::Id("filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&c, |u| u.query().is_some_and(|q| q.contains("name=bert"))).await;
    let rows = c.find_all(Locator::Css("#jobs tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "only bert-large is Completed and named bert");
    assert!(text_of(&c, "#jobs tbody").await.contains("bert-large"));

    // Open the job.
    c.find(Locator::LinkText("bert-large"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&c, |u| u.path().ends_with("/jobs/job-bert")).await;
    let tasks = text_of(&c, "#tasks").await;
    assert!(
        tasks.contains("worker-0") && tasks.contains("worker-1"),
        "{tasks}"
    );
    assert!(tasks.contains(&h.row("job-bert", "worker-1").sha256.unwrap()));
    screenshot(&c, &shots, "job").await;

    // Download worker-1's log through the browser and compare its sha256.
    let links = c.find_all(Locator::Css("#tasks a.download")).await.unwrap();
    links[1].click().await.unwrap();
    let expected = h.row("job-bert", "worker-1").sha256.unwrap();
    let file = wait_for_download(&downloads).await;
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&file).unwrap())),
        expected
    );

    // Archive-wide search, then follow a hit to its line.
    c.goto(&format!("{base}/search")).await.unwrap();
    c.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("NEEDLE-XSS")
        .await
        .unwrap();
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&c, |u| u.query().is_some_and(|q| q.contains("NEEDLE"))).await;
    let summary = text_of(&c, "#summary").await;
    assert!(
        summary.starts_with("1 matching lines in 1 logs"),
        "{summary}"
    );
    screenshot(&c, &shots, "search").await;
    c.find(Locator::Css("a.hit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_url(&c, |u| u.path().ends_with("/log")).await;
    assert_eq!(url.fragment(), Some("L3"), "{url}");
    let target = text_of(&c, "#L3 td.text").await;
    assert!(target.contains("NEEDLE-XSS"), "{target}");

    // The XSS line and job name are text; no script ran, none is in the page.
    let line = text_of(&c, "#L2 td.text").await;
    assert_eq!(line, XSS);
    assert!(text_of(&c, "h1").await.contains(XSS));
    assert!(c.get_alert_text().await.is_err(), "no alert is open");
    let scripts = c
        .execute(
            "return document.querySelectorAll('script, img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts, serde_json::json!(0));
    c.goto(&format!("{base}/jobs")).await.unwrap();
    assert!(text_of(&c, "#jobs").await.contains(XSS));
    assert!(c.get_alert_text().await.is_err(), "no alert is open");

    // A bad id is refused with a message.
    c.goto(&format!("{base}/jobs/bad%20id")).await.unwrap();
    assert!(text_of(&c, "#error").await.contains("invalid job id"));

    c.close().await.unwrap();
    stop.cancel();
}

async fn wait_for_download(dir: &Path) -> PathBuf {
    for _ in 0..200 {
        let done: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        if let [file] = done.as_slice() {
            return file.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser did not finish the download within 20 s");
}

/// Lines of the 200 MiB log: fixed width, numbered, with two needles.
const BIG_LINES: u64 = 2_750_000;
const NEEDLE_LINE: u64 = 2_650_000;

fn write_big_log(out: &mut dyn Write) {
    let mut line = String::with_capacity(128);
    for i in 1..=BIG_LINES {
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            line,
            "2026-11-01T00:00:00Z INFO worker-0 step={i:010} loss={:.6} lr=0.000100",
            1.0 / i as f64
        );
        if i == NEEDLE_LINE {
            line.push_str(" NEEDLE-NEAR-END");
        }
        line.push('\n');
        out.write_all(line.as_bytes()).unwrap();
    }
}

/// GUARD: a 200 MiB log opens at its end without sending the whole log,
/// with line numbers; "line N" and a search inside the log find their lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_large_log_end_line_and_find() {
    let mut job = finished_job("job-big", 1, &[1024]);
    job.name = "llm-pretrain".to_owned();
    let h = Harness::start(vec![job]).await;
    h.run().await;
    replace_log(&h, "job-big", "worker-0", write_big_log);
    let size = h.row("job-big", "worker-0").size.unwrap();
    assert!(size >= 200 << 20, "the log is {size} bytes");
    let (base, stop) = serve(&h, "[web]\n").await;
    let driver = start_driver().await;
    let shots = screenshot_dir(h.dir.path());
    let c = browser(&driver, h.dir.path()).await;
    let log = format!("{base}/jobs/job-big/tasks/worker-0/log");

    c.goto(&log).await.unwrap();
    assert!(text_of(&c, "#L1").await.contains("step=0000000001"));
    // Jump to the end: the last line, numbered.
    c.find(Locator::Id("last"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&c, |u| u.query().is_some_and(|q| q.contains("at=end"))).await;
    let last = format!("#L{BIG_LINES} td.text");
    assert!(
        text_of(&c, &last)
            .await
            .contains(&format!("step={BIG_LINES:010}"))
    );
    let html_len = c.source().await.unwrap().len();
    assert!(
        html_len < 1 << 20,
        "the end page is {html_len} bytes, not the log"
    );

    // Search backwards from the end for the needle.
    c.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("NEEDLE-NEAR-END")
        .await
        .unwrap();
    c.find(Locator::Id("find-prev"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The search answers with a redirect to the page of its hit.
    wait_url(&c, |u| u.query().is_some_and(|q| q.contains("from="))).await;
    let hit = format!("#L{NEEDLE_LINE}");
    assert!(text_of(&c, &format!("{hit} mark")).await == "NEEDLE-NEAR-END");
    screenshot(&c, &shots, "log").await;
    // No further match after it.
    c.find(Locator::Id("find-next"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&c, |u| u.query().is_some_and(|q| q.contains("find=next"))).await;
    assert!(text_of(&c, "#note").await.contains("no match"));

    // Line N.
    c.goto(&format!("{log}?line=1234567")).await.unwrap();
    assert!(text_of(&c, "#L1234567").await.contains("step=0001234567"));
    c.close().await.unwrap();
    stop.cancel();
}

/// GUARD: with `auth = "bearer"` a request without the token (or with a
/// wrong one) is refused with 401 and a challenge; with it the page loads.
/// Basic auth likewise.
#[tokio::test]
async fn a_token_is_required_when_configured() {
    let h = Harness::start(vec![finished_job("job-1", 2, &[1024])]).await;
    h.run().await;
    std::fs::write(h.dir.path().join("web-token"), "t0ken-xyz\n").unwrap();
    let (base, stop) = serve(
        &h,
        "[web]\nauth = \"bearer\"\nsecret_file = \"web-token\"\n",
    )
    .await;
    let http = reqwest::Client::new();
    let jobs = format!("{base}/jobs");
    let refused = http.get(&jobs).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body = refused.text().await.unwrap();
    assert!(!body.contains("t0ken"), "the secret is not in the answer");
    let wrong = http.get(&jobs).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .get(&jobs)
        .bearer_auth("t0ken-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    stop.cancel();

    let (base, stop) = serve(
        &h,
        "[web]\nauth = \"basic\"\nuser = \"ml\"\nsecret_file = \"web-token\"\n",
    )
    .await;
    let jobs = format!("{base}/jobs");
    assert_eq!(http.get(&jobs).send().await.unwrap().status(), 401);
    let ok = http
        .get(&jobs)
        .basic_auth("ml", Some("t0ken-xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    stop.cancel();
}

/// GUARD: `malog web` (the real binary) serves the pages read-only from the
/// config's index and storage, and its `/metrics` counts page views and
/// search time.
#[tokio::test]
async fn malog_web_serves_pages_and_counts_them() {
    use std::io::BufRead;
    let h = Harness::start(vec![finished_job("job-1", 2, &[2048])]).await;
    h.run().await;
    let config = h.config_path();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "web",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("serving the archive at ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    let http = reqwest::Client::new();
    let jobs = http.get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(jobs.status(), 200);
    assert!(jobs.text().await.unwrap().contains("job-job-1"));
    let search = http
        .get(format!("{base}/search?q=step"))
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 200);
    let missing = http.get(format!("{base}/jobs/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        metrics.contains(r#"malog_web_page_views_total{page="jobs",status="2xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"malog_web_page_views_total{page="job",status="4xx"} 1"#));
    assert!(metrics.contains(r#"malog_web_search_duration_seconds_count{kind="archive"} 1"#));
}
