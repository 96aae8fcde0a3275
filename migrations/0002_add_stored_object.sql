-- Why: objects may now be stored compressed (zstd) and in S3. The index must tell
-- the original log (size, sha256: what change detection, `cat` and the summary
-- speak of) from the bytes actually stored (stored_size, stored_sha256: what
-- `verify` re-hashes), and record per row how the object was encoded, so that
-- switching compression on keeps every older object readable.
-- Rows archived before this migration were stored as downloaded, so their stored
-- object is the log itself.

ALTER TABLE tasks ADD COLUMN stored_size INTEGER;
ALTER TABLE tasks ADD COLUMN stored_sha256 TEXT;
-- none or zstd.
ALTER TABLE tasks ADD COLUMN compression TEXT NOT NULL DEFAULT 'none';

UPDATE tasks SET stored_size = size, stored_sha256 = sha256
 WHERE storage_key IS NOT NULL AND sha256 IS NOT NULL;
