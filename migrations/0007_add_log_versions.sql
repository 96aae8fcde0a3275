-- Why: a log whose new content does not begin with the archived copy (rewritten,
-- truncated, or replaced when a job was re-run under the same id) must not
-- destroy that copy (issue 14, part 4). Before the new object replaces it, the
-- old object is kept under a version key (`<key>.vN`, see
-- `storage/versions.rs`); this table records each such version, so that
-- `query --versions`, `cat --version N` and `verify` know them.

CREATE TABLE versions (
    job_id         TEXT NOT NULL,
    task_id        TEXT NOT NULL,
    -- 1, 2, …: the number in the version's key (`.v1`, `.v2`, …), oldest first.
    n              INTEGER NOT NULL,
    storage_key    TEXT NOT NULL,
    location       TEXT NOT NULL,
    -- The original log the version holds, and the stored object, as the
    -- task's row described the copy before it was replaced.
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    stored_size    INTEGER,
    stored_sha256  TEXT,
    compression    TEXT NOT NULL,
    -- `rewritten` (the new log is not shorter) or `truncated` (it is shorter).
    reason         TEXT NOT NULL,
    archived_at_ms INTEGER,           -- when the copy first became durable
    replaced_at_ms INTEGER NOT NULL,  -- when it was kept as a version
    PRIMARY KEY (job_id, task_id, n),
    FOREIGN KEY (job_id, task_id) REFERENCES tasks (job_id, task_id)
);

-- Per pass: archived copies kept as versions because their log was rewritten.
ALTER TABLE runs ADD COLUMN rewritten INTEGER NOT NULL DEFAULT 0;
