//! Authentication breadth: IAM password login with token refresh, a static
//! token, and temporary AK/SK with a security token.

use crate::harness::*;
use malog::run::Archiver;
use malog::sim::SimConfig;

async fn archiver_with(h: &Harness, modelarts_extra: &str) -> Archiver {
    let text = h.config_text().replace(
        "access_key_file = \"ak\"\nsecret_key_file = \"sk\"\n",
        modelarts_extra,
    );
    h.archiver_from_text(&text).await
}

fn password_auth(h: &Harness) -> String {
    std::fs::write(h.dir.path().join("password"), &h.sim_config.iam_password).unwrap();
    format!(
        "auth = \"password\"\niam_endpoint = \"{}\"\nuser_name = \"{}\"\ndomain_name = \"{}\"\npassword_file = \"password\"\n",
        h.sim.endpoint(),
        h.sim_config.iam_user,
        h.sim_config.iam_domain
    )
}

/// GUARD: a password login yields a cached token; an expired token is refreshed
/// once on 401 and the pass goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_token_is_cached_and_refreshed_on_401() {
    let h = Harness::start(vec![running_job("j", &[1000, 2000])]).await;
    let archiver = archiver_with(&h, &password_auth(&h)).await;
    let report = pass(&archiver).await;
    assert_eq!(
        (report.outcome(), report.totals.fetched),
        ("ok", 2),
        "{:?}",
        report.failures
    );
    pass(&archiver).await;
    assert_eq!(h.sim.stats().tokens_issued, 1, "the token is reused");

    h.sim.expire_tokens();
    h.sim.set_task_size("j", "worker-0", 5000);
    let report = pass(&archiver).await;
    assert_eq!(
        (report.outcome(), report.totals.fetched),
        ("ok", 1),
        "{:?}",
        report.failures
    );
    let stats = h.sim.stats();
    assert_eq!(
        (stats.tokens_issued, stats.auth_failures),
        (2, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_once() {
    let h = Harness::start(vec![running_job("j", &[1000])]).await;
    let text = password_auth(&h);
    std::fs::write(h.dir.path().join("password"), "wrong").unwrap();
    let archiver = archiver_with(&h, &text).await;
    let report = pass(&archiver).await;
    assert_eq!(report.outcome(), "partial");
    assert!(
        report.failures[0].error.contains("IAM token request"),
        "{:?}",
        report.failures
    );
    assert_eq!(h.sim.stats().auth_failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_works_until_it_expires() {
    let h = Harness::start(vec![running_job("j", &[1000])]).await;
    // Obtain a token the way an operator would, then hand it to malog.
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": h.sim_config.iam_user, "password": h.sim_config.iam_password,
            "domain": {"name": h.sim_config.iam_domain}}}},
        "scope": {"project": {"id": h.sim_config.project_id}}}});
    let response = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", h.sim.endpoint()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::write(h.dir.path().join("token"), token).unwrap();
    let archiver = archiver_with(&h, "auth = \"token\"\ntoken_file = \"token\"\n").await;
    let report = pass(&archiver).await;
    assert_eq!(
        (report.outcome(), report.totals.fetched),
        ("ok", 1),
        "{:?}",
        report.failures
    );

    h.sim.expire_tokens();
    let report = pass(&archiver).await;
    assert_eq!(report.outcome(), "partial");
    assert!(
        report.failures[0].error.contains("authentication failed"),
        "{:?}",
        report.failures
    );
    assert_eq!(
        h.sim.stats().auth_failures,
        1,
        "a static token is not retried"
    );
}

/// GUARD: temporary AK/SK carry the security token, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_keys_send_a_signed_security_token() {
    let sim_config = SimConfig {
        security_token: Some("ST-temporary-0001".into()),
        jobs: vec![running_job("j", &[1000])],
        ..SimConfig::default()
    };
    let h = Harness::with_config(sim_config).await;
    // Without the security token the gateway refuses.
    let report = h.run().await;
    assert_eq!(report.outcome(), "partial");
    assert_eq!(h.sim.stats().auth_failures, 1);

    std::fs::write(h.dir.path().join("st"), "ST-temporary-0001").unwrap();
    let archiver = archiver_with(
        &h,
        "access_key_file = \"ak\"\nsecret_key_file = \"sk\"\nsecurity_token_file = \"st\"\n",
    )
    .await;
    let report = pass(&archiver).await;
    assert_eq!(
        (report.outcome(), report.totals.fetched),
        ("ok", 1),
        "{:?}",
        report.failures
    );
}
