//! Planning: a pure function from what the source reports and what the index
//! holds to the work of one run. No I/O, so `backfill --dry-run` just prints it.
//!
//! Per task:
//! - no archived copy (new, failed before, not ready, lost) → [`Action::Fetch`];
//! - a copy that [`crate::seal`] says is final → sealed: no API call now or later;
//! - any other copy → [`Action::Recheck`]: a fresh link and a conditional GET that
//!   downloads only when the log changed. A copy with a growth record (and a
//!   log longer than the overlap) carries it as [`PlanItem::base`]: if the log
//!   grew, only the new bytes are fetched and appended;
//! - a copy extended by such deltas, of a job that is final and past the grace
//!   period → [`Action::Confirm`]: one full download whose sha256 must equal the
//!   copy's before the copy is sealed (a mismatch replaces the copy).

use crate::index::TaskRecord;
use crate::model::{Job, JobId, JobPhase, SourceValidators, TaskId};
use crate::seal::seals;
use crate::storage::{ArchiveKey, Base, Compression, Growth, KeyLayout, KeyParts, OVERLAP};
use serde::Serialize;
use std::collections::HashMap;

/// What to do for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Download the whole log.
    Fetch,
    /// Ask whether the log changed since the archived copy was made.
    Recheck(SourceValidators),
    /// Download the whole final log and compare it with a copy built from
    /// deltas: with the size and sha256 the index has for it, and with the
    /// stored object under `stored` (read back, decoded as `compression`).
    Confirm {
        validators: SourceValidators,
        size: u64,
        sha256: String,
        stored: Option<ArchiveKey>,
        /// Its size as the index committed it.
        stored_size: Option<u64>,
        compression: Compression,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    pub job: JobId,
    pub job_name: String,
    pub job_phase: JobPhase,
    pub job_ended_at_ms: Option<i64>,
    pub task: TaskId,
    pub key: ArchiveKey,
    pub action: Action,
    /// The archived copy a grown log may be appended to (re-checks only).
    pub base: Option<Base>,
    /// The archived copy was extended by a delta and is not confirmed yet: it
    /// must not be sealed before [`Action::Confirm`] has matched it.
    pub unconfirmed: bool,
    /// The archived copy a download may replace (re-checks and
    /// confirmations): a log whose new start differs from it is a rewrite,
    /// and the copy is kept as a version.
    pub archived: Option<ArchivedCopy>,
}

/// An archived copy as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedCopy {
    /// The key it is stored under (with the compression suffix).
    pub key: ArchiveKey,
    pub compression: Compression,
    /// The original log.
    pub size: u64,
    pub sha256: String,
    /// The stored object.
    pub stored_size: Option<u64>,
    pub stored_sha256: Option<String>,
    /// When the copy became durable.
    pub fetched_at_ms: Option<i64>,
}

impl ArchivedCopy {
    /// The copy a row describes, if it holds one under a valid key.
    fn of(r: &TaskRecord) -> Option<ArchivedCopy> {
        if !r.has_copy() {
            return None;
        }
        Some(ArchivedCopy {
            key: ArchiveKey::from_stored(r.storage_key.as_deref()?)?,
            compression: r.compression,
            size: r.size?,
            sha256: r.sha256.clone()?,
            stored_size: r.stored_size,
            stored_sha256: r.stored_sha256.clone(),
            fetched_at_ms: r.fetched_at_ms,
        })
    }
}

impl PlanItem {
    /// Whether a copy made at `at_ms` of this task's log is final.
    pub fn seals_at(&self, at_ms: i64, grace_ms: i64) -> bool {
        seals(&self.job_phase, self.job_ended_at_ms, at_ms, grace_ms)
    }
}

/// The work of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchPlan {
    pub items: Vec<PlanItem>,
    /// Tasks that the planner seals now (their copy is final); to be recorded.
    pub newly_sealed: Vec<(JobId, TaskId)>,
    /// Tasks already sealed in earlier runs.
    pub already_sealed: usize,
    /// Jobs that list no task yet (still being created).
    pub jobs_without_tasks: Vec<JobId>,
}

