//! A stand-in for Huawei Cloud ModelArts and OBS over real HTTP on 127.0.0.1, for
//! `malog demo`, the integration tests and the benchmarks.
//!
//! It owns a faithful-enough copy of the three operations the archiver uses
//! (`POST …/training-job-searches`, `GET …/training-jobs/{id}`,
//! `GET …/tasks/{task}/logs/url`, all behind AK/SK signature checks with the
//! gateway's error bodies), the presigned OBS links those hand out (S3 v2-style
//! signature and expiry, ETag/Last-Modified, conditional and range GETs, HEAD), and
//! scripted faults ([`Fault`]). Logs are synthetic, fixed-width training-log lines
//! generated from `(job, task, seed, offset)` while streaming, so logs of any size
//! cost no memory. It does not own the client side: requests are signed by
//! [`crate::source::sign`], whose `verify` it uses.
//!
//! ```text
//! Simulator handle ──(Arc<Shared>)──► axum router ─┬─ api.rs   gateway (AK/SK), details, log link
//!  (tests mutate jobs,                             ├─ jobs.rs  job object, search
//!   inject faults, read stats)                     └─ obs.rs   presigned log GET/HEAD
//! scenario.rs (SimConfig) ──► state.rs (jobs, faults, counters) ◄── all handlers
//!                             faults.rs (queue, broken bodies)  ◄── all handlers
//!                             content.rs (log bytes)            ◄── obs.rs
//! ```

#![allow(
    clippy::result_large_err,
    reason = "handlers (`api`, `jobs`, `obs`) return `Err(Response)` for an early answer, once per request"
)]

mod api;
mod content;
mod control;
mod faults;
mod iam;
mod jobs;
mod obs;
mod records;
mod scenario;
mod state;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::ListenerExt as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use content::LINE_WIDTH;
pub use faults::{Fault, FaultKind, FaultRates, FaultTarget};
pub use jobs::FAKE_SECRET;
pub use obs::BUCKET;
pub use scenario::{SimConfig, SimJob, SimTask};

use api::RequestId;
use state::Shared;

/// Counters since start or the last [`Simulator::reset_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Searches that passed the signature check (fault answers included).
    pub search_requests: u64,
    /// Job-details requests that passed the signature check.
    pub detail_requests: u64,
    /// Log-link requests that passed the signature check.
    pub link_requests: u64,
    /// GETs of a log answered 200 or 206 (HEAD not counted).
    pub downloads: u64,
    /// Log requests answered 304.
    pub not_modified: u64,
    /// GETs of a log answered 206.
    pub range_requests: u64,
    /// Log body bytes handed to the connection.
    pub bytes_served: u64,
    /// API requests rejected with 401 (bad signature, unknown AK, stale date).
    pub auth_failures: u64,
    /// Faults taken from the queue.
    pub faults_fired: u64,
    /// Log requests rejected with 403 (expired link, bad signature or key).
    pub links_denied: u64,
    /// IAM tokens issued by `POST /v3/auth/tokens`.
    pub tokens_issued: u64,
    /// The most ModelArts API requests (`/v2/…`, any kind, answered or not) that
    /// arrived within one sliding second.
    pub max_api_requests_per_second: u64,
    /// Job events and task metrics requests (§2.9, §2.10).
    pub record_requests: u64,
}

