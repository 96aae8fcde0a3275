//! The write order of a pass's results: objects durable (storage did that
//! before a result arrives here) → the changed jobs' manifests durable → the
//! index rows. One manifest write per job per batch, never one per log.
//!
//! A manifest holds everything the index knows about the job's archived
//! copies, so it is built from the job's rows as they will be once the batch
//! is applied ([`Index::states_after`]). A manifest that cannot be written is
//! a warning, not a failed pass: the index is still right, and `index
//! rebuild` adopts an object no manifest names after hashing it.

use super::{Archiver, RunError};
use crate::index::{JobState, TaskRecord, TaskUpdate, VersionRecord};
use crate::model::JobId;
use crate::storage::KeyParts;
use crate::storage::manifest::{
    Manifest, ManifestJob, ManifestTask, ManifestVersion, manifest_key,
};
use futures::StreamExt;
use std::collections::BTreeSet;

/// Queued batches merged into one write of manifests and rows.
const MERGED_BATCHES: usize = 16;
/// Manifests written at the same time.
const MANIFEST_WRITES: usize = 32;

/// The test hook of the crash tests (docs/RELIABILITY.md): `MALOG_CRASH_AT`
/// set to `manifest` aborts the process once a batch's objects are durable
/// and before its manifests are written; `index`, once the manifests are
/// durable and before the index rows are committed.
const CRASH_AT: &str = "MALOG_CRASH_AT";

fn crash_point(point: &str) {
    if std::env::var(CRASH_AT).is_ok_and(|v| v == point) {
        eprintln!("{CRASH_AT}={point}: aborting as asked");
        std::process::abort();
    }
}

impl Archiver {
    /// Records the queued batches in order, merging those that queued up
    /// while the previous ones were written. On an error it cancels the
    /// pass (no new downloads start) and stops.
    pub(super) async fn record_queue(
        &self,
        mut queued: tokio::sync::mpsc::Receiver<Vec<TaskUpdate>>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), RunError> {
        let mut batches = Vec::new();
        while queued.recv_many(&mut batches, MERGED_BATCHES).await > 0 {
            let updates: Vec<TaskUpdate> = batches.drain(..).flatten().collect();
            if let Err(e) = self.record(updates).await {
                // The index is unusable: stop starting downloads, report the run as failed.
                cancel.cancel();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Records a batch of task updates: first the manifests of the jobs whose
    /// archived copies the batch changes, then the index rows in one transaction.
    pub(super) async fn record(&self, updates: Vec<TaskUpdate>) -> Result<(), RunError> {
        let jobs = touched_jobs(&updates);
        if jobs.is_empty() {
            return self.with_index(move |ix| ix.record_updates(&updates)).await;
        }
        let (states, updates) = self
            .with_index(move |ix| {
                let states = ix.states_after(&updates, &jobs)?;
                Ok((states, updates))
            })
            .await?;
        crash_point("manifest");
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut writes = futures::stream::iter(states)
            .map(|state| async move {
                // A job belongs to a configured source (a pass records only
                // its own sources' jobs); an unknown one keeps an empty project.
                let source = self.sources.iter().find(|s| s.name == state.job.source);
                let (region, project_id) =
                    source.map_or(("", ""), |s| (s.region.as_str(), s.client.project_id()));
                let manifest = manifest_of(&state, region, project_id, now_ms);
                let key = manifest_key(
                    &self.config.storage.layout,
                    KeyParts {
                        source: &state.job.source,
                        region,
                        project_id,
                        job_id: &state.job.job_id,
                        job_name: &state.job.name,
                        task_id: "",
                    },
                );
                (
                    state.job.job_id,
                    self.storage.put_manifest(&key, &manifest).await,
                )
            })
            .buffer_unordered(MANIFEST_WRITES);
        while let Some((job, written)) = writes.next().await {
            if let Err(e) = written {
                tracing::warn!(job = %job, error = %e, "cannot write the job's manifest; `index rebuild` would adopt its newest objects after hashing them");
            }
        }
        crash_point("index");
        self.with_index(move |ix| ix.record_updates(&updates)).await
    }
}

/// Jobs whose manifest the updates change: a copy made, confirmed, sealed or
/// lost. An unchanged, unsealed copy or a failed attempt changes nothing a
/// manifest holds (the copy stays described).
fn touched_jobs(updates: &[TaskUpdate]) -> Vec<JobId> {
    let jobs: BTreeSet<&JobId> = updates
        .iter()
        .filter_map(|u| match u {
            TaskUpdate::Archived { job, .. }
            | TaskUpdate::Confirmed { job, .. }
            | TaskUpdate::Unchanged {
                job, sealed: true, ..
            }
            | TaskUpdate::Sealed { job, .. }
            | TaskUpdate::CopyLost { job, .. }
            | TaskUpdate::Gone { job, .. } => Some(job),
            // A kept version comes with the new copy's `Archived` of the same task.
            TaskUpdate::Unchanged { .. }
            | TaskUpdate::Failed { .. }
            | TaskUpdate::VersionKept(_) => None,
        })
        .collect();
    jobs.into_iter().cloned().collect()
}

/// The manifest of a job in the state the index is about to record.
pub(crate) fn manifest_of(
    state: &JobState,
    region: &str,
    project_id: &str,
    now_ms: i64,
) -> Manifest {
    let job = &state.job;
    Manifest::new(
        now_ms,
        ManifestJob {
            id: job.job_id.clone(),
            name: job.name.clone(),
            source: job.source.clone(),
            region: region.to_owned(),
            project_id: project_id.to_owned(),
            phase: job.phase.as_str().to_owned(),
            created_at_ms: job.created_at_ms,
            ended_at_ms: job.ended_at_ms,
            task_ids: state.tasks.iter().map(|t| t.task_id.clone()).collect(),
        },
        state
            .tasks
            .iter()
            .filter_map(|row| manifest_task(row, &state.versions))
            .collect(),
    )
}

fn manifest_task(row: &TaskRecord, versions: &[VersionRecord]) -> Option<ManifestTask> {
    if !row.has_copy() {
        return None;
    }
    let size = row.size?;
    let sha256 = row.sha256.clone()?;
    Some(ManifestTask {
        task_id: row.task_id.clone(),
        key: row.storage_key.clone()?,
        compression: row.compression.as_str().to_owned(),
        stored_size: row.stored_size.unwrap_or(size),
        stored_sha256: row.stored_sha256.clone().unwrap_or_else(|| sha256.clone()),
        size,
        sha256,
        etag: row.validators.etag.clone(),
        last_modified: row.validators.last_modified.clone(),
        source_length: row.validators.length,
        fetched_at_ms: row.fetched_at_ms,
        checked_at_ms: row.checked_at_ms,
        job_phase: row.job_phase.as_ref().map(|p| p.as_str().to_owned()),
        sealed: row.sealed,
        unconfirmed: row.unconfirmed,
        growth: row.growth.clone(),
        versions: versions
            .iter()
            .filter(|v| v.task_id == row.task_id)
            .map(manifest_version)
            .collect(),
    })
}

fn manifest_version(v: &VersionRecord) -> ManifestVersion {
    ManifestVersion {
        n: v.version,
        key: v.storage_key.clone(),
        compression: v.compression.as_str().to_owned(),
        reason: v.reason.clone(),
        size: v.size,
        sha256: v.sha256.clone(),
        stored_size: v.stored_size.unwrap_or(v.size),
        stored_sha256: v.stored_sha256.clone().unwrap_or_else(|| v.sha256.clone()),
        archived_at_ms: v.archived_at_ms,
        replaced_at_ms: v.replaced_at_ms,
    }
}
