//! The simulator's shared state: fixed settings, the mutable job table with per-log
//! validators (ETag, Last-Modified), the fault queue and the counters.
//!
//! Everything mutable sits behind one `std::sync::Mutex` that handlers hold only
//! for a lookup or an update, never across an `.await` (mini-redis `db.rs` explains
//! why a std mutex is right for such short sections). Counters are atomics so the
//! body streams can add to `bytes_served` without taking the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::SimStats;
use super::content::LogGen;
use super::faults::{FaultKind, FaultQueue, FaultRates, FaultTarget};
use super::scenario::{SimConfig, SimJob, is_terminal};

/// The simulator's internal OBS credentials, used only to sign and check links.
const OBS_ACCESS_KEY: &str = "SIMOBSAK0000000000001";

/// State shared by the handlers and the [`super::Simulator`] handles.
pub(crate) struct Shared {
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
    pub link_ttl: Duration,
    pub obs_access_key: String,
    /// Random per simulator, so links from one simulator never verify on another.
    pub obs_secret_key: String,
    /// `http://127.0.0.1:PORT`, the base of every link handed out.
    pub endpoint: String,
    /// See [`super::SimConfig::links_to`].
    pub links_to: Option<String>,
    /// See [`super::SimConfig::clock_skew_secs`].
    pub clock_skew_secs: i64,
    pub iam: super::iam::Iam,
    state: Mutex<State>,
    pub counters: Counters,
}

pub(crate) struct State {
    jobs: HashMap<String, JobState>,
    /// Insertion counter, so [`Shared::config`] lists jobs in the order they came.
    next_seq: u64,
    pub faults: FaultQueue,
    pub rates: FaultRates,
}

struct JobState {
    seq: u64,
    job: SimJob,
    /// Last-Modified of each task's log (unix seconds), parallel to `job.tasks`.
    modified: Vec<i64>,
}

/// A snapshot of one log, enough to answer a download after the lock is released.
#[derive(Debug, Clone)]
pub(crate) struct LogObject {
    /// Whose log it is (bytes served are counted per task).
    pub job_id: String,
    pub task_id: String,
    pub generator: LogGen,
    pub size: u64,
    /// Quoted strong ETag, e.g. `"9f86d081884c7d65…"`.
    pub etag: String,
    /// Unix seconds.
    pub last_modified: i64,
}

/// What a link request finds.
pub(crate) enum TaskLookup {
    NoJob,
    NoTask,
    /// The task exists but has no log yet (job not started, or empty log of a live job).
    NotGenerated,
    Ready,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Last-Modified of a log as loaded from config: when its job ended, or now if it
/// is still running.
fn initial_modified(job: &SimJob) -> i64 {
    let now = now_secs();
    let ended_ms = if job.start_time_ms > 0 {
        job.start_time_ms + job.duration_ms
    } else {
        job.create_time_ms
    };
    if is_terminal(&job.phase) && ended_ms > 0 {
        (ended_ms / 1000).min(now)
    } else {
        now
    }
}

/// The instant of a change: now, but always at least one second after the previous
/// value, so an `If-Modified-Since` taken before the change never matches after it.
fn bumped(previous: i64) -> i64 {
    now_secs().max(previous + 1)
}

fn base_ms(job: &SimJob) -> i64 {
    if job.start_time_ms > 0 {
        job.start_time_ms
    } else {
        job.create_time_ms
    }
}

impl Shared {
    pub fn new(config: SimConfig, endpoint: String) -> Shared {
        let iam = super::iam::Iam::new(&config);
        let mut state = State {
            jobs: HashMap::new(),
            next_seq: 0,
            faults: FaultQueue::default(),
            rates: FaultRates::default(),
        };
        for job in config.jobs {
            state.insert(job);
        }
        Shared {
            project_id: config.project_id,
            access_key: config.access_key,
            secret_key: config.secret_key,
            link_ttl: config.link_ttl,
            obs_access_key: OBS_ACCESS_KEY.to_owned(),
            obs_secret_key: hex::encode(rand::random::<[u8; 20]>()),
            endpoint,
            links_to: config.links_to,
            clock_skew_secs: config.clock_skew_secs,
            iam,
            state: Mutex::new(state),
            counters: Counters::default(),
        }
    }

