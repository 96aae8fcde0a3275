//! End-to-end checks of the simulator over real HTTP on 127.0.0.1 with reqwest:
//! signed API calls, links, downloads, validators, ranges and every fault kind.
//! One scenario per test.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::source::sign::{DATE_FORMAT, SignableRequest, authorization, content_sha256_header};

const JOB: &str = "3faf5c03-aaa1-4cbe-879d-24b05d997347";
const RUNNING: &str = "b7e3a9d1-24c6-4f58-8a0e-6d2c91f4e7b3";
const CREATING: &str = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b";

/// A started demo simulator and a client that signs like the Python SDK.
struct Harness {
    sim: Simulator,
    http: reqwest::Client,
    config: SimConfig,
}

impl Harness {
    async fn start(config: SimConfig) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(listener, config.clone()).await.unwrap();
        Harness {
            sim,
            http: reqwest::Client::new(),
            config,
        }
    }

    async fn demo() -> Harness {
        Harness::start(SimConfig::demo()).await
    }

    fn path(&self, rest: &str) -> String {
        format!("/v2/{}/{rest}", self.config.project_id)
    }

    /// Sends a request signed with the simulator's credentials.
    async fn signed(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let mut headers = vec![
            ("Host".to_owned(), self.sim.addr().to_string()),
            (
                "X-Sdk-Date".to_owned(),
                chrono::Utc::now().format(DATE_FORMAT).to_string(),
            ),
            ("Content-Type".to_owned(), content_type.to_owned()),
            ("X-Project-Id".to_owned(), self.config.project_id.clone()),
        ];
        headers.extend(content_sha256_header(&headers));
        let req = SignableRequest {
            method,
            raw_path: path,
            query: &[],
            headers: &headers,
            body: &body,
        };
        let auth = authorization(&req, &self.config.access_key, &self.config.secret_key);
        let mut builder = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.endpoint()),
            )
            .header("Authorization", auth)
            .body(body);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        builder.send().await.unwrap()
    }

    async fn get_json(&self, rest: &str) -> (StatusCode, Value) {
        let response = self
            .signed("GET", &self.path(rest), "application/json", None)
            .await;
        (response.status(), response.json().await.unwrap())
    }

    async fn search(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .signed(
                "POST",
                &self.path("training-job-searches"),
                "application/json;charset=utf-8",
                Some(body),
            )
            .await;
        (response.status(), response.json().await.unwrap())
    }

    /// Asks for a log link the way the archiver does (octet-stream, unsigned payload).
    async fn link(&self, job: &str, task: &str) -> (StatusCode, Value) {
        let path = self.path(&format!("training-jobs/{job}/tasks/{task}/logs/url"));
        let response = self
            .signed("GET", &path, "application/octet-stream", None)
            .await;
        (response.status(), response.json().await.unwrap())
    }

    async fn link_url(&self, job: &str, task: &str) -> String {
        let (status, body) = self.link(job, task).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["obs_url"].as_str().unwrap().to_owned()
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// GUARD: a correctly signed details call succeeds; an unsigned or wrongly signed
/// one gets the gateway's 401 `APIG.0301` and is counted.
#[tokio::test]
async fn signed_details_succeed_and_unsigned_get_401() {
    let h = Harness::demo().await;
    let (status, job) = h.get_json(&format!("training-jobs/{JOB}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["metadata"]["id"], JOB);
    assert_eq!(job["metadata"]["name"], "resnet50-ddp-0315");
    assert_eq!(job["status"]["phase"], "Completed");
    assert_eq!(job["status"]["tasks"], json!(["worker-0", "worker-1"]));
    assert_eq!(job["spec"]["resource"]["node_count"], 2);

    let url = format!(
        "{}{}",
        h.sim.endpoint(),
        h.path(&format!("training-jobs/{JOB}"))
    );
    let unsigned = h.http.get(&url).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let request_id = header(&unsigned, "x-request-id");
    assert_eq!(request_id.len(), 32);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["error_code"], "APIG.0301");
    assert_eq!(body["request_id"], request_id);

    let stale = h
        .http
        .get(&url)
        .header("X-Sdk-Date", "20200101T000000Z")
        .header(
            "Authorization",
            "SDK-HMAC-SHA256 Access=SIMULATORAK000000001, SignedHeaders=x-sdk-date, Signature=00",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let stats = h.sim.stats();
    assert_eq!((stats.detail_requests, stats.auth_failures), (1, 2));
}

#[tokio::test]
async fn unknown_job_wrong_project_and_creating_job() {
    let h = Harness::demo().await;
    let (status, body) = h
        .get_json("training-jobs/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ModelArts.2775"))
    );
    assert_eq!(
        body["error_msg"],
        "Training job (ID: 00000000-0000-0000-0000-000000000000) not found."
    );

    let path = format!("/v2/ffffffffffffffffffffffffffffffff/training-jobs/{JOB}");
    let response = h.signed("GET", &path, "application/json", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error_code"],
        "ModelArts.2786"
    );

    let (status, body) = h.get_json(&format!("training-jobs/{CREATING}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["phase"], "Creating");
    assert_eq!(body["status"]["tasks"], json!([]));
}

/// GUARD: `offset` is a page index, `count` counts matches, `limit` > 50 is refused.
#[tokio::test]
async fn search_pages_filters_and_limits() {
    let mut config = SimConfig::generated(120, 1, 10);
    config.jobs[7].phase = "Failed".into();
    let h = Harness::start(config.clone()).await;
    let mut seen = Vec::new();
    for page in 0..3 {
        let (status, body) = h.search(json!({"offset": page, "limit": 50})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["total"].as_u64(), body["count"].as_u64()),
            (Some(120), Some(120))
        );
        assert_eq!(body["offset"], page);
        assert_eq!(body["ai_project"], "default-ai-project");
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["metadata"]["id"].as_str().unwrap().to_owned()),
        );
    }
    let mut expected: Vec<String> = config.jobs.iter().rev().map(|j| j.id.clone()).collect();
    assert_eq!(seen, expected, "newest first, no gaps or repeats");

    let (_, failed) = h
        .search(json!({"filters": [{"key": "phase", "operator": "in", "value": ["Failed", "Abnormal"]}]}))
        .await;
    assert_eq!(failed["count"], 1);
    assert_eq!(
        failed["items"][0]["metadata"]["id"],
        config.jobs[7].id.as_str()
    );

    let (lo, hi) = (
        config.jobs[10].create_time_ms,
        config.jobs[19].create_time_ms,
    );
    let (_, window) = h
        .search(json!({"order": "asc", "filters": [
            {"key": "create_time", "operator": "between", "value": [lo.to_string(), hi.to_string()]},
            {"key": "name", "operator": "like", "value": ["gen-job-0001"]}]}))
        .await;
    expected = config.jobs[10..20].iter().map(|j| j.id.clone()).collect();
    let ids: Vec<&str> = window["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);

    let (status, body) = h.search(json!({"limit": 51})).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ModelArts.2764"))
    );
    let (status, body) = h
        .search(json!({"filters": [{"key": "owner", "operator": "in", "value": []}]}))
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ModelArts.2789"))
    );
    assert_eq!(h.sim.stats().search_requests, 7);
}

