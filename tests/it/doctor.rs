//! `malog doctor`, the real binary, against the simulator and the S3 test
//! server: all green, and each problem it must name (wrong key, skewed clock,
//! missing permission, unwritable archive, S3 region and addressing, a secret
//! file others can read), with the exit code; and no secret in any output.

use crate::harness::*;
use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use assert_cmd::Command;
use malog::sim::{Fault, FaultTarget, SimConfig};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

/// The key files as an operator should leave them: readable by the owner only.
fn private_keys(h: &Harness) {
    for name in ["ak", "sk"] {
        let path = h.dir.path().join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn doctor_cmd(h: &Harness, json: bool) -> Command {
    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path()).arg("doctor");
    if json {
        cmd.args(["--format", "json"]);
    }
    cmd.env_remove("RUST_LOG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("HUAWEICLOUD_SDK_AK")
        .env_remove("HUAWEICLOUD_SDK_SK")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    cmd
}

/// Runs the binary off the async runtime so the in-process servers keep serving.
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `doctor --format json`: the exit code and the checks.
async fn doctor(h: &Harness) -> (i32, Vec<Value>) {
    let out = output(doctor_cmd(h, true)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["checks"].as_array().unwrap().clone();
    (out.status.code().unwrap(), checks)
}

fn with_status<'a>(checks: &'a [Value], area: &str, status: &str) -> Vec<&'a Value> {
    checks
        .iter()
        .filter(|c| c["area"] == area && c["status"] == status)
        .collect()
}

fn failures(checks: &[Value]) -> Vec<&Value> {
    checks.iter().filter(|c| c["status"] == "fail").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_green_and_the_index_is_left_alone() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000, 2000])]).await;
    private_keys(&h);
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "{checks:#?}");
    assert!(failures(&checks).is_empty(), "{checks:#?}");
    assert!(checks.iter().all(|c| c["status"] != "warn"), "{checks:#?}");
    for area in ["config", "secrets", "clock", "api", "storage", "index"] {
        assert!(
            !with_status(&checks, area, "pass").is_empty(),
            "no passing {area} check: {checks:#?}"
        );
    }
    let api: Vec<String> = with_status(&checks, "api", "pass")
        .iter()
        .map(|c| c["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        api.iter().any(|m| m.contains("job search allowed")),
        "{api:?}"
    );
    assert!(
        api.iter().any(|m| m.contains("job details allowed")),
        "{api:?}"
    );
    assert!(
        api.iter().any(|m| m.contains("log links allowed (job a")),
        "{api:?}"
    );
    let secrets = with_status(&checks, "secrets", "pass");
    assert!(
        secrets[0]["message"]
            .as_str()
            .unwrap()
            .contains("access key found: file"),
        "{secrets:?}"
    );
    // Doctor does not create the index, and leaves no probe object behind.
    let index_path = h.config().index_path;
    assert!(!index_path.exists());
    let archive: Vec<_> = std::fs::read_dir(h.archive_root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".malog-doctor"))
        .collect();
    assert!(archive.is_empty(), "{archive:?}");

    // With an index: it passes quick_check, and its bytes do not change.
    assert_eq!(h.run().await.outcome(), "ok");
    let before = std::fs::read(&index_path).unwrap();
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "{checks:#?}");
    let index = with_status(&checks, "index", "pass");
    assert!(
        index[0]["message"]
            .as_str()
            .unwrap()
            .contains("quick_check"),
        "{index:?}"
    );
    assert_eq!(std::fs::read(&index_path).unwrap(), before);

    // The text form marks each check.
    let out = output(doctor_cmd(&h, false)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✓ config:"), "{text}");
    assert!(
        text.contains("✓ storage: wrote, read back and deleted"),
        "{text}"
    );
    assert!(text.contains("0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_is_one_failed_call() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    std::fs::write(h.dir.path().join("sk"), "not-the-secret-key").unwrap();
    private_keys(&h);
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 1, "{checks:#?}");
    let failed = failures(&checks);
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert_eq!(failed[0]["area"], "api");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{failed:?}"
    );
    assert!(
        failed[0]["fix"].as_str().unwrap().contains("five failures"),
        "{failed:?}"
    );
    let stats = h.sim.stats();
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(
        stats.search_requests + stats.detail_requests + stats.link_requests,
        0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clock_fails_before_any_signed_call() {
    let sim_config = SimConfig {
        jobs: vec![finished_job("a", 30, &[1000])],
        clock_skew_secs: 3600,
        ..SimConfig::default()
    };
    let h = Harness::with_config(sim_config).await;
    private_keys(&h);
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 1, "{checks:#?}");
    let clock = with_status(&checks, "clock", "fail");
    assert_eq!(clock.len(), 1, "{checks:#?}");
    let message = clock[0]["message"].as_str().unwrap();
    assert!(message.contains("1h behind"), "{message}");
    assert!(clock[0]["fix"].as_str().unwrap().contains("NTP"));
    assert_eq!(with_status(&checks, "api", "skip").len(), 1, "{checks:#?}");
    // No signed request was sent, so none counted towards the key's lock-out.
    assert_eq!(h.sim.stats().auth_failures, 0);

    // A few minutes off is a warning, not a failure.
    let sim_config = SimConfig {
        jobs: vec![finished_job("a", 30, &[1000])],
        clock_skew_secs: -300,
        ..SimConfig::default()
    };
    let h = Harness::with_config(sim_config).await;
    private_keys(&h);
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "{checks:#?}");
    let clock = with_status(&checks, "clock", "warn");
    assert!(
        clock[0]["message"]
            .as_str()
            .unwrap()
            .contains("5m ahead of"),
        "{clock:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_log_link_permission_is_named() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    private_keys(&h);
    h.sim.inject(Fault::status(
        FaultTarget::Link,
        403,
        "ModelArts.0108",
        "not authorized for operation modelarts:trainJob:logExport",
    ));
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 1, "{checks:#?}");
    let failed = failures(&checks);
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{failed:?}"
    );
    assert!(
        failed[0]["fix"]
            .as_str()
            .unwrap()
            .contains("modelarts:trainJob:logExport"),
        "{failed:?}"
    );
    // Search and details passed before it.
    assert_eq!(with_status(&checks, "api", "pass").len(), 2, "{checks:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jobs_the_log_link_is_not_checked() {
    let h = Harness::start(vec![]).await;
    private_keys(&h);
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "{checks:#?}");
    let skipped = with_status(&checks, "api", "skip");
    assert!(
        skipped[0]["message"]
            .as_str()
            .unwrap()
            .contains("not checked"),
        "{skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_archive_fails_storage() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    private_keys(&h);
    std::fs::create_dir_all(h.archive_root()).unwrap();
    let undo = crate::daemon::make_read_only(&h.archive_root());
    let (code, checks) = doctor(&h).await;
    undo();
    assert_eq!(code, 1, "{checks:#?}");
    let failed = failures(&checks);
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert_eq!(failed[0]["area"], "storage");
    assert!(
        failed[0]["fix"].as_str().unwrap().contains("writable"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_file_readable_by_others_is_a_warning() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    private_keys(&h);
    let sk = h.dir.path().join("sk");
    std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "warnings do not fail: {checks:#?}");
    let warned = with_status(&checks, "secrets", "warn");
    assert_eq!(warned.len(), 1, "{checks:#?}");
    assert!(
        warned[0]["message"]
            .as_str()
            .unwrap()
            .contains("readable by other users"),
        "{warned:?}"
    );
    assert_eq!(
        warned[0]["fix"].as_str().unwrap(),
        format!("chmod 600 {}", sk.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_error_exits_2() {
    let h = Harness::start(vec![]).await;
    let path = h.dir.path().join("bad.toml");
    std::fs::write(&path, "[modelarts]\nendpoint = \"x\"\n").unwrap();
    let mut cmd = doctor_cmd(&h, false);
    cmd.arg("--config").arg(&path);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("✗ config:"), "{text}");
}

/// A harness whose archive is the S3 test server's bucket.
async fn s3_harness(s3: &S3Server, addressing: &str) -> Harness {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    private_keys(&h);
    let storage = s3.storage_toml(h.dir.path(), "doctor", "none").replace(
        "addressing = \"path\"",
        &format!("addressing = \"{addressing}\""),
    );
    h.extra.push_str(&storage);
    for name in ["s3-ak", "s3-sk"] {
        let path = h.dir.path().join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_all_green_then_wrong_region_then_wrong_addressing() {
    let s3 = S3Server::start().await;
    let h = s3_harness(&s3, "path").await;
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 0, "{checks:#?}");
    let storage = with_status(&checks, "storage", "pass");
    assert!(
        storage[0]["message"]
            .as_str()
            .unwrap()
            .contains("s3://malog-test/doctor/.malog-doctor-probe-"),
        "{storage:?}"
    );
    assert!(s3.object_keys().is_empty(), "{:?}", s3.object_keys());
    let s3_secrets: Vec<_> = with_status(&checks, "secrets", "pass")
        .into_iter()
        .filter(|c| c["message"].as_str().unwrap().starts_with("S3 "))
        .collect();
    assert_eq!(s3_secrets.len(), 2, "{checks:#?}");

    s3.require_region("eu-west-1");
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 1, "{checks:#?}");
    let failed = with_status(&checks, "storage", "fail");
    assert_eq!(failed.len(), 1, "{checks:#?}");
    let fix = failed[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("region:") && fix.contains("us-east-1"),
        "{fix}"
    );

    let s3 = S3Server::start().await;
    s3.virtual_hosted_only();
    let h = s3_harness(&s3, "path").await;
    let (code, checks) = doctor(&h).await;
    assert_eq!(code, 1, "{checks:#?}");
    let failed = with_status(&checks, "storage", "fail");
    let fix = failed[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("addressing:") && fix.contains("virtual"),
        "{fix}: {}",
        failed[0]["message"]
    );
}

/// GUARD: at the most verbose log level, neither the ModelArts keys nor the S3
/// keys appear in anything doctor prints, whether the checks pass or fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_at_trace_level() {
    let s3 = S3Server::start().await;
    let h = s3_harness(&s3, "path").await;
    let wrong_sk = "wrong-secret-key-never-printed";
    for round in 0..2 {
        if round == 1 {
            std::fs::write(h.dir.path().join("sk"), wrong_sk).unwrap();
            s3.require_region("eu-west-1");
        }
        for json in [false, true] {
            let mut cmd = doctor_cmd(&h, json);
            cmd.env("RUST_LOG", "trace");
            let out = output(cmd).await;
            assert_eq!(out.status.code(), Some(round), "round {round}");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(all.contains("TRACE"), "trace logging is on");
            for secret in [
                h.sim_config.access_key.as_str(),
                h.sim_config.secret_key.as_str(),
                wrong_sk,
                ACCESS_KEY,
                SECRET_KEY,
            ] {
                assert!(
                    !all.contains(secret),
                    "round {round}: a secret leaked into the output"
                );
            }
        }
    }
}

/// Under systemd: the keys come from `$CREDENTIALS_DIRECTORY` (and doctor says
/// so), and the state directory must be writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_credentials_and_state_directory() {
    let h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    let credentials = tempfile::tempdir().unwrap();
    for name in ["ak", "sk"] {
        let to = credentials.path().join(name);
        std::fs::copy(h.dir.path().join(name), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let text = h
        .config_text()
        .replace("access_key_file = \"ak\"\nsecret_key_file = \"sk\"\n", "");
    assert!(!text.contains("key_file"));
    let path = h.dir.path().join("systemd.toml");
    std::fs::write(&path, text).unwrap();

    let mut cmd = doctor_cmd(&h, true);
    cmd.arg("--config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("STATE_DIRECTORY", state.path());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let systemd = with_status(checks, "systemd", "pass");
    assert_eq!(systemd.len(), 2, "{checks:#?}");
    assert!(
        systemd[0]["message"]
            .as_str()
            .unwrap()
            .contains("holds: ak, sk"),
        "{systemd:?}"
    );
    let secrets = with_status(checks, "secrets", "pass");
    assert!(
        secrets.iter().all(|c| c["message"]
            .as_str()
            .unwrap()
            .contains("systemd credential")),
        "{secrets:?}"
    );
    assert!(
        !with_status(checks, "api", "pass").is_empty(),
        "{checks:#?}"
    );

    // A state directory that cannot be written fails.
    let undo = crate::daemon::make_read_only(state.path());
    let mut cmd = doctor_cmd(&h, true);
    cmd.arg("--config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("STATE_DIRECTORY", state.path());
    let out = output(cmd).await;
    undo();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = failures(report["checks"].as_array().unwrap())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["area"], "systemd");
}
