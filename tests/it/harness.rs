//! Shared set-up: a simulator on 127.0.0.1:0 and a config pointing at it.

use malog::config::Config;
use malog::run::{Archiver, RunReport, RunScope};
use malog::sim::{SimConfig, SimJob, SimTask, Simulator};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

pub const HOUR_MS: i64 = 3_600_000;

/// One pass of the configured selection.
pub async fn pass(archiver: &Archiver) -> RunReport {
    archiver
        .run_once(&RunScope::default(), CancellationToken::new())
        .await
        .unwrap()
}

pub struct Harness {
    pub sim: Simulator,
    pub sim_config: SimConfig,
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the generated config (e.g. a `[fetch]` table).
    pub extra: String,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A job that ended `ended_hours_ago` hours ago (phase Completed), with tasks of the given sizes.
pub fn finished_job(id: &str, ended_hours_ago: i64, sizes: &[u64]) -> SimJob {
    let end = now_ms() - ended_hours_ago * HOUR_MS;
    SimJob {
        id: id.to_owned(),
        name: format!("job-{id}"),
        phase: "Completed".to_owned(),
        create_time_ms: end - 2 * HOUR_MS,
        start_time_ms: end - HOUR_MS,
        duration_ms: HOUR_MS,
        tasks: sizes
            .iter()
            .enumerate()
            .map(|(i, size)| SimTask {
                id: format!("worker-{i}"),
                size: *size,
                seed: i as u64 + 1,
            })
            .collect(),
    }
}

pub fn running_job(id: &str, sizes: &[u64]) -> SimJob {
    SimJob {
        phase: "Running".to_owned(),
        duration_ms: 0,
        ..finished_job(id, 1, sizes)
    }
}

/// Fast retries so fault scenarios finish quickly.
pub const FAST_FETCH: &str = r#"
[fetch]
concurrency = 4
max_attempts = 4
backoff_initial = "10ms"
backoff_max = "50ms"
idle_timeout = "2s"
"#;

impl Harness {
    pub async fn start(jobs: Vec<SimJob>) -> Harness {
        let sim_config = SimConfig {
            jobs,
            ..SimConfig::default()
        };
        Harness::with_config(sim_config).await
    }

    pub async fn with_config(sim_config: SimConfig) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(listener, sim_config.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), &sim_config.access_key).unwrap();
        std::fs::write(dir.path().join("sk"), &sim_config.secret_key).unwrap();
        Harness {
            sim,
            sim_config,
            dir,
            extra: FAST_FETCH.to_owned(),
        }
    }

    pub fn config_text(&self) -> String {
        format!(
            r#"
[modelarts]
endpoint = "{}"
project_id = "{}"
access_key_file = "ak"
secret_key_file = "sk"
requests_per_second = 1000

[jobs]
discover = true
{}
"#,
            self.sim.endpoint(),
            self.sim_config.project_id,
            self.extra
        )
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, self.config_text()).unwrap();
        path
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path()).unwrap()
    }

    pub fn archive_root(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    pub async fn archiver(&self) -> Archiver {
        let config = self.config();
        let creds = malog::run::resolve_credentials(&config).unwrap();
        Archiver::open(config, creds).await.unwrap()
    }

    /// An archiver over a config file holding `text`, for tests that edit the
    /// generated config. It shares the folder, so the index and archive are the same.
    pub async fn archiver_from_text(&self, text: &str) -> Archiver {
        let path = self.dir.path().join("custom.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let creds = malog::run::resolve_credentials_in(&config, None).unwrap();
        Archiver::open(config, creds).await.unwrap()
    }

    /// One pass with a fresh archiver, as a new process would do.
    pub async fn run(&self) -> RunReport {
        pass(&self.archiver().await).await
    }

    /// The archived bytes of one task, read from the index's location.
    pub fn archived_bytes(&self, job: &str, task: &str) -> Vec<u8> {
        let index = malog::index::Index::open_read_only(&self.config().index_path).unwrap();
        let row = index.task(job, task).unwrap().expect("row exists");
        std::fs::read(row.location.expect("has a location")).unwrap()
    }

    pub fn row(&self, job: &str, task: &str) -> malog::index::TaskRecord {
        let index = malog::index::Index::open_read_only(&self.config().index_path).unwrap();
        index.task(job, task).unwrap().expect("row exists")
    }

    /// Every log under the archive root: not the staging folder, not the
    /// jobs' documents (see [`Harness::job_documents`]) nor their manifests.
    pub fn archive_files(&self) -> Vec<PathBuf> {
        self.all_archive_files()
            .into_iter()
            .filter(|p| !is_job_document(p) && !is_manifest(p))
            .collect()
    }

    /// The jobs' `job.json`, `events.json` and `metrics.json` in the archive.
    pub fn job_documents(&self) -> Vec<PathBuf> {
        self.all_archive_files()
            .into_iter()
            .filter(|p| is_job_document(p))
            .collect()
    }

    /// Every file under the archive root except the staging folder.
    pub fn all_archive_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return; // not created yet
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".staging") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.archive_root(), &mut out);
        out.sort();
        out
    }

    /// Files in the staging folder: a download in progress is a `.part` file plus,
    /// when resumable, its `.meta` sidecar.
    pub fn staging_files(&self) -> usize {
        count_files(&self.archive_root().join(".staging"))
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.archive_root().join(".staging")
    }
}

/// Whether an archive file is a job's record, events or metrics (not a log).
pub fn is_job_document(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| JOB_DOCUMENTS.iter().any(|d| n.ends_with(d)))
}

pub const JOB_DOCUMENTS: [&str; 3] = ["job.json", "events.json", "metrics.json"];

/// Whether an archive file (or S3 key, where the `~` is stored as `%7E`) is
/// a job's manifest.
pub fn is_manifest(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| malog::storage::manifest::is_manifest(&p.replace("%7E", "~")))
}

/// Entries of a folder; 0 when it does not exist.
pub fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
