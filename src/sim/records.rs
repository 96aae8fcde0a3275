//! Job events (`ListTrainingJobEvents`, §2.9) and task metrics
//! (`ShowTrainingJobMetrics`, §2.10) of the simulated jobs: made up from each
//! job's phase and tasks, deterministic, paged like the documented API (page
//! index `offset`, `limit` 1–100, `total`).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::api::{admit, job_not_found, json_ok, modelarts_error};
use super::faults::FaultTarget;
use super::scenario::{SimJob, is_terminal};
use super::state::Shared;

/// Largest page of events (documented maximum).
const MAX_EVENTS_LIMIT: usize = 100;

/// Every event of `job`, newest first: creation, scheduling, one start per task,
/// and for a finished job one stop per task and the job's end (with the reason
/// a failed job failed).
pub(crate) fn job_events(job: &SimJob) -> Vec<Value> {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let event = |ms: i64, level: &str, source: &str, message: String| json!({"time": at(ms), "level": level, "message": message, "source": source});
    let mut events = vec![event(
        job.create_time_ms,
        "Info",
        "Job",
        "Training job created.".to_owned(),
    )];
    if job.start_time_ms > 0 {
        events.push(event(
            job.start_time_ms - 1_000,
            "Info",
            "K8S",
            format!(
                "Scheduled {} pod(s) on flavor modelarts.p3.large.public.",
                job.tasks.len()
            ),
        ));
        for task in &job.tasks {
            events.push(event(
                job.start_time_ms,
                "Info",
                "Task",
                format!("[{}] training started.", task.id),
            ));
        }
    }
    if is_terminal(&job.phase) && job.start_time_ms > 0 {
        let end = job.start_time_ms + job.duration_ms;
        for (i, task) in job.tasks.iter().enumerate() {
            let failed = job.phase == "Failed" && i == 0;
            let (level, message) = if failed {
                (
                    "Error",
                    format!(
                        "[{}] exited with code 1: RuntimeError: CUDA out of memory.",
                        task.id
                    ),
                )
            } else {
                ("Info", format!("[{}] exited with code 0.", task.id))
            };
            events.push(event(end - 500, level, "Task", message));
        }
        let (level, message) = match job.phase.as_str() {
            "Failed" => ("Error", "Training job failed."),
            "Completed" => ("Info", "Training job completed."),
            _ => ("Warning", "Training job stopped."),
        };
        events.push(event(end, level, "Job", message.to_owned()));
    }
    events.reverse();
    events
}

/// One minute's averages for the whole run: CPU, memory and GPU use.
fn task_metrics(job: &SimJob, task_index: usize) -> Value {
    let minutes = (job.duration_ms / 60_000).clamp(1, 60) as usize;
    let series = |base: f64| -> Vec<f64> {
        (0..minutes)
            .map(|m| ((base + ((m * 7 + task_index * 3) % 20) as f64) * 100.0).round() / 100.0)
            .collect()
    };
    json!({"metrics": [
        {"metric": "cpuUsage", "value": series(35.0)},
        {"metric": "memUsage", "value": series(50.0)},
        {"metric": "gpuUtil", "value": series(70.0)},
        {"metric": "gpuMemUsage", "value": series(60.0)},
    ]})
}

fn query_number(req: &Request, key: &str) -> Option<Result<usize, ()>> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.parse::<usize>().map_err(|_| ()))
}

pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    Path((project_id, job_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let offset = query_number(&req, "offset").unwrap_or(Ok(0));
    let limit = query_number(&req, "limit").unwrap_or(Ok(50));
    let (_, fault) = match admit(
        &shared,
        req,
        &shared.counters.record_requests,
        &project_id,
        FaultTarget::Events,
        Some(&job_id),
        None,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let (Ok(offset), Ok(limit)) = (offset, limit) else {
        return bad_request();
    };
    if !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
        return bad_request();
    }
    let Some(all) = shared.lock().job(&job_id).map(job_events) else {
        return job_not_found(&job_id);
    };
    let page: Vec<Value> = all
        .iter()
        .skip(offset.saturating_mul(limit))
        .take(limit)
        .cloned()
        .collect();
    let body = json!({
        "total": all.len(),
        "limit": limit,
        "offset": offset,
        "order": "desc",
        "events": page,
    });
    json_ok(&body, fault.as_ref())
}

pub(crate) async fn metrics(
    State(shared): State<Arc<Shared>>,
    Path((project_id, job_id, task_id)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let (_, fault) = match admit(
        &shared,
        req,
        &shared.counters.record_requests,
        &project_id,
        FaultTarget::Metrics,
        Some(&job_id),
        Some(&task_id),
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let body = {
        let state = shared.lock();
        let Some(job) = state.job(&job_id) else {
            return job_not_found(&job_id);
        };
        match job.tasks.iter().position(|t| t.id == task_id) {
            Some(i) => task_metrics(job, i),
            None => {
                return modelarts_error(
                    StatusCode::NOT_FOUND,
                    "ModelArts.2765",
                    &format!("Task {task_id} not found."),
                    "Check the task id.",
                );
            }
        }
    };
    json_ok(&body, fault.as_ref())
}

fn bad_request() -> Response {
    modelarts_error(
        StatusCode::BAD_REQUEST,
        "ModelArts.50004000",
        "Bad request.",
        "Check offset and limit.",
    )
}
