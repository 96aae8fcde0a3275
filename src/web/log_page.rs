//! The log page, the two downloads, and the archive-wide search page.
//! Reading itself is [`super::log`] and [`super::search`]; this file turns
//! URLs into those calls and their results into pages.

use super::WebState;
use super::log::{COUNT_BUDGET, Direction, Found, LogRef, Target};
use super::pages::{self, GroupView, HitView, LineView, LogPage, SearchPage};
use super::routes::{PageError, SelectionQuery, check_id, query_string, task_url, with_index};
use crate::model::Compression;
use crate::read::grep::GrepOptions;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use indicatif::HumanBytes;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// Lines shown above the line a `line=N` link asks for.
const CONTEXT_LINES: u64 = 10;

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    /// The page starting at this byte (a line start).
    from: Option<u64>,
    /// The page ending where this byte begins.
    before: Option<u64>,
    /// The page starting at this line.
    line: Option<u64>,
    /// `end`: the last page.
    at: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    i: Option<String>,
    #[serde(default)]
    re: Option<String>,
    /// `next` or `prev`: go to the next or previous line matching `q`.
    find: Option<String>,
}

impl LogQuery {
    fn icase(&self) -> bool {
        self.i.is_some()
    }
    fn regex(&self) -> bool {
        self.re.is_some()
    }

    /// The search part of links.
    fn search_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if !self.q.is_empty() {
            pairs.push(("q", self.q.clone()));
            if self.icase() {
                pairs.push(("i", "1".to_owned()));
            }
            if self.regex() {
                pairs.push(("re", "1".to_owned()));
            }
        }
        pairs
    }
}

/// The grep options of a search box: a literal unless "regex" is ticked.
fn grep_options(q: &str, icase: bool, regex: bool) -> GrepOptions {
    GrepOptions {
        pattern: q.to_owned(),
        ignore_case: icase,
        fixed_strings: !regex,
        ..GrepOptions::default()
    }
}

fn matcher_of(
    q: &str,
    icase: bool,
    regex: bool,
) -> Result<Option<grep_regex::RegexMatcher>, PageError> {
    if q.is_empty() {
        return Ok(None);
    }
    crate::read::grep::matcher(&grep_options(q, icase, regex))
        .map(Some)
        .map_err(|e| PageError::bad_request(e.to_string()))
}

/// The archived copy of one task and its job's name.
async fn find_log(state: &WebState, job: &str, task: &str) -> Result<(LogRef, String), PageError> {
    check_id("job", job)?;
    check_id("task", task)?;
    let (job, task) = (job.to_owned(), task.to_owned());
    with_index(state, move |index| {
        let selection = crate::read::Selection {
            task: Some(task.clone()),
            ..crate::read::Selection::of_jobs(vec![job.clone()])
        };
        let copy = crate::read::jobs::list_copies(index, &selection)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                PageError::new(
                    StatusCode::NOT_FOUND,
                    format!("job {job} task {task} has no archived log"),
                )
            })?;
        let log = LogRef::new(&copy.copy).map_err(PageError::unavailable)?;
        Ok((log, copy.job_name))
    })
    .await
}

