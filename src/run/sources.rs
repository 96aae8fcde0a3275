//! The sources of a pass: one API client per configured source, which of them
//! a pass covers, listing each one's jobs, and folding their results into the
//! pass's one report.
//!
//! Each source has its own [`ModelArtsClient`], so its rate cap, throttle
//! pause, breaker and authentication state are its own: bad keys or an outage
//! in one source fail that source's tasks only. The sources of a pass run at
//! the same time, each with its own download slots, and share the index (one
//! writer), the storage and the pass's `runs` row.

use super::{Archiver, Failure, Listing, RecordSpill, RunError, RunScope};
use crate::config::{Config, JobsConfig};
use crate::index::{RunTotals, SourceOwner};
use crate::model::{Job, JobId, TaskState};
use crate::plan::PlanPreview;
use crate::progress::Progress;
use crate::source::client::CredentialsError;
use crate::source::{Credentials, JobFilter, ModelArtsClient, SourceError};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("no configured source is named {name:?} (configured: {known})")]
    Unknown { name: String, known: String },
    #[error(
        "jobs named by id need their source: the config has several, so pass --source NAME once"
    )]
    AmbiguousJobs,
    #[error("{given} credentials for {configured} configured sources")]
    Credentials { given: usize, configured: usize },
}

/// What every source's part of one pass shares.
#[derive(Clone, Copy)]
pub(super) struct PassOf<'a> {
    pub(super) scope: &'a RunScope,
    /// When the pass started.
    pub(super) now_ms: i64,
    /// One bar for all sources.
    pub(super) progress: &'a Progress,
}

/// One configured source, as a pass uses it.
pub(super) struct Source {
    pub(super) name: String,
    /// Empty when the source has no region (then the layout cannot use it).
    pub(super) region: String,
    pub(super) client: ModelArtsClient,
    pub(super) jobs: JobsConfig,
}

/// Reads the secrets of every configured source, in the config's order, from
/// files, `$CREDENTIALS_DIRECTORY` or the environment.
pub fn resolve_credentials(config: &Config) -> Result<Vec<Credentials>, CredentialsError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    resolve_credentials_in(config, dir.as_deref())
}

/// [`resolve_credentials`] with an explicit credentials directory (for tests).
pub fn resolve_credentials_in(
    config: &Config,
    credentials_dir: Option<&std::path::Path>,
) -> Result<Vec<Credentials>, CredentialsError> {
    config
        .sources
        .iter()
        .map(|s| Credentials::resolve_in(&s.modelarts, credentials_dir))
        .collect()
}

impl Source {
    /// A client per source, all sharing one HTTP connection pool.
    pub(super) fn open_all(
        config: &Config,
        credentials: Vec<Credentials>,
        http: &reqwest::Client,
    ) -> Result<Vec<Source>, SourcesError> {
        if credentials.len() != config.sources.len() {
            return Err(SourcesError::Credentials {
                given: credentials.len(),
                configured: config.sources.len(),
            });
        }
        Ok(config
            .sources
            .iter()
            .zip(credentials)
            .map(|(s, credentials)| Source {
                name: s.name().to_owned(),
                region: s.modelarts.region.clone().unwrap_or_default(),
                client: ModelArtsClient::new(&s.modelarts, credentials, http.clone())
                    .with_redaction(crate::source::Redaction {
                        keep_environment: s.jobs.keep_environment,
                    }),
                jobs: s.jobs.clone(),
            })
            .collect())
    }
}

/// One source as `/healthz` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceHealth {
    pub name: String,
    pub endpoint: String,
    pub project_id: String,
    /// `ok`, or why its calls fail at once or wait (from the current or last pass).
    pub condition: String,
}

impl Archiver {
    /// Each configured source and what its last answers said about it.
    pub fn source_health(&self) -> Vec<SourceHealth> {
        self.config
            .sources
            .iter()
            .zip(&self.sources)
            .map(|(config, source)| SourceHealth {
                name: source.name.clone(),
                endpoint: config.modelarts.endpoint.to_string(),
                project_id: config.modelarts.project_id.clone(),
                condition: source.client.condition(),
            })
            .collect()
    }

