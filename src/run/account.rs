//! How a pass counts each task's final result and turns it into its index
//! update: the one place where an outcome becomes a state, a failure line, a
//! seal (through [`crate::seal`], via [`PlanItem::seals_at`]), a kept version's
//! row and totals.

use super::Failure;
use crate::fetch::{FetchError, FetchOutcome, TaskResult};
use crate::index::{RunTotals, TaskUpdate, VersionRecord};
use crate::model::{SourceValidators, TaskState};
use crate::plan::{Action, PlanItem};
use crate::source::SourceError;
use crate::storage::StoredObject;

/// Where a pass counts its outcomes.
pub(super) struct Tally<'a> {
    /// The source whose tasks these are (named in failures).
    pub(super) source: &'a str,
    pub(super) grace_ms: i64,
    pub(super) totals: &'a mut RunTotals,
    pub(super) failures: &'a mut Vec<Failure>,
}

impl Tally<'_> {
    /// Counts one task's final result and returns its index updates.
    pub(super) fn account(&mut self, result: TaskResult) -> Vec<TaskUpdate> {
        // The new bytes replaced the old copy but may not survive a crash: the
        // row must no longer describe the old copy (nor claim the new one).
        let copy_lost = match &result.outcome {
            FetchOutcome::Failed(FetchError::Store(e)) if e.replaced_copy() => {
                Some(TaskUpdate::CopyLost {
                    job: result.item.job.clone(),
                    task: result.item.task.clone(),
                    error: e.to_string(),
                })
            }
            _ => None,
        };
        let kept = kept_version(&result, self.totals);
        let update = account(
            result,
            self.source,
            self.grace_ms,
            self.totals,
            self.failures,
        );
        copy_lost.into_iter().chain(kept).chain([update]).collect()
    }
}

/// A rewritten log's old copy, kept as a version: its index row (written in
/// the same transaction as the new copy's), counted and logged.
fn kept_version(result: &TaskResult, totals: &mut RunTotals) -> Option<TaskUpdate> {
    let FetchOutcome::Archived {
        object,
        kept: Some(kept),
        ..
    } = &result.outcome
    else {
        return None;
    };
    let (item, copy, version) = (&result.item, &kept.copy, &kept.version);
    let reason = if object.size < copy.size {
        "truncated"
    } else {
        "rewritten"
    };
    totals.rewritten += 1;
    crate::telemetry::record_rewritten();
    tracing::warn!(job = %item.job, task = %item.task, version = version.n, reason,
        archived_size = copy.size, new_size = object.size, key = %version.key,
        "the log was {reason}: its start differs from the archived copy, which is kept as version {}",
        version.n);
    Some(TaskUpdate::VersionKept(VersionRecord {
        job_id: item.job.0.clone(),
        job_name: String::new(),
        task_id: item.task.0.to_string(),
        version: version.n,
        reason: reason.to_owned(),
        size: copy.size,
        sha256: copy.sha256.clone(),
        storage_key: version.key.as_str().to_owned(),
        location: version.location.clone(),
        compression: copy.compression,
        stored_size: copy.stored_size,
        stored_sha256: copy.stored_sha256.clone(),
        archived_at: None,
        replaced_at: String::new(),
        archived_at_ms: copy.fetched_at_ms,
        replaced_at_ms: result.at_ms,
    }))
}

