-- 0002 active keys index (SQLite): the snapshot reads every active key in `sha256` order. Through
-- the `sha256` unique index that is one table look-up per key (100,000 random look-ups for a
-- large fleet, most of a cold snapshot build); this partial index holds every column the
-- snapshot needs, so the read is one ordered scan of the index alone.
CREATE INDEX virtual_keys_active ON virtual_keys (sha256, id, org_id, project_id, user_id)
    WHERE revoked_at IS NULL;
