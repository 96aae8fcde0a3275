//! What the kernel is asked to do with the cached pages of a file being
//! archived: start writing them early, and let go of them once they are on
//! disk. All of it is advice: an fsync is what makes a file durable, and it
//! reports any write-back error, so the calls here ignore their results.
//!
//! Dropping pages matters on a shared host: an archive pass writes many GiB
//! that nobody reads soon. Left in the page cache they would push out the
//! host's own cached files (a training job's data, the source files a server
//! is sending) and keep up to `dirty_ratio` of memory waiting for write-back.
//! With these calls a log holds at most [`DROP_LAG`] of dirty pages while it
//! is written, and none once it is durable.

use std::fs::File;

/// How far behind the newest write a large log's pages are waited for and
/// dropped: enough that the disk always has work queued.
pub const DROP_LAG: u64 = 32 << 20;

/// Starts writing `len` bytes of the file from `offset` (0: to the end) to
/// disk, without waiting.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_file_range(file, offset, len, false);
}

/// Called after writing `len` bytes at `offset` (whose write-back was
/// started): waits until the same span [`DROP_LAG`] earlier in the file is
/// written, then drops it from the page cache. Consecutive writes drop
/// consecutive spans, so a file streamed front to back is released as it goes.
pub fn drop_behind(file: &File, offset: u64, len: u64) {
    let end = offset.saturating_sub(DROP_LAG);
    let start = end.saturating_sub(len);
    if end > start {
        sync_file_range(file, start, end - start, true);
        fadvise_dontneed(file, start, end - start);
    }
}

/// Drops the whole file's pages from the page cache; only clean pages go, so
/// call it after the file is synced.
pub fn drop_cached(file: &File) {
    fadvise_dontneed(file, 0, 0);
}

/// Starts write-back of the span; with `wait`, also waits for any write-back
/// of it already under way before, and for all of it after.
#[cfg(target_os = "linux")]
fn sync_file_range(file: &File, offset: u64, len: u64, wait: bool) {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor
    // is valid for the call because `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_range(_file: &File, _offset: u64, _len: u64, _wait: bool) {}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn fadvise_dontneed(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor
    // is valid for the call because `file` is borrowed.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn fadvise_dontneed(_file: &File, _offset: u64, _len: u64) {}

#[cfg(all(test, target_os = "linux"))]
pub(super) mod tests {
    use super::*;
    use std::io::Write as _;

    /// A folder on the disk the tests were built on (next to the test binary):
    /// the system temp folder may be a tmpfs, whose pages cannot be dropped.
    pub fn disk_dir() -> tempfile::TempDir {
        let exe = std::env::current_exe().unwrap();
        tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
    }

    /// Which of the file's pages are in the page cache (`mincore` on a mapping).
    pub fn resident(path: &std::path::Path) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: maps the whole file read-only, asks the kernel which pages are
        // cached into `vec` (one byte per page, sized above), then unmaps it.
        // The mapping is never read.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap failed");
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0, "mincore");
            libc::munmap(addr, len);
        }
        vec.into_iter().map(|b| b & 1 == 1).collect()
    }

    const MIB: usize = 1 << 20;

    /// GUARD: a synced file leaves the page cache.
    #[test]
    fn drop_cached_releases_a_synced_file() {
        let dir = disk_dir();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![7u8; 4 * MIB]).unwrap();
        assert!(resident(&path).iter().all(|&r| r), "just written: cached");
        file.sync_all().unwrap();
        drop_cached(&file);
        assert!(resident(&path).iter().all(|&r| !r), "synced and dropped");
    }

    /// GUARD: a log streamed in 1 MiB writes, as the local writer does, keeps
    /// only about the last DROP_LAG of it cached.
    #[test]
    fn drop_behind_releases_what_lies_drop_lag_back() {
        let dir = disk_dir();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![7u8; MIB];
        let total = DROP_LAG as usize + 8 * MIB;
        let mut offset = 0u64;
        while (offset as usize) < total {
            file.write_all(&chunk).unwrap();
            start_writeback(&file, offset, MIB as u64);
            drop_behind(&file, offset, MIB as u64);
            offset += MIB as u64;
        }
        let pages = resident(&path);
        let per_mib = MIB / 4096;
        // The span written DROP_LAG before the last write is gone...
        let dropped = &pages[..7 * per_mib];
        assert!(dropped.iter().all(|&r| !r), "older pages still cached");
        // ...and the newest writes are still cached (not yet waited for).
        let newest = &pages[pages.len() - per_mib..];
        assert!(newest.iter().all(|&r| r), "newest pages were dropped");
    }
}
