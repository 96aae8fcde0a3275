#!/usr/bin/env python3
"""Builds an archive index of N task rows (10 tasks per job) for the `query`
benchmark, with the project's own migrations, as malog would have written it.

  bench_index.py PATH ROWS
"""
import pathlib
import sqlite3
import sys
import time

path, rows = sys.argv[1], int(sys.argv[2])
root = pathlib.Path(__file__).resolve().parent.parent
migrations = sorted((root / "migrations").glob("*.sql"))
pathlib.Path(path).unlink(missing_ok=True)
db = sqlite3.connect(path)
for m in migrations:
    db.executescript(m.read_text())
db.execute(f"PRAGMA user_version = {len(migrations)}")
db.execute("PRAGMA journal_mode = WAL")
jobs = rows // 10
# One job created per second from a week ago; one in 50 failed: the reading
# commands' filters (--since/--until, --phase, --name) select parts of it.
base_ms = (int(time.time()) - 7 * 86400) * 1000
db.executemany(
    "INSERT INTO jobs (job_id, name, phase, created_at_ms, ended_at_ms, task_count, seen_at_ms)"
    " VALUES (?, ?, ?, ?, ?, 10, 1)",
    (
        (f"job-{j:08d}", f"gen-job-{j:05d}", "Failed" if j % 50 == 0 else "Completed",
         base_ms + j * 1000, base_ms + j * 1000 + 600_000)
        for j in range(jobs)
    ),
)
db.executemany(
    "INSERT INTO tasks (job_id, task_id, state, size, sha256, storage_key, location, fetched_at_ms,"
    " sealed, stored_size, stored_sha256, compression)"
    " VALUES (?, ?, 'archived', 65536, ?, ?, ?, 2, 1, 65536, ?, 'none')",
    (
        (f"job-{j:08d}", f"worker-{t}", "ab" * 32, f"p/job-{j:08d}/worker-{t}.log",
         f"/archive/p/job-{j:08d}/worker-{t}.log", "ab" * 32)
        for j in range(jobs)
        for t in range(10)
    ),
)
db.commit()
db.close()
