//! Scripted faults: what a test can ask the simulator to get wrong, the queue
//! that hands them out, and the body wrapper that breaks a response stream.
//!
//! A [`Fault`] fires on requests of its [`FaultTarget`] whose job/task match its
//! filters, at most `times` times, then leaves the queue. The first matching fault
//! in insertion order wins; one request consumes at most one fault. Faults are
//! checked after the API signature and project id, so only requests that would
//! otherwise succeed consume them. This module decides *whether* and *how* a fault
//! applies; the handlers decide what response to build from it.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};

/// Which kind of request a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FaultTarget {
    /// `POST …/training-job-searches` (job/task filters never match it).
    Search,
    /// `GET …/training-jobs/{job_id}` (a task filter never matches it).
    Details,
    /// `GET …/tasks/{task_id}/logs/url`.
    Link,
    /// `GET`/`HEAD` of a presigned log link.
    Download,
    /// `GET …/training-jobs/{job_id}/events`.
    Events,
    /// `GET …/training-jobs/{job_id}/metrics/{task_id}`.
    Metrics,
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and an error body (JSON for API targets, S3-style XML
    /// for [`FaultTarget::Download`]), plus `Retry-After: <secs>` when set.
    Status {
        status: u16,
        error_code: String,
        error_msg: String,
        retry_after: Option<u64>,
    },
    /// Send `after` bytes of the body, then abort the connection: the body stream
    /// ends with an error and hyper closes the socket without finishing the
    /// message. Observed with hyper 1.x: the client gets the head and exactly
    /// `after` body bytes, then EOF (a FIN, not a TCP RST); reqwest reports a body
    /// error (hyper `IncompleteBody`, `UnexpectedEof`).
    ResetMidBody { after: u64 },
    /// Announce the full `Content-Length`, send `after` bytes, then end the body
    /// cleanly. hyper will not frame a message shorter than its `Content-Length`:
    /// it closes the connection itself, so the client sees exactly what
    /// [`FaultKind::ResetMidBody`] gives (`after` bytes, EOF, `IncompleteBody`).
    ShortBody { after: u64 },
    /// Send `after` bytes, pause for `duration`, then send the rest.
    Stall { after: u64, duration: Duration },
    /// On [`FaultTarget::Link`]: the next link issued is already expired, so its
    /// download gets 403. On [`FaultTarget::Download`]: that download gets the same
    /// 403 directly. Never matches Search or Details.
    ExpiredLink,
    /// On [`FaultTarget::Download`]: answer as a server without range support
    /// would, the whole log with 200, whatever `Range` asked for.
    IgnoreRange,
}

/// A scripted fault. Build with [`Fault::new`] and refine with the builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub target: FaultTarget,
    pub kind: FaultKind,
    /// How many matching requests it still fires on; 0 means it never fires.
    pub times: u32,
    /// Only requests for this job (None = any).
    pub job_id: Option<String>,
    /// Only requests for this task (None = any).
    pub task_id: Option<String>,
}

impl Fault {
    /// Fires once on any request of `target`.
    pub fn new(target: FaultTarget, kind: FaultKind) -> Fault {
        Fault {
            target,
            kind,
            times: 1,
            job_id: None,
            task_id: None,
        }
    }

    /// A [`FaultKind::Status`] fault without `Retry-After`.
    pub fn status(target: FaultTarget, status: u16, error_code: &str, error_msg: &str) -> Fault {
        Fault::new(
            target,
            FaultKind::Status {
                status,
                error_code: error_code.to_owned(),
                error_msg: error_msg.to_owned(),
                retry_after: None,
            },
        )
    }

    /// Gateway throttling: 429 `APIG.0308` with `Retry-After: <retry_after>`.
    pub fn throttled(target: FaultTarget, retry_after: u64) -> Fault {
        Fault::new(
            target,
            FaultKind::Status {
                status: 429,
                error_code: "APIG.0308".to_owned(),
                error_msg: "The throttling threshold has been reached: policy user over ratelimit,limit:20,time:1 second"
                    .to_owned(),
                retry_after: Some(retry_after),
            },
        )
    }

