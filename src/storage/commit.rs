//! Group commit for the local backend: finished staging files are made durable
//! and renamed into place in batches, so that many small logs share one journal
//! commit instead of paying two fsyncs each.
//!
//! One worker task per [`LocalStore`](super::local::LocalStore) takes whatever
//! finished files are waiting (natural batching: while one batch is being
//! synced the next one gathers, so batches grow exactly when the disk is the
//! bottleneck) and, on a blocking thread:
//! 1. starts write-back of every file (`sync_file_range`), so the block
//!    allocations of the whole batch land in the same journal transaction;
//! 2. fsyncs each file (the first commits the journal, the rest find their data
//!    on its way or already written);
//! 3. renames each durable file to its final name;
//! 4. fsyncs each directory that received a file once, and the parent of each
//!    directory it had to create (a new job's folder must survive a power cut
//!    as well as the file in it).
//!
//! Once a file is synced its pages are dropped from the page cache
//! (`pagecache.rs`): an archive pass should not push the host's own files out.
//!
//! With [`SyncMode::File`] (the default) every file still gets its own fsync, so
//! an I/O error is reported for the file it belongs to, and nothing outside the
//! archive is flushed. [`SyncMode::Filesystem`] replaces steps 2 and 4 with one
//! `syncfs` each: two disk flushes per batch instead of two per log, but it
//! also flushes whatever else is dirty on that file system, and an error fails
//! the whole batch (meant for an archive on its own file system; Linux 5.8 or
//! later reports write-back errors through `syncfs`). Either way a file is
//! under its final name only after its bytes are durable, and its caller hears
//! "done" only after the directory entry is durable too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::local::io_err;
use super::pagecache;

/// Most files in one batch: bounds the time one batch takes when a burst waits.
const MAX_BATCH: usize = 512;

/// How a batch is made durable (`[storage] sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// An fsync per file and per directory.
    #[default]
    File,
    /// One `syncfs` for the files, one for the renames.
    Filesystem,
}

/// A staging file whose bytes are all written, waiting to be made durable.
pub(super) struct Staged {
    pub file: std::fs::File,
    pub staging: PathBuf,
    pub target: PathBuf,
    /// A resume sidecar (`.meta`) exists and goes once the file is in place.
    pub sidecar: Option<PathBuf>,
}

type Request = (Staged, oneshot::Sender<Result<(), StoreError>>);

/// Hands staged files to the batch worker. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    tx: mpsc::UnboundedSender<Request>,
    sync: SyncMode,
}

impl Committer {
    /// Starts the worker on the current runtime; it ends when the last
    /// `Committer` clone is dropped.
    pub fn start(sync: SyncMode) -> Committer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(rx, sync));
        Committer { tx, sync }
    }

    /// Makes `staged` durable under its final name. On error the staging file is
    /// removed and nothing new is under the final name (an old copy stays).
    pub async fn commit(&self, staged: Staged) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        match self.tx.send((staged, done)) {
            Ok(()) => result.await.unwrap_or_else(|_| {
                Err(StoreError::Io {
                    path: PathBuf::from("."),
                    source: std::io::Error::other("the commit worker stopped (shutting down)"),
                })
            }),
            // The worker's runtime is gone (a store shared across runtimes):
            // commit this one file alone.
            Err(mpsc::error::SendError((staged, _))) => {
                let mut results = blocking(vec![staged], self.sync).await;
                results.pop().expect("one result per file")
            }
        }
    }
}

async fn worker(mut rx: mpsc::UnboundedReceiver<Request>, sync: SyncMode) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (files, waiters): (Vec<Staged>, Vec<_>) = batch.drain(..).unzip();
        let results = blocking(files, sync).await;
        for (waiter, result) in waiters.into_iter().zip(results) {
            // A caller that went away (cancelled) needs no answer.
            let _ = waiter.send(result);
        }
    }
}

async fn blocking(files: Vec<Staged>, sync: SyncMode) -> Vec<Result<(), StoreError>> {
    let paths: Vec<PathBuf> = files.iter().map(|f| f.staging.clone()).collect();
    match tokio::task::spawn_blocking(move || commit_batch(files, sync)).await {
        Ok(results) => results,
        Err(e) => paths
            .into_iter()
            .map(|path| {
                Err(StoreError::Io {
                    path,
                    source: std::io::Error::other(format!("commit failed: {e}")),
                })
            })
            .collect(),
    }
}

