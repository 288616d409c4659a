//! `GET /v1/audit`: the audit log (`store/audit.rs`), newest first, a page at a time. An admin
//! sees every row; a manager or viewer only its organisation's. Filters: `org_id`, `actor`,
//! `object_type`, `object_id`, `from` / `to` (as `/v1/spend` reads them), `before` (the
//! previous page's `next_before`) and `limit` (1 to 1,000, default 100).

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{next_before, ApiError, Params};
use super::spend::time_param;
use super::AppState;
use crate::store::audit::{AuditEntry, AuditQuery};

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Rows, newest first.
    pub entries: Vec<AuditEntry>,
    /// `before` of the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// List the audit log.
#[utoipa::path(get, path = "/v1/audit", params(
    ("org_id" = Option<String>, Query, nullable = false, description = "Only this organisation's changes"),
    ("actor" = Option<String>, Query, nullable = false, description = "Only this token's (or admin-env's) changes"),
    ("object_type" = Option<String>, Query, nullable = false, description = "org, project, user, key, budget, price, bulk, token or webhook"),
    ("object_id" = Option<String>, Query, nullable = false, description = "Only this object's changes"),
    ("from" = Option<String>, Query, nullable = false, description = "Unix seconds, RFC 3339 or YYYY-MM-DD (inclusive)"),
    ("to" = Option<String>, Query, nullable = false, description = "Unix seconds, RFC 3339 or YYYY-MM-DD (exclusive)"),
    ("before" = Option<i64>, Query, nullable = false, description = "Only rows older than this id (next_before of the previous page)"),
    ("limit" = Option<String>, Query, nullable = false, description = "At most this many rows, 1 to 1000 (default 100)"),
), responses(
    (status = 200, description = "OK", body = AuditPage),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> Result<Json<AuditPage>, ApiError> {
    q.only(&[
        "org_id",
        "actor",
        "object_type",
        "object_id",
        "from",
        "to",
        "before",
        "limit",
    ])?;
    let before_id = q.before_id()?;
    let limit = q.limit("limit", 1_000, 100)?;
    let owned = |name: &str| q.get(name).map(str::to_string);
    let query = AuditQuery {
        org_id: who.org_filter(q.get("org_id"))?.map(str::to_string),
        actor: owned("actor"),
        object_type: owned("object_type"),
        object_id: owned("object_id"),
        from: time_param(&q, "from")?,
        to: time_param(&q, "to")?,
        before_id,
        limit,
    };
    let entries = s.store.audit_log(&query).await?;
    let next_before = next_before(&entries, limit, |e| e.id);
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}
