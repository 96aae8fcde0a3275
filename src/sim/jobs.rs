//! The training-job object (`ShowTrainingJobDetails`, search items) built from a
//! [`SimJob`], and the search operation (`ListTrainingJobs`): paging by page
//! index, filters on phase, name, kind and create time, sorting by create time.
//! Shapes follow `shared/modelarts-api.md` §2.1, §2.2 and §2.8.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{admit, json_ok, modelarts_error};
use super::faults::FaultTarget;
use super::scenario::{SimJob, hides_tasks, is_terminal};
use super::state::Shared;

/// A made-up credential every simulated job carries in its environment,
/// parameters and command, so tests can prove it never reaches the archive.
pub const FAKE_SECRET: &str = "sim-secret-6d1f9a2c-never-store-me";

/// Search page size limit (documented maximum).
const MAX_LIMIT: i64 = 50;

/// The job object of `ShowTrainingJobDetails` and of each search item.
pub(crate) fn job_json(job: &SimJob) -> Value {
    let node_count = job.tasks.len().max(1);
    json!({
        "kind": "job",
        "metadata": {
            "id": job.id,
            "name": job.name,
            "description": "",
            "create_time": job.create_time_ms,
            "workspace_id": "0",
            "user_name": "sim-user",
        },
        "status": status_json(job),
        "algorithm": algorithm_json(job),
        "spec": {
            "resource": {
                "policy": "regular",
                "flavor_id": "modelarts.p3.large.public",
                "flavor_name": "GPU: 1*NVIDIA-V100(32GB) | CPU: 8 vCPUs 64GB",
                "node_count": node_count,
            },
        },
    })
}

