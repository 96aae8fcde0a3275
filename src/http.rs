//! HTTP details shared by the ModelArts client and the log downloads, so that
//! neither reaches into the other: how a transport error is described (never
//! with its URL, which may carry a presigned query) and how `Retry-After` is read.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

/// Describes a transport error without its URL (which may carry a presigned query).
pub fn describe_reqwest_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored).
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
