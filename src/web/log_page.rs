//! The log page, the two downloads, and the archive-wide search page.
//! Reading itself is [`super::log`] and [`super::search`]; this file turns
//! URLs into those calls and their results into pages.

use super::WebState;
use super::log::{COUNT_BUDGET, Direction, Found, Located, LogRef, Page, Target};
use super::pages::{self, GroupView, HitView, LineView, LogPage, SearchPage};
use super::routes::{PageError, SelectionQuery, check_id, query_string, task_url, with_index};
use super::search::LogHits;
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
        search_pairs(&self.q, self.icase(), self.regex())
    }
}

/// The query pairs that keep a search in a link (none without one).
fn search_pairs(q: &str, icase: bool, regex: bool) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    if !q.is_empty() {
        pairs.push(("q", q.to_owned()));
        if icase {
            pairs.push(("i", "1".to_owned()));
        }
        if regex {
            pairs.push(("re", "1".to_owned()));
        }
    }
    pairs
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

/// The log page: one page of an archived log, starting where the URL says
/// (`from`, `before`, `line`, `at=end`). With `find`, the next or previous
/// line matching `q` instead.
pub async fn log(
    State(state): State<Arc<WebState>>,
    Path((job, task)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, PageError> {
    let (log, job_name) = find_log(&state, &job, &task).await?;
    let matcher = matcher_of(&q.q, q.icase(), q.regex())?;
    check_offsets(&q, &log)?;
    let view = LogView {
        state: &state,
        log: &log,
        job_name: &job_name,
        q: &q,
        log_url: task_url(&job, &task, "log"),
    };
    let mut note = None;
    if let (Some(find), Some(matcher)) = (q.find.as_deref(), &matcher) {
        match view.find(direction(find)?, matcher).await? {
            Finding::Hit(redirect) => return Ok(redirect),
            // Go on from where this search stopped.
            Finding::Stopped { resume, note } => {
                return view.render(Some(matcher), resume, Some(note)).await;
            }
            Finding::Exhausted(why) => note = Some(why),
        }
    }
    let from = view.start().await?;
    view.render(matcher.as_ref(), from, note).await
}

/// `from` and `before` must lie inside the log.
fn check_offsets(q: &LogQuery, log: &LogRef) -> Result<(), PageError> {
    for (name, value) in [("from", q.from), ("before", q.before)] {
        if value.is_some_and(|v| v > log.size) {
            return Err(PageError::bad_request(format!(
                "{name}={} is past the end of the log ({} bytes)",
                value.unwrap_or_default(),
                log.size
            )));
        }
    }
    Ok(())
}

/// The direction of `find=next|prev`.
fn direction(find: &str) -> Result<Direction, PageError> {
    match find {
        "next" => Ok(Direction::Next),
        "prev" => Ok(Direction::Previous),
        other => Err(PageError::bad_request(format!(
            "find={other:?}: expected next or prev"
        ))),
    }
}

/// What a search inside the log led to.
enum Finding {
    /// A redirect to the page of the hit, so the hit has a stable URL.
    Hit(Response),
    /// No match in the bytes one search may read: the page where it stopped.
    Stopped { resume: u64, note: String },
    /// No match up to the log's end (or start): the page asked for.
    Exhausted(String),
}

/// One request for the log page: the log, and what the URL asks of it.
struct LogView<'a> {
    state: &'a WebState,
    log: &'a LogRef,
    job_name: &'a str,
    q: &'a LogQuery,
    log_url: String,
}

impl LogView<'_> {
    /// Searches from `from` (or the start) for the next or previous line
    /// matching the search box, reading at most `log_search_bytes`.
    async fn find(
        &self,
        direction: Direction,
        matcher: &grep_regex::RegexMatcher,
    ) -> Result<Finding, PageError> {
        let (q, budget) = (self.q, self.state.web.log_search_bytes);
        let started = Instant::now();
        let found = super::log::find(
            &self.state.storage,
            self.log,
            matcher,
            q.from.unwrap_or(0),
            direction,
            budget,
        )
        .await
        .map_err(PageError::unavailable)?;
        crate::telemetry::record_web_search("log", started.elapsed().as_secs_f64());
        Ok(match found {
            Found::Hit(pos) => {
                let mut pairs = vec![("from", pos.to_string())];
                pairs.extend(q.search_pairs());
                let url = format!("{}{}", self.log_url, query_string(&pairs));
                Finding::Hit(Redirect::to(&url).into_response())
            }
            Found::Nothing {
                exhausted: true, ..
            } => Finding::Exhausted(match direction {
                Direction::Next => format!("no match for {:?} after this point", q.q),
                Direction::Previous => format!("no match for {:?} before this point", q.q),
            }),
            Found::Nothing { resume, .. } => Finding::Stopped {
                resume,
                note: format!(
                    "no match for {:?} in {} searched; search again to go on from byte {resume}",
                    q.q,
                    HumanBytes(budget)
                ),
            },
        })
    }

    /// The byte the page starts at: a line (with context above it), the last
    /// page, the page before a byte, or the line holding `from`.
    async fn start(&self) -> Result<u64, PageError> {
        let (storage, log, q) = (&self.state.storage, self.log, self.q);
        if let Some(line) = q.line {
            self.line_start(line).await
        } else if q.at.as_deref() == Some("end") {
            log.last_page(storage).await.map_err(PageError::unavailable)
        } else if let Some(before) = q.before {
            log.previous_page(storage, before)
                .await
                .map_err(PageError::unavailable)
        } else {
            log.line_start(storage, q.from.unwrap_or(0))
                .await
                .map_err(PageError::unavailable)
        }
    }

    /// Where the page for `line=N` starts: a few lines of context above it.
    async fn line_start(&self, line: u64) -> Result<u64, PageError> {
        if line == 0 {
            return Err(PageError::bad_request("line=0: lines are numbered from 1"));
        }
        let first = line.saturating_sub(CONTEXT_LINES).max(1);
        let state = self.state;
        match state
            .lines
            .locate(&state.storage, self.log, Target::Line(first), COUNT_BUDGET)
            .await
            .map_err(PageError::unavailable)?
        {
            Some(at) => Ok(at.pos),
            None => Err(PageError::unavailable(format!(
                "line {line} lies beyond the first {} counted for this request; counting goes on in the background, reload in a moment",
                HumanBytes(COUNT_BUDGET)
            ))),
        }
    }

    /// The page starting at byte `from`, its lines numbered when the count
    /// has reached them (byte offsets meanwhile).
    async fn render(
        &self,
        matcher: Option<&grep_regex::RegexMatcher>,
        from: u64,
        mut note: Option<String>,
    ) -> Result<Response, PageError> {
        let (storage, log, q) = (&self.state.storage, self.log, self.q);
        let page = log
            .page(storage, from)
            .await
            .map_err(PageError::unavailable)?;
        let first = self
            .state
            .lines
            .locate(storage, log, Target::Offset(page.from), COUNT_BUDGET)
            .await
            .map_err(PageError::unavailable)?;
        if first.is_none() && note.is_none() {
            note = Some(format!(
                "line numbers are still being counted in this {} log; the page shows byte offsets meanwhile (reload to see line numbers)",
                HumanBytes(log.size)
            ));
        }
        let search = q.search_pairs();
        let link = |mut pairs: Vec<(&'static str, String)>| {
            pairs.extend(search.iter().cloned());
            format!("{}{}", self.log_url, query_string(&pairs))
        };
        let view = LogPage {
            title: format!("{} / {}", self.job_name, log.task),
            job_url: super::routes::job_url(&log.job),
            job_name: self.job_name.to_owned(),
            task: log.task.clone(),
            size: HumanBytes(log.size).to_string(),
            compression: match log.compression {
                Compression::None => "stored plain".to_owned(),
                Compression::Zstd => "stored as zstd".to_owned(),
            },
            sha256: log.sha256.clone(),
            log_url: self.log_url.clone(),
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
            position: position(&page, first, log.size),
            lines: self.lines(&page, first, matcher),
        };
        Ok(pages::render(StatusCode::OK, &view))
    }

    /// The page's lines, numbered from `first` (else by byte offset), with
    /// the search's matches marked and the line `line=N` asked for flagged.
    fn lines(
        &self,
        page: &Page,
        first: Option<Located>,
        matcher: Option<&grep_regex::RegexMatcher>,
    ) -> Vec<LineView> {
        let mut offset = page.from;
        page.lines
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
                    target: self.q.line.is_some()
                        && first.map(|at| at.line + i as u64) == self.q.line,
                }
            })
            .collect()
    }
}

/// Where the page lies in the log: lines (once counted) and bytes.
fn position(page: &Page, first: Option<Located>, size: u64) -> String {
    match first {
        Some(at) => format!(
            "lines {}–{} · bytes {}–{} of {}",
            at.line,
            at.line + page.lines.len().saturating_sub(1) as u64,
            page.from,
            page.to,
            size
        ),
        None => format!("bytes {}–{} of {}", page.from, page.to, size),
    }
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

/// The archive-wide search page: the lines matching `q` in the selected logs,
/// grouped by log, each linking to its line on the log page.
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
    let search = search_pairs(&q.q, icase, regex);
    view.groups = outcome
        .groups
        .into_iter()
        .map(|g| group_view(g, &search, matcher.as_ref()))
        .collect();
    Ok(pages::render(StatusCode::OK, &view))
}

/// One log's hits, each linking to its line on the log page with the search
/// kept (`search`), so the page marks it.
fn group_view(
    g: LogHits,
    search: &[(&'static str, String)],
    matcher: Option<&grep_regex::RegexMatcher>,
) -> GroupView {
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
                    segments: super::log::segments(matcher, h.text.as_bytes()),
                }
            })
            .collect(),
        log_url,
    }
}
