//! The part of a pass that archives what ModelArts says about each job: its
//! record (`job.json`), its events (`events.json`, re-read while the job runs)
//! and, once it is final, its tasks' resource metrics (`metrics.json`), beside
//! its logs and in the index. A job whose events or metrics cannot be read is
//! a warning, never a failure of the pass: its logs matter more.
//! The record arrives already redacted by the source.

use super::{Archiver, RecordSpill, RunError, Source};
use crate::index::{RecordState, RecordUpdate};
use crate::model::{Job, JobId};
use crate::storage::{ArchiveKey, KeyParts};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Jobs whose records are read and written at once.
const RECORD_CONCURRENCY: usize = 4;
/// Records written to the index per transaction.
const RECORD_BATCH: usize = 64;
/// Jobs whose index states are read at once.
const STATE_CHUNK: usize = 1000;
/// A final job whose events or metrics failed this many passes in a row is
/// sealed with what it has, so a permission it lacks does not cost API calls forever.
const MAX_RECORD_ATTEMPTS: u32 = 3;

impl Archiver {
    /// Archives the records of `jobs` that changed (and their events and
    /// metrics), and seals the records of `gone` jobs as they are. Records set
    /// aside in `spill` are read back one job at a time, as they are archived.
    pub(super) async fn archive_records(
        &self,
        source: &Source,
        jobs: Vec<Job>,
        spill: Option<RecordSpill>,
        gone: Vec<JobId>,
        now_ms: i64,
        cancel: &CancellationToken,
    ) -> Result<(), RunError> {
        let mut spill = spill;
        // A chunk of jobs at a time: their index states are read per chunk, so
        // the end of a large pass holds no state for every listed job.
        let mut jobs = jobs.into_iter();
        loop {
            let chunk: Vec<Job> = jobs.by_ref().take(STATE_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let work = self.records_to_archive(chunk, spill.as_ref()).await?;
            let mut updates = futures::stream::iter(work)
                .map(|(job, state)| {
                    let job = match spill.as_mut() {
                        Some(spill) => spill.restore(job),
                        None => job,
                    };
                    async move { self.archive_record(source, &job, state, now_ms).await }
                })
                .buffer_unordered(RECORD_CONCURRENCY)
                .ready_chunks(RECORD_BATCH);
            while let Some(batch) = updates.next().await {
                let batch: Vec<RecordUpdate> = batch.into_iter().flatten().collect();
                self.with_index(move |ix| ix.record_job_records(&batch, &[], now_ms))
                    .await?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
            }
        }
        if !gone.is_empty() {
            self.with_index(move |ix| ix.record_job_records(&[], &gone, now_ms))
                .await?;
        }
        Ok(())
    }

    /// The jobs of `chunk` that have a record not yet sealed in the index,
    /// each with its index state.
    async fn records_to_archive(
        &self,
        chunk: Vec<Job>,
        spill: Option<&RecordSpill>,
    ) -> Result<Vec<(Job, RecordState)>, RunError> {
        let has_record =
            |job: &Job| job.record.is_some() || spill.is_some_and(|s| s.has_record(job));
        let ids: Vec<JobId> = chunk
            .iter()
            .filter(|j| has_record(j))
            .map(|j| j.id.clone())
            .collect();
        let states = self.with_index(move |ix| ix.record_states(&ids)).await?;
        // Owned items: a stream over borrowing closures would make the pass's
        // future not `Send` for every lifetime (the daemon spawns it).
        Ok(chunk
            .into_iter()
            .filter_map(|job| {
                let state = states.get(&job.id).cloned().unwrap_or_default();
                (has_record(&job) && !state.sealed).then_some((job, state))
            })
            .collect())
    }

    /// One job: stores its record when it changed, its events while they may
    /// change, its metrics once final. `None` when storage refused the record
    /// (logged; tried again next pass).
    async fn archive_record(
        &self,
        source: &Source,
        job: &Job,
        state: RecordState,
        now_ms: i64,
    ) -> Option<RecordUpdate> {
        let record = job.record.as_ref()?;
        let phase = job.phase.as_str().to_owned();
        let mut update = RecordUpdate {
            job: job.id.clone(),
            record: None,
            events: None,
            metrics: None,
            error: None,
            sealed: false,
            at_ms: now_ms,
        };
        let changed = !state.has_record
            || state.phase.as_deref() != Some(phase.as_str())
            || state.start_time_ms != Some(record.start_time_ms)
            || state.duration_ms != Some(record.duration_ms);
        if changed {
            let key = self.job_file(source, job, "job.json");
            let stored = self.put_json(job, &key, &record.json).await?;
            update.record = Some(((**record).clone(), phase, stored));
        }
        let mut errors = Vec::new();
        if source.jobs.archive_events {
            match self.read_events(source, job).await {
                Ok(Some(events)) => update.events = Some(events),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        let is_final = job.phase.is_final();
        if source.jobs.archive_metrics && is_final && !state.metrics_fetched {
            match self.read_metrics(source, job).await {
                Ok(metrics) => update.metrics = Some(metrics),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let error = errors.join("; ");
            tracing::warn!(job = %job.id, %error, "job events or metrics not archived (its logs are archived regardless)");
            update.error = Some(error);
        }
        update.sealed =
            is_final && (update.error.is_none() || state.attempts + 1 >= MAX_RECORD_ATTEMPTS);
        Some(update)
    }

    /// Reads the job's events; `Some` (text, storage key) when they differ from
    /// the archived ones and were stored.
    async fn read_events(
        &self,
        source: &Source,
        job: &Job,
    ) -> Result<Option<(String, String)>, String> {
        let events = self
            .backoff()
            .retry(|| source.client.job_events(&job.id))
            .await
            .0
            .map_err(|e| format!("events: {e}"))?;
        let text = serde_json::Value::Array(events).to_string();
        let id = job.id.clone();
        let archived = self
            .with_index(move |ix| ix.job_events(&id))
            .await
            .map_err(|e| format!("events: {e}"))?;
        if archived.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        let key = self.job_file(source, job, "events.json");
        match self.put_json(job, &key, &text).await {
            Some(stored) => Ok(Some((text, stored))),
            None => Err("events: not stored".to_owned()),
        }
    }

    /// Reads every task's metrics into one object keyed by task, and stores it.
    async fn read_metrics(&self, source: &Source, job: &Job) -> Result<(String, String), String> {
        let mut all = serde_json::Map::new();
        for task in &job.tasks {
            let metrics = self
                .backoff()
                .retry(|| source.client.task_metrics(&job.id, task))
                .await
                .0
                .map_err(|e| format!("metrics: {e}"))?;
            all.insert(task.0.to_string(), metrics);
        }
        let text = serde_json::Value::Object(all).to_string();
        let key = self.job_file(source, job, "metrics.json");
        match self.put_json(job, &key, &text).await {
            Some(stored) => Ok((text, stored)),
            None => Err("metrics: not stored".to_owned()),
        }
    }

    fn job_file(&self, source: &Source, job: &Job, name: &str) -> ArchiveKey {
        self.config.storage.layout.render_job_file(
            KeyParts {
                source: &source.name,
                region: &source.region,
                project_id: source.client.project_id(),
                job_id: &job.id.0,
                job_name: &job.name,
                task_id: "",
            },
            name,
        )
    }

    /// Stores compact JSON `text` pretty-printed under `key`; returns the key
    /// stored, or `None` (logged) when storage refused it.
    async fn put_json(&self, job: &Job, key: &ArchiveKey, text: &str) -> Option<String> {
        let bytes = crate::model::pretty_json(text);
        match self.storage.put_document(key, &bytes).await {
            Ok(stored) => Some(stored.key.as_str().to_owned()),
            Err(e) => {
                tracing::warn!(job = %job.id, key = %key, error = %e, "job document not stored; trying again next pass");
                None
            }
        }
    }
}
