//! Operations endpoints, no token needed: `/healthz` (the process answers), `/readyz` (the
//! database answers), `/metrics` (Prometheus text), `/openapi.json` (the API description).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `GET /readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// The database backend: `sqlite` or `postgres`.
    #[schema(value_type = String)]
    database: &'static str,
    /// The version of the snapshot served now.
    snapshot_version: u64,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "OK", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "OK", body = Ready),
    (status = 503, description = "The database does not answer"),
))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Ready>, ApiError> {
    s.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "database not reachable");
        ApiError::Unavailable("database not reachable".into())
    })?;
    Ok(Json(Ready {
        status: "ready",
        database: s.store.backend().as_str(),
        snapshot_version: s.snapshots.current().version,
    }))
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut resp = s.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "The OpenAPI 3.1 document", body = Object),
))]
pub async fn openapi() -> Response {
    let mut resp = super::openapi::text().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
