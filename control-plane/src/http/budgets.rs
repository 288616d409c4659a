//! `/v1/budgets`: budgets on any link of the chain (scope + scope id), with a period, an IANA
//! timezone (validated against the tz database), a hard limit, an optional soft limit below
//! it, and a mode. Answers carry the current window and the spend in it (from the counters).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use tollgate_core::budget::{Mode, Period, Scope};
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::formats::{IdPath, Money, ScopeId};
use super::AppState;
use crate::store::budgets::{Budget, BudgetPatch, NewBudget};
use crate::store::provision::NewBulkBudget;
use crate::store::refusals::{DenialRecord, WindowCounts};
use crate::timezone::Zone;

type ApiResult<T> = Result<T, ApiError>;

/// The largest limit accepted, USD: a billion dollars per window is a typo, not a budget.
pub const MAX_LIMIT_USD: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// `POST /v1/budgets` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewBudget)]
pub struct NewBudgetBody {
    /// Which link of the chain it applies to.
    scope: Scope,
    /// The id of that org / project / user / key.
    #[schema(value_type = ScopeId)]
    scope_id: String,
    /// How often it resets.
    period: Period,
    /// IANA zone its calendar periods follow, default UTC.
    #[serde(default = "utc")]
    timezone: String,
    /// Hard limit per window, USD.
    #[serde(deserialize_with = "super::money::strict")]
    #[schema(value_type = Money)]
    limit_usd: Decimal,
    /// Soft limit per window (warns), USD; below `limit_usd`.
    #[serde(default, deserialize_with = "super::money::strict_opt")]
    #[schema(value_type = Option<Money>)]
    soft_limit_usd: Option<Decimal>,
    /// Enforce (default) or shadow.
    #[serde(default)]
    mode: Mode,
    /// Set to create a budget for a principal the control plane has not registered: one a
    /// trusted principal header (jwt_authn) will name. Without it, an unknown `scope_id` is a
    /// 422 (a typo would otherwise be a budget that never applies).
    #[serde(default)]
    allow_unregistered: bool,
}

fn utc() -> String {
    "UTC".into()
}

/// `PATCH /v1/budgets/{id}` body: absent fields stay; `"soft_limit_usd": null` removes it.
/// `null` for any other field is refused (422): it cannot be removed, and reading it as
/// "unchanged" would silently ignore what the caller asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BudgetPatch)]
pub struct BudgetPatchBody {
    /// How often it resets.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Period)]
    period: Option<Period>,
    /// IANA zone.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    timezone: Option<String>,
    /// Hard limit per window, USD.
    #[serde(default, deserialize_with = "not_null_money")]
    #[schema(value_type = Money)]
    limit_usd: Option<Decimal>,
    /// Soft limit per window, USD; `null` removes it.
    #[serde(default, deserialize_with = "present_money")]
    #[schema(value_type = Option<Money>)]
    soft_limit_usd: Option<Option<Decimal>>,
    /// Enforce or shadow.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Mode)]
    mode: Option<Mode>,
}

/// A field that may be absent (`None`, via `default`) but not `null`.
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// [`not_null`] for money, through the one money parser.
fn not_null_money<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    super::money::strict(d).map(Some)
}

/// A money field set to `null` (`Some(None)`: remove it) told from an absent one (`None`,
/// via `default`), through the one money parser.
fn present_money<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Decimal>>, D::Error> {
    super::money::strict_opt(d).map(Some)
}

/// A budget with its current window and the spend in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    #[serde(flatten)]
    pub(crate) budget: Budget,
    /// Start of the current window (absent for `total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) window_start: Option<i64>,
    /// When it resets (absent for `total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) window_end: Option<i64>,
    /// Spend in the current window, USD.
    pub(crate) spent_usd: Decimal,
    /// Refusals and soft warnings in the current window (as the filters reported them).
    #[serde(flatten)]
    pub(crate) counts: WindowCounts,
}

