//! `malog grep`: searches the selected archived logs (local or S3, zstd or
//! plain) with the ripgrep project's searcher, several logs at a time.
//!
//! Each log is streamed from storage through its decoder into
//! `grep-searcher` on a blocking thread (a zstd log is decoded on a second
//! thread, ahead of the search: [`read_ahead`]); matching lines are formatted there
//! and sent to the printer in chunks over a small bounded channel. The printer
//! drains the logs in selection order (newest job first), so output is ordered
//! while up to [`SEARCH_PARALLELISM`] logs are searched at once, and memory
//! stays bounded whatever the log sizes: per search, the searcher's buffer
//! (capped at [`LINE_LIMIT`]), a few output chunks and, for zstd, the
//! decoder's window and the read-ahead buffers.

use super::jobs::SelectedCopy;
use super::read_ahead;
use crate::storage::{ArchiveKey, Compression, Storage, compress};
use grep_matcher::Matcher;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{Read, Write};
use tokio::sync::mpsc;

/// Logs searched at once.
pub const SEARCH_PARALLELISM: usize = 4;
/// Longest line searched; a longer one fails that log's search (memory bound).
pub const LINE_LIMIT: usize = 16 << 20;
/// Output is handed to the printer in chunks of about this size.
const CHUNK: usize = 64 << 10;
/// Chunks waiting per log before its search pauses.
const CHUNKS_WAITING: usize = 16;

