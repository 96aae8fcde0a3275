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
//!
//! A re-checked log with an extendable copy ([`PlanItem::base`]) is asked for
//! `Range: bytes=<size − OVERLAP>-` (still conditional: an unchanged log is a
//! 304). A 206 that says the log grew and whose first [`crate::storage::OVERLAP`]
//! bytes are the copy's tail continues the copy ([`Storage::extend`]); a log
//! that did not grow, whose overlap differs (rewritten), or a server that
//! answers 200 or 416 gets the whole log instead, from the same link. A
//! confirmation ([`Action::Confirm`]) downloads the whole final log and keeps
//! the copy when both sha256 agree; otherwise the download replaces it. A whole
//! download whose start is not the copy keeps the copy as a version (`history.rs`).

use crate::backoff::{Backoff, Next, Retries, Retryable};
use crate::config::FetchConfig;
use crate::http::{content_range, describe_reqwest_error, parse_retry_after};
use crate::model::SourceValidators;
use crate::plan::{Action, PlanItem};
use crate::progress::Progress;
use crate::source::LogLink;
use crate::source::{ModelArtsClient, SourceError};
use crate::storage::{Base, ObjectWriter, Storage, StoreError, StoredObject};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A link younger than this is used again by the next attempt; the service's
/// links live about five minutes. Saves an API request per retry.
pub const LINK_REUSE: Duration = Duration::from_secs(60);
use tokio_util::sync::CancellationToken;

mod history;
mod validators;
pub use history::KeptCopy;
use validators::{same_etag, validators_of};

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

    /// A dead link costs a fresh link, not an attempt.
    fn costs_attempt(&self) -> bool {
        !matches!(self, FetchError::LinkRejected { .. })
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
        /// The copy is the previous one plus the log's new bytes.
        extended: bool,
        /// For a confirmation ([`Action::Confirm`]) whose log had changed
        /// since: whether the copy built from deltas was right (its bytes are
        /// the start of the log). `false` is a mismatch: the copy is replaced.
        confirmed: Option<bool>,
        /// The log was rewritten: the copy it replaced, kept as a version.
        kept: Option<Box<KeptCopy>>,
    },
    /// The source log matches the archived copy.
    Unchanged,
    /// A full download of the final log equals the copy built from deltas;
    /// the copy stays as it is.
    Confirmed,
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
    /// Body bytes received from the log host, over all attempts.
    pub downloaded: u64,
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
    /// Bytes of the log in the writer (for a delta: the old copy's size plus
    /// what arrived).
    received: u64,
    /// Validators of the full object from the first answer; the resume is guarded
    /// by its ETag (If-Range), and `length` is the size the whole log must reach.
    validators: SourceValidators,
    /// The writer started from the archived copy ([`Storage::extend`]).
    extended: bool,
    /// A download that may replace a copy (`fetch/history.rs`): the sha256
    /// of the log's first `.0` bytes goes to `.1` as they pass.
    prefix: Option<(u64, Option<String>)>,
}

impl Partial {
    async fn discard(self) {
        self.writer.abort().await;
    }

    /// Writes a chunk of the body, noting the prefix digest on the way.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let len = chunk.len() as u64;
        match &mut self.prefix {
            Some((at, digest @ None)) if self.received + len >= *at => {
                let cut = (*at - self.received.min(*at)) as usize;
                self.writer.write(&chunk[..cut]).await?;
                *digest = Some(self.writer.log_digest().1);
                self.writer.write(&chunk[cut..]).await?;
            }
            _ => self.writer.write(chunk).await?,
        }
        self.received += len;
        Ok(())
    }
}

/// What a successful attempt brought.
enum Received {
    /// The archived copy is current.
    Unchanged,
    /// The whole log went into the writer; not durable yet.
    Complete(Box<Partial>),
}

