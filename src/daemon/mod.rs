//! `malog run`: the long-lived service. Cron ticks start archive passes
//! ([`Archiver::run_once`], exactly what `backfill` runs), one at a time; signals
//! stop or reload it; `/metrics` and `/healthz` are served beside it; systemd is
//! told what it is doing.
//!
//! ```text
//! tokio-cron-scheduler ──tick──►┐
//! SIGTERM/SIGINT/SIGHUP ───────►│ daemon loop ──spawn──► pass task (run_once)
//! pass task done ──────────────►│   (one owner of all state; never blocks)
//! heartbeat (1 s) ─────────────►┘      │
//!                                      ├─► sd_notify: READY, STATUS, WATCHDOG, STOPPING
//!                                      └─► Shared ◄── axum: /metrics, /healthz
//! ```
//!
//! Rules it keeps:
//! - One pass at a time. A tick that arrives while a pass runs is dropped and
//!   logged: a missed hour is caught by the next tick, while queued ticks would
//!   only run back-to-back passes after a slow one.
//! - At start, when the last `ok` pass is older than one schedule period (or
//!   there is none), a pass runs at once.
//! - A pass that fails (index or storage unusable mid-run) or panics is logged
//!   and counted; the daemon waits for the next tick.
//! - Start-up dependencies (index folder, storage) that are not ready are
//!   retried with capped backoff; systemd's start timeout is extended meanwhile.
//! - SIGTERM/SIGINT: stop ticking, give the running pass `daemon.shutdown_grace`
//!   to finish, then cancel its downloads (their staging files stay for the
//!   next pass to resume, and the index records what finished); a second
//!   signal cancels at once. Exit 0.
//! - SIGHUP: reload and validate the config and credentials; on error keep the
//!   old ones and log why. A valid config is applied when no pass runs.
//! - WATCHDOG=1 is sent only from this loop, and only while schedule ticks keep
//!   arriving when due.

mod http;

pub use http::Health;

use crate::config::{Config, ConfigError};
use crate::index::{Index, RunSummary};
use crate::output::{exit, human_duration};
use crate::run::{Archiver, RunError, RunReport, RunScope};
use crate::schedule::CronSchedule;
use crate::shutdown::{Sig, Signals};
use crate::source::Credentials;
use crate::source::client::CredentialsError;
use crate::systemd::Notifier;
use crate::telemetry;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

/// Start-up retries: first delay, and the cap of the doubling.
const STARTUP_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const STARTUP_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// After cancelling a pass at shutdown, how long to wait for it to record and return.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// A schedule tick this late counts as missing (the scheduler is stuck or dead).
const TICK_SLACK: Duration = Duration::from_secs(30);
/// The loop's own clock: progress in STATUS, metrics upkeep.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often STATUS= is refreshed while a pass runs.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Retention-risk tasks logged one by one after a pass; the rest are summed up.
const RISKS_LOGGED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot listen on daemon.listen = {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the cron scheduler failed: {0}")]
    Scheduler(String),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
}

impl DaemonError {
    /// Whether the operator must fix the config (exit code 2) rather than the host.
    pub fn is_usage(&self) -> bool {
        match self {
            DaemonError::Web(e) => e.is_usage(),
            other => matches!(other, DaemonError::Config(_) | DaemonError::Credentials(_)),
        }
    }
}

/// What the HTTP handlers read. Written only by the daemon loop.
pub(crate) struct Shared {
    pub(crate) metrics: PrometheusHandle,
    state: Mutex<SharedState>,
}

