//! `POST /v1/cost/quote`: what a usage costs at the prices in effect (those of the current
//! snapshot). Body: `{"model": "...", "usage": {...}, "provider": "..."?}`; see `quote.rs`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::quote::{quote as price_usage, Quote};

/// Request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    model: String,
    usage: serde_json::Value,
    #[serde(default)]
    provider: Option<String>,
}

pub async fn quote(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<QuoteRequest>,
) -> Result<Json<Quote>, ApiError> {
    let built = s.snapshots.fresh().await?;
    price_usage(
        &built.prices,
        &req.model,
        req.provider.as_deref(),
        &req.usage,
    )
    .map(Json)
    .map_err(|e| ApiError::invalid(e.field, e.detail))
}
