//! The URLs, each stable enough to paste into a ticket:
//!
//! | URL | page |
//! |---|---|
//! | `/jobs?name=&phase=&since=&until=&task=&state=&page=` | the job list, newest first |
//! | `/jobs/{job}` | one job: record, tasks, events |
//! | `/jobs/{job}/tasks/{task}/log?from=BYTE` · `?line=N` · `?at=end` · `&q=…&find=next` | a page of a log |
//! | `/jobs/{job}/tasks/{task}/download` · `/stored` | the log decompressed, or the stored object |
//! | `/search?q=…&name=…` | grep across the selection |
//!
//! Every answer passes [`guard`]: access control, the security headers, and
//! the page-view count.

use super::WebState;
use super::pages::{self, ErrorPage, FormView, JobLine, JobPage, JobsPage, TaskLine, TaskLinks};
use crate::index::{Index, IndexError};
use crate::read::{Selection, SelectionFlags};
use axum::Router;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use indicatif::HumanBytes;
use serde::Deserialize;
use std::sync::Arc;

/// Jobs per page of the job list.
pub const JOBS_PER_PAGE: usize = 50;

/// No scripts, frames, plugins or foreign origins; styles and images only from here.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = include_str!("style.css");

pub fn router(state: Arc<WebState>) -> Router {
    let mut app = Router::new()
        .route("/", get(|| async { Redirect::to("/jobs") }))
        .route("/style.css", get(style))
        .route("/jobs", get(jobs))
        .route("/jobs/{job}", get(job))
        .route("/jobs/{job}/tasks/{task}/log", get(super::log_page::log))
        .route(
            "/jobs/{job}/tasks/{task}/download",
            get(super::log_page::download),
        )
        .route(
            "/jobs/{job}/tasks/{task}/stored",
            get(super::log_page::stored),
        )
        .route("/search", get(super::log_page::search));
    if state.metrics.is_some() {
        app = app.route("/metrics", get(metrics));
    }
    app.fallback(|| async { PageError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Access control first; then the headers every answer carries, and the count.
async fn guard(State(state): State<Arc<WebState>>, request: Request, next: Next) -> Response {
    let page = page_name(request.extensions().get::<MatchedPath>());
    let mut response = if state.access.allows(request.headers()) {
        next.run(request).await
    } else {
        let mut refused =
            PageError::new(StatusCode::UNAUTHORIZED, "this archive needs credentials")
                .into_response();
        if let Ok(value) = HeaderValue::from_str(state.access.challenge()) {
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        refused
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    crate::telemetry::record_page_view(page, response.status().as_u16());
    response
}

fn page_name(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str) {
        Some("/jobs") => "jobs",
        Some("/jobs/{job}") => "job",
        Some("/jobs/{job}/tasks/{task}/log") => "log",
        Some("/jobs/{job}/tasks/{task}/download" | "/jobs/{job}/tasks/{task}/stored") => "download",
        Some("/search") => "search",
        _ => "other",
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// An answer other than the page: a status and a message saying what is wrong.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unavailable<M: std::fmt::Display>(message: M) -> PageError {
        PageError::new(StatusCode::SERVICE_UNAVAILABLE, message.to_string())
    }
}

impl From<IndexError> for PageError {
    fn from(e: IndexError) -> PageError {
        PageError::unavailable(format!("the index cannot be read: {e}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            title: self.status.to_string(),
            status: self.status.to_string(),
            message: self.message,
        };
        pages::render(self.status, &page)
    }
}

/// Job and task ids in URLs: ModelArts ids and task names are short runs of
/// letters, digits, `-`, `_` and `.`; anything else is refused before use.
pub fn check_id(what: &str, id: &str) -> Result<(), PageError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(PageError::bad_request(format!(
            "invalid {what} id in the URL: expected 1-128 characters of A-Z, a-z, 0-9, '-', '_' and '.'"
        )))
    }
}

/// Runs `f` on a fresh read-only index connection on a blocking thread.
pub async fn with_index<T: Send + 'static>(
    state: &WebState,
    f: impl FnOnce(&Index) -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    let path = state.index_path.clone();
    tokio::task::spawn_blocking(move || f(&Index::open_read_only(&path)?))
        .await
        .map_err(|e| PageError::unavailable(format!("the index query failed: {e}")))?
}

/// The selection fields of the job list and the search form.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SelectionQuery {
    /// A configured source's name (`--source`).
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub state: String,
}

const PHASES: [&str; 8] = [
    "Creating",
    "Pending",
    "Running",
    "Terminating",
    "Completed",
    "Failed",
    "Terminated",
    "Abnormal",
];

fn given(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl SelectionQuery {
    /// The shared [`Selection`], checked as the command line checks its flags.
    pub fn selection(&self) -> Result<Selection, String> {
        let flags = SelectionFlags {
            sources: given(&self.source).into_iter().collect(),
            name: given(&self.name),
            phases: given(&self.phase).into_iter().collect(),
            since: given(&self.since),
            until: given(&self.until),
            task: given(&self.task),
            state: given(&self.state),
            ..SelectionFlags::default()
        };
        Selection::parse(flags, chrono::Utc::now().timestamp_millis())
            .map_err(|e| e.to_string().replace("--", ""))
    }

    pub fn form(&self) -> FormView {
        FormView {
            source: self.source.clone(),
            name: self.name.clone(),
            phases: PHASES
                .iter()
                .map(|p| (p.to_string(), self.phase == *p))
                .collect(),
            since: self.since.clone(),
            until: self.until.clone(),
            task: self.task.clone(),
            states: crate::telemetry::TASK_STATES
                .iter()
                .map(|s| (s.to_string(), self.state == *s))
                .collect(),
        }
    }

    /// The fields as a query string (for page links).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("source", &self.source),
            ("name", &self.name),
            ("phase", &self.phase),
            ("since", &self.since),
            ("until", &self.until),
            ("task", &self.task),
            ("state", &self.state),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }
}

/// `?k=v&…`, encoded.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let s = s.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

/// A path segment, encoded (ids are checked already; names are not in paths).
pub fn job_url(job: &str) -> String {
    format!("/jobs/{job}")
}

pub fn task_url(job: &str, task: &str, leaf: &str) -> String {
    format!("/jobs/{job}/tasks/{task}/{leaf}")
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    #[serde(flatten)]
    selection: SelectionQuery,
    page: Option<usize>,
}

fn phase_class(phase: &str) -> &'static str {
    match phase {
        "Completed" => "ok",
        "Failed" | "Abnormal" | "Terminated" => "bad",
        _ => "live",
    }
}