    /// Locks the state. A panic elsewhere cannot leave it half-updated (every update
    /// is a single assignment), so a poisoned lock is simply taken over.
    /// The simulated cloud's current time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.clock_skew_secs)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn config(&self) -> SimConfig {
        let state = self.lock();
        let mut jobs: Vec<&JobState> = state.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        SimConfig {
            project_id: self.project_id.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            link_ttl: self.link_ttl,
            links_to: self.links_to.clone(),
            clock_skew_secs: self.clock_skew_secs,
            jobs: jobs.into_iter().map(|j| j.job.clone()).collect(),
            ..self.iam.settings()
        }
    }
}

impl State {
    /// The fault of one request: a scripted one if any matches, else one drawn
    /// at the configured rates (`body_len`: the size of a download's body).
    pub fn take_fault(
        &mut self,
        target: FaultTarget,
        job_id: Option<&str>,
        task_id: Option<&str>,
        body_len: u64,
    ) -> Option<FaultKind> {
        self.faults
            .take(target, job_id, task_id)
            .or_else(|| self.rates.draw(target, body_len, rand::random::<f64>()))
    }

    pub fn insert(&mut self, job: SimJob) {
        let modified = vec![initial_modified(&job); job.tasks.len()];
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs
            .insert(job.id.clone(), JobState { seq, job, modified });
    }

    pub fn remove(&mut self, job_id: &str) {
        self.jobs.remove(job_id);
    }

