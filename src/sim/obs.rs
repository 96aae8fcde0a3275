//! The OBS side of the simulator: presigned log links (issue and check) and the
//! object download they lead to, with S3-style XML errors, validators (ETag,
//! Last-Modified), conditional requests (`If-Match`, `If-None-Match`,
//! `If-Modified-Since`, `If-Unmodified-Since`, `If-Range`) and single byte ranges.
//!
//! Links are signed the S3 v2 way: `Signature` = base64(HMAC-SHA256(secret,
//! "GET\n\n\n{Expires}\n/{bucket}/{key}")), percent-encoded in the query, so a client
//! that re-encodes or decodes the query breaks the signature as it would on OBS.
//! A HEAD is accepted with a link signed for GET. The body comes from `content.rs`,
//! chunk by chunk; faults may break it (`faults.rs`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::api::RequestId;
use super::content::log_stream;
use super::faults::{BodyFault, FaultKind, FaultTarget, faulty_body};
use super::state::{LogObject, Shared, bump};
use crate::source::sign::encode_component;

/// The bucket every simulated log lives in.
pub const BUCKET: &str = "modelarts-train-logs";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/obs/{bucket}/{job_id}/{file}", get(download))
}

/// The object key's file name for a task's log.
pub(crate) fn file_name(job_id: &str, task_id: &str) -> String {
    format!("modelarts-job-{job_id}-{task_id}.log")
}

fn signature(shared: &Shared, expires: i64, bucket: &str, job_id: &str, file: &str) -> String {
    let string_to_sign = format!("GET\n\n\n{expires}\n/{bucket}/{job_id}/{file}");
    let mut mac = Hmac::<Sha256>::new_from_slice(shared.obs_secret_key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64(&mac.finalize().into_bytes())
}

/// The presigned URL of a task's log, valid until `expires` (unix seconds).
pub(crate) fn presign(shared: &Shared, job_id: &str, task_id: &str, expires: i64) -> String {
    let file = file_name(job_id, task_id);
    let sig = signature(shared, expires, BUCKET, job_id, &file);
    // With `links_to`, a static file server holds the exported logs at the same
    // relative path (and ignores the query).
    let base = match &shared.links_to {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => format!("{}/obs/{BUCKET}", shared.endpoint),
    };
    format!(
        "{base}/{}/{}?AWSAccessKeyId={}&Expires={expires}&Signature={}",
        encode_component(job_id),
        encode_component(&file),
        encode_component(&shared.obs_access_key),
        encode_component(&sig),
    )
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An S3-style XML error. `extra` is inserted verbatim after `<Message>`.
fn s3_error(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: &str,
    request_id: &str,
) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}\
         <RequestId>{request_id}</RequestId><HostId>sim</HostId></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn http_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn parse_http_date(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|d| d.timestamp())
}

fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Whether an `If-Match`/`If-None-Match` list names `etag` (`*` names any).
fn list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || if weak {
                strip_weak(tag) == strip_weak(etag)
            } else {
                !tag.starts_with("W/") && tag == etag
            }
    })
}

/// A `Range` header resolved against the object size.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No usable single range: serve the whole object.
    Full,
    /// `[start, end)`.
    Part(u64, u64),
    Unsatisfiable,
}

