//! Fetching one task's log: fresh link → (conditional) GET → sha256 while
//! streaming → storage writer → [`FetchOutcome`].
//!
//! Memory stays flat whatever the log size: chunks are hashed and written as they
//! arrive. A body that breaks, stalls past the idle timeout or ends short of its
//! Content-Length aborts the writer, so nothing reaches the final key. Each retry
//! asks for a fresh link (links live about five minutes, and a 403 from the link
//! host means the link is dead, not that the log is).

use crate::backoff::{Backoff, Retryable};
use crate::config::FetchConfig;
use crate::model::SourceValidators;
use crate::plan::{Action, PlanItem};
use crate::progress::Progress;
use crate::source::client::{describe_reqwest_error, parse_retry_after};
use crate::source::{ModelArtsClient, SourceError};
use crate::storage::{Storage, StoreError, StoredObject};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest, Sha256};
use std::time::Duration;
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
            | FetchError::ShortBody { .. } => true,
            FetchError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            FetchError::Store(_) | FetchError::Cancelled => false,
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
    /// A new copy is durable in storage.
    Archived {
        object: StoredObject,
        sha256: String,
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
}

impl Fetcher {
    /// Fetches one task with bounded retries. Never panics on network input.
    pub async fn fetch(&self, item: PlanItem, cancel: CancellationToken) -> TaskResult {
        let policy = Backoff {
            initial: self.config.backoff_initial,
            max: self.config.backoff_max,
            max_attempts: self.config.max_attempts,
        };
        let (result, attempts) = policy.retry(|| self.attempt(&item, &cancel)).await;
        let outcome = result.unwrap_or_else(FetchOutcome::Failed);
        self.progress.task_done();
        TaskResult {
            item,
            outcome,
            attempts,
            at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    async fn attempt(
        &self,
        item: &PlanItem,
        cancel: &CancellationToken,
    ) -> Result<FetchOutcome, FetchError> {
        if cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        let link = self.source.log_link(&item.job, &item.task).await?;
        let host = link.host().to_owned();
        let mut request = self.http.get(link.url().clone());
        let previous = match &item.action {
            Action::Recheck(v) => Some(v),
            Action::Fetch => None,
        };
        if let Some(v) = previous {
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
        match status {
            StatusCode::NOT_MODIFIED if previous.is_some() => return Ok(FetchOutcome::Unchanged),
            StatusCode::OK => {}
            StatusCode::FORBIDDEN => return Err(FetchError::LinkRejected { host, status: 403 }),
            _ => {
                return Err(FetchError::Status {
                    host,
                    status: status.as_u16(),
                    retry_after: parse_retry_after(response.headers()),
                });
            }
        }
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
        // A server that ignores conditional headers: same validators, same log.
        if let Some(v) = previous
            && v.etag.is_some()
            && v.etag == validators.etag
            && v.length == validators.length
        {
            return Ok(FetchOutcome::Unchanged);
        }

        let mut writer = self.storage.create(&item.key).await?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut body = response.bytes_stream();
        let result = loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break Err(FetchError::Cancelled),
                next = tokio::time::timeout(self.config.idle_timeout, body.next()) => next,
            };
            match next {
                Err(_) => {
                    break Err(FetchError::Stalled {
                        host: host.clone(),
                        idle: self.config.idle_timeout,
                        received,
                    });
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(transport(e)),
                Ok(Some(Ok(chunk))) => {
                    hasher.update(&chunk);
                    if let Err(e) = writer.write(&chunk).await {
                        break Err(e.into());
                    }
                    received += chunk.len() as u64;
                    self.progress.add_bytes(chunk.len() as u64);
                }
            }
        };
        let result = result.and_then(|()| match validators.length {
            Some(expected) if expected != received => Err(FetchError::ShortBody {
                host: host.clone(),
                expected,
                received,
            }),
            _ => Ok(()),
        });
        if let Err(e) = result {
            writer.abort().await;
            return Err(e);
        }
        let object = writer.finish().await?;
        Ok(FetchOutcome::Archived {
            object,
            sha256: hex::encode(hasher.finalize()),
            validators,
        })
    }
}