    pub fn job(&self, job_id: &str) -> Option<&SimJob> {
        self.jobs.get(job_id).map(|j| &j.job)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &SimJob> {
        self.jobs.values().map(|j| &j.job)
    }

    pub fn set_phase(&mut self, job_id: &str, phase: &str) {
        if let Some(j) = self.jobs.get_mut(job_id) {
            j.job.phase = phase.to_owned();
        }
    }

    /// Applies `change` to a task; returns false if the job or task is unknown. The
    /// log's Last-Modified moves forward only when `change` reports a change.
    pub fn update_task(
        &mut self,
        job_id: &str,
        task_id: &str,
        change: impl FnOnce(&mut super::SimTask) -> bool,
    ) -> bool {
        let Some(j) = self.jobs.get_mut(job_id) else {
            return false;
        };
        let Some(i) = j.job.tasks.iter().position(|t| t.id == task_id) else {
            return false;
        };
        if change(&mut j.job.tasks[i]) {
            j.modified[i] = bumped(j.modified[i]);
        }
        true
    }

    /// Grows every `every`-th log by `bytes`, counting tasks in job order then
    /// task order, among jobs in `phase` if given; returns how many grew.
    pub fn grow_every(&mut self, every: u64, phase: Option<&str>, bytes: u64) -> u64 {
        let mut jobs: Vec<&mut JobState> = self
            .jobs
            .values_mut()
            .filter(|j| phase.is_none_or(|p| j.job.phase == p))
            .collect();
        jobs.sort_by_key(|j| j.seq);
        let mut index = 0;
        let mut grown = 0;
        for j in jobs {
            for (task, modified) in j.job.tasks.iter_mut().zip(&mut j.modified) {
                if index % every == 0 {
                    task.size += bytes;
                    *modified = bumped(*modified);
                    grown += 1;
                }
                index += 1;
            }
        }
        grown
    }

    pub fn lookup_task(&self, job_id: &str, task_id: &str) -> TaskLookup {
        let Some(j) = self.jobs.get(job_id) else {
            return TaskLookup::NoJob;
        };
        let Some(task) = j.job.tasks.iter().find(|t| t.id == task_id) else {
            return TaskLookup::NoTask;
        };
        let phase = j.job.phase.as_str();
        if super::scenario::hides_tasks(phase) || (task.size == 0 && !is_terminal(phase)) {
            TaskLookup::NotGenerated
        } else {
            TaskLookup::Ready
        }
    }

    pub fn object(&self, job_id: &str, task_id: &str) -> Option<LogObject> {
        let j = self.jobs.get(job_id)?;
        let i = j.job.tasks.iter().position(|t| t.id == task_id)?;
        let task = &j.job.tasks[i];
        let base = base_ms(&j.job);
        let mut hasher = Sha256::new();
        for part in [job_id.as_bytes(), task_id.as_bytes()] {
            hasher.update(part);
            hasher.update([0]);
        }
        hasher.update(task.seed.to_le_bytes());
        hasher.update(task.size.to_le_bytes());
        hasher.update(base.to_le_bytes());
        let etag = format!("\"{}\"", hex::encode(&hasher.finalize()[..16]));
        Some(LogObject {
            job_id: job_id.to_owned(),
            task_id: task_id.to_owned(),
            generator: LogGen::new(job_id, task_id, task.seed, base),
            size: task.size,
            etag,
            last_modified: j.modified[i],
        })
    }
}

/// Request counters; see [`SimStats`] for their meaning.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub search_requests: AtomicU64,
    pub detail_requests: AtomicU64,
    pub link_requests: AtomicU64,
    pub downloads: AtomicU64,
    pub not_modified: AtomicU64,
    pub range_requests: AtomicU64,
    pub bytes_served: AtomicU64,
    pub auth_failures: AtomicU64,
    pub faults_fired: AtomicU64,
    pub links_denied: AtomicU64,
    pub tokens_issued: AtomicU64,
    /// Log body bytes handed to the connection, per `(job, task)`.
    pub served_per_task: Mutex<HashMap<(String, String), u64>>,
    /// Arrival times of the API requests of the last second.
    pub api_window: Mutex<VecDeque<std::time::Instant>>,
    pub max_api_per_second: AtomicU64,
    pub record_requests: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts one API request arriving now in the sliding one-second window
    /// (a window holds the requests that arrived less than a second apart).
    pub fn api_request(&self) {
        let mut window = self
            .api_window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        window.push_back(now);
        self.max_api_per_second
            .fetch_max(window.len() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            search_requests: get(&self.search_requests),
            detail_requests: get(&self.detail_requests),
            link_requests: get(&self.link_requests),
            downloads: get(&self.downloads),
            not_modified: get(&self.not_modified),
            range_requests: get(&self.range_requests),
            bytes_served: get(&self.bytes_served),
            auth_failures: get(&self.auth_failures),
            faults_fired: get(&self.faults_fired),
            links_denied: get(&self.links_denied),
            tokens_issued: get(&self.tokens_issued),
            max_api_requests_per_second: get(&self.max_api_per_second),
            record_requests: get(&self.record_requests),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.search_requests,
            &self.detail_requests,
            &self.link_requests,
            &self.downloads,
            &self.not_modified,
            &self.range_requests,
            &self.bytes_served,
            &self.auth_failures,
            &self.faults_fired,
            &self.links_denied,
            &self.tokens_issued,
            &self.max_api_per_second,
            &self.record_requests,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.served_per_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.api_window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Adds `n` body bytes served for one task's log.
    pub fn add_served(&self, job_id: &str, task_id: &str, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
        let mut map = self
            .served_per_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&(job_id.to_owned(), task_id.to_owned())) {
            Some(total) => *total += n,
            None => {
                map.insert((job_id.to_owned(), task_id.to_owned()), n);
            }
        }
    }

    /// Body bytes served for one task's log since the last reset.
    pub fn served(&self, job_id: &str, task_id: &str) -> u64 {
        self.served_per_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(job_id.to_owned(), task_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}
