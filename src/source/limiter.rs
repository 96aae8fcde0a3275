//! The request-rate cap of the ModelArts client: at most `requests_per_second`
//! API requests in every sliding one-second window, across all workers and all
//! request kinds.
//!
//! API gateways count requests per second over any window, so a token bucket
//! whose burst equals the rate is not enough (it lets almost twice the rate
//! through in one sliding second). Here requests go one at a time through a
//! fair queue, each at least [`WINDOW`]` / rate` after the previous one *was
//! actually sent* (not after when it was due: timers that fire late on a busy
//! machine must not bunch requests up), so `rate + 1` requests span more than
//! one second. [`WINDOW`] is a little longer than a second so that requests
//! which are delayed differently on their way still arrive at most `rate` to a
//! second.

use std::time::Duration;
use tokio::time::Instant;

/// The window over which the rate is kept: one second plus a margin for
/// differing delays between leaving malog and reaching the gateway. 100 ms
/// was not always enough on a loaded 2-core test machine (4 requests in one
/// second at a cap of 3, once in 5 runs); the margin costs a fifth of the
/// rate at the cap.
pub const WINDOW: Duration = Duration::from_millis(1250);

/// Lets requests go at least `spacing` apart. Shared by every clone of the client.
#[derive(Debug)]
pub struct RateCap {
    spacing: Duration,
    /// When the last request went; the lock is the queue (tokio's mutex is fair).
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl RateCap {
    /// A cap of `rate` requests per second (0 is read as 1).
    pub fn per_second(rate: u32) -> RateCap {
        RateCap {
            spacing: WINDOW / rate.max(1),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits for this request's turn; the caller sends right after.
    pub async fn acquire(&self) {
        let mut last = self.last.lock().await;
        // Far beyond any real clock, checked_add is None: no wait then, no panic.
        if let Some(due) = last.and_then(|t| t.checked_add(self.spacing)) {
            tokio::time::sleep_until(due).await;
        }
        *last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// GUARD: with many concurrent callers, no one-second window holds more
    /// than the rate (a burst-sized token bucket let almost twice through).
    #[tokio::test(start_paused = true)]
    async fn every_sliding_second_holds_at_most_the_rate() {
        let cap = Arc::new(RateCap::per_second(10));
        let start = Instant::now();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cap = cap.clone();
                tokio::spawn(async move {
                    cap.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        assert_eq!(times[0], start, "the first request waits for nothing");
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) <= Duration::from_secs(1))
                .count();
            assert!(in_window <= 10, "{in_window} requests within 1 s of #{i}");
        }
        // And the cap is not much slower than the rate: 100 requests in about
        // 10 s, each WINDOW / rate after the one before.
        let last = times[99].duration_since(start);
        assert!(
            last <= WINDOW / 10 * 99 + Duration::from_millis(1),
            "{last:?}"
        );
    }
}