/// A job's `status`: phase, tasks (hidden while the job has none yet), each
/// finished task's exit code, and the node count over time.
fn status_json(job: &SimJob) -> Value {
    let phase = job.phase.as_str();
    let tasks: Vec<&str> = if hides_tasks(phase) {
        Vec::new()
    } else {
        job.tasks.iter().map(|t| t.id.as_str()).collect()
    };
    let task_statuses: Vec<Value> = if is_terminal(phase) {
        tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let failed = phase == "Failed" && i == 0;
                json!({
                    "task": task,
                    "exit_code": if failed { 1 } else { 0 },
                    "message": if failed { "RuntimeError: CUDA out of memory." } else { "" },
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let secondary_phase = match phase {
        "Pending" => "Queuing",
        "Abnormal" => "CreateFailed",
        other => other,
    };
    let node_count = job.tasks.len().max(1);
    let mut status = json!({
        "phase": phase,
        "secondary_phase": secondary_phase,
        "duration": job.duration_ms,
        "start_time": job.start_time_ms,
        "tasks": tasks,
        "task_statuses": task_statuses,
    });
    if job.start_time_ms > 0 {
        let mut metrics = vec![json!([job.start_time_ms, node_count])];
        if is_terminal(phase) {
            metrics.push(json!([job.start_time_ms + job.duration_ms, 0]));
        }
        status["node_count_metrics"] = Value::Array(metrics);
    }
    status
}

/// A job's `algorithm`: what it ran, with secrets in the command, parameters
/// and environment for the redaction tests to find.
fn algorithm_json(job: &SimJob) -> Value {
    json!({
        "code_dir": format!("obs://sim-bucket/code/{}/", job.name),
        "boot_file": format!("obs://sim-bucket/code/{}/train.py", job.name),
        "engine": {
            "engine_id": "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
            "engine_name": "PyTorch",
            "engine_version": "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
        },
        "command": format!(
            "python train.py --epochs 90 --wandb-token {FAKE_SECRET} --data obs://sim-bucket/data/"
        ),
        "parameters": [
            {"name": "lr", "value": "0.1", "description": "learning rate"},
            {"name": "batch_size", "value": "256"},
            {"name": "db_password", "value": FAKE_SECRET},
        ],
        // The response schema: an array of string maps.
        "environments": [{
            "NCCL_DEBUG": "INFO",
            "HF_TOKEN": FAKE_SECRET,
        }],
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SearchBody {
    offset: Option<i64>,
    limit: Option<i64>,
    sort_by: Option<String>,
    order: Option<String>,
    group_by: Option<String>,
    workspace_id: Option<String>,
    filters: Option<Vec<SearchFilter>>,
}

#[derive(Debug, Deserialize)]
struct SearchFilter {
    key: String,
    operator: String,
    #[serde(default)]
    value: Vec<String>,
}

/// One parsed filter condition.
enum Cond {
    PhaseIn(Vec<String>),
    PhaseNot(Vec<String>),
    NameLike(String),
    CreatedBetween(i64, i64),
    KindIn(Vec<String>),
}

impl Cond {
    fn parse(f: SearchFilter) -> Result<Cond, Response> {
        let invalid = || {
            modelarts_error(
                StatusCode::BAD_REQUEST,
                "ModelArts.2788",
                &format!(
                    "Invalid parameter: filter {} {} {:?}.",
                    f.key, f.operator, f.value
                ),
                "Check the filter operator and values.",
            )
        };
        let number = |s: &String| s.trim().parse::<i64>().map_err(|_| invalid());
        match (f.key.as_str(), f.operator.as_str()) {
            ("phase", "in") => Ok(Cond::PhaseIn(f.value.clone())),
            ("phase", "not") => Ok(Cond::PhaseNot(f.value.clone())),
            ("kind", "in") => Ok(Cond::KindIn(f.value.clone())),
            ("name", "like") => Ok(Cond::NameLike(f.value.first().cloned().unwrap_or_default())),
            ("create_time", "between") => match f.value.as_slice() {
                [lo, hi] => Ok(Cond::CreatedBetween(number(lo)?, number(hi)?)),
                [lo] => Ok(Cond::CreatedBetween(number(lo)?, i64::MAX)),
                _ => Err(invalid()),
            },
            ("phase" | "kind" | "name" | "create_time", _) => Err(invalid()),
            (key, _) => Err(modelarts_error(
                StatusCode::BAD_REQUEST,
                "ModelArts.2789",
                &format!("Unsupported filter key: {key}."),
                "Use a supported filter key.",
            )),
        }
    }

    fn matches(&self, job: &SimJob) -> bool {
        match self {
            Cond::PhaseIn(v) => v.contains(&job.phase),
            Cond::PhaseNot(v) => !v.contains(&job.phase),
            Cond::NameLike(s) => job.name.contains(s.as_str()),
            Cond::CreatedBetween(lo, hi) => (*lo..=*hi).contains(&job.create_time_ms),
            Cond::KindIn(v) => v.iter().any(|k| k == "job"),
        }
    }
}

fn bad_query(msg: &str) -> Response {
    modelarts_error(
        StatusCode::BAD_REQUEST,
        "ModelArts.2764",
        msg,
        "Check the request parameters.",
    )
}

/// A search request's body, checked the way ModelArts checks it.
struct SearchQuery {
    limit: i64,
    offset: i64,
    sort_by: String,
    order: String,
    conds: Vec<Cond>,
    /// What is echoed back unchecked (`group_by`, `workspace_id`).
    params: SearchBody,
}

impl SearchQuery {
    fn parse(body: &[u8]) -> Result<SearchQuery, Response> {
        let mut params: SearchBody = if body.iter().all(u8::is_ascii_whitespace) {
            SearchBody::default()
        } else {
            serde_json::from_slice(body).map_err(|e| {
                modelarts_error(
                    StatusCode::BAD_REQUEST,
                    "ModelArts.2788",
                    &format!("Invalid parameter: {e}."),
                    "Check the request body.",
                )
            })?
        };
        let limit = params.limit.unwrap_or(MAX_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad_query(&format!(
                "Invalid query parameter: limit must be between 1 and {MAX_LIMIT}, got {limit}."
            )));
        }
        let offset = params.offset.unwrap_or(0);
        if offset < 0 {
            return Err(bad_query(&format!(
                "Invalid query parameter: offset must not be negative, got {offset}."
            )));
        }
        let sort_by = params
            .sort_by
            .take()
            .unwrap_or_else(|| "create_time".to_owned());
        if sort_by != "create_time" {
            return Err(modelarts_error(
                StatusCode::BAD_REQUEST,
                "ModelArts.2790",
                &format!("Unsupported sort key: {sort_by}."),
                "Sort by create_time.",
            ));
        }
        let order = params.order.take().unwrap_or_else(|| "desc".to_owned());
        if order != "asc" && order != "desc" {
            return Err(bad_query(&format!(
                "Invalid query parameter: order must be asc or desc, got {order}."
            )));
        }
        let conds = params
            .filters
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(Cond::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchQuery {
            limit,
            offset,
            sort_by,
            order,
            conds,
            params,
        })
    }
}

pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    Path(project_id): Path<String>,
    req: Request,
) -> Response {
    let (authed, fault) = match admit(
        &shared,
        req,
        &shared.counters.search_requests,
        &project_id,
        FaultTarget::Search,
        None,
        None,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let query = match SearchQuery::parse(&authed.body) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let (limit, offset, conds) = (query.limit, query.offset, &query.conds);

    let (total, count, items) = {
        let state = shared.lock();
        let total = state.jobs().count();
        let mut matching: Vec<&SimJob> = state
            .jobs()
            .filter(|j| conds.iter().all(|c| c.matches(j)))
            .collect();
        let start = usize::try_from(offset.saturating_mul(limit)).unwrap_or(usize::MAX);
        let count = matching.len();
        let page = page_of(&mut matching, start, limit as usize, query.order == "desc");
        let items: Vec<Value> = page.iter().map(|j| job_json(j)).collect();
        (total, count, items)
    };
    let body = json!({
        "total": total,
        "count": count,
        "limit": limit,
        "offset": offset,
        "sort_by": query.sort_by,
        "order": query.order,
        "group_by": query.params.group_by.unwrap_or_default(),
        "workspace_id": query.params.workspace_id.unwrap_or_else(|| "0".to_owned()),
        "ai_project": "default-ai-project",
        "items": items,
    });
    json_ok(&body, fault.as_ref())
}

/// Jobs `start..start + limit` in create-time order (ties by id), newest first
/// when `desc`. Selects the page instead of sorting every job: a benchmark
/// pages through 100,000 jobs, and a full sort per page made the simulator
/// the bottleneck.
fn page_of<'s, 'j>(
    jobs: &'s mut [&'j SimJob],
    start: usize,
    limit: usize,
    desc: bool,
) -> &'s [&'j SimJob] {
    let order = |a: &&SimJob, b: &&SimJob| {
        let ascending = (a.create_time_ms, &a.id).cmp(&(b.create_time_ms, &b.id));
        if desc { ascending.reverse() } else { ascending }
    };
    let end = start.saturating_add(limit).min(jobs.len());
    if start >= end {
        return &[];
    }
    // The first `end` jobs in order, unsorted; then the page's among them.
    jobs.select_nth_unstable_by(end - 1, order);
    let head = &mut jobs[..end];
    head.select_nth_unstable_by(start, order);
    let page = &mut head[start..];
    page.sort_by(order);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: selecting a page gives what sorting everything would.
    #[test]
    fn page_of_matches_a_full_sort() {
        let jobs: Vec<SimJob> = (0..97)
            .map(|i| SimJob {
                id: format!("job-{:03}", (i * 37) % 97),
                name: "n".into(),
                phase: "Completed".into(),
                create_time_ms: ((i * 13) % 20) as i64,
                start_time_ms: 0,
                duration_ms: 0,
                tasks: Vec::new(),
            })
            .collect();
        for desc in [false, true] {
            let mut sorted: Vec<&SimJob> = jobs.iter().collect();
            sorted.sort_by(|a, b| (a.create_time_ms, &a.id).cmp(&(b.create_time_ms, &b.id)));
            if desc {
                sorted.reverse();
            }
            for (start, limit) in [
                (0, 10),
                (10, 10),
                (90, 10),
                (96, 50),
                (97, 5),
                (200, 5),
                (0, 97),
            ] {
                let mut refs: Vec<&SimJob> = jobs.iter().collect();
                let page: Vec<&str> = page_of(&mut refs, start, limit, desc)
                    .iter()
                    .map(|j| j.id.as_str())
                    .collect();
                let expected: Vec<&str> = sorted
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|j| j.id.as_str())
                    .collect();
                assert_eq!(page, expected, "start {start} limit {limit} desc {desc}");
            }
        }
    }

    #[test]
    fn creating_jobs_list_no_tasks_and_failed_jobs_report_exit_codes() {
        let mut job = SimJob {
            id: "j".into(),
            name: "n".into(),
            phase: "Creating".into(),
            create_time_ms: 1,
            start_time_ms: 0,
            duration_ms: 0,
            tasks: vec![super::super::SimTask {
                id: "worker-0".into(),
                size: 0,
                seed: 0,
            }],
        };
        assert_eq!(job_json(&job)["status"]["tasks"], json!([]));
        job.phase = "Failed".into();
        job.start_time_ms = 1_000;
        let v = job_json(&job);
        assert_eq!(v["status"]["tasks"], json!(["worker-0"]));
        assert_eq!(v["status"]["task_statuses"][0]["exit_code"], json!(1));
        assert_eq!(v["spec"]["resource"]["node_count"], json!(1));
    }
}
