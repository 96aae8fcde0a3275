//! Advisory whole-file locks (`flock`) that wait a moment before saying the
//! lock is held elsewhere; used for the index's writer lock and the archive
//! folder's.
//!
//! Why wait: a lock belongs to the open file, and a process that spawns a
//! child lends the child a copy of every descriptor until the child's `exec`
//! closes it (close-on-exec). A lock released just as another thread of the
//! process spawns a child can so stay held for the few milliseconds of that
//! window, and a pass that starts right after the previous one would be
//! refused. A real second writer holds its lock for a whole pass, far longer
//! than [`WAIT`].

use std::fs::{File, TryLockError};
use std::time::{Duration, Instant};

/// How long a held lock is retried before it counts as another writer's.
pub const WAIT: Duration = Duration::from_secs(2);

const STEP: Duration = Duration::from_millis(20);

/// Takes the exclusive lock of `file`: `Ok(false)` when another holder keeps it
/// for longer than [`WAIT`]. Blocks the calling thread while it waits.
pub fn lock(file: &File) -> std::io::Result<bool> {
    let deadline = Instant::now() + WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(STEP),
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: a lock released within the wait is taken; one kept is refused
    /// after about the wait.
    #[test]
    fn waits_for_a_brief_holder_and_refuses_a_lasting_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = File::create(&path).unwrap();
        holder.try_lock().unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
        });
        let second = File::open(&path).unwrap();
        assert!(lock(&second).unwrap(), "released within the wait");
        released.join().unwrap();

        let third = File::open(&path).unwrap();
        let started = Instant::now();
        assert!(!lock(&third).unwrap(), "still held by `second`");
        assert!(started.elapsed() >= WAIT);
    }
}
