-- 0003 key buckets (PostgreSQL): the snapshot's `keys` array, kept assembled in pieces. A cold
-- snapshot build (the first after start, or after any key change) read and encoded every
-- active key; with 100,000 keys that was most of the build. Now each key change re-encodes
-- only the keys sharing the first three hex digits of its `sha256` (its bucket: 4,096 of
-- them, ~25 keys each for 100,000 keys), in the same transaction, and a build reads the
-- buckets as they are (`store/key_buckets.rs` writes them; `tests/store.rs` checks the bytes
-- against serde's, the back-fill below included). Same change as migrations/sqlite/0003.
CREATE TABLE key_buckets (
    bucket  TEXT PRIMARY KEY,  -- substr(sha256, 1, 3) of its keys
    keys    BIGINT NOT NULL,   -- how many active keys it holds
    entries TEXT NOT NULL      -- their `KeyEntry` JSON objects in `sha256` order, comma-separated
);
-- Out of line but not compressed: a cold build reads every bucket, and decompressing them
-- took longer than reading them.
ALTER TABLE key_buckets ALTER COLUMN entries SET STORAGE EXTERNAL;

-- The bucket of a key is found by this expression; the snapshot no longer reads every active
-- key in `sha256` order, so 0002's index goes.
CREATE INDEX virtual_keys_bucket ON virtual_keys (substr(sha256, 1, 3)) WHERE revoked_at IS NULL;
DROP INDEX virtual_keys_active;

-- Back-fill: the statement `key_buckets::refresh_all_sql(true)` runs.
INSERT INTO key_buckets (bucket, keys, entries)
SELECT substr(sha256, 1, 3), count(*), string_agg('{"sha256":' || to_json(sha256)::text || ',"principal":{"key":' || to_json(id)::text || CASE WHEN user_id IS NULL THEN '' ELSE ',"user":' || to_json(user_id)::text END || CASE WHEN project_id IS NULL THEN '' ELSE ',"project":' || to_json(project_id)::text END || ',"org":' || to_json(org_id)::text || '}}', ',' ORDER BY sha256)
FROM virtual_keys WHERE revoked_at IS NULL GROUP BY substr(sha256, 1, 3);
