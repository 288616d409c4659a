//! `/v1/keys`: create (the secret is in this answer and nowhere else, ever), list by prefix,
//! get, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::{check_id, check_name, AppState};
use crate::store::keys::{CreatedKey, NewKey, VirtualKey};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
    org_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
}

pub async fn create(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    check_name("name", &body.name)?;
    check_id("org_id", &body.org_id)?;
    if let Some(p) = &body.project_id {
        check_id("project_id", p)?;
    }
    if let Some(u) = &body.user_id {
        check_id("user_id", u)?;
    }
    let new = NewKey {
        name: body.name,
        org_id: body.org_id,
        project_id: body.project_id,
        user_id: body.user_id,
    };
    let created = s.store.create_key(&new, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(State(s): State<AppState>, q: Params) -> ApiResult<Json<Vec<VirtualKey>>> {
    q.only(&["org_id", "include_revoked"])?;
    let include_revoked = match q.get("include_revoked") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "include_revoked",
                "must be true or false",
            ))
        }
    };
    let keys = s.store.list_keys(q.get("org_id"), include_revoked).await?;
    Ok(Json(keys))
}

pub async fn get(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<VirtualKey>> {
    Ok(Json(s.store.get_key(&id).await?))
}

pub async fn revoke(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<VirtualKey>> {
    Ok(Json(s.store.revoke_key(&id, s.clock.now()).await?))
}