/// GUARD: a link downloads the exact log, with validators, ranges and 304s.
#[tokio::test]
async fn link_download_range_and_conditional_get() {
    let h = Harness::demo().await;
    let url = h.link_url(JOB, "worker-1").await;
    assert!(url.starts_with(&format!(
        "{}/obs/modelarts-train-logs/{JOB}/modelarts-job-{JOB}-worker-1.log?AWSAccessKeyId=",
        h.sim.endpoint()
    )));
    let expected = h.sim.log_bytes(JOB, "worker-1");
    assert_eq!(expected.len(), 3 * 1024 * 1024 - 4_321);

    let full = h.http.get(&url).send().await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    let etag = header(&full, "etag");
    assert_eq!(Some(etag.clone()), h.sim.log_etag(JOB, "worker-1"));
    assert_eq!(header(&full, "content-length"), expected.len().to_string());
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    let last_modified = header(&full, "last-modified");
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert!(full.bytes().await.unwrap() == expected);

    let part = h
        .http
        .get(&url)
        .header("Range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&part, "content-range"),
        format!("bytes 1000-{}/{}", expected.len() - 1, expected.len())
    );
    assert!(part.bytes().await.unwrap() == expected[1000..]);
    let part = h
        .http
        .get(&url)
        .header("Range", "bytes=5-104")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert!(part.bytes().await.unwrap() == expected[5..105]);
    let beyond = h
        .http
        .get(&url)
        .header("Range", format!("bytes={}-", expected.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&beyond, "content-range"),
        format!("bytes */{}", expected.len())
    );

    let same = h
        .http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&same, "etag"), etag);
    let since = h
        .http
        .get(&url)
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), StatusCode::NOT_MODIFIED);
    let stale_range = h
        .http
        .get(&url)
        .header("Range", "bytes=10-")
        .header("If-Range", "\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale_range.status(), StatusCode::OK);
    assert_eq!(stale_range.bytes().await.unwrap().len(), expected.len());
    let mismatch = h
        .http
        .get(&url)
        .header("If-Match", "\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), StatusCode::PRECONDITION_FAILED);

    let head = h.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), expected.len().to_string());

    let stats = h.sim.stats();
    assert_eq!(
        (stats.downloads, stats.range_requests, stats.not_modified),
        (4, 2, 2)
    );
    assert_eq!(
        stats.bytes_served,
        2 * expected.len() as u64 + (expected.len() as u64 - 1000) + 100
    );
}

