//! The ModelArts side of the simulator: AK/SK verification at the "gateway", the
//! three training-job operations the archiver uses (search, details, log link) and
//! the JSON error bodies of both the gateway (`APIG.*`) and the service
//! (`ModelArts.*`). Shapes follow `shared/modelarts-api.md` §2 and §4. Serving the
//! link itself is `obs.rs`'s job.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::{BodyFault, FaultKind, FaultTarget, faulty_body};
use super::scenario::{SimJob, hides_tasks, is_terminal};
use super::state::{Shared, TaskLookup, bump};
use crate::source::sign::{DATE_FORMAT, DATE_HEADER, SignableRequest, verify};

/// Largest request body read; searches are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// Largest accepted clock skew of `X-Sdk-Date`, as at the real gateway.
const MAX_SKEW_SECS: i64 = 15 * 60;
/// Search page size limit (documented maximum).
const MAX_LIMIT: i64 = 50;

/// The id this request is answered under (`X-Request-Id`), set by the middleware.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/{project_id}/training-job-searches", post(search))
        .route("/v2/{project_id}/training-jobs/{job_id}", get(details))
        .route(
            "/v2/{project_id}/training-jobs/{job_id}/tasks/{task_id}/logs/url",
            get(link),
        )
}

/// A request that passed the gateway: its head and body.
struct Authed {
    body: Bytes,
}

fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// Verifies the AK/SK signature and the freshness of `X-Sdk-Date`, as the API
/// gateway does; a failure is answered with 401 `APIG.0301` and counted.
async fn authenticate(shared: &Shared, req: Request) -> Result<Authed, Response> {
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts);
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        gateway_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "APIG.0201",
            "Request entity too large",
            &rid,
        )
    })?;
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push(("host".to_owned(), authority.as_str().to_owned()));
    }
    let query = decode_query(parts.uri.query());
    let signable = SignableRequest {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        query: &query,
        headers: &headers,
        body: &body,
    };
    let verdict = verify(&signable, |ak| {
        (ak == shared.access_key).then(|| shared.secret_key.clone())
    })
    .map_err(|e| e.to_string())
    .and_then(|_| date_is_fresh(&parts));
    match verdict {
        Ok(()) => Ok(Authed { body }),
        Err(reason) => {
            tracing::debug!(%reason, path = parts.uri.path(), "simulator rejected a signature");
            bump(&shared.counters.auth_failures);
            Err(gateway_error(
                StatusCode::UNAUTHORIZED,
                "APIG.0301",
                "Incorrect IAM authentication information: verify aksk signature fail",
                &rid,
            ))
        }
    }
}