    /// Fires on the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = n;
        self
    }

    /// Fires only on requests for this job.
    pub fn job(mut self, job_id: impl Into<String>) -> Fault {
        self.job_id = Some(job_id.into());
        self
    }

    /// Fires only on requests for this task.
    pub fn task(mut self, task_id: impl Into<String>) -> Fault {
        self.task_id = Some(task_id.into());
        self
    }

    fn matches(&self, target: FaultTarget, job_id: Option<&str>, task_id: Option<&str>) -> bool {
        let filter_ok = |want: &Option<String>, got: Option<&str>| match want {
            None => true,
            Some(w) => got == Some(w.as_str()),
        };
        let kind_ok = match self.kind {
            FaultKind::ExpiredLink => matches!(target, FaultTarget::Link | FaultTarget::Download),
            FaultKind::IgnoreRange => target == FaultTarget::Download,
            _ => true,
        };
        self.times > 0
            && self.target == target
            && kind_ok
            && filter_ok(&self.job_id, job_id)
            && filter_ok(&self.task_id, task_id)
    }
}

/// Faults drawn at random, for a flaky network: each field is the chance (0 to 1)
/// that one request gets that fault. API requests (search, details, links) can
/// get only the status faults; downloads can get any. Scripted faults
/// ([`Fault`]) are taken first; a request gets at most one fault.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// 429 with `Retry-After: 1`.
    pub throttled: f64,
    /// 500.
    pub server_error: f64,
    /// The body breaks off halfway ([`FaultKind::ResetMidBody`]).
    pub reset_mid_body: f64,
    /// The body ends halfway, cleanly ([`FaultKind::ShortBody`]).
    pub short_body: f64,
    /// The body pauses halfway for `stall_for` ([`FaultKind::Stall`]).
    pub stall: f64,
    /// The link is refused as expired (403).
    pub expired_link: f64,
    pub stall_for: Duration,
}

impl FaultRates {
    /// Draws the fault (if any) of one request of `target` whose body, when it
    /// is a download, is `body_len` bytes; `roll` is uniform in [0, 1).
    pub(crate) fn draw(&self, target: FaultTarget, body_len: u64, roll: f64) -> Option<FaultKind> {
        let status = |status: u16, code: &str, msg: &str, retry_after| FaultKind::Status {
            status,
            error_code: code.to_owned(),
            error_msg: msg.to_owned(),
            retry_after,
        };
        let mut kinds = vec![
            (
                self.throttled,
                status(
                    429,
                    "APIG.0308",
                    "The throttling threshold has been reached",
                    Some(1),
                ),
            ),
            (
                self.server_error,
                status(500, "ModelArts.0001", "Simulated internal error", None),
            ),
        ];
        if target == FaultTarget::Download {
            let after = body_len / 2;
            kinds.extend([
                (self.reset_mid_body, FaultKind::ResetMidBody { after }),
                (self.short_body, FaultKind::ShortBody { after }),
                (
                    self.stall,
                    FaultKind::Stall {
                        after,
                        duration: self.stall_for,
                    },
                ),
                (self.expired_link, FaultKind::ExpiredLink),
            ]);
        }
        let mut threshold = 0.0;
        kinds.into_iter().find_map(|(chance, kind)| {
            threshold += chance;
            (roll < threshold).then_some(kind)
        })
    }
}

/// Pending faults in insertion order.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    faults: Vec<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push(fault);
        }
    }

    /// Takes one firing of the first matching fault, dropping the fault when spent.
    pub fn take(
        &mut self,
        target: FaultTarget,
        job_id: Option<&str>,
        task_id: Option<&str>,
    ) -> Option<FaultKind> {
        let i = self
            .faults
            .iter()
            .position(|f| f.matches(target, job_id, task_id))?;
        let fault = &mut self.faults[i];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.faults.len()
    }
}

/// A fault that breaks a response body after some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFault {
    Reset { after: u64 },
    Short { after: u64 },
    Stall { after: u64, duration: Duration },
}

