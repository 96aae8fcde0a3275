//! The pages' HTML: one askama template per page (`templates/web/`), each fed
//! plain strings that the handlers prepared. askama escapes every value, and
//! no template marks a value safe, so a job name or log line such as
//! `<script>alert(1)</script>` shows as text.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// A selection form's fields, as typed (shown back in the form).
#[derive(Debug, Clone, Default)]
pub struct FormView {
    pub source: String,
    pub name: String,
    /// Every phase, and whether it is selected.
    pub phases: Vec<(String, bool)>,
    pub since: String,
    pub until: String,
    pub task: String,
    pub states: Vec<(String, bool)>,
}

pub struct JobLine {
    pub url: String,
    pub name: String,
    pub job_id: String,
    pub phase: String,
    pub phase_class: &'static str,
    pub created: String,
    pub duration: String,
    pub flavor: String,
    pub tasks: String,
    pub size: String,
}

#[derive(Template)]
#[template(path = "web/jobs.html")]
pub struct JobsPage {
    pub title: String,
    pub form: FormView,
    pub rows: Vec<JobLine>,
    pub error: Option<String>,
    pub page: usize,
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
}

pub struct TaskLinks {
    pub view: String,
    pub download: String,
    pub stored: String,
}

pub struct TaskLine {
    pub task: String,
    pub state: String,
    pub size: String,
    pub sha256: String,
    pub fetched_at: String,
    pub last_error: String,
    pub links: Option<TaskLinks>,
}

#[derive(Template)]
#[template(path = "web/job.html")]
pub struct JobPage {
    pub title: String,
    pub name: String,
    pub job_id: String,
    pub facts: Vec<(String, String)>,
    pub tasks: Vec<TaskLine>,
    /// time, level, source, message
    pub events: Vec<(String, String, String, String)>,
    pub record_error: Option<String>,
}

pub struct LineView {
    pub no: String,
    pub anchor: String,
    pub segments: Vec<(String, bool)>,
    /// The line a `line=N` link asked for.
    pub target: bool,
}

#[derive(Template)]
#[template(path = "web/log.html")]
pub struct LogPage {
    pub title: String,
    pub job_url: String,
    pub job_name: String,
    pub task: String,
    pub size: String,
    pub compression: String,
    pub sha256: String,
    pub log_url: String,
    pub download_url: String,
    pub stored_url: String,
    pub first_url: String,
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
    pub last_url: String,
    pub from: u64,
    pub q: String,
    pub icase: bool,
    pub regex: bool,
    pub note: Option<String>,
    pub position: String,
    pub lines: Vec<LineView>,
}

pub struct HitView {
    pub line: u64,
    pub url: String,
    pub segments: Vec<(String, bool)>,
}

pub struct GroupView {
    pub job_name: String,
    pub job_url: String,
    pub task: String,
    pub log_url: String,
    pub hits: Vec<HitView>,
}

#[derive(Template)]
#[template(path = "web/search.html")]
pub struct SearchPage {
    pub title: String,
    pub q: String,
    pub icase: bool,
    pub regex: bool,
    pub form: FormView,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub stopped: Option<String>,
    pub errors: Vec<String>,
    pub groups: Vec<GroupView>,
}

#[derive(Template)]
#[template(path = "web/error.html")]
pub struct ErrorPage {
    pub title: String,
    pub status: String,
    pub message: String,
}

/// A page as an HTTP answer.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the page did not render",
            )
                .into_response()
        }
    }
}
