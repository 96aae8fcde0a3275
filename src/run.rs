//! One archive pass: source → plan → fetch → storage → index.
//!
//! [`Archiver::run_once`] is shared by `backfill`, `demo` and the daemon; they
//! differ only in scope and trigger. A task's failure is data (a row with its
//! error); only run-level failures (index or storage unusable) end a run early.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::fetch::{FetchError, FetchOutcome, Fetcher, TaskResult};
use crate::index::{Index, IndexError, QueryFilter, RunTotals, TaskRecord, TaskUpdate};
use crate::model::{Job, JobId, TaskId, TaskState};
use crate::plan::{Action, PlanContext, PlanPreview};
use crate::progress::Progress;
use crate::source::client::CredentialsError;
use crate::source::{Credentials, JobFilter, ModelArtsClient, SourceError};
use crate::storage::{ArchiveKey, Storage, StoreError};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod records;

/// Outcomes are written to the index in batches of at most this many rows.
const RECORD_BATCH: usize = 256;
/// Downloaded logs that may wait for storage to make them durable (local
/// storage batches fsyncs); each holds an open file but no buffer.
const FINISHING: usize = 256;
/// Parallel existence checks of archived objects when loading the snapshot.
const MISSING_CHECKS: usize = 16;
/// Job ids per index query when loading the planner's snapshot.
const SNAPSHOT_CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// What a pass covers.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    /// When non-empty, exactly these jobs instead of the configured selection.
    pub jobs: Vec<JobId>,
    /// Plan only: no link requests, no downloads, no index writes.
    pub dry_run: bool,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
}

/// A task or job that did not end archived or unchanged.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub job_id: String,
    pub task_id: Option<String>,
    pub state: &'static str,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run_id: Option<i64>,
    #[serde(flatten)]
    pub totals: RunTotals,
    pub seconds: f64,
    pub failures: Vec<Failure>,
    /// What a dry run would do.
    #[serde(skip)]
    pub preview: Option<PlanPreview>,
}

impl RunReport {
    /// `ok` when every selected task is archived, unchanged, sealed or not ready yet.
    pub fn outcome(&self) -> &'static str {
        if self
            .failures
            .iter()
            .all(|f| f.state == TaskState::NotReady.as_str())
        {
            "ok"
        } else {
            "partial"
        }
    }
}

/// The long-lived parts of the pipeline, opened once per process.
pub struct Archiver {
    pub config: Config,
    source: ModelArtsClient,
    /// Shared by the API client and the log downloads.
    http: reqwest::Client,
    storage: Storage,
    /// The one writer connection; std mutex because it is only used inside
    /// `spawn_blocking` and never held across an await.
    index: Arc<Mutex<Index>>,
}

