//! The simulator's control API for the benchmark script, served by
//! `malog simulate` only (never by the tests' or the demo's simulator):
//! `GET /sim/stats`, `POST /sim/reset-stats`, and
//! `POST /sim/touch?every=K[&phase=P][&bytes=N]`, which grows every K-th log
//! (among the tasks of jobs in phase P, if given) by N bytes (default: one
//! line) the way a running job's log grows. No authentication: it listens where the
//! simulator does, 127.0.0.1. The `/sim/` prefix is not a ModelArts path.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::content::LINE_WIDTH;
use super::state::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/stats", get(stats))
        .route("/sim/reset-stats", post(reset_stats))
        .route("/sim/touch", post(touch))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> Response {
    shared.counters.reset();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct TouchQuery {
    every: u64,
    phase: Option<String>,
    bytes: Option<u64>,
}

async fn touch(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<TouchQuery>, QueryRejection>,
) -> Response {
    let Some(Query(TouchQuery {
        every,
        phase,
        bytes,
    })) = query.ok().filter(|q| q.every > 0)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "touch needs every=K with K >= 1 (and optionally phase=P, bytes=N)\n",
        )
            .into_response();
    };
    let touched = shared
        .lock()
        .grow_every(every, phase.as_deref(), bytes.unwrap_or(LINE_WIDTH));
    Json(json!({ "touched": touched })).into_response()
}
