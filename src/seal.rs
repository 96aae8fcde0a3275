//! Sealing, in one place. A sealed copy is final: malog never asks ModelArts
//! about its task again (no link, no conditional GET, no job details once every
//! task of the job is sealed). The planner, the pass's recorder and the index's
//! SQL all decide through this module.
//!
//! A copy is sealed when its job is final (Completed, Failed, Terminated; not
//! Abnormal, see [`JobPhase::is_final`]) and the copy was made or last confirmed
//! while the job was already final, at least the grace period after the job
//! ended: a job's end time is only as good as the API's `start_time + duration`,
//! so both conditions must hold. A job that ModelArts no longer has seals what
//! the archive holds of it, since nothing can change it any more.

use crate::model::JobPhase;

/// Whether a copy made or confirmed at `at_ms` of a log of a job in `phase`,
/// which ended at `ended_at_ms`, is final.
pub fn seals(phase: &JobPhase, ended_at_ms: Option<i64>, at_ms: i64, grace_ms: i64) -> bool {
    phase.is_final() && ended_at_ms.is_some_and(|end| at_ms >= end.saturating_add(grace_ms))
}

/// Whether a row describes a complete copy in storage: it names the object and
/// its digest. [`HOLDS_COPY_SQL`] is the same test over the `tasks` table.
pub fn holds_copy(storage_key: Option<&str>, sha256: Option<&str>) -> bool {
    storage_key.is_some() && sha256.is_some()
}

/// [`holds_copy`] as an SQL condition over the `tasks` table's columns.
pub const HOLDS_COPY_SQL: &str = "(storage_key IS NOT NULL AND sha256 IS NOT NULL)";

/// What a task of a job that ModelArts no longer has becomes: its copy, if the
/// archive holds one, is sealed (nothing can change it); without one it is lost.
pub fn seals_gone(holds_copy: bool) -> bool {
    holds_copy
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn only_final_phases_after_grace_seal() {
        assert!(seals(&JobPhase::Completed, Some(HOUR), 2 * HOUR, HOUR));
        assert!(!seals(&JobPhase::Completed, Some(HOUR), 2 * HOUR - 1, HOUR));
        assert!(!seals(&JobPhase::Completed, None, 10 * HOUR, HOUR));
        assert!(!seals(&JobPhase::Abnormal, Some(HOUR), 10 * HOUR, HOUR));
        assert!(!seals(&JobPhase::Running, Some(HOUR), 10 * HOUR, HOUR));
        // No overflow at the edge of time.
        assert!(!seals(
            &JobPhase::Failed,
            Some(i64::MAX),
            i64::MAX - 1,
            HOUR
        ));
    }

    #[test]
    fn a_copy_needs_both_key_and_digest() {
        assert!(holds_copy(Some("k"), Some("d")));
        assert!(!holds_copy(Some("k"), None));
        assert!(!holds_copy(None, Some("d")));
    }
}
