//! The daemon's HTTP endpoints: `/metrics` (Prometheus text) and `/healthz`.
//!
//! `/healthz` answers 200 only when the index can be read and the storage
//! accepts a write, checked at each request (never from a cached "ok"): a
//! read-only query on its own index connection, and a write that leaves nothing
//! behind ([`crate::storage::Storage::probe`]: a staging file written and
//! removed, or an S3 multipart upload started and aborted), so a folder that
//! became read-only, vanished or filled its inode table, or a bucket whose
//! write permission was taken away, answers 503. Before the archive could be opened at start-up it answers
//! 503 `starting` with the reason.

use super::Shared;
use crate::index::Index;
use crate::run::Archiver;
use crate::storage::ArchiveKey;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The key of the health probe's write; it never reaches its final name.
const PROBE_KEY: &str = ".malog-healthz/probe";

/// Serves until `stop` is cancelled.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the metrics and health listener stopped");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, `unhealthy` or `starting`.
    pub status: &'static str,
    /// `ok` or what is wrong with the index.
    pub index: String,
    /// `ok` or what is wrong with the storage.
    pub storage: String,
    pub pass_running: bool,
    /// Each configured source and what its last answers said (`ok`, or why
    /// its calls fail). Informational: one source's trouble fails its own
    /// tasks, not the service, so it does not make the status unhealthy.
    pub sources: Vec<crate::run::SourceHealth>,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let (archiver, waiting, pass_running) = shared.snapshot();
    let health = match archiver {
        Some(archiver) => check(&archiver, pass_running).await,
        None => Health {
            status: "starting",
            index: waiting.clone().unwrap_or_else(|| "not open yet".to_owned()),
            storage: waiting.unwrap_or_else(|| "not open yet".to_owned()),
            pass_running,
            sources: Vec::new(),
        },
    };
    let code = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(health)).into_response()
}

/// Checks the index and the storage behind `archiver` now.
pub async fn check(archiver: &Archiver, pass_running: bool) -> Health {
    let index = check_index(archiver).await;
    let storage = check_storage(archiver).await;
    let status = if index.is_ok() && storage.is_ok() {
        "ok"
    } else {
        "unhealthy"
    };
    let text = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    Health {
        status,
        index: text(index),
        storage: text(storage),
        pass_running,
        sources: archiver.source_health(),
    }
}

async fn check_index(archiver: &Archiver) -> Result<(), String> {
    let path = archiver.config.index_path.clone();
    tokio::task::spawn_blocking(move || {
        let index = Index::open_read_only(&path)?;
        index.run_history(1).map(|_| ())
    })
    .await
    .map_err(|e| format!("index check panicked: {e}"))?
    .map_err(|e| e.to_string())
}

async fn check_storage(archiver: &Archiver) -> Result<(), String> {
    let key = ArchiveKey::from_stored(PROBE_KEY).expect("the probe key is valid");
    archiver
        .storage()
        .probe(&key)
        .await
        .map_err(|e| format!("storage is not usable: {e}"))
}