#[derive(Default)]
struct SharedState {
    /// `None` until start-up could open the archive.
    archiver: Option<Arc<Archiver>>,
    /// Why start-up is still waiting.
    waiting: Option<String>,
    pass_running: bool,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut SharedState)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> (Option<Arc<Archiver>>, Option<String>, bool) {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.archiver.clone(), s.waiting.clone(), s.pass_running)
    }
}

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
pub async fn run(config_path: &Path) -> Result<u8, DaemonError> {
    // Handlers first: SIGHUP's default action would kill the process.
    let mut signals = Signals::with_reload().map_err(DaemonError::Signals)?;
    let metrics = telemetry::install();
    let config = Config::load(config_path)?;
    let credentials = crate::run::resolve_credentials(&config)?;
    telemetry::describe_sources(config.sources.iter().map(|s| s.name()));
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.daemon.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: config.daemon.listen,
            source,
        })?;
    let shared = Arc::new(Shared {
        metrics,
        state: Mutex::new(SharedState::default()),
    });
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(listener, shared.clone(), http_stop.clone()));
    tracing::info!(%addr, "serving http://{addr}/metrics and http://{addr}/healthz");
    // The web page, when enabled: read-only, on its own listener, with the
    // config of start-up (a reload does not move it).
    let web = if config.web.enabled {
        let state = crate::web::WebState::open(&config, None).await?;
        let listener = crate::web::bind(&config.web).await?;
        tracing::info!(addr = %config.web.listen, "serving the archive's web page");
        Some(tokio::spawn(crate::web::serve(
            listener,
            state,
            http_stop.clone(),
        )))
    } else {
        None
    };

    let notifier = Notifier::from_env();
    let mut daemon = Daemon {
        config_path: config_path.to_owned(),
        config,
        credentials,
        shared,
        notifier,
        archiver: None,
        pending: None,
        last_tick: Utc::now(),
    };
    let code = match daemon.open_with_backoff(&mut signals).await {
        Some(archiver) => daemon.serve(archiver, &mut signals).await?,
        None => {
            daemon
                .notifier
                .stopping("stopped before start-up completed");
            exit::OK
        }
    };
    http_stop.cancel();
    let _ = http.await;
    if let Some(web) = web {
        let _ = web.await;
    }
    tracing::info!("stopped");
    Ok(code)
}

/// The daemon's timer: tokio-cron-scheduler fires a one-shot job at each instant
/// the schedule names, and the job only sends a tick into the loop and arms the
/// next one. The expression is parsed once, by [`CronSchedule`], so `status`'s
/// "next pass", the catch-up rule and the ticks cannot disagree.
struct Ticker {
    scheduler: JobScheduler,
    /// A clone for the job of a new schedule after a reload; the loop's tick
    /// channel stays open while the daemon owns a ticker.
    tx: mpsc::Sender<()>,
}

type SchedulerResult = Result<(), tokio_cron_scheduler::JobSchedulerError>;

/// Adds the one-shot job for the first firing of `schedule` after `after`.
fn arm(
    scheduler: JobScheduler,
    schedule: CronSchedule,
    after: DateTime<Utc>,
    tx: mpsc::Sender<()>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SchedulerResult> + Send>> {
    Box::pin(async move {
        // Parsing checked that the schedule fires at all; one that runs out (a
        // year field in the past) simply stops ticking.
        let Some(at) = schedule.next_after(after) else {
            return Ok(());
        };
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        // The scheduler counts whole seconds (and truncates): round up, so a
        // tick never comes before its instant.
        let wait = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        let job =
            Job::new_one_shot_at_instant_async(Instant::now() + wait, move |_id, scheduler| {
                // Never waits: if the loop has not drained earlier ticks, this one is moot.
                let _ = tx.try_send(());
                // From the instant just fired, or from now if the process was
                // stalled past later firings: missed ticks are not replayed.
                let next = arm(scheduler, schedule.clone(), at.max(Utc::now()), tx.clone());
                Box::pin(async move {
                    if let Err(e) = next.await {
                        tracing::error!(error = %e, "cannot schedule the next pass");
                    }
                })
            })?;
        scheduler.add(job).await.map(|_| ())
    })
}

impl Ticker {
    async fn start(schedule: &CronSchedule, tx: mpsc::Sender<()>) -> Result<Ticker, DaemonError> {
        let err =
            |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler(e.to_string());
        let scheduler = JobScheduler::new().await.map_err(err)?;
        arm(scheduler.clone(), schedule.clone(), Utc::now(), tx.clone())
            .await
            .map_err(err)?;
        scheduler.start().await.map_err(err)?;
        Ok(Ticker { scheduler, tx })
    }

    /// Replaces the schedule: a new scheduler starts before the old one stops.
    async fn reschedule(&mut self, schedule: &CronSchedule) -> Result<(), DaemonError> {
        let new = Ticker::start(schedule, self.tx.clone()).await?;
        std::mem::replace(self, new).stop().await;
        Ok(())
    }

    async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::debug!(error = %e, "cron scheduler shutdown");
        }
    }
}

