//! Fetching one task's log: fresh link → (conditional) GET → sha256 while
//! streaming → storage writer → [`FetchOutcome`].
//!
//! Memory stays flat whatever the log size: chunks are hashed and written as they
//! arrive. A body that breaks, stalls past the idle timeout or ends short of its
//! Content-Length is an error for that attempt and never reaches the final key.
//! A link is reused by the retries while younger than [`LINK_REUSE`] (links live
//! about five minutes); a 403 from the link host means the link is dead, not
//! that the log is: a fresh one is asked for at once, and that costs no attempt
//! (up to `max_attempts` such refreshes per task). A retry resumes with
//! `Range: bytes=N-` guarded by `If-Range`, keeping the same storage writer (which
//! also computes the sha256): a 206 continues, a 200 (log changed, or ranges unsupported) restarts
//! from byte 0, an unsolicited 206 is rejected. When the task gives up, the
//! writer is aborted. A process that dies mid-download leaves a resumable
//! staging file (local storage): the next process continues it the same way.

use crate::backoff::{Backoff, Retryable};
use crate::config::FetchConfig;
use crate::model::SourceValidators;
use crate::plan::{Action, PlanItem};
use crate::progress::Progress;
use crate::source::LogLink;
use crate::source::client::{describe_reqwest_error, parse_retry_after};
use crate::source::{ModelArtsClient, SourceError};
use crate::storage::{ObjectWriter, Storage, StoreError, StoredObject};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A link younger than this is used again by the next attempt; the service's
/// links live about five minutes. Saves an API request per retry.
pub const LINK_REUSE: Duration = Duration::from_secs(60);
use tokio_util::sync::CancellationToken;

/// Why one download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("log host {host} refused the link (HTTP {status}); it may have expired")]
    LinkRejected { host: String, status: u16 },
    #[error("log host {host} answered HTTP {status}")]
    Status {
        host: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("download from {host}: {message}")]
    Transport { host: String, message: String },
    #[error("download from {host} stalled: no data for {idle:?} after {received} bytes")]
    Stalled {
        host: String,
        idle: Duration,
        received: u64,
    },
    #[error("download from {host}: {message}")]
    Protocol { host: String, message: String },
    #[error("download from {host} ended early: {received} of {expected} bytes")]
    ShortBody {
        host: String,
        expected: u64,
        received: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cancelled")]
    Cancelled,
}

