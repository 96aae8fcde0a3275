//! One archive pass: source → plan → fetch → storage → index.
//!
//! [`Archiver::run_once`] is shared by `backfill`, `demo` and the daemon; they
//! differ only in scope and trigger. A task's failure is data (a row with its
//! error); only run-level failures (index or storage unusable) end a run early.

use crate::backoff::Backoff;
use crate::backoff::Retryable;
use crate::config::Config;
use crate::fetch::{FetchOutcome, Fetcher, TaskResult};
use crate::index::{Index, IndexError, QueryFilter, RunTotals, TaskRecord, TaskUpdate};
use crate::model::{Job, JobId, TaskId, TaskState};
use crate::plan::{PlanContext, PlanItem, PlanPreview};
use crate::progress::Progress;
use crate::source::Credentials;
use crate::source::client::CredentialsError;
use crate::storage::{ArchiveKey, Storage, StoreError};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod account;
mod appends;
mod manifests;
pub mod rebuild;
mod records;
mod sources;
mod spill;

use account::Tally;
use sources::{PassOf, Source, without_foreign};
pub use sources::{SourceHealth, SourcesError, resolve_credentials, resolve_credentials_in};
use spill::RecordSpill;

/// Outcomes are written to the index in batches of at most this many rows.
const RECORD_BATCH: usize = 256;
/// Batches of outcomes that may wait while earlier ones are recorded.
const RECORD_QUEUE: usize = 16;
/// Downloaded logs that may wait for storage to make them durable (local
/// storage batches fsyncs); each holds an open file but no buffer.
const FINISHING: usize = 256;
/// Parallel existence checks of archived objects when loading the snapshot.
const MISSING_CHECKS: usize = 16;
/// Jobs planned at a time (their index rows are one query).
const SNAPSHOT_CHUNK: usize = 500;
/// Planned tasks that may wait for a download slot.
const PLAN_QUEUE: usize = 1024;

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
    #[error("{0}")]
    Sources(#[from] sources::SourcesError),
}

/// What a pass covers.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    /// When non-empty, only these configured sources (by name).
    pub sources: Vec<String>,
    /// When non-empty, exactly these jobs instead of the configured selection
    /// (of one source: with several, `sources` must name it).
    pub jobs: Vec<JobId>,
    /// Plan only: no link requests, no downloads, no index writes.
    pub dry_run: bool,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
}

/// A task or job that did not end archived or unchanged.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The configured source of the job.
    pub source: String,
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
    /// The counts of each source of the pass (they add up to `totals`).
    pub sources: std::collections::BTreeMap<String, RunTotals>,
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
    /// One per configured source, in the config's order: each with its own
    /// client, so rate cap, throttle pause, breaker and auth state are its own.
    sources: Vec<Source>,
    /// Shared by the API client and the log downloads.
    http: reqwest::Client,
    storage: Storage,
    /// The one writer connection; std mutex because it is only used inside
    /// `spawn_blocking` and never held across an await.
    index: Arc<Mutex<Index>>,
}

impl Archiver {
    /// `credentials` are those of `config.sources`, in order (see
    /// [`resolve_credentials`]).
    pub async fn open(config: Config, credentials: Vec<Credentials>) -> Result<Archiver, RunError> {
        // One client for the API and the log links: one TLS set-up (loading the
        // system's CA roots costs milliseconds per client) and a connection pool
        // per host either way. API calls set their own timeout per request.
        let http = reqwest::Client::builder()
            .connect_timeout(config.fetch.connect_timeout)
            .pool_max_idle_per_host(config.fetch.concurrency)
            .build()
            .map_err(|e| RunError::Http(e.to_string()))?;
        let sources = Source::open_all(&config, credentials, &http)?;
        let storage = Storage::from_config(&config.storage).await?;
        let index_path = config.index_path.clone();
        let index = tokio::task::spawn_blocking(move || Index::open(&index_path))
            .await
            .expect("index open does not panic")?;
        Ok(Archiver {
            config,
            sources,
            http,
            storage,
            index: Arc::new(Mutex::new(index)),
        })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Reads the whole index looking for damage (`PRAGMA quick_check`).
    pub async fn check_index(&self) -> Result<(), RunError> {
        self.with_index(|ix| ix.check_integrity()).await
    }

    /// Runs `f` on the index connection on a blocking thread.
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

    /// Where a pass keeps its job records until it archives them: the
    /// index's folder (see `run/spill.rs`).
    fn spill_dir(&self) -> std::path::PathBuf {
        match self.config.index_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => std::path::PathBuf::from("."),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.config.fetch.backoff_initial,
            max: self.config.fetch.backoff_max,
            max_attempts: self.config.fetch.max_attempts,
        }
    }