/// What the loop's heartbeat does, each at its own pace: the systemd watchdog
/// ping (withheld when ticks stop arriving), STATUS= while a pass runs, and
/// metrics upkeep.
struct Chores {
    watchdog_every: Option<Duration>,
    last_watchdog: Instant,
    last_status: Instant,
    last_upkeep: Instant,
}

impl Chores {
    fn new(watchdog_every: Option<Duration>) -> Chores {
        let now = Instant::now();
        Chores {
            watchdog_every,
            last_watchdog: now,
            last_status: now,
            last_upkeep: now,
        }
    }

    fn run(&mut self, daemon: &Daemon, running: Option<&Running>) {
        if let Some(every) = self.watchdog_every
            && self.last_watchdog.elapsed() >= every
        {
            if daemon.ticks_on_time() {
                daemon.notifier.watchdog();
                self.last_watchdog = Instant::now();
            } else {
                tracing::error!(
                    last_tick = %daemon.last_tick,
                    "schedule ticks stopped arriving; withholding the watchdog ping"
                );
            }
        }
        if running.is_some() && self.last_status.elapsed() >= STATUS_EVERY {
            daemon.notifier.status(&daemon.status_line(running));
            self.last_status = Instant::now();
        }
        if self.last_upkeep.elapsed() >= STATUS_EVERY {
            daemon.shared.metrics.run_upkeep();
            self.last_upkeep = Instant::now();
        }
    }
}

/// A pass in progress.
struct Running {
    handle: JoinHandle<(Result<RunReport, RunError>, f64)>,
    /// Cancelling stops its downloads; they remove their staging files.
    cancel: CancellationToken,
    started: Instant,
    /// Downloads (started, finished) in the process when the pass began.
    downloads_before: (u64, u64),
}

type PassResult = Result<(Result<RunReport, RunError>, f64), tokio::task::JoinError>;

async fn join(running: &mut Option<Running>) -> PassResult {
    match running {
        Some(r) => (&mut r.handle).await,
        None => std::future::pending().await,
    }
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    credentials: Vec<Credentials>,
    shared: Arc<Shared>,
    notifier: Notifier,
    archiver: Option<Arc<Archiver>>,
    /// A valid reloaded config waiting for the running pass to end.
    pending: Option<(Config, Vec<Credentials>)>,
    /// When the last schedule tick arrived (or the schedule was set), for the
    /// watchdog's "ticks keep coming" check.
    last_tick: DateTime<Utc>,
}

