//! `/v1/alerts`: webhook subscriptions and their delivery log (`crate::alerts`).
//!
//! - `POST /v1/alerts/webhooks` creates one; the signing secret is in that answer and in no
//!   other, ever. A manager creates them for its organisation only (`org_id` defaults to it);
//!   one without `org_id` (every organisation, and the fleet) is an admin's.
//! - `GET` lists and reads (a viewer too, with the URL cut to its scheme and host), `PATCH` changes, `DELETE` removes (with its
//!   deliveries), each confined to the caller's organisation.
//! - `GET /v1/alerts/deliveries`: the delivery log, newest first, a page at a time like
//!   `/v1/audit` (`before`, `limit`), filtered by `org_id`, `webhook_id`, `status`, `kind`.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{next_before, ApiError, ApiJson, ApiPath, Params};
use super::formats::{Id, IdPath, Name};
use super::{check_id, check_name, Access, AppState};
use crate::alerts::deliveries::{Delivery, DeliveryQuery};
use crate::alerts::webhooks::{CreatedWebhook, NewWebhook, Webhook, WebhookPatch};
use crate::alerts::{EventClass, Format};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/alerts/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewWebhook)]
pub struct NewWebhookBody {
    /// The organisation whose budgets it watches (a manager's own by default); absent for an
    /// admin: every organisation, and the fleet.
    #[schema(value_type = Option<Id>)]
    pub(crate) org_id: Option<String>,
    /// Display name (default `webhook`).
    #[schema(value_type = Option<Name>)]
    pub(crate) name: Option<String>,
    /// Where to POST (`http` or `https`; no user or password in it).
    pub(crate) url: String,
    /// `tollgate` (default) or `slack`.
    #[serde(default)]
    pub(crate) format: Format,
    /// Only these budgets.
    #[serde(default)]
    pub(crate) budget_ids: Vec<String>,
    /// Only budgets on these principals (an org id: every budget of that organisation).
    #[serde(default)]
    pub(crate) scope_ids: Vec<String>,
    /// Which events (default: all; `fleet_stale` only without `org_id`).
    #[serde(default)]
    pub(crate) events: BTreeSet<EventClass>,
    /// Utilization thresholds, percent of the hard limit (default 50, 80, 95, 100).
    #[serde(default)]
    pub(crate) thresholds: BTreeSet<u32>,
    /// Default true.
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/alerts/webhooks/{id}` body: each field given replaces it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookPatch)]
pub struct WebhookPatchBody {
    /// Display name.
    #[schema(value_type = Option<Name>)]
    name: Option<String>,
    /// Where to POST.
    url: Option<String>,
    /// Body format.
    format: Option<Format>,
    /// Only these budgets.
    budget_ids: Option<Vec<String>>,
    /// Only budgets on these principals.
    scope_ids: Option<Vec<String>>,
    /// Which events (empty: all).
    events: Option<BTreeSet<EventClass>>,
    /// Thresholds (empty: the defaults).
    thresholds: Option<BTreeSet<u32>>,
    /// Enabled.
    enabled: Option<bool>,
}

/// Create a webhook subscription; the signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/alerts/webhooks", request_body = NewWebhookBody, responses(
    (status = 201, description = "Created", body = CreatedWebhook),
    (status = 422, description = "A field is not valid"),
))]
pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewWebhookBody>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let created = s
        .store
        .create_webhook(&body.check(&who)?, s.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

impl NewWebhookBody {
    /// The subscription `who` asks for (its organisation by default), checked as the API and
    /// the console check it: ids and name well formed, the organisation `who`'s to watch. The
    /// store checks the rest (URL, events, thresholds).
    pub(crate) fn check(self, who: &Principal) -> ApiResult<NewWebhook> {
        let org_id = self.org_id.or_else(|| who.org().map(str::to_string));
        if let Some(org) = &org_id {
            check_id("org_id", org)?;
        }
        who.require_org(org_id.as_deref())?;
        let name = self.name.unwrap_or_else(|| "webhook".into());
        check_name("name", &name)?;
        Ok(NewWebhook {
            org_id,
            name,
            url: self.url,
            format: self.format,
            budget_ids: self.budget_ids,
            scope_ids: self.scope_ids,
            events: self.events,
            thresholds: self.thresholds,
            enabled: self.enabled,
        })
    }
}

/// List webhook subscriptions (never a secret).
#[utoipa::path(get, path = "/v1/alerts/webhooks", params(
    ("org_id" = Option<String>, Query, nullable = false, description = "Only this organisation's"),
), responses(
    (status = 200, description = "OK", body = Vec<Webhook>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<Vec<Webhook>>> {
    q.only(&["org_id"])?;
    let org = who.org_filter(q.get("org_id"))?;
    let list = s.store.list_webhooks(org).await?;
    Ok(Json(list.iter().map(|w| shown(&who, w)).collect()))
}

/// A subscription as `who` sees it: whole to those who may change it, with its URL redacted
/// to a viewer (a hook's path or query may be its credential).
pub(crate) fn shown(who: &Principal, w: &Webhook) -> Webhook {
    if who.allows(Access::OrgWrite) {
        w.clone()
    } else {
        w.redacted()
    }
}

/// A subscription the caller may see (403 for another organisation's).
pub(crate) async fn visible(s: &AppState, who: &Principal, id: &str) -> ApiResult<Webhook> {
    let w = s.store.get_webhook(id).await?;
    who.require_org(w.org_id.as_deref())?;
    Ok(w)
}

/// Get a webhook subscription.
#[utoipa::path(get, path = "/v1/alerts/webhooks/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = Webhook),
    (status = 404, description = "No such subscription"),
))]
pub async fn get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(shown(&who, &visible(&s, &who, &id).await?)))
}

/// Change a webhook subscription (its organisation and secret stay).
#[utoipa::path(patch, path = "/v1/alerts/webhooks/{id}", params(IdPath),
    request_body = WebhookPatchBody, responses(
    (status = 200, description = "OK", body = Webhook),
    (status = 404, description = "No such subscription"),
    (status = 422, description = "A field is not valid"),
))]
pub async fn update(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WebhookPatchBody>,
) -> ApiResult<Json<Webhook>> {
    visible(&s, &who, &id).await?;
    if let Some(name) = &body.name {
        check_name("name", name)?;
    }
    let patch = WebhookPatch {
        name: body.name,
        url: body.url,
        format: body.format,
        budget_ids: body.budget_ids,
        scope_ids: body.scope_ids,
        events: body.events,
        thresholds: body.thresholds,
        enabled: body.enabled,
    };
    Ok(Json(
        s.store.update_webhook(&id, &patch, s.clock.now()).await?,
    ))
}

/// Delete a webhook subscription and its deliveries.
#[utoipa::path(delete, path = "/v1/alerts/webhooks/{id}", params(IdPath), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such subscription"),
))]
pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    visible(&s, &who, &id).await?;
    s.store.delete_webhook(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One page of the delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Deliveries, newest first.
    pub deliveries: Vec<Delivery>,
    /// `before` of the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// List alert deliveries: status, attempts, last HTTP status or error, next attempt.
#[utoipa::path(get, path = "/v1/alerts/deliveries", params(
    ("org_id" = Option<String>, Query, nullable = false, description = "Only this organisation's subscriptions'"),
    ("webhook_id" = Option<String>, Query, nullable = false, description = "Only this subscription's"),
    ("status" = Option<String>, Query, nullable = false, description = "pending, delivered or failed"),
    ("kind" = Option<String>, Query, nullable = false, description = "Only this event kind (threshold_80, hard_limit, …)"),
    ("before" = Option<i64>, Query, nullable = false, description = "Only rows older than this id (next_before of the previous page)"),
    ("limit" = Option<String>, Query, nullable = false, description = "At most this many rows, 1 to 1000 (default 100)"),
), responses(
    (status = 200, description = "OK", body = DeliveryPage),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn deliveries(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<DeliveryPage>> {
    q.only(&["org_id", "webhook_id", "status", "kind", "before", "limit"])?;
    let before_id = q.before_id()?;
    if let Some(st) = q.get("status") {
        if !matches!(st, "pending" | "delivered" | "failed") {
            return Err(ApiError::invalid(
                "status",
                "must be pending, delivered or failed",
            ));
        }
    }
    let limit = q.limit("limit", 1_000, 100)?;
    let owned = |name: &str| q.get(name).map(str::to_string);
    let query = DeliveryQuery {
        org_id: who.org_filter(q.get("org_id"))?.map(str::to_string),
        webhook_id: owned("webhook_id"),
        status: owned("status"),
        kind: owned("kind"),
        before_id,
        limit,
    };
    let deliveries = s.store.list_deliveries(&query).await?;
    let next_before = next_before(&deliveries, limit, |d| d.id);
    Ok(Json(DeliveryPage {
        deliveries,
        next_before,
    }))
}
