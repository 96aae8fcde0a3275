//! Synthetic training-log content: every byte of a simulated log is a pure
//! function of the log's identity and its offset, so a multi-GiB log can be served
//! from any offset without ever existing in memory.
//!
//! A log is the first `size` bytes of an endless sequence of fixed-width lines
//! ([`LINE_WIDTH`] bytes each, the last one `'\n'`). Line `n` lives at offset
//! `n * LINE_WIDTH` and is computed from `(job_id, task_id, seed, base time, n)`
//! alone; growing a log (a larger `size`) therefore keeps every earlier byte, and a
//! different seed rewrites it. This module owns the generator and its chunked
//! stream; it knows nothing of HTTP, ETags or faults.

use std::io;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest, Sha256};

/// Width of every generated line, `'\n'` included.
pub const LINE_WIDTH: u64 = 100;
/// Size of the chunks a [`log_stream`] yields.
pub const CHUNK_SIZE: u64 = 64 * 1024;
/// Task labels are padded or cut to this many bytes so lines keep their columns.
const LABEL_WIDTH: usize = 10;
/// Time base used when a job carries no start or create time (2026-03-15T08:30:00Z).
const FALLBACK_BASE_MS: i64 = 1_773_563_400_000;

const W: usize = LINE_WIDTH as usize;

/// The generator of one log. Cheap to clone; holds no buffer of its own.
#[derive(Debug, Clone)]
pub struct LogGen {
    key: u64,
    base_ms: i64,
    step_ms: u64,
    label: [u8; LABEL_WIDTH],
}

impl LogGen {
    /// `base_ms` is the time of the first line (epoch ms); values ≤ 0 pick a fixed date.
    pub fn new(job_id: &str, task_id: &str, seed: u64, base_ms: i64) -> LogGen {
        let mut hasher = Sha256::new();
        hasher.update(job_id.as_bytes());
        hasher.update([0]);
        hasher.update(task_id.as_bytes());
        hasher.update([0]);
        hasher.update(seed.to_le_bytes());
        let digest = hasher.finalize();
        let mut key_bytes = [0u8; 8];
        key_bytes.copy_from_slice(&digest[..8]);
        let key = u64::from_le_bytes(key_bytes);
        let mut label = [b' '; LABEL_WIDTH];
        let n = task_id.len().min(LABEL_WIDTH);
        label[..n].copy_from_slice(&task_id.as_bytes()[..n]);
        LogGen {
            key,
            base_ms: if base_ms > 0 {
                base_ms
            } else {
                FALLBACK_BASE_MS
            },
            step_ms: 200 + key % 600,
            label,
        }
    }

    /// Writes line `n` (exactly [`LINE_WIDTH`] bytes, ending in `'\n'`).
    pub fn line(&self, n: u64, out: &mut [u8; W]) {
        let h = mix(self.key ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let jitter = (h >> 8) % (self.step_ms / 2);
        let ts = self.base_ms + (n.saturating_mul(self.step_ms) + jitter) as i64;
        let mut w = LineWriter { buf: out, pos: 0 };
        w.timestamp(ts);
        if n % 500 == 499 {
            w.put(b" INFO ");
            w.put(&self.label);
            w.put(b" eval step=");
            w.digits(n + 1, 9);
            w.put(b" val_loss=");
            w.fixed(loss_micro(n, h >> 3), 1, 6);
            w.put(b" top1=0.");
            w.digits(500_000 + (h >> 24) % 450_000, 6);
        } else if h % 211 == 0 {
            w.put(b" WARN ");
            w.put(&self.label);
            w.put(b" step=");
            w.digits(n + 1, 9);
            w.put(b" NCCL watchdog: allreduce took ");
            w.digits(1_000 + (h >> 16) % 30_000, 5);
            w.put(b" ms");
        } else {
            w.put(b" INFO ");
            w.put(&self.label);
            w.put(b" step=");
            w.digits(n + 1, 9);
            w.put(b" loss=");
            w.fixed(loss_micro(n, h), 1, 6);
            w.put(b" lr=0.");
            w.digits(
                if n < 1_000 {
                    100 * (n + 1) / 1_000
                } else {
                    100
                },
                6,
            );
            w.put(b" gn=");
            w.fixed(200 + (h >> 20) % 5_000, 1, 3);
            w.put(b" ips=");
            w.digits(1_000 + (h >> 40) % 1_000, 4);
        }
        w.finish();
    }

    /// Fills `out` with the log bytes starting at `offset`.
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut line_no = offset / LINE_WIDTH;
        let mut within = (offset % LINE_WIDTH) as usize;
        let mut pos = 0;
        let mut tmp = [0u8; W];
        while pos < out.len() {
            let rest = out.len() - pos;
            if within == 0 && rest >= W {
                let dst: &mut [u8; W] = (&mut out[pos..pos + W])
                    .try_into()
                    .expect("slice has exactly one line");
                self.line(line_no, dst);
                pos += W;
            } else {
                self.line(line_no, &mut tmp);
                let take = (W - within).min(rest);
                out[pos..pos + take].copy_from_slice(&tmp[within..within + take]);
                pos += take;
            }
            line_no += 1;
            within = 0;
        }
    }