impl Retryable for FetchError {
    fn is_retryable(&self) -> bool {
        match self {
            FetchError::Source(e) => e.is_retryable(),
            FetchError::LinkRejected { .. }
            | FetchError::Transport { .. }
            | FetchError::Stalled { .. }
            | FetchError::Protocol { .. }
            | FetchError::ShortBody { .. } => true,
            FetchError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            // Local disk errors will not go away by themselves; a remote store's
            // failure (already retried inside object_store) may.
            FetchError::Store(e) => e.is_retryable(),
            FetchError::Cancelled => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Source(e) => e.retry_after(),
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The result of fetching one task, after retries.
#[derive(Debug)]
pub enum FetchOutcome {
    /// A new copy is durable in storage; `object` carries the log's size and
    /// sha256, computed by the storage writer as the bytes streamed through.
    Archived {
        object: StoredObject,
        validators: SourceValidators,
    },
    /// The source log matches the archived copy.
    Unchanged,
    /// The attempt failed; see the error.
    Failed(FetchError),
}

/// One task's outcome with what it cost.
#[derive(Debug)]
pub struct TaskResult {
    pub item: PlanItem,
    pub outcome: FetchOutcome,
    pub attempts: u32,
    /// When the outcome was reached, epoch ms.
    pub at_ms: i64,
}

/// Everything a download needs, shared by all concurrent fetches of a run.
#[derive(Clone)]
pub struct Fetcher {
    pub source: ModelArtsClient,
    /// For the presigned links: no auth headers, no overall timeout (logs may be
    /// many GiB); the idle timeout guards against stalls instead.
    pub http: reqwest::Client,
    pub storage: Storage,
    pub config: FetchConfig,
    pub progress: Progress,
    /// One permit per concurrent download (`[fetch] concurrency`). Finishing a
    /// log (making it durable) happens after the permit is returned.
    pub slots: Arc<Semaphore>,
}

/// A download in progress, kept across attempts so that a broken body resumes
/// with `Range` instead of starting over.
struct Partial {
    /// Hashes what it is given; kept open across attempts.
    writer: ObjectWriter,
    received: u64,
    /// Validators of the full object from the first answer; the resume is guarded
    /// by its ETag (If-Range), and `length` is the size the whole log must reach.
    validators: SourceValidators,
}

impl Partial {
    async fn discard(self) {
        self.writer.abort().await;
    }
}

/// What a successful attempt brought.
enum Received {
    /// The archived copy is current.
    Unchanged,
    /// The whole log went into the writer; not durable yet.
    Complete {
        writer: Box<ObjectWriter>,
        validators: SourceValidators,
    },
}

/// What the status line of one answer means for the download.
enum Start {
    /// 200: the whole log follows.
    Whole,
    /// 206 continuing exactly where the partial download stopped.
    Continue,
}

impl Fetcher {
    /// Fetches one task with bounded retries. Never panics on network input.
    pub async fn fetch(&self, item: PlanItem, cancel: CancellationToken) -> TaskResult {
        let (received, attempts) = self.download(&item, &cancel).await;
        let outcome = match received {
            Ok(Received::Unchanged) => FetchOutcome::Unchanged,
            // Outside the download slot, so that storage can make many finished
            // logs durable together while the next downloads run.
            Ok(Received::Complete { writer, validators }) => match writer.finish().await {
                Ok(object) => FetchOutcome::Archived { object, validators },
                Err(e) => FetchOutcome::Failed(e.into()),
            },
            Err(e) => FetchOutcome::Failed(e),
        };
        self.progress.task_done();
        TaskResult {
            item,
            outcome,
            attempts,
            at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The attempts of one task, holding one of the download slots; returns the
    /// last attempt's result and how many attempts were made.
    async fn download(
        &self,
        item: &PlanItem,
        cancel: &CancellationToken,
    ) -> (Result<Received, FetchError>, u32) {
        // The semaphore is never closed, so this always holds a permit.
        let _slot = self.slots.acquire().await;
        let _in_flight = crate::telemetry::download_started();
        let policy = Backoff {
            initial: self.config.backoff_initial,
            max: self.config.backoff_max,
            max_attempts: self.config.max_attempts,
        };
        let mut partial = self.resume_partial(item).await;
        let mut link = None;
        let (mut attempts, mut dead_links) = (0, 0);
        let result = loop {
            attempts += 1;
            match self.attempt(item, &mut partial, &mut link, cancel).await {
                Ok(received) => break Ok(received),
                // A dead link costs a fresh link, not an attempt.
                Err(FetchError::LinkRejected { .. }) if dead_links < policy.max_attempts => {
                    dead_links += 1;
                    attempts -= 1;
                }
                Err(e) if e.is_retryable() && attempts < policy.max_attempts => {
                    let delay = policy.delay_for(attempts, &e, &mut rand::rng());
                    tracing::debug!(job = %item.job, task = %item.task, attempts, error = %e,
                        resume_at = partial.as_ref().map(|p| p.received), "retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break Err(FetchError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(p) = partial.take() {
            // A graceful stop keeps what arrived, as a crash does, for the next pass.
            if matches!(result, Err(FetchError::Cancelled)) {
                p.writer.suspend().await;
            } else {
                p.discard().await;
            }
        }
        (result, attempts)
    }

    /// A download of this task that an interrupted process left in storage.
    async fn resume_partial(&self, item: &PlanItem) -> Option<Partial> {
        let (writer, token) = match self.storage.resume(&item.key).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(job = %item.job, task = %item.task, error = %e, "cannot resume; starting over");
                return None;
            }
        };
        let Ok(validators) = serde_json::from_str::<SourceValidators>(&token) else {
            writer.abort().await;
            return None;
        };
        tracing::info!(job = %item.job, task = %item.task, bytes = writer.written(), "resuming an interrupted download");
        Some(Partial {
            received: writer.written(),
            writer,
            validators,
        })
    }

    async fn attempt(
        &self,
        item: &PlanItem,
        partial: &mut Option<Partial>,
        current: &mut Option<(LogLink, Instant)>,
        cancel: &CancellationToken,
    ) -> Result<Received, FetchError> {
        if cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        if current
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= LINK_REUSE)
        {
            let fresh = self.source.log_link(&item.job, &item.task).await?;
            *current = Some((fresh, Instant::now()));
        }
        let link = current.as_ref().map(|(l, _)| l.clone()).expect("set above");
        let host = link.host().to_owned();
        let mut request = self.http.get(link.url().clone());
        let previous = match &item.action {
            Action::Recheck(v) => Some(v),
            Action::Fetch => None,
        };
        // Without a validator a resumed body could splice two versions of the log.
        if partial
            .as_ref()
            .is_some_and(|p| p.validators.etag.is_none() && p.validators.last_modified.is_none())
            && let Some(p) = partial.take()
        {
            p.discard().await;
        }
        if let Some(p) = partial.as_ref() {
            request = request.header(RANGE, format!("bytes={}-", p.received));
            let guard = p
                .validators
                .etag
                .as_ref()
                .or(p.validators.last_modified.as_ref());
            if let Some(guard) = guard {
                request = request.header(IF_RANGE, guard);
            }
        } else if let Some(v) = previous {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag);
            } else if let Some(lm) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let transport = |e: reqwest::Error| FetchError::Transport {
            host: host.clone(),
            message: describe_reqwest_error(e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let start = match status {
            StatusCode::NOT_MODIFIED if previous.is_some() && partial.is_none() => {
                return Ok(Received::Unchanged);
            }
            StatusCode::OK => Start::Whole,
            StatusCode::PARTIAL_CONTENT => match partial.as_ref() {
                Some(p)
                    if content_range_start(response.headers()) == Some(p.received)
                        && same_etag(response.headers(), &p.validators) =>
                {
                    Start::Continue
                }
                Some(_) => {
                    return Err(FetchError::Protocol {
                        host,
                        message: "206 for another range than requested".into(),
                    });
                }
                None => {
                    return Err(FetchError::Protocol {
                        host,
                        message: "206 Partial Content without a Range request".into(),
                    });
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE if partial.is_some() => {
                // The log shrank or was replaced: start over.
                if let Some(p) = partial.take() {
                    p.discard().await;
                }
                return Err(FetchError::Protocol {
                    host,
                    message: "resume range no longer satisfiable; restarting".into(),
                });
            }
            StatusCode::FORBIDDEN => {
                // Dead: the next attempt must not use it again.
                *current = None;
                return Err(FetchError::LinkRejected { host, status: 403 });
            }
            _ => {
                return Err(FetchError::Status {
                    host,
                    status: status.as_u16(),
                    retry_after: parse_retry_after(response.headers()),
                });
            }
        };
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = SourceValidators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
            length: response.content_length(),
        };
        if let Start::Whole = start {
            // A server that ignores conditional headers: same validators, same log.
            if partial.is_none()
                && let Some(v) = previous
                && v.etag.is_some()
                && v.etag == validators.etag
                && v.length == validators.length
            {
                return Ok(Received::Unchanged);
            }
            // A 200 to a Range request means the log changed (If-Range) or the
            // server ignores ranges: the bytes so far are useless.
            if let Some(p) = partial.take() {
                tracing::debug!(job = %item.job, task = %item.task, "resume refused; restarting from 0");
                p.discard().await;
            }
            let mut writer = self.storage.create(&item.key).await?;
            // Only a download guarded by a validator can be resumed by a later process.
            if validators.etag.is_some() || validators.last_modified.is_some() {
                let token = serde_json::to_string(&validators).expect("plain struct serialises");
                writer.make_resumable(token);
            }
            *partial = Some(Partial {
                writer,
                received: 0,
                validators,
            });
        }
        let p = partial.as_mut().expect("a partial download exists here");
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Err(FetchError::Cancelled),
                next = tokio::time::timeout(self.config.idle_timeout, body.next()) => next,
            };
            match next {
                Err(_) => {
                    return Err(FetchError::Stalled {
                        host,
                        idle: self.config.idle_timeout,
                        received: p.received,
                    });
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(transport(e)),
                Ok(Some(Ok(chunk))) => {
                    if let Err(e) = p.writer.write(&chunk).await {
                        // Storage trouble (e.g. disk full) is not retried; the
                        // staging file goes, the archived copy stays.
                        if let Some(p) = partial.take() {
                            p.discard().await;
                        }
                        return Err(e.into());
                    }
                    p.received += chunk.len() as u64;
                    self.progress.add_bytes(chunk.len() as u64);
                }
            }
        }
        if let Some(expected) = p.validators.length
            && expected != p.received
        {
            return Err(FetchError::ShortBody {
                host,
                expected,
                received: p.received,
            });
        }
        let Partial {
            writer, validators, ..
        } = partial.take().expect("a partial download exists here");
        Ok(Received::Complete {
            writer: Box::new(writer),
            validators,
        })
    }
}

/// Whether a 206 answer belongs to the same version of the log (If-Range should
/// guarantee it; a server that answers otherwise must not splice versions).
fn same_etag(headers: &reqwest::header::HeaderMap, validators: &SourceValidators) -> bool {
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    match (etag, validators.etag.as_deref()) {
        (Some(now), Some(before)) => now == before,
        _ => true,
    }
}

/// The first byte position of a `Content-Range: bytes N-M/T` header.
fn content_range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
