//! `malog export --to DIR`: the selected logs as plain files a person (or
//! another tool) can use without malog:
//!
//! ```text
//! DIR/<job-name>--<job-id>/<task>.log      decompressed
//! DIR/<job-name>--<job-id>/job.json        the record (redacted), events, metrics
//! DIR/SHA256SUMS                           `sha256sum -c SHA256SUMS` checks them all
//! ```
//!
//! Every log is hashed while it is written and compared with the index; a
//! mismatch leaves no file. A file is written under a `.part` name and renamed
//! when complete, so a rerun after an interruption skips what is already
//! there and correct, and never finds half a file under a final name. An
//! existing file with other content is never overwritten: it is reported.

use super::jobs::{JobRow, SelectedCopy};
use crate::index::{Index, IndexError};
use crate::storage::layout::sanitize;
use crate::storage::{ArchiveKey, Storage};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Logs exported at once.
const EXPORT_PARALLELISM: usize = 4;
const BUFFER: usize = 1 << 20;
/// The checksum file at the top of the export folder.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Files written by this run.
    pub written: u64,
    /// Files already there with the right content.
    pub unchanged: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files not exported, each with why (conflicts, mismatches, read errors).
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The folder of one job inside the export folder.
pub fn job_folder(name: &str, job_id: &str) -> String {
    format!("{}--{}", sanitize(name), sanitize(job_id))
}

/// One file to export: where it goes and what it must hold.
enum Item {
    Log(SelectedCopy),
    Document {
        job_id: String,
        path: String,
        bytes: Vec<u8>,
    },
}

/// Exports the logs `copies` and the documents of `jobs` into `dir`, then
/// writes `SHA256SUMS` (merged with an earlier export's).
pub async fn export(
    index: &Index,
    storage: &Storage,
    jobs: &[JobRow],
    copies: Vec<SelectedCopy>,
    dir: &Path,
    progress: bool,
) -> Result<ExportStats, ExportError> {
    tokio::fs::create_dir_all(dir).await.map_err(io_err(dir))?;
    let mut items: Vec<Item> = Vec::new();
    for job in jobs {
        items.extend(documents(index, job)?);
    }
    let total: u64 = copies.iter().map(|c| c.copy.size).sum();
    items.extend(copies.into_iter().map(Item::Log));
    let bar = progress_bar(progress, total);
    let mut results = futures::stream::iter(items)
        .map(|item| export_one(storage, dir, item, &bar))
        .buffer_unordered(EXPORT_PARALLELISM);
    let mut sums = read_sums(dir).await;
    let mut stats = ExportStats::default();
    while let Some(result) = results.next().await {
        match result {
            Ok(done) => {
                if done.written {
                    stats.written += 1;
                    stats.bytes += done.size;
                } else {
                    stats.unchanged += 1;
                }
                sums.insert(done.path, done.sha256);
            }
            Err(problem) => stats.problems.push(problem),
        }
    }
    bar.finish_and_clear();
    stats.problems.sort();
    write_sums(dir, &sums).await?;
    Ok(stats)
}

fn progress_bar(progress: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("static template is valid"),
    );
    bar
}

