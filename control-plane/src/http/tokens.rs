//! `/v1/tokens`: API tokens with a role and, for a manager or viewer, an organisation. Create
//! (the secret is in this answer and nowhere else, ever), list, get, revoke; all admin only
//! (a manager minting tokens would hand out rights nobody above it granted).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::formats::{Id, IdPath, Name, OrgFilter};
use super::{check_id, check_name, AppState};
use crate::store::tokens::{ApiToken, CreatedToken, NewToken, TokenRole};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewToken)]
pub struct NewTokenBody {
    /// Display name.
    #[schema(value_type = Name)]
    pub(crate) name: String,
    /// What it may do.
    pub(crate) role: TokenRole,
    /// The organisation a manager or viewer acts on; absent for an admin.
    #[schema(value_type = Option<Id>)]
    pub(crate) org_id: Option<String>,
}

/// Create an API token; the secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", request_body = NewTokenBody, responses(
    (status = 201, description = "Created", body = CreatedToken),
))]
pub async fn create(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let created = s.store.create_token(&body.check()?, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

impl NewTokenBody {
    /// The token asked for, its name and organisation id well formed (the store checks that
    /// the role and the organisation go together and that the organisation exists). The API
    /// and the console both create through this.
    pub(crate) fn check(self) -> ApiResult<NewToken> {
        check_name("name", &self.name)?;
        if let Some(org) = &self.org_id {
            check_id("org_id", org)?;
        }
        Ok(NewToken {
            name: self.name,
            role: self.role,
            org_id: self.org_id,
        })
    }
}

/// List API tokens (never the secret).
#[utoipa::path(get, path = "/v1/tokens", params(
    OrgFilter,
    ("include_revoked" = Option<bool>, Query, nullable = false, description = "Also revoked tokens"),
), responses(
    (status = 200, description = "OK", body = Vec<ApiToken>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list(State(s): State<AppState>, q: Params) -> ApiResult<Json<Vec<ApiToken>>> {
    q.only(&["org_id", "include_revoked"])?;
    let include_revoked = q.flag("include_revoked")?;
    Ok(Json(
        s.store
            .list_tokens(q.get("org_id"), include_revoked)
            .await?,
    ))
}

/// Get an API token.
#[utoipa::path(get, path = "/v1/tokens/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = ApiToken),
    (status = 404, description = "No such token"),
))]
pub async fn get(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ApiToken>> {
    Ok(Json(s.store.get_token(&id).await?))
}

/// Revoke an API token: refused from the next request on.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", params(IdPath), responses(
    (status = 200, description = "OK", body = ApiToken),
    (status = 404, description = "No such token"),
))]
pub async fn revoke(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ApiToken>> {
    Ok(Json(s.store.revoke_token(&id, s.clock.now()).await?))
}
