//! The read side with the real binary: job records and their secrets, the
//! shared selection flags, `jobs`, `show`, `grep` (against GNU grep on the
//! exported files) and `export` (against `sha256sum -c`), on local storage and
//! S3, with and without zstd.

use crate::harness::*;
use crate::s3_server::S3Server;
use assert_cmd::Command;
use malog::sim::{FAKE_SECRET, SimJob};
use std::collections::BTreeSet;
use std::path::Path;

fn malog(h: &Harness, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("malog").unwrap();
    cmd.arg("--config").arg(h.config_path()).args(args);
    for var in [
        "RUST_LOG",
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary off the async runtime so the in-process servers keep serving.
async fn run(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut cmd = malog(h, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Jobs created at known times: `old` 10 days ago, `mid` 3 days ago (Failed),
/// `new` 1 day ago; logs of a few KiB.
fn jobs() -> Vec<SimJob> {
    let mut old = finished_job("old", 240, &[3000, 2500]);
    old.name = "resnet-old".into();
    let mut mid = finished_job("mid", 72, &[4000]);
    mid.name = "bert-mid".into();
    mid.phase = "Failed".into();
    let mut new = finished_job("new", 24, &[5000, 1000]);
    new.name = "resnet-new".into();
    vec![old, mid, new]
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn backfill(h: &Harness) {
    let out = run(h, &["backfill"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// GUARD: a secret in a job's environment, parameters or command never reaches
/// the index, the archive, the output or the logs; the record, events and
/// metrics are archived; events survive the job's deletion in ModelArts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_archived_redacted_and_survive_deletion() {
    let h = Harness::start(jobs()).await;
    let out = run(&h, &["-vv", "backfill"]).await;
    assert_eq!(out.status.code(), Some(0));
    let mut seen = String::from_utf8_lossy(&out.stderr).into_owned();
    let docs: Vec<String> = h
        .job_documents()
        .iter()
        .map(|p| {
            p.strip_prefix(h.archive_root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(docs.len(), 9, "{docs:?}");
    let pid = &h.sim_config.project_id;
    assert!(docs.contains(&format!("{pid}/mid/job.json")), "{docs:?}");

    let show = json(&run(&h, &["show", "bert-mid", "--format", "json"]).await);
    assert_eq!(show["job_id"], "mid");
    assert_eq!(show["record"]["spec"]["resource"]["node_count"], 1);
    assert_eq!(show["node_count"], 1);
    assert_eq!(show["flavor"], "modelarts.p3.large.public");
    let env = &show["record"]["algorithm"]["environments"][0];
    assert_eq!(env["HF_TOKEN"], "<redacted>", "keys kept, values redacted");
    let events = show["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("CUDA out of memory")),
        "{events:?}"
    );
    assert!(show["metrics"]["worker-0"]["metrics"].is_array());
    assert_eq!(show["tasks"].as_array().unwrap().len(), 1);

    seen.push_str(&stdout(&run(&h, &["jobs", "--format", "json"]).await));
    seen.push_str(&show.to_string());
    seen.push_str(&stdout(&run(&h, &["show", "mid"]).await));
    let export = h.dir.path().join("export");
    let out = run(&h, &["export", "--to", export.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0));
    for file in files(&export) {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(file).unwrap()));
    }
    for file in files(h.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&export))
    {
        if file
            .file_name()
            .is_some_and(|n| n == "config.toml" || n == "custom.toml")
        {
            continue;
        }
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(file).unwrap()));
    }
    assert!(seen.contains("<redacted>"));
    assert!(!seen.contains(FAKE_SECRET), "the simulator's secret leaked");

    // ModelArts deletes the job: its record and events stay in the archive.
    h.sim.remove_job("mid");
    backfill(&h).await;
    let show = json(&run(&h, &["show", "mid", "--format", "json"]).await);
    assert_eq!(show["events"].as_array().unwrap().len(), events.len());
    assert_eq!(show["phase"], "Failed");
}

/// GUARD: every selection flag narrows `jobs`, `query`, `grep` and `export`
/// the same way, newest job first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_flags_filter_every_reader() {
    let h = Harness::start(jobs()).await;
    backfill(&h).await;
    let jobs_of = |args: &'static [&'static str]| {
        let h = &h;
        async move {
            let mut all = vec!["jobs", "--format", "json"];
            all.extend_from_slice(args);
            ids(&json(&run(h, &all).await))
        }
    };
    assert_eq!(jobs_of(&[]).await, ["new", "mid", "old"]);
    assert_eq!(jobs_of(&["--name", "^resnet"]).await, ["new", "old"]);
    assert_eq!(jobs_of(&["--phase", "Failed"]).await, ["mid"]);
    assert_eq!(
        jobs_of(&["--phase", "Failed", "--phase", "Completed"]).await,
        ["new", "mid", "old"]
    );
    assert_eq!(jobs_of(&["--since", "5d"]).await, ["new", "mid"]);
    assert_eq!(jobs_of(&["--until", "5d"]).await, ["old"]);
    assert_eq!(
        jobs_of(&["--job", "old", "--job", "new"]).await,
        ["new", "old"]
    );
    assert_eq!(jobs_of(&["--task", "worker-1"]).await, ["new", "old"]);
    assert_eq!(jobs_of(&["--state", "failed"]).await, Vec::<String>::new());
    assert_eq!(jobs_of(&["--limit", "2"]).await, ["new", "mid"]);
    let day = chrono::Utc::now() - chrono::Duration::days(2);
    let rfc = day.to_rfc3339();
    let date = (chrono::Utc::now() - chrono::Duration::days(5))
        .format("%Y-%m-%d")
        .to_string();
    let since = ["jobs", "--format", "json", "--since", rfc.as_str()];
    assert_eq!(ids(&json(&run(&h, &since).await)), ["new"]);
    let until = ["jobs", "--format", "json", "--until", date.as_str()];
    assert_eq!(ids(&json(&run(&h, &until).await)), ["old"]);

    // query: the same selection, one row per task.
    let rows = json(
        &run(
            &h,
            &[
                "query", "--format", "json", "--name", "resnet", "--task", "worker-1",
            ],
        )
        .await,
    );
    let got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["job_id"].as_str().unwrap().into(),
                r["task_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("new".into(), "worker-1".into()),
            ("old".into(), "worker-1".into())
        ]
    );

    // grep: only the selected logs.
    let out = run(
        &h,
        &[
            "grep", "--count", "INFO", "--since", "5d", "--task", "worker-0",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let logs: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(logs, ["resnet-new/worker-0", "bert-mid/worker-0"]);

    // export: only the selected jobs' folders.
    let dir = h.dir.path().join("export");
    let out = run(
        &h,
        &["export", "--to", dir.to_str().unwrap(), "--phase", "Failed"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folders: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        folders,
        BTreeSet::from(["SHA256SUMS".into(), "bert-mid--mid".into()])
    );

    // verify narrows too.
    let out = run(&h, &["verify", "--format", "json", "--name", "old"]).await;
    assert_eq!(json(&out)["checked"], 2);

    // Bad flags are usage errors that name the flag.
    let out = run(&h, &["jobs", "--since", "last week"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    let out = run(&h, &["grep", "(", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// The lines GNU grep finds in the exported logs, as `JOB_NAME/TASK:LINE:text`.
fn grep_exported(export: &Path, grep_args: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in files(export) {
        if file.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let folder = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let name = folder.split("--").next().unwrap().to_owned();
        let task = file.file_stem().unwrap().to_string_lossy().into_owned();
        let result = std::process::Command::new("grep")
            .arg("-n")
            .args(grep_args)
            .arg(&file)
            .output()
            .expect("GNU grep is installed");
        for line in String::from_utf8_lossy(&result.stdout).lines() {
            out.insert(format!("{name}/{task}:{line}"));
        }
    }
    out
}

/// Export, `sha256sum -c`, and grep against GNU grep on the exported files;
/// then a rerun skips everything and a changed file is never overwritten.
async fn grep_and_export_round_trip(h: &Harness) {
    backfill(h).await;
    let export = h.dir.path().join("export");
    let to = export.to_str().unwrap();
    let out = run(h, &["export", "--to", to]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&export)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let checked = String::from_utf8_lossy(&check.stdout).lines().count();
    assert_eq!(checked, 5 + 9, "5 logs and 3 documents per job");
    for id in ["old", "mid", "new"] {
        let want = h.sim.log_bytes(id, "worker-0");
        let name = if id == "mid" {
            "bert-mid".to_owned()
        } else {
            format!("resnet-{id}")
        };
        let got = std::fs::read(export.join(format!("{name}--{id}/worker-0.log"))).unwrap();
        assert!(got == want, "{id} exported byte-exact");
    }

    for (malog_args, grep_args) in [
        (vec!["step=00000000[12] "], vec!["-E", "step=00000000[12] "]),
        (
            vec!["-i", "worker-1 +STEP=00000000[1-3]"],
            vec!["-i", "-E", "worker-1 +STEP=00000000[1-3]"],
        ),
        (vec!["-F", "loss=2.3"], vec!["-F", "loss=2.3"]),
        (vec!["-w", "INFO"], vec!["-w", "INFO"]),
    ] {
        let mut args = vec!["grep"];
        args.extend(&malog_args);
        let out = run(h, &args).await;
        let got: BTreeSet<String> = stdout(&out).lines().map(str::to_owned).collect();
        let want = grep_exported(&export, &grep_args);
        assert!(!want.is_empty(), "{grep_args:?} finds something");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(got.len(), want.len(), "{malog_args:?}");
        assert!(got == want, "{malog_args:?}: malog and grep disagree");
    }
    // Counts, files, max count, context, JSON and no match.
    let out = run(h, &["grep", "--count", "-F", "loss=2.3"]).await;
    for line in stdout(&out).lines() {
        let (log, count) = line.rsplit_once(':').unwrap();
        let want = grep_exported(&export, &["-F", "loss=2.3"])
            .iter()
            .filter(|l| l.starts_with(&format!("{log}:")))
            .count();
        assert_eq!(count.parse::<usize>().unwrap(), want, "{log}");
    }
    let out = run(h, &["grep", "-l", "step=000000001 "]).await;
    assert_eq!(stdout(&out).lines().count(), 5);
    let out = run(
        h,
        &[
            "grep", "-m", "1", "--format", "json", "INFO", "--job", "new",
        ],
    )
    .await;
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one match per log of job new");
    assert_eq!(lines[0]["job_id"], "new");
    assert_eq!(lines[0]["job_name"], "resnet-new");
    assert_eq!(lines[0]["task"], "worker-0");
    assert!(lines[0]["line"].as_u64().unwrap() >= 1);
    assert!(lines[0]["text"].as_str().unwrap().contains("INFO"));
    let out = run(
        h,
        &[
            "grep", "-A", "1", "-m", "1", "INFO", "--job", "old", "--task", "worker-0",
        ],
    )
    .await;
    let text = stdout(&out);
    let context: Vec<&str> = text.lines().collect();
    assert_eq!(context.len(), 2, "{text}");
    let line = context[0]
        .strip_prefix("resnet-old/worker-0:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        context[1].starts_with(&format!("resnet-old/worker-0-{}-", line + 1)),
        "{text}"
    );
    let out = run(h, &["grep", "no such line anywhere"]).await;
    assert_eq!((out.status.code(), out.stdout.len()), (Some(1), 0));

    // A rerun skips what is there; a file changed by hand is not overwritten.
    let out = run(h, &["export", "--to", to]).await;
    assert!(
        stdout(&out).contains("exported 0 files"),
        "{}",
        stdout(&out)
    );
    let edited = export.join("resnet-new--new/worker-1.log");
    std::fs::write(&edited, b"my notes\n").unwrap();
    let out = run(h, &["export", "--to", to]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not overwritten"));
    assert_eq!(std::fs::read(&edited).unwrap(), b"my notes\n");
}

/// GUARD: grep finds exactly GNU grep's lines; export passes `sha256sum -c`
/// (local folder, plain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_and_export_local_plain() {
    let h = Harness::start(jobs()).await;
    grep_and_export_round_trip(&h).await;
}

/// The same, local folder with zstd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_and_export_local_zstd() {
    let mut h = Harness::start(jobs()).await;
    h.extra.push_str("\n[storage]\ncompression = \"zstd\"\n");
    grep_and_export_round_trip(&h).await;
    assert!(
        h.archive_files()
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "zst"))
    );
}

/// The same, S3 with zstd (the archive's documents stay plain JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_and_export_s3_zstd() {
    let server = S3Server::start().await;
    let mut h = Harness::start(jobs()).await;
    h.extra = format!(
        "{FAST_FETCH}{}",
        server.storage_toml(h.dir.path(), "pre", "zstd")
    );
    grep_and_export_round_trip(&h).await;
    let keys = server.object_keys();
    assert!(
        keys.iter().any(|k| k.ends_with("/new/job.json")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("/new/worker-0.log.zst")),
        "{keys:?}"
    );
}

/// The same, S3 without compression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_and_export_s3_plain() {
    let server = S3Server::start().await;
    let mut h = Harness::start(jobs()).await;
    h.extra = format!(
        "{FAST_FETCH}{}",
        server.storage_toml(h.dir.path(), "pre", "none")
    );
    grep_and_export_round_trip(&h).await;
}

/// GUARD: a job whose events cannot be read still has its logs and record
/// archived; the pass is ok and `show` says what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_failure_is_a_warning() {
    use malog::sim::{Fault, FaultTarget};
    let h = Harness::start(vec![finished_job("a", 30, &[2000])]).await;
    h.sim.inject(
        Fault::status(FaultTarget::Events, 403, "ModelArts.0108", "no permission").times(100),
    );
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!(h.row("a", "worker-0").state, "archived");
    let show = json(&run(&h, &["show", "a", "--format", "json"]).await);
    assert!(show["record"].is_object());
    assert!(show["events"].is_null());
    assert!(
        show["metrics"]["worker-0"].is_object(),
        "metrics still read"
    );
    let error = show["record_error"].as_str().unwrap();
    assert!(error.contains("events") && error.contains("403"), "{error}");
}

/// GUARD: events are paged until complete (a 60-task job has 123 events, more
/// than one page of 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_read_past_the_first_page() {
    let h = Harness::start(vec![finished_job("wide", 30, &[100; 60])]).await;
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    let show = json(&run(&h, &["show", "wide", "--format", "json"]).await);
    let events = show["events"].as_array().unwrap();
    assert_eq!(events.len(), 1 + 1 + 60 + 60 + 1);
    let distinct: BTreeSet<String> = events.iter().map(|e| e.to_string()).collect();
    assert_eq!(distinct.len(), events.len());
    assert_eq!(show["metrics"].as_object().unwrap().len(), 60);
}

/// `[jobs] keep_environment = true` keeps environment values (the documented
/// risk) and still redacts the other fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_environment_keeps_environment_values_only() {
    let mut h = Harness::start(vec![finished_job("a", 30, &[1000])]).await;
    h.extra = format!("keep_environment = true\n{FAST_FETCH}");
    backfill(&h).await;
    let show = json(&run(&h, &["show", "a", "--format", "json"]).await);
    let algorithm = &show["record"]["algorithm"];
    assert_eq!(algorithm["environments"][0]["HF_TOKEN"], FAKE_SECRET);
    assert_eq!(algorithm["parameters"][2]["value"], "<redacted>");
    assert!(!algorithm["command"].as_str().unwrap().contains(FAKE_SECRET));
}