/// What to look for and how to report it.
#[derive(Debug, Clone, Default)]
pub struct GrepOptions {
    pub pattern: String,
    pub ignore_case: bool,
    /// The pattern is a literal string, not a regular expression.
    pub fixed_strings: bool,
    /// Only whole-word matches.
    pub word: bool,
    pub before_context: usize,
    pub after_context: usize,
    /// Print a count of matching lines per log instead of the lines.
    pub count: bool,
    /// Print only the logs with a match.
    pub files_with_matches: bool,
    /// Stop a log's search after this many matching lines.
    pub max_count: Option<u64>,
    pub json: bool,
    /// Colour paths, line numbers and matches (terminals only).
    pub color: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GrepError {
    #[error("invalid pattern: {0}")]
    Pattern(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// What a search found overall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrepStats {
    pub logs: u64,
    pub matched_logs: u64,
    pub matched_lines: u64,
    /// One line per log that could not be searched (job, task, why).
    pub errors: Vec<String>,
}

/// Builds the matcher once; a bad pattern is an error before any log is read.
pub fn matcher(options: &GrepOptions) -> Result<RegexMatcher, GrepError> {
    RegexMatcherBuilder::new()
        .case_insensitive(options.ignore_case)
        .fixed_strings(options.fixed_strings)
        .word(options.word)
        .line_terminator(Some(b'\n'))
        .build(&options.pattern)
        .map_err(|e| GrepError::Pattern(e.to_string()))
}

/// Searches `copies` in order, writing what matched to `out`.
pub async fn grep(
    storage: &Storage,
    copies: Vec<SelectedCopy>,
    options: &GrepOptions,
    out: &mut dyn Write,
) -> Result<GrepStats, GrepError> {
    let matcher = matcher(options)?;
    let mut stats = GrepStats::default();
    let mut queue = VecDeque::new();
    let mut pending = copies.into_iter();
    loop {
        while queue.len() < SEARCH_PARALLELISM {
            let Some(copy) = pending.next() else { break };
            queue.push_back(start_search(storage, copy, options, &matcher));
        }
        let Some((mut chunks, search)) = queue.pop_front() else {
            break;
        };
        while let Some(chunk) = chunks.recv().await {
            if let Err(e) = out.write_all(&chunk) {
                // `malog grep … | head` closes the pipe: stop quietly.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(stats);
                }
                return Err(GrepError::Output(e));
            }
        }
        stats.logs += 1;
        match search.await {
            Ok(Ok(lines)) => {
                stats.matched_lines += lines;
                stats.matched_logs += u64::from(lines > 0);
            }
            Ok(Err(e)) => stats.errors.push(e),
            Err(e) => stats.errors.push(format!("search task failed: {e}")),
        }
    }
    out.flush().map_err(GrepError::Output)?;
    Ok(stats)
}

type Search = tokio::task::JoinHandle<Result<u64, String>>;

/// Opens one log and searches it on a blocking thread; returns its output
/// chunks and the count of matching lines (or why it failed).
fn start_search(
    storage: &Storage,
    selected: SelectedCopy,
    options: &GrepOptions,
    matcher: &RegexMatcher,
) -> (mpsc::Receiver<Vec<u8>>, Search) {
    let (tx, rx) = mpsc::channel(CHUNKS_WAITING);
    let storage = storage.clone();
    let options = options.clone();
    let matcher = matcher.clone();
    // One blocking task per log, from opening it to its last line: no hop
    // between threads per buffer (a search of many small logs is mostly
    // such per-log costs otherwise).
    let handle = tokio::task::spawn_blocking(move || {
        let copy = &selected.copy;
        let what = format!("job {} task {}", copy.job_id, copy.task_id);
        let key = ArchiveKey::from_stored(&copy.storage_key)
            .ok_or_else(|| format!("{what}: the index holds an invalid storage key"))?;
        let stored = storage
            .open_blocking(&key, copy.stored_size)
            .map_err(|e| format!("{what}: {e}"))?;
        let decoded = compress::decode_blocking(stored, copy.compression)
            .map_err(|e| format!("{what}: {e}"))?;
        let reader: Box<dyn Read + Send> = match copy.compression {
            Compression::None => decoded,
            // Decoding costs several times the search: it runs ahead on a
            // thread of its own, so one log keeps two cores busy.
            Compression::Zstd => Box::new(read_ahead::spawn(decoded)),
        };
        let mut sink = Printer::new(&selected, &options, &matcher, tx);
        searcher(&options)
            .search_reader(&matcher, reader, &mut sink)
            .map_err(|e| format!("{what}: {e}"))?;
        sink.finish().map_err(|e| format!("{what}: {e}"))
    });
    (rx, handle)
}

fn searcher(options: &GrepOptions) -> Searcher {
    let mut builder = SearcherBuilder::new();
    builder
        .line_number(true)
        // Archived logs are text; a stray NUL byte must not hide the rest.
        .binary_detection(BinaryDetection::none())
        .heap_limit(Some(LINE_LIMIT));
    if !options.count && !options.files_with_matches {
        builder
            .before_context(options.before_context)
            .after_context(options.after_context);
    }
    builder.build()
}

/// A line as JSON output shows it.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    job_id: &'a str,
    job_name: &'a str,
    task: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

const PATH_COLOR: &str = "\x1b[35m";
const LINE_COLOR: &str = "\x1b[32m";
const MATCH_COLOR: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// The sink: formats one log's lines into chunks for the printer.
struct Printer<'a> {
    selected: &'a SelectedCopy,
    options: &'a GrepOptions,
    matcher: &'a RegexMatcher,
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    matched: u64,
    /// After the `-m` limit: trailing context lines still to print (as grep does).
    trailing: Option<usize>,
}

