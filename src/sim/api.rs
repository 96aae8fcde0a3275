//! The ModelArts side of the simulator: AK/SK verification at the "gateway", the
//! routes of the three training-job operations the archiver uses, the details and
//! log-link handlers (search and the job object are in `jobs.rs`), and the JSON
//! error bodies of both the gateway (`APIG.*`) and the service (`ModelArts.*`).
//! Shapes follow `shared/modelarts-api.md` §2 and §4. Serving the link itself is
//! `obs.rs`'s job.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::{BodyFault, FaultKind, FaultTarget, faulty_body};
use super::state::{Shared, TaskLookup, bump};
use crate::source::sign::{DATE_FORMAT, DATE_HEADER, SignableRequest, verify};

/// Largest request body read; searches are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// Largest accepted clock skew of `X-Sdk-Date`, as at the real gateway.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// The id this request is answered under (`X-Request-Id`), set by the middleware.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v2/{project_id}/training-job-searches",
            post(super::jobs::search),
        )
        .route("/v2/{project_id}/training-jobs/{job_id}", get(details))
        .route(
            "/v2/{project_id}/training-jobs/{job_id}/tasks/{task_id}/logs/url",
            get(link),
        )
        .route(
            "/v2/{project_id}/training-jobs/{job_id}/events",
            get(super::records::events),
        )
        .route(
            "/v2/{project_id}/training-jobs/{job_id}/metrics/{task_id}",
            get(super::records::metrics),
        )
}

/// A request that passed the gateway: its body and the id it is answered under.
pub(crate) struct Authed {
    pub body: Bytes,
    pub request_id: String,
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
pub(crate) async fn authenticate(shared: &Shared, req: Request) -> Result<Authed, Response> {
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
    // Token authentication (IAM token in X-Auth-Token) instead of a signature.
    if let Some(token) = parts.headers.get("x-auth-token") {
        let valid = token.to_str().is_ok_and(|t| shared.iam.accepts(t));
        if valid {
            return Ok(Authed {
                body,
                request_id: rid,
            });
        }
        bump(&shared.counters.auth_failures);
        return Err(gateway_error(
            StatusCode::UNAUTHORIZED,
            "APIG.0301",
            "Incorrect IAM authentication information: token expires",
            &rid,
        ));
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
    .and_then(|_| date_is_fresh(&parts, shared.now()))
    .and_then(|()| security_token_ok(shared, &parts));
    match verdict {
        Ok(()) => Ok(Authed {
            body,
            request_id: rid,
        }),
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

/// Temporary AK/SK: the request must carry the security token, and sign it.
fn security_token_ok(shared: &Shared, parts: &Parts) -> Result<(), String> {
    let Some(expected) = &shared.iam.security_token else {
        return Ok(());
    };
    let sent = parts
        .headers
        .get("x-security-token")
        .and_then(|v| v.to_str().ok());
    let signed = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("x-security-token"));
    if sent == Some(expected.as_str()) && signed {
        Ok(())
    } else {
        Err("missing, wrong or unsigned X-Security-Token".to_owned())
    }
}

fn date_is_fresh(parts: &Parts, now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let value = parts
        .headers
        .get(DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing X-Sdk-Date")?;
    let date = chrono::NaiveDateTime::parse_from_str(value, DATE_FORMAT)
        .map_err(|_| format!("malformed X-Sdk-Date {value:?}"))?
        .and_utc();
    let skew = (now - date).num_seconds().abs();
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

pub(crate) fn job_not_found(job_id: &str) -> Response {
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
/// What every API handler does first: authenticate the request, count it in
/// `counter`, then check the project and take a scripted fault for `target`.
pub(crate) async fn admit(
    shared: &Shared,
    req: Request,
    counter: &AtomicU64,
    project_id: &str,
    target: FaultTarget,
    job_id: Option<&str>,
    task_id: Option<&str>,
) -> Result<(Authed, Option<FaultKind>), Response> {
    let authed = authenticate(shared, req).await?;
    bump(counter);
    let fault = preflight(
        shared,
        project_id,
        &authed.request_id,
        target,
        job_id,
        task_id,
    )?;
    Ok((authed, fault))
}

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
    let fault = shared.lock().take_fault(target, job_id, task_id, 0);
    let Some(kind) = fault else { return Ok(None) };
    bump(&shared.counters.faults_fired);
    match status_fault(&kind, rid) {
        Some(response) => Err(response),
        None => Ok(Some(kind)),
    }
}

/// A 200 JSON response whose body a fault may break.
pub(crate) fn json_ok(value: &Value, fault: Option<&FaultKind>) -> Response {
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

async fn details(
    State(shared): State<Arc<Shared>>,
    Path((project_id, job_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (_, fault) = match admit(
        &shared,
        req,
        &shared.counters.detail_requests,
        &project_id,
        FaultTarget::Details,
        Some(&job_id),
        None,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let job = shared.lock().job(&job_id).map(super::jobs::job_json);
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
    let (_, fault) = match admit(
        &shared,
        req,
        &shared.counters.link_requests,
        &project_id,
        FaultTarget::Link,
        Some(&job_id),
        Some(&task_id),
    )
    .await
    {
        Ok(admitted) => admitted,
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
}