/// Steps 1–4 of the module docs, one result per file, in order.
fn commit_batch(files: Vec<Staged>, sync: SyncMode) -> Vec<Result<(), StoreError>> {
    let Some(first) = files.first() else {
        return Vec::new();
    };
    let mut results: Vec<Result<(), StoreError>> = match sync {
        SyncMode::File => {
            for f in &files {
                pagecache::start_writeback(&f.file, 0, 0);
            }
            files
                .iter()
                .map(|f| f.file.sync_all().map_err(io_err(&f.staging)))
                .collect()
        }
        SyncMode::Filesystem => {
            let synced = syncfs(&first.file);
            files
                .iter()
                .map(|f| shared_result(&synced, &f.staging))
                .collect()
        }
    };
    // Their bytes are on disk: the archive need not hold the host's page cache.
    for (f, result) in files.iter().zip(&results) {
        if result.is_ok() {
            pagecache::drop_cached(&f.file);
        }
    }
    // Directory → the files that went into it, so each is fsynced once.
    let mut dirs: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    // Parents of directories created here: their new entries must be durable too.
    let mut created_in: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        if results[i].is_ok() {
            results[i] = place(f, &mut created_in);
        }
        match &results[i] {
            Ok(()) => dirs.entry(parent(&f.target)).or_default().push(i),
            Err(_) => {
                let _ = std::fs::remove_file(&f.staging);
            }
        }
        if let Some(sidecar) = &f.sidecar {
            let _ = std::fs::remove_file(sidecar);
        }
    }
    // The renames are durable only once their directory entries are. A failure
    // from here on comes after the rename: the new bytes have replaced the old
    // copy, which the caller must know (`StoreError::NotDurable`).
    if sync == SyncMode::Filesystem {
        let synced = syncfs(&first.file);
        for (dir, members) in dirs {
            for i in members {
                results[i] = not_durable(&synced, dir);
            }
        }
        return results;
    }
    for (dir, members) in dirs {
        let synced = fsync_dir(dir);
        if synced.is_err() {
            for i in members {
                results[i] = not_durable(&synced, dir);
            }
        }
    }
    for dir in created_in {
        let synced = fsync_dir(&dir);
        if synced.is_err() {
            for (i, f) in files.iter().enumerate() {
                if results[i].is_ok() && f.target.starts_with(&dir) {
                    results[i] = not_durable(&synced, &dir);
                }
            }
        }
    }
    results
}

#[cfg(test)]
thread_local! {
    /// Makes this thread's directory fsyncs fail, for tests of that path.
    static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if FAIL_DIR_SYNC.get() {
        return Err(std::io::Error::other("injected directory fsync failure"));
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Like [`shared_result`], for a failure after the file was renamed into place.
fn not_durable(result: &std::io::Result<()>, path: &Path) -> Result<(), StoreError> {
    result
        .as_ref()
        .map(|_| ())
        .map_err(|e| StoreError::NotDurable {
            path: path.to_owned(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })
}

/// Renames the file into place, creating its directory when the first
/// rename says it is missing (most files go into existing directories); the
/// parents of directories it creates go into `created_in`.
fn place(f: &Staged, created_in: &mut BTreeSet<PathBuf>) -> Result<(), StoreError> {
    match std::fs::rename(&f.staging, &f.target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent(&f.target);
            let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            created_in.extend(
                missing
                    .iter()
                    .filter_map(|d| d.parent())
                    .map(Path::to_owned),
            );
            std::fs::rename(&f.staging, &f.target).map_err(io_err(&f.target))
        }
        result => result.map_err(io_err(&f.target)),
    }
}

fn parent(target: &Path) -> &Path {
    target.parent().expect("a key always has a file name")
}

/// One result shared by several files (a batch, a folder), told to each.
fn shared_result(result: &std::io::Result<()>, path: &Path) -> Result<(), StoreError> {
    result.as_ref().map(|_| ()).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(e.kind(), e.to_string()),
    })
}

/// Flushes the whole file system holding `file` (data, metadata, disk cache).
#[cfg(target_os = "linux")]
fn syncfs(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor number, valid while `file` is
    // borrowed.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere: the file's own fsync (directories are then not covered, so
/// `File` mode is the one to use there).
#[cfg(not(target_os = "linux"))]
fn syncfs(file: &std::fs::File) -> std::io::Result<()> {
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: placing a file in folders that do not exist yet names the
    /// parents whose new entries must be fsynced, and nothing more.
    #[test]
    fn created_folders_have_their_parents_synced() {
        let root = tempfile::tempdir().unwrap();
        let staging = root.path().join("x.part");
        std::fs::write(&staging, b"log").unwrap();
        let target = root.path().join("p/j/worker-0.log");
        let staged = Staged {
            file: std::fs::File::open(&staging).unwrap(),
            staging: staging.clone(),
            target: target.clone(),
            sidecar: None,
        };
        let mut created_in = BTreeSet::new();
        place(&staged, &mut created_in).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"log");
        assert_eq!(
            created_in,
            BTreeSet::from([root.path().to_owned(), root.path().join("p")])
        );

        // Into an existing folder: nothing new to sync beyond the folder itself.
        std::fs::write(&staging, b"log 2").unwrap();
        let again = Staged {
            target: root.path().join("p/j/worker-1.log"),
            ..staged
        };
        let mut created_in = BTreeSet::new();
        place(&again, &mut created_in).unwrap();
        assert!(created_in.is_empty());
    }

    /// GUARD: a directory fsync that fails after the rename is reported as
    /// `NotDurable` (the old copy is gone), not as an error that leaves the
    /// caller believing the old copy is still there.
    #[test]
    fn failed_directory_sync_says_the_copy_was_replaced() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("worker-0.log");
        std::fs::write(&target, b"old copy").unwrap();
        let staging = root.path().join("x.part");
        std::fs::write(&staging, b"new bytes").unwrap();
        let staged = Staged {
            file: std::fs::File::open(&staging).unwrap(),
            staging,
            target: target.clone(),
            sidecar: None,
        };
        FAIL_DIR_SYNC.set(true);
        let mut results = commit_batch(vec![staged], SyncMode::File);
        FAIL_DIR_SYNC.set(false);
        let err = results.pop().unwrap().unwrap_err();
        assert!(err.replaced_copy(), "{err:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"new bytes");
    }
}
