//! `/v1/orgs`, `/v1/projects`, `/v1/users`: create, read, list, delete (and rename an org).
//! An id may be given (it is what principal chains carry) or is generated.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::formats::{Email, Id, IdPath, Name, OrgFilter};
use super::{check_id, check_name, AppState};
use crate::keys::generate_id;
use crate::store::tenants::{Org, Project, User};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/orgs` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// Id, as principal chains carry it; generated when absent.
    #[schema(value_type = Option<Id>)]
    id: Option<String>,
    /// Display name.
    #[schema(value_type = Name)]
    name: String,
}

/// `PATCH /v1/orgs/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    /// Display name.
    #[schema(value_type = Name)]
    name: String,
}

/// `POST /v1/projects` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// Id; generated when absent.
    #[schema(value_type = Option<Id>)]
    id: Option<String>,
    /// Owning organisation.
    #[schema(value_type = Id)]
    org_id: String,
    /// Display name.
    #[schema(value_type = Name)]
    name: String,
}

/// `POST /v1/users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Id; generated when absent.
    #[schema(value_type = Option<Id>)]
    id: Option<String>,
    /// Organisation.
    #[schema(value_type = Id)]
    org_id: String,
    /// Display name.
    #[schema(value_type = Name)]
    name: String,
    /// Contact address.
    #[schema(value_type = Option<Email>)]
    email: Option<String>,
}

impl NewUser {
    /// Checks the fields (the organisation's existence is the store's to check) and fills in
    /// a generated id when none was given.
    pub(super) fn check(self) -> ApiResult<crate::store::provision::NewUser> {
        check_name("name", &self.name)?;
        check_id("org_id", &self.org_id)?;
        if let Some(email) = &self.email {
            if email.len() > 254 || !email.contains('@') || email.chars().any(char::is_control) {
                return Err(ApiError::invalid("email", "is not an e-mail address"));
            }
        }
        Ok(crate::store::provision::NewUser {
            id: id_or_new(self.id, "usr")?,
            org_id: self.org_id,
            name: self.name,
            email: self.email,
        })
    }
}

fn id_or_new(id: Option<String>, kind: &str) -> ApiResult<String> {
    match id {
        Some(id) => {
            check_id("id", &id)?;
            Ok(id)
        }
        None => generate_id(kind).map_err(|e| ApiError::Internal(e.to_string())),
    }
}

/// The organisation a listing is confined to (the caller's own for a scoped token).
fn org_filter<'a>(who: &'a Principal, q: &'a Params) -> ApiResult<Option<&'a str>> {
    q.only(&["org_id"])?;
    who.org_filter(q.get("org_id"))
}

/// List organisations.
#[utoipa::path(get, path = "/v1/orgs", responses(
    (status = 200, description = "OK", body = Vec<Org>),
))]
pub async fn list_orgs(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Vec<Org>>> {
    let mut orgs = s.store.list_orgs().await?;
    orgs.retain(|o| who.require_org(Some(&o.id)).is_ok());
    Ok(Json(orgs))
}

/// Create an organisation.
#[utoipa::path(post, path = "/v1/orgs", request_body = NewOrg, responses(
    (status = 201, description = "Created", body = Org),
    (status = 409, description = "The id is taken"),
))]
pub async fn create_org(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewOrg>,
) -> ApiResult<(StatusCode, Json<Org>)> {
    check_name("name", &body.name)?;
    let id = id_or_new(body.id, "org")?;
    let org = s.store.create_org(&id, &body.name, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// Get an organisation.
#[utoipa::path(get, path = "/v1/orgs/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = Org),
    (status = 404, description = "No such organisation"),
))]
pub async fn get_org(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Org>> {
    who.require_org(Some(&id))?;
    Ok(Json(s.store.get_org(&id).await?))
}

/// Rename an organisation.
#[utoipa::path(patch, path = "/v1/orgs/{id}", request_body = OrgPatch, params(IdPath), responses(
    (status = 200, description = "OK", body = Org),
    (status = 404, description = "No such organisation"),
))]
pub async fn update_org(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<OrgPatch>,
) -> ApiResult<Json<Org>> {
    who.require_org(Some(&id))?;
    check_name("name", &body.name)?;
    Ok(Json(s.store.rename_org(&id, &body.name).await?))
}

/// Delete an organisation nothing references.
#[utoipa::path(delete, path = "/v1/orgs/{id}", params(IdPath), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such organisation"),
    (status = 409, description = "Something references it"),
))]
pub async fn delete_org(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_org(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List projects.
#[utoipa::path(get, path = "/v1/projects", params(OrgFilter), responses(
    (status = 200, description = "OK", body = Vec<Project>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list_projects(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<Vec<Project>>> {
    Ok(Json(s.store.list_projects(org_filter(&who, &q)?).await?))
}

/// Create a project.
#[utoipa::path(post, path = "/v1/projects", request_body = NewProject, responses(
    (status = 201, description = "Created", body = Project),
    (status = 409, description = "The id is taken"),
))]
pub async fn create_project(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    check_name("name", &body.name)?;
    check_id("org_id", &body.org_id)?;
    who.require_org(Some(&body.org_id))?;
    let id = id_or_new(body.id, "prj")?;
    let p = s
        .store
        .create_project(&id, &body.org_id, &body.name, s.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// Get a project.
#[utoipa::path(get, path = "/v1/projects/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = Project),
    (status = 404, description = "No such project"),
))]
pub async fn get_project(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Project>> {
    let found = s.store.get_project(&id).await?;
    who.require_org(Some(&found.org_id))?;
    Ok(Json(found))
}

/// Delete a project no key references.
#[utoipa::path(delete, path = "/v1/projects/{id}", params(IdPath), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such project"),
    (status = 409, description = "A key references it"),
))]
pub async fn delete_project(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    who.require_org(Some(&s.store.get_project(&id).await?.org_id))?;
    s.store.delete_project(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List users.
#[utoipa::path(get, path = "/v1/users", params(OrgFilter), responses(
    (status = 200, description = "OK", body = Vec<User>),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn list_users(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    q: Params,
) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.store.list_users(org_filter(&who, &q)?).await?))
}

/// Create a user.
#[utoipa::path(post, path = "/v1/users", request_body = NewUser, responses(
    (status = 201, description = "Created", body = User),
    (status = 409, description = "The id is taken"),
))]
pub async fn create_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let new = body.check()?;
    who.require_org(Some(&new.org_id))?;
    let u = s
        .store
        .create_user(
            &new.id,
            &new.org_id,
            &new.name,
            new.email.as_deref(),
            s.clock.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// Get a user.
#[utoipa::path(get, path = "/v1/users/{id}", params(IdPath), responses(
    (status = 200, description = "OK", body = User),
    (status = 404, description = "No such user"),
))]
pub async fn get_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<User>> {
    let found = s.store.get_user(&id).await?;
    who.require_org(Some(&found.org_id))?;
    Ok(Json(found))
}

/// Delete a user no key references.
#[utoipa::path(delete, path = "/v1/users/{id}", params(IdPath), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such user"),
    (status = 409, description = "A key references it"),
))]
pub async fn delete_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    who.require_org(Some(&s.store.get_user(&id).await?.org_id))?;
    s.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
