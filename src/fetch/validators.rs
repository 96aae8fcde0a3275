//! What an answer's headers say about the log's version: the validators a
//! conditional request or a resumed download sends back (ETag, Last-Modified,
//! length), and whether a partial answer belongs to the same version.

use crate::model::SourceValidators;
use reqwest::Response;
use reqwest::header::{ETAG, LAST_MODIFIED};

/// The validators of an answer; `length` is the whole log's.
pub(super) fn validators_of(response: &Response, length: Option<u64>) -> SourceValidators {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    SourceValidators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
        length,
    }
}

/// Whether a 206 answer belongs to the same version of the log (If-Range should
/// guarantee it; a server that answers otherwise must not splice versions).
pub(super) fn same_etag(
    headers: &reqwest::header::HeaderMap,
    validators: &SourceValidators,
) -> bool {
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    match (etag, validators.etag.as_deref()) {
        (Some(now), Some(before)) => now == before,
        _ => true,
    }
}