    /// The sources `scope` covers: those it names, else all.
    pub(super) fn select(&self, scope: &RunScope) -> Result<Vec<&Source>, SourcesError> {
        let selected: Vec<&Source> = if scope.sources.is_empty() {
            self.sources.iter().collect()
        } else {
            let mut out = Vec::new();
            for name in &scope.sources {
                let source = self
                    .sources
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| SourcesError::Unknown {
                        name: name.clone(),
                        known: self
                            .sources
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                if !out.iter().any(|s: &&Source| s.name == source.name) {
                    out.push(source);
                }
            }
            out
        };
        if !scope.jobs.is_empty() && selected.len() > 1 {
            return Err(SourcesError::AmbiguousJobs);
        }
        Ok(selected)
    }

    /// Runs the pass of every selected source at once and keeps what each
    /// did. A source's task failures are data; the first run-level error
    /// (index or storage unusable) is the pass's.
    pub(super) async fn passes(
        &self,
        selected: &[&Source],
        scope: &RunScope,
        now_ms: i64,
        totals: &mut BTreeMap<String, RunTotals>,
        failures: &mut Vec<Failure>,
        cancel: &CancellationToken,
    ) -> Result<Option<PlanPreview>, RunError> {
        let progress = if scope.progress {
            Progress::for_terminal(0)
        } else {
            Progress::hidden()
        };
        let pass = PassOf {
            scope,
            now_ms,
            progress: &progress,
        };
        let runs = selected.iter().map(|source| async move {
            let mut totals = RunTotals::default();
            let mut failures = Vec::new();
            let result = self
                .pass(source, pass, &mut totals, &mut failures, cancel)
                .await;
            (source.name.clone(), result, totals, failures)
        });
        let results = futures::future::join_all(runs).await;
        progress.finish();
        let mut preview: Option<PlanPreview> = None;
        let mut error = None;
        for (name, result, source_totals, source_failures) in results {
            totals.insert(name, source_totals);
            failures.extend(source_failures);
            match result {
                Ok(Some(p)) => {
                    preview = Some(match preview {
                        Some(before) => before.merge(p),
                        None => p,
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(preview),
        }
    }

    /// Lists the selected jobs of one source. Jobs that failed to list become
    /// failures; so do jobs another source recorded (see
    /// [`crate::index::Index::foreign_jobs`]). With `spill`, each job's record
    /// is set aside there as soon as it is read.
    pub(super) async fn list_jobs(
        &self,
        source: &Source,
        scope: &RunScope,
        now_ms: i64,
        spill: Option<&Mutex<RecordSpill>>,
        failures: &mut Vec<Failure>,
    ) -> Result<Listing, RunError> {
        let lock = || spill.map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        let keep = |job: Job| match lock() {
            Some(mut spill) => spill.keep(job),
            None => job,
        };
        let sealed = self.with_index(|ix| ix.sealed_jobs()).await?;
        let explicit: Vec<JobId> = if scope.jobs.is_empty() {
            source.jobs.ids.iter().map(|id| JobId(id.clone())).collect()
        } else {
            scope.jobs.clone()
        };
        let mut jobs = Vec::new();
        if scope.jobs.is_empty() && source.jobs.discover {
            match self.search_jobs(source, now_ms, &keep).await {
                Ok(found) => jobs = found,
                Err(e) => failures.push(listing_failure(source, String::new(), e)),
            }
        }

        // A job listed twice (pages that shifted while the search read them)
        // counts once. Sorted rather than tracked in a set: a set of every
        // listed id is memory a large first pass cannot spare.
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        jobs.dedup_by(|a, b| a.id == b.id);
        let listed = |id: &JobId| jobs.binary_search_by(|j| j.id.cmp(id)).is_ok();
        let mut explicit_seen = HashSet::new();
        // Explicit jobs whose every task is sealed need no details call.
        let (skipped, wanted): (Vec<JobId>, Vec<JobId>) = explicit
            .into_iter()
            .filter(|id| !listed(id) && explicit_seen.insert(id.clone()))
            .partition(|id| sealed.contains_key(id));
        let gone = self
            .job_details(source, wanted, &keep, &mut jobs, failures)
            .await;
        let jobs = self.drop_foreign(source, jobs, failures).await?;
        // Sealed jobs (found by the search, or explicit and skipped above) need
        // nothing but counting: no index rows loaded, no planning.
        let (found_sealed, mut jobs): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| sealed.contains_key(&j.id));
        jobs.shrink_to_fit();
        // Their records are not archived again.
        if let Some(mut spill) = lock() {
            for job in &found_sealed {
                spill.forget(&job.id);
            }
        }
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

    /// The jobs the source's search finds with the configured filters, each
    /// passed through `keep` as it is read.
    async fn search_jobs(
        &self,
        source: &Source,
        now_ms: i64,
        keep: &(dyn Fn(Job) -> Job + Sync),
    ) -> Result<Vec<Job>, SourceError> {
        let selection = &source.jobs;
        let filter = JobFilter {
            phases: selection.phases.clone(),
            name_pattern: selection.name_pattern.clone(),
            created_after_ms: selection.created_after.map(|c| c.bound_ms(now_ms)),
        };
        self.backoff()
            .retry(|| source.client.search_jobs_with(&filter, keep))
            .await
            .0
    }

    /// Reads the details of the `wanted` jobs (as many at a time as
    /// downloads) into `jobs`, each passed through `keep`. Returns the jobs
    /// the source no longer has; any other error is a failure.
    async fn job_details(
        &self,
        source: &Source,
        wanted: Vec<JobId>,
        keep: &(dyn Fn(Job) -> Job + Sync),
        jobs: &mut Vec<Job>,
        failures: &mut Vec<Failure>,
    ) -> Vec<JobId> {
        let mut details = futures::stream::iter(wanted)
            .map(|id| async move {
                let result = self.backoff().retry(|| source.client.job(&id)).await.0;
                (id, result)
            })
            .buffer_unordered(self.config.fetch.concurrency);
        let mut gone = Vec::new();
        while let Some((id, result)) = details.next().await {
            match result {
                Ok(job) => jobs.push(keep(job)),
                Err(SourceError::JobNotFound { .. }) => gone.push(id),
                Err(e) => failures.push(listing_failure(source, id.0, e)),
            }
        }
        gone
    }

    /// Keeps the jobs no other source recorded; each other one is a failure
    /// that names both sources.
    async fn drop_foreign(
        &self,
        source: &Source,
        jobs: Vec<Job>,
        failures: &mut Vec<Failure>,
    ) -> Result<Vec<Job>, RunError> {
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
        let name = source.name.clone();
        let foreign = self
            .with_index(move |ix| ix.foreign_jobs(&name, &ids))
            .await?;
        Ok(without_foreign(source, jobs, foreign, failures))
    }
}

/// A job (or, with no id, the search) that could not be listed.
fn listing_failure(source: &Source, job_id: String, error: SourceError) -> Failure {
    Failure {
        source: source.name.clone(),
        job_id,
        task_id: None,
        state: TaskState::Failed.as_str(),
        error: error.to_string(),
    }
}

/// `jobs` but those another source owns; each of those is a failure that
/// names both sources.
pub(super) fn without_foreign(
    source: &Source,
    jobs: Vec<Job>,
    foreign: Vec<SourceOwner>,
    failures: &mut Vec<Failure>,
) -> Vec<Job> {
    if foreign.is_empty() {
        return jobs;
    }
    for SourceOwner { job, source: owner } in &foreign {
        failures.push(Failure {
            source: source.name.clone(),
            job_id: job.0.clone(),
            task_id: None,
            state: TaskState::Failed.as_str(),
            error: format!(
                "job {job}: already archived from source {owner:?}; is one project configured as two sources?"
            ),
        });
    }
    let foreign: HashSet<JobId> = foreign.into_iter().map(|f| f.job).collect();
    jobs.into_iter()
        .filter(|j| !foreign.contains(&j.id))
        .collect()
}
