//! Progress of a run on a terminal: tasks done, bytes, rate and ETA. Hidden when
//! stderr is not a terminal (journald, pipes, tests), so logs stay clean.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A cheap handle shared by all fetches of a run.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    bytes: Arc<AtomicU64>,
    started: Instant,
}

impl Progress {
    /// A bar drawn on stderr when it is a terminal, invisible otherwise.
    pub fn for_terminal(tasks: u64) -> Progress {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress::with_target(tasks, target)
    }

    pub fn hidden() -> Progress {
        Progress::with_target(0, ProgressDrawTarget::hidden())
    }

    fn with_target(tasks: u64, target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(tasks), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {msg}  ETA {eta}",
            )
            .expect("static template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            bytes: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    pub fn add_bytes(&self, n: u64) {
        crate::telemetry::record_download_bytes(n);
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if !self.bar.is_hidden() {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            self.bar.set_message(format!(
                "{}  {}/s",
                HumanBytes(total),
                HumanBytes((total as f64 / secs) as u64)
            ));
        }
    }

    pub fn task_done(&self) {
        self.bar.inc(1);
    }

    /// `n` tasks need no fetching (sealed).
    pub fn skipped(&self, n: u64) {
        self.bar.inc(n);
    }

    /// `n` more tasks were listed (by another source of the pass).
    pub fn add_tasks(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// `n` tasks are fetched again in another round: more work to show.
    pub fn retrying(&self, n: u64) {
        self.bar.inc_length(n);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
