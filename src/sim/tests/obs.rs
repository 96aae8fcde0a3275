//! Links and downloads: validators, ranges, conditional GETs, expiry, growth.

use std::time::Instant;

use reqwest::StatusCode;

use super::*;
use crate::sim::*;

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

/// GUARD: bytes served are counted per task, and the IgnoreRange fault answers a
/// range request with the whole log (200), as a server without ranges would.
#[tokio::test]
async fn bytes_are_counted_per_task_and_range_can_be_ignored() {
    let h = Harness::demo().await;
    let size = h.sim.log_bytes(RUNNING, "worker-2").len() as u64;
    let url = h.link_url(RUNNING, "worker-2").await;
    let response = h
        .http
        .get(&url)
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap().len() as u64, size - 10);
    assert_eq!(h.sim.bytes_served_for(RUNNING, "worker-2"), size - 10);
    assert_eq!(h.sim.bytes_served_for(RUNNING, "worker-1"), 0);

    h.sim
        .inject(Fault::new(FaultTarget::Download, FaultKind::IgnoreRange).task("worker-2"));
    let url = h.link_url(RUNNING, "worker-2").await;
    let response = h
        .http
        .get(&url)
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len() as u64, size);
    assert_eq!(h.sim.bytes_served_for(RUNNING, "worker-2"), 2 * size - 10);
    h.sim.reset_stats();
    assert_eq!(h.sim.bytes_served_for(RUNNING, "worker-2"), 0);
}

/// Measures the download path: run with
/// `cargo test --release --lib sim::tests::obs::download_throughput -- --ignored --nocapture`.
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
