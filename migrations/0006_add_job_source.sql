-- Why: one index now serves several sources (projects, regions, accounts; issue
-- 15). Every job row says which configured source it came from, so reading
-- commands can select by source and status and metrics can show each one.
-- Jobs archived before this migration came from the one `[modelarts]` source,
-- whose name is `default`.
-- A job id stays the job's identity in the index: ModelArts job ids are UUIDs,
-- unique across projects and regions. A pass never takes over a job that
-- another source recorded (it reports the clash instead), so a project
-- configured twice cannot mix two sources' rows.

ALTER TABLE jobs ADD COLUMN source TEXT NOT NULL DEFAULT 'default';

CREATE INDEX jobs_by_source ON jobs (source, created_at_ms DESC);

-- The views gain the job's source, as their last column.
DROP VIEW job_summary;
CREATE VIEW job_summary AS
SELECT j.job_id, j.name, j.phase, j.created_at_ms, j.ended_at_ms,
       r.duration_ms, r.user_name, r.flavor, r.node_count, r.engine,
       j.task_count,
       (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.state = 'archived') AS tasks_archived,
       (SELECT COALESCE(SUM(t.size), 0) FROM tasks t WHERE t.job_id = j.job_id AND t.storage_key IS NOT NULL) AS bytes,
       (SELECT MAX(t.fetched_at_ms) FROM tasks t WHERE t.job_id = j.job_id) AS last_fetched_at_ms,
       j.seen_at_ms,
       j.source
  FROM jobs j LEFT JOIN job_records r ON r.job_id = j.job_id;

DROP VIEW task_summary;
CREATE VIEW task_summary AS
SELECT t.job_id, j.name AS job_name, j.phase AS job_phase, j.created_at_ms AS job_created_at_ms,
       t.task_id, t.state, t.size, t.sha256, t.location, t.compression, t.stored_size,
       t.fetched_at_ms, t.checked_at_ms, t.attempts, t.last_error, t.sealed,
       j.source
  FROM tasks t JOIN jobs j ON j.job_id = t.job_id;