/// What the head of one answer means for the download.
enum Opened {
    /// The archived copy is current (304, or the same validators).
    Unchanged,
    /// The body continues the partial download.
    Body(BoxStream<'static, reqwest::Result<Bytes>>),
    /// The delta cannot be used (the log was rewritten, shrank, or ranges are
    /// not honoured as asked): ask the same link for the whole log.
    WholeInstead,
}

impl Fetcher {
    /// Fetches one task with bounded retries. Never panics on network input.
    pub async fn fetch(&self, item: PlanItem, cancel: CancellationToken) -> TaskResult {
        let mut downloaded = 0;
        let (received, attempts) = self.download(&item, &cancel, &mut downloaded).await;
        let outcome = match received {
            Ok(Received::Unchanged) => FetchOutcome::Unchanged,
            // Outside the download slot, so that storage can make many finished
            // logs durable together while the next downloads run.
            Ok(Received::Complete(partial)) => self.complete(&item, *partial).await,
            Err(e) => FetchOutcome::Failed(e),
        };
        self.progress.task_done();
        TaskResult {
            item,
            outcome,
            attempts,
            at_ms: chrono::Utc::now().timestamp_millis(),
            downloaded,
        }
    }

    /// Makes a complete download durable, or, for a confirmation that matched
    /// the archived copy, drops it (the copy stays).
    async fn complete(&self, item: &PlanItem, p: Partial) -> FetchOutcome {
        let prefix = p.prefix.as_ref().and_then(|(_, d)| d.clone());
        let confirmed = match &item.action {
            Action::Confirm { .. } => {
                // Taken out first: a writer is not shared across threads.
                let now = p.writer.log_digest();
                match self.confirm(item, now, prefix.clone()).await {
                    None => {
                        p.writer.abort().await;
                        return FetchOutcome::Confirmed;
                    }
                    Some(right) => Some(right),
                }
            }
            _ => None,
        };
        // The old copy is durable as a version before the new one replaces it.
        let kept = match self.keep_rewritten(item, p.extended, prefix).await {
            Ok(kept) => kept,
            Err(e) => {
                p.writer.abort().await;
                return FetchOutcome::Failed(e.into());
            }
        };
        let Partial {
            writer,
            validators,
            extended,
            ..
        } = p;
        match writer.finish().await {
            Ok(object) => FetchOutcome::Archived {
                object,
                validators,
                extended,
                confirmed,
                kept,
            },
            Err(e) => FetchOutcome::Failed(e.into()),
        }
    }

    /// Checks a copy built from deltas against a full download of the final
    /// log: `None` when the download, the index and the stored object (read
    /// back: the delta path never reads the old bytes, so only this catches
    /// damage to them) all agree; otherwise whether the copy was right up to
    /// where the log has grown since (`Some(false)`: a mismatch, logged).
    async fn confirm(
        &self,
        item: &PlanItem,
        (now_size, now_sha256): (u64, String),
        prefix: Option<String>,
    ) -> Option<bool> {
        let Action::Confirm {
            size,
            sha256,
            stored,
            stored_size,
            compression,
            ..
        } = &item.action
        else {
            return Some(true);
        };
        let right = if now_size == *size && now_sha256 == *sha256 {
            let digest = match stored {
                Some(key) => self
                    .storage
                    .digest(key, *compression, *stored_size)
                    .await
                    .ok(),
                None => None,
            };
            if digest.is_some_and(|d| d.log_size == now_size && d.log_sha256 == now_sha256) {
                return None;
            }
            false
        } else {
            now_size > *size && prefix.as_ref() == Some(sha256)
        };
        if !right {
            tracing::warn!(job = %item.job, task = %item.task, archived_size = size,
                source_size = now_size,
                "final check: the copy built from deltas differs from the log; replacing it");
        }
        Some(right)
    }

