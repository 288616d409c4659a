//! The one API error type and the extractors that produce it.
//!
//! Every error answer is an RFC 9457 problem document (`application/problem+json`) with
//! `type`, `title`, `status`, `detail` and, when one field is at fault, `field` naming it
//! (`events[3].cost.total`, `limit_usd`). Database and internal errors are logged with their
//! cause and answered with a generic 500 that leaks nothing.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// An API error. Each variant's status is in its doc.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 Bad Request: the body is not well-formed JSON, or a header is malformed.
    #[error("{detail}")]
    BadRequest {
        /// What is malformed.
        detail: String,
    },
    /// 401 Unauthorized: no bearer token.
    #[error("a bearer token is required")]
    Unauthorized,
    /// 403 Forbidden: the token is wrong, or is the data-plane token on a management endpoint.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 Not Found: an id in the URL names nothing.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Kind of thing.
        what: String,
        /// Its id.
        id: String,
    },
    /// 404 Not Found: no such route.
    #[error("no such route")]
    NoRoute,
    /// 405 Method Not Allowed: the route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 Conflict: a unique constraint (the id or the natural key exists) or a row still in
    /// use.
    #[error("{field}: {detail}")]
    Conflict {
        /// The colliding field.
        field: String,
        /// What collides.
        detail: String,
    },
    /// 413 Payload Too Large: the body exceeds the route's limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// 415 Unsupported Media Type: a JSON body without `Content-Type: application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422 Unprocessable Content: well-formed but wrong (negative, absurd, unknown, too long,
    /// inconsistent), naming the field.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field, as a path into the body or the query parameter's name.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// 422 Unprocessable Content: items of a bulk call cannot be applied (every one listed in
    /// the problem's `errors`); nothing was written.
    #[error("{} of {total} items cannot be applied; nothing was written", errors.len())]
    InvalidItems {
        /// How many items the call held.
        total: usize,
        /// Every item that cannot be applied, in request order.
        errors: Vec<super::openapi::ItemProblem>,
    },
    /// 503 Service Unavailable: the database does not answer (`/readyz`) or no snapshot has
    /// been built yet.
    #[error("{0}")]
    Unavailable(String),
    /// 500 Internal Server Error: logged with its cause, answered without it.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 422 on `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } | ApiError::InvalidItems { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem `type` slug.
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "malformed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge { .. } => "too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::Invalid { .. } | ApiError::InvalidItems { .. } => "invalid",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Conflict { field, .. } | ApiError::Invalid { field, .. } => Some(field),
            ApiError::InvalidItems { errors, .. } => errors.first().map(|e| e.field.as_str()),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, id } => ApiError::NotFound {
                what: what.to_string(),
                id,
            },
            StoreError::Conflict { field, detail } => ApiError::Conflict {
                field: field.to_string(),
                detail,
            },
            StoreError::Invalid { field, detail } => ApiError::Invalid { field, detail },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The problem document's media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            // The cause goes to the log only; it may name tables or constraint internals.
            tracing::error!(error = %cause, "internal error");
        }
        let doc = super::openapi::Problem {
            kind: format!("urn:tollgate:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            field: self.field().map(str::to_string),
            errors: match self {
                ApiError::InvalidItems { errors, .. } => Some(errors),
                _ => None,
            },
        };
        let body = serde_json::to_string(&doc).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Parses JSON; a syntax error is a 400, a well-formed document of the wrong shape a 422 that
/// names the field (found with `serde_path_to_error`, on the error path only: the fast path is
/// plain `serde_json`, which matters for 10,000-event usage batches).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json reports `null` where an enum is expected as a syntax error
            // ("expected value"), so ask whether the document itself is well-formed.
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                Err(ApiError::BadRequest {
                    detail: format!("body is not valid JSON: {inner}"),
                })
            } else {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                Err(ApiError::Invalid {
                    field,
                    detail: strip_position(&inner.to_string()),
                })
            }
        }
    }
}

/// serde_json appends " at line 1 column 42": noise next to a field path.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

/// A JSON object body, rejected as an [`ApiError`] (415 without a JSON content type, 413 over
/// the route's body limit, 400 malformed, 422 wrong shape naming the field, or `body` when
/// it is not an object).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest {
                    detail: format!("could not read the body: {e}"),
                }
            }
        })?;
        // serde's derive also reads a struct from an array of its fields (`[]` is a patch
        // with every field absent); every body of the API is an object, and documented so.
        if bytes.trim_ascii_start().first() == Some(&b'[')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Body limit of most routes, bytes.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The body limit in force on a route, recorded as a request extension so a 413 can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query parameters as a map, rejected as a 400 problem document when malformed. Handlers
/// check the names they accept and name the unknown ones.
#[derive(Debug, Default)]
pub struct Params(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<std::collections::HashMap<String, String>>::from_request_parts(
            parts, state,
        )
        .await
        .map(|q| Params(q.0))
        .map_err(|e| ApiError::BadRequest {
            detail: format!("malformed query string: {e}"),
        })
    }
}

impl Params {
    /// Refuses parameters outside `known` (422 naming the first unknown one).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(k.as_str(), "unknown query parameter")),
            None => Ok(()),
        }
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A `true` / `false` parameter, `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::invalid(name, "must be true or false")),
        }
    }

    /// `before`: page below this row id (the `next_before` of the previous page).
    pub fn before_id(&self) -> Result<Option<i64>, ApiError> {
        self.get("before")
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid("before", "must be an integer"))
            })
            .transpose()
    }

    /// A count from 1 to `max`, `default` when absent.
    pub fn limit(&self, name: &str, max: u32, default: u32) -> Result<u32, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=max).contains(l))
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("must be an integer from 1 to {max}"))
                }),
        }
    }
}

/// The `next_before` of a page of `limit` rows, newest first: the last row's id when the page
/// is full (there may be older rows), else none.
pub fn next_before<T>(rows: &[T], limit: u32, id: impl Fn(&T) -> i64) -> Option<i64> {
    let full = rows.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    rows.last().filter(|_| full).map(id)
}

/// A path parameter, rejected as a 400 problem document when it cannot be decoded.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::BadRequest {
                detail: format!("malformed path: {e}"),
            })
    }
}

/// A raw body (any content type), rejected as a 413 problem document over the route's limit.
#[derive(Debug)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::BadRequest {
                        detail: format!("could not read the body: {e}"),
                    }
                }
            })
    }
}