    /// One pass over the selected jobs. Its `runs` row is finished whatever
    /// happens after it was begun, an early index or storage error included.
    pub async fn run_once(
        &self,
        scope: &RunScope,
        cancel: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let selected = self.select(scope)?;
        for source in &selected {
            source.client.reset_health();
        }
        // One writer at a time: a daemon pass and a manual backfill never
        // interleave, on the same index nor on the same archive folder (another
        // index's pass would sweep this one's staging files).
        let _locks = if scope.dry_run {
            None
        } else {
            let index_lock = self.with_index(|ix| ix.lock_writer()).await?;
            Some((index_lock, self.storage.lock_writer()?))
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
            self.roll_back_appends().await?;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let run_id = if scope.dry_run {
            None
        } else {
            Some(self.with_index(move |ix| ix.begin_run(now_ms)).await?)
        };
        let mut sources = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        let result = self
            .passes(
                &selected,
                scope,
                now_ms,
                &mut sources,
                &mut failures,
                &cancel,
            )
            .await;
        let mut totals = RunTotals::default();
        for part in sources.values() {
            totals.add(part);
        }
        let (preview, run_error) = match result {
            Ok(preview) => (preview, None),
            Err(e) => (None, Some(e)),
        };
        // The pass's appends in place are committed or failed by now: their
        // intents go (and a failed one's bytes), so the staging folder is
        // left empty. The next pass would do it otherwise.
        if !scope.dry_run
            && let Err(e) = self.roll_back_appends().await
        {
            tracing::warn!(error = %e, "cannot settle this pass's appends in place; the next pass will");
        }
        let report = RunReport {
            run_id,
            totals,
            seconds: started.elapsed().as_secs_f64(),
            sources,
            failures,
            preview,
        };
        if let Some(id) = run_id {
            let ended_ms = chrono::Utc::now().timestamp_millis();
            let outcome = if run_error.is_some() {
                "failed"
            } else {
                report.outcome()
            };
            let message = run_error.as_ref().map(|e| e.to_string());
            let totals = report.totals.clone();
            let finished = self
                .with_index(move |ix| {
                    ix.finish_run(id, ended_ms, outcome, &totals, message.as_deref())
                })
                .await;
            // The pass's own error says more than a failure to record it.
            if let (Err(e), None) = (finished, &run_error) {
                return Err(e);
            }
        }
        match run_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// The work of one source in a pass between its `runs` row's start and
    /// finish; a dry run returns what it would do.
    async fn pass(
        &self,
        source: &Source,
        pass: PassOf<'_>,
        totals: &mut RunTotals,
        failures: &mut Vec<Failure>,
        cancel: &CancellationToken,
    ) -> Result<Option<PlanPreview>, RunError> {
        let PassOf {
            scope,
            now_ms,
            progress,
        } = pass;
        // A dry run archives no records: they need not be set aside.
        let spill = (!scope.dry_run).then(|| Mutex::new(RecordSpill::new(&self.spill_dir())));
        let Listing {
            jobs,
            sealed,
            sealed_tasks,
            gone,
        } = self
            .list_jobs(source, scope, now_ms, spill.as_ref(), failures)
            .await?;
        totals.jobs = (jobs.len() + sealed.len()) as u64;
        totals.tasks += sealed_tasks;
        totals.sealed += sealed_tasks;
        let ctx = PlanContext {
            source: &source.name,
            region: &source.region,
            project_id: source.client.project_id(),
            layout: &self.config.storage.layout,
            now_ms,
            seal_grace_ms: self.config.fetch.seal_grace.as_millis() as i64,
        };
        if scope.dry_run {
            let (records, _) = self.snapshot(&jobs).await?;
            let preview = PlanPreview::new(jobs, records, &ctx);
            totals.tasks += (preview.items + preview.sealed) as u64;
            totals.sealed += preview.sealed as u64;
            return Ok(Some(preview));
        }
        // The jobs go to the index thread and come back: no copy of the listing.
        let name = source.name.clone();
        let (jobs, foreign) = self
            .with_index(move |ix| {
                let taken = ix.record_source_jobs(&name, &jobs, now_ms)?;
                ix.touch_jobs(&sealed, now_ms)?;
                let foreign = ix.foreign_jobs(&name, &taken)?;
                Ok((jobs, foreign))
            })
            .await?;
        // Another source's pass recorded them first, in this same pass.
        let jobs = without_foreign(source, jobs, foreign, failures);
        let gone_ids = gone.clone();
        let updates = self
            .gone_jobs(source, gone, now_ms, totals, failures)
            .await?;
        self.record(updates).await?;

        let listed_tasks: usize = jobs.iter().map(|j| j.tasks.len()).sum();
        progress.add_tasks(listed_tasks as u64);
        let fetcher = Fetcher {
            source: source.client.clone(),
            http: self.http.clone(),
            storage: self.storage.clone(),
            config: self.config.fetch.clone(),
            progress: progress.clone(),
            // Per source: a throttled or slow source never holds another's slots.
            slots: Arc::new(Semaphore::new(self.config.fetch.concurrency)),
        };
        let tally = Tally {
            source: &source.name,
            grace_ms: ctx.seal_grace_ms,
            totals,
            failures,
        };
        // The pass is a stream: jobs are planned a chunk at a time while the
        // downloads of earlier chunks run, with a bounded queue between them, so
        // memory does not grow with the number of tasks.
        let (queue, planned) = tokio::sync::mpsc::channel(PLAN_QUEUE);
        let planned = futures::stream::unfold(planned, |mut rx| async move {
            rx.recv().await.map(|item| ((item, 0), rx))
        });
        let (counts, fetched) = tokio::join!(
            self.plan_chunks(&jobs, &ctx, queue, progress),
            self.fetch_rounds(planned, &fetcher, tally, cancel)
        );
        let counts = counts?;
        fetched?;
        totals.tasks += counts.tasks;
        totals.sealed += counts.sealed;
        // Logs first (ModelArts deletes them); then what it says about the jobs.
        if !cancel.is_cancelled() {
            let spill = spill.map(|s| s.into_inner().unwrap_or_else(PoisonError::into_inner));
            self.archive_records(source, jobs, spill, gone_ids, now_ms, cancel)
                .await?;
        }
        Ok(None)
    }

    /// Plans the listed jobs a chunk at a time and queues the tasks to fetch;
    /// forgets missing copies and records seals on the way. Stops early when
    /// the fetching side has stopped. Returns what it counted.
    async fn plan_chunks(
        &self,
        jobs: &[Job],
        ctx: &PlanContext<'_>,
        queue: tokio::sync::mpsc::Sender<PlanItem>,
        progress: &Progress,
    ) -> Result<PlanCounts, RunError> {
        let mut counts = PlanCounts::default();
        for chunk in jobs.chunks(SNAPSHOT_CHUNK) {
            // Copies found missing are forgotten in the index before the chunk is
            // fetched, so that a job that then turns out to be gone is `lost`,
            // not sealed around an object that does not exist.
            let (records, missing) = self.snapshot(chunk).await?;
            let plan = crate::plan::plan(chunk, &records, ctx);
            let sealed = plan.newly_sealed.len() + plan.already_sealed;
            counts.tasks += (plan.items.len() + sealed) as u64;
            counts.sealed += sealed as u64;
            progress.skipped(sealed as u64);
            let mut updates = missing;
            updates.extend(
                plan.newly_sealed
                    .into_iter()
                    .map(|(job, task)| TaskUpdate::Sealed { job, task }),
            );
            self.record(updates).await?;
            for item in plan.items {
                if queue.send(item).await.is_err() {
                    return Ok(counts);
                }
            }
        }
        Ok(counts)
    }

    /// Fetches the planned tasks; then, while a round archives something and
    /// the pass budget (`[fetch] retry_rounds`) lasts, fetches again, after
    /// `backoff_max`, those that failed for a reason that may pass. Only a
    /// task's final outcome is recorded.
    async fn fetch_rounds(
        &self,
        planned: impl futures::Stream<Item = (PlanItem, u32)>,
        fetcher: &Fetcher,
        mut tally: Tally<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), RunError> {
        let hold = self.config.fetch.retry_rounds > 0;
        let (mut held, mut progressed) = self
            .fetch_round(planned, fetcher, hold, &mut tally, cancel)
            .await?;
        let mut round = 0;
        loop {
            if held.is_empty() {
                return Ok(());
            }
            let again = progressed
                && tokio::select! {
                    _ = cancel.cancelled() => false,
                    _ = tokio::time::sleep(self.config.fetch.backoff_max) => true,
                };
            if !again {
                let updates: Vec<TaskUpdate> =
                    held.into_iter().flat_map(|r| tally.account(r)).collect();
                self.record(updates).await?;
                return Ok(());
            }
            round += 1;
            tracing::info!(
                round,
                tasks = held.len(),
                "fetching again the tasks that failed (end of pass)"
            );
            fetcher.progress.retrying(held.len() as u64);
            let todo = held.into_iter().map(|r| (r.item, r.attempts));
            let hold = round < self.config.fetch.retry_rounds;
            (held, progressed) = self
                .fetch_round(
                    futures::stream::iter(todo),
                    fetcher,
                    hold,
                    &mut tally,
                    cancel,
                )
                .await?;
        }
    }

    /// One round over `todo` (each task with the attempts it already had).
    /// With `hold`, results that failed retryably are returned instead of
    /// recorded; also returns whether any task was archived or found unchanged.
    async fn fetch_round(
        &self,
        todo: impl futures::Stream<Item = (PlanItem, u32)>,
        fetcher: &Fetcher,
        hold: bool,
        tally: &mut Tally<'_>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<TaskResult>, bool), RunError> {
        let mut results = std::pin::pin!(
            todo.map(|(item, before)| {
                fetcher.fetch(item, cancel.clone()).map(move |mut r| {
                    r.attempts += before;
                    r
                })
            })
            // Beyond the download slots, room for logs waiting to be made durable.
            .buffer_unordered(self.config.fetch.concurrency + FINISHING)
            .ready_chunks(RECORD_BATCH)
        );
        let mut held = Vec::new();
        let mut progressed = false;
        // Results are recorded beside the downloads, not between them: while a
        // batch's manifests and rows are written, the next batch gathers
        // (`run/manifests.rs`), so a job's manifest is written about once per
        // batch of its results instead of once per result.
        let (queue, queued) = tokio::sync::mpsc::channel(RECORD_QUEUE);
        let produce = async {
            while let Some(batch) = results.next().await {
                let mut updates = Vec::with_capacity(batch.len());
                for result in batch {
                    match &result.outcome {
                        FetchOutcome::Failed(e) if hold && e.is_retryable() => {
                            // Its bytes were downloaded all the same.
                            tally.totals.downloaded += result.downloaded;
                            held.push(TaskResult {
                                downloaded: 0,
                                ..result
                            });
                            continue;
                        }
                        FetchOutcome::Archived { .. }
                        | FetchOutcome::Unchanged
                        | FetchOutcome::Confirmed => progressed = true,
                        FetchOutcome::Failed(_) => {}
                    }
                    updates.extend(tally.account(result));
                }
                if queue.send(updates).await.is_err() {
                    break; // the recorder stopped on an error
                }
            }
            drop(queue);
        };
        let ((), recorded) = tokio::join!(produce, self.record_queue(queued, cancel));
        recorded?;
        Ok((held, progressed))
    }

    /// Marks every known task of deleted jobs as gone (kept sealed if archived).
    async fn gone_jobs(
        &self,
        source: &Source,
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
                    source: source.name.clone(),
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
                        source: source.name.clone(),
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

    /// The index rows of the listed jobs' tasks, keyed for the planner, and
    /// the index updates that forget copies found missing.
    async fn snapshot(&self, jobs: &[Job]) -> Result<(Snapshot, Vec<TaskUpdate>), RunError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for chunk in jobs.chunks(SNAPSHOT_CHUNK) {
            let filter = QueryFilter {
                jobs: chunk.iter().map(|j| j.id.0.clone()).collect(),
                ..Default::default()
            };
            let rows = self.with_index(move |ix| ix.query(&filter)).await?;
            let rows: Vec<(TaskRecord, bool)> = futures::stream::iter(rows)
                .map(|row| self.forget_missing_copy(row))
                .buffer_unordered(MISSING_CHECKS)
                .collect()
                .await;
            for (row, was_missing) in rows {
                if was_missing {
                    missing.push(TaskUpdate::CopyLost {
                        job: JobId(row.job_id.clone()),
                        task: TaskId(row.task_id.clone()),
                        error: "the archived copy is missing; fetching the log again".to_owned(),
                    });
                }
                out.insert(
                    (JobId(row.job_id.clone()), TaskId(row.task_id.clone())),
                    row,
                );
            }
        }
        Ok((out, missing))
    }

    /// A row whose archived object has gone missing (deleted by hand, lost with a
    /// disk) is planned as if it had no copy, so the log is fetched again. Sealed
    /// rows are not checked here (that would cost a request per archived log on
    /// every pass); `verify` finds those. Also says whether the copy was missing.
    async fn forget_missing_copy(&self, mut row: TaskRecord) -> (TaskRecord, bool) {
        if !row.has_copy() || row.sealed {
            return (row, false);
        }
        let Some(key) = row.storage_key.as_deref().and_then(ArchiveKey::from_stored) else {
            return (row, false);
        };
        if let Err(StoreError::NotFound { .. }) = self.storage.head(&key).await {
            tracing::warn!(job = %row.job_id, task = %row.task_id, "archived copy is missing; fetching the log again");
            row.storage_key = None;
            row.sha256 = None;
            return (row, true);
        }
        (row, false)
    }
}

/// The jobs of one source in a pass.
struct Listing {
    /// Jobs to plan, by id.
    jobs: Vec<Job>,
    /// Jobs in scope whose every task is sealed, and how many tasks they have.
    sealed: Vec<JobId>,
    sealed_tasks: u64,
    /// Jobs the source says were deleted.
    gone: Vec<JobId>,
}

/// Tasks the planner counted: all it planned, and those sealed.
#[derive(Debug, Default)]
struct PlanCounts {
    tasks: u64,
    sealed: u64,
}

/// The planner's view of the index: rows by task.
type Snapshot = HashMap<(JobId, TaskId), TaskRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchError;
    use crate::model::{Compression, JobPhase, SourceValidators};
    use crate::plan::Action;

    /// GUARD: a write that replaced the old copy but could not be made durable
    /// (directory fsync or syncfs failed after the rename) leaves a row that no
    /// longer describes the old copy, so index and storage agree.
    #[test]
    fn replaced_but_not_durable_copy_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let (job, task) = (JobId::from("j"), TaskId::from("worker-0"));
        ix.record_jobs(
            &[Job {
                id: job.clone(),
                name: "n".into(),
                phase: JobPhase::Running,
                created_at_ms: 1,
                ended_at_ms: None,
                tasks: vec![task.clone()],
                record: None,
            }],
            1,
        )
        .unwrap();
        ix.record_updates(&[TaskUpdate::Archived {
            job: job.clone(),
            task: task.clone(),
            job_phase: JobPhase::Running,
            size: 3,
            sha256: "old".into(),
            storage_key: "p/j/worker-0.log".into(),
            location: "archive/p/j/worker-0.log".into(),
            stored_size: 3,
            stored_sha256: "old".into(),
            compression: Compression::None,
            growth: String::new(),
            unconfirmed: false,
            validators: SourceValidators::default(),
            at_ms: 2,
            sealed: false,
        }])
        .unwrap();
        assert!(ix.task("j", "worker-0").unwrap().unwrap().has_copy());

        let error = StoreError::NotDurable {
            path: dir.path().to_owned(),
            source: std::io::Error::other("injected"),
        };
        let result = TaskResult {
            item: PlanItem {
                job: job.clone(),
                job_name: "n".into(),
                job_phase: JobPhase::Running,
                job_ended_at_ms: None,
                task: task.clone(),
                key: ArchiveKey::from_stored("p/j/worker-0.log").unwrap(),
                action: Action::Fetch,
                base: None,
                unconfirmed: false,
                archived: None,
            },
            outcome: FetchOutcome::Failed(FetchError::Store(error)),
            attempts: 1,
            at_ms: 3,
            downloaded: 0,
        };
        let (mut totals, mut failures) = (RunTotals::default(), Vec::new());
        let mut tally = Tally {
            source: "default",
            grace_ms: 0,
            totals: &mut totals,
            failures: &mut failures,
        };
        let updates = tally.account(result);
        ix.record_updates(&updates).unwrap();
        let row = ix.task("j", "worker-0").unwrap().unwrap();
        assert!(!row.has_copy(), "{row:?}");
        assert_eq!(row.state, TaskState::Failed.as_str());
        assert_eq!(totals.failed, 1);
    }
}
