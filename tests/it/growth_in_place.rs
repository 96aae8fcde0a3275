//! Growing a local copy where the file system cannot share blocks: the delta
//! is appended to the archived file itself (same inode), the index's stored
//! size is the commit point, and an append a crash left unfinished is never
//! read and is cut back by the next pass (or by `index rebuild`). A file with
//! another link, or `append_in_place = false`, takes the copy path (a new
//! inode). Local plain and zstd; the real binary where a crash is needed.

use crate::archive::{malog, ok, run as output};
use crate::harness::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

const JOB: &str = "live";
const TASK: &str = "worker-0";
/// Larger than the overlap and the write buffer, not a multiple of anything.
const FIRST: u64 = 1024 * 1024 + 17;
/// Larger than the 1 MiB write buffer: a crash leaves appended bytes behind.
const GROWTH: u64 = 3 * 1024 * 1024 + 5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Local {
    Plain,
    Zstd,
}

const BOTH: [Local; 2] = [Local::Plain, Local::Zstd];

/// A running job with one log of `FIRST` bytes, archived once; `storage` is
/// added to the `[storage]` table.
async fn archived(local: Local, storage: &str) -> Harness {
    let mut h = Harness::start(vec![running_job(JOB, &[FIRST])]).await;
    let compression = match local {
        Local::Plain => "none",
        Local::Zstd => "zstd",
    };
    h.extra = format!("{FAST_FETCH}\n[storage]\ncompression = \"{compression}\"\n{storage}");
    let first = h.run().await;
    assert_eq!(first.outcome(), "ok", "{local:?}: {:?}", first.failures);
    h
}

fn copy_path(h: &Harness) -> PathBuf {
    PathBuf::from(h.row(JOB, TASK).location.expect("a copy"))
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Whether the archive's file system shares blocks between files (then a
/// grown copy is a clone swapped in by rename, and never appended in place).
fn shares_blocks(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let (a, b) = (dir.join("clone-probe-a"), dir.join("clone-probe-b"));
    std::fs::write(&a, b"probe").unwrap();
    let from = std::fs::File::open(&a).unwrap();
    let to = std::fs::File::create(&b).unwrap();
    // SAFETY: both descriptors are open for the call.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    rc == 0
}

/// The archived file is exactly the stored object the index describes (no
/// tail), its log is the source's, and `verify` agrees.
async fn assert_consistent(h: &Harness, context: &str) {
    let row = h.row(JOB, TASK);
    let path = copy_path(h);
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(
        Some(stored.len() as u64),
        row.stored_size,
        "{context}: file size"
    );
    assert_eq!(
        Some(hex::encode(Sha256::digest(&stored))),
        row.stored_sha256,
        "{context}: stored sha256"
    );
    let source = h.sim.log_bytes(JOB, TASK);
    let cat = ok(h, &["cat", JOB, TASK]).await.stdout;
    assert!(
        cat == source,
        "{context}: the archive differs from the source"
    );
    assert_eq!(
        (row.size, row.sha256.as_deref()),
        (
            Some(source.len() as u64),
            Some(hex::encode(Sha256::digest(&source)).as_str())
        ),
        "{context}"
    );
    ok(h, &["verify"]).await;
    assert_eq!(h.staging_files(), 0, "{context}: staging left empty");
}

/// GUARD: on a file system without shared blocks a grown copy keeps its
/// inode (the delta is appended in place), twice in a row, and the archive
/// equals the source; where blocks are shared the copy is a clone (new inode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grown_copy_is_appended_in_place() {
    for local in BOTH {
        let h = archived(local, "").await;
        let in_place = !shares_blocks(&h.archive_root());
        let mut size = FIRST;
        for round in 1..=2 {
            let context = format!("{local:?} round {round}");
            let before = inode(&copy_path(&h));
            size += GROWTH;
            h.sim.set_task_size(JOB, TASK, size);
            h.sim.reset_stats();
            let report = h.run().await;
            assert_eq!(report.outcome(), "ok", "{context}: {:?}", report.failures);
            assert_eq!(report.totals.grown, 1, "{context}");
            assert_eq!(
                inode(&copy_path(&h)) == before,
                in_place,
                "{context}: appended in place iff blocks cannot be shared"
            );
            assert_consistent(&h, &context).await;
        }
    }
}