impl Archiver {
    pub async fn open(config: Config, credentials: Credentials) -> Result<Archiver, RunError> {
        // One client for the API and the log links: one TLS set-up (loading the
        // system's CA roots costs milliseconds per client) and a connection pool
        // per host either way. API calls set their own timeout per request.
        let http = reqwest::Client::builder()
            .connect_timeout(config.fetch.connect_timeout)
            .pool_max_idle_per_host(config.fetch.concurrency)
            .build()
            .map_err(|e| RunError::Http(e.to_string()))?;
        let source = ModelArtsClient::new(&config.modelarts, credentials, http.clone())
            .with_redaction(crate::source::Redaction {
                keep_environment: config.jobs.keep_environment,
            });
        let storage = Storage::from_config(&config.storage).await?;
        let index_path = config.index_path.clone();
        let index = tokio::task::spawn_blocking(move || Index::open(&index_path))
            .await
            .expect("index open does not panic")?;
        Ok(Archiver {
            config,
            source,
            http,
            storage,
            index: Arc::new(Mutex::new(index)),
        })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Runs `f` on the index connection on a blocking thread.
    /// Reads the whole index looking for damage (`PRAGMA quick_check`).
    pub async fn check_index(&self) -> Result<(), RunError> {
        self.with_index(|ix| ix.check_integrity()).await
    }

    async fn with_index<R, F>(&self, f: F) -> Result<R, RunError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Index) -> Result<R, IndexError> + Send + 'static,
    {
        let index = self.index.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = index.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .expect("index calls do not panic");
        Ok(result?)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.config.fetch.backoff_initial,
            max: self.config.fetch.backoff_max,
            max_attempts: self.config.fetch.max_attempts,
        }
    }

    /// One pass over the selected jobs.
    pub async fn run_once(
        &self,
        scope: &RunScope,
        cancel: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        self.source.reset_health();
        // One writer at a time: a daemon pass and a manual backfill never interleave.
        let _lock = if scope.dry_run {
            None
        } else {
            Some(self.with_index(|ix| ix.lock_writer()).await?)
        };
        // Only the lock holder may clear leftovers: another process's staging
        // files would be in use.
        if !scope.dry_run {
            let swept = self.storage.sweep_staging().await?;
            if swept > 0 {
                tracing::info!(
                    files = swept,
                    "removed staging files (or stale multipart uploads) of interrupted downloads"
                );
            }
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let run_id = if scope.dry_run {
            None
        } else {
            Some(self.with_index(move |ix| ix.begin_run(now_ms)).await?)
        };
        let mut failures = Vec::new();
        let mut totals = RunTotals::default();

        let Listing {
            jobs,
            sealed,
            sealed_tasks,
            gone,
        } = self.list_jobs(scope, now_ms, &mut failures).await?;
        totals.jobs = (jobs.len() + sealed.len()) as u64;
        totals.tasks += sealed_tasks;
        totals.sealed += sealed_tasks;
        let mut gone_ids = Vec::new();
        if !scope.dry_run {
            let listed = jobs.clone();
            self.with_index(move |ix| {
                ix.record_jobs(&listed, now_ms)?;
                ix.touch_jobs(&sealed, now_ms)
            })
            .await?;
            gone_ids = gone.clone();
            let updates = self
                .gone_jobs(gone, now_ms, &mut totals, &mut failures)
                .await?;
            self.with_index(move |ix| ix.record_updates(&updates))
                .await?;
        }

        let records = self.snapshot(&jobs).await?;
        let ctx = PlanContext {
            project_id: self.source.project_id(),
            layout: &self.config.storage.layout,
            now_ms,
            seal_grace_ms: self.config.fetch.seal_grace.as_millis() as i64,
        };
        if scope.dry_run {
            let preview = PlanPreview::new(jobs, records, &ctx);
            totals.tasks += (preview.items + preview.sealed) as u64;
            totals.sealed += preview.sealed as u64;
            return Ok(RunReport {
                run_id,
                totals,
                seconds: started.elapsed().as_secs_f64(),
                failures,
                preview: Some(preview),
            });
        }
        let plan = crate::plan::plan(&jobs, &records, &ctx);
        totals.tasks += (plan.items.len() + plan.newly_sealed.len() + plan.already_sealed) as u64;
        totals.sealed += (plan.newly_sealed.len() + plan.already_sealed) as u64;
        let sealed: Vec<TaskUpdate> = plan
            .newly_sealed
            .iter()
            .map(|(job, task)| TaskUpdate::Sealed {
                job: job.clone(),
                task: task.clone(),
            })
            .collect();
        self.with_index(move |ix| ix.record_updates(&sealed))
            .await?;

        let progress = if scope.progress {
            Progress::for_terminal(plan.items.len() as u64)
        } else {
            Progress::hidden()
        };
        let fetcher = Fetcher {
            source: self.source.clone(),
            http: self.http.clone(),
            storage: self.storage.clone(),
            config: self.config.fetch.clone(),
            progress: progress.clone(),
            slots: Arc::new(Semaphore::new(self.config.fetch.concurrency)),
        };
        let grace_ms = ctx.seal_grace_ms;
        let mut results = futures::stream::iter(plan.items)
            .map(|item| fetcher.fetch(item, cancel.clone()))
            // Beyond the download slots, room for logs waiting to be made durable.
            .buffer_unordered(self.config.fetch.concurrency + FINISHING)
            .ready_chunks(RECORD_BATCH);
        let mut run_error = None;
        while let Some(batch) = results.next().await {
            let updates: Vec<TaskUpdate> = batch
                .into_iter()
                .map(|r| account(r, grace_ms, &mut totals, &mut failures))
                .collect();
            if let Err(e) = self.with_index(move |ix| ix.record_updates(&updates)).await {
                // The index is unusable: stop starting downloads, report the run as failed.
                cancel.cancel();
                run_error = Some(e);
                break;
            }
        }
        progress.finish();
        // Logs first (ModelArts deletes them); then what it says about the jobs.
        if run_error.is_none() && !cancel.is_cancelled() {
            run_error = self
                .archive_records(&jobs, gone_ids, now_ms, &cancel)
                .await
                .err();
        }

        let report = RunReport {
            run_id,
            totals,
            seconds: started.elapsed().as_secs_f64(),
            failures,
            preview: None,
        };
        let ended_ms = chrono::Utc::now().timestamp_millis();
        let outcome = if run_error.is_some() {
            "failed"
        } else {
            report.outcome()
        };
        let message = run_error.as_ref().map(|e| e.to_string());
        let totals = report.totals.clone();
        if let Some(id) = run_id {
            self.with_index(move |ix| {
                ix.finish_run(id, ended_ms, outcome, &totals, message.as_deref())
            })
            .await?;
        }
        match run_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Lists the selected jobs. Jobs that failed to list become failures.
    async fn list_jobs(
        &self,
        scope: &RunScope,
        now_ms: i64,
        failures: &mut Vec<Failure>,
    ) -> Result<Listing, RunError> {
        let sealed = self.with_index(|ix| ix.sealed_jobs()).await?;
        let selection = &self.config.jobs;
        let explicit: Vec<JobId> = if scope.jobs.is_empty() {
            selection.ids.iter().map(|id| JobId(id.clone())).collect()
        } else {
            scope.jobs.clone()
        };
        let mut jobs = Vec::new();
        let mut seen = HashSet::new();
        if scope.jobs.is_empty() && selection.discover {
            let filter = JobFilter {
                phases: selection.phases.clone(),
                name_pattern: selection.name_pattern.clone(),
                created_after_ms: selection.created_after.map(|c| c.bound_ms(now_ms)),
            };
            match self
                .backoff()
                .retry(|| self.source.search_jobs(&filter))
                .await
                .0
            {
                Ok(found) => {
                    for job in found {
                        if seen.insert(job.id.clone()) {
                            jobs.push(job);
                        }
                    }
                }
                Err(e) => failures.push(Failure {
                    job_id: String::new(),
                    task_id: None,
                    state: TaskState::Failed.as_str(),
                    error: e.to_string(),
                }),
            }
        }

        // Explicit jobs whose every task is sealed need no details call.
        let (skipped, wanted): (Vec<JobId>, Vec<JobId>) = explicit
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .partition(|id| sealed.contains_key(id));
        let mut details = futures::stream::iter(wanted)
            .map(|id| async move {
                let result = self.backoff().retry(|| self.source.job(&id)).await.0;
                (id, result)
            })
            .buffer_unordered(self.config.fetch.concurrency);
        let mut gone = Vec::new();
        while let Some((id, result)) = details.next().await {
            match result {
                Ok(job) => jobs.push(job),
                Err(SourceError::JobNotFound { .. }) => gone.push(id),
                Err(e) => failures.push(Failure {
                    job_id: id.0,
                    task_id: None,
                    state: TaskState::Failed.as_str(),
                    error: e.to_string(),
                }),
            }
        }
        // Sealed jobs (found by the search, or explicit and skipped above) need
        // nothing but counting: no index rows loaded, no planning.
        let (found_sealed, mut jobs): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| sealed.contains_key(&j.id));
        let mut sealed_ids: Vec<JobId> = found_sealed.into_iter().map(|j| j.id).collect();
        sealed_ids.extend(skipped);
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Listing {
            jobs,
            sealed_tasks: sealed_ids.iter().map(|id| sealed[id]).sum(),
            sealed: sealed_ids,
            gone,
        })
    }

    /// Marks every known task of deleted jobs as gone (kept sealed if archived).
    async fn gone_jobs(
        &self,
        gone: Vec<JobId>,
        now_ms: i64,
        totals: &mut RunTotals,
        failures: &mut Vec<Failure>,
    ) -> Result<Vec<TaskUpdate>, RunError> {
        let mut updates = Vec::new();
        for job in gone {
            let filter = QueryFilter {
                jobs: vec![job.0.clone()],
                ..Default::default()
            };
            let rows = self.with_index(move |ix| ix.query(&filter)).await?;
            let error = format!("job {job}: training job not found in ModelArts (deleted)");
            if rows.is_empty() {
                failures.push(Failure {
                    job_id: job.0.clone(),
                    task_id: None,
                    state: TaskState::Lost.as_str(),
                    error: error.clone(),
                });
            }
            for row in rows {
                if row.has_copy() {
                    totals.sealed += 1;
                } else {
                    totals.lost += 1;
                    failures.push(Failure {
                        job_id: row.job_id.clone(),
                        task_id: Some(row.task_id.clone()),
                        state: TaskState::Lost.as_str(),
                        error: error.clone(),
                    });
                }
                totals.tasks += 1;
                updates.push(TaskUpdate::Gone {
                    job: job.clone(),
                    task: TaskId(row.task_id),
                    error: error.clone(),
                    at_ms: now_ms,
                });
            }
        }
        Ok(updates)
    }

    /// The index rows of the listed jobs' tasks, keyed for the planner.
    async fn snapshot(
        &self,
        jobs: &[Job],
    ) -> Result<HashMap<(JobId, TaskId), TaskRecord>, RunError> {
        let mut out = HashMap::new();
        for chunk in jobs.chunks(SNAPSHOT_CHUNK) {
            let filter = QueryFilter {
                jobs: chunk.iter().map(|j| j.id.0.clone()).collect(),
                ..Default::default()
            };
            let rows = self.with_index(move |ix| ix.query(&filter)).await?;
            let rows: Vec<TaskRecord> = futures::stream::iter(rows)
                .map(|row| self.forget_missing_copy(row))
                .buffer_unordered(MISSING_CHECKS)
                .collect()
                .await;
            for row in rows {
                out.insert(
                    (JobId(row.job_id.clone()), TaskId(row.task_id.clone())),
                    row,
                );
            }
        }
        Ok(out)
    }

    /// A row whose archived object has gone missing (deleted by hand, lost with a
    /// disk) is planned as if it had no copy, so the log is fetched again. Sealed
    /// rows are not checked here (that would cost a request per archived log on
    /// every pass); `verify` finds those.
    async fn forget_missing_copy(&self, mut row: TaskRecord) -> TaskRecord {
        if !row.has_copy() || row.sealed {
            return row;
        }
        let Some(key) = row.storage_key.as_deref().and_then(ArchiveKey::from_stored) else {
            return row;
        };
        if let Err(StoreError::NotFound { .. }) = self.storage.head(&key).await {
            tracing::warn!(job = %row.job_id, task = %row.task_id, "archived copy is missing; fetching the log again");
            row.storage_key = None;
            row.sha256 = None;
        }
        row
    }
}

