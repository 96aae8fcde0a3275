//! Row types of the index and the SQL that reads and writes them.

use crate::model::{Compression, JobId, JobPhase, SourceValidators, TaskId, TaskState};
use crate::seal::{HOLDS_COPY_SQL, holds_copy};
use rusqlite::{Connection, Row, Transaction, params};
use serde::Serialize;

/// One task's row, as `query` shows it and as the planner reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// The configured source the job came from.
    pub source: String,
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
    pub state: TaskState,
    /// Size of the archived log in bytes.
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Where the archived copy lives.
    pub location: Option<String>,
    /// When the archived copy became durable, RFC 3339 UTC.
    pub fetched_at: Option<String>,
    pub job_phase: Option<JobPhase>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub sealed: bool,
    #[serde(skip)]
    pub storage_key: Option<String>,
    #[serde(skip)]
    pub fetched_at_ms: Option<i64>,
    /// When the source was last asked about this task.
    #[serde(skip)]
    pub checked_at_ms: Option<i64>,
    #[serde(skip)]
    pub validators: SourceValidators,
    /// The stored object (see [`StoredCopy`]).
    #[serde(skip)]
    pub stored_size: Option<u64>,
    #[serde(skip)]
    pub stored_sha256: Option<String>,
    #[serde(skip)]
    pub compression: Compression,
    /// What extending the copy needs (storage's record), if it can be extended.
    #[serde(skip)]
    pub growth: Option<String>,
    /// The copy was extended by a delta and no full download has confirmed it.
    #[serde(skip)]
    pub unconfirmed: bool,
}

impl TaskRecord {
    /// Whether storage holds a complete copy described by this row.
    pub fn has_copy(&self) -> bool {
        holds_copy(self.storage_key.as_deref(), self.sha256.as_deref())
    }
}

/// What one attempt (or one planning decision) changes in a task's row.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskUpdate {
    /// A new copy is durable in storage.
    Archived {
        job: JobId,
        task: TaskId,
        job_phase: JobPhase,
        size: u64,
        sha256: String,
        storage_key: String,
        location: String,
        /// The stored object: equal to the log's size and sha256 unless compressed.
        stored_size: u64,
        stored_sha256: String,
        /// How the object is encoded.
        compression: Compression,
        validators: SourceValidators,
        at_ms: i64,
        sealed: bool,
        /// Storage's record for extending the copy later.
        growth: String,
        /// The copy was extended by a delta (not confirmed by a full download).
        unconfirmed: bool,
    },
    /// A full download of the final log matched the copy built from deltas.
    Confirmed {
        job: JobId,
        task: TaskId,
        job_phase: JobPhase,
        at_ms: i64,
        sealed: bool,
    },
    /// The source still matches the archived copy (304 or same validators).
    Unchanged {
        job: JobId,
        task: TaskId,
        job_phase: JobPhase,
        at_ms: i64,
        sealed: bool,
    },
    /// Sealed by the planner without asking the source.
    Sealed { job: JobId, task: TaskId },
    /// The attempt failed; `state` is failed or not_ready. A previous copy stays described.
    Failed {
        job: JobId,
        task: TaskId,
        job_phase: JobPhase,
        state: TaskState,
        error: String,
        attempts: u32,
        at_ms: i64,
    },
    /// The archived copy is missing, or was replaced by bytes not known to be
    /// durable: the row no longer describes a copy (and is `failed` until the
    /// log is fetched again).
    CopyLost {
        job: JobId,
        task: TaskId,
        error: String,
    },
    /// The archived copy was kept as a version (its log was rewritten) before
    /// the new copy replaced it; recorded in the same batch as that copy.
    VersionKept(super::VersionRecord),
    /// ModelArts no longer has the log (or the job). With a copy in the archive the
    /// row stays archived and becomes sealed; without one it is lost.
    Gone {
        job: JobId,
        task: TaskId,
        error: String,
        at_ms: i64,
    },
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunTotals {
    pub jobs: u64,
    pub tasks: u64,
    pub fetched: u64,
    pub unchanged: u64,
    pub sealed: u64,
    pub not_ready: u64,
    pub failed: u64,
    pub lost: u64,
    /// Size of the logs archived in the pass (whole logs, also when extended).
    pub bytes: u64,
    /// Bytes received from log links: what the pass cost the source.
    pub downloaded: u64,
    /// Of the fetched tasks, those archived by appending only what their log grew.
    pub grown: u64,
    /// Copies built from deltas that one full download of the final log confirmed.
    pub confirmed: u64,
    /// Of those checks, copies that differed from the source and were replaced.
    pub replaced: u64,
    /// Archived copies kept as versions because their log was rewritten.
    pub rewritten: u64,
}

