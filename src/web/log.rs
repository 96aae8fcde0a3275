//! One archived log read in pages, without sending (or, for plain logs,
//! reading) the whole of it.
//!
//! A page is addressed by the byte offset of its first line (`from`); "line N"
//! and line numbers come from the [`LineIndex`], which remembers how many
//! lines precede every [`STEP`]-th byte of each log it has walked. So:
//! - a plain log (local or S3) is entered at any byte: a seek, or a ranged
//!   GET; the start, the end and any later page cost one page of reading,
//!   plus, the first time a region is numbered, counting its newlines
//!   (memchr, at memory speed) from the nearest checkpoint;
//! - a zstd log cannot be entered in the middle: reaching byte `n` decodes
//!   the `n` bytes before it (zstd decodes at roughly 1 GB/s per core). The
//!   checkpoints spare the counting, not the decoding. This cost is stated in
//!   docs/OPERATIONS.md.
//!
//! Counting in one request stops after [`COUNT_BUDGET`] bytes; the rest is
//! counted in the background and the page shows byte offsets meanwhile, so a
//! huge log's end opens as fast as a small log's.

use crate::model::Compression;
use crate::storage::{ArchiveKey, Storage, StoreError};
use grep_regex::RegexMatcher;
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes of a page.
pub const PAGE_BYTES: usize = 256 << 10;
/// Most lines of a page.
pub const PAGE_LINES: usize = 1000;
/// Distance between line-count checkpoints.
pub const STEP: u64 = 8 << 20;
/// Bytes counted for line numbers in one request before the rest goes to the background.
pub const COUNT_BUDGET: u64 = 1 << 30;
/// Logs whose checkpoints are kept; beyond, the oldest set is forgotten.
const LOGS_REMEMBERED: usize = 256;
const BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("job {job} task {task}: {source}")]
    Store {
        job: String,
        task: String,
        source: StoreError,
    },
    #[error("job {job} task {task}: reading the log failed: {source}")]
    Read {
        job: String,
        task: String,
        source: std::io::Error,
    },
    #[error("the index holds an invalid storage key for job {job} task {task}")]
    Key { job: String, task: String },
}

/// One archived log, as the index describes it.
#[derive(Debug, Clone)]
pub struct LogRef {
    pub job: String,
    pub task: String,
    pub key: ArchiveKey,
    pub compression: Compression,
    /// Size of the original (decoded) log.
    pub size: u64,
    pub sha256: String,
    /// Size of the stored object as the index committed it: reads stop there.
    pub stored_size: Option<u64>,
}

impl LogRef {
    pub fn new(copy: &crate::index::StoredCopy) -> Result<LogRef, LogError> {
        let key = ArchiveKey::from_stored(&copy.storage_key).ok_or_else(|| LogError::Key {
            job: copy.job_id.clone(),
            task: copy.task_id.clone(),
        })?;
        Ok(LogRef {
            job: copy.job_id.clone(),
            task: copy.task_id.clone(),
            key,
            compression: copy.compression,
            size: copy.size,
            sha256: copy.sha256.clone(),
            stored_size: copy.stored_size,
        })
    }

    fn store_err(&self, source: StoreError) -> LogError {
        LogError::Store {
            job: self.job.clone(),
            task: self.task.clone(),
            source,
        }
    }

    fn read_err(&self, source: std::io::Error) -> LogError {
        LogError::Read {
            job: self.job.clone(),
            task: self.task.clone(),
            source,
        }
    }