pub async fn log(
    State(state): State<Arc<WebState>>,
    Path((job, task)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, PageError> {
    let (log, job_name) = find_log(&state, &job, &task).await?;
    let matcher = matcher_of(&q.q, q.icase(), q.regex())?;
    let storage = &state.storage;
    let log_url = task_url(&job, &task, "log");
    let unavailable = PageError::unavailable::<super::log::LogError>;
    for (name, value) in [("from", q.from), ("before", q.before)] {
        if value.is_some_and(|v| v > log.size) {
            return Err(PageError::bad_request(format!(
                "{name}={} is past the end of the log ({} bytes)",
                value.unwrap_or_default(),
                log.size
            )));
        }
    }
    let mut note = None;
    // A search redirects to the page of its hit, so the hit has a stable URL.
    if let (Some(direction), Some(matcher)) = (q.find.as_deref(), &matcher) {
        let direction = match direction {
            "next" => Direction::Next,
            "prev" => Direction::Previous,
            other => {
                return Err(PageError::bad_request(format!(
                    "find={other:?}: expected next or prev"
                )));
            }
        };
        let from = q.from.unwrap_or(0);
        let started = Instant::now();
        let found = super::log::find(
            storage,
            &log,
            matcher,
            from,
            direction,
            state.web.log_search_bytes,
        )
        .await
        .map_err(unavailable)?;
        crate::telemetry::record_web_search("log", started.elapsed().as_secs_f64());
        match found {
            Found::Hit(pos) => {
                let mut pairs = vec![("from", pos.to_string())];
                pairs.extend(q.search_pairs());
                return Ok(
                    Redirect::to(&format!("{log_url}{}", query_string(&pairs))).into_response()
                );
            }
            Found::Nothing { resume, exhausted } => {
                note = Some(match (exhausted, direction) {
                    (true, Direction::Next) => format!("no match for {:?} after this point", q.q),
                    (true, Direction::Previous) => {
                        format!("no match for {:?} before this point", q.q)
                    }
                    (false, _) => format!(
                        "no match for {:?} in {} searched; search again to go on from byte {resume}",
                        q.q,
                        HumanBytes(state.web.log_search_bytes)
                    ),
                });
                if !exhausted {
                    // Go on from where this search stopped.
                    let from = resume;
                    return render_log(
                        &state,
                        &log,
                        &job_name,
                        &q,
                        Some(matcher),
                        from,
                        note,
                        &log_url,
                    )
                    .await;
                }
            }
        }
    }
    let from = if let Some(line) = q.line {
        if line == 0 {
            return Err(PageError::bad_request("line=0: lines are numbered from 1"));
        }
        // A few lines of context above the line asked for.
        let first = line.saturating_sub(CONTEXT_LINES).max(1);
        match state
            .lines
            .locate(storage, &log, Target::Line(first), COUNT_BUDGET)
            .await
            .map_err(unavailable)?
        {
            Some(at) => at.pos,
            None => {
                return Err(PageError::unavailable(format!(
                    "line {line} lies beyond the first {} counted for this request; counting goes on in the background, reload in a moment",
                    HumanBytes(COUNT_BUDGET)
                )));
            }
        }
    } else if q.at.as_deref() == Some("end") {
        log.last_page(storage).await.map_err(unavailable)?
    } else if let Some(before) = q.before {
        log.previous_page(storage, before)
            .await
            .map_err(unavailable)?
    } else {
        log.line_start(storage, q.from.unwrap_or(0))
            .await
            .map_err(unavailable)?
    };
    render_log(
        &state,
        &log,
        &job_name,
        &q,
        matcher.as_ref(),
        from,
        note,
        &log_url,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn render_log(
    state: &WebState,
    log: &LogRef,
    job_name: &str,
    q: &LogQuery,
    matcher: Option<&grep_regex::RegexMatcher>,
    from: u64,
    mut note: Option<String>,
    log_url: &str,
) -> Result<Response, PageError> {
    let storage = &state.storage;
    let unavailable = PageError::unavailable::<super::log::LogError>;
    let page = log.page(storage, from).await.map_err(unavailable)?;
    let first = state
        .lines
        .locate(storage, log, Target::Offset(page.from), COUNT_BUDGET)
        .await
        .map_err(unavailable)?;
    if first.is_none() && note.is_none() {
        note = Some(format!(
            "line numbers are still being counted in this {} log; the page shows byte offsets meanwhile (reload to see line numbers)",
            HumanBytes(log.size)
        ));
    }
    let search = q.search_pairs();
    let link = |mut pairs: Vec<(&'static str, String)>| {
        pairs.extend(search.iter().cloned());
        format!("{log_url}{}", query_string(&pairs))
    };
    let mut offset = page.from;
    let lines = page
        .lines
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let (no, anchor) = match first {
                Some(at) => (
                    (at.line + i as u64).to_string(),
                    format!("L{}", at.line + i as u64),
                ),
                None => (format!("@{offset}"), format!("B{offset}")),
            };
            offset += text.len() as u64 + 1;
            LineView {
                no,
                anchor,
                segments: super::log::segments(matcher, text),
                target: q.line.is_some() && first.map(|at| at.line + i as u64) == q.line,
            }
        })
        .collect();
    let position = match first {
        Some(at) => format!(
            "lines {}–{} · bytes {}–{} of {}",
            at.line,
            at.line + page.lines.len().saturating_sub(1) as u64,
            page.from,
            page.to,
            log.size
        ),
        None => format!("bytes {}–{} of {}", page.from, page.to, log.size),
    };
    let view = LogPage {
        title: format!("{job_name} / {}", log.task),
        job_url: super::routes::job_url(&log.job),
        job_name: job_name.to_owned(),
        task: log.task.clone(),
        size: HumanBytes(log.size).to_string(),
        compression: match log.compression {
            Compression::None => "stored plain".to_owned(),
            Compression::Zstd => "stored as zstd".to_owned(),
        },
        sha256: log.sha256.clone(),
        log_url: log_url.to_owned(),
        download_url: task_url(&log.job, &log.task, "download"),
        stored_url: task_url(&log.job, &log.task, "stored"),
        first_url: link(vec![("from", "0".to_owned())]),
        prev_url: (page.from > 0).then(|| link(vec![("before", page.from.to_string())])),
        next_url: (page.to < log.size).then(|| link(vec![("from", page.to.to_string())])),
        last_url: link(vec![("at", "end".to_owned())]),
        from: page.from,
        q: q.q.clone(),
        icase: q.icase(),
        regex: q.regex(),
        note,
        position,
        lines,
    };
    Ok(pages::render(StatusCode::OK, &view))
}

/// `Content-Disposition` of a download: named as `malog export` names the
/// job's folder (`<job-name>--<job-id>`), then the task, so the name is safe
/// in a header and on any file system.
fn attachment(log: &LogRef, job_name: &str, suffix: &str) -> String {
    let folder = crate::read::export::job_folder(job_name, &log.job);
    let task = crate::storage::layout::sanitize(&log.task);
    format!("attachment; filename=\"{folder}--{task}{suffix}\"")
}

/// The original log, decompressed.
pub async fn download(
    State(state): State<Arc<WebState>>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (log, job_name) = find_log(&state, &job, &task).await?;
    let reader = log
        .open_at(&state.storage, 0)
        .await
        .map_err(PageError::unavailable)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 16));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (header::CONTENT_LENGTH, log.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&log, &job_name, ".log"),
            ),
        ],
        body,
    )
        .into_response())
}

