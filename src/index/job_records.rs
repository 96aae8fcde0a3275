//! The `job_records` table: each job's record (redacted job object), events
//! and task metrics, and what the archiving of them needs to decide what to
//! read again.

use crate::model::{JobId, JobRecord};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;

/// What the index holds about a job's record, for deciding what to refresh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordState {
    pub phase: Option<String>,
    pub start_time_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub has_record: bool,
    pub events_fetched: bool,
    pub metrics_fetched: bool,
    /// Failed attempts at events or metrics since the last success.
    pub attempts: u32,
    pub sealed: bool,
}

/// What one pass learned about a job's record; `None` parts stay as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpdate {
    pub job: JobId,
    /// The record, its phase and where `job.json` was stored.
    pub record: Option<(JobRecord, String, String)>,
    /// The events (a JSON array) and where `events.json` was stored.
    pub events: Option<(String, String)>,
    /// The metrics (a JSON object by task) and where `metrics.json` was stored.
    pub metrics: Option<(String, String)>,
    /// Why events or metrics could not be read; `None` after a full success.
    pub error: Option<String>,
    pub sealed: bool,
    pub at_ms: i64,
}

pub(super) fn states(
    conn: &Connection,
    jobs: &[JobId],
) -> rusqlite::Result<HashMap<JobId, RecordState>> {
    let mut out = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT phase, start_time_ms, duration_ms, record IS NOT NULL, events_fetched_at_ms IS NOT NULL,
           metrics_fetched_at_ms IS NOT NULL, attempts, sealed
         FROM job_records WHERE job_id = ?1",
    )?;
    for job in jobs {
        let state = stmt
            .query_row(params![job.0], |r| {
                Ok(RecordState {
                    phase: r.get(0)?,
                    start_time_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    has_record: r.get(3)?,
                    events_fetched: r.get(4)?,
                    metrics_fetched: r.get(5)?,
                    attempts: r.get(6)?,
                    sealed: r.get(7)?,
                })
            })
            .optional()?;
        if let Some(state) = state {
            out.insert(job.clone(), state);
        }
    }
    Ok(out)
}

pub(super) fn events(conn: &Connection, job: &JobId) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT events FROM job_records WHERE job_id = ?1",
        params![job.0],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

pub(super) fn apply(tx: &Transaction<'_>, u: &RecordUpdate) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO job_records (job_id, record_updated_at_ms) VALUES (?1, ?2)",
    )?
    .execute(params![u.job.0, u.at_ms])?;
    if let Some((record, phase, key)) = &u.record {
        tx.prepare_cached(
            "UPDATE job_records SET record = ?2, phase = ?3, user_name = ?4, flavor = ?5,
               node_count = ?6, engine = ?7, start_time_ms = ?8, duration_ms = ?9,
               record_key = ?10, record_updated_at_ms = ?11
             WHERE job_id = ?1",
        )?
        .execute(params![
            u.job.0,
            record.json,
            phase,
            record.user_name,
            record.flavor,
            record.node_count,
            record.engine,
            record.start_time_ms,
            record.duration_ms,
            key,
            u.at_ms
        ])?;
    }
    if let Some((events, key)) = &u.events {
        tx.prepare_cached(
            "UPDATE job_records SET events = ?2, events_key = ?3, events_fetched_at_ms = ?4
             WHERE job_id = ?1",
        )?
        .execute(params![u.job.0, events, key, u.at_ms])?;
    }
    if let Some((metrics, key)) = &u.metrics {
        tx.prepare_cached(
            "UPDATE job_records SET metrics = ?2, metrics_key = ?3, metrics_fetched_at_ms = ?4
             WHERE job_id = ?1",
        )?
        .execute(params![u.job.0, metrics, key, u.at_ms])?;
    }
    tx.prepare_cached(
        "UPDATE job_records SET last_error = ?2,
           attempts = CASE WHEN ?2 IS NULL THEN 0 ELSE attempts + 1 END,
           sealed = ?3
         WHERE job_id = ?1",
    )?
    .execute(params![u.job.0, u.error, u.sealed])?;
    Ok(())
}

/// Seals the records of jobs ModelArts deleted: nothing more can be read.
pub(super) fn seal_gone(tx: &Transaction<'_>, jobs: &[JobId], at_ms: i64) -> rusqlite::Result<()> {
    for job in jobs {
        tx.prepare_cached(
            "INSERT INTO job_records (job_id, record_updated_at_ms, sealed, last_error)
             SELECT job_id, ?2, 1, 'the job was deleted in ModelArts before its record was read'
               FROM jobs WHERE job_id = ?1
             ON CONFLICT (job_id) DO UPDATE SET sealed = 1",
        )?
        .execute(params![job.0, at_ms])?;
    }
    Ok(())
}
