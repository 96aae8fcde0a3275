//! The training-job object of the search and details calls, as the wire gives
//! it (tolerant: every field the archiver does not need is optional), and how it
//! becomes a [`Job`] with its redacted record.

use super::redact::Redaction;
use crate::model::{Job, JobId, JobPhase, JobRecord, TaskId};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(super) struct JobObject {
    metadata: JobMetadata,
    #[serde(default)]
    status: JobStatus,
}

#[derive(Deserialize)]
struct JobMetadata {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    create_time: i64,
}

#[derive(Deserialize, Default)]
struct JobStatus {
    #[serde(default)]
    phase: String,
    #[serde(default)]
    tasks: Vec<String>,
    #[serde(default)]
    start_time: i64,
    #[serde(default)]
    duration: i64,
}

impl JobObject {
    /// Reads a job object, keeping it (redacted) as the job's record.
    pub(super) fn parse(
        mut value: serde_json::Value,
        redaction: Redaction,
    ) -> Result<Job, serde_json::Error> {
        let object = JobObject::deserialize(&value)?;
        redaction.apply(&mut value);
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let engine = match (
            text("/algorithm/engine/engine_name"),
            text("/algorithm/engine/engine_version"),
        ) {
            (Some(name), Some(version)) => Some(format!("{name} {version}")),
            (name, version) => name.or(version),
        };
        let record = JobRecord {
            user_name: text("/metadata/user_name"),
            flavor: text("/spec/resource/flavor_id"),
            node_count: value
                .pointer("/spec/resource/node_count")
                .and_then(serde_json::Value::as_i64),
            engine,
            start_time_ms: object.status.start_time,
            duration_ms: object.status.duration,
            json: value.to_string(),
        };
        let mut job = object.into_job();
        job.record = Some(Arc::new(record));
        Ok(job)
    }

    pub(super) fn into_job(self) -> Job {
        let phase = JobPhase::parse(&self.status.phase);
        let ended_at_ms = phase.is_final().then(|| {
            if self.status.start_time > 0 {
                self.status
                    .start_time
                    .saturating_add(self.status.duration.max(0))
            } else {
                self.metadata.create_time
            }
        });
        Job {
            id: JobId(self.metadata.id),
            name: self.metadata.name,
            phase,
            created_at_ms: self.metadata.create_time,
            ended_at_ms,
            tasks: self
                .status
                .tasks
                .into_iter()
                .map(|t| TaskId(t.into()))
                .collect(),
            record: None,
        }
    }
}
