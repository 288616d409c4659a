//! Operations endpoints, no token needed: `/healthz` (the process answers), `/readyz` (the
//! database answers), `/metrics` (Prometheus text), `/openapi.json` (the API description).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "database not reachable");
        ApiError::Unavailable("database not reachable".into())
    })?;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "database": s.store.backend().as_str(),
        "snapshot_version": s.snapshots.current().version,
    })))
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut resp = s.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}
