//! The ModelArts API: signatures, details, search, link errors, odd ids.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::sim::*;

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

    let issued_before_removal = h.link_url(JOB, "worker-0").await;
    h.sim.remove_job(JOB);
    assert_eq!(
        code(h.link(JOB, "worker-0").await),
        (400, "ModelArts.2775".into())
    );
    assert_eq!(
        code(h.get_json(&format!("training-jobs/{JOB}")).await),
        (400, "ModelArts.2775".into())
    );
    let gone = h.http.get(&issued_before_removal).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(
        gone.text()
            .await
            .unwrap()
            .contains("<Code>NoSuchKey</Code>")
    );
}

/// GUARD: odd characters in ids survive signing, routing and link signatures.
#[tokio::test]
async fn ids_needing_percent_encoding_work_end_to_end() {
    let h = Harness::demo().await;
    let task = "worker 0+ü";
    h.sim.add_job(SimJob {
        id: "job id~1".into(),
        name: "odd".into(),
        phase: "Completed".into(),
        create_time_ms: 1,
        start_time_ms: 2,
        duration_ms: 3,
        tasks: vec![SimTask {
            id: task.into(),
            size: 777,
            seed: 1,
        }],
    });
    let job = encode_component("job id~1");
    let (status, body) = h.get_json(&format!("training-jobs/{job}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["tasks"], json!([task]));
    let (status, body) = h.link(&job, &encode_component(task)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["obs_url"].as_str().unwrap();
    assert!(
        url.contains("/job%20id~1/modelarts-job-job%20id~1-worker%200%2B%C3%BC.log?"),
        "{url}"
    );
    let response = h.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == h.sim.log_bytes("job id~1", task));
}

#[tokio::test]
async fn unknown_paths_get_the_gateway_404_with_a_request_id() {
    let h = Harness::demo().await;
    let response = h
        .http
        .get(format!("{}/v1/nothing", h.sim.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, "x-request-id").len(), 32);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error_code"],
        "APIG.0101"
    );
}