/// Turns one task's result into its index update, and counts it.
fn account(
    result: TaskResult,
    source: &str,
    grace_ms: i64,
    totals: &mut RunTotals,
    failures: &mut Vec<Failure>,
) -> TaskUpdate {
    let TaskResult {
        item,
        outcome,
        attempts,
        at_ms,
        downloaded,
    } = result;
    totals.downloaded += downloaded;
    let job_phase = item.job_phase.clone();
    match outcome {
        FetchOutcome::Archived {
            object,
            validators,
            extended,
            confirmed,
            kept: _,
        } => {
            let archived = Archived {
                object,
                validators,
                extended,
                confirmed,
            };
            account_archived(item, archived, at_ms, grace_ms, downloaded, totals)
        }
        FetchOutcome::Confirmed => {
            totals.unchanged += 1;
            totals.confirmed += 1;
            tracing::info!(job = %item.job, task = %item.task, "final check: the copy built from deltas equals the log");
            TaskUpdate::Confirmed {
                sealed: item.seals_at(at_ms, grace_ms),
                job: item.job,
                task: item.task,
                job_phase,
                at_ms,
            }
        }
        FetchOutcome::Unchanged => {
            totals.unchanged += 1;
            TaskUpdate::Unchanged {
                sealed: !item.unconfirmed && item.seals_at(at_ms, grace_ms),
                job: item.job,
                task: item.task,
                job_phase,
                at_ms,
            }
        }
        FetchOutcome::Failed(error) => {
            let failure = Failure {
                source: source.to_owned(),
                job_id: item.job.0.clone(),
                task_id: Some(item.task.0.to_string()),
                state: TaskState::Failed.as_str(),
                error: error.to_string(),
            };
            account_failure(item, error, failure, attempts, at_ms, totals, failures)
        }
    }
}

/// A task not archived this pass: gone for good (its copy, if any, is kept
/// and sealed), not ready yet, or failed; `failure` is its report line.
fn account_failure(
    item: PlanItem,
    error: FetchError,
    mut failure: Failure,
    attempts: u32,
    at_ms: i64,
    totals: &mut RunTotals,
    failures: &mut Vec<Failure>,
) -> TaskUpdate {
    let gone = matches!(
        error,
        FetchError::Source(SourceError::LogGone { .. } | SourceError::JobNotFound { .. })
    );
    if gone {
        if !matches!(item.action, Action::Fetch) {
            totals.sealed += 1;
        } else {
            totals.lost += 1;
            failure.state = TaskState::Lost.as_str();
            failures.push(failure);
        }
        return TaskUpdate::Gone {
            job: item.job,
            task: item.task,
            error: error.to_string(),
            at_ms,
        };
    }
    let state = if matches!(error, FetchError::Source(SourceError::LogNotReady { .. })) {
        totals.not_ready += 1;
        TaskState::NotReady
    } else {
        totals.failed += 1;
        TaskState::Failed
    };
    tracing::warn!(job = %item.job, task = %item.task, attempts, error = %error, "task not archived");
    failure.state = state.as_str();
    failures.push(failure);
    TaskUpdate::Failed {
        job: item.job,
        task: item.task,
        job_phase: item.job_phase,
        state,
        error: error.to_string(),
        attempts,
        at_ms,
    }
}

/// What a task's new copy is, as the fetch layer reported it.
struct Archived {
    object: StoredObject,
    validators: SourceValidators,
    extended: bool,
    confirmed: Option<bool>,
}

/// A new copy of the task's log: counted, and its row (sealed when final).
fn account_archived(
    item: PlanItem,
    archived: Archived,
    at_ms: i64,
    grace_ms: i64,
    downloaded: u64,
    totals: &mut RunTotals,
) -> TaskUpdate {
    let Archived {
        object,
        validators,
        extended,
        confirmed,
    } = archived;
    let job_phase = item.job_phase.clone();
    totals.fetched += 1;
    totals.bytes += object.size;
    totals.grown += u64::from(extended);
    if let Some(right) = confirmed {
        totals.confirmed += 1;
        totals.replaced += u64::from(!right);
    }
    tracing::info!(job = %item.job, task = %item.task, bytes = object.size, downloaded, extended, "archived");
    TaskUpdate::Archived {
        // A copy built from a delta is sealed only once a full
        // download has confirmed it.
        sealed: !extended && item.seals_at(at_ms, grace_ms),
        job: item.job,
        task: item.task,
        job_phase,
        size: object.size,
        sha256: object.sha256,
        storage_key: object.key.as_str().to_owned(),
        location: object.location,
        stored_size: object.stored_size,
        stored_sha256: object.stored_sha256,
        compression: object.compression,
        growth: object.growth.encode(),
        unconfirmed: extended,
        validators,
        at_ms,
    }
}
