-- Why: the first schema of the archive index. One row per (job, task) says what the
-- archive holds for that task's log and what happened at the last attempt; one row
-- per job remembers what the source said about it (so sealed jobs need no API call);
-- one row per run keeps the history that `status` and operators read.
-- Times are epoch milliseconds, UTC.

CREATE TABLE jobs (
    job_id        TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    phase         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,            -- NULL while the job is not final
    task_count    INTEGER NOT NULL,
    seen_at_ms    INTEGER NOT NULL    -- last time the source reported this job
);

CREATE TABLE tasks (
    job_id         TEXT NOT NULL REFERENCES jobs (job_id),
    task_id        TEXT NOT NULL,
    -- The outcome of the last attempt: pending, archived, failed, not_ready, lost.
    state          TEXT NOT NULL,
    -- The archived copy, if any. Kept when a later attempt fails: the copy in
    -- storage is still this one.
    size           INTEGER,
    sha256         TEXT,
    storage_key    TEXT,
    location       TEXT,
    fetched_at_ms  INTEGER,           -- when the archived copy became durable
    -- Validators of the source object the copy was made from (conditional GETs).
    etag           TEXT,
    last_modified  TEXT,
    source_length  INTEGER,
    job_phase      TEXT,              -- the job's phase at the last attempt
    checked_at_ms  INTEGER,           -- when the source was last asked
    attempts       INTEGER NOT NULL DEFAULT 0, -- failed attempts since the last success
    last_error     TEXT,
    -- 1 once the log is final and archived: later runs make no API call for it.
    sealed         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, task_id)
);

CREATE INDEX tasks_by_state ON tasks (state);

CREATE TABLE runs (
    run_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,            -- NULL while running, or if the process died
    outcome       TEXT,               -- ok, partial, failed
    jobs          INTEGER NOT NULL DEFAULT 0,
    tasks         INTEGER NOT NULL DEFAULT 0,
    fetched       INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    sealed        INTEGER NOT NULL DEFAULT 0,
    not_ready     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    bytes         INTEGER NOT NULL DEFAULT 0,
    error         TEXT
);
