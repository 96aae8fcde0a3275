//! Every object in the archive, for `malog index rebuild`: a walk of the local
//! folder (its staging folder left out) or a listing of the bucket's prefix.
//! The keys come back relative to the archive root, as [`ArchiveKey`]s.

use super::local::io_err;
use super::{ArchiveKey, Backend, Storage, StoreError};
use std::path::Path;

/// One object found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: ArchiveKey,
    /// Size of the stored object in bytes.
    pub stored_size: u64,
}

impl Storage {
    /// Every object under the archive root, sorted by key. Local: the folder's
    /// subfolders are read in parallel on blocking threads; S3: one paged
    /// listing of the prefix.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = match &self.backend {
            Backend::Local(s) => s.list().await?,
            Backend::S3(s) => s.list().await?,
        };
        out.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        Ok(out)
    }
}

/// Walks the folder `root`, leaving out its top-level entry `skip` (the
/// staging folder). Each top-level folder (a project, or a job) is walked on
/// one of a few threads: listing directories is mostly waiting on the disk.
pub(super) fn walk_local(root: &Path, skip: &str) -> Result<Vec<Listed>, StoreError> {
    let mut tops = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        if entry.file_name() != skip {
            tops.push(entry.path());
        }
    }
    let results: Vec<Result<Vec<Listed>, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = tops
            .chunks(tops.len().div_ceil(WALKERS).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    let mut found = Vec::new();
                    for path in chunk {
                        walk_one(root, path, &mut found)?;
                    }
                    Ok(found)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Io {
                        path: root.to_owned(),
                        source: std::io::Error::other("a folder walk stopped unexpectedly"),
                    })
                })
            })
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Threads walking the local archive.
const WALKERS: usize = 4;

fn walk_one(root: &Path, path: &Path, out: &mut Vec<Listed>) -> Result<(), StoreError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            walk_one(root, &entry.path(), out)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Ok(()); // symlinks and the like are not malog's
    }
    let key = path
        .strip_prefix(root)
        .ok()
        .and_then(|rel| rel.to_str())
        .and_then(ArchiveKey::from_stored);
    if let Some(key) = key {
        out.push(Listed {
            key,
            stored_size: meta.len(),
        });
    }
    Ok(())
}
