//! Every fault kind as a client sees it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::*;
use crate::sim::*;

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
