//! `GET /ui/tokens` (an admin's): the API tokens, by prefix (never a secret), with their role,
//! organisation, creator and state; a create form and a revoke button each.
//! `POST /ui/tokens` creates through the API's own checks (`http::tokens::NewTokenBody::check`,
//! then the store's: a manager or viewer needs an organisation that exists, an admin has none)
//! and answers the page with the secret once, like a new key. `POST /ui/tokens/{id}/revoke`
//! revokes it: every session opened with it ends at its next request (`sessions.rs` reads the
//! token again each time), this one too when an admin revokes its own token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, csrf_field, enc, post_button, revocation, shown_once, time, Nav};
use super::sessions::Session;
use super::{page as respond, see_other, UiError, UiResult};
use crate::http::error::ApiError;
use crate::http::tokens::NewTokenBody;
use crate::http::AppState;
use crate::store::tokens::{CreatedToken, TokenRole};
use crate::timezone::Zone;

/// The create form's fields (empty organisation: none, as an admin token has).
#[derive(Debug, Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    org_id: String,
}

const ROLES: [TokenRole; 3] = [TokenRole::Viewer, TokenRole::Manager, TokenRole::Admin];

async fn render(
    s: &AppState,
    session: &Session,
    created: Option<&CreatedToken>,
) -> UiResult<Markup> {
    let tokens = s.store.list_tokens(None, true).await?;
    let orgs = s.store.list_orgs().await?;
    let zone = Zone::UTC;
    let body = html! {
        @if let Some(c) = created {
            (shown_once("token", &c.token.name, &c.token.id, &c.secret))
        }
        h2 { "New token" }
        form.create method="post" action="/ui/tokens" {
            (csrf_field(session))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            label { "Role" select name="role" { @for r in ROLES { option value=(r.as_str()) { (r.as_str()) } } } }
            label { "Organisation (manager, viewer)" select name="org_id" {
                option value="" { "none (admin)" }
                @for o in &orgs { option value=(o.id) { (o.id) } }
            } }
            button type="submit" #create-token { "Create token" }
        }
        h2 { "Tokens" }
        @if tokens.is_empty() {
            p.muted { "No API tokens yet: only the environment's admin token." }
        } @else {
            table #tokens {
                thead { tr {
                    th { "Name" } th { "Id" } th { "Prefix" } th { "Role" } th { "Org" }
                    th { "Created by" } th { "Created" } th { "Status" } th {}
                } }
                tbody {
                    @for t in &tokens {
                        tr data-token=(t.id) {
                            td { (t.name) } td { code { (t.id) } } td { code { (t.prefix) "…" } }
                            td { (t.role.as_str()) } td { (t.org_id.as_deref().unwrap_or("all")) }
                            td { code { (t.created_by) } } td { (time(&zone, t.created_at)) }
                            (revocation(&zone, t.revoked_at))
                            td { @if t.revoked_at.is_none() {
                                (post_button(session, &format!("/ui/tokens/{}/revoke", enc(&t.id)), "Revoke", true, &[]))
                            } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("API tokens", session, Nav::Tokens, body))
}

/// `GET /ui/tokens`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Markup> {
    render(&s, &session, None).await
}

/// `POST /ui/tokens`: creates the token; the answer shows its secret once.
pub async fn create(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<NewTokenForm>,
) -> UiResult<Response> {
    let role = ROLES
        .into_iter()
        .find(|r| r.as_str() == f.role.trim())
        .ok_or_else(|| {
            UiError(ApiError::invalid(
                "role",
                "must be admin, manager or viewer",
            ))
        })?;
    let org_id = f.org_id.trim();
    let new = NewTokenBody {
        name: f.name.trim().to_string(),
        role,
        org_id: (!org_id.is_empty()).then(|| org_id.to_string()),
    }
    .check()?;
    let created = s.store.create_token(&new, s.clock.now()).await?;
    Ok(respond(
        StatusCode::CREATED,
        render(&s, &session, Some(&created)).await?,
    ))
}

/// `POST /ui/tokens/{id}/revoke`.
pub async fn revoke(State(s): State<AppState>, Path(id): Path<String>) -> UiResult<Response> {
    s.store.revoke_token(&id, s.clock.now()).await?;
    Ok(see_other("/ui/tokens"))
}