    /// The bytes `[start, end)`, materialised. For tests and small logs only.
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let len = usize::try_from(end.saturating_sub(start)).expect("range fits in memory");
        let mut out = vec![0u8; len];
        self.fill(start, &mut out);
        out
    }
}

/// The bytes `[start, end)` of a log as a stream of chunks of at most [`CHUNK_SIZE`].
/// Each chunk is generated when polled, so memory use is one chunk per stream.
pub fn log_stream(
    generator: LogGen,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::iter((start..end).step_by(CHUNK_SIZE as usize)).map(move |off| {
        let len = CHUNK_SIZE.min(end - off) as usize;
        let mut chunk = vec![0u8; len];
        generator.fill(off, &mut chunk);
        Ok(Bytes::from(chunk))
    })
}

/// Decreasing loss in micro-units with noise, capped to one integer digit.
fn loss_micro(n: u64, h: u64) -> u64 {
    let trend = 2_300_000u64.saturating_mul(20_000) / (20_000 + n);
    (trend + 50_000 + h % 80_000).min(9_999_999)
}

/// splitmix64 finaliser: a cheap, well-mixed hash of one word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes fields left to right into one line; bytes past column 99 are dropped and
/// [`LineWriter::finish`] pads with spaces and ends the line.
struct LineWriter<'a> {
    buf: &'a mut [u8; W],
    pos: usize,
}

