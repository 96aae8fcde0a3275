//! What the kernel is asked to do with the cached pages of a file being
//! archived: start writing them early, and let go of them once they are on
//! disk. All of it is advice: an fsync is what makes a file durable, and it
//! reports any write-back error, so the calls here ignore their results.
//!
//! Dropping pages matters on a shared host: an archive pass writes many GiB
//! that nobody reads soon. Left in the page cache they would push out the
//! host's own cached files (a training job's data, the source files a server
//! is sending). With these calls a log being written keeps about
//! [`DROP_LAG`] of itself cached, and nothing once it is durable. Nothing here
//! waits for the disk: pages are dropped only once the kernel has written them.

use std::fs::File;

/// How far behind the newest write a large log's pages are dropped: by then
/// their write-back (started as each write was made) has usually finished.
pub const DROP_LAG: u64 = 32 << 20;

/// Starts writing `len` bytes of the file from `offset` (0: to the end) to
/// disk, without waiting.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_file_range(file, offset, len);
}

/// Called after writing `len` bytes at `offset`: drops the file's pages up to
/// [`DROP_LAG`] before its newest byte from the page cache, from where the
/// previous write's span ended, so a file streamed front to back is released
/// as it goes. It never waits: pages still being written are skipped, and
/// [`drop_cached`] takes them once the file is synced.
pub fn drop_behind(file: &File, offset: u64, len: u64) {
    let start = offset.saturating_sub(DROP_LAG);
    let end = (offset + len).saturating_sub(DROP_LAG);
    if end > start {
        fadvise_dontneed(file, start, end - start);
    }
}

/// Drops the whole file's pages from the page cache; only clean pages go, so
/// call it after the file is synced.
pub fn drop_cached(file: &File) {
    fadvise_dontneed(file, 0, 0);
}

#[cfg(target_os = "linux")]
fn sync_file_range(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor
    // is valid for the call because `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_range(_file: &File, _offset: u64, _len: u64) {}

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
    /// only the last DROP_LAG of it cached once those pages are written
    /// (each write is synced here so that no page is still in flight).
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
            file.sync_data().unwrap();
            drop_behind(&file, offset, MIB as u64);
            offset += MIB as u64;
        }
        let pages = resident(&path);
        let per_mib = MIB / 4096;
        // Everything up to DROP_LAG before the newest byte is gone, with no
        // page left between two writes' spans; the newest DROP_LAG is cached.
        let (dropped, newest) = pages.split_at(8 * per_mib);
        assert!(dropped.iter().all(|&r| !r), "older pages still cached");
        assert_eq!(newest.len(), DROP_LAG as usize / 4096);
        assert!(newest.iter().all(|&r| r), "newest pages were dropped");
    }
}
