//! `malog index rebuild` and `malog index backup`: flags and rendering. The
//! work is in [`crate::run::rebuild`].

use super::load_config;
use crate::output::{Format, exit, new_table, print_json};
use crate::run::rebuild::{self, RebuildError, RebuildReport};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Build a fresh index from storage alone (the jobs' manifests; objects no
    /// manifest names are adopted after hashing them) and put it in place of
    /// the configured one, keeping the old one as <index>.bak. Refused while
    /// another malog writes the index (exit 4). Exit 1 when storage holds
    /// something it cannot account for.
    Rebuild {
        /// Report what would be built, and what cannot be accounted for,
        /// without writing anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write a consistent copy of the index to FILE while malog may be
    /// writing it (SQLite's VACUUM INTO), checked with PRAGMA integrity_check.
    Backup {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Errors keep their own type, so the exit code mapping (busy: 4) sees them.
fn unwrap(e: RebuildError) -> anyhow::Error {
    match e {
        RebuildError::Index(e) => e.into(),
        RebuildError::Store(e) => e.into(),
        other => other.into(),
    }
}

pub async fn run(config_path: &Path, command: IndexCommand) -> anyhow::Result<u8> {
    let config = load_config(config_path)?;
    match command {
        IndexCommand::Rebuild { dry_run, format } => {
            let report = rebuild::rebuild(&config, dry_run, format == Format::Table)
                .await
                .map_err(unwrap)?;
            print_rebuild(&report, format)?;
            Ok(
                if report.missing.is_empty() && report.unaccounted.is_empty() {
                    exit::OK
                } else {
                    exit::PARTIAL
                },
            )
        }
        IndexCommand::Backup { file, format } => {
            let report = rebuild::backup(&config.index_path, &file)
                .await
                .map_err(unwrap)?;
            match format {
                Format::Json => print_json(&report)?,
                Format::Table | Format::Csv => println!(
                    "backed up {} to {} ({} bytes, integrity_check ok)",
                    report.index, report.backup, report.bytes
                ),
            }
            Ok(exit::OK)
        }
    }
}

fn print_rebuild(report: &RebuildReport, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(report);
    }
    let verb = if report.dry_run {
        "would build"
    } else {
        "built"
    };
    println!(
        "{verb} {}: {} jobs, {} tasks ({} restored from {} manifests, {} adopted after hashing); {} objects listed, {} documents",
        report.index,
        report.jobs,
        report.tasks,
        report.restored,
        report.manifests,
        report.adopted,
        report.objects,
        report.documents
    );
    if let Some(bak) = &report.backup {
        println!("the old index is kept as {bak}");
    }
    let problems: Vec<_> = report
        .missing
        .iter()
        .map(|p| ("missing", p))
        .chain(report.unaccounted.iter().map(|p| ("unaccounted", p)))
        .collect();
    if !problems.is_empty() {
        let mut table = new_table(&["problem", "key", "reason"]);
        for (kind, p) in problems {
            table.add_row(vec![kind, p.key.as_str(), p.reason.as_str()]);
        }
        println!("{table}");
    }
    Ok(())
}
