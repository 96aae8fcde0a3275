-- Why: the archive must answer "what did this job run with, and why did it fail?"
-- after ModelArts has deleted the job, and people look jobs up by name and by
-- when they ran, not by UUID. So each job's record (the job object ModelArts
-- returned, secrets redacted), its events and its tasks' resource metrics are
-- kept here (and as documents next to its logs), and the filters every reading
-- command shares get their indexes. Two views make the index easy to query
-- with sqlite3 or Datasette; docs/INDEX.md describes them and what stays stable.
-- Times are epoch milliseconds, UTC.

CREATE TABLE job_records (
    job_id               TEXT PRIMARY KEY NOT NULL REFERENCES jobs (job_id),
    -- The job object of the search or details call, as JSON, secrets redacted;
    -- NULL for a job ModelArts deleted before malog read its record.
    record               TEXT,
    phase                TEXT,            -- status.phase when the record was read
    -- Fields of the record that listings show, copied out for SQL.
    user_name            TEXT,
    flavor               TEXT,            -- spec.resource.flavor_id
    node_count           INTEGER,         -- spec.resource.node_count
    engine               TEXT,            -- algorithm.engine.engine_name (+ version)
    start_time_ms        INTEGER,         -- status.start_time; 0 if never started
    duration_ms          INTEGER,         -- status.duration
    record_key           TEXT,            -- job.json in storage
    record_updated_at_ms INTEGER NOT NULL, -- when the record last changed
    -- The job's events (§2.9), a JSON array, newest first, once read.
    events               TEXT,
    events_key           TEXT,            -- events.json in storage
    events_fetched_at_ms INTEGER,
    -- The tasks' resource metrics (§2.10), a JSON object keyed by task, read
    -- once the job is final.
    metrics              TEXT,
    metrics_key          TEXT,            -- metrics.json in storage
    metrics_fetched_at_ms INTEGER,
    -- Why events or metrics could not be read at the last attempt, and how
    -- many attempts failed since the last success.
    last_error           TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    -- 1 once the job is final and its events and metrics were read after that
    -- (or could not be, three times): later runs do not ask again.
    sealed               INTEGER NOT NULL DEFAULT 0
);

-- The shared filters: newest first, by creation time, phase, name and task.
CREATE INDEX jobs_by_created ON jobs (created_at_ms DESC, job_id);
CREATE INDEX jobs_by_phase ON jobs (phase, created_at_ms DESC);
CREATE INDEX jobs_by_name ON jobs (name);
CREATE INDEX tasks_by_task ON tasks (task_id, state);

-- One row per job: what `malog jobs` shows.
CREATE VIEW job_summary AS
SELECT j.job_id, j.name, j.phase, j.created_at_ms, j.ended_at_ms,
       r.duration_ms, r.user_name, r.flavor, r.node_count, r.engine,
       j.task_count,
       (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.state = 'archived') AS tasks_archived,
       (SELECT COALESCE(SUM(t.size), 0) FROM tasks t WHERE t.job_id = j.job_id AND t.storage_key IS NOT NULL) AS bytes,
       (SELECT MAX(t.fetched_at_ms) FROM tasks t WHERE t.job_id = j.job_id) AS last_fetched_at_ms,
       j.seen_at_ms
  FROM jobs j LEFT JOIN job_records r ON r.job_id = j.job_id;

-- One row per task with its job's name, phase and creation time.
CREATE VIEW task_summary AS
SELECT t.job_id, j.name AS job_name, j.phase AS job_phase, j.created_at_ms AS job_created_at_ms,
       t.task_id, t.state, t.size, t.sha256, t.location, t.compression, t.stored_size,
       t.fetched_at_ms, t.checked_at_ms, t.attempts, t.last_error, t.sealed
  FROM tasks t JOIN jobs j ON j.job_id = t.job_id;
