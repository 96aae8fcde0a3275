//! Index maintenance from the archive's side: `malog index rebuild` builds a
//! fresh index from storage alone (the jobs' manifests, and objects no
//! manifest names, adopted after hashing them), and `malog index backup`
//! copies the live index consistently. Storage is the truth; the index is a
//! cache of it that can always be rebuilt (docs/RELIABILITY.md).

use crate::config::Config;
use crate::index::{
    Index, IndexError, JobRow, JobState, TaskRecord, VersionRecord, WriterLock, rfc3339,
};
use crate::model::{Compression, JobPhase, SourceValidators, TaskState};
use crate::progress::Progress;
use crate::storage::manifest::{Manifest, ManifestTask, ManifestVersion, is_manifest};
use crate::storage::{
    ArchiveKey, KeyParts, Listed, PendingAppend, RolledBack, Storage, StoreError, is_version_key,
};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Manifests read, and objects hashed, at the same time.
const PARALLEL: usize = 16;
/// File names of the jobs' documents (`run/records.rs`), which need no row.
const JOB_DOCUMENTS: [&str; 3] = ["job.json", "events.json", "metrics.json"];

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RebuildError + '_ {
    move |source| RebuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Something in storage the rebuild could not use, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unaccounted {
    pub key: String,
    pub reason: String,
}

/// What a rebuild built (or, dry, would build).
#[derive(Debug, Default, Serialize)]
pub struct RebuildReport {
    pub dry_run: bool,
    pub index: String,
    /// Where the old index went, if there was one.
    pub backup: Option<String>,
    pub objects: u64,
    pub manifests: u64,
    pub jobs: u64,
    pub tasks: u64,
    /// Copies restored from manifest entries.
    pub restored: u64,
    /// Objects no manifest described, hashed and adopted.
    pub adopted: u64,
    /// Job documents and kept versions, accounted for.
    pub documents: u64,
    /// Manifest entries whose object is absent (the task is left pending).
    pub missing: Vec<Unaccounted>,
    /// Objects in storage the rebuild cannot account for (left alone).
    pub unaccounted: Vec<Unaccounted>,
}

/// Builds a fresh index from storage and puts it in place of the configured
/// one (kept as `<index>.bak`); with `dry_run` only reports.
pub async fn rebuild(
    config: &Config,
    dry_run: bool,
    progress: bool,
) -> Result<RebuildReport, RebuildError> {
    let index_path = config.index_path.clone();
    if let Some(parent) = index_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Refused while a pass writes: its rows would be lost with the old file.
    let _lock = if dry_run {
        None
    } else {
        Some(WriterLock::acquire(&index_path)?)
    };
    let storage = Storage::from_config(&config.storage).await?;
    let _store_lock = if dry_run {
        None
    } else {
        storage.lock_writer()?
    };
    // Appends in place a crash left unfinished (`local/append.rs`): a file
    // longer than its manifest says is cut back to it (below). A dry run
    // changes nothing.
    let pending: HashMap<ArchiveKey, PendingAppend> = if dry_run {
        HashMap::new()
    } else {
        storage
            .pending_appends()
            .await?
            .into_iter()
            .filter_map(|p| Some((p.archive_key()?, p)))
            .collect()
    };
    let listed = storage.list().await?;
    let mut report = RebuildReport {
        dry_run,
        index: index_path.display().to_string(),
        objects: listed.len() as u64,
        ..Default::default()
    };
    let (manifest_keys, objects): (Vec<Listed>, Vec<Listed>) = listed
        .into_iter()
        .partition(|l| is_manifest(l.key.as_str()));
    let bar = if progress {
        Progress::for_terminal(manifest_keys.len() as u64)
    } else {
        Progress::hidden()
    };
    let manifests = read_manifests(&storage, manifest_keys, &bar, &mut report).await;
    let mut objects: HashMap<ArchiveKey, u64> = objects
        .into_iter()
        .map(|l| (l.key, l.stored_size))
        .collect();
    let mut builder = Builder {
        storage: &storage,
        config,
        jobs: BTreeMap::new(),
        stale: HashMap::new(),
        pending,
        cut_back: Vec::new(),
    };
    for manifest in manifests {
        builder.restore(manifest, &mut objects, &mut report);
    }
    builder.cut_back(&mut report).await?;
    bar.retrying(objects.len() as u64);
    builder.adopt(objects, &bar, &mut report).await;
    bar.finish();
    let states: Vec<JobState> = builder.jobs.into_values().collect();
    report.jobs = states.len() as u64;
    report.tasks = states.iter().map(|s| s.tasks.len() as u64).sum();
    if !dry_run {
        report.backup = replace_index(&index_path, states).await?;
    }
    Ok(report)
}

