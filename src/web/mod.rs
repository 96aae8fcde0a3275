//! The archive's web page: server-rendered HTML over the read side.
//!
//! Served by `malog web` (read-only, for a host that only holds the archive)
//! and by `malog run` when `[web] enabled = true`. Every page renders what
//! [`crate::read`] returns (the same rows and searches as `jobs`, `show` and
//! `grep`); nothing here writes the index or storage, and no endpoint changes
//! anything. Owns: routes and their stable URLs ([`routes`]), access control
//! ([`auth`]), reading one log in pages ([`log`]), bounded searches
//! ([`search`]), and the HTML ([`pages`], templates in `templates/web/`).
//!
//! Safety rules kept here: every value is escaped by the templates (askama
//! escapes HTML by default and no template marks anything safe); a strict
//! Content-Security-Policy forbids scripts, frames and foreign origins; ids in
//! URLs are checked before use; work per request is bounded (page size, bytes
//! read by a search, hits, time, searches at once).

pub mod auth;
pub mod log;
mod log_page;
mod pages;
mod routes;
pub mod search;

use crate::config::{Config, WebConfig};
use crate::storage::{Storage, StoreError};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Archive-wide searches that may run at once; more get "busy".
const SEARCHES_AT_ONCE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on web.listen = {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] auth::SecretError),
    #[error("cannot open the archive storage: {0}")]
    Storage(#[from] StoreError),
}

impl WebError {
    /// Whether the operator must fix the config (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, WebError::Secret(_))
    }
}

/// What every request reads. Cheap to share.
pub struct WebState {
    pub(crate) web: WebConfig,
    pub(crate) index_path: std::path::PathBuf,
    pub(crate) storage: Storage,
    pub(crate) access: auth::Access,
    /// Line-number checkpoints of the logs opened so far.
    pub(crate) lines: log::LineIndex,
    /// Permits for archive-wide searches (bounded CPU and memory).
    pub(crate) searches: tokio::sync::Semaphore,
    /// Serve `/metrics` here too (`malog web`; the daemon serves its own).
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl WebState {
    /// Reads the access secret and opens the storage (no request is sent).
    pub async fn open(
        config: &Config,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<Arc<WebState>, WebError> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
        let access = auth::Access::resolve(&config.web, dir.as_deref())?;
        let storage = Storage::from_config(&config.storage).await?;
        Ok(Arc::new(WebState {
            web: config.web.clone(),
            index_path: config.index_path.clone(),
            storage,
            access,
            lines: log::LineIndex::default(),
            searches: tokio::sync::Semaphore::new(SEARCHES_AT_ONCE),
            metrics,
        }))
    }
}

/// Binds `web.listen`.
pub async fn bind(web: &WebConfig) -> Result<TcpListener, WebError> {
    TcpListener::bind(web.listen)
        .await
        .map_err(|source| WebError::Listen {
            addr: web.listen,
            source,
        })
}

/// Serves the pages until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<WebState>, stop: CancellationToken) {
    let app = routes::router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the web listener stopped");
    }
}

/// `malog web`: serves the pages until SIGTERM/SIGINT.
pub async fn run(config: &Config) -> Result<(), WebError> {
    let metrics = crate::telemetry::install();
    let state = WebState::open(config, Some(metrics)).await?;
    let listener = bind(&config.web).await?;
    let addr = listener.local_addr().map_err(|source| WebError::Listen {
        addr: config.web.listen,
        source,
    })?;
    tracing::info!(%addr, "serving the archive at http://{addr}/");
    // Printed for people and for the tests, which bind port 0.
    println!("serving the archive at http://{addr}/");
    let stop = crate::shutdown::cancel_on_stop("stopping the web server");
    serve(listener, state, stop).await;
    Ok(())
}