/// Inputs that do not come from the source or the index.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    /// The source's name and region, for the key layout.
    pub source: &'a str,
    pub region: &'a str,
    pub project_id: &'a str,
    pub layout: &'a KeyLayout,
    /// When the pass started: a final log due for its confirming download is
    /// one that would be sealed now.
    pub now_ms: i64,
    pub seal_grace_ms: i64,
}

/// Plans one run over `jobs`, given the index rows of their tasks.
pub fn plan(
    jobs: &[Job],
    records: &HashMap<(JobId, TaskId), TaskRecord>,
    ctx: &PlanContext<'_>,
) -> FetchPlan {
    let mut out = FetchPlan::default();
    for job in jobs {
        if job.tasks.is_empty() {
            out.jobs_without_tasks.push(job.id.clone());
            continue;
        }
        for task in &job.tasks {
            let record = records.get(&(job.id.clone(), task.clone()));
            let mut base = None;
            let action = match record {
                Some(r) if r.sealed => {
                    out.already_sealed += 1;
                    continue;
                }
                Some(r) if r.has_copy() => {
                    let confirmed_final = r.job_phase.as_ref().is_some_and(JobPhase::is_final);
                    let confirmed_at = r.checked_at_ms.unwrap_or(0);
                    let sealable =
                        seals(&job.phase, job.ended_at_ms, ctx.now_ms, ctx.seal_grace_ms);
                    if r.unconfirmed && sealable {
                        Action::Confirm {
                            validators: r.validators.clone(),
                            size: r.size.unwrap_or(0),
                            sha256: r.sha256.clone().unwrap_or_default(),
                            stored: r.storage_key.as_deref().and_then(ArchiveKey::from_stored),
                            stored_size: r.stored_size,
                            compression: r.compression,
                        }
                    } else if !r.unconfirmed
                        && confirmed_final
                        && seals(&job.phase, job.ended_at_ms, confirmed_at, ctx.seal_grace_ms)
                    {
                        out.newly_sealed.push((job.id.clone(), task.clone()));
                        continue;
                    } else {
                        base = growth_base(r);
                        Action::Recheck(r.validators.clone())
                    }
                }
                _ => Action::Fetch,
            };
            let key = ctx.layout.render(KeyParts {
                source: ctx.source,
                region: ctx.region,
                project_id: ctx.project_id,
                job_id: &job.id.0,
                job_name: &job.name,
                task_id: &task.0,
            });
            out.items.push(PlanItem {
                job: job.id.clone(),
                job_name: job.name.clone(),
                job_phase: job.phase.clone(),
                job_ended_at_ms: job.ended_at_ms,
                task: task.clone(),
                key,
                archived: match action {
                    Action::Fetch => None,
                    _ => record.and_then(ArchivedCopy::of),
                },
                action,
                base,
                unconfirmed: record.is_some_and(|r| r.unconfirmed),
            });
        }
    }
    out
}

/// The copy a grown log may be appended to: one with a growth record and
/// more than [`OVERLAP`] bytes (a shorter one costs no more to download whole).
fn growth_base(r: &TaskRecord) -> Option<Base> {
    let size = r.size?;
    if size <= OVERLAP {
        return None;
    }
    Some(Base {
        key: ArchiveKey::from_stored(r.storage_key.as_deref()?)?,
        size,
        stored_size: r.stored_size?,
        stored_sha256: r.stored_sha256.clone()?,
        compression: r.compression,
        growth: Growth::decode(r.growth.as_deref()?)?,
    })
}

/// The plan of a dry run, kept as its inputs and planned one job at a time when
/// read: a preview of a project with a million tasks never holds a million
/// items at once (the printer streams them). One group per source.
#[derive(Debug)]
pub struct PlanPreview {
    groups: Vec<PreviewGroup>,
    /// Tasks to fetch or re-check.
    pub items: usize,
    /// Tasks that are or would now be sealed.
    pub sealed: usize,
    pub jobs_without_tasks: usize,
}