    /// The decoded log from byte `pos` on (see the module docs for the cost).
    pub async fn open_at(
        &self,
        storage: &Storage,
        pos: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, LogError> {
        if pos > 0 && pos < self.size && self.compression == Compression::None {
            return storage
                .open_from(&self.key, pos, self.stored_size)
                .await
                .map_err(|e| self.store_err(e));
        }
        let mut reader = storage
            .open_log(&self.key, self.compression, self.stored_size)
            .await
            .map_err(|e| self.store_err(e))?;
        if pos > 0 {
            tokio::io::copy(&mut (&mut reader).take(pos), &mut tokio::io::sink())
                .await
                .map_err(|e| self.read_err(e))?;
        }
        Ok(reader)
    }

    /// Up to `len` bytes from `pos` (fewer at the end of the log).
    async fn read_at(&self, storage: &Storage, pos: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let len = len.min(self.size.saturating_sub(pos) as usize);
        let mut buf = Vec::with_capacity(len);
        if len == 0 {
            return Ok(buf);
        }
        let reader = self.open_at(storage, pos).await?;
        reader
            .take(len as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| self.read_err(e))?;
        Ok(buf)
    }

    /// The start of the first line at or after `pos` (`pos` itself when a line
    /// starts there, or when no line ends within a page after it).
    pub async fn line_start(&self, storage: &Storage, pos: u64) -> Result<u64, LogError> {
        if pos == 0 {
            return Ok(0);
        }
        let pos = pos.min(self.size);
        let bytes = self.read_at(storage, pos - 1, PAGE_BYTES).await?;
        Ok(match memchr::memchr(b'\n', &bytes) {
            Some(i) => (pos - 1 + i as u64 + 1).min(self.size),
            None => pos,
        })
    }

    /// The page that starts at `from` (a line start).
    pub async fn page(&self, storage: &Storage, from: u64) -> Result<Page, LogError> {
        let bytes = self.read_at(storage, from, PAGE_BYTES).await?;
        let at_end = from + bytes.len() as u64 >= self.size;
        let mut lines = Vec::new();
        let mut used = 0;
        for (i, end) in memchr::memchr_iter(b'\n', &bytes).enumerate() {
            if i == PAGE_LINES {
                break;
            }
            lines.push(bytes[used..end].to_vec());
            used = end + 1;
        }
        // The rest: the log's last line without a newline, or a line longer
        // than a page (shown in parts).
        if lines.len() < PAGE_LINES && used < bytes.len() && (at_end || lines.is_empty()) {
            lines.push(bytes[used..].to_vec());
            used = bytes.len();
        }
        Ok(Page {
            from,
            to: from + used as u64,
            lines,
        })
    }

    /// The start of the page that ends where `from` begins.
    pub async fn previous_page(&self, storage: &Storage, from: u64) -> Result<u64, LogError> {
        let start = from.saturating_sub(PAGE_BYTES as u64);
        let bytes = self
            .read_at(storage, start, (from - start) as usize)
            .await?;
        // Line starts inside the window, newest last; drop the line that ends at `from`.
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let starts: Vec<u64> = memchr::memchr_iter(b'\n', body)
            .map(|i| start + i as u64 + 1)
            .collect();
        Ok(match starts.len().checked_sub(PAGE_LINES) {
            Some(i) => starts[i],
            None if start == 0 => 0,
            None => starts.first().copied().unwrap_or(start),
        })
    }

    /// The start of the last page.
    pub async fn last_page(&self, storage: &Storage) -> Result<u64, LogError> {
        let end = self.size;
        if end == 0 {
            return Ok(0);
        }
        self.previous_page(storage, end).await
    }
}

/// Lines of one page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Byte offset of the first line.
    pub from: u64,
    /// Byte offset just after the last line shown.
    pub to: u64,
    pub lines: Vec<Vec<u8>>,
}

/// What a line search asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The line number of the line starting at this byte.
    Offset(u64),
    /// The byte where this line (1-based) starts.
    Line(u64),
}

/// A place in a log: a byte offset and the number of the line starting there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub pos: u64,
    pub line: u64,
}

/// Line-number checkpoints per log: for log `L`, `checkpoints[k]` is the
/// number of newlines in its first `k * STEP` bytes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    logs: Arc<Mutex<HashMap<String, Vec<u64>>>>,
}

fn cache_key(log: &LogRef) -> String {
    format!("{}\n{}", log.key, log.sha256)
}

