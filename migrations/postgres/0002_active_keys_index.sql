-- 0002 active keys index (PostgreSQL): the snapshot reads every active key in `sha256` order;
-- this partial index carries the columns it needs, so the read can be an index-only scan
-- instead of a sort of the table. Same change as migrations/sqlite/0002.
CREATE INDEX virtual_keys_active ON virtual_keys (sha256) INCLUDE (id, org_id, project_id, user_id)
    WHERE revoked_at IS NULL;