/// Reads every manifest (in parallel); unreadable ones are reported. Of two
/// manifests of the same job (a changed layout) the newest wins.
async fn read_manifests(
    storage: &Storage,
    keys: Vec<Listed>,
    bar: &Progress,
    report: &mut RebuildReport,
) -> Vec<Manifest> {
    let mut read = futures::stream::iter(keys)
        .map(|l| async move { (storage.read_manifest(&l.key).await, l.key) })
        .buffer_unordered(PARALLEL);
    let mut newest: BTreeMap<String, Manifest> = BTreeMap::new();
    while let Some((result, key)) = read.next().await {
        bar.task_done();
        match result {
            Ok(m) => {
                report.manifests += 1;
                let keep = newest
                    .get(&m.job.id)
                    .is_none_or(|old| old.written_at_ms <= m.written_at_ms);
                if keep {
                    newest.insert(m.job.id.clone(), m);
                }
            }
            Err(e) => report.unaccounted.push(Unaccounted {
                key: key.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    newest.into_values().collect()
}

/// The job's row as its manifest describes it, seen when it was written.
fn job_row(m: &Manifest) -> JobRow {
    JobRow {
        job_id: m.job.id.clone(),
        source: m.job.source.clone(),
        name: m.job.name.clone(),
        phase: JobPhase::parse(&m.job.phase),
        created_at_ms: m.job.created_at_ms,
        ended_at_ms: m.job.ended_at_ms,
        task_count: m.job.task_ids.len() as u64,
        seen_at_ms: m.written_at_ms,
    }
}

/// Whose an object is: its job's source, the job and the task.
#[derive(Debug, Clone)]
struct Owner {
    source: String,
    job: String,
    task: String,
}

struct Builder<'a> {
    storage: &'a Storage,
    config: &'a Config,
    jobs: BTreeMap<String, JobState>,
    /// Objects a manifest names but with another size: whose they are.
    stale: HashMap<ArchiveKey, Owner>,
    /// Unfinished appends in place, by key.
    pending: HashMap<ArchiveKey, PendingAppend>,
    /// Restored copies whose file carries an unfinished append: the size to
    /// cut it back to.
    cut_back: Vec<(PendingAppend, u64)>,
}

impl Builder<'_> {
    /// The job and task rows a manifest describes; its objects leave `objects`.
    fn restore(
        &mut self,
        m: Manifest,
        objects: &mut HashMap<ArchiveKey, u64>,
        report: &mut RebuildReport,
    ) {
        self.count_documents(&m, objects, report);
        let mut tasks: BTreeMap<String, TaskRecord> = m
            .job
            .task_ids
            .iter()
            .map(|t| (t.clone(), pending(&m.job.source, &m.job.id, &m.job.name, t)))
            .collect();
        let mut versions = Vec::new();
        for task in &m.tasks {
            versions.extend(self.restore_versions(&m, task, objects, report));
            if let Some(row) = self.restore_task(&m, task, objects, report) {
                tasks.insert(task.task_id.clone(), row);
            }
        }
        self.jobs.insert(
            m.job.id.clone(),
            JobState {
                job: job_row(&m),
                tasks: tasks.into_values().collect(),
                versions,
            },
        );
    }

    /// The job's documents (`job.json`, …) need no row: they are counted.
    fn count_documents(
        &self,
        m: &Manifest,
        objects: &mut HashMap<ArchiveKey, u64>,
        report: &mut RebuildReport,
    ) {
        let parts = KeyParts {
            source: &m.job.source,
            region: &m.job.region,
            project_id: &m.job.project_id,
            job_id: &m.job.id,
            job_name: &m.job.name,
            task_id: "",
        };
        for name in JOB_DOCUMENTS {
            let key = self.config.storage.layout.render_job_file(parts, name);
            if objects.remove(&key).is_some() {
                report.documents += 1;
            }
        }
    }

    /// The rows of a task's kept versions that storage holds; the others
    /// are reported missing.
    fn restore_versions(
        &self,
        m: &Manifest,
        task: &ManifestTask,
        objects: &mut HashMap<ArchiveKey, u64>,
        report: &mut RebuildReport,
    ) -> Vec<VersionRecord> {
        let mut versions = Vec::new();
        for version in &task.versions {
            match ArchiveKey::from_stored(&version.key) {
                Some(key) if objects.remove(&key).is_some() => {
                    report.documents += 1;
                    versions.push(restored_version(self.storage, m, task, version, &key));
                }
                _ => report.missing.push(Unaccounted {
                    key: version.key.clone(),
                    reason: format!(
                        "job {} task {} version {}: the manifest names it but storage does not hold it",
                        m.job.id, task.task_id, version.n
                    ),
                }),
            }
        }
        versions
    }

    /// The row of a task whose copy storage holds as the manifest describes
    /// it. A copy of another size is left for adoption (after hashing); a
    /// missing or invalid one is reported, and the task stays pending.
    fn restore_task(
        &mut self,
        m: &Manifest,
        task: &ManifestTask,
        objects: &mut HashMap<ArchiveKey, u64>,
        report: &mut RebuildReport,
    ) -> Option<TaskRecord> {
        let Some(key) = ArchiveKey::from_stored(&task.key) else {
            report.missing.push(Unaccounted {
                key: task.key.clone(),
                reason: format!("job {} task {}: not a valid key", m.job.id, task.task_id),
            });
            return None;
        };
        match objects.get(&key) {
            Some(size) if *size == task.stored_size => {
                objects.remove(&key);
                report.restored += 1;
                return Some(restored(self.storage, m, task, &key));
            }
            // An append in place begun from this copy, never committed (the
            // manifest is written before the index): the bytes up to the
            // manifest's size are its copy; the rest is cut.
            Some(size)
                if *size > task.stored_size
                    && self
                        .pending
                        .get(&key)
                        .is_some_and(|p| p.committed <= task.stored_size) =>
            {
                objects.remove(&key);
                report.restored += 1;
                if let Some(pending) = self.pending.remove(&key) {
                    self.cut_back.push((pending, task.stored_size));
                }
                return Some(restored(self.storage, m, task, &key));
            }
            Some(_) => {
                // Written again after the manifest (a crash in between):
                // adopted below, after hashing.
                let owner = Owner {
                    source: m.job.source.clone(),
                    job: m.job.id.clone(),
                    task: task.task_id.clone(),
                };
                self.stale.insert(key, owner);
            }
            None => report.missing.push(Unaccounted {
                key: task.key.clone(),
                reason: format!(
                    "job {} task {}: the manifest names it but storage does not hold it",
                    m.job.id, task.task_id
                ),
            }),
        }
        None
    }

    /// Cuts the files of unfinished appends back to their manifests' sizes,
    /// and forgets every other intent (its file was committed whole, or is
    /// hashed and adopted as it is).
    async fn cut_back(&mut self, report: &mut RebuildReport) -> Result<(), RebuildError> {
        for (pending, size) in std::mem::take(&mut self.cut_back) {
            match self.storage.roll_back_append(&pending, Some(size)).await? {
                RolledBack::Cut(_) | RolledBack::Intact => {}
                RolledBack::Replaced | RolledBack::Short => report.unaccounted.push(Unaccounted {
                    key: pending.key.clone(),
                    reason: "an unfinished append whose file changed since; left as it is"
                        .to_owned(),
                }),
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.storage.roll_back_append(&pending, None).await?;
        }
        Ok(())
    }

    /// Objects no manifest accounts for: job documents are counted; a log whose
    /// job and task can be read back exactly is hashed and adopted (never
    /// sealed, no validators: the next pass checks it against the source);
    /// anything else is reported.
    async fn adopt(
        &mut self,
        objects: HashMap<ArchiveKey, u64>,
        bar: &Progress,
        report: &mut RebuildReport,
    ) {
        let mut candidates = Vec::new();
        let mut keys: Vec<ArchiveKey> = objects.into_keys().collect();
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for key in keys {
            let name = key.as_str().rsplit('/').next().unwrap_or_default();
            if JOB_DOCUMENTS.iter().any(|d| name.ends_with(d)) {
                report.documents += 1;
                bar.task_done();
                continue;
            }
            // A kept version is only known through its log's manifest entry:
            // without it, it is reported (and left where it is), never taken
            // for a log of its own.
            if is_version_key(key.as_str()) {
                bar.task_done();
                report.unaccounted.push(Unaccounted {
                    key: key.to_string(),
                    reason: "a kept version of a rewritten log that no manifest names".to_owned(),
                });
                continue;
            }
            let (log_key, compression) = match key.as_str().strip_suffix(Compression::Zstd.suffix())
            {
                Some(plain) => (plain.to_owned(), Compression::Zstd),
                None => (key.as_str().to_owned(), Compression::None),
            };
            match self.owner(&key, &log_key) {
                Some(owner) => candidates.push((key, compression, owner)),
                None => {
                    bar.task_done();
                    report.unaccounted.push(Unaccounted {
                        key: key.to_string(),
                        reason: "no manifest names it, and its job and task cannot be read back from the key under the configured layout".to_owned(),
                    });
                }
            }
        }
        let storage = self.storage;
        let mut hashed = futures::stream::iter(candidates)
            .map(|(key, compression, owner)| async move {
                let digest = storage.digest(&key, compression, None).await;
                (key, compression, owner, digest)
            })
            .buffer_unordered(PARALLEL);
        while let Some((key, compression, owner, digest)) = hashed.next().await {
            bar.task_done();
            let digest = match digest {
                Ok(d) => d,
                Err(e) => {
                    report.unaccounted.push(Unaccounted {
                        key: key.to_string(),
                        reason: format!("cannot be adopted: {e}"),
                    });
                    continue;
                }
            };
            report.adopted += 1;
            tracing::info!(key = %key, job = %owner.job, task = %owner.task, "adopted an object no manifest names, after hashing it");
            self.add_adopted(&key, compression, &owner, digest);
        }
    }

    /// Whose an object no manifest accounts for is: the task whose manifest
    /// entry has another size, else the job and task its key reads back to.
    fn owner(&self, key: &ArchiveKey, log_key: &str) -> Option<Owner> {
        self.stale.get(key).cloned().or_else(|| {
            let parsed = self.config.storage.layout.parse_key(log_key)?;
            // A layout without {source} means one source (config::check_layout).
            let source = match parsed.source.is_empty() {
                true => self.config.sources.first()?.name().to_owned(),
                false => parsed.source,
            };
            Some(Owner {
                source,
                job: parsed.job_id,
                task: parsed.task_id,
            })
        })
    }

    /// The row of an adopted object, in its job (made up if no manifest
    /// described it: the next pass fills in what the source says).
    fn add_adopted(
        &mut self,
        key: &ArchiveKey,
        compression: Compression,
        owner: &Owner,
        digest: crate::storage::ObjectDigest,
    ) {
        let (job_id, task_id) = (owner.job.as_str(), owner.task.as_str());
        let state = self
            .jobs
            .entry(job_id.to_owned())
            .or_insert_with(|| JobState {
                job: JobRow {
                    job_id: job_id.to_owned(),
                    source: owner.source.clone(),
                    name: String::new(),
                    phase: JobPhase::parse("Unknown"),
                    created_at_ms: 0,
                    ended_at_ms: None,
                    task_count: 0,
                    seen_at_ms: 0,
                },
                tasks: Vec::new(),
                versions: Vec::new(),
            });
        let mut row = pending(&state.job.source, job_id, &state.job.name, task_id);
        row.state = TaskState::Archived;
        row.size = Some(digest.log_size);
        row.sha256 = Some(digest.log_sha256);
        row.stored_size = Some(digest.stored_size);
        row.stored_sha256 = Some(digest.stored_sha256);
        row.compression = compression;
        row.location = Some(self.storage.location(key));
        row.storage_key = Some(key.to_string());
        state.tasks.retain(|t| t.task_id != task_id);
        state.tasks.push(row);
        state.tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        state.job.task_count = state.job.task_count.max(state.tasks.len() as u64);
    }
}

/// The row of a task the archive holds nothing for.
fn pending(source: &str, job_id: &str, job_name: &str, task_id: &str) -> TaskRecord {
    TaskRecord {
        source: source.to_owned(),
        job_id: job_id.to_owned(),
        job_name: job_name.to_owned(),
        task_id: task_id.to_owned(),
        state: TaskState::Pending,
        size: None,
        sha256: None,
        location: None,
        fetched_at: None,
        job_phase: None,
        attempts: 0,
        last_error: None,
        sealed: false,
        storage_key: None,
        fetched_at_ms: None,
        checked_at_ms: None,
        validators: SourceValidators::default(),
        stored_size: None,
        stored_sha256: None,
        compression: Compression::None,
        growth: None,
        unconfirmed: false,
    }
}

/// The row a manifest entry describes.
fn restored(storage: &Storage, m: &Manifest, t: &ManifestTask, key: &ArchiveKey) -> TaskRecord {
    TaskRecord {
        state: TaskState::Archived,
        size: Some(t.size),
        sha256: Some(t.sha256.clone()),
        location: Some(storage.location(key)),
        job_phase: t.job_phase.as_deref().map(JobPhase::parse),
        sealed: t.sealed,
        storage_key: Some(t.key.clone()),
        fetched_at_ms: t.fetched_at_ms,
        fetched_at: t.fetched_at_ms.map(crate::index::rfc3339),
        checked_at_ms: t.checked_at_ms,
        validators: SourceValidators {
            etag: t.etag.clone(),
            last_modified: t.last_modified.clone(),
            length: t.source_length,
        },
        stored_size: Some(t.stored_size),
        stored_sha256: Some(t.stored_sha256.clone()),
        compression: Manifest::compression_of(t).unwrap_or_default(),
        growth: t.growth.clone(),
        unconfirmed: t.unconfirmed,
        ..pending(&m.job.source, &m.job.id, &m.job.name, &t.task_id)
    }
}

/// Writes `states` into a new file beside the index and renames it into
/// place; the old index (and any `-wal`/`-shm` beside it, which must never
/// meet the new file) becomes `<index>.bak`. Returns the backup's path.
async fn replace_index(
    index_path: &Path,
    states: Vec<JobState>,
) -> Result<Option<String>, RebuildError> {
    let path = index_path.to_owned();
    tokio::task::spawn_blocking(move || {
        let fresh = sibling(&path, ".rebuild");
        for leftover in [
            fresh.clone(),
            sibling(&fresh, "-wal"),
            sibling(&fresh, "-shm"),
        ] {
            remove_if_present(&leftover)?;
        }
        {
            let mut index = Index::open(&fresh)?;
            index.restore(&states)?;
            index.checkpoint()?;
        }
        std::fs::File::open(&fresh)
            .and_then(|f| f.sync_all())
            .map_err(io(&fresh))?;
        let bak = sibling(&path, ".bak");
        let had_index = path.exists();
        for suffix in ["", "-wal", "-shm"] {
            let old = sibling(&path, suffix);
            let kept = sibling(&bak, suffix);
            remove_if_present(&kept)?;
            if old.exists() {
                std::fs::rename(&old, &kept).map_err(io(&old))?;
            }
        }
        std::fs::rename(&fresh, &path).map_err(io(&path))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(had_index.then(|| bak.display().to_string()))
    })
    .await
    .unwrap_or_else(|e| {
        Err(RebuildError::Io {
            path: index_path.to_owned(),
            source: std::io::Error::other(format!("rebuild stopped: {e}")),
        })
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_if_present(path: &Path) -> Result<(), RebuildError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// What `index backup` wrote.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub index: String,
    pub backup: String,
    pub bytes: u64,
    pub integrity_check: &'static str,
}

/// Copies the live index to `target` consistently (`VACUUM INTO` on a read
/// connection: a pass may go on writing), checks the copy with `PRAGMA
/// integrity_check`, makes it durable and only then puts it under `target`.
pub async fn backup(index_path: &Path, target: &Path) -> Result<BackupReport, RebuildError> {
    let (index_path, target) = (index_path.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || {
        let staging = sibling(&target, ".partial");
        remove_if_present(&staging)?;
        let index = Index::open_read_only(&index_path)?;
        index.backup_into(&staging)?;
        let checked = Index::open_read_only(&staging).and_then(|copy| copy.check_integrity_full());
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&staging);
            return Err(e.into());
        }
        std::fs::File::open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io(&staging))?;
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        let bytes = std::fs::metadata(&target).map_err(io(&target))?.len();
        Ok(BackupReport {
            index: index_path.display().to_string(),
            backup: target.display().to_string(),
            bytes,
            integrity_check: "ok",
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err(RebuildError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("backup stopped: {e}")),
        })
    })
}

/// The row of a kept version a manifest describes.
fn restored_version(
    storage: &Storage,
    m: &Manifest,
    t: &ManifestTask,
    v: &ManifestVersion,
    key: &ArchiveKey,
) -> VersionRecord {
    VersionRecord {
        job_id: m.job.id.clone(),
        job_name: m.job.name.clone(),
        task_id: t.task_id.clone(),
        version: v.n,
        reason: v.reason.clone(),
        size: v.size,
        sha256: v.sha256.clone(),
        storage_key: v.key.clone(),
        location: storage.location(key),
        compression: Compression::parse(&v.compression).unwrap_or(Compression::None),
        stored_size: Some(v.stored_size),
        stored_sha256: Some(v.stored_sha256.clone()),
        archived_at: v.archived_at_ms.map(rfc3339),
        replaced_at: rfc3339(v.replaced_at_ms),
        archived_at_ms: v.archived_at_ms,
        replaced_at_ms: v.replaced_at_ms,
    }
}