/// Single ranges `bytes=N-`, `bytes=N-M`, `bytes=-S`. Multiple ranges, other units
/// and malformed values are ignored (served whole), as RFC 9110 allows.
fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            Ok(_) if size == 0 => ByteRange::Unsatisfiable,
            Ok(n) => ByteRange::Part(size - n.min(size), size),
            Err(_) => ByteRange::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            _ => return ByteRange::Full,
        }
    };
    if start >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(start, end)
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the link's query; `Err` is the 403 to answer with.
fn check_link(
    shared: &Shared,
    uri: &Uri,
    bucket: &str,
    job_id: &str,
    file: &str,
    rid: &str,
) -> Result<(), Response> {
    let mut access_key = None;
    let mut expires = None;
    let mut sig = None;
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "AWSAccessKeyId" => access_key = Some(v.into_owned()),
            "Expires" => expires = Some(v.into_owned()),
            "Signature" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    let denied = |code: &str, message: &str, extra: &str| {
        bump(&shared.counters.links_denied);
        Err(s3_error(StatusCode::FORBIDDEN, code, message, extra, rid))
    };
    let (Some(access_key), Some(expires), Some(sig)) = (access_key, expires, sig) else {
        return denied("AccessDenied", "Access Denied", "");
    };
    if access_key != shared.obs_access_key {
        return denied(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            &format!(
                "<AWSAccessKeyId>{}</AWSAccessKeyId>",
                encode_component(&access_key)
            ),
        );
    }
    let Ok(expires) = expires.parse::<i64>() else {
        return denied(
            "AccessDenied",
            "Invalid date (should be seconds since epoch)",
            "",
        );
    };
    if signature(shared, expires, bucket, job_id, file) != sig {
        return denied(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
            "",
        );
    }
    let now = chrono::Utc::now();
    if expires < now.timestamp() {
        return denied(
            "AccessDenied",
            "Request has expired",
            &format!(
                "<Expires>{}</Expires><ServerTime>{}</ServerTime>",
                http_date(expires),
                now.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        );
    }
    Ok(())
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bucket, job_id, file)): Path<(String, String, String)>,
    Extension(RequestId(rid)): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check_link(&shared, &uri, &bucket, &job_id, &file, &rid) {
        return response;
    }
    let task_id = task_of(&job_id, &file);
    let (fault, object) = {
        let mut state = shared.lock();
        let object = task_id
            .filter(|_| bucket == BUCKET)
            .and_then(|task| state.object(&job_id, task));
        let body_len = object.as_ref().map_or(0, |o| o.size);
        let fault = state.take_fault(FaultTarget::Download, Some(&job_id), task_id, body_len);
        (fault, object)
    };
    if fault.is_some() {
        bump(&shared.counters.faults_fired);
    }
    if let Some(response) = fault
        .as_ref()
        .and_then(|f| fault_response(&shared, f, &rid))
    {
        return response;
    }
    if bucket != BUCKET {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
            "",
            &rid,
        );
    }
    let Some(object) = object else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            "",
            &rid,
        );
    };
    let body_fault = fault.as_ref().and_then(BodyFault::from_kind);
    let ignore_range = matches!(fault, Some(FaultKind::IgnoreRange));
    let headers = if ignore_range {
        let mut h = headers;
        h.remove(header::RANGE);
        h
    } else {
        headers
    };
    serve_object(&shared, object, &method, &headers, body_fault, &rid)
}

/// The task id in an object name `modelarts-job-<job>-<task>.log`.
fn task_of<'a>(job_id: &str, file: &'a str) -> Option<&'a str> {
    file.strip_prefix("modelarts-job-")
        .and_then(|rest| rest.strip_prefix(job_id))
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".log"))
}

/// The answer a download fault replaces the object with, if it replaces it
/// (body faults and ignored ranges still serve the object).
fn fault_response(shared: &Shared, fault: &FaultKind, rid: &str) -> Option<Response> {
    match fault {
        FaultKind::Status {
            status,
            error_code,
            error_msg,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = s3_error(status, error_code, error_msg, "", rid);
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(response)
        }
        FaultKind::ExpiredLink => {
            bump(&shared.counters.links_denied);
            Some(s3_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired",
                "",
                rid,
            ))
        }
        _ => None,
    }
}