/// The inputs of [`plan`] for one source.
#[derive(Debug)]
struct PreviewGroup {
    jobs: Vec<Job>,
    records: HashMap<(JobId, TaskId), TaskRecord>,
    source: String,
    region: String,
    project_id: String,
    layout: KeyLayout,
    now_ms: i64,
    seal_grace_ms: i64,
}

impl PreviewGroup {
    fn by_job(&self) -> impl Iterator<Item = FetchPlan> + '_ {
        let ctx = PlanContext {
            source: &self.source,
            region: &self.region,
            project_id: &self.project_id,
            layout: &self.layout,
            now_ms: self.now_ms,
            seal_grace_ms: self.seal_grace_ms,
        };
        self.jobs
            .iter()
            .map(move |job| plan(std::slice::from_ref(job), &self.records, &ctx))
    }
}

impl PlanPreview {
    /// Takes the inputs of [`plan`] and counts what it would do.
    pub fn new(
        jobs: Vec<Job>,
        records: HashMap<(JobId, TaskId), TaskRecord>,
        ctx: &PlanContext<'_>,
    ) -> PlanPreview {
        let group = PreviewGroup {
            jobs,
            records,
            source: ctx.source.to_owned(),
            region: ctx.region.to_owned(),
            project_id: ctx.project_id.to_owned(),
            layout: ctx.layout.clone(),
            now_ms: ctx.now_ms,
            seal_grace_ms: ctx.seal_grace_ms,
        };
        let (mut items, mut sealed, mut without) = (0, 0, 0);
        for plan in group.by_job() {
            items += plan.items.len();
            sealed += plan.newly_sealed.len() + plan.already_sealed;
            without += plan.jobs_without_tasks.len();
        }
        PlanPreview {
            groups: vec![group],
            items,
            sealed,
            jobs_without_tasks: without,
        }
    }

    /// Both previews: this one's jobs, then `other`'s (another source).
    pub fn merge(mut self, other: PlanPreview) -> PlanPreview {
        self.groups.extend(other.groups);
        self.items += other.items;
        self.sealed += other.sealed;
        self.jobs_without_tasks += other.jobs_without_tasks;
        self
    }

    /// The plan, one job at a time.
    pub fn by_job(&self) -> impl Iterator<Item = FetchPlan> + '_ {
        self.groups.iter().flat_map(PreviewGroup::by_job)
    }
}

/// One line of `backfill --dry-run --format json`.
#[derive(Debug, Serialize)]
pub struct PlanLine<'a> {
    pub job_id: &'a str,
    pub job_name: &'a str,
    pub job_phase: &'a str,
    pub task_id: &'a str,
    pub action: &'static str,
    pub key: &'a str,
}

