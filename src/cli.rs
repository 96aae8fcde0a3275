//! Command-line interface: one clap struct per subcommand (their doc comments are
//! the help text) and the code that runs each. `anyhow` lives only here.

use crate::config::Config;
use crate::index::StoredCopy;
use crate::index::{Index, IndexError, TaskRecord};
use crate::model::JobId;
use crate::run::{Archiver, RunError, RunReport, RunScope, human_duration};
use crate::storage::{ArchiveKey, Compression, Storage, StoreError};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

mod read;

/// Process exit codes (also in the README).
pub mod exit {
    /// Every selected task archived, unchanged, sealed or not ready yet; verify found no problem.
    pub const OK: u8 = 0;
    /// Some tasks (or jobs) failed or are lost; verify found mismatches; cat found nothing.
    pub const PARTIAL: u8 = 1;
    /// Usage or configuration error (bad flag, bad config key or value, missing credentials).
    pub const USAGE: u8 = 2;
    /// The run itself could not proceed: index or storage unusable.
    pub const RUN_ERROR: u8 = 3;
    /// Another malog process is writing the same index right now.
    pub const BUSY: u8 = 4;
}

/// Archives the logs of Huawei Cloud ModelArts training jobs.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Args {
    /// Config file.
    #[arg(
        short,
        long,
        global = true,
        env = "MALOG_CONFIG",
        default_value = "/etc/malog/malog.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One archive pass now, then print a summary.
    Backfill {
        /// Only these jobs (instead of the configured selection). Repeatable.
        #[arg(long = "job", value_name = "ID")]
        jobs: Vec<String>,
        /// Print the plan without requesting links or downloading.
        #[arg(long)]
        dry_run: bool,
        /// Summary format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Rows of the archive index: one per task, newest job first.
    Query {
        #[command(flatten)]
        selection: read::SelectionArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One row per job: id, name, phase, created, duration, user, flavor ×
    /// nodes, tasks archived/total, bytes, last fetched. JSON carries the whole
    /// (redacted) record.
    Jobs {
        #[command(flatten)]
        selection: read::SelectionArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One job in full: its record, events, metrics and tasks.
    Show {
        /// A job id, or a name only one job has.
        job: String,
        #[arg(long, value_enum, default_value_t = read::ShowFormat::Table)]
        format: read::ShowFormat,
    },
    /// Search the archived logs (local or S3, compressed or not). Exit 0 when
    /// something matched, 1 when nothing did, 2 on error, like grep.
    Grep(read::GrepArgs),
    /// Write the selected logs as plain files DIR/<job-name>--<job-id>/<task>.log,
    /// with each job's job.json, events.json and metrics.json, and one
    /// SHA256SUMS that `sha256sum -c` accepts. Reruns skip what is already
    /// exported; a different existing file is never overwritten.
    Export {
        #[command(flatten)]
        selection: read::SelectionArgs,
        /// The export folder (created if missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Re-read every archived object and compare size and sha256 with the index:
    /// of the stored bytes and, decompressing them, of the original log.
    Verify {
        #[command(flatten)]
        selection: read::SelectionArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Cheap check: compare only each object's size (and, on S3, its sha256
        /// metadata) with the index, without reading its content. Cannot detect
        /// corruption that keeps the size.
        #[arg(long)]
        metadata_only: bool,
    },
    /// Write one archived log to stdout.
    Cat { job_id: String, task_id: String },
    /// Run as a service: a pass at each `[schedule] cron` tick, /metrics and
    /// /healthz on `[daemon] listen`, until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run,
    /// Last passes, next pass, tasks by state, failing tasks and retention risks.
    Status {
        #[arg(long, value_enum, default_value_t = crate::status::StatusFormat::Table)]
        format: crate::status::StatusFormat,
    },
    /// Archive the built-in simulator's jobs into a folder and show the result.
    Demo {
        /// Where the demo's config, index and archive go.
        #[arg(long, default_value = "malog-demo")]
        dir: PathBuf,
    },
    /// Serve the ModelArts + OBS simulator until interrupted (for trying malog out and
    /// benchmarks), with its control API under /sim/ (stats, reset-stats, touch).
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8780")]
        listen: String,
        /// Generate this many Completed jobs instead of the demo set.
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long, default_value_t = 1)]
        tasks: usize,
        /// Log size in bytes for generated jobs.
        #[arg(long, default_value_t = 65536)]
        size: u64,
        /// Make the last N generated jobs Running (their logs can still grow).
        #[arg(long, default_value_t = 0)]
        running: usize,
        /// Write every log to DIR/<job id>/<file> before serving (for a static file server).
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Hand out links to URL/<job id>/<file> (where --export's files are served).
        #[arg(long, value_name = "URL")]
        links_to: Option<String>,
    },
}

pub fn init_logging(args: &Args) {
    use tracing_subscriber::EnvFilter;
    let default = match args.verbose {
        // A service's pass summaries belong in its journal.
        0 if matches!(args.command, Command::Run) => "malog=info,warn",
        0 => "warn",
        1 => "malog=info,warn",
        _ => "malog=debug,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the command and returns the process exit code.
pub async fn run(args: Args) -> u8 {
    match dispatch(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let busy = matches!(
                e.downcast_ref::<RunError>(),
                Some(RunError::Index(IndexError::Busy { .. }))
            ) || matches!(
                e.downcast_ref::<IndexError>(),
                Some(IndexError::Busy { .. })
            );
            let store_usage = matches!(e.downcast_ref::<RunError>(), Some(RunError::Store(s)) if s.is_usage())
                || e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_usage);
            match e.downcast_ref::<Fatal>() {
                Some(Fatal::Usage(_)) => exit::USAGE,
                _ if store_usage => exit::USAGE,
                _ if busy => exit::BUSY,
                _ => exit::RUN_ERROR,
            }
        }
    }
}

/// Errors that decide the exit code.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("{0}")]
    Usage(String),
}

