//! Crash consistency and concurrency: SIGKILL at random points, two writers on
//! one index, a damaged index file.

use crate::harness::*;
use malog::sim::{Fault, FaultKind, FaultTarget};
use rand::Rng;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn malog_cmd(h: &Harness, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("malog"));
    cmd.arg("--config").arg(h.config_path()).args(args);
    cmd.env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

async fn wait(mut child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        child.stdout.take();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// Every file under a final name must be a complete copy of its log.
fn assert_no_partial_file(h: &Harness) {
    let pid = &h.sim_config.project_id;
    for path in h.archive_files() {
        let rel = path
            .strip_prefix(h.archive_root().join(pid))
            .unwrap_or_else(|_| panic!("unexpected file {path:?}"));
        let job = rel.parent().unwrap().to_str().unwrap();
        let task = rel.file_stem().unwrap().to_str().unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(
            got == h.sim.log_bytes(job, task),
            "{path:?} is not a complete copy ({} bytes)",
            got.len()
        );
    }
}

/// GUARD: kill -9 at any moment, then a rerun: nothing partial under a final
/// name, and at the end archive == source and verify passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    const MIB: u64 = 1024 * 1024;
    let h = Harness::start(vec![
        finished_job("big-a", 30, &[24 * MIB, 16 * MIB, 3 * MIB]),
        finished_job("big-b", 30, &[20 * MIB, 5 * MIB, 100]),
    ])
    .await;
    let mut rng = rand::rng();
    for round in 0..12 {
        let child = malog_cmd(&h, &["backfill"]).spawn().unwrap();
        let delay = rng.random_range(20..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut child = child;
        let _ = child.kill();
        let out = wait(child).await;
        assert!(
            out.status.code().is_none_or(|c| c <= 1),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_partial_file(&h);
    }
    let out = wait(malog_cmd(&h, &["backfill"]).spawn().unwrap()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_partial_file(&h);
    assert_eq!(h.archive_files().len(), 6);
    assert_eq!(h.staging_files(), 0);
    for (job, task) in [
        ("big-a", "worker-0"),
        ("big-b", "worker-0"),
        ("big-b", "worker-2"),
    ] {
        assert_eq!(h.row(job, task).state, "archived");
    }
    let out = wait(malog_cmd(&h, &["verify"]).spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(0));
}

/// GUARD: a second writer exits with code 4 while a pass runs; readers keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_is_refused_and_readers_work() {
    let h = Harness::start(vec![finished_job("j", 30, &[1024 * 1024])]).await;
    // Hold the first pass in a long stall so the second one meets it.
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 1000,
            duration: Duration::from_secs(3),
        },
    ));
    let mut text = h.config_text();
    text = text.replace("idle_timeout = \"2s\"", "idle_timeout = \"10s\"");
    std::fs::write(h.dir.path().join("config.toml"), &text).unwrap();
    let first = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .arg("--config")
        .arg(h.dir.path().join("config.toml"))
        .arg("backfill")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while h.sim.stats().faults_fired == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .arg("--config")
        .arg(h.dir.path().join("config.toml"))
        .arg("backfill")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait(second).await;
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another malog process"), "{stderr}");
    let query = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .arg("--config")
        .arg(h.dir.path().join("config.toml"))
        .args(["query", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        query.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    let out = wait(first).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GUARD: a damaged index is reported with the way out, not a panic, and nothing
/// in the archive is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_index_is_reported() {
    let h = Harness::start(vec![finished_job("j", 30, &[5000])]).await;
    let out = wait(malog_cmd(&h, &["backfill"]).spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(0));
    let index = h.config().index_path;
    let mut bytes = std::fs::read(&index).unwrap();
    // Overwrite the second page (the first table's root) with garbage.
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&index, bytes).unwrap();
    let _ = std::fs::remove_file(index.with_extension("sqlite-wal"));
    let out = wait(malog_cmd(&h, &["backfill"]).spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("damaged") && stderr.contains("Recovering a damaged index"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert_eq!(h.archive_files().len(), 1);
}
