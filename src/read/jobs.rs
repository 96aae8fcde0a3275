//! Rows of the selected jobs and tasks: `malog jobs` and `malog query`.

use super::Selection;
use crate::index::{Index, IndexError, StoredCopy, TaskRecord, rfc3339};
use serde::Serialize;

/// One job as `malog jobs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// The configured source the job came from.
    pub source: String,
    pub job_id: String,
    pub name: String,
    pub phase: String,
    /// `metadata.create_time`, RFC 3339 UTC.
    pub created: String,
    #[serde(skip)]
    pub created_at_ms: i64,
    /// `status.duration` in ms, once the record was read.
    pub duration_ms: Option<i64>,
    pub user: Option<String>,
    pub flavor: Option<String>,
    pub node_count: Option<i64>,
    pub tasks_archived: u64,
    pub tasks_total: u64,
    /// Bytes of the archived logs (uncompressed).
    pub bytes: u64,
    /// When the newest archived copy became durable, RFC 3339 UTC.
    pub last_fetched: Option<String>,
    /// The whole record (redacted job object); JSON output only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
}

impl JobRow {
    /// The run time as people read it ("1h 2m"); empty when unknown.
    pub fn duration_text(&self) -> String {
        self.duration_ms
            .filter(|ms| *ms > 0)
            .map(|ms| {
                humantime::format_duration(std::time::Duration::from_secs(ms as u64 / 1000))
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// "flavor × nodes", with whichever part is known.
    pub fn flavor_nodes(&self) -> String {
        match (&self.flavor, self.node_count) {
            (Some(f), Some(n)) => format!("{f} × {n}"),
            (Some(f), None) => f.clone(),
            (None, Some(n)) => format!("× {n}"),
            (None, None) => String::new(),
        }
    }
}

// `+t.state`: without it SQLite counts a job's archived tasks through the
// index on `state` (every archived task of the archive, for each job) instead
// of the job's own rows by primary key; on 1,000,000 tasks `jobs --phase
// Failed` (2,000 jobs) took minutes instead of milliseconds.
const JOB_COLUMNS: &str = "j.job_id, j.name, j.phase, j.created_at_ms, r.duration_ms, r.user_name,
    r.flavor, r.node_count, j.task_count,
    (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND +t.state = 'archived'),
    (SELECT COALESCE(SUM(t.size), 0) FROM tasks t WHERE t.job_id = j.job_id AND t.storage_key IS NOT NULL),
    (SELECT MAX(t.fetched_at_ms) FROM tasks t WHERE t.job_id = j.job_id),
    r.record, j.source";

fn job_from_row(r: &rusqlite::Row<'_>, with_record: bool) -> rusqlite::Result<JobRow> {
    let created_at_ms: i64 = r.get(3)?;
    let record = if with_record {
        r.get::<_, Option<String>>(12)?
            .and_then(|text| serde_json::from_str(&text).ok())
    } else {
        None
    };
    Ok(JobRow {
        job_id: r.get(0)?,
        name: r.get(1)?,
        phase: r.get(2)?,
        created: rfc3339(created_at_ms),
        created_at_ms,
        duration_ms: r.get(4)?,
        user: r.get(5)?,
        flavor: r.get(6)?,
        node_count: r.get(7)?,
        tasks_total: r.get::<_, i64>(8)?.max(0) as u64,
        tasks_archived: r.get::<_, i64>(9)?.max(0) as u64,
        bytes: r.get::<_, i64>(10)?.max(0) as u64,
        last_fetched: r.get::<_, Option<i64>>(11)?.map(rfc3339),
        record,
        source: r.get(13)?,
    })
}

/// The selected jobs, newest first; `with_record` adds each job's record.
pub fn list_jobs(
    index: &Index,
    selection: &Selection,
    with_record: bool,
) -> Result<Vec<JobRow>, IndexError> {
    let (sql, args) = selection.jobs_sql(JOB_COLUMNS);
    index.read(|conn| {
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            job_from_row(r, with_record)
        })?;
        rows.collect()
    })
}

/// The selected tasks' rows, newest job first.
pub fn list_tasks(index: &Index, selection: &Selection) -> Result<Vec<TaskRecord>, IndexError> {
    let mut out = Vec::new();
    each_task(index, selection, |row| {
        out.push(row);
        Ok::<_, IndexError>(())
    })?;
    Ok(out)
}

/// Hands `each` the rows of [`list_tasks`] one at a time, in the same order,
/// without holding them all: an error from `each` stops the walk.
pub fn each_task<E: From<IndexError>>(
    index: &Index,
    selection: &Selection,
    each: impl FnMut(TaskRecord) -> Result<(), E>,
) -> Result<(), E> {
    let (sql, args) = selection.tasks_sql(crate::index::TASK_COLUMNS, "");
    walk(index, &sql, args, crate::index::task_from_row, each)
}

/// Runs `sql` and hands each row, read by `from_row`, to `each`.
pub(super) fn walk<T, E: From<IndexError>>(
    index: &Index,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
    from_row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    mut each: impl FnMut(T) -> Result<(), E>,
) -> Result<(), E> {
    let mut stopped = None;
    index.read(|conn| {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            if let Err(e) = each(from_row(r)?) {
                stopped = Some(e);
                break;
            }
        }
        Ok(())
    })?;
    stopped.map_or(Ok(()), Err)
}

/// An archived copy of a selected task, with its job's name (for `grep` and
/// `export`).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedCopy {
    pub job_name: String,
    pub copy: StoredCopy,
}

/// The archived copies of the selected tasks, newest job first.
pub fn list_copies(index: &Index, selection: &Selection) -> Result<Vec<SelectedCopy>, IndexError> {
    let mut out = Vec::new();
    each_copy(index, selection, |copy| {
        out.push(copy);
        Ok::<_, IndexError>(())
    })?;
    Ok(out)
}

/// Hands `each` the copies of [`list_copies`] one at a time, in the same order.
pub fn each_copy<E: From<IndexError>>(
    index: &Index,
    selection: &Selection,
    each: impl FnMut(SelectedCopy) -> Result<(), E>,
) -> Result<(), E> {
    let columns = format!("{}, j.name", crate::index::STORED_COPY_COLUMNS);
    let condition = format!(" AND {}", crate::seal::HOLDS_COPY_SQL);
    let (sql, args) = selection.tasks_sql(&columns, &condition);
    let from_row = |r: &rusqlite::Row<'_>| {
        Ok(SelectedCopy {
            copy: crate::index::stored_copy_from_row(r)?,
            job_name: r.get(9)?,
        })
    };
    walk(index, &sql, args, from_row, each)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: a job's counts read that job's own task rows by primary key;
    /// through the index on `state` they read every archived task of the
    /// archive once per job (minutes on 1,000,000 tasks).
    #[test]
    fn job_counts_read_the_jobs_own_rows() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let (sql, args) = Selection::default().jobs_sql(JOB_COLUMNS);
        let plan: Vec<String> = index
            .read(|conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })?;
                rows.collect()
            })
            .unwrap();
        assert!(
            plan.iter().all(|step| !step.contains("tasks_by_state")),
            "{plan:#?}"
        );
    }
}
