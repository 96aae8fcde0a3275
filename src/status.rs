//! `malog status`: what the index says about the service, for an operator.
//!
//! Last passes (start, duration, outcome, counts), the next scheduled pass, tasks
//! by state, failing tasks with their last error, and retention risks: tasks of
//! jobs that ended more than `[alerts] retention_warn_after` ago and are not
//! archived, which ModelArts deletes about 30 days after the job ended. Reads the
//! index through a read-only connection, so it works while the daemon writes.

use crate::config::Config;
use crate::index::{Index, IndexError, QueryFilter, RetentionRisk, RunSummary, StateCount};
use crate::model::TaskState;
use crate::output::{new_table, time_text};
use crate::source::MODELARTS_LOG_RETENTION;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Passes shown.
const PASSES_SHOWN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub index: String,
    /// The configured sources.
    pub sources: Vec<SourceLine>,
    /// The six-field cron expression, UTC.
    pub schedule: String,
    /// When the daemon (if running with this config) starts its next pass.
    pub next_pass: Option<String>,
    /// End of the last pass whose outcome was ok.
    pub last_success: Option<String>,
    /// Newest first.
    pub passes: Vec<PassLine>,
    /// By source, then state.
    pub tasks_by_state: Vec<StateCount>,
    /// Tasks whose last attempt failed (retried by the next pass) or that are lost.
    pub failing: Vec<FailingTask>,
    pub retention_warn_after: String,
    pub retention_risks: Vec<RiskLine>,
}

