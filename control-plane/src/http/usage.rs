//! `POST /v1/usage`: a batch of up to 10,000 usage events from a filter's sync service.
//! Idempotent by event id: a retried batch answers with its events counted as `duplicate`.
//! A batch with any invalid event is refused whole (422 naming `events[i].field`): the sender
//! is our own filter, so a bad event is a bug to surface, not data to skip.

use axum::extract::State;
use axum::Json;
use tollgate_core::event::{UsageAck, UsageBatch};

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::ingest;

pub async fn post(
    State(s): State<AppState>,
    ApiJson(batch): ApiJson<UsageBatch>,
) -> Result<Json<UsageAck>, ApiError> {
    let now = s.clock.now();
    ingest::validate(&batch, now).map_err(|e| ApiError::invalid(e.field, e.detail))?;
    let out = s.store.ingest(&batch.events, now, &s.budgets).await?;
    s.metrics.ingested(out.accepted, out.duplicate);
    Ok(Json(UsageAck {
        accepted: out.accepted,
        duplicate: out.duplicate,
    }))
}
