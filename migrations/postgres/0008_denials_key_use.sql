-- 0008 refusals per budget, soft warnings, and keys' last use (PostgreSQL). Same change as
-- migrations/sqlite/0008.
-- Why: budget owners learned that a budget ran out from their users' 429s. The filter now
-- reports what it refused (one denial record per budget, principal and model per second and
-- worker, see tollgate_core::denials) and which soft limits each admitted request crossed.
--   * A denial record is a ledger row like any event (idempotent by id, acknowledged by seq)
--     with no cost; `denied_by` names the budget that refused it. Only those rows enter the
--     partial index, so metered rows cost ingestion nothing more.
--   * `budget_window_stats`: per budget and window, the requests refused and soft-warned, and
--     the first and last refusal; kept in the ingestion transaction (only batches that carry
--     refusals or warnings touch it). It goes with its budget.
--   * `virtual_keys.last_used_at`: when a key last made a request the ledger knows of
--     (written at most once a minute per key and replica; see store/key_use.rs).
ALTER TABLE usage_events ADD COLUMN denied_by TEXT;
CREATE INDEX usage_events_denied ON usage_events (denied_by, ts) WHERE denied_by IS NOT NULL;
CREATE TABLE budget_window_stats (
    budget_id       TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    window_start    BIGINT NOT NULL,
    denied          BIGINT NOT NULL DEFAULT 0,
    soft_warned     BIGINT NOT NULL DEFAULT 0,
    first_denied_at BIGINT,
    last_denied_at  BIGINT,
    PRIMARY KEY (budget_id, window_start)
);
ALTER TABLE virtual_keys ADD COLUMN last_used_at BIGINT;