impl BodyFault {
    pub fn from_kind(kind: &FaultKind) -> Option<BodyFault> {
        match *kind {
            FaultKind::ResetMidBody { after } => Some(BodyFault::Reset { after }),
            FaultKind::ShortBody { after } => Some(BodyFault::Short { after }),
            FaultKind::Stall { after, duration } => Some(BodyFault::Stall { after, duration }),
            _ => None,
        }
    }

    fn after(&self) -> u64 {
        match *self {
            BodyFault::Reset { after }
            | BodyFault::Short { after }
            | BodyFault::Stall { after, .. } => after,
        }
    }
}

/// How long a broken body waits before breaking, so that hyper has flushed the
/// bytes already handed to it. hyper discards its unflushed write buffer when a body
/// errors or ends short of `Content-Length`; without the pause the client would get
/// fewer bytes than `after`, or not even the response head, when the body is
/// generated faster than the socket drains.
const FLUSH_GRACE: Duration = Duration::from_millis(25);

pub(crate) type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

struct Faulty {
    inner: BodyStream,
    /// Bytes of `inner` already read but not yet sent (the rest of a split chunk).
    pending: Option<Bytes>,
    sent: u64,
    fault: Option<BodyFault>,
}

/// Passes `inner` through, applying `fault` once `after` bytes have been sent.
/// A body shorter than `after` is passed through untouched.
pub(crate) fn faulty_body(inner: BodyStream, fault: Option<BodyFault>) -> BodyStream {
    let Some(fault) = fault else { return inner };
    let state = Faulty {
        inner,
        pending: None,
        sent: 0,
        fault: Some(fault),
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(fault) = st.fault
                && st.sent == fault.after()
            {
                match fault {
                    BodyFault::Reset { .. } => {
                        st.fault = None;
                        tokio::time::sleep(FLUSH_GRACE).await;
                        // Ending the body with an error makes hyper abort the connection.
                        let err = io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "simulated reset mid-body",
                        );
                        st.inner = Box::pin(futures::stream::empty());
                        st.pending = None;
                        return Some((Err(err), st));
                    }
                    BodyFault::Short { .. } => {
                        tokio::time::sleep(FLUSH_GRACE).await;
                        return None;
                    }
                    BodyFault::Stall { duration, .. } => {
                        st.fault = None;
                        tokio::time::sleep(duration).await;
                        continue;
                    }
                }
            }
            let mut chunk = match st.pending.take() {
                Some(chunk) => chunk,
                None => match st.inner.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), st)),
                },
            };
            if let Some(fault) = st.fault {
                let room = fault.after() - st.sent;
                if chunk.len() as u64 > room {
                    st.pending = Some(chunk.split_off(room as usize));
                }
            }
            st.sent += chunk.len() as u64;
            return Some((Ok(chunk), st));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: a fault fires exactly `times` times on matching requests and then is gone.
    #[test]
    fn queue_decrements_and_filters() {
        let mut q = FaultQueue::default();
        q.push(Fault::throttled(FaultTarget::Link, 1).times(2).job("a"));
        q.push(Fault::new(FaultTarget::Download, FaultKind::ExpiredLink).task("worker-1"));
        q.push(Fault::new(FaultTarget::Search, FaultKind::ExpiredLink));
        q.push(Fault::new(FaultTarget::Details, FaultKind::ShortBody { after: 1 }).times(0));
        assert_eq!(q.len(), 3);

        assert_eq!(q.take(FaultTarget::Link, Some("b"), Some("worker-0")), None);
        assert!(matches!(
            q.take(FaultTarget::Link, Some("a"), Some("worker-0")),
            Some(FaultKind::Status { status: 429, .. })
        ));
        assert!(
            q.take(FaultTarget::Link, Some("a"), Some("worker-1"))
                .is_some()
        );
        assert_eq!(q.take(FaultTarget::Link, Some("a"), Some("worker-0")), None);

        assert_eq!(
            q.take(FaultTarget::Download, Some("a"), Some("worker-0")),
            None
        );
        assert_eq!(
            q.take(FaultTarget::Download, Some("a"), Some("worker-1")),
            Some(FaultKind::ExpiredLink)
        );
        assert_eq!(
            q.take(FaultTarget::Download, Some("a"), Some("worker-1")),
            None
        );

        // ExpiredLink never applies to a search; it stays queued, harmless.
        assert_eq!(q.take(FaultTarget::Search, None, None), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn first_matching_fault_wins() {
        let mut q = FaultQueue::default();
        q.push(Fault::status(
            FaultTarget::Details,
            500,
            "ModelArts.0001",
            "first",
        ));
        q.push(Fault::status(
            FaultTarget::Details,
            503,
            "ModelArts.0002",
            "second",
        ));
        assert!(matches!(
            q.take(FaultTarget::Details, Some("j"), None),
            Some(FaultKind::Status { status: 500, .. })
        ));
        assert!(matches!(
            q.take(FaultTarget::Details, Some("j"), None),
            Some(FaultKind::Status { status: 503, .. })
        ));
        assert_eq!(q.take(FaultTarget::Details, Some("j"), None), None);
    }

    fn chunks(sizes: &[usize]) -> BodyStream {
        let items: Vec<io::Result<Bytes>> = sizes
            .iter()
            .map(|&n| Ok(Bytes::from(vec![b'x'; n])))
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn drain(s: BodyStream) -> (u64, bool) {
        let items: Vec<io::Result<Bytes>> = s.collect().await;
        let bytes = items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| b.len() as u64)
            .sum();
        (bytes, items.iter().any(|r| r.is_err()))
    }

    #[test]
    fn rates_pick_each_fault_by_its_share() {
        let rates = FaultRates {
            throttled: 0.1,
            server_error: 0.1,
            reset_mid_body: 0.1,
            short_body: 0.1,
            stall: 0.1,
            expired_link: 0.1,
            stall_for: Duration::from_secs(1),
        };
        let api = |roll| rates.draw(FaultTarget::Link, 0, roll);
        assert!(matches!(
            api(0.05),
            Some(FaultKind::Status { status: 429, .. })
        ));
        assert!(matches!(
            api(0.15),
            Some(FaultKind::Status { status: 500, .. })
        ));
        assert_eq!(api(0.25), None, "API requests get status faults only");
        let get = |roll| rates.draw(FaultTarget::Download, 100, roll);
        assert_eq!(get(0.25), Some(FaultKind::ResetMidBody { after: 50 }));
        assert_eq!(get(0.35), Some(FaultKind::ShortBody { after: 50 }));
        assert!(matches!(
            get(0.45),
            Some(FaultKind::Stall { after: 50, .. })
        ));
        assert_eq!(get(0.55), Some(FaultKind::ExpiredLink));
        assert_eq!(get(0.65), None);
        assert_eq!(
            FaultRates::default().draw(FaultTarget::Download, 100, 0.0),
            None
        );
    }

    #[tokio::test]
    async fn body_faults_cut_where_asked() {
        assert_eq!(
            drain(faulty_body(chunks(&[10, 10, 10]), None)).await,
            (30, false)
        );
        assert_eq!(
            drain(faulty_body(
                chunks(&[10, 10, 10]),
                Some(BodyFault::Reset { after: 15 })
            ))
            .await,
            (15, true)
        );
        assert_eq!(
            drain(faulty_body(
                chunks(&[10, 10, 10]),
                Some(BodyFault::Reset { after: 0 })
            ))
            .await,
            (0, true)
        );
        assert_eq!(
            drain(faulty_body(
                chunks(&[10, 10, 10]),
                Some(BodyFault::Short { after: 20 })
            ))
            .await,
            (20, false)
        );
        assert_eq!(
            drain(faulty_body(
                chunks(&[10]),
                Some(BodyFault::Short { after: 99 })
            ))
            .await,
            (10, false)
        );
    }

    #[tokio::test]
    async fn stall_pauses_then_continues() {
        let started = std::time::Instant::now();
        let stall = BodyFault::Stall {
            after: 5,
            duration: Duration::from_millis(150),
        };
        assert_eq!(
            drain(faulty_body(chunks(&[10, 10]), Some(stall))).await,
            (20, false)
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