fn job_line(r: &crate::read::jobs::JobRow) -> JobLine {
    JobLine {
        url: job_url(&r.job_id),
        name: r.name.clone(),
        job_id: r.job_id.clone(),
        phase: r.phase.clone(),
        phase_class: phase_class(&r.phase),
        created: r.created.replace('T', " ").trim_end_matches('Z').to_owned(),
        duration: r.duration_text(),
        flavor: r.flavor_nodes(),
        tasks: format!("{}/{}", r.tasks_archived, r.tasks_total),
        size: HumanBytes(r.bytes).to_string(),
    }
}

async fn jobs(
    State(state): State<Arc<WebState>>,
    Query(q): Query<JobsQuery>,
) -> Result<Response, PageError> {
    let page = q.page.unwrap_or(1).max(1);
    let mut view = JobsPage {
        title: "Jobs".to_owned(),
        form: q.selection.form(),
        rows: Vec::new(),
        error: None,
        page,
        prev_url: None,
        next_url: None,
    };
    let mut selection = match q.selection.selection() {
        Ok(s) => s,
        Err(e) => {
            view.error = Some(e);
            return Ok(pages::render(StatusCode::BAD_REQUEST, &view));
        }
    };
    // One more than a page says whether an older page exists.
    selection.limit = Some(JOBS_PER_PAGE + 1);
    selection.offset = Some((page - 1).saturating_mul(JOBS_PER_PAGE));
    let mut rows = with_index(&state, move |index| {
        Ok(crate::read::jobs::list_jobs(index, &selection, false)?)
    })
    .await?;
    let more = rows.len() > JOBS_PER_PAGE;
    rows.truncate(JOBS_PER_PAGE);
    let link = |p: usize| {
        let mut pairs = q.selection.pairs();
        pairs.push(("page", p.to_string()));
        format!("/jobs{}", query_string(&pairs))
    };
    view.prev_url = (page > 1).then(|| link(page - 1));
    view.next_url = more.then(|| link(page + 1));
    view.rows = rows.iter().map(job_line).collect();
    Ok(pages::render(StatusCode::OK, &view))
}

async fn job(
    State(state): State<Arc<WebState>>,
    Path(job): Path<String>,
) -> Result<Response, PageError> {
    check_id("job", &job)?;
    let id = job.clone();
    let detail = with_index(&state, move |index| {
        let selection = Selection::of_jobs(vec![id.clone()]);
        // The URL names a job id, never a name: no lookup by name here.
        if crate::read::jobs::list_jobs(index, &selection, false)?.is_empty() {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                format!("no job {id} in the index"),
            ));
        }
        crate::read::show::show_job(index, &id).map_err(|e| match e {
            crate::read::show::ShowError::Index(e) => e.into(),
            other => PageError::new(StatusCode::NOT_FOUND, other.to_string()),
        })
    })
    .await?;
    Ok(pages::render(StatusCode::OK, &job_page(detail)))
}

fn job_page(detail: crate::read::show::JobDetail) -> JobPage {
    let j = &detail.job;
    let facts = crate::read::show::facts(j)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let events = detail
        .events
        .as_ref()
        .and_then(|e| e.as_array())
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let f = |k: &str| {
                        e.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    (f("time"), f("level"), f("source"), f("message"))
                })
                .collect()
        })
        .unwrap_or_default();
    let tasks = detail
        .tasks
        .iter()
        .map(|t| TaskLine {
            task: t.task_id.clone(),
            state: t.state.as_str().to_owned(),
            size: t
                .size
                .map(|s| HumanBytes(s).to_string())
                .unwrap_or_default(),
            sha256: t.sha256.clone().unwrap_or_default(),
            fetched_at: t
                .fetched_at
                .clone()
                .unwrap_or_default()
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_owned(),
            last_error: t.last_error.clone().unwrap_or_default(),
            links: t
                .storage_key
                .as_ref()
                .filter(|_| check_id("task", &t.task_id).is_ok())
                .map(|_| TaskLinks {
                    view: task_url(&t.job_id, &t.task_id, "log"),
                    download: task_url(&t.job_id, &t.task_id, "download"),
                    stored: task_url(&t.job_id, &t.task_id, "stored"),
                }),
        })
        .collect();
    JobPage {
        title: j.name.clone(),
        name: j.name.clone(),
        job_id: j.job_id.clone(),
        facts,
        tasks,
        events,
        record_error: detail.record_error.clone(),
    }
}