/// Answers a GET or HEAD of an object: preconditions, then range, then body.
fn serve_object(
    shared: &Arc<Shared>,
    object: LogObject,
    method: &Method,
    headers: &HeaderMap,
    body_fault: Option<BodyFault>,
    rid: &str,
) -> Response {
    let validators = [
        (header::ETAG, object.etag.clone()),
        (header::LAST_MODIFIED, http_date(object.last_modified)),
    ];
    match preconditions(&object, headers, rid) {
        Precondition::Failed(response) => return response,
        Precondition::NotModified => {
            bump(&shared.counters.not_modified);
            return (StatusCode::NOT_MODIFIED, validators).into_response();
        }
        Precondition::Serve => {}
    }

    let size = object.size;
    let (status, start, end) = match requested_range(&object, headers) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => return unsatisfiable(size, rid),
    };

    let mut response = if method == Method::HEAD {
        Body::empty().into_response()
    } else {
        bump(&shared.counters.downloads);
        if status == StatusCode::PARTIAL_CONTENT {
            bump(&shared.counters.range_requests);
        }
        body(shared, object, start, end, body_fault).into_response()
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (name, value) in validators {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// What the conditional headers decide before any byte is served.
enum Precondition {
    Serve,
    NotModified,
    Failed(Response),
}

/// The conditional headers, in RFC 9110 §13.2.2 order: If-Match,
/// If-Unmodified-Since, If-None-Match, If-Modified-Since.
fn preconditions(object: &LogObject, headers: &HeaderMap, rid: &str) -> Precondition {
    let etag = object.etag.as_str();
    let failed = |condition: &str| {
        Precondition::Failed(s3_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            &format!("<Condition>{condition}</Condition>"),
            rid,
        ))
    };
    if let Some(list) = header_str(headers, header::IF_MATCH) {
        if !list_matches(list, etag, false) {
            return failed("If-Match");
        }
    } else if let Some(since) =
        header_str(headers, header::IF_UNMODIFIED_SINCE).and_then(parse_http_date)
        && object.last_modified > since
    {
        return failed("If-Unmodified-Since");
    }
    let not_modified = match header_str(headers, header::IF_NONE_MATCH) {
        Some(list) => list_matches(list, etag, true),
        None => header_str(headers, header::IF_MODIFIED_SINCE)
            .and_then(parse_http_date)
            .is_some_and(|since| object.last_modified <= since),
    };
    if not_modified {
        Precondition::NotModified
    } else {
        Precondition::Serve
    }
}

/// The range asked for, ignored (whole object) when `If-Range` no longer matches.
fn requested_range(object: &LogObject, headers: &HeaderMap) -> ByteRange {
    let range_allowed = match header_str(headers, header::IF_RANGE) {
        None => true,
        Some(v) if v.trim_start().starts_with('"') || v.trim_start().starts_with("W/") => {
            list_matches(v, &object.etag, false) && !v.contains(',')
        }
        Some(v) => parse_http_date(v) == Some(object.last_modified),
    };
    match header_str(headers, header::RANGE) {
        Some(value) if range_allowed => parse_range(value, object.size),
        _ => ByteRange::Full,
    }
}

fn unsatisfiable(size: u64, rid: &str) -> Response {
    let mut response = s3_error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "InvalidRange",
        "The requested range is not satisfiable",
        &format!("<ActualObjectSize>{size}</ActualObjectSize>"),
        rid,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

/// The log's bytes `start..end`, with the scenario's body fault, counted as served.
fn body(
    shared: &Arc<Shared>,
    object: LogObject,
    start: u64,
    end: u64,
    body_fault: Option<BodyFault>,
) -> Body {
    let counted = Arc::clone(shared);
    let (job_id, task_id) = (object.job_id, object.task_id);
    let stream = faulty_body(
        Box::pin(log_stream(object.generator, start, end)),
        body_fault,
    )
    .inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            counted
                .counters
                .add_served(&job_id, &task_id, bytes.len() as u64);
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=0-", 10), Part(0, 10));
        assert_eq!(parse_range("bytes=3-5", 10), Part(3, 6));
        assert_eq!(parse_range("bytes=3-500", 10), Part(3, 10));
        assert_eq!(parse_range("bytes=-4", 10), Part(6, 10));
        assert_eq!(parse_range("bytes=-40", 10), Part(0, 10));
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-3", 10), Full);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Full);
        assert_eq!(parse_range("items=0-1", 10), Full);
        assert_eq!(parse_range("bytes=x-", 10), Full);
    }

    #[test]
    fn etag_lists() {
        assert!(list_matches("\"a\", \"b\"", "\"b\"", false));
        assert!(list_matches("*", "\"b\"", false));
        assert!(!list_matches("W/\"b\"", "\"b\"", false));
        assert!(list_matches("W/\"b\"", "\"b\"", true));
        assert!(!list_matches("\"c\"", "\"b\"", true));
    }

    #[test]
    fn http_dates_round_trip() {
        let text = http_date(1_710_491_465);
        assert_eq!(text, "Fri, 15 Mar 2024 08:31:05 GMT");
        assert_eq!(parse_http_date(&text), Some(1_710_491_465));
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
