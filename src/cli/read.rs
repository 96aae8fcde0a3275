//! The reading commands' flags and rendering: `jobs`, `show`, `grep`,
//! `export`, `query --versions`, and the selection flags `query` and `verify`
//! share with them. The rows, searches and files come from [`crate::read`];
//! nothing here queries the index or storage by itself.

use super::usage;
use crate::config::Config;
use crate::index::Index;
use crate::output::{Format, exit, new_table, print_json, print_rows, stream_rows, write_csv};
use crate::read::grep::GrepOptions;
use crate::read::verify::VerifyReport;
use crate::read::{Selection, SelectionFlags};
use crate::storage::Storage;
use clap::{Args, ValueEnum};
use indicatif::HumanBytes;
use std::io::IsTerminal;
use std::path::Path;

/// Which jobs and tasks: the same flags for every reading command.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Only jobs of this configured source (`[sources.<name>]`; `default` for
    /// a `[modelarts]` config). Repeatable.
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Only this job id. Repeatable.
    #[arg(long = "job", value_name = "ID")]
    jobs: Vec<String>,
    /// Only jobs whose name matches this regular expression (anywhere in the name).
    #[arg(long, value_name = "REGEX")]
    name: Option<String>,
    /// Only jobs in this phase (Running, Completed, Failed, …). Repeatable.
    #[arg(long = "phase", value_name = "PHASE")]
    phases: Vec<String>,
    /// Only jobs created at or after this: a duration before now ("7d"), a day
    /// ("2026-11-01", UTC) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only jobs created before this (same forms; a day includes that day).
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Only this task of each job (e.g. worker-0).
    #[arg(long, value_name = "TASK")]
    task: Option<String>,
    /// Only tasks in this state: pending, archived, failed, not_ready or lost.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only the newest N matching jobs.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

