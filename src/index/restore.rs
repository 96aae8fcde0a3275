//! What the archive's self-description needs from the index: a job's rows as
//! they will be once a batch is applied (written into the job's manifest
//! before the batch is committed), a fresh index filled from rows read back
//! from storage (`malog index rebuild`), and a consistent copy of the live
//! index (`malog index backup`). The index knows nothing of manifests: it
//! speaks in its own rows.

use super::records::{self, QueryFilter, TaskRecord, TaskUpdate};
use super::versions::{self, VersionRecord};
use super::{Index, IndexError, WriterLock, sqlite_error};
use crate::model::{JobId, JobPhase};
use rusqlite::{OptionalExtension, params};
use std::path::Path;

/// A `jobs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub job_id: String,
    /// The configured source the job came from.
    pub source: String,
    pub name: String,
    pub phase: JobPhase,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub task_count: u64,
    pub seen_at_ms: i64,
}

/// A job and all its task rows.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    pub job: JobRow,
    pub tasks: Vec<TaskRecord>,
    /// The kept versions of its tasks' rewritten logs.
    pub versions: Vec<VersionRecord>,
}

impl Index {
    /// The rows of `jobs` as they will be once `updates` are applied, without
    /// applying them (the transaction is rolled back): what a job's manifest
    /// must say before the index may say it. Jobs the index does not know are
    /// left out.
    pub fn states_after(
        &mut self,
        updates: &[TaskUpdate],
        jobs: &[JobId],
    ) -> Result<Vec<JobState>, IndexError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        for update in updates {
            records::apply(&tx, update).map_err(err)?;
        }
        let mut states = Vec::with_capacity(jobs.len());
        {
            let mut job_stmt = tx
                .prepare_cached(
                    "SELECT job_id, name, phase, created_at_ms, ended_at_ms, task_count, seen_at_ms, source
                       FROM jobs WHERE job_id = ?1",
                )
                .map_err(err)?;
            for job in jobs {
                let row = job_stmt
                    .query_row(params![job.0], |r| {
                        Ok(JobRow {
                            job_id: r.get(0)?,
                            name: r.get(1)?,
                            phase: r.get(2)?,
                            created_at_ms: r.get(3)?,
                            ended_at_ms: r.get(4)?,
                            task_count: r.get::<_, i64>(5)?.max(0) as u64,
                            seen_at_ms: r.get(6)?,
                            source: r.get(7)?,
                        })
                    })
                    .optional()
                    .map_err(err)?;
                let Some(job_row) = row else { continue };
                let filter = QueryFilter {
                    jobs: vec![job.0.clone()],
                    ..Default::default()
                };
                let tasks = records::query(&tx, &filter).map_err(err)?;
                let versions = versions::of_job(&tx, &job.0).map_err(err)?;
                states.push(JobState {
                    job: job_row,
                    tasks,
                    versions,
                });
            }
        }
        // Dropping the transaction rolls it back: the caller commits the
        // updates for real once the manifests are durable.
        drop(tx);
        Ok(states)
    }

    /// Fills this (fresh) index with `jobs`, in one transaction. Task rows
    /// are written as given, `location` included.
    pub fn restore(&mut self, jobs: &[JobState]) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut job_stmt = tx
                .prepare(
                    "INSERT OR REPLACE INTO jobs (job_id, name, phase, created_at_ms, ended_at_ms, task_count, seen_at_ms, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            let mut task_stmt = tx
                .prepare(
                    "INSERT OR REPLACE INTO tasks (job_id, task_id, state, size, sha256, storage_key, location,
                       fetched_at_ms, etag, last_modified, source_length, job_phase, checked_at_ms, attempts,
                       last_error, sealed, stored_size, stored_sha256, compression, growth, unconfirmed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                       ?18, ?19, ?20, ?21)",
                )
                .map_err(err)?;
            for state in jobs {
                let j = &state.job;
                job_stmt
                    .execute(params![
                        j.job_id,
                        j.name,
                        j.phase,
                        j.created_at_ms,
                        j.ended_at_ms,
                        j.task_count as i64,
                        j.seen_at_ms,
                        j.source
                    ])
                    .map_err(err)?;
                for t in &state.tasks {
                    task_stmt
                        .execute(params![
                            t.job_id,
                            t.task_id,
                            t.state,
                            t.size.map(|v| v as i64),
                            t.sha256,
                            t.storage_key,
                            t.location,
                            t.fetched_at_ms,
                            t.validators.etag,
                            t.validators.last_modified,
                            t.validators.length.map(|v| v as i64),
                            t.job_phase,
                            t.checked_at_ms,
                            t.attempts,
                            t.last_error,
                            t.sealed,
                            t.stored_size.map(|v| v as i64),
                            t.stored_sha256,
                            t.compression,
                            t.growth,
                            t.unconfirmed
                        ])
                        .map_err(err)?;
                }
            }
        }
        // After every task row: a version refers to its task.
        for v in jobs.iter().flat_map(|state| &state.versions) {
            versions::insert(&tx, v).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Writes a consistent copy of this index to `target` (which must not
    /// exist) with `VACUUM INTO`: one read transaction, so a writer may go on
    /// meanwhile (WAL), and the copy is compact and self-contained (no -wal).
    pub fn backup_into(&self, target: &Path) -> Result<(), IndexError> {
        let text = target.to_str().ok_or_else(|| IndexError::CreateDir {
            path: target.to_owned(),
            source: std::io::Error::other("the backup path is not valid UTF-8"),
        })?;
        self.conn
            .execute("VACUUM INTO ?1", params![text])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (the full check, unlike [`Index::check_integrity`]).
    pub fn check_integrity_full(&self) -> Result<(), IndexError> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(IndexError::Corrupt {
                path: self.path.clone(),
                detail: result,
            })
        }
    }

    /// Folds the write-ahead log into the file, so that the file alone is the
    /// whole index (before it is renamed into place).
    pub fn checkpoint(&self) -> Result<(), IndexError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}

impl WriterLock {
    /// Takes the writer lock of the index at `path` (`<index>.lock`) without
    /// opening the index: for commands that replace the file itself.
    pub fn acquire(path: &Path) -> Result<WriterLock, IndexError> {
        super::lock_file(path)
    }
}
