//! The whole pipeline into S3 (s3s-fs on 127.0.0.1) and with zstd: backfills with
//! faults in the simulator and in the upload path, then `cat` and `verify` by the
//! real binary. Every object is checked by downloading it.

use crate::harness::*;
use crate::s3_server::{S3Op, S3Server, SECRET_KEY};
use assert_cmd::Command;
use malog::index::{Index, StoredCopy};
use malog::sim::{Fault, FaultKind, FaultTarget};
use malog::storage::{ArchiveKey, Storage};
use tokio::io::AsyncReadExt;

const BIG: u64 = 12 * 1024 * 1024 + 17;
const PREFIX: &str = "malog/archive";

pub(crate) fn malog(h: &Harness) -> Command {
    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path());
    for var in [
        "RUST_LOG",
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary off the async runtime so the in-process servers keep serving.
pub(crate) async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn copy(h: &Harness, job: &str, task: &str) -> StoredCopy {
    let index = Index::open_read_only(&h.config().index_path).unwrap();
    index
        .stored_copy(job, task)
        .unwrap()
        .expect("an archived copy")
}

/// Downloads the log through storage, decoding as the index says.
async fn download(storage: &Storage, copy: &StoredCopy) -> Vec<u8> {
    let key = ArchiveKey::from_stored(&copy.storage_key).unwrap();
    let compression = copy.compression;
    let mut out = Vec::new();
    storage
        .open_log(&key, compression, copy.stored_size)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

async fn s3_harness(jobs: Vec<malog::sim::SimJob>, compression: &str) -> (Harness, S3Server) {
    let server = S3Server::start().await;
    let mut h = Harness::start(jobs).await;
    h.extra = format!(
        "{FAST_FETCH}{}",
        server.storage_toml(h.dir.path(), PREFIX, compression)
    );
    (h, server)
}

/// Every task of the harness is archived byte-exact, checked by downloading.
async fn assert_all_exact(h: &Harness, tasks: &[(&str, &str)], compression: &str) {
    let config = h.config();
    let storage = Storage::from_config(&config.storage).await.unwrap();
    for (job, task) in tasks {
        let row = h.row(job, task);
        assert_eq!(row.state, "archived", "{job}/{task}: {row:?}");
        let c = copy(h, job, task);
        assert_eq!(c.compression, compression);
        assert_eq!(c.storage_key.ends_with(".zst"), compression == "zstd");
        let expected = h.sim.log_bytes(job, task);
        let got = download(&storage, &c).await;
        assert_eq!(got.len(), expected.len(), "{job}/{task}");
        assert!(got == expected, "{job}/{task} differs");
        assert_eq!(c.size, expected.len() as u64);
        if compression == "zstd" && expected.len() > 10_000 {
            assert!(c.stored_size.unwrap() * 3 < c.size, "{c:?}");
        }
    }
}

/// GUARD: a backfill into S3 with broken downloads and failing upload requests
/// ends with every object present and byte-exact, and no multipart upload left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_into_s3_with_faults_is_byte_exact() {
    let (h, server) = s3_harness(
        vec![
            finished_job("a", 30, &[0, 1, 70_000, BIG]),
            finished_job("b", 30, &[3 * 1024 * 1024]),
        ],
        "none",
    )
    .await;
    h.sim.inject(
        Fault::new(
            FaultTarget::Download,
            FaultKind::ResetMidBody { after: BIG / 2 },
        )
        .task("worker-3")
        .times(2),
    );
    h.sim
        .inject(Fault::status(FaultTarget::Download, 503, "", "busy").job("b"));
    server.fail(S3Op::UploadPart, 2);
    server.fail(S3Op::PutObject, 1);
    server.fail(S3Op::CompleteMultipartUpload, 1);

    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    let tasks = [
        ("a", "worker-0"),
        ("a", "worker-1"),
        ("a", "worker-2"),
        ("a", "worker-3"),
        ("b", "worker-0"),
    ];
    assert_all_exact(&h, &tasks, "none").await;

    let pid = &h.sim_config.project_id;
    let expected: Vec<String> = tasks
        .iter()
        .map(|(j, t)| format!("{PREFIX}/{pid}/{j}/{t}.log"))
        .collect();
    let (manifests, objects): (Vec<String>, Vec<String>) = server
        .object_keys()
        .into_iter()
        .partition(|k| is_manifest(std::path::Path::new(k)));
    assert_eq!(manifests.len(), 2, "one manifest per job: {manifests:?}");
    let (documents, logs): (Vec<String>, Vec<String>) = objects
        .into_iter()
        .partition(|k| is_job_document(std::path::Path::new(k)));
    assert_eq!(logs, expected, "exactly the logs, nothing else");
    let expected_documents: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|j| {
            ["events.json", "job.json", "metrics.json"].map(|d| format!("{PREFIX}/{pid}/{j}/{d}"))
        })
        .collect();
    assert_eq!(
        documents, expected_documents,
        "each job's record beside its logs"
    );
    // The faults fired: 4 single PUTs + 1 failed, 3 parts + 2 failed, and the
    // simulator's broken downloads were retried; then one PUT per job document,
    // and one per job's manifest per batch of results that changed the job
    // (at least one per job, at most one per task's result).
    let puts = server.calls(S3Op::PutObject);
    assert!(
        (5 + 6 + manifests.len()..=5 + 6 + 2 * tasks.len()).contains(&(puts as usize)),
        "{puts} PUTs"
    );
    assert!(server.calls(S3Op::UploadPart) >= 5);
    assert_eq!(server.calls(S3Op::CompleteMultipartUpload), 2);
    assert_eq!(h.sim.stats().faults_fired, 3, "{:?}", h.sim.stats());
    assert_eq!(server.open_uploads(), 0, "no incomplete multipart upload");
    assert!(server.part_files().is_empty(), "{:?}", server.part_files());
    let row = h.row("a", "worker-3");
    assert_eq!(
        row.location.as_deref(),
        Some(format!("s3://malog-test/{}", expected[3]).as_str())
    );

    // The binary agrees: verify (full and cheap) and cat.
    let out = run({
        let mut c = malog(&h);
        c.arg("verify");
        c
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("verified 5 archived logs: 0 mismatches"),
        "{stdout}"
    );
    let out = run({
        let mut c = malog(&h);
        c.args(["verify", "--metadata-only"]);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0));
    let out = run({
        let mut c = malog(&h);
        c.args(["cat", "a", "worker-3"]);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == h.sim.log_bytes("a", "worker-3"));
}

/// GUARD: a persistent upload failure fails the task (not the run), leaves no
/// upload behind, and the next run archives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_upload_failure_is_a_failed_task_then_recovers() {
    let (h, server) = s3_harness(vec![finished_job("a", 30, &[BIG, 1000])], "none").await;
    server.fail(S3Op::UploadPart, 1000);
    let report = h.run().await;
    assert_eq!(report.outcome(), "partial");
    let row = h.row("a", "worker-0");
    assert_eq!(row.state, "failed");
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("S3"),
        "{row:?}"
    );
    assert_eq!(h.row("a", "worker-1").state, "archived");
    assert_eq!(server.open_uploads(), 0);
    assert!(server.part_files().is_empty());

    server.fail(S3Op::UploadPart, 0);
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_all_exact(&h, &[("a", "worker-0"), ("a", "worker-1")], "none").await;
}