pub(crate) fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Fatal::Usage(e.to_string()).into()
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(usage)
}

async fn dispatch(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Command::Backfill {
            jobs,
            dry_run,
            format,
        } => {
            let config = load_config(&args.config)?;
            let credentials =
                crate::source::Credentials::resolve(&config.modelarts).map_err(usage)?;
            let archiver = Archiver::open(config, credentials).await?;
            let scope = RunScope {
                jobs: jobs.into_iter().map(JobId).collect(),
                dry_run,
                progress: true,
            };
            let report = archiver.run_once(&scope, shutdown_token()).await?;
            print_report(&report, format)?;
            Ok(report_exit(&report))
        }
        Command::Query { selection, format } => {
            let config = load_config(&args.config)?;
            let selection = selection.parse()?;
            let index = Index::open_read_only(&config.index_path)?;
            let rows = crate::read::jobs::list_tasks(&index, &selection)?;
            print_rows(&rows, format)?;
            Ok(exit::OK)
        }
        Command::Jobs { selection, format } => {
            read::jobs(&load_config(&args.config)?, selection.parse()?, format)
        }
        Command::Show { job, format } => read::show(&load_config(&args.config)?, &job, format),
        Command::Grep(grep) => read::grep(&load_config(&args.config)?, grep).await,
        Command::Export { selection, to } => {
            read::export(&load_config(&args.config)?, selection.parse()?, &to).await
        }
        Command::Verify {
            selection,
            format,
            metadata_only,
        } => {
            let config = load_config(&args.config)?;
            verify(&config, &selection.parse()?, format, metadata_only).await
        }
        Command::Cat { job_id, task_id } => {
            let config = load_config(&args.config)?;
            cat(&config, &job_id, &task_id).await
        }
        Command::Run => crate::daemon::run(&args.config)
            .await
            .map_err(|e| if e.is_usage() { usage(e) } else { e.into() }),
        Command::Status { format } => {
            let config = load_config(&args.config)?;
            let report = crate::status::collect(&config, chrono::Utc::now())?;
            crate::status::print(&report, format)?;
            Ok(exit::OK)
        }
        Command::Demo { dir } => crate::demo::run(&dir).await,
        Command::Simulate {
            listen,
            jobs,
            tasks,
            size,
            running,
            export,
            links_to,
        } => {
            let mut config = match jobs {
                Some(n) => crate::sim::SimConfig::generated(n, tasks, size).with_running(running),
                None => crate::sim::SimConfig::demo(),
            };
            config.links_to = links_to;
            simulate(&listen, config, export).await
        }
    }
}

/// Cancelled on the first Ctrl-C / SIGTERM: downloads stop, staging files go away.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term_recv = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term_recv => {}
        }
        eprintln!("interrupted: stopping downloads");
        child.cancel();
    });
    token
}

pub fn report_exit(report: &RunReport) -> u8 {
    if report.outcome() == "ok" {
        exit::OK
    } else {
        exit::PARTIAL
    }
}

