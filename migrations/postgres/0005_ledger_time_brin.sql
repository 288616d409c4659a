-- 0005 the ledger's time index as a BRIN index (PostgreSQL). Ledger rows arrive in about the
-- order of their `ts` (a batch spans seconds, a late retry an outage), so the least and
-- greatest `ts` of each range of 128 pages find a time range for spend reports and budget
-- back-fills, which read the rows of the range anyway, while the b-tree was one more index
-- entry per event on the ingestion path (~0.6 ms of a 1,000-event insert of ~4 ms, in 100
-- committed inserts into a 512,000-row ledger). The (org_id, ts) b-tree stays: an
-- organisation's range is a small part of a time range. Same number as migrations/sqlite/0005.
DROP INDEX usage_events_ts;
CREATE INDEX usage_events_ts ON usage_events USING brin (ts);
