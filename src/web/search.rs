//! The archive-wide search page's work: `read::grep` (the same search as
//! `malog grep`, in its JSON form) over the selected logs, with bounds a page
//! needs and a terminal does not: at most `web.search_max_logs` logs, at most
//! `web.search_max_hits` matching lines (and [`HITS_PER_LOG`] per log), and at
//! most `web.search_timeout` of time. Whatever was found by then is shown,
//! with a note saying which bound stopped the search.

use crate::config::WebConfig;
use crate::read::grep::{GrepOptions, grep};
use crate::read::jobs::SelectedCopy;
use crate::storage::Storage;
use serde::Deserialize;
use std::io::Write;

/// Matching lines shown per log.
pub const HITS_PER_LOG: u64 = 50;

/// One matching line.
#[derive(Debug, Clone, Deserialize)]
pub struct Hit {
    pub job_id: String,
    pub job_name: String,
    pub task: String,
    pub line: u64,
    pub text: String,
}

/// Hits of one log, in line order.
#[derive(Debug, Clone)]
pub struct LogHits {
    pub job_id: String,
    pub job_name: String,
    pub task: String,
    pub hits: Vec<Hit>,
}

/// What the page shows.
#[derive(Debug, Clone, Default)]
pub struct SearchOutcome {
    pub groups: Vec<LogHits>,
    pub hits: usize,
    pub logs_searched: usize,
    pub logs_selected: usize,
    /// Which bound stopped the search early, if any.
    pub stopped: Option<String>,
    /// Logs that could not be searched (job, task, why).
    pub errors: Vec<String>,
}

/// Collects `grep`'s JSON lines; refuses more once the hit cap is reached,
/// which `grep` takes as a closed pipe and stops quietly.
struct Collector {
    buf: Vec<u8>,
    lines: usize,
    cap: usize,
}

impl Write for Collector {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.lines >= self.cap {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.lines += memchr::memchr_iter(b'\n', data).count();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Searches `copies` (already selected, newest job first) for `options`.
pub async fn search(
    storage: &Storage,
    web: &WebConfig,
    mut copies: Vec<SelectedCopy>,
    options: GrepOptions,
) -> Result<SearchOutcome, crate::read::grep::GrepError> {
    let options = GrepOptions {
        json: true,
        color: false,
        count: false,
        files_with_matches: false,
        max_count: Some(HITS_PER_LOG),
        ..options
    };
    crate::read::grep::matcher(&options)?;
    let mut outcome = SearchOutcome {
        logs_selected: copies.len(),
        ..SearchOutcome::default()
    };
    copies.truncate(web.search_max_logs);
    outcome.logs_searched = copies.len();
    let mut out = Collector {
        buf: Vec::new(),
        lines: 0,
        cap: web.search_max_hits,
    };
    // `grep` writes to a `dyn Write` that need not be `Send` (the command
    // line's stdout lock), so its future is not `Send`: it runs on a blocking
    // thread of its own, driven by the runtime's handle.
    let runtime = tokio::runtime::Handle::current();
    let (storage, timeout) = (storage.clone(), web.search_timeout);
    let (result, out) = tokio::task::spawn_blocking(move || {
        let result = runtime.block_on(tokio::time::timeout(
            timeout,
            grep(&storage, copies, &options, &mut out),
        ));
        (result, out)
    })
    .await
    .map_err(|e| crate::read::grep::GrepError::Output(std::io::Error::other(e)))?;
    match result {
        Ok(Ok(stats)) => outcome.errors = stats.errors,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            outcome.stopped = Some(format!(
                "stopped after {} (web.search_timeout)",
                humantime::format_duration(web.search_timeout)
            ))
        }
    }
    if outcome.stopped.is_none() && out.lines >= web.search_max_hits {
        outcome.stopped = Some(format!(
            "stopped at {} matching lines (web.search_max_hits)",
            web.search_max_hits
        ));
    }
    if outcome.stopped.is_none() && outcome.logs_searched < outcome.logs_selected {
        outcome.stopped = Some(format!(
            "searched the newest {} of {} logs (web.search_max_logs); narrow the selection",
            outcome.logs_searched, outcome.logs_selected
        ));
    }
    for line in out.buf.split(|&b| b == b'\n') {
        let Ok(hit) = serde_json::from_slice::<Hit>(line) else {
            continue;
        };
        outcome.hits += 1;
        match outcome.groups.last_mut() {
            Some(g) if g.job_id == hit.job_id && g.task == hit.task => g.hits.push(hit),
            _ => outcome.groups.push(LogHits {
                job_id: hit.job_id.clone(),
                job_name: hit.job_name.clone(),
                task: hit.task.clone(),
                hits: vec![hit],
            }),
        }
    }
    Ok(outcome)
}