pub fn print_report(report: &RunReport, format: Format) -> anyhow::Result<()> {
    if let Some(preview) = &report.preview {
        return print_plan(preview, report, format);
    }
    if format == Format::Json {
        #[derive(Serialize)]
        struct Out<'a> {
            outcome: &'a str,
            #[serde(flatten)]
            report: &'a RunReport,
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Out {
                outcome: report.outcome(),
                report
            })?
        );
        return Ok(());
    }
    let t = &report.totals;
    println!(
        "{} jobs, {} tasks: {} fetched, {} unchanged, {} sealed, {} not ready, {} failed, {} lost; {} in {}",
        t.jobs,
        t.tasks,
        t.fetched,
        t.unchanged,
        t.sealed,
        t.not_ready,
        t.failed,
        t.lost,
        indicatif::HumanBytes(t.bytes),
        human_duration(report.seconds)
    );
    for f in &report.failures {
        let task = f
            .task_id
            .as_deref()
            .map(|t| format!(" task {t}"))
            .unwrap_or_default();
        let job = if f.job_id.is_empty() {
            String::new()
        } else {
            format!("job {}{task}: ", f.job_id)
        };
        println!("  {}: {job}{}", f.state, f.error);
    }
    Ok(())
}

/// Streams JSON to stdout: a plan or a query result can have a million rows, and
/// building the whole text first would double the memory they take.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn print_plan(
    preview: &crate::plan::PlanPreview,
    report: &RunReport,
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            // One array, written job by job as it is planned.
            use serde::ser::{SerializeSeq, Serializer};
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut json = serde_json::Serializer::pretty(&mut out);
            let mut seq = json.serialize_seq(None)?;
            for plan in preview.by_job() {
                for line in plan.lines() {
                    seq.serialize_element(&line)?;
                }
            }
            seq.end()?;
            writeln!(out)?;
            out.flush()?;
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(std::io::stdout());
            for plan in preview.by_job() {
                for line in plan.lines() {
                    writer.serialize(line)?;
                }
            }
            writer.flush()?;
        }
        Format::Table => {
            let mut table = new_table(&["job_id", "job_name", "phase", "task_id", "action", "key"]);
            for plan in preview.by_job() {
                for l in plan.lines() {
                    table.add_row(vec![
                        l.job_id,
                        l.job_name,
                        l.job_phase,
                        l.task_id,
                        l.action,
                        l.key,
                    ]);
                }
            }
            println!("{table}");
            println!(
                "dry run: {} jobs, {} tasks to fetch or re-check, {} sealed, {} jobs without tasks yet",
                report.totals.jobs, preview.items, report.totals.sealed, preview.jobs_without_tasks
            );
        }
    }
    Ok(())
}

pub(crate) fn new_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
}

