//! The benchmark's extras: the control API (`control.rs`), running jobs,
//! exported logs and links to a static file server.

use super::*;

async fn controlled(config: SimConfig) -> (Simulator, reqwest::Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start_with_control(listener, config)
        .await
        .unwrap();
    (sim, reqwest::Client::new())
}

/// GUARD: touch grows exactly every K-th log of the chosen phase (new ETag), and
/// leaves the others alone; bad input is a 400; stats and reset work.
#[tokio::test]
async fn touch_grows_every_kth_log_of_a_phase() {
    let config = SimConfig::generated(6, 3, 1000).with_running(2);
    let (sim, http) = controlled(config.clone()).await;
    assert!(config.jobs[4..].iter().all(|j| j.phase == "Running"));
    assert!(config.jobs[..4].iter().all(|j| j.phase == "Completed"));
    let etags = |sim: &Simulator| -> Vec<Option<String>> {
        config
            .jobs
            .iter()
            .flat_map(|j| j.tasks.iter().map(|t| sim.log_etag(&j.id, &t.id)))
            .collect()
    };
    let before = etags(&sim);
    let url = |rest: &str| format!("{}{rest}", sim.endpoint());

    let r = http
        .post(url("/sim/touch?every=2&phase=Running"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["touched"], 3);
    let after = etags(&sim);
    // Running tasks in order: job 4 w0 w1 w2, job 5 w0 w1 w2 -> indexes 0, 2, 4.
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert_eq!(changed, [12, 14, 16]);
    let grown = &sim.config().jobs[4].tasks[0];
    assert_eq!(grown.size, 1000 + crate::sim::LINE_WIDTH);
    let r = http
        .post(url("/sim/touch?every=3&phase=Running&bytes=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["touched"], 2);
    let grown = &sim.config().jobs[4].tasks[0];
    assert_eq!(grown.size, 6000 + crate::sim::LINE_WIDTH);

    for bad in ["/sim/touch?every=0", "/sim/touch", "/sim/touch?every=x"] {
        let r = http.post(url(bad)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let stats: Value = http
        .get(url("/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["link_requests"], 0);
    let r = http.post(url("/sim/reset-stats")).send().await.unwrap();
    assert!(r.status().is_success());
}

/// GUARD: the tests' and the demo's simulator has no control API.
#[tokio::test]
async fn plain_simulator_has_no_control_api() {
    let h = Harness::demo().await;
    let r = h
        .http
        .get(format!("{}/sim/stats", h.sim.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// GUARD: exported files hold each log's bytes at the path its link names
/// under `links_to`.
#[tokio::test]
async fn links_to_points_at_the_exported_files() {
    let mut config = SimConfig::generated(2, 2, 5_000);
    config.links_to = Some("http://files.invalid/c1/".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::sim::export(&config, dir.path()).unwrap();
    assert_eq!(bytes, 4 * 5_000);
    let h = Harness::start(config.clone()).await;
    for job in &config.jobs {
        for task in &job.tasks {
            let url = h.link_url(&job.id, &task.id).await;
            let rest = url
                .strip_prefix("http://files.invalid/c1/")
                .unwrap_or_else(|| panic!("{url}"));
            let path = rest.split('?').next().unwrap();
            let file = std::fs::read(dir.path().join(path)).unwrap();
            assert_eq!(file, h.sim.log_bytes(&job.id, &task.id), "{path}");
            assert!(url.contains("Signature="));
        }
    }
}
