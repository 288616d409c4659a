-- 0007 scoped API tokens and the audit log (postgres). Same change as migrations/sqlite/0007.
-- Why:
--   * One admin token from the environment could do everything, and nobody could tell who
--     changed what. API tokens carry a role (admin, manager or viewer) and, for the last two,
--     the one organisation they act on. Only the SHA-256 of a token's secret is stored (like a
--     virtual key's); `prefix` is what listings show. Revoking sets `revoked_at`; a row is
--     never reused. Tokens of a deleted organisation go with it.
--   * Every change made through the management API is recorded in `audit_log`, in the
--     transaction of the change: who (a token id, or `admin-env`), the route, the object,
--     its organisation (so a manager can list its own) and the object before and after as JSON
--     text (never a secret). The log has no foreign keys: it outlives what it describes.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'viewer')),
    org_id        TEXT REFERENCES orgs (id) ON DELETE CASCADE,
    prefix        TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    CHECK ((role = 'admin' AND org_id IS NULL) OR (role <> 'admin' AND org_id IS NOT NULL))
);
CREATE INDEX api_tokens_org ON api_tokens (org_id);
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    org_id      TEXT,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_org ON audit_log (org_id, id);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id, id);
