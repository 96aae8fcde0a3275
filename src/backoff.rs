//! Capped exponential backoff with jitter, and a retry loop over it. A server's
//! `Retry-After` (read in `http.rs`) wins, up to [`MAX_RETRY_AFTER`].
//!
//! [`Retries`] is the one place that decides, after a failure, whether to try
//! again and after how long; [`Backoff::retry`] loops over it for API calls, and
//! the fetch layer's own loop (which keeps a download's state between attempts)
//! asks it the same question.
//!
//! The random source is injected so tests can pin the delays.

pub use crate::http::MAX_RETRY_AFTER;
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// Errors that know whether another attempt may help.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
    /// A delay the server asked for (HTTP `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// Whether a retry after this error counts as an attempt. An error that asks
    /// only for a fresh credential (a dead presigned link) does not: its retries
    /// are bounded separately, by the same number.
    fn costs_attempt(&self) -> bool {
        true
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    Again(Duration),
    /// Give up: the error is permanent or the attempts are spent.
    Stop,
}

/// The attempts of one operation under a [`Backoff`] policy.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Backoff,
    attempts: u32,
    free: u32,
}

impl Retries {
    pub fn new(policy: Backoff) -> Retries {
        Retries {
            policy,
            attempts: 0,
            free: 0,
        }
    }

    /// Attempts made so far (the first included; free retries not counted).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Call before each attempt.
    pub fn start(&mut self) {
        self.attempts += 1;
    }

    /// After a failed attempt: try again (and after how long) or stop.
    pub fn after(&mut self, error: &impl Retryable) -> Next {
        if !error.is_retryable() {
            return Next::Stop;
        }
        if !error.costs_attempt() && self.free < self.policy.max_attempts {
            self.free += 1;
            self.attempts -= 1;
            return Next::Again(Duration::ZERO);
        }
        if self.attempts >= self.policy.max_attempts {
            return Next::Stop;
        }
        Next::Again(
            self.policy
                .delay_for(self.attempts, error, &mut rand::rng()),
        )
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
        let mut retries = Retries::new(*self);
        loop {
            retries.start();
            let result = op().await;
            let next = match &result {
                Ok(_) => Next::Stop,
                Err(e) => retries.after(e),
            };
            match next {
                Next::Again(delay) => {
                    if let Err(e) = &result {
                        tracing::debug!(attempt = retries.attempts(),
                            delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
                Next::Stop => return (result, retries.attempts()),
            }
        }
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

    /// An error whose retries are free (a dead link) until they are spent.
    #[derive(Debug)]
    struct Free;
    impl Retryable for Free {
        fn is_retryable(&self) -> bool {
            true
        }
        fn costs_attempt(&self) -> bool {
            false
        }
    }

    #[test]
    fn free_retries_are_bounded_then_cost_attempts() {
        let mut retries = Retries::new(POLICY);
        let mut outcomes = Vec::new();
        loop {
            retries.start();
            let next = retries.after(&Free);
            outcomes.push(next);
            if next == Next::Stop {
                break;
            }
        }
        // 4 free retries at once, then 4 counted attempts (3 retries after a delay).
        assert_eq!(outcomes.len(), 8, "{outcomes:?}");
        assert!(
            outcomes[..4]
                .iter()
                .all(|n| *n == Next::Again(Duration::ZERO))
        );
        assert!(
            outcomes[4..7]
                .iter()
                .all(|n| matches!(n, Next::Again(d) if !d.is_zero()))
        );
        assert_eq!(retries.attempts(), 4);
        let mut permanent = Retries::new(POLICY);
        permanent.start();
        assert_eq!(permanent.after(&E(false, None)), Next::Stop);
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
