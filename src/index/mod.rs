//! The archive index in SQLite: schema migrations, the one writer, and read-only
//! queries.
//!
//! Opened in WAL mode with a busy timeout, so readers (`query`, `verify`) work while
//! a run writes. Only the run loop writes, through one [`Index`] value; batches of
//! outcomes go in one transaction each. The index knows the model, not the layers
//! that produce it.

mod job_records;
mod records;
mod restore;
mod sources;
mod text;
mod versions;

pub use job_records::{RecordState, RecordUpdate};
pub use records::{QueryFilter, RunTotals, StoredCopy, TaskRecord, TaskUpdate};
pub use records::{RetentionRisk, RunSummary, StateCount};
pub use records::{
    STORED_COPY_COLUMNS, TASK_COLUMNS, rfc3339, stored_copy_from_row, task_from_row,
};
pub use restore::{JobRow, JobState};
pub use sources::SourceOwner;
pub use versions::{VERSION_COLUMNS, VersionRecord, version_from_row};

use crate::model::{Job, JobId};
use rusqlite::{Connection, OpenFlags, params};
use rusqlite_migration::{M, Migrations};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_create_index.sql")),
        M::up(include_str!("../../migrations/0002_add_stored_object.sql")),
        M::up(include_str!("../../migrations/0003_add_job_records.sql")),
        M::up(include_str!("../../migrations/0004_add_log_growth.sql")),
        M::up(include_str!("../../migrations/0006_add_job_source.sql")),
        M::up(include_str!("../../migrations/0007_add_log_versions.sql")),
        M::up(include_str!("../../migrations/0008_index_storage_keys.sql")),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: cannot create it or its lock file: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index {path} does not exist yet; run `malog backfill` first")]
    Missing { path: PathBuf },
    #[error("index {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("index {path}: schema migration failed: {message}")]
    Migration { path: PathBuf, message: String },
    #[error(
        "index {path} is damaged ({detail}); restore a backup or run `malog index rebuild` (see docs/RELIABILITY.md, \"Recovering a damaged or lost index\")"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "index {path} is being written by another malog process (daemon or backfill); try again when it has finished"
    )]
    Busy { path: PathBuf },
}

/// An SQLite error on the index at `path`; "damaged file" errors become
/// [`IndexError::Corrupt`], whose message says how to recover.
fn sqlite_error(path: &Path, source: rusqlite::Error) -> IndexError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => IndexError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        },
        _ => IndexError::Sqlite {
            path: path.to_owned(),
            source,
        },
    }
}

/// `name REGEXP pattern` in SQL (SQLite has the operator but no function
/// behind it): Rust's regex syntax, matching anywhere in the text. Each
/// statement compiles its pattern once.
fn add_regexp(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "regexp",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let re = ctx.get_or_create_aux(0, |pattern| {
                regex::Regex::new(pattern.as_str()?)
                    .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
            })?;
            Ok(match ctx.get_raw(1).as_str_or_null() {
                Ok(Some(text)) => re.is_match(text),
                _ => false,
            })
        },
    )
}

/// Held while a pass writes the index; a second writer gets [`IndexError::Busy`].
/// The lock is the OS's (`flock`), so it goes away with the process, even after
/// a crash.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