pub(crate) fn write_csv<T: Serialize>(rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

pub fn print_rows(rows: &[TaskRecord], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&rows)?,
        Format::Csv => write_csv(rows)?,
        Format::Table => {
            let mut table = new_table(&[
                "job_id",
                "job_name",
                "task_id",
                "state",
                "size",
                "sha256",
                "fetched_at",
                "last_error",
            ]);
            for r in rows {
                table.add_row(vec![
                    r.job_id.clone(),
                    r.job_name.clone(),
                    r.task_id.clone(),
                    r.state.clone(),
                    r.size.map(|s| s.to_string()).unwrap_or_default(),
                    r.sha256
                        .as_deref()
                        .map(|s| format!("{}…", &s[..s.len().min(12)]))
                        .unwrap_or_default(),
                    r.fetched_at.clone().unwrap_or_default(),
                    r.last_error.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(())
}

/// One problem found by `verify`.
#[derive(Debug, Serialize)]
struct Mismatch {
    job_id: String,
    task_id: String,
    location: String,
    problem: String,
}

async fn verify(
    config: &Config,
    selection: &crate::read::Selection,
    format: Format,
    metadata_only: bool,
) -> anyhow::Result<u8> {
    let index = Index::open_read_only(&config.index_path)?;
    index.check_integrity()?;
    let rows: Vec<StoredCopy> = crate::read::jobs::list_copies(&index, selection)?
        .into_iter()
        .map(|c| c.copy)
        .collect();
    drop(index);
    let storage = Storage::from_config(&config.storage).await?;
    let checked = rows.len();
    let mut problems: Vec<Mismatch> = futures::stream::iter(rows)
        .map(|row| {
            let storage = storage.clone();
            async move {
                verify_one(&storage, &row, metadata_only)
                    .await
                    .err()
                    .map(|problem| Mismatch {
                        job_id: row.job_id.clone(),
                        task_id: row.task_id.clone(),
                        location: row.location.clone().unwrap_or_default(),
                        problem,
                    })
            }
        })
        .buffer_unordered(4)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    problems.sort_by(|a, b| (&a.job_id, &a.task_id).cmp(&(&b.job_id, &b.task_id)));
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                checked: usize,
                mismatches: &'a [Mismatch],
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&Out {
                    checked,
                    mismatches: &problems
                })?
            );
        }
        Format::Csv => write_csv(&problems)?,
        Format::Table => {
            for p in &problems {
                println!(
                    "MISMATCH job {} task {} ({}): {}",
                    p.job_id, p.task_id, p.location, p.problem
                );
            }
            let how = if metadata_only {
                " by size and metadata only (contents not read)"
            } else {
                ""
            };
            println!(
                "verified {checked} archived logs{how}: {} mismatches",
                problems.len()
            );
        }
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// Reads one object back and compares it with its row: the stored bytes with
/// the stored size and sha256, the decoded log with the log's. With
/// `metadata_only`, compares the stored size and (S3) the sha256 metadata instead.
async fn verify_one(
    storage: &Storage,
    row: &StoredCopy,
    metadata_only: bool,
) -> Result<(), String> {
    let key = ArchiveKey::from_stored(&row.storage_key)
        .ok_or("the index holds an invalid storage key")?;
    let compression = Compression::parse(&row.compression).ok_or_else(|| {
        format!(
            "the index names an unknown compression {:?}",
            row.compression
        )
    })?;
    if metadata_only {
        let head = storage.head(&key).await.map_err(|e| e.to_string())?;
        if let Some(want) = row.stored_size
            && head.stored_size != want
        {
            return Err(format!(
                "stored size {} bytes, index says {want}",
                head.stored_size
            ));
        }
        if let Some(meta) = head.log_sha256
            && meta != row.sha256
        {
            return Err(format!("sha256 metadata {meta}, index says {}", row.sha256));
        }
        return Ok(());
    }
    let got = storage
        .digest(&key, compression)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(want) = row.stored_size
        && got.stored_size != want
    {
        return Err(format!(
            "stored size {} bytes, index says {want}",
            got.stored_size
        ));
    }
    if let Some(want) = &row.stored_sha256
        && &got.stored_sha256 != want
    {
        return Err(format!(
            "stored sha256 {}, index says {want}",
            got.stored_sha256
        ));
    }
    if got.log_size != row.size {
        return Err(format!(
            "size {} bytes, index says {}",
            got.log_size, row.size
        ));
    }
    if got.log_sha256 != row.sha256 {
        return Err(format!(
            "sha256 {}, index says {}",
            got.log_sha256, row.sha256
        ));
    }
    Ok(())
}

async fn cat(config: &Config, job_id: &str, task_id: &str) -> anyhow::Result<u8> {
    let index = Index::open_read_only(&config.index_path)?;
    let Some(copy) = index.stored_copy(job_id, task_id)? else {
        eprintln!("error: no archived log for job {job_id} task {task_id}");
        return Ok(exit::PARTIAL);
    };
    let key = ArchiveKey::from_stored(&copy.storage_key)
        .ok_or_else(|| anyhow::anyhow!("the index holds an invalid storage key"))?;
    let compression = Compression::parse(&copy.compression).ok_or_else(|| {
        anyhow::anyhow!(
            "the index names an unknown compression {:?}",
            copy.compression
        )
    })?;
    let storage = Storage::from_config(&config.storage).await?;
    let mut reader = storage.open_log(&key, compression).await?;
    let mut stdout = tokio::io::stdout();
    match tokio::io::copy(&mut reader, &mut stdout).await {
        Ok(_) => {}
        // A closed pipe (`malog cat … | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::OK),
        Err(e) => return Err(e.into()),
    }
    tokio::io::AsyncWriteExt::flush(&mut stdout).await.ok();
    Ok(exit::OK)
}

async fn simulate(
    listen: &str,
    config: crate::sim::SimConfig,
    export: Option<PathBuf>,
) -> anyhow::Result<u8> {
    // Before listening: a client that finds the port open finds the files too.
    if let Some(dir) = export {
        let (exported, target) = (config.clone(), dir.clone());
        let bytes = tokio::task::spawn_blocking(move || crate::sim::export(&exported, &target))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot export the logs to {}: {e}", dir.display()))?;
        println!("exported {bytes} bytes of logs to {}", dir.display());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let sim = crate::sim::Simulator::start_with_control(listener, config.clone()).await?;
    println!("simulator listening on {}", sim.endpoint());
    println!(
        "  [modelarts] endpoint = \"{}\"  project_id = \"{}\"",
        sim.endpoint(),
        config.project_id
    );
    println!(
        "  HUAWEICLOUD_SDK_AK={}  HUAWEICLOUD_SDK_SK={}  (simulator keys, not real ones)",
        config.access_key, config.secret_key
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(exit::OK)
}