impl RunTotals {
    /// Adds the counts of another part of the same pass (another source).
    pub fn add(&mut self, other: &RunTotals) {
        // Destructured so that a new count cannot be forgotten here.
        let RunTotals {
            jobs,
            tasks,
            fetched,
            unchanged,
            sealed,
            not_ready,
            failed,
            lost,
            bytes,
            downloaded,
            grown,
            confirmed,
            replaced,
            rewritten,
        } = other;
        self.jobs += jobs;
        self.tasks += tasks;
        self.fetched += fetched;
        self.unchanged += unchanged;
        self.sealed += sealed;
        self.not_ready += not_ready;
        self.failed += failed;
        self.lost += lost;
        self.bytes += bytes;
        self.downloaded += downloaded;
        self.grown += grown;
        self.confirmed += confirmed;
        self.replaced += replaced;
        self.rewritten += rewritten;
    }

    /// The task counts by outcome, labelled as in the metrics and summaries.
    pub fn by_outcome(&self) -> [(&'static str, u64); 6] {
        [
            ("fetched", self.fetched),
            ("unchanged", self.unchanged),
            ("sealed", self.sealed),
            ("not_ready", self.not_ready),
            ("failed", self.failed),
            ("lost", self.lost),
        ]
    }
}

/// Which rows `query` returns. Empty means all.
#[derive(Debug, Clone, Default)]
pub struct QueryFilter {
    pub jobs: Vec<String>,
    pub task: Option<String>,
    pub state: Option<TaskState>,
}

/// Writes one update. Longer than 80 lines for a reason: one arm per kind of
/// update, each a single statement with its parameters, so the whole write side
/// of the `tasks` table reads as one table.
pub(super) fn apply(tx: &Transaction<'_>, update: &TaskUpdate) -> rusqlite::Result<()> {
    match update {
        TaskUpdate::Archived {
            job,
            task,
            job_phase,
            size,
            sha256,
            storage_key,
            location,
            stored_size,
            stored_sha256,
            compression,
            validators,
            at_ms,
            sealed,
            growth,
            unconfirmed,
        } => execute(
            tx,
            "UPDATE tasks SET state = 'archived', size = ?3, sha256 = ?4, storage_key = ?5, location = ?6,
               fetched_at_ms = ?7, checked_at_ms = ?7, etag = ?8, last_modified = ?9, source_length = ?10,
               job_phase = ?11, attempts = 0, last_error = NULL, sealed = ?12,
               stored_size = ?13, stored_sha256 = ?14, compression = ?15, growth = ?16,
               unconfirmed = ?17
             WHERE job_id = ?1 AND task_id = ?2",
            params![
                job.0,
                task.0.as_str(),
                *size as i64,
                sha256,
                storage_key,
                location,
                at_ms,
                validators.etag,
                validators.last_modified,
                validators.length.map(|l| l as i64),
                job_phase,
                sealed,
                *stored_size as i64,
                stored_sha256,
                compression,
                growth,
                unconfirmed
            ],
        ),
        TaskUpdate::Confirmed {
            job,
            task,
            job_phase,
            at_ms,
            sealed,
        } => execute(
            tx,
            "UPDATE tasks SET state = 'archived', checked_at_ms = ?3, job_phase = ?4, attempts = 0,
               last_error = NULL, sealed = ?5, unconfirmed = 0
             WHERE job_id = ?1 AND task_id = ?2",
            params![job.0, task.0.as_str(), at_ms, job_phase, sealed],
        ),
        TaskUpdate::Unchanged {
            job,
            task,
            job_phase,
            at_ms,
            sealed,
        } => execute(
            tx,
            "UPDATE tasks SET state = 'archived', checked_at_ms = ?3, job_phase = ?4, attempts = 0,
               last_error = NULL, sealed = ?5
             WHERE job_id = ?1 AND task_id = ?2",
            params![job.0, task.0.as_str(), at_ms, job_phase, sealed],
        ),
        TaskUpdate::Sealed { job, task } => execute(
            tx,
            "UPDATE tasks SET sealed = 1 WHERE job_id = ?1 AND task_id = ?2",
            params![job.0, task.0.as_str()],
        ),
        TaskUpdate::Failed {
            job,
            task,
            job_phase,
            state,
            error,
            attempts,
            at_ms,
        } => execute(
            tx,
            "UPDATE tasks SET state = ?3, last_error = ?4, attempts = attempts + ?5, checked_at_ms = ?6, job_phase = ?7
             WHERE job_id = ?1 AND task_id = ?2",
            params![job.0, task.0.as_str(), state, error, attempts, at_ms, job_phase],
        ),
        TaskUpdate::CopyLost { job, task, error } => execute(
            tx,
            "UPDATE tasks SET state = 'failed', storage_key = NULL, sha256 = NULL, location = NULL,
               stored_size = NULL, stored_sha256 = NULL, etag = NULL, last_modified = NULL,
               source_length = NULL, growth = NULL, unconfirmed = 0, sealed = 0, last_error = ?3
             WHERE job_id = ?1 AND task_id = ?2",
            params![job.0, task.0.as_str(), error],
        ),
        TaskUpdate::VersionKept(version) => super::versions::insert(tx, version).map(|()| 1),
        // A gone job's copy is sealed (seal::seals_gone), so `sealed` follows HOLDS_COPY_SQL.
        TaskUpdate::Gone { job, task, error, at_ms } => execute(
            tx,
            &format!(
                "UPDATE tasks SET
                   state = CASE WHEN {HOLDS_COPY_SQL} THEN 'archived' ELSE 'lost' END,
                   sealed = CASE WHEN {HOLDS_COPY_SQL} THEN 1 ELSE 0 END,
                   last_error = ?3, checked_at_ms = ?4
                 WHERE job_id = ?1 AND task_id = ?2"
            ),
            params![job.0, task.0.as_str(), error, at_ms],
        ),
    }
    .map(|_| ())
}

/// Runs one statement through the connection's statement cache: a batch applies
/// the same few statements hundreds of times.
fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

/// The columns [`task_from_row`] reads, over `tasks t` and `jobs j`.
pub const TASK_COLUMNS: &str =
    "t.job_id, COALESCE(j.name, ''), t.task_id, t.state, t.size, t.sha256, t.location,
       t.fetched_at_ms, t.job_phase, t.attempts, t.last_error, t.sealed, t.storage_key,
       t.etag, t.last_modified, t.source_length, t.checked_at_ms, t.stored_size,
       t.stored_sha256, t.compression, t.growth, t.unconfirmed, COALESCE(j.source, '')";

/// Epoch ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    crate::model::rfc3339(ms, chrono::SecondsFormat::Millis).unwrap_or_default()
}