/// A USD amount that is neither negative nor absurd.
pub(crate) fn check_usd(field: &str, v: Decimal) -> ApiResult<Decimal> {
    if v.is_sign_negative() && !v.is_zero() {
        return Err(ApiError::invalid(
            field,
            format!("{v} must not be negative"),
        ));
    }
    if v > MAX_LIMIT_USD {
        return Err(ApiError::invalid(
            field,
            format!("{v} is above {MAX_LIMIT_USD} USD: is the unit right?"),
        ));
    }
    Ok(v.normalize())
}

fn check_soft(soft: Option<Decimal>, limit: Decimal) -> ApiResult<Option<Decimal>> {
    let Some(soft) = soft else { return Ok(None) };
    let soft = check_usd("soft_limit_usd", soft)?;
    if soft >= limit {
        return Err(ApiError::invalid(
            "soft_limit_usd",
            format!("{soft} must be below limit_usd ({limit})"),
        ));
    }
    Ok(Some(soft))
}

fn zone(tz: &str) -> ApiResult<Zone> {
    Zone::parse(tz).map_err(|e| ApiError::invalid("timezone", e))
}

pub(crate) async fn views(s: &AppState, budgets: Vec<Budget>) -> ApiResult<Vec<BudgetView>> {
    let now = s.clock.now();
    let spent = s.store.spend_now(&budgets, now).await?;
    let counts = s.store.window_counts(&budgets, now).await?;
    Ok(budgets
        .into_iter()
        .map(|b| {
            let w = b.window_at(now);
            let total = b.period == Period::Total;
            BudgetView {
                spent_usd: spent.get(&b.id).copied().unwrap_or(Decimal::ZERO),
                counts: counts.get(&b.id).copied().unwrap_or_default(),
                window_start: (!total).then_some(w.start),
                window_end: w.end,
                budget: b,
            }
        })
        .collect())
}

async fn view(s: &AppState, b: Budget) -> ApiResult<BudgetView> {
    views(s, vec![b])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("budget view vanished".into()))
}

impl NewBudgetBody {
    /// Checks the fields: the scope id's characters, the limits, the timezone (whether the
    /// scope id is registered is the store's to check).
    pub(super) fn check(self) -> ApiResult<NewBulkBudget> {
        if self.scope_id.is_empty()
            || self.scope_id.len() > 256
            || self.scope_id.contains([';', '='])
            || self.scope_id.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "scope_id",
                "must be 1 to 256 characters without ';', '=' or control characters",
            ));
        }
        let limit = check_usd("limit_usd", self.limit_usd)?;
        Ok(NewBulkBudget {
            budget: NewBudget {
                scope: self.scope,
                scope_id: self.scope_id,
                period: self.period,
                timezone: zone(&self.timezone)?,
                limit_usd: limit,
                soft_limit_usd: check_soft(self.soft_limit_usd, limit)?,
                mode: self.mode,
            },
            allow_unregistered: self.allow_unregistered,
        })
    }
}

/// Budget `id`, if the caller may see it: 403 for a scoped token when the budget's principal
/// is not registered in its organisation.
pub(crate) async fn budget_for(s: &AppState, who: &Principal, id: &str) -> ApiResult<Budget> {
    let b = s.store.get_budget(id).await?;
    who.require_scope(s, b.scope, &b.scope_id).await?;
    Ok(b)
}

/// Create a budget (back-filled from the ledger for the current window).
#[utoipa::path(post, path = "/v1/budgets", request_body = NewBudgetBody, responses(
    (status = 201, description = "Created", body = BudgetView),
    (status = 409, description = "Such a budget exists"),
))]
pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewBudgetBody>,
) -> ApiResult<(StatusCode, Json<BudgetView>)> {
    let checked = body.check()?;
    let new = checked.budget;
    who.require_scope(&s, new.scope, &new.scope_id).await?;
    if !checked.allow_unregistered && !s.store.scope_registered(new.scope, &new.scope_id).await? {
        return Err(ApiError::invalid(
            "scope_id",
            format!(
                "no {} {:?} is registered (set allow_unregistered for a principal named only by a trusted header)",
                new.scope.as_str(),
                new.scope_id
            ),
        ));
    }
    let b = s.store.create_budget(&new, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(view(&s, b).await?)))
}

