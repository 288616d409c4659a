-- 0010 the console's sign-in sessions (postgres). Same change as migrations/sqlite/0010.
-- Why:
--   * The console at /ui (control-plane/src/ui/) signs a person in with an API token once and
--     then carries a session cookie, so the token itself never sits in the browser. The cookie
--     holds a random session id; only its SHA-256 is stored here (a copy of this table opens
--     no session), with the CSRF token of the session's forms and when it expires.
--   * `token_id` is the API token the session was opened with (NULL: the environment's admin
--     token). Every request reads the token again, so revoking it closes its sessions; a
--     token's row is never deleted, but its organisation's deletion takes both with it.
--   * `admin_tag` (admin token sessions only) is SHA-256 of the admin token's digest and the
--     session id: a session of an admin token that has since been changed is refused.
--   * Shared by every replica (PostgreSQL), so any of them serves any session.
CREATE TABLE ui_sessions (
    id_sha256  TEXT PRIMARY KEY,
    token_id   TEXT REFERENCES api_tokens (id) ON DELETE CASCADE,
    admin_tag  TEXT,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
