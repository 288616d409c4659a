//! `/v1/keys`: create (the secret is in this answer and nowhere else, ever), list by prefix,
//! get, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::formats::{Id, IdPath, Name, OrgFilter};
use super::{check_id, check_name, AppState};
use crate::store::keys::{CreatedKey, NewKey, VirtualKey};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewKey)]
pub struct NewKeyBody {
    /// Display name.
    #[schema(value_type = Name)]
    pub(crate) name: String,
    /// Organisation charged.
    #[schema(value_type = Id)]
    pub(crate) org_id: String,
    /// Project charged.
    #[schema(value_type = Option<Id>)]
    pub(crate) project_id: Option<String>,
    /// User charged.
    #[schema(value_type = Option<Id>)]
    pub(crate) user_id: Option<String>,
}

impl NewKeyBody {
    /// Checks the fields (that the chain exists is the store's to check).
    pub(crate) fn check(self) -> ApiResult<NewKey> {
        check_name("name", &self.name)?;
        check_id("org_id", &self.org_id)?;
        if let Some(p) = &self.project_id {
            check_id("project_id", p)?;
        }
        if let Some(u) = &self.user_id {
            check_id("user_id", u)?;
        }
        Ok(NewKey {
            name: self.name,
            org_id: self.org_id,
            project_id: self.project_id,
            user_id: self.user_id,
        })
    }
}

/// Create a virtual key; the secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", request_body = NewKeyBody, responses(
    (status = 201, description = "Created", body = CreatedKey),
))]
pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let new = body.check()?;
    who.require_org(Some(&new.org_id))?;
    let created = s.store.create_key(&new, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List virtual keys (by prefix; never the secret).
#[utoipa::path(get, path = "/v1/keys", params(
    OrgFilter,
    ("include_revoked" = Option<bool>, Query, nullable = false, description = "Also revoked keys"),
), responses(
    (status = 200, description = "OK", body = Vec<VirtualKey>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<Vec<VirtualKey>>> {
    q.only(&["org_id", "include_revoked"])?;
    let include_revoked = q.flag("include_revoked")?;
    let org = who.org_filter(q.get("org_id"))?;
    let keys = s.store.list_keys(org, include_revoked).await?;
    Ok(Json(keys))
}

/// Get a virtual key.
#[utoipa::path(get, path = "/v1/keys/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = VirtualKey),
    (status = 404, description = "No such key"),
))]
pub async fn get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<VirtualKey>> {
    let key = s.store.get_key(&id).await?;
    who.require_org(Some(&key.org_id))?;
    Ok(Json(key))
}

/// Revoke a virtual key (it leaves the next snapshot).
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", params(IdPath), responses(
    (status = 200, description = "OK", body = VirtualKey),
    (status = 404, description = "No such key"),
))]
pub async fn revoke(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<VirtualKey>> {
    who.require_org(Some(&s.store.get_key(&id).await?.org_id))?;
    Ok(Json(s.store.revoke_key(&id, s.clock.now()).await?))
}
