//! Command-line interface: one clap struct per subcommand (their doc comments are
//! the help text) and the code that runs each. `anyhow` lives only here.

use crate::config::Config;
use crate::index::{Index, IndexError};
use crate::model::JobId;
use crate::output::{Format, exit, print_report, report_exit};
use crate::run::{Archiver, RunError, RunScope};
use crate::storage::{ArchiveKey, Storage, StoreError};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

mod index;
mod read;

/// Archives the logs of Huawei Cloud ModelArts training jobs.
#[derive(Debug, Parser)]
#[command(version = crate::VERSION, about, propagate_version = true)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One archive pass now, then print a summary.
    Backfill {
        /// Only this configured source (`[sources.<name>]`). Repeatable.
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Only these jobs (instead of the configured selection; with several
        /// sources, name one with --source). Repeatable.
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
        /// List the kept versions of the selected tasks' logs instead: copies
        /// malog kept because their log was later rewritten or truncated.
        #[arg(long)]
        versions: bool,
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
    /// Re-read every archived object (kept versions included) and compare size
    /// and sha256 with the index: of the stored bytes and, decompressing them,
    /// of the original log.
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
    /// Write one archived log to stdout (decompressed).
    // `--version N` picks a kept version here, not malog's own version.
    #[command(disable_version_flag = true)]
    Cat {
        job_id: String,
        task_id: String,
        /// A kept version of the log instead of the current copy (1 = the
        /// oldest; `query --versions` lists them).
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Maintain the index: `rebuild` it from storage, `backup` it while malog runs.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Run as a service: a pass at each `[schedule] cron` tick, /metrics and
    /// /healthz on `[daemon] listen`, until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run,
    /// Serve the archive's web page (jobs, logs, search) on `[web] listen`,
    /// read-only, until SIGTERM or SIGINT. Needs only the index and the storage.
    Web {
        /// Listen here instead of `[web] listen` (e.g. 127.0.0.1:0 for any free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Last passes, next pass, tasks by state, failing tasks and retention risks.
    Status {
        #[arg(long, value_enum, default_value_t = crate::status::StatusFormat::Table)]
        format: crate::status::StatusFormat,
    },
    /// Check the config, secrets, clock, API access, storage and index, and say
    /// what to fix. Exit 0 when all pass, 1 when something fails, 2 when the
    /// config cannot be loaded. Never writes the index.
    Doctor {
        #[arg(long, value_enum, default_value_t = crate::status::StatusFormat::Table)]
        format: crate::status::StatusFormat,
    },
    /// Print a shell completion script (e.g. to /usr/share/bash-completion/completions/malog).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (malog.1 and one per command) into a folder.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
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
        0 if matches!(args.command, Command::Run | Command::Web { .. }) => "malog=info,warn",
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
            ) || matches!(
                e.downcast_ref::<RunError>(),
                Some(RunError::Store(StoreError::Busy { .. }))
            );
            let store_usage = matches!(e.downcast_ref::<RunError>(), Some(RunError::Store(s)) if s.is_usage())
                || e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_usage)
                // An unknown --source, or --job without the source it belongs to.
                || matches!(e.downcast_ref::<RunError>(), Some(RunError::Sources(_)));
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

/// Runs the command. Longer than 80 lines for a reason: one short arm per
/// command (the work is in each command's own function or layer).
async fn dispatch(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Command::Backfill {
            sources,
            jobs,
            dry_run,
            format,
        } => {
            let scope = RunScope {
                sources,
                jobs: jobs.into_iter().map(JobId).collect(),
                dry_run,
                progress: true,
            };
            backfill(load_config(&args.config)?, &scope, format).await
        }
        Command::Query {
            selection,
            format,
            versions: true,
        } => read::versions(&load_config(&args.config)?, selection.parse()?, format),
        Command::Query {
            selection, format, ..
        } => read::query(&load_config(&args.config)?, selection.parse()?, format),
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
        Command::Cat {
            job_id,
            task_id,
            version,
        } => {
            let config = load_config(&args.config)?;
            cat(&config, &job_id, &task_id, version).await
        }
        Command::Index(command) => index::run(&args.config, command).await,
        Command::Run => crate::daemon::run(&args.config)
            .await
            .map_err(|e| if e.is_usage() { usage(e) } else { e.into() }),
        Command::Web { listen } => web(load_config(&args.config)?, listen).await,
        Command::Status { format } => {
            let config = load_config(&args.config)?;
            let report = crate::status::collect(&config, chrono::Utc::now())?;
            crate::status::print(&report, format)?;
            Ok(exit::OK)
        }
        Command::Doctor { format } => {
            let report = crate::doctor::run(&args.config).await;
            crate::doctor::print(&report, format == crate::status::StatusFormat::Json)?;
            Ok(report.exit_code())
        }
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => {
            crate::manpages::write_all(&dir, <Args as clap::CommandFactory>::command())
                .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display()))?;
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

/// One pass now, its report printed.
async fn backfill(config: Config, scope: &RunScope, format: Format) -> anyhow::Result<u8> {
    let credentials = crate::run::resolve_credentials(&config).map_err(usage)?;
    let archiver = Archiver::open(config, credentials).await?;
    let report = archiver
        .run_once(
            scope,
            crate::shutdown::cancel_on_stop("interrupted: stopping downloads"),
        )
        .await?;
    print_report(&report, format)?;
    Ok(report_exit(&report))
}

/// The web page on its own (`[web] listen`, or `--listen`).
async fn web(mut config: Config, listen: Option<std::net::SocketAddr>) -> anyhow::Result<u8> {
    if let Some(listen) = listen {
        config.web.listen = listen;
    }
    crate::web::run(&config)
        .await
        .map(|()| exit::OK)
        .map_err(|e| if e.is_usage() { usage(e) } else { e.into() })
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    use clap::CommandFactory;
    use std::io::Write;
    // Generated into memory first: the generator panics on a write error,
    // and a closed pipe (`malog completions bash | head`) is not an error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "malog", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(exit::OK),
    }
}

async fn verify(
    config: &Config,
    selection: &crate::read::Selection,
    format: Format,
    metadata_only: bool,
) -> anyhow::Result<u8> {
    let index = Index::open_read_only(&config.index_path)?;
    index.check_integrity()?;
    let storage = Storage::from_config(&config.storage).await?;
    let report = crate::read::verify::verify(index, &storage, selection, metadata_only).await?;
    read::print_verify(&report, format, metadata_only)?;
    Ok(if report.mismatches.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

async fn cat(
    config: &Config,
    job_id: &str,
    task_id: &str,
    version: Option<u32>,
) -> anyhow::Result<u8> {
    let index = Index::open_read_only(&config.index_path)?;
    let found = match version {
        None => index.stored_copy(job_id, task_id)?,
        Some(n) => index
            .version(job_id, task_id, n)?
            .map(|v| crate::read::versions::as_stored_copy(&v)),
    };
    let Some(copy) = found else {
        match version {
            None => eprintln!("error: no archived log for job {job_id} task {task_id}"),
            Some(n) => eprintln!(
                "error: no version {n} of the log of job {job_id} task {task_id} (see `malog query --versions`)"
            ),
        }
        return Ok(exit::PARTIAL);
    };
    let key = ArchiveKey::from_stored(&copy.storage_key)
        .ok_or_else(|| anyhow::anyhow!("the index holds an invalid storage key"))?;
    let compression = copy.compression;
    let storage = Storage::from_config(&config.storage).await?;
    let mut reader = storage
        .open_log(&key, compression, copy.stored_size)
        .await?;
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
    crate::shutdown::Signals::new()?.recv().await;
    sim.shutdown();
    Ok(exit::OK)
}
