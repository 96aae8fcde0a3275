//! What the simulated cloud contains: the serde-loadable [`SimConfig`] with its
//! jobs and tasks, and the two stock scenarios (`demo`, `generated`). Pure data;
//! the server state built from it lives in `state.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The simulated account: credentials the server accepts and the jobs it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The only project id the API answers for; others get 404 `ModelArts.2786`.
    pub project_id: String,
    /// The only access key whose signatures are accepted.
    pub access_key: String,
    pub secret_key: String,
    /// How long a presigned log link stays valid (the real service: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
    pub jobs: Vec<SimJob>,
    /// The IAM user that may obtain tokens with `POST /v3/auth/tokens`.
    pub iam_user: String,
    pub iam_password: String,
    pub iam_domain: String,
    /// Lifetime of issued IAM tokens (the real service: 24 hours).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// When set, the access key is a temporary one: requests must carry this
    /// value in a signed `X-Security-Token` header.
    pub security_token: Option<String>,
    /// When set, log links point at `<links_to>/<job id>/<file name>` (a static
    /// file server holding [`super::Simulator::export`]'s files) instead of at the
    /// simulator; downloads then bypass its counters and faults.
    pub links_to: Option<String>,
    /// How far the simulated cloud's clock is ahead of this machine's (negative:
    /// behind), in seconds: it shows in every `Date` header and in the gateway's
    /// 15-minute check of `X-Sdk-Date`.
    pub clock_skew_secs: i64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            project_id: "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d".to_owned(),
            access_key: "SIMULATORAK000000001".to_owned(),
            secret_key: "simulator-secret-key-not-a-real-one".to_owned(),
            link_ttl: Duration::from_secs(300),
            jobs: Vec::new(),
            iam_user: "sim-user".to_owned(),
            iam_password: "sim-password-not-a-real-one".to_owned(),
            iam_domain: "sim-account".to_owned(),
            token_ttl: Duration::from_secs(24 * 3600),
            security_token: None,
            links_to: None,
            clock_skew_secs: 0,
        }
    }
}

/// One training job. Times are epoch milliseconds, as the API reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimJob {
    pub id: String,
    pub name: String,
    /// `status.phase`: Creating, Pending, Running, Failed, Completed, Terminating,
    /// Terminated or Abnormal. In Creating and Pending the job lists no tasks.
    #[serde(default = "default_phase")]
    pub phase: String,
    #[serde(default)]
    pub create_time_ms: i64,
    /// 0 when the job never started.
    #[serde(default)]
    pub start_time_ms: i64,
    #[serde(default)]
    pub duration_ms: i64,
    #[serde(default)]
    pub tasks: Vec<SimTask>,
}

/// One task (node) of a job and the log it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTask {
    /// Task name as in `status.tasks`, e.g. `worker-0`.
    pub id: String,
    /// Current log size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Content seed; a new seed means a rewritten log.
    #[serde(default)]
    pub seed: u64,
}

fn default_phase() -> String {
    "Completed".to_owned()
}

/// Phases after which a job's logs no longer change.
pub(crate) fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Completed" | "Failed" | "Terminated" | "Abnormal")
}