impl LineWriter<'_> {
    fn put(&mut self, s: &[u8]) {
        let n = s.len().min(W - 1 - self.pos);
        self.buf[self.pos..self.pos + n].copy_from_slice(&s[..n]);
        self.pos += n;
    }

    /// `value` as exactly `width` zero-padded decimal digits (higher digits dropped).
    fn digits(&mut self, mut value: u64, width: usize) {
        let width = width.min(W - 1 - self.pos);
        for i in (0..width).rev() {
            self.buf[self.pos + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.pos += width;
    }

    /// `value` scaled by 10^-frac as `int.frac` digits, e.g. (1234567, 1, 6) → `1.234567`.
    fn fixed(&mut self, value: u64, int: usize, frac: usize) {
        let scale = 10u64.pow(frac as u32);
        self.digits(value / scale, int);
        self.put(b".");
        self.digits(value % scale, frac);
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC.
    fn timestamp(&mut self, ms: i64) {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u64;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let tod = secs.rem_euclid(86_400) as u64;
        self.digits(year.clamp(0, 9999) as u64, 4);
        self.put(b"-");
        self.digits(month, 2);
        self.put(b"-");
        self.digits(day, 2);
        self.put(b"T");
        self.digits(tod / 3600, 2);
        self.put(b":");
        self.digits(tod / 60 % 60, 2);
        self.put(b":");
        self.digits(tod % 60, 2);
        self.put(b".");
        self.digits(millis, 3);
        self.put(b"Z");
    }

    fn finish(self) {
        self.buf[self.pos..W - 1].fill(b' ');
        self.buf[W - 1] = b'\n';
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogGen {
        LogGen::new(
            "3faf5c03-aaa1-4cbe-879d-24b05d997347",
            "worker-0",
            7,
            1_710_491_465_000,
        )
    }

    #[test]
    fn lines_have_fixed_width_and_readable_text() {
        let g = sample();
        let text = g.bytes(0, 2_000 * LINE_WIDTH);
        for (i, line) in text.chunks(W).enumerate() {
            assert_eq!(line.len(), W);
            assert_eq!(line[W - 1], b'\n', "line {i}");
            assert!(!line[..W - 1].contains(&b'\n'), "line {i}");
            assert!(
                line[..W - 1]
                    .iter()
                    .all(|b| b.is_ascii_graphic() || *b == b' '),
                "line {i}"
            );
        }
        let first = std::str::from_utf8(&text[..W]).unwrap();
        assert!(first.starts_with("2024-03-15T08:31:05."), "{first}");
        assert!(
            first.contains(" INFO worker-0   step=000000001 loss="),
            "{first}"
        );
    }

    #[test]
    fn timestamps_never_go_backwards() {
        let g = sample();
        let text = g.bytes(0, 5_000 * LINE_WIDTH);
        let stamps: Vec<&[u8]> = text.chunks(W).map(|l| &l[..24]).collect();
        assert!(stamps.windows(2).all(|p| p[0] <= p[1]));
    }

    /// GUARD: any window of the log equals the same window of the whole log, so
    /// ranges and resumed downloads see consistent bytes.
    #[test]
    fn any_window_matches_the_whole() {
        let g = sample();
        let whole = g.bytes(0, 50_000);
        for (start, end) in [
            (0, 1),
            (0, 100),
            (99, 101),
            (1, 250),
            (4_321, 49_999),
            (12_345, 12_345),
            (49_900, 50_000),
        ] {
            assert_eq!(
                g.bytes(start, end),
                &whole[start as usize..end as usize],
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn stream_chunks_concatenate_to_the_range() {
        let g = sample();
        let (start, end) = (777, 3 * CHUNK_SIZE + 555);
        let chunks: Vec<Bytes> = futures::executor::block_on(
            log_stream(g.clone(), start, end)
                .map(|c| c.unwrap())
                .collect(),
        );
        assert!(chunks.iter().all(|c| c.len() as u64 <= CHUNK_SIZE));
        assert_eq!(chunks.concat(), g.bytes(start, end));
        let empty: Vec<_> = futures::executor::block_on(log_stream(g, 10, 10).collect());
        assert!(empty.is_empty());
    }

    /// GUARD: a growing log keeps its prefix; a new seed rewrites it.
    #[test]
    fn growth_keeps_prefix_and_seed_changes_content() {
        let g = sample();
        let small = g.bytes(0, 1_000);
        let grown = g.bytes(0, 10_000);
        assert_eq!(&grown[..1_000], &small[..]);
        let other = LogGen::new(
            "3faf5c03-aaa1-4cbe-879d-24b05d997347",
            "worker-0",
            8,
            1_710_491_465_000,
        );
        assert_ne!(other.bytes(0, 1_000), small);
        let other_task = LogGen::new(
            "3faf5c03-aaa1-4cbe-879d-24b05d997347",
            "worker-1",
            7,
            1_710_491_465_000,
        );
        assert_ne!(other_task.bytes(0, 1_000), small);
    }

    #[test]
    fn long_task_ids_do_not_break_the_width() {
        let g = LogGen::new("j", &"x".repeat(200), 0, 0);
        let text = g.bytes(0, 10 * LINE_WIDTH);
        assert!(
            text.chunks(W)
                .all(|l| l[W - 1] == b'\n' && !l[..W - 1].contains(&b'\n'))
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_797), (2024, 3, 15));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
