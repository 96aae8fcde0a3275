//! How a grown local copy gets its old bytes, cheapest first
//! ([`LocalStore::extend`](super::LocalStore::extend)):
//! 1. shared blocks: the staging file is a clone of the archived file
//!    (`FICLONE`, XFS/Btrfs), so nothing is copied and the new copy is still
//!    swapped in by rename;
//! 2. in place, where the file system cannot share blocks (ext4) and
//!    `[storage] append_in_place` allows it: the delta is appended to the
//!    archived file itself. The index's stored size is the commit point:
//!    readers never read past it, and an *intent* recorded durably in the
//!    staging folder before the first appended byte lets the next writer cut
//!    an interrupted append back ([`LocalStore::pending_appends`](super::LocalStore::pending_appends),
//!    docs/RELIABILITY.md);
//! 3. otherwise the old bytes are copied inside the kernel (`copy_file_range`).
//!
//! A file with more than one link is never appended to: a kept version is a
//! hard link of it (`versions.rs`) and would change too.

use super::super::ArchiveKey;
use super::{create_staging, pagecache};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The extension of an intent file beside the staging files.
pub(super) const INTENT: &str = "append";
/// An intent being written (renamed over [`INTENT`]); a leftover is never current.
pub(super) const INTENT_NEW: &str = "append-new";

/// What the staging folder records before bytes are appended to an archived
/// file: the file (key, and its inode, so a copy that replaced it by rename
/// since is never cut) and its size when the append began.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingAppend {
    pub key: String,
    /// Size of the file before the append: the bytes below it never change.
    pub committed: u64,
    dev: u64,
    ino: u64,
}

impl PendingAppend {
    /// The key appended to; `None` for an intent naming no valid key.
    pub fn archive_key(&self) -> Option<ArchiveKey> {
        ArchiveKey::from_stored(&self.key)
    }
}

/// What [`roll_back`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolledBack {
    /// Bytes past the committed size were cut off.
    Cut(u64),
    /// The file ends at the committed size (the append never began, or was
    /// cut back already).
    Intact,
    /// The file is not the one appended to (replaced by rename, or gone):
    /// left alone.
    Replaced,
    /// The file is shorter than the committed size: left alone (the next
    /// pass finds the copy is not what the index says and stores it whole).
    Short,
}

/// Makes `to` share all blocks of `from` (`FICLONE`).
#[cfg(target_os = "linux")]
pub(super) fn clone_file(from: &std::fs::File, to: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are valid for the call (the files are borrowed);
    // FICLONE takes the source descriptor as its argument.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn clone_file(_from: &std::fs::File, _to: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether a failed clone means "this file system cannot share blocks here"
/// (rather than an I/O error worth reporting).
pub(super) fn clone_refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS)
        )
}

/// Opens the archived file `target` (of `committed` bytes) for appending,
/// after recording the intent at `intent` durably. `Ok(None)` when the file
/// must not be appended to (another link: a kept version); `Ok(Some(Err))`
/// when it is not the size the index says.
pub(super) fn open(
    target: &Path,
    intent: &Path,
    key: &str,
    committed: u64,
) -> std::io::Result<Option<Result<std::fs::File, String>>> {
    let file = std::fs::OpenOptions::new().write(true).open(target)?;
    let meta = file.metadata()?;
    if meta.nlink() > 1 {
        return Ok(None);
    }
    if meta.len() != committed {
        return Ok(Some(Err(format!(
            "it is {} bytes, the index says {committed}",
            meta.len()
        ))));
    }
    let record = PendingAppend {
        key: key.to_owned(),
        committed,
        dev: meta.dev(),
        ino: meta.ino(),
    };
    write_intent(intent, &record)?;
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(committed))?;
    Ok(Some(Ok(file)))
}