impl Daemon {
    /// Opens index and storage, retrying with backoff until they work. `None`
    /// when a stop signal came first.
    async fn open_with_backoff(&mut self, signals: &mut Signals) -> Option<Arc<Archiver>> {
        let mut delay = STARTUP_BACKOFF_INITIAL;
        loop {
            // The full integrity check runs once per daemon start, not per pass.
            let opened = match Archiver::open(self.config.clone(), self.credentials.clone()).await {
                Ok(archiver) => archiver.check_index().await.map(|()| archiver),
                Err(e) => Err(e),
            };
            match opened {
                Ok(archiver) => {
                    let archiver = Arc::new(archiver);
                    self.shared.update(|s| {
                        s.archiver = Some(archiver.clone());
                        s.waiting = None;
                    });
                    self.archiver = Some(archiver.clone());
                    return Some(archiver);
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(error = %reason, retry_in = ?delay, "cannot open the archive yet; retrying");
                    self.notifier
                        .status(&format!("waiting to open the archive: {reason}"));
                    self.notifier
                        .extend_timeout(delay + Duration::from_secs(30));
                    self.shared.update(|s| s.waiting = Some(reason));
                }
            }
            let deadline = tokio::time::Instant::now() + delay;
            // The loop is healthy while it waits on purpose: keep the watchdog fed.
            let ping_every = self.notifier.watchdog_interval().unwrap_or(delay);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tokio::time::sleep(ping_every) => self.notifier.watchdog(),
                    sig = signals.recv() => match sig {
                        Sig::Stop(name) => {
                            tracing::info!(signal = name, "stopping during start-up");
                            return None;
                        }
                        Sig::Reload => {
                            if let Some((config, credentials)) = self.load_config() {
                                self.config = config;
                                self.credentials = credentials;
                                break;
                            }
                        }
                    },
                }
            }
            self.notifier.watchdog();
            delay = (delay * 2).min(STARTUP_BACKOFF_MAX);
        }
    }

    /// Loads and validates the config file and credentials; logs and counts a failure.
    fn load_config(&self) -> Option<(Config, Vec<Credentials>)> {
        let loaded = Config::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                crate::run::resolve_credentials(&c)
                    .map(|cr| (c, cr))
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok(ok) => Some(ok),
            Err(e) => {
                tracing::error!(
                    path = %self.config_path.display(), error = %e,
                    "config reload failed; keeping the previous config"
                );
                telemetry::record_reload(false);
                None
            }
        }
    }

    fn archiver(&self) -> Arc<Archiver> {
        self.archiver.clone().expect("opened before the loop")
    }

    /// At start: a pass now when the last ok one is older than one schedule
    /// period (the machine was off, or the daemon stopped, across a firing).
    async fn catch_up(&mut self) -> Option<Running> {
        let last_ok = self.refresh_from_index().await;
        let last_ok_start = last_ok
            .as_ref()
            .and_then(|r| DateTime::from_timestamp_millis(r.started_at_ms));
        if !self.config.schedule.cron.missed(last_ok_start, Utc::now()) {
            return None;
        }
        tracing::info!(
            last_ok = ?last_ok_start,
            "the last ok pass is older than one schedule period; running a pass now"
        );
        Some(self.start_pass("start-up catch-up"))
    }

    /// The scheduling loop, until a stop signal; then the orderly shutdown.
    async fn serve(
        &mut self,
        archiver: Arc<Archiver>,
        signals: &mut Signals,
    ) -> Result<u8, DaemonError> {
        let (tx, mut ticks) = mpsc::channel(8);
        let mut ticker = Ticker::start(&self.config.schedule.cron, tx).await?;
        self.mark_tick();
        let mut running = self.catch_up().await;
        drop(archiver);
        self.notifier.ready(&self.status_line(running.as_ref()));
        tracing::info!(schedule = %self.config.schedule.cron, "malog daemon ready");

        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut chores = Chores::new(self.notifier.watchdog_interval());
        loop {
            tokio::select! {
                sig = signals.recv() => match sig {
                    Sig::Stop(name) => {
                        tracing::info!(signal = name, "stopping");
                        break;
                    }
                    Sig::Reload => self.reload(&mut ticker, running.as_ref()).await,
                },
                done = join(&mut running) => {
                    let r = running.take().expect("joined a running pass");
                    self.finish_pass(done, r.started).await;
                    if self.pending.is_some() {
                        self.apply_pending(&mut ticker).await;
                    }
                    self.notifier.status(&self.status_line(None));
                },
                Some(()) = ticks.recv() => {
                    self.mark_tick();
                    if running.is_some() {
                        tracing::warn!("schedule tick dropped: the previous pass is still running");
                        telemetry::record_tick_dropped();
                    } else {
                        running = Some(self.start_pass("schedule"));
                    }
                },
                _ = heartbeat.tick() => chores.run(self, running.as_ref()),
            }
        }
        self.notifier.stopping("stopping");
        ticker.stop().await;
        Ok(self.stop_pass(running, signals).await)
    }

    /// Waits for a running pass up to the grace period, then cancels it.
    async fn stop_pass(&mut self, running: Option<Running>, signals: &mut Signals) -> u8 {
        let Some(mut r) = running else {
            return exit::OK;
        };
        let grace = self.config.daemon.shutdown_grace;
        tracing::info!(grace = ?grace, "waiting for the running pass before cancelling it");
        self.notifier.stopping(&format!(
            "stopping: letting the running pass finish for up to {}",
            human_duration(grace.as_secs_f64())
        ));
        tokio::select! {
            done = &mut r.handle => {
                self.finish_pass(done, r.started).await;
                return exit::OK;
            }
            _ = tokio::time::sleep(grace) => {
                tracing::warn!("shutdown grace period over: cancelling the running downloads");
            }
            Sig::Stop(name) = signals.recv() => {
                tracing::warn!(signal = name, "second stop signal: cancelling the running downloads");
            }
        }
        r.cancel.cancel();
        self.notifier.stopping("stopping: cancelling downloads");
        match tokio::time::timeout(CANCEL_WAIT, &mut r.handle).await {
            Ok(done) => {
                self.finish_pass(done, r.started).await;
                exit::OK
            }
            Err(_) => {
                tracing::error!(
                    wait = ?CANCEL_WAIT,
                    "the cancelled pass did not return; exiting anyway (the next start sweeps its staging files)"
                );
                exit::RUN_ERROR
            }
        }
    }

    fn mark_tick(&mut self) {
        self.last_tick = Utc::now();
    }

    /// Whether schedule ticks arrive when due: the firing after the last tick is
    /// not overdue by more than [`TICK_SLACK`].
    fn ticks_on_time(&self) -> bool {
        let Some(due) = self.config.schedule.cron.next_after(self.last_tick) else {
            return true;
        };
        let overdue = (Utc::now() - due).to_std().unwrap_or(Duration::ZERO);
        overdue <= TICK_SLACK
    }

    fn start_pass(&self, trigger: &'static str) -> Running {
        let archiver = self.archiver();
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tracing::info!(trigger, "pass starting");
        telemetry::set_pass_running(true);
        self.shared.update(|s| s.pass_running = true);
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let result = archiver.run_once(&RunScope::default(), token).await;
            (result, started.elapsed().as_secs_f64())
        });
        let running = Running {
            handle,
            cancel,
            started: Instant::now(),
            downloads_before: telemetry::download_counts(),
        };
        self.notifier.status(&self.status_line(Some(&running)));
        running
    }

    /// Logs and counts a finished pass, then refreshes what the index says.
    async fn finish_pass(&mut self, done: PassResult, started: Instant) {
        telemetry::set_pass_running(false);
        self.shared.update(|s| s.pass_running = false);
        match done {
            Ok((Ok(report), seconds)) => {
                let t = &report.totals;
                tracing::info!(
                    outcome = report.outcome(),
                    run_id = report.run_id,
                    jobs = t.jobs,
                    tasks = t.tasks,
                    fetched = t.fetched,
                    unchanged = t.unchanged,
                    sealed = t.sealed,
                    not_ready = t.not_ready,
                    failed = t.failed,
                    lost = t.lost,
                    bytes = t.bytes,
                    duration = %human_duration(seconds),
                    "pass finished"
                );
                telemetry::record_pass(report.outcome(), seconds);
                for (source, totals) in &report.sources {
                    telemetry::record_pass_tasks(source, &totals.by_outcome());
                }
                telemetry::record_archived_bytes(t.bytes);
                telemetry::record_deltas(t.grown, t.confirmed, t.replaced);
            }
            Ok((
                Err(
                    e @ (RunError::Index(crate::index::IndexError::Busy { .. })
                    | RunError::Store(crate::storage::StoreError::Busy { .. })),
                ),
                _,
            )) => {
                // A manual `backfill` holds the writer lock: not a failure of ours.
                tracing::warn!(error = %e, "pass skipped: another malog process is writing the index; trying again at the next tick");
                telemetry::record_pass_skipped();
            }
            Ok((Err(e), seconds)) => {
                tracing::error!(error = %e, "pass failed; trying again at the next tick");
                telemetry::record_pass("failed", seconds);
            }
            Err(e) => {
                tracing::error!(error = %e, "pass aborted; trying again at the next tick");
                telemetry::record_pass("failed", started.elapsed().as_secs_f64());
            }
        }
        self.refresh_from_index().await;
    }

    /// Reads the index (own read-only connection): last ok pass, task states and
    /// retention risks into metrics, risks into warnings. Returns the last ok pass.
    async fn refresh_from_index(&self) -> Option<RunSummary> {
        let path = self.config.index_path.clone();
        let now_ms = Utc::now().timestamp_millis();
        let warn_after = self.config.alerts.retention_warn_after;
        let cutoff_ms = now_ms - i64::try_from(warn_after.as_millis()).unwrap_or(i64::MAX);
        let read = tokio::task::spawn_blocking(move || {
            let index = Index::open_read_only(&path)?;
            Ok::<_, crate::index::IndexError>((
                index.last_run_with_outcome("ok")?,
                index.state_counts()?,
                index.retention_risks(cutoff_ms)?,
            ))
        })
        .await;
        let (last_ok, counts, risks) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the index for status metrics");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "index read panicked");
                return None;
            }
        };
        if let Some(ended) = last_ok.as_ref().and_then(|r| r.ended_at_ms) {
            telemetry::set_last_success(ended);
        }
        // Every configured source, and any other the index still holds.
        let mut sources: Vec<&str> = self.config.sources.iter().map(|s| s.name()).collect();
        sources.extend(counts.iter().map(|c| c.source.as_str()));
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            let of_source: Vec<(&str, u64)> = counts
                .iter()
                .filter(|c| c.source == source)
                .map(|c| (c.state.as_str(), c.tasks))
                .collect();
            telemetry::set_index_tasks(source, &of_source);
            let at_risk = risks.iter().filter(|r| r.source == source).count();
            telemetry::set_retention_risk(source, at_risk);
        }
        let retention_ms = crate::source::MODELARTS_LOG_RETENTION.as_millis() as i64;
        for risk in risks.iter().take(RISKS_LOGGED) {
            tracing::warn!(
                source = %risk.source,
                job = %risk.job_id,
                job_name = %risk.job_name,
                task = %risk.task_id,
                state = %risk.state,
                job_ended = %crate::output::time_text(risk.job_ended_at_ms),
                deleted_around = %crate::output::time_text(risk.job_ended_at_ms + retention_ms),
                last_error = risk.last_error.as_deref().unwrap_or(""),
                "retention risk: ModelArts deletes this log about 30 days after the job ended and it is not archived"
            );
        }
        if risks.len() > RISKS_LOGGED {
            tracing::warn!(
                more = risks.len() - RISKS_LOGGED,
                total = risks.len(),
                "more tasks at retention risk; see `malog status`"
            );
        }
        last_ok
    }

    /// SIGHUP: validate now; apply now when idle, else after the running pass.
    async fn reload(&mut self, ticker: &mut Ticker, running: Option<&Running>) {
        tracing::info!(path = %self.config_path.display(), "SIGHUP: reloading the config");
        self.notifier.reloading();
        if let Some((config, credentials)) = self.load_config() {
            if config.daemon.listen != self.config.daemon.listen {
                tracing::warn!(
                    old = %self.config.daemon.listen, new = %config.daemon.listen,
                    "daemon.listen changes take effect at the next restart"
                );
            }
            self.pending = Some((config, credentials));
            if running.is_some() {
                tracing::info!("config is valid; it applies when the running pass ends");
            } else {
                self.apply_pending(ticker).await;
            }
        }
        self.notifier.ready(&self.status_line(running));
    }

    /// Opens the archive with the pending config; keeps the old one on failure.
    async fn apply_pending(&mut self, ticker: &mut Ticker) {
        let Some((config, credentials)) = self.pending.take() else {
            return;
        };
        let archiver = match Archiver::open(config.clone(), credentials.clone()).await {
            Ok(a) => {
                telemetry::describe_sources(config.sources.iter().map(|s| s.name()));
                Arc::new(a)
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed: cannot open the archive it names; keeping the previous config");
                telemetry::record_reload(false);
                return;
            }
        };
        if config.schedule.cron != self.config.schedule.cron {
            if let Err(e) = ticker.reschedule(&config.schedule.cron).await {
                tracing::error!(error = %e, "config reload failed: cannot change the schedule; keeping the previous config");
                telemetry::record_reload(false);
                return;
            }
            self.mark_tick();
        }
        self.shared.update(|s| s.archiver = Some(archiver.clone()));
        self.archiver = Some(archiver);
        self.config = config;
        self.credentials = credentials;
        telemetry::record_reload(true);
        tracing::info!(schedule = %self.config.schedule.cron, "config reloaded");
    }

    /// The one-line STATUS= for systemd.
    fn status_line(&self, running: Option<&Running>) -> String {
        if let Some(r) = running {
            let (started, done) = telemetry::download_counts();
            let finished = done.saturating_sub(r.downloads_before.1);
            let in_flight = started.saturating_sub(done);
            return format!(
                "pass running for {}: {finished} downloads finished, {in_flight} in flight",
                human_duration(r.started.elapsed().as_secs_f64().round())
            );
        }
        match self.config.schedule.cron.next_after(Utc::now()) {
            Some(next) => format!(
                "idle; next pass at {}",
                next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "idle; the schedule does not fire again".to_owned(),
        }
    }
}
