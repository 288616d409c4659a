-- 0001 init (PostgreSQL): the whole first schema of the control plane.
-- Why this shape:
--   * Money is NUMERIC (exact, unbounded precision), read and written as rust_decimal. Spend
--     counters are added to in SQL (`spent_usd + EXCLUDED.spent_usd`), so concurrent replicas
--     never lose an update.
--   * Times are Unix seconds (BIGINT), the unit tollgate-core works in.
--   * Ids are TEXT: they are the names the filter sees in the principal chain.
--   * The same number in migrations/sqlite is the same change.

-- One row: the versions the snapshot is keyed on. `version` is bumped by every change (it is
-- the snapshot's ETag); the per-section versions let the snapshot builder reload only what
-- changed; `clock` is the latest time boundary (window end, price effective date) already
-- accounted for, so every replica flips at the same version.
CREATE TABLE meta (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    version         BIGINT NOT NULL,
    keys_version    BIGINT NOT NULL,
    budgets_version BIGINT NOT NULL,
    prices_version  BIGINT NOT NULL,
    clock           BIGINT NOT NULL
);
INSERT INTO meta (id, version, keys_version, budgets_version, prices_version, clock)
VALUES (1, 1, 1, 1, 1, 0);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX projects_org ON projects (org_id);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    name       TEXT NOT NULL,
    email      TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX users_org ON users (org_id);

-- Virtual keys: only the SHA-256 of the secret is stored; `prefix` is what listings show.
CREATE TABLE virtual_keys (
    id         TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    name       TEXT NOT NULL,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    project_id TEXT REFERENCES projects (id),
    user_id    TEXT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX virtual_keys_org ON virtual_keys (org_id);

-- Budgets attach to any link of a principal chain by (scope, scope_id); the id need not be
-- registered here, because a trusted principal header can name ids the control plane never saw.
CREATE TABLE budgets (
    id             TEXT PRIMARY KEY,
    scope          TEXT NOT NULL CHECK (scope IN ('org', 'project', 'user', 'key')),
    scope_id       TEXT NOT NULL,
    period         TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly', 'total')),
    timezone       TEXT NOT NULL,
    limit_usd      NUMERIC NOT NULL,
    soft_limit_usd NUMERIC,
    mode           TEXT NOT NULL CHECK (mode IN ('enforce', 'shadow')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (scope, scope_id, period)
);

-- Spend per budget per window, maintained in the ingestion transaction: no hot path sums
-- the ledger. A total budget's window starts at i64::MIN.
CREATE TABLE budget_spend (
    budget_id    TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    window_start BIGINT NOT NULL,
    spent_usd    NUMERIC NOT NULL,
    PRIMARY KEY (budget_id, window_start)
);
-- The snapshot reads the counters of the current windows by their start.
CREATE INDEX budget_spend_window ON budget_spend (window_start, budget_id);

-- Prices: immutable revisions. The price of a model at time t is its revision with the
-- greatest effective_from <= t (ties: the later id); a NULL price deletes the model from then on.
CREATE TABLE price_revisions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model          TEXT NOT NULL,
    effective_from BIGINT NOT NULL,
    price          TEXT,
    source         TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX price_revisions_model ON price_revisions (model, effective_from, id);
CREATE INDEX price_revisions_effective ON price_revisions (effective_from);

-- The usage ledger: one row per metered request, unique by the filter's event id.
CREATE TABLE usage_events (
    id            TEXT PRIMARY KEY,
    reporter      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    ts            BIGINT NOT NULL,
    org_id        TEXT NOT NULL,
    project_id    TEXT,
    user_id       TEXT,
    key_id        TEXT,
    model         TEXT NOT NULL,
    api           TEXT NOT NULL,
    charge        TEXT NOT NULL,
    uncharged     TEXT,
    status        INTEGER NOT NULL,
    stream        BOOLEAN NOT NULL,
    price_version BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd      NUMERIC NOT NULL,
    detail        TEXT NOT NULL,
    received_at   BIGINT NOT NULL
);
-- Spend queries filter by a time range and one scope (budget back-fills do the same). Only
-- the time index and the organisation index exist: an index led by a key, user or project id
-- takes every batch's rows at thousands of places in the tree (one per key), which cost more
-- than half of the ingestion time in `cargo bench -p tollgate-benches --bench ingest`; queries
-- on those scopes read the time range (or the organisation's range) and filter.
CREATE INDEX usage_events_ts ON usage_events (ts);
CREATE INDEX usage_events_org_ts ON usage_events (org_id, ts);

-- Per reporter, the highest seq whose events up to it are all stored (the snapshot's
-- `reporters`), and the seqs stored beyond a gap, waiting for it to close.
CREATE TABLE reporters (
    reporter  TEXT PRIMARY KEY,
    acked_seq BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE TABLE reporter_pending (
    reporter TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (reporter, seq)
);