/// A running simulator. Clones are handles to the same server.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Cancelled by [`Simulator::shutdown`]; the server then stops accepting and
    /// ends once open connections finish. Dropping handles does not stop it.
    stop: CancellationToken,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Serves on an already-bound listener (tests bind 127.0.0.1:0 first, no sleeps).
    /// The server runs on a spawned task of the current runtime. A listener bound to
    /// an unspecified address is advertised as loopback.
    pub async fn start(listener: TcpListener, config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::serve(listener, config, false).await
    }

    /// Like [`Simulator::start`], plus the control API under `/sim/` (see
    /// `control.rs`) that `malog simulate` offers the benchmark script.
    pub async fn start_with_control(
        listener: TcpListener,
        config: SimConfig,
    ) -> std::io::Result<Simulator> {
        Simulator::serve(listener, config, true).await
    }

    async fn serve(
        listener: TcpListener,
        config: SimConfig,
        control: bool,
    ) -> std::io::Result<Simulator> {
        let local = listener.local_addr()?;
        let addr = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
            }
            _ => local,
        };
        let shared = Arc::new(Shared::new(config, format!("http://{addr}")));
        let stop = CancellationToken::new();
        let app = router(Arc::clone(&shared), control);
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::trace!(error = %e, "simulator could not set TCP_NODELAY");
            }
        });
        let signal = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(error = %e, "simulator server stopped with an error");
            }
        });
        Ok(Simulator { shared, addr, stop })
    }

    /// Binds 127.0.0.1 on a free port and starts there.
    pub async fn start_local(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?, config).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the API endpoint, also the host of the log links.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint.clone()
    }

    /// The current state: credentials and jobs with their current phases and sizes.
    pub fn config(&self) -> SimConfig {
        self.shared.config()
    }

    pub fn stats(&self) -> SimStats {
        self.shared.counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// Log body bytes served for one task since start or the last reset (the
    /// cost of one log's downloads, whatever they asked for).
    pub fn bytes_served_for(&self, job_id: &str, task_id: &str) -> u64 {
        self.shared.counters.served(job_id, task_id)
    }

    /// Grows (or shrinks) a log. Earlier bytes stay identical; ETag and
    /// Last-Modified change if the size does. Unknown job or task: ignored.
    pub fn set_task_size(&self, job_id: &str, task_id: &str, size: u64) {
        self.update_task(job_id, task_id, |t| {
            std::mem::replace(&mut t.size, size) != size
        });
    }

    /// Rewrites a log: different content, new ETag and Last-Modified.
    pub fn set_task_seed(&self, job_id: &str, task_id: &str, seed: u64) {
        self.update_task(job_id, task_id, |t| {
            std::mem::replace(&mut t.seed, seed) != seed
        });
    }

    fn update_task(&self, job_id: &str, task_id: &str, change: impl FnOnce(&mut SimTask) -> bool) {
        if !self.shared.lock().update_task(job_id, task_id, change) {
            tracing::warn!(job_id, task_id, "simulator: no such task to update");
        }
    }

    /// Moves a job to another phase (Creating and Pending hide its tasks).
    pub fn set_job_phase(&self, job_id: &str, phase: &str) {
        self.shared.lock().set_phase(job_id, phase);
    }

    /// Adds a job, replacing one with the same id.
    pub fn add_job(&self, job: SimJob) {
        self.shared.lock().insert(job);
    }

    /// Deletes a job: its details and links then answer 400 `ModelArts.2775` and
    /// links already issued answer 404 `NoSuchKey`.
    pub fn remove_job(&self, job_id: &str) {
        self.shared.lock().remove(job_id);
    }

    /// Queues a fault; see [`Fault`] for matching and [`FaultKind`] for effects.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Sets the chances of random faults on every later request (all zero:
    /// none, the default); see [`FaultRates`].
    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.shared.lock().rates = rates;
    }

    /// The log's current content, materialised. For tests with small logs; empty
    /// for an unknown job or task.
    pub fn log_bytes(&self, job_id: &str, task_id: &str) -> Vec<u8> {
        let object = self.shared.lock().object(job_id, task_id);
        object
            .map(|o| o.generator.bytes(0, o.size))
            .unwrap_or_default()
    }

    /// The ETag a download of this log currently carries (quoted), if it exists.
    pub fn log_etag(&self, job_id: &str, task_id: &str) -> Option<String> {
        self.shared.lock().object(job_id, task_id).map(|o| o.etag)
    }

    /// Expires every IAM token issued so far, as 24 hours passing would.
    pub fn expire_tokens(&self) {
        self.shared.iam.expire_all();
    }

    /// Stops accepting connections; the server task ends once open ones finish.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Writes every log of `config` to `dir/<job id>/<file name>`, the path its link
/// has under [`SimConfig::links_to`], generating it in chunks (a log of any size
/// costs no memory). Returns the bytes written.
pub fn export(config: &SimConfig, dir: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Write as _;
    let shared = Shared::new(config.clone(), String::new());
    let mut total = 0;
    let mut chunk = vec![0u8; 1 << 20];
    for job in &config.jobs {
        std::fs::create_dir_all(dir.join(&job.id))?;
        for task in &job.tasks {
            let Some(object) = shared.lock().object(&job.id, &task.id) else {
                continue;
            };
            let path = dir.join(&job.id).join(obs::file_name(&job.id, &task.id));
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            let mut offset = 0;
            while offset < object.size {
                let n = (object.size - offset).min(chunk.len() as u64) as usize;
                object.generator.fill(offset, &mut chunk[..n]);
                out.write_all(&chunk[..n])?;
                offset += n as u64;
            }
            out.flush()?;
            total += object.size;
        }
    }
    Ok(total)
}

fn router(shared: Arc<Shared>, control: bool) -> Router {
    let mut routes = api::routes()
        .route("/v3/auth/tokens", axum::routing::post(iam::issue_token))
        .merge(obs::routes());
    if control {
        routes = routes.merge(control::routes());
    }
    routes
        .fallback(unknown_api)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            request_id,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            date_header,
        ))
        .with_state(shared)
}

/// Answers with the simulated cloud's time in `Date` (the HTTP server would
/// otherwise add this machine's).
async fn date_header(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let date = shared.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

/// Gives every request an id, answered in `X-Request-Id` (gateway errors also
/// carry it in their body), and counts API requests in the rate window.
async fn request_id(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v2/") {
        shared.counters.api_request();
    }
    let id = format!("{:032x}", rand::random::<u128>());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn unknown_api(State(_): State<Arc<Shared>>, req: Request) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    api::gateway_error(
        StatusCode::NOT_FOUND,
        "APIG.0101",
        "The API does not exist or has not been published in the environment",
        &rid,
    )
}