/// Writes the intent durably: temp file fsynced, renamed, folder fsynced. A
/// crash leaves no intent (nothing was appended yet) or this one.
fn write_intent(intent: &Path, record: &PendingAppend) -> std::io::Result<()> {
    let tmp = intent.with_extension(INTENT_NEW);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(record).expect("plain struct serialises"))?;
    file.sync_all()?;
    std::fs::rename(&tmp, intent)?;
    let dir = intent
        .parent()
        .expect("an intent lies in the staging folder");
    std::fs::File::open(dir)?.sync_all()
}

/// The intents in the staging folder `dir`, with their paths. Unreadable
/// ones are skipped with a warning (and left for a look).
pub(super) fn pending(dir: &Path) -> std::io::Result<Vec<(PathBuf, PendingAppend)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(INTENT) {
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<PendingAppend>(&text).ok())
        {
            Some(record) => found.push((path, record)),
            None => tracing::warn!(file = %path.display(), "unreadable append intent; left alone"),
        }
    }
    Ok(found)
}

/// Cuts the file appended to back to `size` (≥ the intent's committed size:
/// the bytes below it are the committed copy) if it is still the same file
/// and longer, then makes that durable.
pub(super) fn roll_back(
    target: &Path,
    record: &PendingAppend,
    size: u64,
) -> std::io::Result<RolledBack> {
    let file = match std::fs::OpenOptions::new().write(true).open(target) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RolledBack::Replaced),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (record.dev, record.ino) {
        return Ok(RolledBack::Replaced);
    }
    if meta.len() < size {
        return Ok(RolledBack::Short);
    }
    if meta.len() == size {
        return Ok(RolledBack::Intact);
    }
    file.set_len(size)?;
    file.sync_all()?;
    Ok(RolledBack::Cut(meta.len() - size))
}

/// Cuts an append this process started back to `committed` (an aborted or
/// failed write). Best effort: the intent stays, so the next pass does it if
/// this fails.
pub(super) fn undo(target: &Path, committed: u64) {
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(target)
        .and_then(|f| f.set_len(committed).and_then(|()| f.sync_all()));
    if let Err(e) = cut {
        tracing::warn!(file = %target.display(), error = %e,
            "cannot cut an interrupted append back; the next pass will");
    }
}

/// What [`LocalStore::extend`] works with, on a blocking thread.
pub(super) struct Extend {
    pub staging: PathBuf,
    pub source: PathBuf,
    pub key: String,
    pub len: u64,
    pub in_place: bool,
    pub clone_refused: Arc<AtomicBool>,
}

impl Extend {
    /// The file the delta goes to, and whether it is the archived file
    /// itself; `Ok(Err(reason))` when the copy is not what the index says.
    pub fn open(self) -> std::io::Result<Result<(std::fs::File, bool), String>> {
        let old = match std::fs::File::open(&self.source) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err("it is missing".to_owned()));
            }
            Err(e) => return Err(e),
        };
        let actual = old.metadata()?.len();
        if actual != self.len {
            return Ok(Err(format!(
                "it is {actual} bytes, the index says {}",
                self.len
            )));
        }
        if !self.clone_refused.load(Ordering::Relaxed) {
            let mut new = create_staging(&self.staging)?;
            match clone_file(&old, &new) {
                Ok(()) => {
                    std::io::Seek::seek(&mut new, std::io::SeekFrom::Start(self.len))?;
                    return Ok(Ok((new, false)));
                }
                // A clone only saves work: whatever it fails with, the
                // other ways are tried (they report real I/O errors).
                Err(e) => {
                    if clone_refused(&e) {
                        tracing::debug!(error = %e, "the archive's file system cannot share blocks");
                        self.clone_refused.store(true, Ordering::Relaxed);
                    } else {
                        tracing::warn!(error = %e, "cannot clone the archived file; growing it another way");
                    }
                    drop(new);
                    std::fs::remove_file(&self.staging)?;
                }
            }
        }
        if self.in_place {
            let intent = self.staging.with_extension(INTENT);
            match open(&self.source, &intent, &self.key, self.len)? {
                Some(Ok(file)) => return Ok(Ok((file, true))),
                Some(Err(reason)) => return Ok(Err(reason)),
                // A kept version links to it: copy instead.
                None => {}
            }
        }
        let mut new = create_staging(&self.staging)?;
        copy_in_kernel(&old, &new, self.len)?;
        std::io::Seek::seek(&mut new, std::io::SeekFrom::Start(self.len))?;
        // Write-back of the copy starts now, so the commit waits for less.
        pagecache::start_writeback(&new, 0, self.len);
        Ok(Ok((new, false)))
    }
}