/// GUARD: killed after the delta was appended in place and made durable, and
/// before the index (point `manifest`: before the manifest too; `index`:
/// after it), the file is longer than the index says; `cat` and `verify`
/// read only the committed copy; the next pass cuts the tail back and grows
/// the copy again to an exact one. After a kill at `manifest`, `index
/// rebuild` cuts the tail back to the manifest's size instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_append_in_place_is_cut_back() {
    for local in BOTH {
        for (point, rebuild) in [("manifest", false), ("index", false), ("manifest", true)] {
            let context = format!("{local:?} crash at {point}, rebuild {rebuild}");
            let h = archived(local, "").await;
            if shares_blocks(&h.archive_root()) {
                panic!("this test needs a file system without reflinks (ext4)");
            }
            let old_row = h.row(JOB, TASK);
            let old_log = h.sim.log_bytes(JOB, TASK);
            let path = copy_path(&h);
            let before = inode(&path);
            h.sim.set_task_size(JOB, TASK, FIRST + GROWTH);
            let mut cmd = malog(&h, &["backfill"]);
            cmd.env("MALOG_CRASH_AT", point);
            let crashed = output(cmd).await;
            assert!(!crashed.status.success(), "{context}: not killed");
            assert_eq!(h.row(JOB, TASK), old_row, "{context}: index unchanged");
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(
                len > old_row.stored_size.unwrap(),
                "{context}: the appended bytes are in the file ({len})"
            );
            assert_eq!(inode(&path), before, "{context}: appended in place");
            // Readers stop at the committed size.
            let cat = ok(&h, &["cat", JOB, TASK]).await.stdout;
            assert!(cat == old_log, "{context}: cat shows the committed copy");
            ok(&h, &["verify"]).await;
            ok(&h, &["verify", "--metadata-only"]).await;

            if rebuild {
                let out = ok(&h, &["index", "rebuild", "--format", "json"]).await;
                let report: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(report["restored"], 1, "{context}: {report}");
                assert_eq!(report["adopted"], 0, "{context}: {report}");
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    old_row.stored_size.unwrap(),
                    "{context}: cut back to the manifest"
                );
                assert_eq!(h.staging_files(), 0, "{context}");
                ok(&h, &["verify"]).await;
            }

            h.sim.reset_stats();
            let report = h.run().await;
            assert_eq!(report.outcome(), "ok", "{context}: {:?}", report.failures);
            assert_eq!(report.totals.grown, 1, "{context}");
            assert_eq!(inode(&path), before, "{context}: grown in place again");
            assert_consistent(&h, &context).await;
        }
    }
}

/// GUARD: a copy with another hard link (as a kept version is) is never
/// appended to: the grown copy is a new file and the link keeps the old
/// bytes. The same with `append_in_place = false`, without any link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_or_switched_off_copy_is_copied() {
    for local in BOTH {
        for switch_off in [false, true] {
            let context = format!("{local:?} switched off {switch_off}");
            let storage = if switch_off {
                "append_in_place = false\n"
            } else {
                ""
            };
            let h = archived(local, storage).await;
            let path = copy_path(&h);
            let old = std::fs::read(&path).unwrap();
            let link = h.dir.path().join("kept-link");
            if !switch_off {
                std::fs::hard_link(&path, &link).unwrap();
            }
            let before = inode(&path);
            h.sim.set_task_size(JOB, TASK, FIRST + GROWTH);
            let report = h.run().await;
            assert_eq!(report.outcome(), "ok", "{context}: {:?}", report.failures);
            assert_eq!(report.totals.grown, 1, "{context}");
            assert_ne!(inode(&path), before, "{context}: a new file");
            if !switch_off {
                assert!(
                    std::fs::read(&link).unwrap() == old,
                    "{context}: the linked file is unchanged"
                );
            }
            assert_consistent(&h, &context).await;
        }
    }
}

/// GUARD: an append intent that cannot be settled (here one naming no valid
/// key, as a damaged or hand-made file would) is that intent's warning, not
/// every pass's failure: the pass grows the log as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_that_cannot_be_settled_does_not_stop_the_pass() {
    let h = archived(Local::Plain, "").await;
    let intent = h.archive_root().join(".staging").join("damaged.append");
    std::fs::write(
        &intent,
        br#"{"key":"../outside","committed":0,"dev":0,"ino":0}"#,
    )
    .unwrap();
    h.sim.set_task_size(JOB, TASK, FIRST + GROWTH);
    let report = h.run().await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!(report.totals.grown, 1);
    // Left for a person to look at (each pass warns); the rest is as usual.
    assert!(intent.exists(), "an intent that cannot be settled is kept");
    std::fs::remove_file(&intent).unwrap();
    assert_consistent(&h, "beside a damaged intent").await;
}