impl<'a> Printer<'a> {
    fn new(
        selected: &'a SelectedCopy,
        options: &'a GrepOptions,
        matcher: &'a RegexMatcher,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Printer<'a> {
        Printer {
            selected,
            options,
            matcher,
            tx,
            buf: Vec::with_capacity(CHUNK),
            matched: 0,
            trailing: None,
        }
    }

    fn json(&mut self, kind: &str, line: Option<u64>, text: Option<&[u8]>, count: Option<u64>) {
        let record = JsonLine {
            kind,
            job_id: &self.selected.copy.job_id,
            job_name: &self.selected.job_name,
            task: &self.selected.copy.task_id,
            line,
            text: text.map(|t| String::from_utf8_lossy(strip_eol(t)).into_owned()),
            count,
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, &record);
        self.buf.push(b'\n');
    }

    /// `JOB_NAME/TASK` and, when given, `<sep>LINE<sep>`.
    fn prefix(&mut self, line: Option<u64>, sep: u8) {
        let color = self.options.color;
        if color {
            self.buf.extend_from_slice(PATH_COLOR.as_bytes());
        }
        self.buf
            .extend_from_slice(self.selected.job_name.as_bytes());
        self.buf.push(b'/');
        self.buf
            .extend_from_slice(self.selected.copy.task_id.as_bytes());
        if color {
            self.buf.extend_from_slice(RESET.as_bytes());
        }
        if let Some(line) = line {
            self.buf.push(sep);
            if color {
                self.buf.extend_from_slice(LINE_COLOR.as_bytes());
            }
            self.buf.extend_from_slice(line.to_string().as_bytes());
            if color {
                self.buf.extend_from_slice(RESET.as_bytes());
            }
            self.buf.push(sep);
        }
    }

    fn text_line(&mut self, line: Option<u64>, sep: u8, bytes: &[u8], highlight: bool) {
        self.prefix(line, sep);
        let text = strip_eol(bytes);
        if highlight && self.options.color {
            let mut last = 0;
            let mut spans = Vec::new();
            let _ = self.matcher.find_iter(text, |m| {
                spans.push((m.start(), m.end()));
                true
            });
            for (start, end) in spans {
                self.buf.extend_from_slice(&text[last..start]);
                self.buf.extend_from_slice(MATCH_COLOR.as_bytes());
                self.buf.extend_from_slice(&text[start..end]);
                self.buf.extend_from_slice(RESET.as_bytes());
                last = end;
            }
            self.buf.extend_from_slice(&text[last..]);
        } else {
            self.buf.extend_from_slice(text);
        }
        self.buf.push(b'\n');
    }

    /// Hands a full chunk to the printer; `false` when the printer is gone.
    fn flush(&mut self, force: bool) -> bool {
        if self.buf.is_empty() || (!force && self.buf.len() < CHUNK) {
            return true;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).is_ok()
    }

    /// Writes the per-log summary of `-c` / `-l` and the last chunk.
    fn finish(mut self) -> std::io::Result<u64> {
        let (options, matched) = (self.options, self.matched);
        if options.count {
            if options.json {
                self.json("count", None, None, Some(matched));
            } else {
                self.prefix(None, b':');
                self.buf
                    .extend_from_slice(format!(":{matched}\n").as_bytes());
            }
        } else if options.files_with_matches && matched > 0 {
            if options.json {
                self.json("log", None, None, None);
            } else {
                self.prefix(None, b':');
                self.buf.push(b'\n');
            }
        }
        self.flush(true);
        Ok(matched)
    }
}

impl Printer<'_> {
    /// Prints a context line; `false` once the trailing context after the
    /// `-m` limit is complete (or the printer is gone).
    fn context_line(&mut self, line: Option<u64>, bytes: &[u8]) -> bool {
        if let Some(left) = &mut self.trailing {
            if *left == 0 {
                return false;
            }
            *left -= 1;
        }
        if self.options.json {
            self.json("context", line, Some(bytes), None);
        } else {
            self.text_line(line, b'-', bytes, false);
        }
        self.flush(false) && self.trailing != Some(0)
    }
}

