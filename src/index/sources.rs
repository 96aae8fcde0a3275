//! Which configured source each job came from (the `jobs.source` column of
//! migration 0006): the clash check a pass makes before recording a source's
//! jobs. The per-source counts of `status` and `/metrics` are in `records.rs`
//! beside the totals they split.

use super::{Index, IndexError};
use crate::model::JobId;
use rusqlite::OptionalExtension;

/// A job the index already holds under another source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOwner {
    pub job: JobId,
    /// The source that recorded it.
    pub source: String,
}

impl Index {
    /// Of `jobs`, those the index holds under a source other than `source`.
    /// A pass leaves them alone: a job id is the job's identity in the index,
    /// and the same id in two sources means one project is configured twice.
    pub fn foreign_jobs(
        &self,
        source: &str,
        jobs: &[JobId],
    ) -> Result<Vec<SourceOwner>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT source FROM jobs WHERE job_id = ?1 AND source <> ?2")
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for job in jobs {
            let owner: Option<String> = stmt
                .query_row((&job.0, source), |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(owner) = owner {
                out.push(SourceOwner {
                    job: job.clone(),
                    source: owner,
                });
            }
        }
        Ok(out)
    }
}
