//! One job in full: `malog show JOB` (by id, or by a name only one job has).

use super::Selection;
use super::jobs::{JobRow, list_jobs, list_tasks};
use crate::index::{Index, IndexError, TaskRecord};
use rusqlite::OptionalExtension;
use serde::Serialize;

/// A job's record, events, metrics and tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobRow,
    /// The job's events (newest first), if they were archived.
    pub events: Option<serde_json::Value>,
    /// Each task's resource metrics, once the job was final.
    pub metrics: Option<serde_json::Value>,
    /// Why events or metrics could not be read at the last attempt.
    pub record_error: Option<String>,
    pub tasks: Vec<TaskRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("no job with id or name {0:?} in the index")]
    NotFound(String),
    #[error("{name:?} names {count} jobs ({ids}); give the job id instead")]
    Ambiguous {
        name: String,
        count: usize,
        ids: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What `show` and the web's job page list about a job, label and text, from
/// its row and its (redacted) record; empty ones are left out.
pub fn facts(job: &JobRow) -> Vec<(&'static str, String)> {
    let record = job.record.as_ref();
    let text = |pointer: &str| {
        record
            .and_then(|r| r.pointer(pointer))
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    [
        (
            "phase",
            format!("{} {}", job.phase, text("/status/secondary_phase")),
        ),
        ("created", job.created.clone()),
        ("duration", job.duration_text()),
        ("user", job.user.clone().unwrap_or_default()),
        ("flavor × nodes", job.flavor_nodes()),
        ("engine", text("/algorithm/engine/engine_name")),
        ("image", text("/algorithm/engine/image_url")),
        ("command", text("/algorithm/command")),
        ("parameters", text("/algorithm/parameters")),
        ("environment", text("/algorithm/environments")),
        ("task exits", text("/status/task_statuses")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.trim().is_empty())
    .collect()
}

/// The job whose id is `job`, else the one job named `job`.
pub fn resolve(index: &Index, job: &str) -> Result<String, ShowError> {
    let by_id: Option<String> = index.read(|conn| {
        conn.query_row("SELECT job_id FROM jobs WHERE job_id = ?1", [job], |r| {
            r.get(0)
        })
        .optional()
    })?;
    if let Some(id) = by_id {
        return Ok(id);
    }
    let ids: Vec<String> = index.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT job_id FROM jobs WHERE name = ?1 ORDER BY created_at_ms DESC LIMIT 10",
        )?;
        let rows = stmt.query_map([job], |r| r.get(0))?;
        rows.collect()
    })?;
    match ids.as_slice() {
        [] => Err(ShowError::NotFound(job.to_owned())),
        [one] => Ok(one.clone()),
        many => Err(ShowError::Ambiguous {
            name: job.to_owned(),
            count: many.len(),
            ids: many.join(", "),
        }),
    }
}

/// Everything the index holds about one job.
pub fn show_job(index: &Index, job: &str) -> Result<JobDetail, ShowError> {
    let id = resolve(index, job)?;
    let selection = Selection::of_jobs(vec![id.clone()]);
    let row = list_jobs(index, &selection, true)?
        .into_iter()
        .next()
        .ok_or_else(|| ShowError::NotFound(job.to_owned()))?;
    let (events, metrics, record_error) = index
        .read(|conn| {
            conn.query_row(
                "SELECT events, metrics, last_error FROM job_records WHERE job_id = ?1",
                [&id],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()
        })?
        .unwrap_or_default();
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(JobDetail {
        job: row,
        events: parse(events),
        metrics: parse(metrics),
        record_error,
        tasks: list_tasks(index, &selection)?,
    })
}
