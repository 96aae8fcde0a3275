//! HTTP details shared by the ModelArts client and the log downloads, so that
//! neither reaches into the other: how a transport error is described (never
//! with its URL, which may carry a presigned query), how `Content-Range` and
//! `Retry-After` are read
//! (delay-seconds or an HTTP-date, capped, never a panic whatever the value).

use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

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

/// A response's `Retry-After`, read by [`retry_after_value`] against the clock.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry_after_value(value, SystemTime::now())
}

/// A server's `Retry-After` is honoured up to this long (10 minutes), so a bogus
/// or hostile value cannot stall a run or the daemon; a longer request is logged.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Reads a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date,
/// taken relative to `now`. The result is at most [`MAX_RETRY_AFTER`]; a date in
/// the past means no wait. `None` when the value is neither form. Never panics
/// and never overflows, whatever the value.
pub fn retry_after_value(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let asked = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still a (very long) number of seconds.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    if asked > MAX_RETRY_AFTER {
        tracing::warn!(
            asked_seconds = asked.as_secs(),
            honoured_seconds = MAX_RETRY_AFTER.as_secs(),
            "a server asked to wait longer than malog honours (Retry-After); waiting the maximum"
        );
        return Some(MAX_RETRY_AFTER);
    }
    Some(asked)
}

/// The first byte position and the total size (if known) of a
/// `Content-Range: bytes N-M/T` header.
pub fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split('-').next()?.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: the values that once panicked the process (u64::MAX seconds) or
    /// silenced it for a day are capped; the HTTP-date form is read.
    #[test]
    fn retry_after_values_are_capped_and_dates_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        let p = |v| retry_after_value(v, now);
        assert_eq!(p("7"), Some(Duration::from_secs(7)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(p("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            p("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_RETRY_AFTER));
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "0x10",
            "Wed, 99 Oct 2015 07:28:30 GMT",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any header text at all: no panic, and never more than the cap.
        #[test]
        fn retry_after_never_panics_or_exceeds_the_cap(value in "\\PC*", secs in 0u64..u64::MAX) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs % (1 << 40));
            if let Some(d) = retry_after_value(&value, now) {
                proptest::prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        /// Every delay-seconds value is read as itself up to the cap.
        #[test]
        fn retry_after_seconds_are_exact_up_to_the_cap(secs: u64) {
            let got = retry_after_value(&secs.to_string(), SystemTime::now());
            proptest::prop_assert_eq!(got, Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER)));
        }
    }

    #[test]
    fn content_range_parses_start_and_total() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h), None);
        h.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes 10-99/100"),
        );
        assert_eq!(content_range(&h), Some((10, Some(100))));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes 10-99/*"),
        );
        assert_eq!(content_range(&h), Some((10, None)));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes x-99/100"),
        );
        assert_eq!(content_range(&h), None);
    }
}