/// List budgets with their current window and spend.
#[utoipa::path(get, path = "/v1/budgets", params(
    ("scope" = Option<String>, Query, nullable = false, description = "org, project, user or key"),
    ("scope_id" = Option<String>, Query, nullable = false, description = "Id of the scope"),
), responses(
    (status = 200, description = "OK", body = Vec<BudgetView>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<Vec<BudgetView>>> {
    q.only(&["scope", "scope_id"])?;
    let scope = q
        .get("scope")
        .map(|v| {
            serde_json::from_value::<Scope>(serde_json::Value::String(v.to_string()))
                .map_err(|_| ApiError::invalid("scope", "must be org, project, user or key"))
        })
        .transpose()?;
    if let (Some(scope), Some(id)) = (scope, q.get("scope_id")) {
        who.require_scope(&s, scope, id).await?;
    }
    let budgets = s
        .store
        .list_budgets_in(scope, q.get("scope_id"), who.org())
        .await?;
    Ok(Json(views(&s, budgets).await?))
}

/// Get a budget.
#[utoipa::path(get, path = "/v1/budgets/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = BudgetView),
    (status = 404, description = "No such budget"),
))]
pub async fn get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BudgetView>> {
    let b = budget_for(&s, &who, &id).await?;
    Ok(Json(view(&s, b).await?))
}

/// A budget's latest denial records, newest first: each stands for the requests one Envoy
/// worker refused in about a second with this budget binding, for one principal and model.
#[utoipa::path(get, path = "/v1/budgets/{id}/denials", params(
    IdPath,
    ("limit" = Option<String>, Query, nullable = false, description = "At most this many rows, 1 to 1000 (default 50)"),
), responses(
    (status = 200, description = "OK", body = Vec<DenialRecord>),
    (status = 404, description = "No such budget"),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn denials(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    q: Params,
) -> ApiResult<Json<Vec<DenialRecord>>> {
    q.only(&["limit"])?;
    let limit = q.limit("limit", 1_000, 50)?;
    let b = budget_for(&s, &who, &id).await?;
    Ok(Json(s.store.denials(&b.id, limit).await?))
}

/// Change a budget.
#[utoipa::path(patch, path = "/v1/budgets/{id}", request_body = BudgetPatchBody, params(IdPath), responses(
    (status = 200, description = "OK", body = BudgetView),
    (status = 404, description = "No such budget"),
    (status = 409, description = "Such a budget exists"),
))]
pub async fn update(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<BudgetPatchBody>,
) -> ApiResult<Json<BudgetView>> {
    budget_for(&s, &who, &id).await?;
    let patch = BudgetPatch {
        period: body.period,
        timezone: body.timezone.as_deref().map(zone).transpose()?,
        limit_usd: body
            .limit_usd
            .map(|l| check_usd("limit_usd", l))
            .transpose()?,
        soft_limit_usd: match body.soft_limit_usd {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => Some(Some(check_usd("soft_limit_usd", v)?)),
        },
        mode: body.mode,
    };
    let b = s.store.update_budget(&id, &patch, s.clock.now()).await?;
    Ok(Json(view(&s, b).await?))
}

/// Delete a budget.
#[utoipa::path(delete, path = "/v1/budgets/{id}", params(IdPath), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such budget"),
))]
pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    budget_for(&s, &who, &id).await?;
    s.store.delete_budget(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every budget as Prometheus gauges (text format 0.0.4): spend in the current window,
/// limits, utilization, when the window resets; at most `--budget-metrics-max` budgets, the
/// most used first. Tenant data, hence the admin token (`crate::budget_metrics`).
#[utoipa::path(get, path = "/v1/metrics/budgets", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
    (status = 503, description = "No snapshot built yet"),
))]
pub async fn metrics(State(s): State<AppState>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let built = s.snapshots.fresh().await?;
    let max = s
        .budget_metrics_max
        .load(std::sync::atomic::Ordering::Relaxed);
    let text = crate::budget_metrics::render(built.budgets(), s.clock.now(), max);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(resp)
}
