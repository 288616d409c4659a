-- 0011 the spend rollup (SQLite). Same change as migrations/postgres/0011.
-- Why: the console's spend chart summed every ledger row of its range in Rust (~6 µs a row):
-- 30 days of a 10 M-row ledger took a minute. `spend_rollup` holds, per quarter hour,
-- organisation and model, the metered requests, their tokens and their exact cost (TEXT
-- decimal, summed in Rust like every SQLite money column), so a report grouped by day, hour,
-- model or organisation reads at most 2,880 buckets × organisations × models for 30 days.
--   * `bucket` is Unix seconds aligned to 900: every IANA zone's offset of today is a multiple
--     of 15 minutes, so a local day or hour is a whole number of buckets (`Store::spend`
--     checks it for each bucket it reads and reads the ledger when it is not so).
--   * Keyed (bucket, model, org_id): the console's chart groups by bucket and model, which
--     this order reads without sorting (three times faster than (bucket, org_id, model) for
--     30 days on SQLite).
--   * Only (org, model): reports stacked by key, user or project, or filtered to one of them,
--     keep reading the ledger; more key columns would bring the rows back.
--   * Kept in the ingestion transaction from the rows it inserts (denial records excluded).
--   * The rows stored before this migration are summed by the control plane (in Rust, exact)
--     when it next migrates: `meta.spend_rollup_built` is 0 until then (store/rollup.rs).
CREATE TABLE spend_rollup (
    bucket        INTEGER NOT NULL,
    org_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      TEXT NOT NULL,
    PRIMARY KEY (bucket, model, org_id)
) WITHOUT ROWID;
ALTER TABLE meta ADD COLUMN spend_rollup_built INTEGER NOT NULL DEFAULT 0;