/// A task row selected with [`TASK_COLUMNS`].
pub fn task_from_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let fetched_at_ms: Option<i64> = r.get(7)?;
    Ok(TaskRecord {
        job_id: r.get(0)?,
        job_name: r.get(1)?,
        task_id: r.get(2)?,
        state: r.get(3)?,
        size: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        sha256: r.get(5)?,
        location: r.get(6)?,
        fetched_at: fetched_at_ms.map(rfc3339),
        job_phase: r.get(8)?,
        attempts: r.get(9)?,
        last_error: r.get(10)?,
        sealed: r.get(11)?,
        storage_key: r.get(12)?,
        fetched_at_ms,
        checked_at_ms: r.get(16)?,
        validators: SourceValidators {
            etag: r.get(13)?,
            last_modified: r.get(14)?,
            length: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        },
        stored_size: r.get::<_, Option<i64>>(17)?.map(|v| v as u64),
        stored_sha256: r.get(18)?,
        compression: r.get(19)?,
        growth: r.get(20)?,
        unconfirmed: r.get(21)?,
        source: r.get(22)?,
    })
}

impl QueryFilter {
    /// ` AND …` conditions over the tasks table (its columns prefixed with
    /// `prefix`, e.g. `t.`) and their parameters.
    fn conditions(&self, prefix: &str) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut args = Vec::new();
        if !self.jobs.is_empty() {
            let marks = vec!["?"; self.jobs.len()].join(", ");
            sql.push_str(&format!(" AND {prefix}job_id IN ({marks})"));
            args.extend(self.jobs.iter().cloned());
        }
        if let Some(task) = &self.task {
            sql.push_str(&format!(" AND {prefix}task_id = ?"));
            args.push(task.clone());
        }
        if let Some(state) = self.state {
            sql.push_str(&format!(" AND {prefix}state = ?"));
            args.push(state.as_str().to_owned());
        }
        (sql, args)
    }
}