/// Takes the lock of the index at `path` (`<index>.lock`) without waiting.
fn lock_file(path: &Path) -> Result<WriterLock, IndexError> {
    let mut lock_path = path.to_owned().into_os_string();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| IndexError::CreateDir {
            path: lock_path.into(),
            source,
        })?;
    match crate::filelock::lock(&file) {
        Ok(true) => Ok(WriterLock { _file: file }),
        Ok(false) => Err(IndexError::Busy {
            path: path.to_owned(),
        }),
        Err(source) => Err(IndexError::CreateDir {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A connection to the index. Not `Sync`: share it behind a mutex.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens the index for writing, creating it and applying migrations.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| IndexError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let mut index = Index::connect(path, OpenFlags::default())?;
        index.pragma("journal_mode", "WAL")?;
        index.pragma("synchronous", "NORMAL")?;
        index.pragma("foreign_keys", "ON")?;
        migrations()
            .to_latest(&mut index.conn)
            .map_err(|e| IndexError::Migration {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(index)
    }

    /// Opens an existing index for reading only.
    pub fn open_read_only(path: &Path) -> Result<Index, IndexError> {
        if !path.exists() {
            return Err(IndexError::Missing {
                path: path.to_owned(),
            });
        }
        Index::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Index, IndexError> {
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite_error(path, e))?;
        let index = Index {
            conn,
            path: path.to_owned(),
        };
        index
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| index.err(e))?;
        add_regexp(&index.conn).map_err(|e| index.err(e))?;
        Ok(index)
    }

    /// `PRAGMA quick_check`: a damaged file is reported with a way out, not used.
    /// It reads the whole file, so it runs where that is affordable (daemon
    /// start, `verify`); elsewhere SQLite's own checks on every page it reads
    /// turn damage into [`IndexError::Corrupt`] (see [`sqlite_error`]).
    pub fn check_integrity(&self) -> Result<(), IndexError> {
        let corrupt = |detail: String| IndexError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(corrupt(result))
        }
    }

    /// Takes the writer lock (`<index>.lock` beside the index) without waiting.
    pub fn lock_writer(&self) -> Result<WriterLock, IndexError> {
        lock_file(&self.path)
    }

    fn pragma(&self, name: &str, value: &str) -> Result<(), IndexError> {
        self.conn
            .pragma_update(None, name, value)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> IndexError {
        sqlite_error(&self.path, source)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs read-only SQL of the read side (`read/`) against the documented
    /// schema (docs/INDEX.md), with this index's error mapping.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, IndexError> {
        f(&self.conn).map_err(|e| self.err(e))
    }

    /// Starts a run row and returns its id.
    pub fn begin_run(&self, started_at_ms: i64) -> Result<i64, IndexError> {
        self.conn
            .execute(
                "INSERT INTO runs (started_at_ms) VALUES (?1)",
                params![started_at_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        ended_at_ms: i64,
        outcome: &str,
        totals: &RunTotals,
        error: Option<&str>,
    ) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE runs SET ended_at_ms = ?2, outcome = ?3, jobs = ?4, tasks = ?5, fetched = ?6,
                   unchanged = ?7, sealed = ?8, not_ready = ?9, failed = ?10, bytes = ?11, error = ?12,
                   downloaded = ?13, grown = ?14, confirmed = ?15, replaced = ?16,
                   rewritten = ?17
                 WHERE run_id = ?1",
                params![
                    run_id,
                    ended_at_ms,
                    outcome,
                    totals.jobs as i64,
                    totals.tasks as i64,
                    totals.fetched as i64,
                    totals.unchanged as i64,
                    totals.sealed as i64,
                    totals.not_ready as i64,
                    (totals.failed + totals.lost) as i64,
                    totals.bytes as i64,
                    error,
                    totals.downloaded as i64,
                    totals.grown as i64,
                    totals.confirmed as i64,
                    totals.replaced as i64,
                    totals.rewritten as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records what the source said about these jobs, and registers their tasks as
    /// pending where the index does not know them yet.
    pub fn record_jobs(&mut self, jobs: &[Job], now_ms: i64) -> Result<(), IndexError> {
        self.record_source_jobs(crate::model::DEFAULT_SOURCE, jobs, now_ms)
            .map(drop)
    }

    /// [`Index::record_jobs`] for the jobs of one source. A job another source
    /// recorded is left as it is, tasks included (see [`Index::foreign_jobs`]);
    /// returns those jobs. Checked in the same transaction as the write, so of
    /// two sources listing the same job at once, exactly one gets it.
    pub fn record_source_jobs(
        &mut self,
        source: &str,
        jobs: &[Job],
        now_ms: i64,
    ) -> Result<Vec<JobId>, IndexError> {
        let mut foreign = Vec::new();
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert_job = tx
                .prepare(
                    "INSERT INTO jobs (job_id, name, phase, created_at_ms, ended_at_ms, task_count, seen_at_ms, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (job_id) DO UPDATE SET name = ?2, phase = ?3, created_at_ms = ?4,
                       ended_at_ms = ?5, task_count = ?6, seen_at_ms = ?7
                     WHERE jobs.source = ?8",
                )
                .map_err(err)?;
            let mut insert_task = tx
                .prepare("INSERT OR IGNORE INTO tasks (job_id, task_id, state) VALUES (?1, ?2, 'pending')")
                .map_err(err)?;
            for job in jobs {
                let changed = upsert_job
                    .execute(params![
                        job.id.0,
                        job.name,
                        job.phase,
                        job.created_at_ms,
                        job.ended_at_ms,
                        job.tasks.len() as i64,
                        now_ms,
                        source
                    ])
                    .map_err(err)?;
                // The conflict's `WHERE` kept another source's row.
                if changed == 0 {
                    foreign.push(job.id.clone());
                    continue;
                }
                for task in &job.tasks {
                    insert_task
                        .execute(params![job.id.0, task.0.as_str()])
                        .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(foreign)
    }

    /// Jobs that are final and whose every task is sealed, with their task
    /// counts: no API call (not even details) and no planning is needed for them.
    pub fn sealed_jobs(&self) -> Result<HashMap<JobId, u64>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT j.job_id, j.task_count FROM jobs j
                 WHERE j.task_count > 0 AND j.ended_at_ms IS NOT NULL
                   AND j.task_count = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.sealed = 1)
                   AND EXISTS (SELECT 1 FROM job_records r WHERE r.job_id = j.job_id AND r.sealed = 1)",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((JobId(r.get(0)?), r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// What the index holds about these jobs' records (jobs without one are absent).
    pub fn record_states(&self, jobs: &[JobId]) -> Result<HashMap<JobId, RecordState>, IndexError> {
        job_records::states(&self.conn, jobs).map_err(|e| self.err(e))
    }

    /// The job's archived events (a JSON array), if any were read.
    pub fn job_events(&self, job: &JobId) -> Result<Option<String>, IndexError> {
        job_records::events(&self.conn, job).map_err(|e| self.err(e))
    }

    /// Applies what a pass learned about job records, in one transaction;
    /// `gone` are jobs ModelArts deleted, whose records are sealed as they are.
    pub fn record_job_records(
        &mut self,
        updates: &[RecordUpdate],
        gone: &[JobId],
        now_ms: i64,
    ) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        for update in updates {
            job_records::apply(&tx, update).map_err(err)?;
        }
        job_records::seal_gone(&tx, gone, now_ms).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Notes that the source still lists these (sealed) jobs.
    pub fn touch_jobs(&mut self, jobs: &[JobId], now_ms: i64) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut touch = tx
                .prepare("UPDATE jobs SET seen_at_ms = ?2 WHERE job_id = ?1")
                .map_err(err)?;
            for job in jobs {
                touch.execute(params![job.0, now_ms]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Applies a batch of task outcomes in one transaction.
    pub fn record_updates(&mut self, updates: &[TaskUpdate]) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        for update in updates {
            records::apply(&tx, update).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Rows matching the filter, ordered by job then task.
    pub fn query(&self, filter: &QueryFilter) -> Result<Vec<TaskRecord>, IndexError> {
        records::query(&self.conn, filter).map_err(|e| self.err(e))
    }

    /// Like [`Index::query`], handing `each` one row at a time, so output of
    /// any size takes constant memory. An error from `each` stops the walk and
    /// comes back inside the `Ok`.
    pub fn query_each<E>(
        &self,
        filter: &QueryFilter,
        each: impl FnMut(TaskRecord) -> Result<(), E>,
    ) -> Result<Result<(), E>, IndexError> {
        records::query_each(&self.conn, filter, each).map_err(|e| self.err(e))
    }

    /// Like [`Index::stored_copies`], one row at a time (see [`Index::query_each`]).
    pub fn stored_copies_each<E>(
        &self,
        filter: &QueryFilter,
        each: impl FnMut(StoredCopy) -> Result<(), E>,
    ) -> Result<Result<(), E>, IndexError> {
        records::stored_copies_each(&self.conn, filter, each).map_err(|e| self.err(e))
    }

    /// One task's row, if the index knows it.
    pub fn task(&self, job: &str, task: &str) -> Result<Option<TaskRecord>, IndexError> {
        let filter = QueryFilter {
            jobs: vec![job.to_owned()],
            task: Some(task.to_owned()),
            state: None,
        };
        Ok(self.query(&filter)?.into_iter().next())
    }

    /// The archived copies (every row with one), with how each is stored; for
    /// `verify`. Narrowed like [`Index::query`].
    pub fn stored_copies(&self, filter: &QueryFilter) -> Result<Vec<StoredCopy>, IndexError> {
        records::stored_copies(&self.conn, filter).map_err(|e| self.err(e))
    }

    /// The stored size the index committed for the object under `storage_key`
    /// (`None`: no row has a copy there). Cutting back an unfinished append
    /// in place needs it (an index lookup: `tasks_by_storage_key`).
    pub fn committed_size(&self, storage_key: &str) -> Result<Option<u64>, IndexError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row(
                "SELECT COALESCE(stored_size, size) FROM tasks INDEXED BY tasks_by_storage_key
                  WHERE storage_key = ?1 AND storage_key IS NOT NULL AND size IS NOT NULL LIMIT 1",
                [storage_key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|size| size.map(|s| s as u64))
            .map_err(|e| self.err(e))
    }

    /// One task's archived copy, if it has one; for `cat`.
    pub fn stored_copy(&self, job: &str, task: &str) -> Result<Option<StoredCopy>, IndexError> {
        let filter = QueryFilter {
            jobs: vec![job.to_owned()],
            task: Some(task.to_owned()),
            state: None,
        };
        Ok(self.stored_copies(&filter)?.into_iter().next())
    }

    /// One task's version `n` (1 = the oldest kept copy), if recorded; for `cat --version`.
    pub fn version(
        &self,
        job: &str,
        task: &str,
        n: u32,
    ) -> Result<Option<VersionRecord>, IndexError> {
        versions::one(&self.conn, job, task, n).map_err(|e| self.err(e))
    }

    /// The most recent runs with all their counts, newest first.
    pub fn run_history(&self, limit: usize) -> Result<Vec<RunSummary>, IndexError> {
        records::run_history(&self.conn, limit).map_err(|e| self.err(e))
    }

    /// The newest run that ended with this outcome (`ok`, `partial`, `failed`).
    pub fn last_run_with_outcome(&self, outcome: &str) -> Result<Option<RunSummary>, IndexError> {
        records::last_run_with_outcome(&self.conn, outcome).map_err(|e| self.err(e))
    }

    /// Tasks per state, with how many of them are sealed.
    pub fn state_counts(&self) -> Result<Vec<StateCount>, IndexError> {
        records::state_counts(&self.conn).map_err(|e| self.err(e))
    }

    /// Not-archived tasks of jobs that ended before `ended_before_ms`, oldest first.
    pub fn retention_risks(&self, ended_before_ms: i64) -> Result<Vec<RetentionRisk>, IndexError> {
        records::retention_risks(&self.conn, ended_before_ms).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests;
