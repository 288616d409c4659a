//! `POST /v1/cost/quote`: what a usage costs at the prices in effect (those of the current
//! snapshot). Body: `{"model": "...", "usage": {...}, "provider": "..."?}`; see `quote.rs`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::quote::{quote as price_usage, Quote};

/// Request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The model, looked up as the filter does.
    model: String,
    /// Tollgate's usage or a provider's usage object (OpenAI Chat / Responses, Anthropic
    /// Messages, Gemini).
    #[schema(value_type = Object)]
    usage: serde_json::Value,
    /// The provider, a lookup hint.
    #[serde(default)]
    provider: Option<String>,
}

/// Cost of a usage at the prices in effect.
#[utoipa::path(post, path = "/v1/cost/quote", request_body = QuoteRequest, responses(
    (status = 200, description = "OK", body = Quote),
))]
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
