-- Why: an append in place (a grown local copy on a file system without
-- reflinks, see src/storage/local/append.rs) leaves an intent naming its
-- storage key; every pass settles each intent against the stored size its
-- task row commits. Without this index that lookup scanned every task row
-- (a million-row index, a few hundred milliseconds per grown log, with the
-- index held). Rows without a copy have no key and take no room.

CREATE INDEX tasks_by_storage_key ON tasks (storage_key) WHERE storage_key IS NOT NULL;
