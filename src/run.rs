//! One archive pass: source → plan → fetch → storage → index.
//!
//! [`Archiver::run_once`] is shared by `backfill`, `demo` and the daemon; they
//! differ only in scope and trigger. A task's failure is data (a row with its
//! error); only run-level failures (index or storage unusable) end a run early.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::index::{Index, IndexError, QueryFilter, RunTotals, TaskRecord, TaskUpdate, WriterLock};
use crate::model::{Job, JobId, TaskId, TaskState};
use crate::plan::{PlanContext, PlanPreview};
use crate::source::Credentials;
use crate::source::client::CredentialsError;
use crate::storage::{ArchiveKey, Storage, StoreError};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

mod account;
mod appends;
mod manifests;
pub mod rebuild;
mod records;
mod sources;
mod spill;
mod stream;

use account::Tally;
use sources::{PassOf, Source, without_foreign};
pub use sources::{SourceHealth, SourcesError, resolve_credentials, resolve_credentials_in};
use spill::RecordSpill;

/// Parallel existence checks of archived objects when loading the snapshot.
const MISSING_CHECKS: usize = 16;
/// Jobs planned at a time (their index rows are one query).
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
    pub sources: BTreeMap<String, RunTotals>,
    pub failures: Vec<Failure>,
    /// What a dry run would do.
    #[serde(skip)]
    pub preview: Option<PlanPreview>,
}

