//! How results reach a terminal or a script: the process exit codes, the output
//! formats, tables, times and durations as text, and the rendering of a pass's
//! report and of index rows. Every command (cli, daemon, demo, status) renders
//! through here, so a format decision has one home.

use crate::index::TaskRecord;
use crate::plan::PlanPreview;
use crate::run::RunReport;
use clap::ValueEnum;
use serde::Serialize;
use std::time::Duration;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// RFC 3339 UTC to the second, or "" for a time that cannot be shown.
pub fn time_text(ms: i64) -> String {
    crate::model::rfc3339(ms, chrono::SecondsFormat::Secs).unwrap_or_default()
}

/// A duration in seconds as humans read it (`1m 3s 200ms`).
pub fn human_duration(seconds: f64) -> String {
    humantime::format_duration(Duration::from_millis((seconds * 1000.0) as u64)).to_string()
}

/// A table in the house style.
pub fn new_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
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
        "{} jobs, {} tasks: {} fetched ({} grown), {} unchanged, {} sealed, {} not ready, {} failed, {} lost; {} of logs, {} downloaded in {}",
        t.jobs,
        t.tasks,
        t.fetched,
        t.grown,
        t.unchanged,
        t.sealed,
        t.not_ready,
        t.failed,
        t.lost,
        indicatif::HumanBytes(t.bytes),
        indicatif::HumanBytes(t.downloaded),
        human_duration(report.seconds)
    );
    if t.confirmed > 0 {
        println!(
            "final checks of logs archived by deltas: {} done, {} found the copy different and replaced it",
            t.confirmed, t.replaced
        );
    }
    if t.rewritten > 0 {
        println!(
            "rewritten logs: {}; their previous copies are kept as versions (malog query --versions)",
            t.rewritten
        );
    }
    if report.sources.len() > 1 {
        for (source, t) in &report.sources {
            println!(
                "  source {source}: {} jobs, {} tasks: {} fetched, {} unchanged, {} sealed, {} not ready, {} failed, {} lost",
                t.jobs, t.tasks, t.fetched, t.unchanged, t.sealed, t.not_ready, t.failed, t.lost
            );
        }
    }
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
        println!("  {}: source {}: {job}{}", f.state, f.source, f.error);
    }
    Ok(())
}

/// Streams JSON to stdout: a plan or a query result can have a million rows, and
/// building the whole text first would double the memory they take.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn print_plan(preview: &PlanPreview, report: &RunReport, format: Format) -> anyhow::Result<()> {
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

pub fn write_csv<T: Serialize>(rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// Writes the rows of `query` as JSON (the same text as [`print_json`] of all
/// of them) or CSV as `rows` hands them over one at a time: constant memory for
/// an index of any size.
pub fn stream_rows(
    format: Format,
    mut out: impl std::io::Write,
    rows: impl FnOnce(&mut dyn FnMut(TaskRecord) -> anyhow::Result<()>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if format == Format::Csv {
        let mut writer = csv::Writer::from_writer(&mut out);
        rows(&mut |row| Ok(writer.serialize(row)?))?;
        writer.flush()?;
    } else {
        let mut first = true;
        out.write_all(b"[")?;
        rows(&mut |row| {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            first = false;
            // Indented one level, as the pretty printer does inside an array.
            let text = serde_json::to_string_pretty(&row)?;
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    out.write_all(b"\n")?;
                }
                out.write_all(b"  ")?;
                out.write_all(line.as_bytes())?;
            }
            Ok(())
        })?;
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    }
    out.flush()?;
    Ok(())
}

pub fn print_rows(rows: &[TaskRecord], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&rows)?,
        Format::Csv => write_csv(rows)?,
        Format::Table => {
            let mut table = new_table(&[
                "source",
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
                    r.source.clone(),
                    r.job_id.clone(),
                    r.job_name.clone(),
                    r.task_id.clone(),
                    r.state.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, QueryFilter};
    use crate::model::{Job, JobId, JobPhase, TaskId};

    /// GUARD: the streamed `query` output is the same text as printing every
    /// row at once (JSON) and parses back to the same rows (CSV).
    #[test]
    fn streamed_rows_match_the_collected_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let filter = QueryFilter::default();
        for jobs in [0, 2] {
            let listed: Vec<Job> = (0..jobs)
                .map(|i| Job {
                    id: JobId(format!("j{i}")),
                    name: "n".into(),
                    phase: JobPhase::Running,
                    created_at_ms: 1,
                    ended_at_ms: None,
                    tasks: vec![TaskId::from("worker-0"), TaskId::from("worker-1")],
                    record: None,
                })
                .collect();
            ix.record_jobs(&listed, 1).unwrap();
            let rows = ix.query(&filter).unwrap();
            assert_eq!(rows.len(), jobs * 2);
            let mut json = Vec::new();
            stream_rows(Format::Json, &mut json, |emit| {
                ix.query_each(&filter, emit)?
            })
            .unwrap();
            let expected = serde_json::to_string_pretty(&rows).unwrap() + "\n";
            assert_eq!(String::from_utf8(json).unwrap(), expected);
            let mut csv = Vec::new();
            stream_rows(Format::Csv, &mut csv, |emit| {
                ix.query_each(&filter, emit)?
            })
            .unwrap();
            let lines = String::from_utf8(csv).unwrap().lines().count();
            assert_eq!(lines, if jobs == 0 { 0 } else { 1 + jobs * 2 });
        }
    }
}