    /// The attempts of one task, holding one of the download slots; returns the
    /// last attempt's result and how many attempts were made.
    async fn download(
        &self,
        item: &PlanItem,
        cancel: &CancellationToken,
        downloaded: &mut u64,
    ) -> (Result<Received, FetchError>, u32) {
        // The semaphore is never closed, so this always holds a permit.
        let _slot = self.slots.acquire().await;
        let _in_flight = crate::telemetry::download_started();
        let mut retries = Retries::new(Backoff {
            initial: self.config.backoff_initial,
            max: self.config.backoff_max,
            max_attempts: self.config.max_attempts,
        });
        let mut partial = self.resume_partial(item).await;
        // Until the source answers otherwise, ask only for what is new.
        let mut delta = item
            .base
            .clone()
            .filter(|b| self.storage.can_extend(&item.key, b));
        let mut link = None;
        let result = loop {
            retries.start();
            let mut state = Attempt {
                partial: &mut partial,
                delta: &mut delta,
                link: &mut link,
                downloaded: &mut *downloaded,
            };
            let error = match self.attempt(item, &mut state, cancel).await {
                Ok(received) => break Ok(received),
                Err(e) => e,
            };
            let Next::Again(delay) = retries.after(&error) else {
                break Err(error);
            };
            tracing::debug!(job = %item.job, task = %item.task, attempts = retries.attempts(),
                error = %error, resume_at = partial.as_ref().map(|p| p.received), "retrying");
            tokio::select! {
                _ = cancel.cancelled() => break Err(FetchError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
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
        (result, retries.attempts())
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
            prefix: history::prefix_to_check(item).filter(|(at, _)| *at > writer.written()),
            writer,
            validators,
            extended: false,
        })
    }

    /// One attempt: a fresh link, then one GET (two when a delta turns out
    /// unusable and the same link fetches the whole log).
    async fn attempt(
        &self,
        item: &PlanItem,
        state: &mut Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Received, FetchError> {
        if cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        let link = match state.link.as_ref() {
            Some((link, at)) if at.elapsed() < LINK_REUSE => link.clone(),
            _ => {
                let fresh = self.source.log_link(&item.job, &item.task).await?;
                *state.link = Some((fresh.clone(), Instant::now()));
                fresh
            }
        };
        let host = link.host().to_owned();
        // Without a validator a resumed body could splice two versions of the log.
        if state
            .partial
            .as_ref()
            .is_some_and(|p| p.validators.etag.is_none() && p.validators.last_modified.is_none())
            && let Some(p) = state.partial.take()
        {
            p.discard().await;
        }
        loop {
            let request = self.request(link.url().clone(), item, state);
            let response = request.send().await.map_err(|e| FetchError::Transport {
                host: host.clone(),
                message: describe_reqwest_error(e),
            })?;
            match self.open(item, response, state, &host, cancel).await? {
                Opened::Unchanged => return Ok(Received::Unchanged),
                Opened::WholeInstead => *state.delta = None,
                Opened::Body(body) => return self.receive(body, state, &host, cancel).await,
            }
        }
    }

    /// The GET for the current state: resume, delta (both ranged) or whole,
    /// conditional when re-checking.
    fn request(&self, url: url::Url, item: &PlanItem, state: &Attempt<'_>) -> RequestBuilder {
        let mut request = self.http.get(url);
        if let Some(p) = state.partial.as_ref() {
            request = request.header(RANGE, format!("bytes={}-", p.received));
            let guard = p
                .validators
                .etag
                .as_ref()
                .or(p.validators.last_modified.as_ref());
            if let Some(guard) = guard {
                request = request.header(IF_RANGE, guard);
            }
            return request;
        }
        if let Some(base) = state.delta.as_ref() {
            request = request.header(RANGE, format!("bytes={}-", base.overlap_start()));
        }
        if let Action::Recheck(v) = &item.action {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag);
            } else if let Some(lm) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, lm);
            }
        }
        request
    }

    /// Reads the head of an answer and sets up where its body goes.
    async fn open(
        &self,
        item: &PlanItem,
        response: Response,
        state: &mut Attempt<'_>,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<Opened, FetchError> {
        let previous = match &item.action {
            Action::Recheck(v) => Some(v),
            Action::Fetch | Action::Confirm { .. } => None,
        };
        let protocol = |message: &str| FetchError::Protocol {
            host: host.to_owned(),
            message: message.to_owned(),
        };
        match response.status() {
            StatusCode::NOT_MODIFIED if previous.is_some() && state.partial.is_none() => {
                return Ok(Opened::Unchanged);
            }
            StatusCode::OK => {}
            StatusCode::PARTIAL_CONTENT => {
                // Decided before any await: a writer is not shared across threads.
                let resumes = state.partial.as_ref().map(|p| {
                    content_range(response.headers()).map(|r| r.0) == Some(p.received)
                        && same_etag(response.headers(), &p.validators)
                });
                return match (resumes, state.delta.clone()) {
                    (Some(true), _) => Ok(Opened::Body(response.bytes_stream().boxed())),
                    (Some(false), _) => Err(protocol("206 for another range than requested")),
                    (None, Some(base)) => {
                        self.open_delta(item, response, &base, state, host, cancel)
                            .await
                    }
                    (None, None) => Err(protocol("206 Partial Content without a Range request")),
                };
            }
            StatusCode::RANGE_NOT_SATISFIABLE if state.partial.is_some() => {
                // The log shrank or was replaced: start over.
                if let Some(p) = state.partial.take() {
                    p.discard().await;
                }
                return Err(protocol("resume range no longer satisfiable; restarting"));
            }
            // Shorter than the archived copy's overlap: not a grown log.
            StatusCode::RANGE_NOT_SATISFIABLE if state.delta.is_some() => {
                return Ok(Opened::WholeInstead);
            }
            StatusCode::FORBIDDEN => {
                // Dead: the next attempt must not use it again.
                *state.link = None;
                return Err(FetchError::LinkRejected {
                    host: host.to_owned(),
                    status: 403,
                });
            }
            status => {
                return Err(FetchError::Status {
                    host: host.to_owned(),
                    status: status.as_u16(),
                    retry_after: parse_retry_after(response.headers()),
                });
            }
        }
        self.open_whole(item, response, state, previous).await
    }

    /// A 200: the whole log follows. Sets up a fresh writer for it.
    async fn open_whole(
        &self,
        item: &PlanItem,
        response: Response,
        state: &mut Attempt<'_>,
        previous: Option<&SourceValidators>,
    ) -> Result<Opened, FetchError> {
        let validators = validators_of(&response, response.content_length());
        // A server that ignores conditional headers: same validators, same log.
        if state.partial.is_none()
            && let Some(v) = previous
            && v.etag.is_some()
            && v.etag == validators.etag
            && v.length == validators.length
        {
            return Ok(Opened::Unchanged);
        }
        // A 200 to a Range request means the log changed (If-Range) or the
        // server ignores ranges: this body is the whole log, the bytes so far
        // are useless, and a delta will not work with this server.
        if state.delta.take().is_some() {
            tracing::debug!(job = %item.job, task = %item.task, "range ignored; taking the whole log");
        }
        if let Some(p) = state.partial.take() {
            tracing::debug!(job = %item.job, task = %item.task, "resume refused; restarting from 0");
            p.discard().await;
        }
        let mut writer = self.storage.create(&item.key).await?;
        // Only a download guarded by a validator can be resumed by a later process.
        if validators.etag.is_some() || validators.last_modified.is_some() {
            let token = serde_json::to_string(&validators).expect("plain struct serialises");
            writer.make_resumable(token);
        }
        *state.partial = Some(Partial {
            writer,
            received: 0,
            validators,
            extended: false,
            prefix: history::prefix_to_check(item),
        });
        Ok(Opened::Body(response.bytes_stream().boxed()))
    }

    /// A 206 to a delta request: checks that the log grew and that the answer
    /// starts with the archived copy's tail, then continues the copy with the
    /// rest. Anything else means the log was not appended to: whole instead.
    async fn open_delta(
        &self,
        item: &PlanItem,
        response: Response,
        base: &Base,
        state: &mut Attempt<'_>,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<Opened, FetchError> {
        let Some((start, total)) = content_range(response.headers()) else {
            return Err(FetchError::Protocol {
                host: host.to_owned(),
                message: "206 without a usable Content-Range".into(),
            });
        };
        if start != base.overlap_start() {
            return Err(FetchError::Protocol {
                host: host.to_owned(),
                message: "206 for another range than requested".into(),
            });
        }
        if total.is_none_or(|t| t <= base.size) {
            tracing::info!(job = %item.job, task = %item.task, "log changed without growing; downloading it whole");
            return Ok(Opened::WholeInstead);
        }
        let validators = validators_of(&response, total);
        let mut body = response.bytes_stream().boxed();
        let want = base.overlap_len() as usize;
        let mut overlap = Vec::with_capacity(want);
        let mut rest = Bytes::new();
        while overlap.len() < want {
            let received = start + overlap.len() as u64;
            let Some(chunk) = self
                .next_chunk(&mut body, state, host, received, cancel)
                .await?
            else {
                return Err(FetchError::ShortBody {
                    host: host.to_owned(),
                    expected: total.unwrap_or(0) - start,
                    received: overlap.len() as u64,
                });
            };
            let take = (want - overlap.len()).min(chunk.len());
            overlap.extend_from_slice(&chunk[..take]);
            rest = chunk.slice(take..);
        }
        if !base.tail_matches(&overlap) {
            tracing::info!(job = %item.job, task = %item.task,
                "log was rewritten, not appended to (its overlap differs); downloading it whole");
            return Ok(Opened::WholeInstead);
        }
        let writer = match self.storage.extend(&item.key, base, &overlap).await {
            Ok(writer) => writer,
            Err(e @ StoreError::NotExtendable { .. }) => {
                tracing::warn!(job = %item.job, task = %item.task, error = %e, "downloading the log whole");
                return Ok(Opened::WholeInstead);
            }
            Err(e) => return Err(e.into()),
        };
        let mut p = Partial {
            writer,
            received: base.size,
            validators,
            extended: true,
            prefix: None,
        };
        if let Err(e) = p.write(&rest).await {
            p.discard().await;
            return Err(e.into());
        }
        *state.partial = Some(p);
        Ok(Opened::Body(body))
    }

    /// The next chunk of a body, or `None` at its end; counts what arrives.
    async fn next_chunk(
        &self,
        body: &mut BoxStream<'static, reqwest::Result<Bytes>>,
        state: &mut Attempt<'_>,
        host: &str,
        received: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<Bytes>, FetchError> {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(FetchError::Cancelled),
            next = tokio::time::timeout(self.config.idle_timeout, body.next()) => next,
        };
        match next {
            Err(_) => Err(FetchError::Stalled {
                host: host.to_owned(),
                idle: self.config.idle_timeout,
                received,
            }),
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(FetchError::Transport {
                host: host.to_owned(),
                message: describe_reqwest_error(e),
            }),
            Ok(Some(Ok(chunk))) => {
                *state.downloaded += chunk.len() as u64;
                self.progress.add_bytes(chunk.len() as u64);
                Ok(Some(chunk))
            }
        }
    }

    /// Streams a body into the partial download until it ends.
    async fn receive(
        &self,
        mut body: BoxStream<'static, reqwest::Result<Bytes>>,
        state: &mut Attempt<'_>,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<Received, FetchError> {
        loop {
            let received = state.partial.as_ref().map_or(0, |p| p.received);
            let Some(chunk) = self
                .next_chunk(&mut body, state, host, received, cancel)
                .await?
            else {
                break;
            };
            let p = state
                .partial
                .as_mut()
                .expect("a partial download exists here");
            if let Err(e) = p.write(&chunk).await {
                // Storage trouble (e.g. disk full) is not retried; the
                // staging file goes, the archived copy stays.
                if let Some(p) = state.partial.take() {
                    p.discard().await;
                }
                return Err(e.into());
            }
        }
        let p = state
            .partial
            .as_ref()
            .expect("a partial download exists here");
        if let Some(expected) = p.validators.length
            && expected != p.received
        {
            return Err(FetchError::ShortBody {
                host: host.to_owned(),
                expected,
                received: p.received,
            });
        }
        let p = state
            .partial
            .take()
            .expect("a partial download exists here");
        Ok(Received::Complete(Box::new(p)))
    }
}

/// What one attempt may change: the partial download, whether a delta is still
/// worth asking for, and the bytes received.
struct Attempt<'a> {
    partial: &'a mut Option<Partial>,
    delta: &'a mut Option<Base>,
    /// The link in use and when it was issued; reused while younger than
    /// [`LINK_REUSE`], dropped when the link host refuses it.
    link: &'a mut Option<(LogLink, Instant)>,
    downloaded: &'a mut u64,
}
