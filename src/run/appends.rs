//! The start and the end of a pass: appends in place left unfinished (a
//! crash, or an index update that failed) are cut back to what the index
//! committed, and the intents of committed ones are forgotten. At the start
//! this happens before anything downloads, extends or seals a log
//! (docs/RELIABILITY.md, "Growing a copy in place"). Only the holder of the
//! writer locks does this; readers meanwhile stop at the committed size.

use super::{Archiver, RunError};
use crate::storage::RolledBack;

impl Archiver {
    /// Cuts every unfinished append back to the stored size its index row
    /// commits, and forgets its intent. A file whose row is gone, or says
    /// less than the append started from, is left as it is and logged; so is
    /// one that cannot be settled.
    pub(super) async fn roll_back_appends(&self) -> Result<(), RunError> {
        for pending in self.storage.pending_appends().await? {
            let key = pending.key.clone();
            let indexed = self.with_index(move |ix| ix.committed_size(&key)).await?;
            let target = indexed.filter(|size| *size >= pending.committed);
            if target.is_none() {
                tracing::warn!(key = %pending.key, committed = pending.committed, indexed,
                    "an unfinished append whose copy the index no longer describes; file left as it is");
            }
            // One intent that cannot be settled (a damaged intent file, a
            // file that cannot be cut) is that log's problem: it is logged and
            // tried again next pass; the pass and the other logs go on.
            match self.storage.roll_back_append(&pending, target).await {
                Ok(RolledBack::Cut(bytes)) => tracing::info!(key = %pending.key, bytes,
                    "cut an unfinished append back to the committed copy"),
                Ok(RolledBack::Short) => tracing::warn!(key = %pending.key,
                    "the copy is shorter than the index says; the next download stores it whole"),
                Ok(RolledBack::Intact | RolledBack::Replaced) => {}
                Err(e) => tracing::warn!(key = %pending.key, error = %e,
                    "cannot settle an unfinished append; trying again next pass"),
            }
        }
        Ok(())
    }
}