/// The jobs of one pass.
struct Listing {
    /// Jobs to plan, by id.
    jobs: Vec<Job>,
    /// Jobs in scope whose every task is sealed, and how many tasks they have.
    sealed: Vec<JobId>,
    sealed_tasks: u64,
    /// Jobs the source says were deleted.
    gone: Vec<JobId>,
}

/// Turns one task's result into its index update, and counts it.
fn account(
    result: TaskResult,
    grace_ms: i64,
    totals: &mut RunTotals,
    failures: &mut Vec<Failure>,
) -> TaskUpdate {
    let TaskResult {
        item,
        outcome,
        attempts,
        at_ms,
    } = result;
    let job_phase = item.job_phase.as_str().to_owned();
    let failure = |state: TaskState, error: &FetchError| Failure {
        job_id: item.job.0.clone(),
        task_id: Some(item.task.0.clone()),
        state: state.as_str(),
        error: error.to_string(),
    };
    match outcome {
        FetchOutcome::Archived { object, validators } => {
            totals.fetched += 1;
            totals.bytes += object.size;
            tracing::info!(job = %item.job, task = %item.task, bytes = object.size, "archived");
            TaskUpdate::Archived {
                sealed: item.seals_at(at_ms, grace_ms),
                job: item.job,
                task: item.task,
                job_phase,
                size: object.size,
                sha256: object.sha256,
                storage_key: object.key.as_str().to_owned(),
                location: object.location,
                stored_size: object.stored_size,
                stored_sha256: object.stored_sha256,
                compression: object.compression.as_str().to_owned(),
                validators,
                at_ms,
            }
        }
        FetchOutcome::Unchanged => {
            totals.unchanged += 1;
            TaskUpdate::Unchanged {
                sealed: item.seals_at(at_ms, grace_ms),
                job: item.job,
                task: item.task,
                job_phase,
                at_ms,
            }
        }
        FetchOutcome::Failed(error) => {
            let gone = matches!(
                error,
                FetchError::Source(SourceError::LogGone { .. } | SourceError::JobNotFound { .. })
            );
            let not_ready = matches!(error, FetchError::Source(SourceError::LogNotReady { .. }));
            if gone {
                if matches!(item.action, Action::Recheck(_)) {
                    totals.sealed += 1;
                } else {
                    totals.lost += 1;
                    failures.push(failure(TaskState::Lost, &error));
                }
                return TaskUpdate::Gone {
                    job: item.job,
                    task: item.task,
                    error: error.to_string(),
                    at_ms,
                };
            }
            let state = if not_ready {
                totals.not_ready += 1;
                TaskState::NotReady
            } else {
                totals.failed += 1;
                TaskState::Failed
            };
            tracing::warn!(job = %item.job, task = %item.task, attempts, error = %error, "task not archived");
            failures.push(failure(state, &error));
            TaskUpdate::Failed {
                job: item.job,
                task: item.task,
                job_phase,
                state,
                error: error.to_string(),
                attempts,
                at_ms,
            }
        }
    }
}

/// How long a run took, for summaries.
pub fn human_duration(seconds: f64) -> String {
    humantime::format_duration(Duration::from_millis((seconds * 1000.0) as u64)).to_string()
}