fn strip_eol(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

impl Sink for Printer<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, std::io::Error> {
        if self.trailing.is_some() {
            // Past the `-m` limit, matching lines are trailing context, as in
            // GNU grep.
            return Ok(self.context_line(mat.line_number(), mat.bytes()));
        }
        self.matched += 1;
        let options = self.options;
        if options.files_with_matches {
            return Ok(false);
        }
        if !options.count {
            if options.json {
                self.json("match", mat.line_number(), Some(mat.bytes()), None);
            } else {
                self.text_line(mat.line_number(), b':', mat.bytes(), true);
            }
        }
        if options.max_count.is_some_and(|m| self.matched >= m) {
            self.trailing = Some(options.after_context);
        }
        let more = self.trailing != Some(0);
        Ok(self.flush(false) && more)
    }

    fn context(&mut self, _: &Searcher, ctx: &SinkContext<'_>) -> Result<bool, std::io::Error> {
        Ok(self.context_line(ctx.line_number(), ctx.bytes()))
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, std::io::Error> {
        if !self.options.json {
            self.buf.extend_from_slice(b"--\n");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::StoredCopy;
    use crate::storage::{LocalStore, SyncMode};

    /// A zstd log of several frames (as a grown copy is stored), larger than
    /// the read-ahead buffers in circulation, under `dir`; and its text.
    async fn multi_frame_log(dir: &std::path::Path) -> (Storage, SelectedCopy, Vec<u8>) {
        let mut text = Vec::new();
        let mut stored = Vec::new();
        for frame in 0..3 {
            let mut part = Vec::new();
            for i in 0..20_000 {
                let step = frame * 20_000 + i;
                part.extend_from_slice(format!("step={step:08} loss={}\n", step % 97).as_bytes());
            }
            stored.extend(zstd::encode_all(&part[..], 3).unwrap());
            text.extend(part);
        }
        assert!(text.len() > read_ahead::BUFFER * read_ahead::BUFFERS);
        std::fs::create_dir_all(dir.join("j")).unwrap();
        std::fs::write(dir.join("j/t.log.zst"), &stored).unwrap();
        let store = LocalStore::open_root(dir.to_owned(), SyncMode::default())
            .await
            .unwrap();
        let selected = SelectedCopy {
            job_name: "job".into(),
            copy: StoredCopy {
                job_id: "j".into(),
                task_id: "t".into(),
                storage_key: "j/t.log.zst".into(),
                location: None,
                size: text.len() as u64,
                sha256: String::new(),
                stored_size: Some(stored.len() as u64),
                stored_sha256: None,
                compression: Compression::Zstd,
            },
        };
        (Storage::local(store), selected, text)
    }

    async fn run(
        storage: &Storage,
        copy: &SelectedCopy,
        options: GrepOptions,
    ) -> (GrepStats, String) {
        let mut out = Vec::new();
        let stats = grep(storage, vec![copy.clone()], &options, &mut out)
            .await
            .unwrap();
        (stats, String::from_utf8(out).unwrap())
    }

    /// GUARD: a zstd log of several frames, longer than the read-ahead, is
    /// searched whole and in order: every matching line of every frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_every_frame_of_a_large_zstd_log() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, copy, text) = multi_frame_log(dir.path()).await;
        let options = GrepOptions {
            pattern: "loss=(0|96)$".into(),
            ..GrepOptions::default()
        };
        let (stats, out) = run(&storage, &copy, options).await;
        let want: String = String::from_utf8(text)
            .unwrap()
            .lines()
            .enumerate()
            .filter(|(_, l)| l.ends_with("loss=0") || l.ends_with("loss=96"))
            .map(|(n, l)| format!("job/t:{}:{l}\n", n + 1))
            .collect();
        assert!(want.lines().count() > 1000);
        assert!(out == want, "every match, in order");
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(stats.matched_lines, want.lines().count() as u64);

        // A search that stops early (`-m 1`) ends its decoder too.
        let options = GrepOptions {
            pattern: "loss=5$".into(),
            max_count: Some(1),
            ..GrepOptions::default()
        };
        let (stats, out) = run(&storage, &copy, options).await;
        assert_eq!(out, "job/t:6:step=00000005 loss=5\n");
        assert_eq!(stats.matched_lines, 1);
    }

    /// A zstd log cut short is that log's error (the decoder's error reaches
    /// the search through the read-ahead).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_zstd_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, copy, _) = multi_frame_log(dir.path()).await;
        let path = dir.path().join("j/t.log.zst");
        let stored = std::fs::read(&path).unwrap();
        std::fs::write(&path, &stored[..stored.len() - 100]).unwrap();
        let options = GrepOptions {
            pattern: "step=00000000 ".into(),
            ..GrepOptions::default()
        };
        let (stats, _) = run(&storage, &copy, options).await;
        assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
        assert!(
            stats.errors[0].starts_with("job j task t: "),
            "{:?}",
            stats.errors
        );
    }
}
