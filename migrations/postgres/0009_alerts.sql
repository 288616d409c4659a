-- 0009 alert webhooks (postgres). Same change as migrations/sqlite/0009.
-- Why:
--   * Budget owners learn that a budget ran out only from their users' 429s. Webhook
--     subscriptions (`alert_webhooks`) name a URL, which budgets or scopes, which events and
--     thresholds, and a payload format. The signing secret is kept in clear (it must sign every
--     delivery) and never leaves the control plane except once, in the answer that created it.
--     Lists (budget ids, scope ids, events, thresholds) are JSON text, read in Rust.
--   * `alert_events` is the outbox: one row per (subject, window, kind), unique, inserted in
--     the transaction that crossed the threshold (the usage batch), so a crossing can be neither
--     lost (it commits with the spend) nor doubled (a second replica's insert conflicts).
--     `subject` is a budget id (thresholds, soft and hard limit, window reset), a reporter
--     (fleet stale) or `prices` (price book changed); `window_start` the budget window's
--     start, the reporter's last_seen or the price-book version.
--   * `alert_deliveries`: one row per (event, webhook), at least once: a lease
--     (`lease_until_ms`, `lease_token`) keeps two replicas from sending the same delivery at
--     once, failures are retried at `next_attempt_ms` with exponential backoff until
--     delivered or given up (`failed`). Times in milliseconds: backoff starts at a second.
CREATE TABLE alert_webhooks (
    id          TEXT PRIMARY KEY,
    org_id      TEXT REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    format      TEXT NOT NULL CHECK (format IN ('tollgate', 'slack')),
    budget_ids  TEXT NOT NULL,
    scope_ids   TEXT NOT NULL,
    events      TEXT NOT NULL,
    thresholds  TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX alert_webhooks_org ON alert_webhooks (org_id);
CREATE TABLE alert_events (
    id           BIGSERIAL PRIMARY KEY,
    subject      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    org_id       TEXT,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (subject, window_start, kind)
);
CREATE TABLE alert_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        BIGINT NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    webhook_id      TEXT NOT NULL REFERENCES alert_webhooks (id) ON DELETE CASCADE,
    org_id          TEXT,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms  BIGINT,
    lease_token     TEXT,
    last_status     BIGINT,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_attempt_ms);
CREATE INDEX alert_deliveries_org ON alert_deliveries (org_id, id);
CREATE INDEX alert_deliveries_webhook ON alert_deliveries (webhook_id, id);