/// GUARD: an expired link is refused with S3's 403 AccessDenied, a tampered one
/// with SignatureDoesNotMatch; a fresh link works again.
#[tokio::test]
async fn expired_and_tampered_links_get_403() {
    let h = Harness::demo().await;
    h.sim
        .inject(Fault::new(FaultTarget::Link, FaultKind::ExpiredLink).job(JOB));
    let expired = h.link_url(JOB, "worker-0").await;
    let response = h.http.get(&expired).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"),
        "{text}"
    );

    let fresh = h.link_url(JOB, "worker-0").await;
    let tampered = fresh.replace("Expires=", "Expires=1");
    let response = h.http.get(&tampered).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<Code>SignatureDoesNotMatch</Code>")
    );
    assert_eq!(
        h.http.get(&fresh).send().await.unwrap().status(),
        StatusCode::OK
    );
    let stats = h.sim.stats();
    assert_eq!(
        (stats.links_denied, stats.faults_fired, stats.link_requests),
        (2, 1, 2)
    );
}

#[tokio::test]
async fn link_errors_follow_the_error_table() {
    let h = Harness::demo().await;
    h.sim.add_job(SimJob {
        id: "job-empty".into(),
        name: "empty".into(),
        phase: "Running".into(),
        create_time_ms: 1,
        start_time_ms: 2,
        duration_ms: 3,
        tasks: vec![SimTask {
            id: "worker-0".into(),
            size: 0,
            seed: 0,
        }],
    });
    let code = |(status, body): (StatusCode, Value)| {
        (
            status.as_u16(),
            body["error_code"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(
        code(h.link("job-empty", "worker-0").await),
        (400, "ModelArts.2818".into())
    );
    assert_eq!(
        code(h.link(JOB, "worker-9").await),
        (400, "ModelArts.2820".into())
    );
    assert_eq!(
        code(h.link(CREATING, "worker-0").await),
        (400, "ModelArts.2820".into())
    );

    h.sim.set_job_phase("job-empty", "Completed");
    let url = h.link_url("job-empty", "worker-0").await;
    let empty = h.http.get(&url).send().await.unwrap();
    assert_eq!(
        (empty.status(), header(&empty, "content-length")),
        (StatusCode::OK, "0".into())
    );

    h.sim.remove_job(JOB);
    let url_after_removal = format!(
        "{}{}",
        h.sim.endpoint(),
        h.path(&format!("training-jobs/{JOB}"))
    );
    assert_eq!(
        code(h.link(JOB, "worker-0").await),
        (400, "ModelArts.2775".into())
    );
    assert_eq!(
        code(h.get_json(&format!("training-jobs/{JOB}")).await),
        (400, "ModelArts.2775".into())
    );
    assert!(url_after_removal.contains(JOB));
}

/// GUARD: a growing log keeps its prefix and changes its ETag; a rewrite changes content.
#[tokio::test]
async fn growing_and_rewritten_logs_change_validators() {
    let h = Harness::demo().await;
    let before = h.sim.log_bytes(RUNNING, "worker-2");
    let old_etag = h.sim.log_etag(RUNNING, "worker-2").unwrap();
    h.sim.set_task_size(RUNNING, "worker-2", 5_000);
    let url = h.link_url(RUNNING, "worker-2").await;
    let response = h
        .http
        .get(&url)
        .header("If-None-Match", &old_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = header(&response, "etag");
    assert_ne!(new_etag, old_etag);
    let grown = response.bytes().await.unwrap();
    assert_eq!(grown.len(), 5_000);
    assert!(grown[..before.len()] == before[..]);
    assert_eq!(h.sim.config().jobs[2].tasks[2].size, 5_000);

    h.sim.set_task_seed(RUNNING, "worker-2", 99);
    let rewritten = h.sim.log_bytes(RUNNING, "worker-2");
    assert_eq!(rewritten.len(), 5_000);
    assert!(rewritten[..] != grown[..]);
    assert_ne!(h.sim.log_etag(RUNNING, "worker-2").unwrap(), new_etag);
}

/// GUARD: a Status fault answers twice with 429 + Retry-After, then the call succeeds.
#[tokio::test]
async fn throttling_fault_fires_times_then_clears() {
    let h = Harness::demo().await;
    h.sim
        .inject(Fault::throttled(FaultTarget::Details, 2).times(2).job(JOB));
    for _ in 0..2 {
        let response = h
            .signed(
                "GET",
                &h.path(&format!("training-jobs/{JOB}")),
                "application/json",
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&response, "retry-after"), "2");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error_code"],
            "APIG.0308"
        );
    }
    assert_eq!(
        h.get_json(&format!("training-jobs/{JOB}")).await.0,
        StatusCode::OK
    );
    assert_eq!(h.sim.stats().faults_fired, 2);
}

/// Reads a body to the end; returns the bytes received and whether it broke.
async fn read_body(response: reqwest::Response) -> (usize, bool) {
    let mut stream = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

/// GUARD: a reset mid-body is seen by the client as a broken body after `after` bytes.
#[tokio::test]
async fn reset_mid_body_breaks_the_download() {
    let h = Harness::demo().await;
    h.sim.inject(
        Fault::new(
            FaultTarget::Download,
            FaultKind::ResetMidBody { after: 200_000 },
        )
        .task("worker-0"),
    );
    let url = h.link_url(JOB, "worker-0").await;
    let response = h.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-length"),
        (3 * 1024 * 1024).to_string()
    );
    assert_eq!(read_body(response).await, (200_000, true));
    assert_eq!(h.sim.stats().bytes_served, 200_000);
    assert_eq!(
        read_body(h.http.get(&url).send().await.unwrap()).await,
        (3 * 1024 * 1024, false)
    );
}

/// GUARD: a short body (full Content-Length announced, fewer bytes sent) is an
/// error for the client, never a silently truncated success.
#[tokio::test]
async fn short_body_is_a_broken_download() {
    let h = Harness::demo().await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::ShortBody { after: 1234 },
    ));
    let url = h
        .link_url("8c1d2e4f-5a6b-4c7d-9e8f-0a1b2c3d4e5f", "worker-0")
        .await;
    let response = h.http.get(&url).send().await.unwrap();
    assert_eq!(
        header(&response, "content-length"),
        (180 * 1024).to_string()
    );
    assert_eq!(read_body(response).await, (1234, true));
}