fn date_is_fresh(parts: &Parts) -> Result<(), String> {
    let value = parts
        .headers
        .get(DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing X-Sdk-Date")?;
    let date = chrono::NaiveDateTime::parse_from_str(value, DATE_FORMAT)
        .map_err(|_| format!("malformed X-Sdk-Date {value:?}"))?
        .and_utc();
    let skew = (chrono::Utc::now() - date).num_seconds().abs();
    if skew > MAX_SKEW_SECS {
        Err(format!("X-Sdk-Date is {skew} s off"))
    } else {
        Ok(())
    }
}

/// Query pairs percent-decoded (no `+` → space), as the signer expects them.
fn decode_query(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A gateway error body: `error_code`, `error_msg`, `request_id`.
pub(crate) fn gateway_error(
    status: StatusCode,
    code: &str,
    msg: &str,
    request_id: &str,
) -> Response {
    let body = json!({"error_code": code, "error_msg": msg, "request_id": request_id});
    (status, axum::Json(body)).into_response()
}

/// A ModelArts service error body: `error_code`, `error_msg`, `error_solution`.
pub(crate) fn modelarts_error(
    status: StatusCode,
    code: &str,
    msg: &str,
    solution: &str,
) -> Response {
    let body = json!({"error_code": code, "error_msg": msg, "error_solution": solution});
    (status, axum::Json(body)).into_response()
}

fn job_not_found(job_id: &str) -> Response {
    modelarts_error(
        StatusCode::BAD_REQUEST,
        "ModelArts.2775",
        &format!("Training job (ID: {job_id}) not found."),
        "Check whether the training job information in the request is valid.",
    )
}

/// Answers a `Status` fault: JSON body in the style of its code's family, plus
/// `Retry-After` when asked for.
fn status_fault(kind: &FaultKind, rid: &str) -> Option<Response> {
    let FaultKind::Status {
        status,
        error_code,
        error_msg,
        retry_after,
    } = kind
    else {
        return None;
    };
    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if error_code.starts_with("APIG") {
        gateway_error(status, error_code, error_msg, rid)
    } else {
        modelarts_error(
            status,
            error_code,
            error_msg,
            "Simulated fault; retry later.",
        )
    };
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    Some(response)
}

/// Checks the project id, then takes a matching fault. `Err` is the response to
/// send instead of normal handling; `Ok` carries a body fault to apply, if any.
fn preflight(
    shared: &Shared,
    project_id: &str,
    rid: &str,
    target: FaultTarget,
    job_id: Option<&str>,
    task_id: Option<&str>,
) -> Result<Option<FaultKind>, Response> {
    if project_id != shared.project_id {
        return Err(modelarts_error(
            StatusCode::NOT_FOUND,
            "ModelArts.2786",
            &format!(
                "Project ID ({project_id}) in the URL does not match the project of the credentials."
            ),
            "Check the project ID in the request URL.",
        ));
    }
    let fault = shared.lock().faults.take(target, job_id, task_id);
    let Some(kind) = fault else { return Ok(None) };
    bump(&shared.counters.faults_fired);
    match status_fault(&kind, rid) {
        Some(response) => Err(response),
        None => Ok(Some(kind)),
    }
}

/// A 200 JSON response whose body a fault may break.
fn json_ok(value: &Value, fault: Option<&FaultKind>) -> Response {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let len = bytes.len();
    let Some(body_fault) = fault.and_then(BodyFault::from_kind) else {
        return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    };
    let stream = faulty_body(
        Box::pin(futures::stream::iter([Ok(bytes)])),
        Some(body_fault),
    );
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The job object of `ShowTrainingJobDetails` and of each search item.
pub(crate) fn job_json(job: &SimJob) -> Value {
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
        "status": status,
        "algorithm": {
            "code_dir": format!("obs://sim-bucket/code/{}/", job.name),
            "boot_file": format!("obs://sim-bucket/code/{}/train.py", job.name),
            "engine": {
                "engine_id": "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
                "engine_name": "PyTorch",
                "engine_version": "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
            },
        },
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SearchBody {
    offset: Option<i64>,
    limit: Option<i64>,
    sort_by: Option<String>,
    order: Option<String>,
    group_by: Option<String>,
    workspace_id: Option<String>,
    filters: Vec<SearchFilter>,
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

async fn search(
    State(shared): State<Arc<Shared>>,
    Path(project_id): Path<String>,
    req: Request,
) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let authed = match authenticate(&shared, req).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    bump(&shared.counters.search_requests);
    let fault = match preflight(&shared, &project_id, &rid, FaultTarget::Search, None, None) {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    let params: SearchBody = if authed.body.iter().all(u8::is_ascii_whitespace) {
        SearchBody::default()
    } else {
        match serde_json::from_slice(&authed.body) {
            Ok(p) => p,
            Err(e) => {
                return modelarts_error(
                    StatusCode::BAD_REQUEST,
                    "ModelArts.2788",
                    &format!("Invalid parameter: {e}."),
                    "Check the request body.",
                );
            }
        }
    };
    let limit = params.limit.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return bad_query(&format!(
            "Invalid query parameter: limit must be between 1 and {MAX_LIMIT}, got {limit}."
        ));
    }
    let offset = params.offset.unwrap_or(0);
    if offset < 0 {
        return bad_query(&format!(
            "Invalid query parameter: offset must not be negative, got {offset}."
        ));
    }
    let sort_by = params.sort_by.unwrap_or_else(|| "create_time".to_owned());
    if sort_by != "create_time" {
        return modelarts_error(
            StatusCode::BAD_REQUEST,
            "ModelArts.2790",
            &format!("Unsupported sort key: {sort_by}."),
            "Sort by create_time.",
        );
    }
    let order = params.order.unwrap_or_else(|| "desc".to_owned());
    if order != "asc" && order != "desc" {
        return bad_query(&format!(
            "Invalid query parameter: order must be asc or desc, got {order}."
        ));
    }
    let mut conds = Vec::with_capacity(params.filters.len());
    for f in params.filters {
        match Cond::parse(f) {
            Ok(c) => conds.push(c),
            Err(response) => return response,
        }
    }

    let (total, count, items) = {
        let state = shared.lock();
        let total = state.jobs().count();
        let mut matching: Vec<&SimJob> = state
            .jobs()
            .filter(|j| conds.iter().all(|c| c.matches(j)))
            .collect();
        matching.sort_by(|a, b| (a.create_time_ms, &a.id).cmp(&(b.create_time_ms, &b.id)));
        if order == "desc" {
            matching.reverse();
        }
        let start = usize::try_from(offset.saturating_mul(limit)).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(limit as usize)
            .map(|j| job_json(j))
            .collect();
        (total, matching.len(), items)
    };
    let body = json!({
        "total": total,
        "count": count,
        "limit": limit,
        "offset": offset,
        "sort_by": sort_by,
        "order": order,
        "group_by": params.group_by.unwrap_or_default(),
        "workspace_id": params.workspace_id.unwrap_or_else(|| "0".to_owned()),
        "ai_project": "default-ai-project",
        "items": items,
    });
    json_ok(&body, fault.as_ref())
}

async fn details(
    State(shared): State<Arc<Shared>>,
    Path((project_id, job_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    if let Err(response) = authenticate(&shared, req).await {
        return response;
    }
    bump(&shared.counters.detail_requests);
    let fault = match preflight(
        &shared,
        &project_id,
        &rid,
        FaultTarget::Details,
        Some(&job_id),
        None,
    ) {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    let job = shared.lock().job(&job_id).map(job_json);
    match job {
        Some(value) => json_ok(&value, fault.as_ref()),
        None => job_not_found(&job_id),
    }
}

async fn link(
    State(shared): State<Arc<Shared>>,
    Path((project_id, job_id, task_id)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    if let Err(response) = authenticate(&shared, req).await {
        return response;
    }
    bump(&shared.counters.link_requests);
    let fault = match preflight(
        &shared,
        &project_id,
        &rid,
        FaultTarget::Link,
        Some(&job_id),
        Some(&task_id),
    ) {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    let lookup = shared.lock().lookup_task(&job_id, &task_id);
    match lookup {
        TaskLookup::NoJob => return job_not_found(&job_id),
        TaskLookup::NoTask => {
            return modelarts_error(
                StatusCode::BAD_REQUEST,
                "ModelArts.2820",
                &format!(
                    "The log path of task ({task_id}) of training job ({job_id}) is not found."
                ),
                "Use a task name listed in status.tasks of the training job.",
            );
        }
        TaskLookup::NotGenerated => {
            return modelarts_error(
                StatusCode::BAD_REQUEST,
                "ModelArts.2818",
                &format!("The log file of task ({task_id}) has not been generated."),
                "Wait until the task has started and written logs, then try again.",
            );
        }
        TaskLookup::Ready => {}
    }
    let now = chrono::Utc::now().timestamp();
    let expires = if fault == Some(FaultKind::ExpiredLink) {
        now - 1
    } else {
        now + shared.link_ttl.as_secs() as i64
    };
    let url = super::obs::presign(&shared, &job_id, &task_id, expires);
    json_ok(&json!({ "obs_url": url }), fault.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_keeps_plus_and_empty_values() {
        assert_eq!(
            decode_query(Some("b=2&a=x%20y&c=&d=1+1")),
            vec![
                ("b".into(), "2".into()),
                ("a".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "1+1".into())
            ]
        );
        assert!(decode_query(None).is_empty());
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