/// The job's record, events and metrics as files, from the index.
fn documents(index: &Index, job: &JobRow) -> Result<Vec<Item>, IndexError> {
    let texts: Option<(Option<String>, Option<String>, Option<String>)> = index.read(|conn| {
        use rusqlite::OptionalExtension;
        conn.query_row(
            "SELECT record, events, metrics FROM job_records WHERE job_id = ?1",
            [&job.job_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    })?;
    let folder = job_folder(&job.name, &job.job_id);
    let (record, events, metrics) = texts.unwrap_or_default();
    Ok([
        ("job.json", record),
        ("events.json", events),
        ("metrics.json", metrics),
    ]
    .into_iter()
    .filter_map(|(name, text)| {
        text.map(|t| Item::Document {
            job_id: job.job_id.clone(),
            path: format!("{folder}/{name}"),
            bytes: crate::model::pretty_json(&t),
        })
    })
    .collect())
}

struct Exported {
    /// Relative to the export folder, `/`-separated.
    path: String,
    sha256: String,
    size: u64,
    written: bool,
}

async fn export_one(
    storage: &Storage,
    dir: &Path,
    item: Item,
    bar: &indicatif::ProgressBar,
) -> Result<Exported, String> {
    match item {
        Item::Document {
            job_id,
            path,
            bytes,
        } => {
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let size = bytes.len() as u64;
            let target = dir.join(&path);
            let written = match existing(&target, &sha256).await {
                Existing::Same => false,
                Existing::Different => return Err(conflict(&path)),
                Existing::Absent => {
                    write_atomically(&target, &bytes)
                        .await
                        .map_err(|e| format!("{path} (job {job_id}): {e}"))?;
                    true
                }
            };
            Ok(Exported {
                path,
                sha256,
                size,
                written,
            })
        }
        Item::Log(selected) => export_log(storage, dir, selected, bar).await,
    }
}

fn conflict(path: &str) -> String {
    format!(
        "{path}: a different file is already there; not overwritten (move it away, or export to another folder)"
    )
}

enum Existing {
    Absent,
    Same,
    Different,
}

/// Whether `path` already holds content with this sha256.
async fn existing(path: &Path, sha256: &str) -> Existing {
    match sha256_of_file(path).await {
        Ok(Some(got)) if got == sha256 => Existing::Same,
        Ok(Some(_)) => Existing::Different,
        Ok(None) => Existing::Absent,
        Err(_) => Existing::Different,
    }
}

async fn sha256_of_file(path: &Path) -> std::io::Result<Option<String>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

async fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let part = part_path(target);
    tokio::fs::write(&part, bytes).await?;
    tokio::fs::rename(&part, target).await
}

/// Streams one log out of storage, decoded, into its file, checking size and
/// sha256 against the index before the file gets its final name.
async fn export_log(
    storage: &Storage,
    dir: &Path,
    selected: SelectedCopy,
    bar: &indicatif::ProgressBar,
) -> Result<Exported, String> {
    let copy = &selected.copy;
    let path = format!(
        "{}/{}.log",
        job_folder(&selected.job_name, &copy.job_id),
        sanitize(&copy.task_id)
    );
    let what = format!("{path} (job {} task {})", copy.job_id, copy.task_id);
    let target = dir.join(&path);
    let done = |written| Exported {
        path: path.clone(),
        sha256: copy.sha256.clone(),
        size: copy.size,
        written,
    };
    match existing(&target, &copy.sha256).await {
        Existing::Same => {
            bar.inc(copy.size);
            return Ok(done(false));
        }
        Existing::Different => return Err(conflict(&path)),
        Existing::Absent => {}
    }
    let key = ArchiveKey::from_stored(&copy.storage_key)
        .ok_or_else(|| format!("{what}: the index holds an invalid storage key"))?;
    let compression = copy.compression;
    let mut reader = storage
        .open_log(&key, compression, copy.stored_size)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let part = part_path(&target);
    let result = async {
        let mut file = tokio::fs::File::create(&part).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
            size += n as u64;
            bar.inc(n as u64);
        }
        file.flush().await?;
        Ok::<_, std::io::Error>((size, hex::encode(hasher.finalize())))
    }
    .await;
    let checked = match result {
        Ok((size, sha256)) if size == copy.size && sha256 == copy.sha256 => Ok(()),
        Ok((size, sha256)) => Err(format!(
            "{what}: the archived copy does not match the index ({size} bytes, sha256 {sha256}; index says {} bytes, {}); run `malog verify`",
            copy.size, copy.sha256
        )),
        Err(e) => Err(format!("{what}: {e}")),
    };
    if let Err(problem) = checked {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(problem);
    }
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(done(true))
}

/// The entries of an earlier export's `SHA256SUMS`, by path.
async fn read_sums(dir: &Path) -> BTreeMap<String, String> {
    let text = tokio::fs::read_to_string(dir.join(SUMS_FILE))
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (sha256, path) = line.split_once("  ")?;
            Some((path.to_owned(), sha256.to_owned()))
        })
        .collect()
}

/// `sha256sum` format: `<hex>  <path>`, one per line, sorted by path.
async fn write_sums(dir: &Path, sums: &BTreeMap<String, String>) -> Result<(), ExportError> {
    let mut text = String::new();
    for (path, sha256) in sums {
        text.push_str(&format!("{sha256}  {path}\n"));
    }
    let target = dir.join(SUMS_FILE);
    write_atomically(&target, text.as_bytes())
        .await
        .map_err(io_err(&target))
}