/// Phases in which the job has no tasks yet.
pub(crate) fn hides_tasks(phase: &str) -> bool {
    matches!(phase, "Creating" | "Pending")
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn task(id: &str, size: u64, seed: u64) -> SimTask {
    SimTask {
        id: id.to_owned(),
        size,
        seed,
    }
}

impl SimConfig {
    /// A small, realistic account for `malog demo`: a finished two-node job, a failed
    /// job, a running three-node job whose logs can still grow, and a job still being
    /// created (no tasks). Logs range from 1 KiB to 3 MiB. Times are relative to now,
    /// so the jobs fall inside any recent-jobs window; ids are fixed.
    pub fn demo() -> SimConfig {
        let now = now_ms() / 1000 * 1000;
        let resnet = now - 26 * HOUR_MS;
        let bert = now - 5 * HOUR_MS;
        let llama = now - 40 * MINUTE_MS;
        SimConfig {
            jobs: vec![
                SimJob {
                    id: "3faf5c03-aaa1-4cbe-879d-24b05d997347".to_owned(),
                    name: "resnet50-ddp-0315".to_owned(),
                    phase: "Completed".to_owned(),
                    create_time_ms: resnet + 123,
                    start_time_ms: resnet + 65_000,
                    duration_ms: HOUR_MS,
                    tasks: vec![
                        task("worker-0", 3 * MIB, 1),
                        task("worker-1", 3 * MIB - 4_321, 2),
                    ],
                },
                SimJob {
                    id: "8c1d2e4f-5a6b-4c7d-9e8f-0a1b2c3d4e5f".to_owned(),
                    name: "bert-finetune-squad-0316".to_owned(),
                    phase: "Failed".to_owned(),
                    create_time_ms: bert + 457,
                    start_time_ms: bert + 40_000,
                    duration_ms: 17 * MINUTE_MS,
                    tasks: vec![task("worker-0", 180 * KIB, 3)],
                },
                SimJob {
                    id: "b7e3a9d1-24c6-4f58-8a0e-6d2c91f4e7b3".to_owned(),
                    name: "llama-lora-sweep-0317".to_owned(),
                    phase: "Running".to_owned(),
                    create_time_ms: llama + 789,
                    start_time_ms: llama + 90_000,
                    duration_ms: now - llama - 90_000,
                    tasks: vec![
                        task("worker-0", 64 * KIB, 4),
                        task("worker-1", 63 * KIB, 5),
                        task("worker-2", KIB, 6),
                    ],
                },
                SimJob {
                    id: "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b".to_owned(),
                    name: "yolov8-detect-0318".to_owned(),
                    phase: "Creating".to_owned(),
                    create_time_ms: now - 2 * MINUTE_MS + 12,
                    start_time_ms: 0,
                    duration_ms: 0,
                    tasks: Vec::new(),
                },
            ],
            ..SimConfig::default()
        }
    }

    /// `jobs` completed jobs of `tasks_per_job` tasks whose logs are `log_size` bytes
    /// each, for load tests and benchmarks. Job `i` has a fixed UUID-shaped id (its
    /// last group is `i`), name `gen-job-NNNNN`, and was created `i` seconds after a
    /// point a week ago; every job ended days ago.
    pub fn generated(jobs: usize, tasks_per_job: usize, log_size: u64) -> SimConfig {
        let base = (now_ms() - 7 * 24 * HOUR_MS) / MINUTE_MS * MINUTE_MS;
        let jobs = (0..jobs as u64)
            .map(|i| {
                let h = splitmix(i);
                let create = base + i as i64 * 1_000;
                SimJob {
                    id: format!(
                        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                        h >> 32,
                        (h >> 16) & 0xffff,
                        (h >> 4) & 0xfff,
                        h & 0xfff,
                        i
                    ),
                    name: format!("gen-job-{i:05}"),
                    phase: "Completed".to_owned(),
                    create_time_ms: create,
                    start_time_ms: create + 5_000,
                    duration_ms: 10 * MINUTE_MS,
                    tasks: (0..tasks_per_job as u64)
                        .map(|t| task(&format!("worker-{t}"), log_size, i * 1_000 + t))
                        .collect(),
                }
            })
            .collect();
        SimConfig {
            jobs,
            ..SimConfig::default()
        }
    }
}

impl SimConfig {
    /// Makes the last `n` jobs running: started half an hour ago, not ended, so
    /// their logs may still grow and an archiver cannot seal them.
    pub fn with_running(mut self, n: usize) -> SimConfig {
        let now = now_ms();
        let count = self.jobs.len();
        for job in self.jobs.iter_mut().skip(count.saturating_sub(n)) {
            job.phase = "Running".to_owned();
            job.start_time_ms = now - 30 * MINUTE_MS;
            job.create_time_ms = job.start_time_ms - MINUTE_MS;
            job.duration_ms = 30 * MINUTE_MS;
        }
        self
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_has_the_promised_mix() {
        let c = SimConfig::demo();
        let phases: Vec<&str> = c.jobs.iter().map(|j| j.phase.as_str()).collect();
        assert_eq!(phases, ["Completed", "Failed", "Running", "Creating"]);
        assert!(
            c.jobs
                .iter()
                .all(|j| j.id.len() == 36 && j.tasks.len() <= 3)
        );
        assert!(c.jobs[3].tasks.is_empty());
        let sizes = c.jobs.iter().flat_map(|j| &j.tasks).map(|t| t.size);
        assert!(sizes.clone().all(|s| (KIB..=3 * MIB).contains(&s)));
    }

    #[test]
    fn generated_ids_are_unique_and_stable() {
        let a = SimConfig::generated(300, 2, 10);
        let b = SimConfig::generated(300, 2, 10);
        let ids: std::collections::HashSet<&str> = a.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids.len(), 300);
        assert!(
            a.jobs
                .iter()
                .zip(&b.jobs)
                .all(|(x, y)| x.id == y.id && x.tasks == y.tasks)
        );
        assert!(
            a.jobs
                .iter()
                .all(|j| j.id.len() == 36 && j.tasks.len() == 2)
        );
        assert!(
            a.jobs
                .iter()
                .all(|j| j.start_time_ms + j.duration_ms < now_ms() - 24 * HOUR_MS)
        );
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_keys() {
        let c = SimConfig::demo();
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"link_ttl\":\"5m\""), "{text}");
        assert_eq!(serde_json::from_str::<SimConfig>(&text).unwrap(), c);
        let minimal: SimConfig = serde_json::from_str(
            r#"{"link_ttl":"30s","jobs":[{"id":"j","name":"n","tasks":[{"id":"worker-0"}]}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.link_ttl, Duration::from_secs(30));
        assert_eq!(minimal.jobs[0].phase, "Completed");
        assert!(serde_json::from_str::<SimConfig>(r#"{"bogus":1}"#).is_err());
    }
}
