//! Tests of `client`.

use super::*;

#[test]
fn link_never_prints_its_query() {
    let link = LogLink::new(
        Url::parse(
            "https://b.obs.example.com/j/w.log?AWSAccessKeyId=AKID&Expires=1&Signature=SIG%2F",
        )
        .unwrap(),
    );
    for text in [format!("{link}"), format!("{link:?}")] {
        assert!(
            !text.contains("AKID") && !text.contains("SIG") && !text.contains("Expires"),
            "{text}"
        );
        assert!(text.contains("b.obs.example.com/j/w.log"), "{text}");
    }
}

fn client() -> ModelArtsClient {
    let text = "[modelarts]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"p\"\n[jobs]\ndiscover = true\n";
    let cfg = crate::config::Config::parse(text, std::path::Path::new("/")).unwrap();
    ModelArtsClient::new(
        &cfg.sources[0].modelarts,
        Credentials::new("a", "b"),
        reqwest::Client::new(),
    )
}

/// GUARD: a 429 seen by one worker pauses every worker of the client.
#[tokio::test(start_paused = true)]
async fn throttling_pauses_every_clone() {
    let (a, b) = (client(), client());
    let b = ModelArtsClient {
        health: a.health.clone(),
        ..b
    };
    a.observe(&Err(SourceError::Throttled {
        target: Target::Search,
        fault: ApiFault::default(),
        retry_after: Some(Duration::from_secs(5)),
    }));
    let start = tokio::time::Instant::now();
    b.admit(&Target::Search).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_repeated_failures_and_auth_failure_sticks() {
    let c = client();
    let server_error = || {
        Err(SourceError::Server {
            target: Target::Search,
            fault: ApiFault {
                status: 503,
                ..Default::default()
            },
        })
    };
    for _ in 0..BREAKER_THRESHOLD - 1 {
        c.observe(&server_error());
    }
    assert!(c.admit(&Target::Search).await.is_ok());
    c.observe(&server_error());
    assert!(matches!(
        c.admit(&Target::Search).await,
        Err(SourceError::Unavailable { .. })
    ));
    tokio::time::advance(BREAKER_OPEN_FOR + Duration::from_secs(1)).await;
    assert!(
        c.admit(&Target::Search).await.is_ok(),
        "half-open after the pause"
    );

    c.observe(&Err(SourceError::Unauthorized {
        target: Target::Search,
        fault: ApiFault::default(),
    }));
    assert!(matches!(
        c.admit(&Target::Search).await,
        Err(SourceError::Unauthorized { .. })
    ));
    c.reset_health();
    assert!(
        c.admit(&Target::Search).await.is_ok(),
        "a new pass tries again"
    );
}

/// GUARD: a server that answers every page with the same jobs is detected and
/// paging stops, instead of looping through the page limit.
#[tokio::test]
async fn repeated_search_page_stops_paging() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let requests = Arc::new(AtomicU32::new(0));
    let counter = requests.clone();
    let page: Vec<serde_json::Value> = (0..SEARCH_PAGE_SIZE)
        .map(|i| serde_json::json!({"metadata": {"id": format!("job-{i}"), "name": "n", "create_time": 1},
                                    "status": {"phase": "Completed", "tasks": ["worker-0"]}}))
        .collect();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let page = page.clone();
        async move { axum::Json(serde_json::json!({"count": 100_000, "items": page})) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let text = format!(
        "[modelarts]\nendpoint = \"http://{addr}\"\nproject_id = \"p\"\nrequests_per_second = 1000\n[jobs]\ndiscover = true\n"
    );
    let cfg = crate::config::Config::parse(&text, std::path::Path::new("/")).unwrap();
    let client = ModelArtsClient::new(
        &cfg.sources[0].modelarts,
        Credentials::new("a", "b"),
        reqwest::Client::new(),
    );
    let jobs = client.search_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(jobs.len(), SEARCH_PAGE_SIZE as usize);
    assert!(
        requests.load(Ordering::SeqCst) <= 1 + SEARCH_WINDOW,
        "the second, repeated page ends paging (its window may be asked for): {} requests",
        requests.load(Ordering::SeqCst)
    );
}

/// GUARD: a 429 whose `Retry-After` would overflow the clock (it panicked the
/// process) or silence the client for a day is honoured only up to the cap.
#[tokio::test]
async fn hostile_retry_after_is_capped_without_panic() {
    for value in [
        "18446744073709551615",
        "86400",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let app = axum::Router::new().fallback(move || async move {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", value)],
                r#"{"error_code":"APIG.0308","error_msg":"throttled"}"#,
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let text = format!(
            "[modelarts]\nendpoint = \"http://{addr}\"\nproject_id = \"p\"\n[jobs]\ndiscover = true\n"
        );
        let cfg = crate::config::Config::parse(&text, std::path::Path::new("/")).unwrap();
        let client = ModelArtsClient::new(
            &cfg.sources[0].modelarts,
            Credentials::new("a", "b"),
            reqwest::Client::new(),
        );
        let err = client.job(&JobId::from("j")).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Throttled { retry_after: Some(d), .. } if d == crate::http::MAX_RETRY_AFTER),
            "{value}: {err:?}"
        );
        let paused = client.health().paused_until.unwrap();
        assert!(
            paused <= tokio::time::Instant::now() + crate::http::MAX_RETRY_AFTER,
            "{value}"
        );
    }
}

#[test]
fn job_object_end_time() {
    let json = r#"{"metadata":{"id":"j","name":"n","create_time":1000},
                   "status":{"phase":"Completed","tasks":["worker-0"],"start_time":2000,"duration":500}}"#;
    let job = serde_json::from_str::<JobObject>(json).unwrap().into_job();
    assert_eq!(job.ended_at_ms, Some(2500));
    assert_eq!(job.tasks, vec![TaskId::from("worker-0")]);
    let json = r#"{"metadata":{"id":"j"},"status":{"phase":"Running"}}"#;
    let job = serde_json::from_str::<JobObject>(json).unwrap().into_job();
    assert_eq!((job.ended_at_ms, job.tasks.len()), (None, 0));
}
