//! Planning: a pure function from what the source reports and what the index
//! holds to the work of one run. No I/O, so `backfill --dry-run` just prints it.
//!
//! Per task:
//! - no archived copy (new, failed before, not ready, lost) → [`Action::Fetch`];
//! - a copy whose job is final, and which was made or last confirmed while the job
//!   was already final and after it ended plus the grace period → sealed: no API
//!   call now or later (both conditions, because a job's reported end time is
//!   only as good as the API's `start_time + duration`);
//! - any other copy → [`Action::Recheck`]: a fresh link and a conditional GET that
//!   downloads only when the log changed.

use crate::index::TaskRecord;
use crate::model::{Job, JobId, JobPhase, SourceValidators, TaskId};
use crate::storage::{ArchiveKey, KeyLayout, KeyParts};
use serde::Serialize;
use std::collections::HashMap;

/// What to do for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Download the whole log.
    Fetch,
    /// Ask whether the log changed since the archived copy was made.
    Recheck(SourceValidators),
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
}

impl PlanItem {
    /// Whether a copy made at `at_ms` of this task's log is final.
    pub fn seals_at(&self, at_ms: i64, grace_ms: i64) -> bool {
        seals(&self.job_phase, self.job_ended_at_ms, at_ms, grace_ms)
    }
}

fn seals(phase: &JobPhase, ended_at_ms: Option<i64>, at_ms: i64, grace_ms: i64) -> bool {
    phase.is_final() && ended_at_ms.is_some_and(|end| at_ms >= end.saturating_add(grace_ms))
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
    pub project_id: &'a str,
    pub layout: &'a KeyLayout,
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
            let action = match record {
                Some(r) if r.sealed => {
                    out.already_sealed += 1;
                    continue;
                }
                Some(r) if r.has_copy() => {
                    let confirmed_final = r
                        .job_phase
                        .as_deref()
                        .is_some_and(|p| JobPhase::parse(p).is_final());
                    let confirmed_at = r.checked_at_ms.unwrap_or(0);
                    if confirmed_final
                        && seals(&job.phase, job.ended_at_ms, confirmed_at, ctx.seal_grace_ms)
                    {
                        out.newly_sealed.push((job.id.clone(), task.clone()));
                        continue;
                    }
                    Action::Recheck(r.validators.clone())
                }
                _ => Action::Fetch,
            };
            let key = ctx.layout.render(KeyParts {
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
                action,
            });
        }
    }
    out
}

/// The plan of a dry run, kept as its inputs and planned one job at a time when
/// read: a preview of a project with a million tasks never holds a million
/// items at once (the printer streams them).
#[derive(Debug)]
pub struct PlanPreview {
    jobs: Vec<Job>,
    records: HashMap<(JobId, TaskId), TaskRecord>,
    project_id: String,
    layout: KeyLayout,
    now_ms: i64,
    seal_grace_ms: i64,
    /// Tasks to fetch or re-check.
    pub items: usize,
    /// Tasks that are or would now be sealed.
    pub sealed: usize,
    pub jobs_without_tasks: usize,
}

impl PlanPreview {
    /// Takes the inputs of [`plan`] and counts what it would do.
    pub fn new(
        jobs: Vec<Job>,
        records: HashMap<(JobId, TaskId), TaskRecord>,
        ctx: &PlanContext<'_>,
    ) -> PlanPreview {
        let mut preview = PlanPreview {
            jobs,
            records,
            project_id: ctx.project_id.to_owned(),
            layout: ctx.layout.clone(),
            now_ms: ctx.now_ms,
            seal_grace_ms: ctx.seal_grace_ms,
            items: 0,
            sealed: 0,
            jobs_without_tasks: 0,
        };
        let (mut items, mut sealed, mut without) = (0, 0, 0);
        for plan in preview.by_job() {
            items += plan.items.len();
            sealed += plan.newly_sealed.len() + plan.already_sealed;
            without += plan.jobs_without_tasks.len();
        }
        preview.items = items;
        preview.sealed = sealed;
        preview.jobs_without_tasks = without;
        preview
    }

    /// The plan, one job at a time.
    pub fn by_job(&self) -> impl Iterator<Item = FetchPlan> + '_ {
        let ctx = PlanContext {
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
            },
            key: i.key.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            job_id: job.into(),
            job_name: String::new(),
            task_id: task.into(),
            state: if fetched_at_ms.is_some() {
                "archived"
            } else {
                "failed"
            }
            .into(),
            size: fetched_at_ms.map(|_| 10),
            sha256: fetched_at_ms.map(|_| "ab".into()),
            location: None,
            fetched_at: None,
            job_phase: Some("Completed".into()),
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
        };
        ((JobId::from(job), TaskId::from(task)), r)
    }

    fn run(jobs: &[Job], records: Vec<((JobId, TaskId), TaskRecord)>) -> FetchPlan {
        let layout = KeyLayout::parse(crate::config::defaults::LAYOUT).unwrap();
        let ctx = PlanContext {
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
        r.job_phase = Some("Running".into());
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
    }

    #[test]
    fn seals_at_uses_grace() {
        let jobs = [job("a", JobPhase::Failed, Some(HOUR), &["worker-0"])];
        let item = &run(&jobs, vec![]).items[0];
        assert!(!item.seals_at(HOUR + 10, HOUR));
        assert!(item.seals_at(2 * HOUR, HOUR));
    }
}
