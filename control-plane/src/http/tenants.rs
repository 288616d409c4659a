//! `/v1/orgs`, `/v1/projects`, `/v1/users`: create, read, list, delete (and rename an org).
//! An id may be given (it is what principal chains carry) or is generated.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiJson, ApiPath, Params};
use super::{check_id, check_name, AppState};
use crate::keys::generate_id;
use crate::store::tenants::{Org, Project, User};

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v1/orgs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    id: Option<String>,
    name: String,
}

/// `PATCH /v1/orgs/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    name: String,
}

/// `POST /v1/projects` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    id: Option<String>,
    org_id: String,
    name: String,
}

/// `POST /v1/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    id: Option<String>,
    org_id: String,
    name: String,
    email: Option<String>,
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

fn org_filter(q: &Params) -> ApiResult<Option<&str>> {
    q.only(&["org_id"])?;
    Ok(q.get("org_id"))
}

pub async fn list_orgs(State(s): State<AppState>) -> ApiResult<Json<Vec<Org>>> {
    Ok(Json(s.store.list_orgs().await?))
}

pub async fn create_org(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewOrg>,
) -> ApiResult<(StatusCode, Json<Org>)> {
    check_name("name", &body.name)?;
    let id = id_or_new(body.id, "org")?;
    let org = s.store.create_org(&id, &body.name, s.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

pub async fn get_org(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Org>> {
    Ok(Json(s.store.get_org(&id).await?))
}

pub async fn update_org(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<OrgPatch>,
) -> ApiResult<Json<Org>> {
    check_name("name", &body.name)?;
    Ok(Json(s.store.rename_org(&id, &body.name).await?))
}

pub async fn delete_org(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_org(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_projects(State(s): State<AppState>, q: Params) -> ApiResult<Json<Vec<Project>>> {
    Ok(Json(s.store.list_projects(org_filter(&q)?).await?))
}

pub async fn create_project(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    check_name("name", &body.name)?;
    check_id("org_id", &body.org_id)?;
    let id = id_or_new(body.id, "prj")?;
    let p = s
        .store
        .create_project(&id, &body.org_id, &body.name, s.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

pub async fn get_project(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Project>> {
    Ok(Json(s.store.get_project(&id).await?))
}

pub async fn delete_project(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_project(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_users(State(s): State<AppState>, q: Params) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.store.list_users(org_filter(&q)?).await?))
}

pub async fn create_user(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    check_name("name", &body.name)?;
    check_id("org_id", &body.org_id)?;
    if let Some(email) = &body.email {
        if email.len() > 254 || !email.contains('@') || email.chars().any(char::is_control) {
            return Err(ApiError::invalid("email", "is not an e-mail address"));
        }
    }
    let id = id_or_new(body.id, "usr")?;
    let u = s
        .store
        .create_user(
            &id,
            &body.org_id,
            &body.name,
            body.email.as_deref(),
            s.clock.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

pub async fn get_user(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(s.store.get_user(&id).await?))
}

pub async fn delete_user(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