/// zstd on S3: `.zst` keys, the index records both digests, cat decompresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_zstd_into_s3() {
    let (h, server) = s3_harness(vec![finished_job("a", 30, &[0, 70_000, BIG])], "zstd").await;
    h.sim.inject(
        Fault::new(
            FaultTarget::Download,
            FaultKind::ResetMidBody { after: BIG / 3 },
        )
        .task("worker-2"),
    );
    server.fail(S3Op::PutObject, 1);
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    let tasks = [("a", "worker-0"), ("a", "worker-1"), ("a", "worker-2")];
    assert_all_exact(&h, &tasks, "zstd").await;
    assert_eq!(server.open_uploads(), 0);
    let c = copy(&h, "a", "worker-2");
    assert!(c.storage_key.ends_with("worker-2.log.zst"), "{c:?}");
    assert_ne!(c.stored_sha256.as_deref(), Some(c.sha256.as_str()));

    let out = run({
        let mut cmd = malog(&h);
        cmd.args(["cat", "a", "worker-2"]);
        cmd
    })
    .await;
    assert!(out.stdout == h.sim.log_bytes("a", "worker-2"));
    let out = run({
        let mut cmd = malog(&h);
        cmd.arg("verify");
        cmd
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// zstd on the local folder, with a broken download on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_zstd_into_local_folder() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1, 70_000, BIG])]).await;
    h.extra = format!("{FAST_FETCH}\n[storage]\ncompression = \"zstd\"\nzstd_level = 6\n");
    h.sim.inject(
        Fault::new(
            FaultTarget::Download,
            FaultKind::ResetMidBody { after: BIG / 2 },
        )
        .task("worker-2"),
    );
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    let tasks = [("a", "worker-0"), ("a", "worker-1"), ("a", "worker-2")];
    assert_all_exact(&h, &tasks, "zstd").await;
    let pid = &h.sim_config.project_id;
    assert!(
        h.archive_root()
            .join(format!("{pid}/a/worker-2.log.zst"))
            .is_file()
    );
    assert_eq!(h.staging_files(), 0);
    let out = run({
        let mut cmd = malog(&h);
        cmd.args(["cat", "a", "worker-1"]);
        cmd
    })
    .await;
    assert!(out.stdout == h.sim.log_bytes("a", "worker-1"));
}

/// GUARD: `verify` re-downloads and catches a flipped byte in a stored object;
/// the cheap mode only sees size changes, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_corrupted_s3_object() {
    let (h, server) = s3_harness(vec![finished_job("a", 30, &[50_000, 60_000])], "zstd").await;
    assert_eq!(h.run().await.outcome(), "ok");
    let c = copy(&h, "a", "worker-0");
    let file = server.object_file(&format!("{PREFIX}/{}", c.storage_key));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let out = run({
        let mut cmd = malog(&h);
        cmd.args(["verify", "--format", "json"]);
        cmd
    })
    .await;
    assert_eq!(out.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["checked"], 2);
    let mismatches = result["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 1, "{result}");
    assert_eq!(mismatches[0]["task_id"], "worker-0");
    assert!(
        mismatches[0]["location"]
            .as_str()
            .unwrap()
            .starts_with("s3://malog-test/"),
        "{result}"
    );

    let cheap = |h: &Harness| {
        let mut cmd = malog(h);
        cmd.args(["verify", "--metadata-only"]);
        cmd
    };
    assert_eq!(run(cheap(&h)).await.status.code(), Some(0), "same size");
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&file, &bytes).unwrap();
    let out = run(cheap(&h)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stored size"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// GUARD: turning compression on keeps every older object readable: each row
/// records its own compression, and a re-fetched log is stored the new way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_compression_on_keeps_old_objects_readable() {
    let mut h = Harness::start(vec![
        finished_job("old", 30, &[40_000]),
        running_job("live", &[20_000]),
    ])
    .await;
    assert_eq!(h.run().await.outcome(), "ok");
    assert_eq!(copy(&h, "live", "worker-0").compression, "none");

    h.extra = format!("{FAST_FETCH}\n[storage]\ncompression = \"zstd\"\n");
    h.sim.set_task_size("live", "worker-0", 90_000);
    let report = h.run().await;
    assert_eq!(report.totals.fetched, 1, "{report:?}");
    assert_eq!(copy(&h, "old", "worker-0").compression, "none");
    assert_eq!(copy(&h, "live", "worker-0").compression, "zstd");
    for (job, compression) in [("old", "none"), ("live", "zstd")] {
        assert_all_exact(&h, &[(job, "worker-0")], compression).await;
        let out = run({
            let mut cmd = malog(&h);
            cmd.args(["cat", job, "worker-0"]);
            cmd
        })
        .await;
        assert!(out.stdout == h.sim.log_bytes(job, "worker-0"), "{job}");
    }
    let out = run({
        let mut cmd = malog(&h);
        cmd.arg("verify");
        cmd
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// GUARD: missing S3 keys are a usage error (exit 2) naming where to put them, and
/// no S3 secret ever reaches the output, even at trace level with faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_credentials_usage_error_and_secret_hygiene() {
    let (mut h, server) = s3_harness(vec![finished_job("a", 30, &[BIG, 10])], "none").await;
    server.fail(S3Op::UploadPart, 2);
    h.sim
        .inject(Fault::status(FaultTarget::Download, 500, "", "boom").times(1));
    let out = run({
        let mut cmd = malog(&h);
        cmd.env("RUST_LOG", "trace").args(["-vv", "backfill"]);
        cmd
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET_KEY), "secret key printed");
        assert!(!text.contains("X-Amz-Signature="), "signed URL printed");
    }

    let without_keys = server
        .storage_toml(h.dir.path(), PREFIX, "none")
        .lines()
        .filter(|l| !l.contains("key_file"))
        .collect::<Vec<_>>()
        .join("\n");
    h.extra = format!("{FAST_FETCH}{without_keys}\n");
    let out = run({
        let mut cmd = malog(&h);
        cmd.arg("backfill");
        cmd
    })
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
}
