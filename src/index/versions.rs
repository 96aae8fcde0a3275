//! The `versions` table: archived copies kept because their log was
//! rewritten (migration 0007). A row is written in the same transaction as the
//! task's new copy, after both objects are durable; it is never updated or
//! deleted afterwards (a retry that finds the same version writes the same row).

use super::records::rfc3339;
use crate::model::Compression;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Serialize;

/// One kept version of a task's log, as `query --versions` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionRecord {
    pub job_id: String,
    /// Filled when read (from `jobs`); not stored with the version.
    pub job_name: String,
    pub task_id: String,
    /// 1 = the oldest kept copy; the number in its key (`.v1`).
    pub version: u32,
    /// `rewritten` or `truncated` (the new log was shorter).
    pub reason: String,
    /// The original log the version holds.
    pub size: u64,
    pub sha256: String,
    pub storage_key: String,
    pub location: String,
    pub compression: Compression,
    pub stored_size: Option<u64>,
    pub stored_sha256: Option<String>,
    /// When the copy first became durable, RFC 3339 UTC.
    pub archived_at: Option<String>,
    /// When it was kept as a version, RFC 3339 UTC.
    pub replaced_at: String,
    #[serde(skip)]
    pub archived_at_ms: Option<i64>,
    #[serde(skip)]
    pub replaced_at_ms: i64,
}

/// Records a kept version; the same version recorded again (a retried pass
/// that found it already kept) replaces its row with the same facts.
pub(super) fn insert(tx: &Transaction<'_>, v: &VersionRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO versions (job_id, task_id, n, storage_key, location, size, sha256,
           stored_size, stored_sha256, compression, reason, archived_at_ms, replaced_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        v.job_id,
        v.task_id,
        v.version,
        v.storage_key,
        v.location,
        v.size as i64,
        v.sha256,
        v.stored_size.map(|s| s as i64),
        v.stored_sha256,
        v.compression,
        v.reason,
        v.archived_at_ms,
        v.replaced_at_ms
    ])?;
    Ok(())
}

/// The columns [`version_from_row`] reads, over `versions v` and `jobs j`.
pub const VERSION_COLUMNS: &str = "v.job_id, COALESCE(j.name, ''), v.task_id, v.n, v.reason,
    v.size, v.sha256, v.storage_key, v.location, v.compression, v.stored_size,
    v.stored_sha256, v.archived_at_ms, v.replaced_at_ms";

/// A version selected with [`VERSION_COLUMNS`].
pub fn version_from_row(r: &Row<'_>) -> rusqlite::Result<VersionRecord> {
    let archived_at_ms: Option<i64> = r.get(12)?;
    let replaced_at_ms: i64 = r.get(13)?;
    Ok(VersionRecord {
        job_id: r.get(0)?,
        job_name: r.get(1)?,
        task_id: r.get(2)?,
        version: r.get(3)?,
        reason: r.get(4)?,
        size: r.get::<_, i64>(5)?.max(0) as u64,
        sha256: r.get(6)?,
        storage_key: r.get(7)?,
        location: r.get(8)?,
        compression: r.get(9)?,
        stored_size: r.get::<_, Option<i64>>(10)?.map(|v| v.max(0) as u64),
        stored_sha256: r.get(11)?,
        archived_at: archived_at_ms.map(rfc3339),
        replaced_at: rfc3339(replaced_at_ms),
        archived_at_ms,
        replaced_at_ms,
    })
}

/// Every kept version of one job's tasks, by task then number.
pub(super) fn of_job(conn: &Connection, job: &str) -> rusqlite::Result<Vec<VersionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions v LEFT JOIN jobs j ON j.job_id = v.job_id
         WHERE v.job_id = ?1 ORDER BY v.task_id, v.n"
    ))?;
    let rows = stmt.query_map(params![job], version_from_row)?;
    rows.collect()
}

pub(super) fn one(
    conn: &Connection,
    job: &str,
    task: &str,
    n: u32,
) -> rusqlite::Result<Option<VersionRecord>> {
    conn.query_row(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM versions v LEFT JOIN jobs j ON j.job_id = v.job_id
             WHERE v.job_id = ?1 AND v.task_id = ?2 AND v.n = ?3"
        ),
        params![job, task, n],
        version_from_row,
    )
    .optional()
}