impl LineIndex {
    fn known(&self, log: &LogRef) -> Vec<u64> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.get(&cache_key(log))
            .cloned()
            .unwrap_or_else(|| vec![0])
    }

    fn remember(&self, log: &LogRef, k: usize, count: u64) {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        if logs.len() >= LOGS_REMEMBERED && !logs.contains_key(&cache_key(log)) {
            logs.clear();
        }
        let points = logs.entry(cache_key(log)).or_insert_with(|| vec![0]);
        if points.len() == k {
            points.push(count);
        }
    }

    /// Finds `target`, counting at most `budget` bytes; `None` past the budget
    /// (then the counting goes on in the background for the next request).
    pub async fn locate(
        &self,
        storage: &Storage,
        log: &LogRef,
        target: Target,
        budget: u64,
    ) -> Result<Option<Located>, LogError> {
        let found = self.walk(storage, log, target, budget).await?;
        if found.is_none() {
            let (index, storage, log) = (self.clone(), storage.clone(), log.clone());
            tokio::spawn(async move {
                if let Err(e) = index.walk(&storage, &log, target, u64::MAX).await {
                    tracing::warn!(error = %e, "counting lines in the background failed");
                }
            });
        }
        Ok(found)
    }

    async fn walk(
        &self,
        storage: &Storage,
        log: &LogRef,
        target: Target,
        budget: u64,
    ) -> Result<Option<Located>, LogError> {
        let points = self.known(log);
        let k = match target {
            Target::Offset(o) => ((o.min(log.size) / STEP) as usize).min(points.len() - 1),
            Target::Line(n) => {
                let before = n.saturating_sub(1);
                points.partition_point(|&c| c <= before).saturating_sub(1)
            }
        };
        let start = k as u64 * STEP;
        let mut count = points[k];
        let mut pos = start;
        let mut reader = log.open_at(storage, start).await?;
        let mut buf = vec![0u8; BUF];
        loop {
            match target {
                Target::Offset(o) if pos >= o.min(log.size) => {
                    return Ok(Some(Located {
                        pos,
                        line: count + 1,
                    }));
                }
                Target::Line(n) if count + 1 >= n => {
                    return Ok(Some(Located { pos, line: n }));
                }
                _ => {}
            }
            if pos - start >= budget {
                return Ok(None);
            }
            let boundary = (pos / STEP + 1) * STEP;
            let mut want = (boundary - pos).min(BUF as u64);
            if let Target::Offset(o) = target {
                want = want.min(o - pos);
            }
            let got = reader
                .read(&mut buf[..want as usize])
                .await
                .map_err(|e| log.read_err(e))?;
            if got == 0 {
                // The end of the log: a line past it is the last line's end.
                return Ok(Some(Located {
                    pos,
                    line: count + 1,
                }));
            }
            let piece = &buf[..got];
            if let Target::Line(n) = target {
                let need = (n - 1 - count) as usize;
                if let Some(i) = memchr::memchr_iter(b'\n', piece).nth(need - 1) {
                    return Ok(Some(Located {
                        pos: pos + i as u64 + 1,
                        line: n,
                    }));
                }
            }
            count += memchr::memchr_iter(b'\n', piece).count() as u64;
            pos += got as u64;
            if pos.is_multiple_of(STEP) {
                self.remember(log, (pos / STEP) as usize, count);
            }
        }
    }
}

/// Which way a search inside a log goes from its starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Next,
    Previous,
}

/// What a search inside a log found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A matching line starts at this byte.
    Hit(u64),
    /// No match in the bytes searched; the search may go on from `resume`
    /// unless the start or end of the log was reached.
    Nothing { resume: u64, exhausted: bool },
}

/// Searches from `from` (forward: the first matching line starting after
/// `from`'s line; backward: the last one starting before `from`), reading at
/// most `budget` bytes.
pub async fn find(
    storage: &Storage,
    log: &LogRef,
    matcher: &RegexMatcher,
    from: u64,
    direction: Direction,
    budget: u64,
) -> Result<Found, LogError> {
    let (start, end) = match direction {
        Direction::Next => (from, from.saturating_add(budget).min(log.size)),
        Direction::Previous => (from.saturating_sub(budget), from),
    };
    if start >= end {
        return Ok(Found::Nothing {
            resume: from,
            exhausted: true,
        });
    }
    let reader = log.open_at(storage, start).await?;
    let reader = tokio_util::io::SyncIoBridge::new(reader.take(end - start));
    let matcher = matcher.clone();
    let last = direction == Direction::Previous;
    let hit = tokio::task::spawn_blocking(move || {
        let mut sink = FirstOrLast {
            hit: None,
            last,
            skip_first: direction == Direction::Next,
        };
        searcher()
            .search_reader(&matcher, reader, &mut sink)
            .map(|()| sink.hit)
    })
    .await
    .map_err(|e| log.read_err(std::io::Error::other(e)))?
    .map_err(|e| log.read_err(e))?;
    Ok(match hit {
        Some(offset) => Found::Hit(start + offset),
        None => Found::Nothing {
            resume: match direction {
                Direction::Next => end,
                Direction::Previous => start,
            },
            exhausted: match direction {
                Direction::Next => end >= log.size,
                Direction::Previous => start == 0,
            },
        },
    })
}

fn searcher() -> Searcher {
    SearcherBuilder::new()
        .line_number(false)
        .binary_detection(BinaryDetection::none())
        .heap_limit(Some(crate::read::grep::LINE_LIMIT))
        .build()
}