/// The stored object as it is (zstd when compressed).
pub async fn stored(
    State(state): State<Arc<WebState>>,
    Path((job, task)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (log, job_name) = find_log(&state, &job, &task).await?;
    let reader = state
        .storage
        .open_copy(&log.key, log.stored_size)
        .await
        .map_err(PageError::unavailable)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 16));
    let (kind, suffix) = match log.compression {
        Compression::None => ("text/plain; charset=utf-8", ".log"),
        Compression::Zstd => ("application/zstd", ".log.zst"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&log, &job_name, suffix),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    i: Option<String>,
    re: Option<String>,
    #[serde(flatten)]
    selection: SelectionQuery,
}

pub async fn search(
    State(state): State<Arc<WebState>>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let (icase, regex) = (q.i.is_some(), q.re.is_some());
    let mut view = SearchPage {
        title: "Search".to_owned(),
        q: q.q.clone(),
        icase,
        regex,
        form: q.selection.form(),
        error: None,
        summary: None,
        stopped: None,
        errors: Vec::new(),
        groups: Vec::new(),
    };
    if q.q.is_empty() {
        return Ok(pages::render(StatusCode::OK, &view));
    }
    let bad = |view: &mut SearchPage, e: String| {
        view.error = Some(e);
        pages::render(StatusCode::BAD_REQUEST, view)
    };
    let matcher = match matcher_of(&q.q, icase, regex) {
        Ok(m) => m,
        Err(e) => return Ok(bad(&mut view, e.message)),
    };
    let selection = match q.selection.selection() {
        Ok(s) => s,
        Err(e) => return Ok(bad(&mut view, e)),
    };
    let Ok(_permit) = state.searches.try_acquire() else {
        return Err(PageError::unavailable(
            "other searches are running; try again in a moment",
        ));
    };
    let copies = with_index(&state, move |index| {
        Ok(crate::read::jobs::list_copies(index, &selection)?)
    })
    .await?;
    let started = Instant::now();
    let outcome = super::search::search(
        &state.storage,
        &state.web,
        copies,
        grep_options(&q.q, icase, regex),
    )
    .await
    .map_err(|e| PageError::bad_request(e.to_string()))?;
    let took = started.elapsed();
    crate::telemetry::record_web_search("archive", took.as_secs_f64());
    let mut search = vec![("q", q.q.clone())];
    if icase {
        search.push(("i", "1".to_owned()));
    }
    if regex {
        search.push(("re", "1".to_owned()));
    }
    view.summary = Some(format!(
        "{} matching lines in {} logs; searched {} of {} selected logs in {} ms",
        outcome.hits,
        outcome.groups.len(),
        outcome.logs_searched,
        outcome.logs_selected,
        took.as_millis()
    ));
    view.stopped = outcome.stopped;
    view.errors = outcome.errors;
    view.groups = outcome
        .groups
        .into_iter()
        .map(|g| {
            let log_url = task_url(&g.job_id, &g.task, "log");
            GroupView {
                job_name: g.job_name,
                job_url: super::routes::job_url(&g.job_id),
                task: g.task,
                hits: g
                    .hits
                    .into_iter()
                    .map(|h| {
                        let mut pairs = vec![("line", h.line.to_string())];
                        pairs.extend(search.iter().cloned());
                        HitView {
                            line: h.line,
                            url: format!("{log_url}{}#L{}", query_string(&pairs), h.line),
                            segments: super::log::segments(matcher.as_ref(), h.text.as_bytes()),
                        }
                    })
                    .collect(),
                log_url,
            }
        })
        .collect();
    Ok(pages::render(StatusCode::OK, &view))
}