impl SelectionArgs {
    pub fn parse(self) -> anyhow::Result<Selection> {
        let flags = SelectionFlags {
            sources: self.sources,
            jobs: self.jobs,
            name: self.name,
            phases: self.phases,
            since: self.since,
            until: self.until,
            task: self.task,
            state: self.state,
            limit: self.limit,
        };
        Selection::parse(flags, chrono::Utc::now().timestamp_millis()).map_err(usage)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrepFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct GrepArgs {
    /// A regular expression (Rust/ripgrep syntax), or a literal string with -F.
    pattern: String,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Ignore case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// The pattern is a literal string.
    #[arg(short = 'F', long)]
    fixed_strings: bool,
    /// Match whole words only.
    #[arg(short = 'w', long)]
    word_regexp: bool,
    /// Lines of context before and after each match.
    #[arg(short = 'C', long, value_name = "N")]
    context: Option<usize>,
    /// Lines of context after each match.
    #[arg(short = 'A', long, value_name = "N")]
    after_context: Option<usize>,
    /// Lines of context before each match.
    #[arg(short = 'B', long, value_name = "N")]
    before_context: Option<usize>,
    /// Print the number of matching lines of each log (`-c` is malog's --config).
    #[arg(long)]
    count: bool,
    /// Print only the logs that match, as JOB_NAME/TASK.
    #[arg(short = 'l', long)]
    files_with_matches: bool,
    /// Stop each log's search after N matching lines.
    #[arg(short = 'm', long, value_name = "N")]
    max_count: Option<u64>,
    /// text: JOB_NAME/TASK:LINE:text; json: one object per line.
    #[arg(long, value_enum, default_value_t = GrepFormat::Text)]
    format: GrepFormat,
}

fn open_index(config: &Config) -> anyhow::Result<Index> {
    Ok(Index::open_read_only(&config.index_path)?)
}

/// `malog jobs`.
pub fn jobs(config: &Config, selection: Selection, format: Format) -> anyhow::Result<u8> {
    let index = open_index(config)?;
    let rows = crate::read::jobs::list_jobs(&index, &selection, format == Format::Json)?;
    match format {
        Format::Json => print_json(&rows)?,
        Format::Csv => write_csv(&rows)?,
        Format::Table => {
            let mut table = new_table(&[
                "source",
                "job_id",
                "name",
                "phase",
                "created",
                "duration",
                "user",
                "flavor × nodes",
                "tasks",
                "bytes",
                "last fetched",
            ]);
            for r in &rows {
                table.add_row(vec![
                    r.source.clone(),
                    r.job_id.clone(),
                    r.name.clone(),
                    r.phase.clone(),
                    r.created.clone(),
                    r.duration_text(),
                    r.user.clone().unwrap_or_default(),
                    r.flavor_nodes(),
                    format!("{}/{}", r.tasks_archived, r.tasks_total),
                    HumanBytes(r.bytes).to_string(),
                    r.last_fetched.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(exit::OK)
}

/// `malog query --versions`: the kept versions of the selected tasks' logs.
pub fn versions(config: &Config, selection: Selection, format: Format) -> anyhow::Result<u8> {
    let index = open_index(config)?;
    let rows = crate::read::versions::list_versions(&index, &selection)?;
    match format {
        Format::Json => print_json(&rows)?,
        Format::Csv => write_csv(&rows)?,
        Format::Table => {
            let mut table = new_table(&[
                "job_id", "job_name", "task_id", "version", "reason", "size", "sha256", "archived",
                "replaced", "location",
            ]);
            for v in &rows {
                table.add_row(vec![
                    v.job_id.clone(),
                    v.job_name.clone(),
                    v.task_id.clone(),
                    v.version.to_string(),
                    v.reason.clone(),
                    v.size.to_string(),
                    v.sha256.clone(),
                    v.archived_at.clone().unwrap_or_default(),
                    v.replaced_at.clone(),
                    v.location.clone(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(exit::OK)
}

/// `malog show JOB`.
pub fn show(config: &Config, job: &str, format: ShowFormat) -> anyhow::Result<u8> {
    let index = open_index(config)?;
    let detail = match crate::read::show::show_job(&index, job) {
        Ok(detail) => detail,
        Err(e @ crate::read::show::ShowError::Index(_)) => return Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::PARTIAL);
        }
    };
    if format == ShowFormat::Json {
        print_json(&detail)?;
        return Ok(exit::OK);
    }
    let j = &detail.job;
    let mut facts = new_table(&["", ""]);
    facts.add_row(vec!["job".to_owned(), format!("{} ({})", j.name, j.job_id)]);
    for (k, v) in crate::read::show::facts(j) {
        facts.add_row(vec![k.to_owned(), v]);
    }
    println!("{facts}");
    if let Some(error) = &detail.record_error {
        println!("events/metrics: {error}");
    }
    match detail.events.as_ref().and_then(|e| e.as_array()) {
        Some(events) if !events.is_empty() => {
            let mut table = new_table(&["time", "level", "source", "message"]);
            for e in events {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                table.add_row(vec![
                    field("time"),
                    field("level"),
                    field("source"),
                    field("message"),
                ]);
            }
            println!("events:\n{table}");
        }
        _ => println!("events: none archived"),
    }
    print_rows(&detail.tasks, Format::Table)?;
    Ok(exit::OK)
}

/// `malog grep`: exit 0 matched, 1 nothing matched, 2 error.
pub async fn grep(config: &Config, args: GrepArgs) -> anyhow::Result<u8> {
    match grep_inner(config, args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(exit::USAGE)
        }
    }
}

async fn grep_inner(config: &Config, args: GrepArgs) -> anyhow::Result<u8> {
    let context = args.context.unwrap_or(0);
    let options = GrepOptions {
        pattern: args.pattern,
        ignore_case: args.ignore_case,
        fixed_strings: args.fixed_strings,
        word: args.word_regexp,
        before_context: args.before_context.unwrap_or(context),
        after_context: args.after_context.unwrap_or(context),
        count: args.count,
        files_with_matches: args.files_with_matches,
        max_count: args.max_count,
        json: args.format == GrepFormat::Json,
        color: args.format == GrepFormat::Text && std::io::stdout().is_terminal(),
    };
    crate::read::grep::matcher(&options)?;
    let selection = args.selection.parse()?;
    let index = open_index(config)?;
    let copies = crate::read::jobs::list_copies(&index, &selection)?;
    drop(index);
    let storage = Storage::from_config(&config.storage).await?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let stats = crate::read::grep::grep(&storage, copies, &options, &mut out).await?;
    drop(out);
    for error in &stats.errors {
        eprintln!("error: {error}");
    }
    Ok(if !stats.errors.is_empty() {
        exit::USAGE
    } else if stats.matched_lines > 0 {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// `malog export --to DIR`.
pub async fn export(config: &Config, selection: Selection, to: &Path) -> anyhow::Result<u8> {
    let index = open_index(config)?;
    let jobs = crate::read::jobs::list_jobs(&index, &selection, false)?;
    let copies = crate::read::jobs::list_copies(&index, &selection)?;
    let storage = Storage::from_config(&config.storage).await?;
    let stats = crate::read::export::export(&index, &storage, &jobs, copies, to, true).await?;
    for problem in &stats.problems {
        eprintln!("error: {problem}");
    }
    println!(
        "exported {} files ({}) to {}, {} already there; {} problems; check with: cd {} && sha256sum -c {}",
        stats.written,
        HumanBytes(stats.bytes),
        to.display(),
        stats.unchanged,
        stats.problems.len(),
        to.display(),
        crate::read::export::SUMS_FILE
    );
    Ok(if stats.problems.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// `verify`'s report: each mismatch, then a summary line (table); the report (JSON);
/// the mismatches (CSV).
pub(super) fn print_verify(
    report: &VerifyReport,
    format: Format,
    metadata_only: bool,
) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(report)?,
        Format::Csv => write_csv(&report.mismatches)?,
        Format::Table => {
            for p in &report.mismatches {
                let version = p
                    .version
                    .map(|n| format!(" version {n}"))
                    .unwrap_or_default();
                println!(
                    "MISMATCH job {} task {}{version} ({}): {}",
                    p.job_id, p.task_id, p.location, p.problem
                );
            }
            let how = if metadata_only {
                " by size and metadata only (contents not read)"
            } else {
                ""
            };
            let kept = if report.versions > 0 {
                format!(" ({} of them kept versions)", report.versions)
            } else {
                String::new()
            };
            println!(
                "verified {} archived logs{how}{kept}: {} mismatches",
                report.checked,
                report.mismatches.len()
            );
        }
    }
    Ok(())
}

/// `query`: the selected tasks' rows.
pub(super) fn query(config: &Config, selection: Selection, format: Format) -> anyhow::Result<u8> {
    let index = Index::open_read_only(&config.index_path)?;
    match format {
        // A table needs every row for its column widths.
        Format::Table => print_rows(&crate::read::jobs::list_tasks(&index, &selection)?, format)?,
        Format::Json | Format::Csv => {
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            stream_rows(format, out, |emit| {
                crate::read::jobs::each_task(&index, &selection, emit)
            })?
        }
    }
    Ok(exit::OK)
}
