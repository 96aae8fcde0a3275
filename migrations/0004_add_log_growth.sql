-- Why: a log that grew since the last pass is archived by appending its new bytes
-- to the archived copy instead of downloading it again from byte 0 (issue 18).
-- The copy's row must say how to extend it, and whether a full download has
-- confirmed it since it was extended: a copy built from deltas is sealed only
-- after one full download of the final log matched it.

-- What extending the copy needs (sha256 states of the log and of the stored
-- object, sha256 of the log's last bytes), written by storage and opaque to the
-- index. NULL: the copy cannot be extended (made before this migration); the
-- next change downloads the log whole and records it.
ALTER TABLE tasks ADD COLUMN growth TEXT;
-- 1: the copy was extended by a delta and no full download has confirmed it yet.
ALTER TABLE tasks ADD COLUMN unconfirmed INTEGER NOT NULL DEFAULT 0;

-- Per pass: bytes received from log links (beside `bytes`, the size of the logs
-- archived), tasks archived by a delta, final confirmations, and confirmations
-- that found the copy different from the source and replaced it.
ALTER TABLE runs ADD COLUMN downloaded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN grown INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0;
