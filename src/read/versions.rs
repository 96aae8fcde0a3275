//! The kept versions of the selected tasks' logs (copies that a rewritten log
//! would have destroyed): `query --versions`, `cat --version`, and what
//! `verify` re-reads besides the current copies.

use super::Selection;
use crate::index::{
    Index, IndexError, StoredCopy, VERSION_COLUMNS, VersionRecord, version_from_row,
};

/// The versions of the selected tasks, newest job first, then by task and
/// version number.
pub fn list_versions(
    index: &Index,
    selection: &Selection,
) -> Result<Vec<VersionRecord>, IndexError> {
    let mut out = Vec::new();
    each_version(index, selection, |v| {
        out.push(v);
        Ok::<_, IndexError>(())
    })?;
    Ok(out)
}

/// Hands `each` the versions of [`list_versions`] one at a time, in the same
/// order: an error from `each` stops the walk.
pub fn each_version<E: From<IndexError>>(
    index: &Index,
    selection: &Selection,
    each: impl FnMut(VersionRecord) -> Result<(), E>,
) -> Result<(), E> {
    let (tasks, args) = selection.tasks_sql("t.job_id, t.task_id, j.created_at_ms", "");
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM versions v
         JOIN ({tasks}) s ON s.job_id = v.job_id AND s.task_id = v.task_id
         LEFT JOIN jobs j ON j.job_id = v.job_id
         ORDER BY s.created_at_ms DESC, v.job_id, v.task_id, v.n"
    );
    super::jobs::walk(index, &sql, args, version_from_row, each)
}

/// A version as the stored copy it is (what `verify` and `cat` read).
pub fn as_stored_copy(v: &VersionRecord) -> StoredCopy {
    StoredCopy {
        job_id: v.job_id.clone(),
        task_id: v.task_id.clone(),
        storage_key: v.storage_key.clone(),
        location: Some(v.location.clone()),
        size: v.size,
        sha256: v.sha256.clone(),
        stored_size: v.stored_size,
        stored_sha256: v.stored_sha256.clone(),
        compression: v.compression,
    }
}