/// Copies the first `len` bytes of `from` to the start of `to` inside the
/// kernel. A file system or kernel without `copy_file_range` between these
/// files falls back to `std::io::copy` (which tries `sendfile`/`splice` before
/// a plain read and write), with a debug line saying so.
#[cfg(target_os = "linux")]
fn copy_in_kernel(from: &std::fs::File, to: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut off_in: libc::loff_t = 0;
    let mut off_out: libc::loff_t = 0;
    while (off_in as u64) < len {
        let want = (len - off_in as u64).min(1 << 30) as usize;
        // SAFETY: both descriptors are valid for the call (the files are
        // borrowed) and the offsets point at live locals.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
            );
            if off_in == 0 && unsupported {
                tracing::debug!(error = %e, "copy_file_range unsupported here; copying with std::io::copy");
                return copy_in_user_space(from, to, len);
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archived copy shrank while being copied",
            ));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_in_kernel(from: &std::fs::File, to: &std::fs::File, len: u64) -> std::io::Result<()> {
    copy_in_user_space(from, to, len)
}

fn copy_in_user_space(from: &std::fs::File, to: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let (mut from, mut to) = (from, to);
    from.seek(SeekFrom::Start(0))?;
    to.seek(SeekFrom::Start(0))?;
    let copied = std::io::copy(&mut from.take(len), &mut to)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the archived copy shrank while being copied",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one intent in `dir`.
    fn only_intent(dir: &Path) -> PendingAppend {
        let mut found = pending(dir).unwrap();
        assert_eq!(found.len(), 1);
        found.pop().unwrap().1
    }

    /// GUARD: an append is cut back to the committed size; a file replaced
    /// by rename since its intent is left alone; a file with another link is
    /// never opened for appending.
    #[test]
    fn roll_back_cuts_only_the_file_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let (target, intent) = (dir.path().join("copy.log"), dir.path().join("k.append"));
        std::fs::write(&target, b"committed").unwrap();
        let mut file = open(&target, &intent, "copy.log", 9)
            .unwrap()
            .unwrap()
            .unwrap();
        file.write_all(b" and a tail").unwrap();
        let record = only_intent(dir.path());
        assert_eq!((record.key.as_str(), record.committed), ("copy.log", 9));
        assert_eq!(roll_back(&target, &record, 9).unwrap(), RolledBack::Cut(11));
        assert_eq!(std::fs::read(&target).unwrap(), b"committed");
        assert_eq!(roll_back(&target, &record, 9).unwrap(), RolledBack::Intact);
        assert_eq!(roll_back(&target, &record, 20).unwrap(), RolledBack::Short);

        // Replaced by a whole download (rename): never cut.
        let other = dir.path().join("new.part");
        std::fs::write(&other, b"a different, longer copy").unwrap();
        std::fs::rename(&other, &target).unwrap();
        assert_eq!(
            roll_back(&target, &record, 9).unwrap(),
            RolledBack::Replaced
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"a different, longer copy");

        // Of the wrong size, or linked (a kept version): not appended to.
        assert!(matches!(
            open(&target, &intent, "copy.log", 9),
            Ok(Some(Err(_)))
        ));
        std::fs::hard_link(&target, dir.path().join("copy.log.v1")).unwrap();
        assert!(matches!(open(&target, &intent, "copy.log", 24), Ok(None)));
    }
}
