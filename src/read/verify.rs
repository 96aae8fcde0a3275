//! `verify`: every selected archived object (current copies and kept
//! versions) read back and compared with what the index says of it, or with
//! `metadata_only` only its size and (S3) sha256 metadata. Findings are data
//! (a [`Mismatch`] each), not errors: a check goes on past the first problem.

use super::Selection;
use super::jobs::each_copy;
use super::versions::{as_stored_copy, each_version};
use crate::index::{Index, IndexError, StoredCopy};
use crate::storage::{ArchiveKey, Storage};
use futures::StreamExt;
use serde::Serialize;

/// Index rows read ahead of the checks.
const VERIFY_QUEUE: usize = 256;

/// Objects checked at the same time.
const PARALLEL_CHECKS: usize = 4;

/// One problem found by `verify`.
#[derive(Debug, Serialize)]
pub struct Mismatch {
    pub job_id: String,
    pub task_id: String,
    /// Set for a kept version of the log (`query --versions`).
    pub version: Option<u32>,
    pub location: String,
    pub problem: String,
}

/// What a `verify` found.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Objects read: current copies and kept versions.
    pub checked: usize,
    pub versions: usize,
    /// By job, task and version.
    pub mismatches: Vec<Mismatch>,
}

/// Why the reading of the index ended early.
enum ReadStop {
    Index(IndexError),
    ChecksStopped,
}

impl From<IndexError> for ReadStop {
    fn from(e: IndexError) -> ReadStop {
        ReadStop::Index(e)
    }
}

/// Checks every selected copy and version.
pub async fn verify(
    index: Index,
    storage: &Storage,
    selection: &Selection,
    metadata_only: bool,
) -> Result<VerifyReport, IndexError> {
    // Rows are read on a blocking thread while earlier ones are checked, through
    // a bounded queue: constant memory for an index of any size.
    let (queue, rows) = tokio::sync::mpsc::channel(VERIFY_QUEUE);
    let selection = selection.clone();
    let reader = tokio::task::spawn_blocking(move || {
        // A send fails only when the checks stopped: then stop reading.
        let read = each_copy(&index, &selection, |selected| {
            queue
                .blocking_send((selected.copy, None))
                .map_err(|_| ReadStop::ChecksStopped)
        })
        .and_then(|()| {
            each_version(&index, &selection, |v| {
                queue
                    .blocking_send((as_stored_copy(&v), Some(v.version)))
                    .map_err(|_| ReadStop::ChecksStopped)
            })
        });
        match read {
            Err(ReadStop::Index(e)) => Err(e),
            Ok(()) | Err(ReadStop::ChecksStopped) => Ok(()),
        }
    });
    let rows = futures::stream::unfold(rows, |mut rx| async move {
        rx.recv().await.map(|row| (row, rx))
    });
    // Files carrying the bytes of an unfinished append in place: longer than
    // the index says, which is no damage (the writer cuts them back). An
    // intent that cannot be read back only makes `--metadata-only` stricter.
    let appending: std::collections::HashSet<String> = match metadata_only {
        true => storage
            .pending_appends()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.key)
            .collect(),
        false => Default::default(),
    };
    let appending = &appending;
    let (mut checked, mut versions) = (0, 0);
    let mut mismatches: Vec<Mismatch> = rows
        .map(|(row, version)| {
            checked += 1;
            versions += usize::from(version.is_some());
            async move {
                check(storage, &row, metadata_only, appending)
                    .await
                    .err()
                    .map(|problem| Mismatch {
                        job_id: row.job_id.clone(),
                        task_id: row.task_id.clone(),
                        version,
                        location: row.location.clone().unwrap_or_default(),
                        problem,
                    })
            }
        })
        .buffer_unordered(PARALLEL_CHECKS)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    reader.await.expect("reading the index does not panic")?;
    mismatches.sort_by(|a, b| {
        (&a.job_id, &a.task_id, a.version).cmp(&(&b.job_id, &b.task_id, b.version))
    });
    Ok(VerifyReport {
        checked,
        versions,
        mismatches,
    })
}

/// Reads one object back and compares it with its row: the stored bytes with
/// the stored size and sha256, the decoded log with the log's. With
/// `metadata_only`, compares the stored size and (S3) the sha256 metadata instead;
/// a local file longer than the index says is no mismatch while an append in
/// place to it is unfinished (`appending`: the next pass cuts it back). Full
/// checks read only up to the index's stored size anyway.
async fn check(
    storage: &Storage,
    row: &StoredCopy,
    metadata_only: bool,
    appending: &std::collections::HashSet<String>,
) -> Result<(), String> {
    let key = ArchiveKey::from_stored(&row.storage_key)
        .ok_or("the index holds an invalid storage key")?;
    let compression = row.compression;
    if metadata_only {
        let head = storage.head(&key).await.map_err(|e| e.to_string())?;
        let uncommitted_tail =
            |want| head.stored_size > want && appending.contains(row.storage_key.as_str());
        if let Some(want) = row.stored_size
            && head.stored_size != want
            && !uncommitted_tail(want)
        {
            return Err(format!(
                "stored size {} bytes, index says {want}",
                head.stored_size
            ));
        }
        if let Some(meta) = head.log_sha256
            && meta != row.sha256
        {
            return Err(format!("sha256 metadata {meta}, index says {}", row.sha256));
        }
        return Ok(());
    }
    let got = storage
        .digest(&key, compression, row.stored_size)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(want) = row.stored_size
        && got.stored_size != want
    {
        return Err(format!(
            "stored size {} bytes, index says {want}",
            got.stored_size
        ));
    }
    if let Some(want) = &row.stored_sha256
        && &got.stored_sha256 != want
    {
        return Err(format!(
            "stored sha256 {}, index says {want}",
            got.stored_sha256
        ));
    }
    if got.log_size != row.size {
        return Err(format!(
            "size {} bytes, index says {}",
            got.log_size, row.size
        ));
    }
    if got.log_sha256 != row.sha256 {
        return Err(format!(
            "sha256 {}, index says {}",
            got.log_sha256, row.sha256
        ));
    }
    Ok(())
}
