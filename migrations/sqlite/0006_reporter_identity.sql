-- 0006 reporter identity, event content and the served model (SQLite). Same change as
-- migrations/postgres/0006.
-- Why:
--   * Every Envoy used to report usage with the one shared data-plane token under a reporter id
--     it chose itself, and the snapshot published every reporter's acknowledged sequence: any
--     holder of that token could post events under a real Envoy's next ids, and the real
--     events were then dropped as duplicates. A reporter is now enrolled by the control plane
--     (`POST /v1/reporters`), which mints its id and a secret; only the SHA-256 of the secret
--     is stored, and usage posts must carry the secret of the reporter they report for.
--     Reporters seen before this migration have no secret: nobody can post under them again.
--   * An event id that arrives again with different content was taken for a duplicate. Each
--     ledger row now keeps the SHA-256 of its event's content, so a repeat is compared, and a
--     different content is refused as a conflict. Rows stored before have none (NULL): a
--     repeat of those is taken as a duplicate, as before.
--   * The control plane recomputes each event's cost from its usage and its own price of the
--     model; `cost_check` records the outcome (`match`, `mismatch`, `unchecked` when it has no
--     price of that version to compare with; NULL for events charged without usage and rows
--     stored before).
--   * `requested_model`: the model the request named when the provider served another
--     (`model` is the one priced).
ALTER TABLE reporters ADD COLUMN secret_sha256 TEXT;
ALTER TABLE reporters ADD COLUMN enrolled_at INTEGER;
CREATE UNIQUE INDEX reporters_secret ON reporters (secret_sha256);
ALTER TABLE usage_events ADD COLUMN content_sha256 TEXT;
ALTER TABLE usage_events ADD COLUMN cost_check TEXT;
ALTER TABLE usage_events ADD COLUMN requested_model TEXT;