impl FetchPlan {
    pub fn lines(&self) -> impl Iterator<Item = PlanLine<'_>> {
        self.items.iter().map(|i| PlanLine {
            job_id: &i.job.0,
            job_name: &i.job_name,
            job_phase: i.job_phase.as_str(),
            task_id: &i.task.0,
            action: match i.action {
                Action::Fetch => "fetch",
                Action::Recheck(_) => "recheck",
                Action::Confirm { .. } => "confirm",
            },
            key: i.key.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskState;

    const HOUR: i64 = 3_600_000;

    fn job(id: &str, phase: JobPhase, ended: Option<i64>, tasks: &[&str]) -> Job {
        Job {
            id: JobId::from(id),
            name: format!("name-{id}"),
            phase,
            created_at_ms: 0,
            ended_at_ms: ended,
            tasks: tasks.iter().map(|t| TaskId::from(*t)).collect(),
            record: None,
        }
    }

    fn record(
        job: &str,
        task: &str,
        fetched_at_ms: Option<i64>,
        sealed: bool,
    ) -> ((JobId, TaskId), TaskRecord) {
        let r = TaskRecord {
            source: String::new(),
            job_id: job.into(),
            job_name: String::new(),
            task_id: task.into(),
            state: if fetched_at_ms.is_some() {
                TaskState::Archived
            } else {
                TaskState::Failed
            },
            size: fetched_at_ms.map(|_| 10),
            sha256: fetched_at_ms.map(|_| "ab".into()),
            location: None,
            fetched_at: None,
            job_phase: Some(JobPhase::Completed),
            attempts: 0,
            last_error: None,
            sealed,
            storage_key: fetched_at_ms.map(|_| format!("{job}/{task}")),
            fetched_at_ms,
            checked_at_ms: fetched_at_ms,
            validators: SourceValidators {
                etag: Some("\"e\"".into()),
                ..Default::default()
            },
            stored_size: fetched_at_ms.map(|_| 10),
            stored_sha256: fetched_at_ms.map(|_| "ab".into()),
            compression: Compression::None,
            growth: None,
            unconfirmed: false,
        };
        ((JobId::from(job), TaskId::from(task)), r)
    }

    fn run(jobs: &[Job], records: Vec<((JobId, TaskId), TaskRecord)>) -> FetchPlan {
        let layout = KeyLayout::parse(crate::config::defaults::LAYOUT).unwrap();
        let ctx = PlanContext {
            source: "s",
            region: "r",
            project_id: "p",
            layout: &layout,
            now_ms: 100 * HOUR,
            seal_grace_ms: HOUR,
        };
        plan(jobs, &records.into_iter().collect(), &ctx)
    }

    #[test]
    fn new_tasks_are_fetched_and_empty_jobs_reported() {
        let p = run(
            &[
                job("a", JobPhase::Running, None, &["worker-0", "worker-1"]),
                job("b", JobPhase::Creating, None, &[]),
            ],
            vec![],
        );
        assert_eq!(p.items.len(), 2);
        assert!(p.items.iter().all(|i| i.action == Action::Fetch));
        assert_eq!(p.items[0].key.as_str(), "p/a/worker-0.log");
        assert_eq!(p.jobs_without_tasks, vec![JobId::from("b")]);
    }

    /// GUARD: a final job's copy made after end + grace is sealed without any API call.
    #[test]
    fn final_copy_after_grace_is_sealed() {
        let jobs = [job(
            "a",
            JobPhase::Completed,
            Some(10 * HOUR),
            &["worker-0"],
        )];
        let p = run(&jobs, vec![record("a", "worker-0", Some(12 * HOUR), false)]);
        assert!(p.items.is_empty());
        assert_eq!(
            p.newly_sealed,
            vec![(JobId::from("a"), TaskId::from("worker-0"))]
        );
    }

    #[test]
    fn copy_within_grace_or_running_is_rechecked() {
        let jobs = [
            job("a", JobPhase::Completed, Some(10 * HOUR), &["worker-0"]),
            job("b", JobPhase::Running, None, &["worker-0"]),
            job("c", JobPhase::Abnormal, None, &["worker-0"]),
        ];
        let p = run(
            &jobs,
            vec![
                record("a", "worker-0", Some(10 * HOUR + 1), false),
                record("b", "worker-0", Some(99 * HOUR), false),
                record("c", "worker-0", Some(99 * HOUR), false),
            ],
        );
        assert_eq!(p.items.len(), 3);
        assert!(
            p.items
                .iter()
                .all(|i| matches!(i.action, Action::Recheck(_)))
        );
        assert!(p.newly_sealed.is_empty());
    }

    /// GUARD: a copy made while the job was still running is re-checked once more,
    /// whatever end time the API reports.
    #[test]
    fn copy_made_while_running_is_rechecked_before_sealing() {
        let jobs = [job("a", JobPhase::Completed, Some(HOUR), &["worker-0"])];
        let (k, mut r) = record("a", "worker-0", Some(50 * HOUR), false);
        r.job_phase = Some(JobPhase::Running);
        let p = run(&jobs, vec![(k, r)]);
        assert!(p.newly_sealed.is_empty());
        assert!(matches!(p.items[0].action, Action::Recheck(_)));
    }

    #[test]
    fn sealed_rows_are_skipped_and_failed_rows_refetched() {
        let jobs = [job(
            "a",
            JobPhase::Completed,
            Some(HOUR),
            &["worker-0", "worker-1"],
        )];
        let p = run(
            &jobs,
            vec![
                record("a", "worker-0", Some(2 * HOUR), true),
                record("a", "worker-1", None, false),
            ],
        );
        assert_eq!(p.already_sealed, 1);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].action, Action::Fetch);
        assert!(p.items[0].archived.is_none(), "no copy to keep");
    }