pub(super) fn query(conn: &Connection, filter: &QueryFilter) -> rusqlite::Result<Vec<TaskRecord>> {
    collect(|each| query_each(conn, filter, each))
}

/// Collects what a walk (`query_each`, `stored_copies_each`) hands over.
fn collect<T>(
    walk: impl FnOnce(
        &mut dyn FnMut(T) -> Result<(), std::convert::Infallible>,
    ) -> rusqlite::Result<Result<(), std::convert::Infallible>>,
) -> rusqlite::Result<Vec<T>> {
    let mut out = Vec::new();
    let done = walk(&mut |row| {
        out.push(row);
        Ok(())
    })?;
    done.map(|()| out).map_err(|never| match never {})
}

/// Hands `each` the rows of [`query`] one at a time, in the same order; an
/// error from `each` stops the walk and is returned inside.
pub(super) fn query_each<E>(
    conn: &Connection,
    filter: &QueryFilter,
    mut each: impl FnMut(TaskRecord) -> Result<(), E>,
) -> rusqlite::Result<Result<(), E>> {
    let (conditions, args) = filter.conditions("t.");
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN jobs j ON j.job_id = t.job_id
         WHERE 1 = 1{conditions} ORDER BY t.job_id, t.task_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(row) = rows.next()? {
        if let Err(e) = each(task_from_row(row)?) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// An archived copy and how it is stored, for `verify` and `cat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCopy {
    pub job_id: String,
    pub task_id: String,
    pub storage_key: String,
    pub location: Option<String>,
    /// The original log.
    pub size: u64,
    pub sha256: String,
    /// The stored object; `None` only for rows the migration could not fill.
    pub stored_size: Option<u64>,
    pub stored_sha256: Option<String>,
    pub compression: Compression,
}

pub(super) fn stored_copies(
    conn: &Connection,
    filter: &QueryFilter,
) -> rusqlite::Result<Vec<StoredCopy>> {
    collect(|each| stored_copies_each(conn, filter, each))
}

/// Hands `each` the rows of [`stored_copies`] one at a time, in the same
/// order; an error from `each` stops the walk and is returned inside.
pub(super) fn stored_copies_each<E>(
    conn: &Connection,
    filter: &QueryFilter,
    mut each: impl FnMut(StoredCopy) -> Result<(), E>,
) -> rusqlite::Result<Result<(), E>> {
    let (conditions, args) = filter.conditions("");
    let sql = format!(
        "SELECT {STORED_COPY_COLUMNS} FROM tasks t WHERE {HOLDS_COPY_SQL}{conditions}
         ORDER BY job_id, task_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        if let Err(e) = each(stored_copy_from_row(r)?) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// The columns [`stored_copy_from_row`] reads, over `tasks t`.
pub const STORED_COPY_COLUMNS: &str = "t.job_id, t.task_id, t.storage_key, t.location, t.size,
    t.sha256, t.stored_size, t.stored_sha256, t.compression";

/// An archived copy selected with [`STORED_COPY_COLUMNS`].
pub fn stored_copy_from_row(r: &Row<'_>) -> rusqlite::Result<StoredCopy> {
    Ok(StoredCopy {
        job_id: r.get(0)?,
        task_id: r.get(1)?,
        storage_key: r.get(2)?,
        location: r.get(3)?,
        size: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
        sha256: r.get(5)?,
        stored_size: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        stored_sha256: r.get(7)?,
        compression: r.get(8)?,
    })
}

/// A row of the `runs` table with every count, for `malog status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    pub started_at_ms: i64,
    /// `None` while the pass runs, or if its process died.
    pub ended_at_ms: Option<i64>,
    /// `ok`, `partial` or `failed`; `None` like `ended_at_ms`.
    pub outcome: Option<String>,
    pub jobs: u64,
    pub tasks: u64,
    pub fetched: u64,
    pub unchanged: u64,
    pub sealed: u64,
    pub not_ready: u64,
    /// Failed and lost tasks.
    pub failed: u64,
    pub bytes: u64,
    /// Why a `failed` pass stopped.
    pub error: Option<String>,
}

/// How many tasks are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// The source of the tasks' jobs.
    pub source: String,
    pub state: TaskState,
    pub tasks: u64,
    /// Of those, sealed (no API call any more).
    pub sealed: u64,
}

/// A task whose log ModelArts may delete soon: its job ended long ago and the
/// archive holds no final copy of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionRisk {
    /// The source of the job, so that an alert says where to look.
    pub source: String,
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
    pub state: TaskState,
    pub job_ended_at_ms: i64,
    /// Whether the archive holds an older copy (made before the last failure).
    pub has_copy: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

const SELECT_RUN_SUMMARY: &str =
    "SELECT run_id, started_at_ms, ended_at_ms, outcome, jobs, tasks, fetched, unchanged,
       sealed, not_ready, failed, bytes, error
     FROM runs";

fn run_summary_from_row(r: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let count = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
    Ok(RunSummary {
        run_id: r.get(0)?,
        started_at_ms: r.get(1)?,
        ended_at_ms: r.get(2)?,
        outcome: r.get(3)?,
        jobs: count(4)?,
        tasks: count(5)?,
        fetched: count(6)?,
        unchanged: count(7)?,
        sealed: count(8)?,
        not_ready: count(9)?,
        failed: count(10)?,
        bytes: count(11)?,
        error: r.get(12)?,
    })
}

pub(super) fn run_history(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<RunSummary>> {
    let mut stmt = conn.prepare(&format!(
        "{SELECT_RUN_SUMMARY} ORDER BY run_id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map(params![limit as i64], run_summary_from_row)?;
    rows.collect()
}

pub(super) fn last_run_with_outcome(
    conn: &Connection,
    outcome: &str,
) -> rusqlite::Result<Option<RunSummary>> {
    let mut stmt = conn.prepare(&format!(
        "{SELECT_RUN_SUMMARY} WHERE outcome = ?1 ORDER BY run_id DESC LIMIT 1"
    ))?;
    let mut rows = stmt.query_map(params![outcome], run_summary_from_row)?;
    rows.next().transpose()
}

pub(super) fn state_counts(conn: &Connection) -> rusqlite::Result<Vec<StateCount>> {
    let mut stmt = conn.prepare(
        "SELECT j.source, t.state, COUNT(*), SUM(t.sealed)
           FROM tasks t JOIN jobs j ON j.job_id = t.job_id
          GROUP BY j.source, t.state ORDER BY j.source, t.state",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StateCount {
            source: r.get(0)?,
            state: r.get(1)?,
            tasks: r.get::<_, i64>(2)? as u64,
            sealed: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
        })
    })?;
    rows.collect()
}

/// Tasks of jobs that ended before `ended_before_ms` and whose last attempt did
/// not leave them archived (pending, failed or not ready; lost ones are past
/// saving), oldest job first.
pub(super) fn retention_risks(
    conn: &Connection,
    ended_before_ms: i64,
) -> rusqlite::Result<Vec<RetentionRisk>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT t.job_id, j.name, t.task_id, t.state, j.ended_at_ms, {HOLDS_COPY_SQL},
           t.attempts, t.last_error, j.source
         FROM tasks t JOIN jobs j ON j.job_id = t.job_id
         WHERE j.ended_at_ms IS NOT NULL AND j.ended_at_ms < ?1
           AND t.state IN ('pending', 'failed', 'not_ready')
         ORDER BY j.ended_at_ms, t.job_id, t.task_id"
    ))?;
    let rows = stmt.query_map(params![ended_before_ms], |r| {
        Ok(RetentionRisk {
            job_id: r.get(0)?,
            job_name: r.get(1)?,
            task_id: r.get(2)?,
            state: r.get(3)?,
            job_ended_at_ms: r.get(4)?,
            has_copy: r.get(5)?,
            attempts: r.get(6)?,
            last_error: r.get(7)?,
            source: r.get(8)?,
        })
    })?;
    rows.collect()
}
