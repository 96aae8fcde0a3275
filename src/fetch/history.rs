//! Never overwrite history: whether a whole download replaces a *rewritten*
//! log, and keeping the copy it replaces as a version first.
//!
//! A log that grew is a longer successor of its archived copy: its first
//! `size` bytes are the copy, and the new copy simply replaces the old one (a
//! delta, or a whole download). A log whose start differs (rewritten,
//! truncated, replaced when a job was re-run under the same id) must not
//! destroy the copy. The check costs no second download: the sha256 of the
//! new body's first `size` bytes is taken as they stream into the writer
//! ([`super::Partial`]'s prefix) and compared with the copy's sha256 from the
//! index. A delta that passed the overlap check extends the copy and is not
//! checked; a delta whose overlap differs becomes a whole download, which is.
//!
//! A download resumed by a later process past the copy's size has no prefix
//! digest: it counts as a rewrite (keeping a version too many costs space;
//! one too few costs history).
//!
//! The version is made durable by storage ([`Storage::keep_version`]) before
//! the new object is finished; the index records both in one transaction
//! afterwards (`run/account.rs`). If keeping fails, the download is
//! discarded and the task fails: the old copy stays where it was.

use super::Fetcher;
use crate::plan::{Action, ArchivedCopy, PlanItem};
use crate::storage::{Indexed, KeptVersion, StoreError};

/// A rewritten log's previous copy, kept as a version before the new copy
/// replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCopy {
    pub version: KeptVersion,
    /// The copy as the index described it.
    pub copy: ArchivedCopy,
}

/// How many bytes of a download to digest on the way, for a download that
/// may replace a copy (and for a confirmation, whose copy size is the same).
pub(super) fn prefix_to_check(item: &PlanItem) -> Option<(u64, Option<String>)> {
    match &item.action {
        Action::Confirm { size, .. } => Some((*size, None)),
        _ => item.archived.as_ref().map(|a| (a.size, None)),
    }
}

/// Whether a finished download replaces `archived` with a log that does not
/// begin with it. `prefix` is the sha256 of the download's first
/// `archived.size` bytes (`None`: shorter than that, or not seen).
pub(super) fn rewritten(
    archived: Option<&ArchivedCopy>,
    extended: bool,
    prefix: Option<&str>,
) -> bool {
    match archived {
        None => false,
        // Built from the copy after the overlap matched: a grown log.
        Some(_) if extended => false,
        // An empty copy is the start of every log.
        Some(copy) if copy.size == 0 => false,
        Some(copy) => prefix != Some(copy.sha256.as_str()),
    }
}

impl Fetcher {
    /// Keeps the archived copy as a version when the download rewrites it.
    pub(super) async fn keep_rewritten(
        &self,
        item: &PlanItem,
        extended: bool,
        prefix: Option<String>,
    ) -> Result<Option<Box<KeptCopy>>, StoreError> {
        let Some(copy) = item.archived.as_ref() else {
            return Ok(None);
        };
        if !rewritten(Some(copy), extended, prefix.as_deref()) {
            return Ok(None);
        }
        let indexed = Indexed {
            stored_size: copy.stored_size,
            log_sha256: &copy.sha256,
        };
        let version = self
            .storage
            .keep_version(&copy.key, copy.compression, &indexed)
            .await?;
        Ok(Some(Box::new(KeptCopy {
            version,
            copy: copy.clone(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ArchiveKey, Compression};

    fn copy(size: u64, sha256: &str) -> ArchivedCopy {
        ArchivedCopy {
            key: ArchiveKey::from_stored("j/t.log").unwrap(),
            compression: Compression::None,
            size,
            sha256: sha256.into(),
            stored_size: Some(size),
            stored_sha256: Some(sha256.into()),
            fetched_at_ms: None,
        }
    }

    /// GUARD: only a download whose start differs from the copy (or that is
    /// shorter than it) is a rewrite; growth, new logs and empty copies are not.
    #[test]
    fn a_rewrite_is_a_start_that_differs() {
        let old = copy(5, "abc");
        assert!(!rewritten(None, false, None), "a new log");
        assert!(!rewritten(Some(&old), false, Some("abc")), "grown or same");
        assert!(!rewritten(Some(&old), true, None), "extended by a delta");
        assert!(
            !rewritten(Some(&copy(0, "e3b0")), false, None),
            "empty copy"
        );
        assert!(rewritten(Some(&old), false, Some("def")), "rewritten");
        assert!(rewritten(Some(&old), false, None), "truncated, or not seen");
    }
}
