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
//!
//! Speed matters (benchmarks pull GiBs through it), so a line is a copy of one of
//! three prepared templates with its numbers patched in at fixed columns, two
//! digits per division; the date prefix is cached across lines of the same day.

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

// Line layout. Every template is `TIME_TEMPLATE + level + label + body`, padded
// with spaces to column 99, then '\n'. The column constants below are the ends
// (exclusive) of the numbers patched into the templates; a test checks them.
const TIME_TEMPLATE: &str = "0000-00-00T00:00:00.000Z";
const TRAIN_BODY: &str = " step=000000000 loss=0.000000 lr=0.000000 gn=0.000 ips=0000";
const EVAL_BODY: &str = " eval step=000000000 val_loss=0.000000 top1=0.000000";
const WARN_BODY: &str = " step=000000000 NCCL watchdog: allreduce took 00000 ms";
/// Where the body starts: after time (24), level (6) and label.
const BODY: usize = 24 + 6 + LABEL_WIDTH;

/// The generator of one log. Cheap to clone; holds no buffer of its own.
#[derive(Debug, Clone)]
pub struct LogGen {
    key: u64,
    base_ms: i64,
    step_ms: u64,
    train: [u8; W],
    eval: [u8; W],
    warn: [u8; W],
}

fn template(level: &str, label: &[u8], body: &str) -> [u8; W] {
    let mut line = [b' '; W];
    let parts = [
        TIME_TEMPLATE.as_bytes(),
        level.as_bytes(),
        label,
        body.as_bytes(),
    ];
    let mut pos = 0;
    for part in parts {
        line[pos..pos + part.len()].copy_from_slice(part);
        pos += part.len();
    }
    line[W - 1] = b'\n';
    line
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
            train: template(" INFO ", &label, TRAIN_BODY),
            eval: template(" INFO ", &label, EVAL_BODY),
            warn: template(" WARN ", &label, WARN_BODY),
        }
    }

    /// Writes line `n` (exactly [`LINE_WIDTH`] bytes, ending in `'\n'`). `dates`
    /// remembers the last formatted day, which consecutive lines share.
    fn line(&self, n: u64, out: &mut [u8; W], dates: &mut DateCache) {
        let h = mix(self.key ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let step = n + 1;
        if n % 500 == 499 {
            *out = self.eval;
            num(out, BODY + 20, step, 9);
            fixed6(out, BODY + 38, loss_micro(n, h >> 3));
            num(out, BODY + 52, 500_000 + (h >> 24) % 450_000, 6);
        } else if h.is_multiple_of(211) {
            *out = self.warn;
            num(out, BODY + 15, step, 9);
            num(out, BODY + 51, 1_000 + (h >> 16) % 30_000, 5);
        } else {
            *out = self.train;
            num(out, BODY + 15, step, 9);
            fixed6(out, BODY + 29, loss_micro(n, h));
            num(
                out,
                BODY + 41,
                if n < 1_000 { 100 * step / 1_000 } else { 100 },
                6,
            );
            let gn = 200 + (h >> 20) % 5_000;
            num(out, BODY + 46, gn / 1_000, 1);
            num(out, BODY + 50, gn % 1_000, 3);
            num(out, BODY + 59, 1_000 + (h >> 40) % 1_000, 4);
        }
        // Jitter in [0, step/2) without a division: high half of a 32x32 product.
        let jitter = (((h >> 8) & 0xFFFF_FFFF) * (self.step_ms / 2)) >> 32;
        let ts = self.base_ms + (n.saturating_mul(self.step_ms) + jitter) as i64;
        timestamp(out, ts, dates);
    }

    /// Fills `out` with the log bytes starting at `offset`.
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut line_no = offset / LINE_WIDTH;
        let mut within = (offset % LINE_WIDTH) as usize;
        let mut pos = 0;
        let mut tmp = [0u8; W];
        let mut dates = DateCache::default();
        while pos < out.len() {
            let rest = out.len() - pos;
            if within == 0 && rest >= W {
                let dst: &mut [u8; W] = (&mut out[pos..pos + W])
                    .try_into()
                    .expect("slice has exactly one line");
                self.line(line_no, dst, &mut dates);
                pos += W;
            } else {
                self.line(line_no, &mut tmp, &mut dates);
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

/// `"00" "01" … "99"` back to back.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `value` as `width` zero-padded digits ending (exclusive) at column `end`;
/// higher digits are dropped. Inlined with constant columns, it has no bounds checks.
#[inline(always)]
fn num(line: &mut [u8; W], end: usize, mut value: u64, width: usize) {
    let mut end = end;
    let start = end - width;
    while end >= start + 2 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        line[end - 2..end].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        end -= 2;
    }
    if end > start {
        line[start] = b'0' + (value % 10) as u8;
    }
}

/// `D.DDDDDD` of a micro-unit value ending at column `end`.
#[inline(always)]
fn fixed6(line: &mut [u8; W], end: usize, micro: u64) {
    num(line, end, micro % 1_000_000, 6);
    num(line, end - 7, micro / 1_000_000, 1);
}

/// The `YYYY-MM-DDT` prefix of the last day formatted.
#[derive(Default)]
struct DateCache {
    day: Option<i64>,
    prefix: [u8; 11],
}

/// Patches `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) into columns 0..24.
fn timestamp(line: &mut [u8; W], ms: i64, dates: &mut DateCache) {
    let secs = ms.div_euclid(1000);
    let day = secs.div_euclid(86_400);
    if dates.day != Some(day) {
        let (year, month, date) = civil_from_days(day);
        let mut scratch = [0u8; W];
        scratch[..11].copy_from_slice(b"0000-00-00T");
        num(&mut scratch, 4, year.clamp(0, 9999) as u64, 4);
        num(&mut scratch, 7, month, 2);
        num(&mut scratch, 10, date, 2);
        dates.prefix.copy_from_slice(&scratch[..11]);
        dates.day = Some(day);
    }
    line[..11].copy_from_slice(&dates.prefix);
    let tod = secs.rem_euclid(86_400) as u64;
    num(line, 13, tod / 3600, 2);
    num(line, 16, tod / 60 % 60, 2);
    num(line, 19, tod % 60, 2);
    num(line, 23, ms.rem_euclid(1000) as u64, 3);
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

    /// GUARD: numbers are patched only into their `0` placeholders, so the column
    /// constants agree with the templates.
    #[test]
    fn patches_touch_only_digit_placeholders() {
        let g = sample();
        let text = g.bytes(0, 3_000 * LINE_WIDTH);
        let mut kinds = [0; 3];
        for line in text.chunks(W) {
            let fits = |tpl: &[u8; W]| {
                tpl.iter().zip(line).all(|(t, l)| {
                    if *t == b'0' {
                        l.is_ascii_digit()
                    } else {
                        t == l
                    }
                })
            };
            let kind = [&g.train, &g.eval, &g.warn]
                .iter()
                .position(|tpl| fits(tpl));
            kinds[kind.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(line)))] += 1;
        }
        assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
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

    /// Run with `cargo test --release --lib generator_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: generates 1 GiB, meaningful only in release"]
    fn generator_throughput() {
        let g = sample();
        let mut chunk = vec![0u8; CHUNK_SIZE as usize];
        let started = std::time::Instant::now();
        let mut offset = 0;
        while offset < 1 << 30 {
            g.fill(offset, &mut chunk);
            offset += CHUNK_SIZE;
        }
        println!(
            "generator: {:.0} MiB/s",
            1024.0 / started.elapsed().as_secs_f64()
        );
    }
}
