//! The audit log: one row per change made through the management API (migration 0007) —
//! who made it (an API token's id, or `admin-env` for `TOLLGATE_ADMIN_TOKEN`), the route, the
//! object (type, id, organisation) and the object before and after as JSON. Never a secret:
//! the JSON is the object as the API lists it (a key's or a token's prefix, not its secret).
//!
//! Each store method that changes something writes its row with [`audit!`] inside its own
//! transaction, so a committed change always has its row and a rolled-back one never does.
//! Who and which route come from the request's [`Context`], which the management middleware
//! (`http/auth.rs`) sets for the handler's task with [`scope`]: the store's signatures stay
//! what they were. A store call outside a request (a test, an embedding program) is recorded
//! as actor `local`, action `store`.

use std::future::Future;

use serde::Serialize;

use super::{with_pool, Store, StoreError};

/// Who and which route, for the changes made while handling one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// A token id, or `admin-env`.
    pub actor: String,
    /// `METHOD /route/{template}`.
    pub action: String,
    /// Unix seconds (the app's clock).
    pub at: i64,
}

tokio::task_local! {
    static CONTEXT: Context;
}

/// Runs `f` with `ctx` as the context of every change it makes through the store.
pub async fn scope<F: Future>(ctx: Context, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

/// The context of the running task, `local`/`store` outside a request.
pub(crate) fn current() -> Context {
    CONTEXT.try_with(Clone::clone).unwrap_or_else(|_| Context {
        actor: "local".into(),
        action: "store".into(),
        at: super::unix_now(),
    })
}

/// One change, as a store method describes it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// `org`, `project`, `user`, `key`, `budget`, `price`, `bulk`, `token`, `webhook`.
    pub object_type: &'static str,
    /// The object's id.
    pub object_id: String,
    /// Its organisation, when it has one (a budget on an unregistered principal has none).
    pub org_id: Option<String>,
    /// The object before (absent for a creation).
    pub before: Option<String>,
    /// The object after (absent for a deletion).
    pub after: Option<String>,
}

impl Change {
    /// A change of `object_type` `id` in `org`, with the object before and after.
    pub fn new<B: Serialize, A: Serialize>(
        object_type: &'static str,
        id: &str,
        org_id: Option<&str>,
        before: Option<&B>,
        after: Option<&A>,
    ) -> Result<Change, StoreError> {
        Ok(Change {
            object_type,
            object_id: id.to_string(),
            org_id: org_id.map(str::to_string),
            before: before.map(to_json).transpose()?,
            after: after.map(to_json).transpose()?,
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// No object on that side of a change (a creation has no before, a deletion no after).
pub(crate) const NONE: Option<&()> = None;

/// Writes the audit row of `$change` (a [`Change`], or a `Result` of one) on transaction
/// `$tx`, with the running request's [`Context`].
macro_rules! audit {
    ($tx:expr, $change:expr) => {{
        let change: $crate::store::audit::Change = $change?;
        let ctx = $crate::store::audit::current();
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, object_type, object_id, org_id, \
             before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ctx.at)
        .bind(&ctx.actor)
        .bind(&ctx.action)
        .bind(change.object_type)
        .bind(&change.object_id)
        .bind(&change.org_id)
        .bind(&change.before)
        .bind(&change.after)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use audit;

/// The organisation of the principal `scope` `id` names (registered ones only), as a
/// statement binding the scope as `$1` and the id as `$2`.
pub(crate) const ORG_OF_SCOPE: &str = "SELECT CASE CAST($1 AS TEXT) \
     WHEN 'org' THEN (SELECT id FROM orgs WHERE id = $2) \
     WHEN 'project' THEN (SELECT org_id FROM projects WHERE id = $2) \
     WHEN 'user' THEN (SELECT org_id FROM users WHERE id = $2) \
     WHEN 'key' THEN (SELECT org_id FROM virtual_keys WHERE id = $2) END";

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increasing with time; the cursor of the next page.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// A token id, `admin-env` (the environment's admin token) or `local`.
    pub actor: String,
    /// The route: `METHOD /path/{template}`.
    pub action: String,
    /// `org`, `project`, `user`, `key`, `budget`, `price`, `bulk`, `token` or `webhook`.
    pub object_type: String,
    /// The object's id.
    pub object_id: String,
    /// The object's organisation, if it has one.
    pub org_id: Option<String>,
    /// The object before the change (absent for a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The object after the change (absent for a deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

type Row = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Which rows to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this organisation's.
    pub org_id: Option<String>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only this object type.
    pub object_type: Option<String>,
    /// Only this object.
    pub object_id: Option<String>,
    /// At or after, Unix seconds.
    pub from: Option<i64>,
    /// Before, Unix seconds.
    pub to: Option<i64>,
    /// Only rows with a smaller id (the previous page's `next_before`).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

impl Store {
    /// Rows of the audit log, newest first.
    pub async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<Row> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(
                "SELECT id, at, actor, action, object_type, object_id, org_id, before_json, \
                 after_json FROM audit_log WHERE ($1 IS NULL OR org_id = $1) \
                 AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR object_type = $3) \
                 AND ($4 IS NULL OR object_id = $4) AND ($5 IS NULL OR at >= $5) \
                 AND ($6 IS NULL OR at < $6) AND ($7 IS NULL OR id < $7) \
                 ORDER BY id DESC LIMIT $8",
            )
            .bind(&q.org_id)
            .bind(&q.actor)
            .bind(&q.object_type)
            .bind(&q.object_id)
            .bind(q.from)
            .bind(q.to)
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?
        });
        let json = |v: Option<String>| {
            v.map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("audit_log: {e}")))
        };
        rows.into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.0,
                    at: r.1,
                    actor: r.2,
                    action: r.3,
                    object_type: r.4,
                    object_id: r.5,
                    org_id: r.6,
                    before: json(r.7)?,
                    after: json(r.8)?,
                })
            })
            .collect()
    }

    /// The organisation of the registered principal `scope` `id`, if any.
    pub async fn org_of_scope(
        &self,
        scope: tollgate_core::budget::Scope,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_scalar::<_, Option<String>>(ORG_OF_SCOPE)
                .bind(scope.as_str())
                .bind(id)
                .fetch_one(pool)
                .await?
        }))
    }
}