#[derive(Debug, Serialize)]
pub struct SourceLine {
    pub name: String,
    pub endpoint: String,
    pub project_id: String,
    pub region: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PassLine {
    pub run_id: i64,
    pub started_at: String,
    /// `None` while running, or when its process died.
    pub duration_seconds: Option<f64>,
    /// `ok`, `partial`, `failed`, or `unfinished` (running, or its process died).
    pub outcome: String,
    pub jobs: u64,
    pub tasks: u64,
    pub fetched: u64,
    pub unchanged: u64,
    pub sealed: u64,
    pub not_ready: u64,
    pub failed: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FailingTask {
    pub source: String,
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
    pub state: TaskState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RiskLine {
    pub source: String,
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
    pub state: TaskState,
    pub job_ended_at: String,
    /// About when ModelArts deletes the log (30 days after the job ended).
    pub deleted_around: String,
    pub has_copy: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl From<RunSummary> for PassLine {
    fn from(r: RunSummary) -> PassLine {
        PassLine {
            run_id: r.run_id,
            started_at: time_text(r.started_at_ms),
            duration_seconds: r
                .ended_at_ms
                .map(|end| (end - r.started_at_ms).max(0) as f64 / 1000.0),
            outcome: r.outcome.unwrap_or_else(|| "unfinished".to_owned()),
            jobs: r.jobs,
            tasks: r.tasks,
            fetched: r.fetched,
            unchanged: r.unchanged,
            sealed: r.sealed,
            not_ready: r.not_ready,
            failed: r.failed,
            bytes: r.bytes,
            error: r.error,
        }
    }
}

impl From<RetentionRisk> for RiskLine {
    fn from(r: RetentionRisk) -> RiskLine {
        RiskLine {
            job_ended_at: time_text(r.job_ended_at_ms),
            deleted_around: time_text(
                r.job_ended_at_ms + MODELARTS_LOG_RETENTION.as_millis() as i64,
            ),
            source: r.source,
            job_id: r.job_id,
            job_name: r.job_name,
            task_id: r.task_id,
            state: r.state,
            has_copy: r.has_copy,
            attempts: r.attempts,
            last_error: r.last_error,
        }
    }
}

/// Reads everything `status` shows. Blocking (SQLite).
pub fn collect(config: &Config, now: DateTime<Utc>) -> Result<StatusReport, IndexError> {
    let index = Index::open_read_only(&config.index_path)?;
    let warn_after = config.alerts.retention_warn_after;
    let cutoff_ms =
        now.timestamp_millis() - i64::try_from(warn_after.as_millis()).unwrap_or(i64::MAX);
    let mut failing = Vec::new();
    for state in [TaskState::Failed, TaskState::Lost] {
        let filter = QueryFilter {
            state: Some(state),
            ..QueryFilter::default()
        };
        failing.extend(index.query(&filter)?.into_iter().map(|r| FailingTask {
            source: r.source,
            job_id: r.job_id,
            job_name: r.job_name,
            task_id: r.task_id,
            state: r.state,
            attempts: r.attempts,
            last_error: r.last_error,
        }));
    }
    Ok(StatusReport {
        index: config.index_path.display().to_string(),
        sources: config
            .sources
            .iter()
            .map(|s| SourceLine {
                name: s.name().to_owned(),
                endpoint: s.modelarts.endpoint.to_string(),
                project_id: s.modelarts.project_id.clone(),
                region: s.modelarts.region.clone(),
            })
            .collect(),
        schedule: config.schedule.cron.to_string(),
        next_pass: config
            .schedule
            .cron
            .next_after(now)
            .map(|t| time_text(t.timestamp_millis())),
        last_success: index
            .last_run_with_outcome("ok")?
            .and_then(|r| r.ended_at_ms)
            .map(time_text),
        passes: index
            .run_history(PASSES_SHOWN)?
            .into_iter()
            .map(PassLine::from)
            .collect(),
        tasks_by_state: index.state_counts()?,
        failing,
        retention_warn_after: humantime::format_duration(warn_after).to_string(),
        retention_risks: index
            .retention_risks(cutoff_ms)?
            .into_iter()
            .map(RiskLine::from)
            .collect(),
    })
}

/// Writes the report to stdout.
pub fn print(report: &StatusReport, format: StatusFormat) -> Result<(), serde_json::Error> {
    match format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        StatusFormat::Table => print_table(report),
    }
    Ok(())
}

fn print_table(r: &StatusReport) {
    println!("index:    {}", r.index);
    println!(
        "schedule: {} (UTC); next pass {}",
        r.schedule,
        r.next_pass.as_deref().unwrap_or("never")
    );
    println!(
        "last ok pass ended: {}",
        r.last_success.as_deref().unwrap_or("never")
    );

    for s in &r.sources {
        println!(
            "source {}: {} project {}{}",
            s.name,
            s.endpoint,
            s.project_id,
            s.region
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }

    print_passes(&r.passes);
    print_states(&r.tasks_by_state);
    print_failing(&r.failing);
    print_risks(r);
}

fn print_passes(passes: &[PassLine]) {
    println!("\nlast passes:");
    if passes.is_empty() {
        println!("  none yet");
    } else {
        let mut t = new_table(&[
            "run",
            "started",
            "duration",
            "outcome",
            "jobs",
            "tasks",
            "fetched",
            "unchanged",
            "sealed",
            "not ready",
            "failed",
            "bytes",
        ]);
        for p in passes {
            t.add_row(vec![
                p.run_id.to_string(),
                p.started_at.clone(),
                p.duration_seconds
                    .map(crate::output::human_duration)
                    .unwrap_or_default(),
                match &p.error {
                    Some(e) => format!("{}: {e}", p.outcome),
                    None => p.outcome.clone(),
                },
                p.jobs.to_string(),
                p.tasks.to_string(),
                p.fetched.to_string(),
                p.unchanged.to_string(),
                p.sealed.to_string(),
                p.not_ready.to_string(),
                p.failed.to_string(),
                indicatif::HumanBytes(p.bytes).to_string(),
            ]);
        }
        println!("{t}");
    }
}

fn print_states(counts: &[StateCount]) {
    if counts.is_empty() {
        println!("\ntasks by state: none");
        return;
    }
    println!("\ntasks by state:");
    let mut sources: Vec<&str> = counts.iter().map(|c| c.source.as_str()).collect();
    sources.dedup();
    for source in sources {
        let states: Vec<String> = counts
            .iter()
            .filter(|c| c.source == source)
            .map(|c| {
                if c.sealed > 0 {
                    format!("{} {} ({} sealed)", c.state, c.tasks, c.sealed)
                } else {
                    format!("{} {}", c.state, c.tasks)
                }
            })
            .collect();
        println!("  {source}: {}", states.join(", "));
    }
}

fn print_failing(failing: &[FailingTask]) {
    println!("\nfailing tasks: {}", failing.len());
    if !failing.is_empty() {
        let mut t = new_table(&[
            "source",
            "job_id",
            "job_name",
            "task_id",
            "state",
            "attempts",
            "last_error",
        ]);
        for f in failing {
            t.add_row(vec![
                f.source.clone(),
                f.job_id.clone(),
                f.job_name.clone(),
                f.task_id.clone(),
                f.state.to_string(),
                f.attempts.to_string(),
                f.last_error.clone().unwrap_or_default(),
            ]);
        }
        println!("{t}");
    }
}

fn print_risks(r: &StatusReport) {
    println!(
        "\nretention risks (job ended more than {} ago, log not archived): {}",
        r.retention_warn_after,
        r.retention_risks.len()
    );
    if !r.retention_risks.is_empty() {
        let mut t = new_table(&[
            "source",
            "job_id",
            "job_name",
            "task_id",
            "state",
            "job ended",
            "deleted around",
            "last_error",
        ]);
        for k in &r.retention_risks {
            t.add_row(vec![
                k.source.clone(),
                k.job_id.clone(),
                k.job_name.clone(),
                k.task_id.clone(),
                k.state.to_string(),
                k.job_ended_at.clone(),
                k.deleted_around.clone(),
                k.last_error.clone().unwrap_or_default(),
            ]);
        }
        println!("{t}");
    }
}
