//! The data plane's usage routes.
//!
//! - `POST /v1/reporters`: enrollment (data-plane token). Mints a reporter id and secret for one
//!   Envoy's sync service; the secret is in this answer only (see `store/reporters.rs`).
//! - `POST /v1/usage`: a batch of up to 10,000 usage events from a filter's sync service,
//!   authenticated with its reporter secret. Every event must carry that reporter (else 403,
//!   the whole batch, counted: `tollgate_usage_refused_total{reason="foreign_reporter"}`).
//!   Idempotent by event id: a retried batch answers with its events counted as `duplicate`;
//!   an id stored with different content is a `conflict` (refused, logged, counted), never a
//!   duplicate. Each event's cost is checked against the cost the control plane computes for
//!   its usage (`ingest::check_cost`); a mismatch is stored as reported, flagged in the ledger
//!   row and counted. A batch with any invalid event is refused whole (422 naming
//!   `events[i].field`): the sender is our own filter, so a bad event is a bug to surface, not
//!   data to skip.
//! - `GET /v1/usage/events` (admin): ledger rows in a time range, newest first.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use tollgate_core::event::{UsageAck, UsageBatch};

use super::auth::Caller;
use super::error::{ApiError, ApiJson, Params};
use super::spend::time_param;
use super::AppState;
use crate::ingest;
use crate::metrics::Refused;
use crate::store::ledger::{LedgerEvent, LedgerQuery};
use crate::store::reporters::Enrolled;

/// Body of `POST /v1/reporters`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The Envoy's node id, which starts the minted reporter id (1 to 64 characters of
    /// letters, digits and `._:-`).
    #[serde(default)]
    #[schema(value_type = Option<super::formats::Node>)]
    pub node: Option<String>,
}

/// Enroll a reporter (one Envoy's sync service): mints its id and secret, shown once.
#[utoipa::path(post, path = "/v1/reporters", request_body = EnrollRequest, responses(
    (status = 201, description = "Created", body = Enrolled),
))]
pub async fn enroll(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    if let Some(node) = &req.node {
        let ok = !node.is_empty()
            && node.len() <= 64
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            return Err(ApiError::invalid(
                "node",
                "must be 1 to 64 characters of letters, digits and ._:-",
            ));
        }
    }
    let enrolled = s
        .store
        .enroll_reporter(req.node.as_deref(), s.clock.now())
        .await?;
    s.metrics.reporter_enrolled();
    tracing::info!(reporter = %enrolled.reporter, "reporter enrolled");
    Ok((StatusCode::CREATED, Json(enrolled)))
}

/// Store a batch of up to 10,000 usage events of the authenticated reporter (idempotent by
/// event id; an id stored with different content is a conflict, refused and counted).
#[utoipa::path(post, path = "/v1/usage", request_body = UsageBatch, responses(
    (status = 200, description = "OK", body = UsageAck),
))]
pub async fn post(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(batch): ApiJson<UsageBatch>,
) -> Result<Json<UsageAck>, ApiError> {
    // Who reports: the bearer's reporter, else the reporter whose secret is in the body.
    let me = match (&caller, batch.reporter_secret.as_deref()) {
        (Caller::Reporter(me), _) => Some(me.clone()),
        (_, Some(secret)) => match super::auth::caller(&s, secret).await? {
            Some(Caller::Reporter(me)) => Some(me),
            _ => {
                s.metrics.usage_refused(Refused::NotEnrolled, 1);
                return Err(ApiError::Forbidden(
                    "unknown reporter secret: enroll again with POST /v1/reporters",
                ));
            }
        },
        (Caller::Admin, None) => None,
        (Caller::DataPlane, None) => {
            s.metrics.usage_refused(Refused::NotEnrolled, 1);
            return Err(ApiError::Forbidden(
                "usage is posted with a reporter secret: enroll with POST /v1/reporters",
            ));
        }
    };
    if let Some(me) = &me {
        let foreign = batch.events.iter().filter(|e| e.reporter != *me).count();
        if foreign > 0 {
            s.metrics
                .usage_refused(Refused::ForeignReporter, foreign as u64);
            tracing::warn!(
                reporter = %me,
                events = foreign,
                "usage batch refused: events of another reporter"
            );
            return Err(ApiError::Forbidden(
                "a reporter may post only its own events (event reporter differs)",
            ));
        }
    }
    let now = s.clock.now();
    ingest::validate(&batch, now).map_err(|e| ApiError::invalid(e.field, e.detail))?;
    let book = s.snapshots.current().prices.clone();
    let checks: Vec<_> = batch
        .events
        .iter()
        .map(|e| ingest::check_cost(e, &book))
        .collect();
    let out = s
        .store
        .ingest_checked(&batch.events, &checks, now, &s.budgets)
        .await?;
    s.metrics
        .ingested(out.accepted, out.duplicate, out.conflict, out.cost_mismatch);
    Ok(Json(UsageAck {
        accepted: out.accepted,
        duplicate: out.duplicate,
        conflict: out.conflict,
    }))
}

/// Query parameters of `GET /v1/usage/events`: `from` / `to` (as `GET /v1/spend` takes them;
/// default all time), `reporter`, `limit` (1 to 10,000, default 1,000).
/// Ledger rows, newest first.
#[utoipa::path(get, path = "/v1/usage/events", params(
    ("from" = Option<String>, Query, nullable = false, description = "Unix seconds, RFC 3339 or YYYY-MM-DD (inclusive)"),
    ("to" = Option<String>, Query, nullable = false, description = "Unix seconds, RFC 3339 or YYYY-MM-DD (exclusive)"),
    ("reporter" = Option<String>, Query, nullable = false, description = "Only this reporter's events"),
    ("limit" = Option<String>, Query, nullable = false, description = "At most this many rows, 1 to 10000 (default 1000)"),
), responses(
    (status = 200, description = "OK", body = Vec<LedgerEvent>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn events(
    State(s): State<AppState>,
    q: Params,
) -> Result<Json<Vec<LedgerEvent>>, ApiError> {
    q.only(&["from", "to", "reporter", "limit"])?;
    let time = |name: &str| time_param(&q, name);
    let limit = q.limit("limit", 10_000, 1_000)?;
    let query = LedgerQuery {
        from: time("from")?.unwrap_or(i64::MIN),
        to: time("to")?.unwrap_or(i64::MAX),
        reporter: q.get("reporter").map(str::to_string),
        limit,
    };
    Ok(Json(s.store.ledger_events(&query).await?))
}