impl RunReport {
    /// The report of a pass that started at `started`; its totals are the
    /// sum of its sources'.
    fn new(
        run_id: Option<i64>,
        started: Instant,
        sources: BTreeMap<String, RunTotals>,
        failures: Vec<Failure>,
        preview: Option<PlanPreview>,
    ) -> RunReport {
        let mut totals = RunTotals::default();
        for part in sources.values() {
            totals.add(part);
        }
        RunReport {
            run_id,
            totals,
            seconds: started.elapsed().as_secs_f64(),
            sources,
            failures,
            preview,
        }
    }

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
        let _locks = self.lock_writers(scope).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let run_id = if scope.dry_run {
            None
        } else {
            Some(self.with_index(move |ix| ix.begin_run(now_ms)).await?)
        };
        let mut sources = BTreeMap::new();
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
        let (preview, run_error) = match result {
            Ok(preview) => (preview, None),
            Err(e) => (None, Some(e)),
        };
        if !scope.dry_run {
            self.settle_pass_appends().await;
        }
        let report = RunReport::new(run_id, started, sources, failures, preview);
        if let Some(id) = run_id {
            self.finish_run(id, &report, run_error.as_ref()).await?;
        }
        match run_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// One writer at a time: a daemon pass and a manual backfill never
    /// interleave, on the same index nor on the same archive folder (another
    /// index's pass would sweep this one's staging files). The locks are held
    /// until the returned value is dropped; a dry run writes nothing and takes
    /// none.
    async fn lock_writers(&self, scope: &RunScope) -> Result<Option<WriterLocks>, RunError> {
        if scope.dry_run {
            return Ok(None);
        }
        let index_lock = self.with_index(|ix| ix.lock_writer()).await?;
        let locks = (index_lock, self.storage.lock_writer()?);
        // Only the lock holder may clear leftovers: another process's staging
        // files would be in use.
        let swept = self.storage.sweep_staging().await?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed staging files (or stale multipart uploads) of interrupted downloads"
            );
        }
        self.roll_back_appends().await?;
        Ok(Some(locks))
    }

    /// The pass's appends in place are committed or failed by now: their
    /// intents go (and a failed one's bytes), so the staging folder is left
    /// empty. The next pass would do it otherwise.
    async fn settle_pass_appends(&self) {
        if let Err(e) = self.roll_back_appends().await {
            tracing::warn!(error = %e, "cannot settle this pass's appends in place; the next pass will");
        }
    }

    /// Finishes the pass's `runs` row with its outcome and totals. The pass's
    /// own error says more than a failure to record it: that failure is
    /// returned only when the pass had none.
    async fn finish_run(
        &self,
        id: i64,
        report: &RunReport,
        run_error: Option<&RunError>,
    ) -> Result<(), RunError> {
        let ended_ms = chrono::Utc::now().timestamp_millis();
        let outcome = if run_error.is_some() {
            "failed"
        } else {
            report.outcome()
        };
        let message = run_error.map(|e| e.to_string());
        let totals = report.totals.clone();
        let finished = self
            .with_index(move |ix| ix.finish_run(id, ended_ms, outcome, &totals, message.as_deref()))
            .await;
        match run_error {
            Some(_) => Ok(()),
            None => finished,
        }
    }

    /// The work of one source in a pass between its `runs` row's start and
    /// finish, in the order of the README's "What happens in a pass": list the
    /// jobs (source), record them, plan, fetch and store their logs and record
    /// each outcome (index), then archive what the source says about the jobs.
    /// A dry run stops after planning and returns what it would do.
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
        let listing = self
            .list_jobs(source, scope, now_ms, spill.as_ref(), failures)
            .await?;
        listing.count(totals);
        let ctx = self.plan_context(source, now_ms);
        if scope.dry_run {
            return Ok(Some(self.preview(listing.jobs, &ctx, totals).await?));
        }
        let (jobs, gone) = self
            .record_listing(source, listing, now_ms, totals, failures)
            .await?;
        let tally = Tally {
            source: &source.name,
            grace_ms: ctx.seal_grace_ms,
            totals,
            failures,
        };
        let counts = self
            .plan_and_fetch(source, &jobs, &ctx, progress, tally, cancel)
            .await?;
        totals.tasks += counts.tasks;
        totals.sealed += counts.sealed;
        // Logs first (ModelArts deletes them); then what it says about the jobs.
        if !cancel.is_cancelled() {
            let spill = spill.map(|s| s.into_inner().unwrap_or_else(PoisonError::into_inner));
            self.archive_records(source, jobs, spill, gone, now_ms, cancel)
                .await?;
        }
        Ok(None)
    }

    /// What the planner needs to know of one source's pass.
    fn plan_context<'a>(&'a self, source: &'a Source, now_ms: i64) -> PlanContext<'a> {
        PlanContext {
            source: &source.name,
            region: &source.region,
            project_id: source.client.project_id(),
            layout: &self.config.storage.layout,
            now_ms,
            seal_grace_ms: self.config.fetch.seal_grace.as_millis() as i64,
        }
    }

    /// What a dry run would do with the listed jobs, counted in `totals`.
    async fn preview(
        &self,
        jobs: Vec<Job>,
        ctx: &PlanContext<'_>,
        totals: &mut RunTotals,
    ) -> Result<PlanPreview, RunError> {
        let (records, _) = self.snapshot(&jobs).await?;
        let preview = PlanPreview::new(jobs, records, ctx);
        totals.tasks += (preview.items + preview.sealed) as u64;
        totals.sealed += preview.sealed as u64;
        Ok(preview)
    }

    /// Records the listed jobs in the index as this source's, touches the
    /// sealed ones and marks the deleted ones gone. Returns the jobs this
    /// source may archive (not those another source took first) and the ids
    /// of the deleted ones.
    async fn record_listing(
        &self,
        source: &Source,
        listing: Listing,
        now_ms: i64,
        totals: &mut RunTotals,
        failures: &mut Vec<Failure>,
    ) -> Result<(Vec<Job>, Vec<JobId>), RunError> {
        let Listing {
            jobs, sealed, gone, ..
        } = listing;
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
        let updates = self
            .gone_jobs(source, gone.clone(), now_ms, totals, failures)
            .await?;
        self.record(updates).await?;
        Ok((jobs, gone))
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
                    task: TaskId(row.task_id.into()),
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
                        task: TaskId(row.task_id.as_str().into()),
                        error: "the archived copy is missing; fetching the log again".to_owned(),
                    });
                }
                out.insert(
                    (
                        JobId(row.job_id.clone()),
                        TaskId(row.task_id.as_str().into()),
                    ),
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

impl Listing {
    /// Counts the listed jobs, and the tasks of the sealed ones (which are
    /// not planned).
    fn count(&self, totals: &mut RunTotals) {
        totals.jobs = (self.jobs.len() + self.sealed.len()) as u64;
        totals.tasks += self.sealed_tasks;
        totals.sealed += self.sealed_tasks;
    }
}

/// The index's and the archive folder's writer locks, held for a pass.
type WriterLocks = (WriterLock, Option<std::fs::File>);

/// The planner's view of the index: rows by task.
type Snapshot = HashMap<(JobId, TaskId), TaskRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::{FetchError, FetchOutcome, TaskResult};
    use crate::model::{Compression, JobPhase, SourceValidators};
    use crate::plan::{Action, PlanItem};

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