/// Keeps the first matching line (after the starting line), or the last one.
struct FirstOrLast {
    hit: Option<u64>,
    last: bool,
    /// Forward searches start at the current hit's line: skip a match there.
    skip_first: bool,
}

impl Sink for FirstOrLast {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, std::io::Error> {
        let offset = mat.absolute_byte_offset();
        if self.skip_first && offset == 0 {
            return Ok(true);
        }
        self.hit = Some(offset);
        Ok(self.last)
    }
}

/// A line cut into plain and matching parts, for highlighting.
pub fn segments(matcher: Option<&RegexMatcher>, line: &[u8]) -> Vec<(String, bool)> {
    use grep_matcher::Matcher;
    let mut spans = Vec::new();
    if let Some(m) = matcher {
        let _ = m.find_iter(line, |m| {
            if m.start() < m.end() {
                spans.push((m.start(), m.end()));
            }
            true
        });
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    let mut last = 0;
    for (start, end) in spans {
        if start > last {
            out.push((text(&line[last..start]), false));
        }
        out.push((text(&line[start..end]), true));
        last = end;
    }
    if last < line.len() || out.is_empty() {
        out.push((text(&line[last..]), false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain log of `lines` numbered lines of varying length in a local store.
    async fn plain_log(dir: &std::path::Path, lines: u64) -> (Storage, LogRef, Vec<u8>) {
        let mut text = Vec::new();
        for i in 1..=lines {
            text.extend_from_slice(
                format!("line {i} {}\n", "x".repeat((i % 97) as usize)).as_bytes(),
            );
        }
        std::fs::create_dir_all(dir.join("p")).unwrap();
        std::fs::write(dir.join("p/log"), &text).unwrap();
        let store = crate::storage::LocalStore::open_root(
            dir.to_owned(),
            crate::storage::SyncMode::default(),
        )
        .await
        .unwrap();
        let log = LogRef {
            job: "j".into(),
            task: "t".into(),
            key: ArchiveKey::from_stored("p/log").unwrap(),
            compression: Compression::None,
            size: text.len() as u64,
            sha256: "x".into(),
            stored_size: Some(text.len() as u64),
        };
        (Storage::local(store), log, text)
    }

    /// GUARD: line numbers from checkpoints agree with counting from the
    /// start, across several checkpoints, and a budget stops the counting.
    #[tokio::test]
    async fn lines_and_offsets_agree_across_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, log, text) = plain_log(dir.path(), 400_000).await;
        assert!(text.len() as u64 > 2 * STEP, "spans checkpoints");
        let index = LineIndex::default();
        let starts: Vec<u64> = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', &text).map(|i| i as u64 + 1))
            .collect();
        // A budget too small for the end: none now.
        let end = Target::Offset(*starts.last().unwrap());
        assert_eq!(
            index.walk(&storage, &log, end, 1 << 20).await.unwrap(),
            None
        );
        for n in [1u64, 2, 150_000, 250_001, 399_999, 400_000] {
            let at = index
                .walk(&storage, &log, Target::Line(n), u64::MAX)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(at.pos, starts[n as usize - 1], "line {n}");
            let back = index
                .walk(&storage, &log, Target::Offset(at.pos), u64::MAX)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back.line, n, "offset of line {n}");
        }
        // A line past the end is the end.
        let past = index
            .walk(&storage, &log, Target::Line(500_000), u64::MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(past.pos, log.size);
        // Pages: the last page ends at the end; the page before it ends where it starts.
        let last = log.last_page(&storage).await.unwrap();
        let page = log.page(&storage, last).await.unwrap();
        assert_eq!(page.to, log.size);
        let before = log.previous_page(&storage, last).await.unwrap();
        assert_eq!(log.page(&storage, before).await.unwrap().to, last);
    }

    #[test]
    fn segments_split_around_matches() {
        let m = crate::read::grep::matcher(&crate::read::grep::GrepOptions {
            pattern: "ab".into(),
            fixed_strings: true,
            ..Default::default()
        })
        .unwrap();
        let parts = segments(Some(&m), b"xabyab");
        assert_eq!(
            parts,
            vec![
                ("x".to_owned(), false),
                ("ab".to_owned(), true),
                ("y".to_owned(), false),
                ("ab".to_owned(), true)
            ]
        );
        assert_eq!(segments(None, b""), vec![(String::new(), false)]);
    }
}
