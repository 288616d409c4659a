//! `/v1/prices`: the prices in effect, one model's history, new revisions (`POST` for a model
//! without a price, `PUT` for any), deletion (a revision without a price), and the LiteLLM
//! import. Rates are USD per 1M tokens in and out; stored per token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{parse_json, ApiBytes, ApiError, ApiJson, ApiPath, Params};
use super::formats::{LiteLlmMap, ModelPath};
use super::AppState;
use crate::prices::{import_litellm, ImportError, ImportReport, PriceInput, PriceView};
use crate::store::prices::NewRevision;

type ApiResult<T> = Result<T, ApiError>;

/// `GET /v1/prices` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceList {
    /// The instant the prices are in effect at.
    at: i64,
    /// The price book version at that instant (what the snapshot carries).
    version: u64,
    /// One entry per priced model.
    models: Vec<PriceView>,
}

/// `GET /v1/prices/{model}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceDetail {
    /// The revision in effect now, if the model has a price now.
    current: Option<PriceView>,
    /// Every revision, oldest first.
    history: Vec<PriceView>,
}

fn check_model(model: &str) -> ApiResult<()> {
    if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "model",
            "must be 1 to 256 characters without control characters",
        ));
    }
    Ok(())
}

fn time_param(q: &Params, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| {
            super::spend::parse_time(v)
                .ok_or_else(|| ApiError::invalid(name, format!("{v:?} is not a time")))
        })
        .transpose()
}

/// Prices in effect (per 1M tokens).
#[utoipa::path(get, path = "/v1/prices", params(
    ("at" = Option<String>, Query, nullable = false, description = "Instant (Unix seconds, RFC 3339 or date); default now"),
), responses(
    (status = 200, description = "OK", body = PriceList),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(State(s): State<AppState>, q: Params) -> ApiResult<Json<PriceList>> {
    q.only(&["at"])?;
    let at = time_param(&q, "at")?.unwrap_or_else(|| s.clock.now());
    let eff = s.store.effective_prices(at).await?;
    Ok(Json(PriceList {
        at,
        version: eff.book.version,
        models: eff.revisions.iter().map(PriceView::from).collect(),
    }))
}

/// A model's current price and revision history.
#[utoipa::path(get, path = "/v1/prices/{*model}", params(
    ModelPath,
), responses(
    (status = 200, description = "OK", body = PriceDetail),
    (status = 404, description = "No price for the model"),
))]
pub async fn get(
    State(s): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<Json<PriceDetail>> {
    let history = s.store.price_history(&model).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound {
            what: "price".into(),
            id: model,
        });
    }
    let current = s.store.price_at(&model, s.clock.now()).await?;
    Ok(Json(PriceDetail {
        current: current.as_ref().map(PriceView::from),
        history: history.iter().map(PriceView::from).collect(),
    }))
}

async fn add(s: &AppState, model: String, input: &PriceInput) -> ApiResult<PriceView> {
    check_model(&model)?;
    let price = input
        .to_price()
        .map_err(|e| ApiError::invalid(e.field, e.detail))?;
    let now = s.clock.now();
    let effective_from = input.effective_from.unwrap_or(now);
    if effective_from < 0 {
        return Err(ApiError::invalid("effective_from", "must not be negative"));
    }
    s.store
        .add_price_revisions(
            &[NewRevision {
                model: model.clone(),
                effective_from,
                price: Some(price),
                source: "api".into(),
            }],
            now,
        )
        .await?;
    let history = s.store.price_history(&model).await?;
    history
        .iter()
        .max_by_key(|r| r.revision)
        .map(PriceView::from)
        .ok_or_else(|| ApiError::Internal("price revision vanished".into()))
}

/// Price a model that has no price.
#[utoipa::path(post, path = "/v1/prices", request_body = PriceInput, responses(
    (status = 201, description = "Created", body = PriceView),
    (status = 409, description = "The model has a price"),
))]
pub async fn create(
    State(s): State<AppState>,
    ApiJson(input): ApiJson<PriceInput>,
) -> ApiResult<(StatusCode, Json<PriceView>)> {
    let model = input
        .model
        .clone()
        .ok_or_else(|| ApiError::invalid("model", "is required"))?;
    check_model(&model)?;
    let at = input.effective_from.unwrap_or_else(|| s.clock.now());
    if s.store.price_at(&model, at).await?.is_some() {
        return Err(ApiError::Conflict {
            field: "model".into(),
            detail: format!("{model:?} already has a price; PUT /v1/prices/{model} revises it"),
        });
    }
    Ok((StatusCode::CREATED, Json(add(&s, model, &input).await?)))
}

/// Add a price revision.
#[utoipa::path(put, path = "/v1/prices/{*model}", request_body = PriceInput, params(
    ModelPath,
), responses(
    (status = 200, description = "OK", body = PriceView),
))]
pub async fn put(
    State(s): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiJson(input): ApiJson<PriceInput>,
) -> ApiResult<Json<PriceView>> {
    if input.model.as_ref().is_some_and(|m| *m != model) {
        return Err(ApiError::invalid(
            "model",
            "differs from the model in the path",
        ));
    }
    Ok(Json(add(&s, model, &input).await?))
}

/// Remove a model's price from a date on (history is kept).
#[utoipa::path(delete, path = "/v1/prices/{*model}", params(
    ModelPath,
    ("effective_from" = Option<String>, Query, nullable = false, description = "From when; default now"),
), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No price for the model"),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn delete(
    State(s): State<AppState>,
    ApiPath(model): ApiPath<String>,
    q: Params,
) -> ApiResult<StatusCode> {
    q.only(&["effective_from"])?;
    let now = s.clock.now();
    let at = time_param(&q, "effective_from")?.unwrap_or(now);
    if s.store.price_at(&model, at).await?.is_none() {
        return Err(ApiError::NotFound {
            what: "price".into(),
            id: model,
        });
    }
    s.store
        .add_price_revisions(
            &[NewRevision {
                model,
                effective_from: at,
                price: None,
                source: "api".into(),
            }],
            now,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import a LiteLLM price map (body: the map); reports what it skipped.
#[utoipa::path(post, path = "/v1/prices/import", request_body = LiteLlmMap, params(
    ("format" = Option<String>, Query, nullable = false, description = "litellm"),
    ("effective_from" = Option<String>, Query, nullable = false, description = "From when; default now"),
), responses(
    (status = 200, description = "OK", body = ImportReport),
))]
pub async fn import(
    State(s): State<AppState>,
    q: Params,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<ImportReport>> {
    q.only(&["format", "effective_from"])?;
    match q.get("format") {
        None | Some("litellm") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("{other:?} is not supported (litellm is)"),
            ))
        }
    }
    let now = s.clock.now();
    let at = time_param(&q, "effective_from")?.unwrap_or(now);
    // Parse once up front so a syntax error is a 400 like every other malformed body.
    let _: serde_json::Value = parse_json(&body)?;
    match import_litellm(&s.store, &body, at, now).await {
        Ok(report) => Ok(Json(report)),
        Err(ImportError::Format(e)) => Err(ApiError::invalid("body", e.to_string())),
        Err(ImportError::Store(e)) => Err(e.into()),
    }
}