    #[test]
    fn seals_at_uses_grace() {
        let jobs = [job("a", JobPhase::Failed, Some(HOUR), &["worker-0"])];
        let item = &run(&jobs, vec![]).items[0];
        assert!(!item.seals_at(HOUR + 10, HOUR));
        assert!(item.seals_at(2 * HOUR, HOUR));
    }

    fn growable(job: &str, task: &str, fetched_at_ms: i64) -> ((JobId, TaskId), TaskRecord) {
        let (k, mut r) = record(job, task, Some(fetched_at_ms), false);
        let state = crate::storage::tests::growth_record(b"a log");
        r.size = Some(OVERLAP + 1);
        r.stored_size = r.size;
        r.growth = Some(state);
        (k, r)
    }

    /// GUARD: a re-checked copy with a growth record (longer than the overlap)
    /// may be extended; without one, or too short, it is downloaded whole.
    #[test]
    fn growable_copies_carry_their_base() {
        let jobs = [job("a", JobPhase::Running, None, &["w0", "w1", "w2"])];
        let (k, mut short) = growable("a", "w2", HOUR);
        short.size = Some(OVERLAP);
        let p = run(
            &jobs,
            vec![
                growable("a", "w0", HOUR),
                record("a", "w1", Some(HOUR), false),
                (k, short),
            ],
        );
        let base = p.items[0].base.as_ref().expect("w0 can grow");
        assert_eq!((base.size, base.key.as_str()), (OVERLAP + 1, "a/w0"));
        assert!(matches!(p.items[0].action, Action::Recheck(_)));
        assert!(p.items[1].base.is_none());
        assert!(p.items[2].base.is_none());
        // Every re-check knows the copy it may replace (a rewrite keeps it).
        let copy = p.items[1].archived.as_ref().expect("w1 has a copy");
        assert_eq!(
            (copy.key.as_str(), copy.size, copy.sha256.as_str()),
            ("a/w1", 10, "ab")
        );
    }

    /// GUARD: a copy built from deltas is never sealed unconfirmed: once its job
    /// is final past the grace period it gets one full download (Confirm);
    /// before that it is re-checked (and may still grow).
    #[test]
    fn unconfirmed_copy_is_confirmed_before_sealing() {
        let jobs = [
            job("a", JobPhase::Completed, Some(10 * HOUR), &["w0"]),
            job("b", JobPhase::Completed, Some(100 * HOUR - 1), &["w0"]),
        ];
        let (ka, mut a) = growable("a", "w0", 12 * HOUR);
        a.unconfirmed = true;
        let (kb, mut b) = growable("b", "w0", 12 * HOUR);
        b.unconfirmed = true;
        let p = run(&jobs, vec![(ka, a), (kb, b)]);
        assert!(p.newly_sealed.is_empty());
        match &p.items[0].action {
            Action::Confirm { size, sha256, .. } => {
                assert_eq!((*size, sha256.as_str()), (OVERLAP + 1, "ab"));
            }
            other => panic!("expected a confirmation, got {other:?}"),
        }
        assert!(p.items[0].unconfirmed && p.items[0].base.is_none());
        assert!(matches!(p.items[1].action, Action::Recheck(_)));
        assert!(p.items[1].base.is_some());
        assert_eq!(p.lines().next().unwrap().action, "confirm");
    }
}