#[tokio::test]
async fn stall_delays_but_completes_the_download() {
    let h = Harness::demo().await;
    let stall = Duration::from_millis(300);
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 100,
            duration: stall,
        },
    ));
    let url = h.link_url(RUNNING, "worker-0").await;
    let started = Instant::now();
    let response = h.http.get(&url).send().await.unwrap();
    assert_eq!(read_body(response).await, (64 * 1024, false));
    assert!(started.elapsed() >= stall);
}

/// GUARD: faults on API bodies break the JSON the same way (truncated details).
#[tokio::test]
async fn body_fault_on_api_response() {
    let h = Harness::demo().await;
    h.sim.inject(Fault::new(
        FaultTarget::Details,
        FaultKind::ResetMidBody { after: 10 },
    ));
    let response = h
        .signed(
            "GET",
            &h.path(&format!("training-jobs/{JOB}")),
            "application/json",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.json::<Value>().await.is_err());
}

/// Measures the download path: run with
/// `cargo test --release --lib sim::tests::download_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 1 GiB over loopback, meaningful only in release"]
async fn download_throughput() {
    const SIZE: u64 = 1 << 30;
    let h = Harness::start(SimConfig::generated(1, 1, SIZE)).await;
    let job = h.config.jobs[0].id.clone();
    let url = h.link_url(&job, "worker-0").await;
    let started = Instant::now();
    let (received, broken) = read_body(h.http.get(&url).send().await.unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!((received as u64, broken), (SIZE, false));
    println!("1 GiB in {secs:.2} s = {:.0} MiB/s", 1024.0 / secs);
}
