//! Capped exponential backoff with jitter, a retry loop over it, and the reading
//! of a server's `Retry-After`.
//!
//! The random source is injected so tests can pin the delays.

use rand::Rng;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// A server's `Retry-After` is honoured up to this long (10 minutes), so a bogus
/// or hostile value cannot stall a run or the daemon; a longer request is logged.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Reads a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date,
/// taken relative to `now`. The result is at most [`MAX_RETRY_AFTER`]; a date in
/// the past means no wait. `None` when the value is neither form. Never panics
/// and never overflows, whatever the value.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
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

/// Errors that know whether another attempt may help.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
    /// A delay the server asked for (HTTP `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Total attempts, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (`attempt` ≥ 1): half the capped
    /// exponential step plus a random part of the other half, so that many workers
    /// failing together do not retry together.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(rng.random::<f64>())
    }

    /// The delay after a failure, preferring the server's `Retry-After`.
    /// Every retry of the crate asks for its delay here, so this is where retries are counted.
    pub fn delay_for(&self, attempt: u32, error: &impl Retryable, rng: &mut impl Rng) -> Duration {
        crate::telemetry::record_retry();
        match error.retry_after() {
            Some(d) => d.min(MAX_RETRY_AFTER),
            None => self.delay(attempt, rng),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    /// Returns the last result and the number of attempts made.
    pub async fn retry<T, E, F, Fut>(&self, mut op: F) -> (Result<T, E>, u32)
    where
        E: Retryable + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let delay = self.delay_for(attempt, &e, &mut rand::rng());
                    tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                }
                result => return (result, attempt),
            }
        }
    }
}

impl Retryable for crate::source::SourceError {
    fn is_retryable(&self) -> bool {
        crate::source::SourceError::is_retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        crate::source::SourceError::retry_after(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const POLICY: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_attempts: 4,
    };

    #[test]
    fn delays_grow_and_cap_with_jitter_in_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let d = POLICY.delay(attempt, &mut rng);
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
    }

    #[derive(Debug)]
    struct E(bool, Option<Duration>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e")
        }
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    /// GUARD: the values that once panicked the process (u64::MAX seconds) or
    /// silenced it for a day are capped; the HTTP-date form is read.
    #[test]
    fn retry_after_values_are_capped_and_dates_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        let p = |v| parse_retry_after(v, now);
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
            if let Some(d) = parse_retry_after(&value, now) {
                proptest::prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        /// Every delay-seconds value is read as itself up to the cap.
        #[test]
        fn retry_after_seconds_are_exact_up_to_the_cap(secs: u64) {
            let got = parse_retry_after(&secs.to_string(), SystemTime::now());
            proptest::prop_assert_eq!(got, Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER)));
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            POLICY.delay_for(1, &E(true, Some(Duration::from_secs(7))), &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            POLICY.delay_for(1, &E(true, Some(Duration::from_secs(99_999))), &mut rng),
            MAX_RETRY_AFTER
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_max_attempts_and_on_permanent_errors() {
        let mut calls = 0;
        let (r, n) = POLICY
            .retry(|| {
                calls += 1;
                async { Err::<(), _>(E(true, None)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!((n, calls), (4, 4));
        let (r, n) = POLICY
            .retry(|| async { Err::<(), _>(E(false, None)) })
            .await;
        assert!(r.is_err());
        assert_eq!(n, 1);
        let mut left = 2;
        let (r, n) = POLICY
            .retry(|| {
                left -= 1;
                let fail = left > 0;
                async move { if fail { Err(E(true, None)) } else { Ok(5) } }
            })
            .await;
        assert_eq!((r.unwrap(), n), (5, 2));
    }
}
