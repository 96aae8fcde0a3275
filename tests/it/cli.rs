//! The real binary: exit codes, output formats, verify, cat, and secret hygiene.

use crate::harness::*;
use assert_cmd::Command;

fn malog(h: &Harness) -> Command {
    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path());
    cmd.env_remove("RUST_LOG")
        .env_remove("HUAWEICLOUD_SDK_AK")
        .env_remove("HUAWEICLOUD_SDK_SK");
    cmd
}

/// Runs the binary off the async runtime so the in-process simulator keeps serving.
async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_json_then_query_json() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000, 2000])]).await;
    let mut cmd = malog(&h);
    cmd.args(["backfill", "--format", "json"]);
    let out = run(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "ok");
    assert_eq!(summary["fetched"], 2);
    assert_eq!(summary["bytes"], 3000);

    let mut cmd = malog(&h);
    cmd.args(["query", "--job", "a", "--format", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for key in [
        "job_id",
        "task_id",
        "state",
        "size",
        "sha256",
        "location",
        "fetched_at",
    ] {
        assert!(!rows[0][key].is_null(), "{key} missing in {}", rows[0]);
    }
    assert_eq!(rows[1]["state"], "archived");
    assert_eq!(rows[1]["size"], 2000);

    let mut cmd = malog(&h);
    cmd.args(["query", "--state", "failed", "--format", "csv"]);
    let out = run(cmd).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        0,
        "no failed rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_prints_the_log_and_verify_catches_corruption() {
    let h = Harness::start(vec![finished_job("a", 30, &[50_000, 60_000])]).await;
    let mut cmd = malog(&h);
    cmd.arg("backfill");
    assert_eq!(run(cmd).await.status.code(), Some(0));

    let mut cmd = malog(&h);
    cmd.args(["cat", "a", "worker-1"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == h.sim.log_bytes("a", "worker-1"));

    let mut cmd = malog(&h);
    cmd.args(["cat", "a", "worker-9"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job a task worker-9"));

    let mut cmd = malog(&h);
    cmd.arg("verify");
    let out = run(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Flip one byte of one archived log.
    let location = h.row("a", "worker-0").location.unwrap();
    let mut bytes = std::fs::read(&location).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&location, bytes).unwrap();
    let mut cmd = malog(&h);
    cmd.args(["verify", "--format", "json"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["checked"], 2);
    assert_eq!(result["mismatches"].as_array().unwrap().len(), 1);
    assert_eq!(result["mismatches"][0]["task_id"], "worker-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_1_and_config_errors_exit_2() {
    let h = Harness::start(vec![finished_job("a", 30, &[10])]).await;
    h.sim.inject(
        malog::sim::Fault::status(malog::sim::FaultTarget::Link, 500, "", "boom").times(100),
    );
    let mut cmd = malog(&h);
    cmd.arg("backfill");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 failed"));

    let mut h = h;
    h.extra.push_str("[storage]\nlayout = \"{job_id}.log\"\n");
    let mut cmd = malog(&h);
    cmd.arg("backfill");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.layout"));

    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.args(["--config", "/nonexistent/malog.toml", "query"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));

    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.arg("no-such-command");
    assert_eq!(run(cmd).await.status.code(), Some(2));
}

/// GUARD: secrets never reach logs or output, even at debug level with faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_debug_output() {
    let h = Harness::start(vec![finished_job("a", 30, &[100_000])]).await;
    h.sim.inject(malog::sim::Fault::new(
        malog::sim::FaultTarget::Link,
        malog::sim::FaultKind::ExpiredLink,
    ));
    h.sim.inject(malog::sim::Fault::new(
        malog::sim::FaultTarget::Download,
        malog::sim::FaultKind::ResetMidBody { after: 10 },
    ));
    let mut cmd = malog(&h);
    cmd.args(["-vv", "backfill", "--format", "json"]);
    cmd.env("RUST_LOG", "trace");
    let out = run(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    let mut cmd = malog(&h);
    cmd.args(["query", "--format", "json"]);
    all.push_str(&String::from_utf8_lossy(&run(cmd).await.stdout));
    assert!(all.len() > 1000, "debug output was produced");
    for secret in [
        h.sim_config.secret_key.as_str(),
        h.sim_config.access_key.as_str(),
        "Signature=",
        "AWSAccessKeyId",
        "Expires=",
    ] {
        assert!(!all.contains(secret), "{secret:?} leaked");
    }
}
