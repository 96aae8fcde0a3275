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
    let mut h = h;
    h.extra = FAST_FETCH.replace("idle_timeout = \"2s\"", "idle_timeout = \"10s\"");
    let first = malog_cmd(&h, &["backfill"]).spawn().unwrap();
    while h.sim.stats().faults_fired == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = malog_cmd(&h, &["backfill"]).spawn().unwrap();
    let out = wait(second).await;
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another malog process"), "{stderr}");
    let query = malog_cmd(&h, &["query", "--format", "json"])
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

/// GUARD: a second config with another index but the same archive folder is
/// refused while a pass writes there (it would sweep that pass's staging file
/// from under it, failing the download in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_index_on_the_same_archive_is_refused() {
    // The stall comes after the first 1 MiB write, so the staging file exists.
    let mut h = Harness::start(vec![finished_job("j", 30, &[3 << 20])]).await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 2 << 20,
            duration: Duration::from_secs(3),
        },
    ));
    h.extra = FAST_FETCH.replace("idle_timeout = \"2s\"", "idle_timeout = \"10s\"");
    let first = malog_cmd(&h, &["backfill"]).spawn().unwrap();
    while h.staging_files() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = h.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!("{}\n[index]\npath = \"other.sqlite\"\n", h.config_text()),
    )
    .unwrap();
    let second = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .arg("--config")
        .arg(&other)
        .arg("backfill")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait(second).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("another malog process"), "{stderr}");
    assert_eq!(
        h.staging_files(),
        1,
        "the first pass's staging file is intact"
    );
    let out = wait(first).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.archived_bytes("j", "worker-0") == h.sim.log_bytes("j", "worker-0"));
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
        stderr.contains("damaged") && stderr.contains("Recovering a damaged or lost index"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert_eq!(h.archive_files().len(), 1);
    // `verify` reads the whole index first (PRAGMA quick_check).
    let out = wait(malog_cmd(&h, &["verify"]).spawn().unwrap()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
}

/// GUARD: a full disk fails that task with a clear error, removes its staging
/// file, leaves the previously archived version untouched, and the run goes on.
///
/// The archive lives on a 1.5 MiB tmpfs mounted in a private mount namespace
/// (`unshare -Urm`), so the test needs no host mount and works for root and, where
/// user namespaces are allowed, for other users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_one_task_and_keeps_the_old_copy() {
    let h = Harness::start(vec![running_job("j", &[400_000, 300_000])]).await;
    let out = h.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(h.archive_root()).unwrap();
    let script = r#"
        set -u
        mount -t tmpfs -o size=1536k tmpfs "$ARCHIVE" || exit 90
        "$MALOG" -c "$CONFIG" backfill > "$OUT/pass1" 2>&1; echo $? > "$OUT/rc1"
        touch "$OUT/flag1"
        while [ ! -f "$OUT/flag2" ]; do sleep 0.05; done
        "$MALOG" -c "$CONFIG" backfill --format json > "$OUT/pass2" 2> "$OUT/err2"; echo $? > "$OUT/rc2"
        ls -A "$ARCHIVE/.staging" | wc -l > "$OUT/staging"
        "$MALOG" -c "$CONFIG" verify > "$OUT/verify" 2>&1; echo $? > "$OUT/rc3"
    "#;
    let child = Command::new("unshare")
        .args(["-Urm", "--", "sh", "-c", script])
        .env("ARCHIVE", h.archive_root())
        .env("MALOG", assert_cmd::cargo::cargo_bin("malog"))
        .env("CONFIG", h.config_path())
        .env("OUT", &out)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is installed");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !out.join("flag1").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first pass did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.sim.set_task_size("j", "worker-0", 3_000_000);
    std::fs::write(out.join("flag2"), b"").unwrap();
    let status = wait(child).await;
    assert_ne!(
        status.status.code(),
        Some(90),
        "cannot mount a tmpfs here: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let read = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(read("rc1"), "0", "{}", read("pass1"));
    assert_eq!(
        read("rc2"),
        "1",
        "disk full is a task failure: {}",
        read("pass2")
    );
    let summary: serde_json::Value = serde_json::from_str(&read("pass2")).unwrap();
    assert_eq!(
        (summary["failed"].as_u64(), summary["unchanged"].as_u64()),
        (Some(1), Some(1))
    );
    let error = summary["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    assert_eq!(summary["failures"][0]["task_id"], "worker-0");
    assert_eq!(read("staging"), "0", "the staging file is removed");
    assert_eq!(
        read("rc3"),
        "0",
        "the old copy still matches the index: {}",
        read("verify")
    );
    let row = h.row("j", "worker-0");
    assert_eq!((row.state.as_str(), row.size), ("failed", Some(400_000)));
}

/// GUARD: a process killed mid-download leaves a resumable staging file; the next
/// process continues from its durable length with Range, and the result is the
/// whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_resumes_after_the_process_is_killed() {
    const MIB: u64 = 1024 * 1024;
    let size = 80 * MIB;
    let h = Harness::start(vec![finished_job("big", 30, &[size])]).await;
    h.sim.inject(Fault::new(
        FaultTarget::Download,
        FaultKind::Stall {
            after: 70 * MIB,
            duration: Duration::from_secs(60),
        },
    ));
    let text = h
        .config_text()
        .replace("idle_timeout = \"2s\"", "idle_timeout = \"120s\"");
    std::fs::write(h.dir.path().join("config.toml"), &text).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("malog"))
        .arg("--config")
        .arg(h.dir.path().join("config.toml"))
        .arg("backfill")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the stall point: 70 MiB served, so at least 64 MiB are durable.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while h.sim.stats().bytes_served < 70 * MIB {
        assert!(
            std::time::Instant::now() < deadline,
            "download did not reach the stall"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fsync and sidecar of each 32 MiB run beside the download: wait until
    // the sidecar says 64 MiB are durable.
    let durable = || -> u64 {
        let Ok(dir) = std::fs::read_dir(h.staging_dir()) else {
            return 0;
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "meta"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .filter_map(|meta| meta["durable"].as_u64())
            .max()
            .unwrap_or(0)
    };
    while durable() < 64 * MIB {
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar never recorded 64 MiB"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        h.staging_files(),
        2,
        "the .part file and its .meta sidecar stay"
    );

    h.sim.reset_stats();
    let out = wait(malog_cmd(&h, &["backfill"]).spawn().unwrap()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = h.sim.stats();
    assert_eq!(stats.range_requests, 1, "{stats:?}");
    assert!(
        stats.bytes_served <= size - 64 * MIB,
        "only the tail was downloaded: {stats:?}"
    );
    assert!(h.archived_bytes("big", "worker-0") == h.sim.log_bytes("big", "worker-0"));
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        h.sim.log_bytes("big", "worker-0"),
    ));
    assert_eq!(h.row("big", "worker-0").sha256.unwrap(), expected);
    assert_eq!(h.staging_files(), 0);
}
