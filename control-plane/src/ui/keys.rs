//! `GET /ui/keys`: the virtual keys the principal may see (by prefix, never a secret), with a
//! create form and a revoke button each for a manager or admin. `POST /ui/keys` creates a key
//! through the API's own checks (`http::keys::NewKeyBody::check`, `require_org`) and answers
//! the keys page with the new secret in it: the one page that ever shows a secret, answered
//! to that POST only (no redirect, so the secret is in no URL, and `Cache-Control: no-store`).
//! `POST /ui/keys/{id}/revoke` revokes (it leaves the next snapshot) and goes back to the list.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, csrf_field, enc, post_button, revocation, shown_once, time, Nav};
use super::sessions::Session;
use super::{can_write, page as respond, see_other, UiResult};
use crate::http::keys::NewKeyBody;
use crate::http::AppState;
use crate::store::keys::CreatedKey;
use crate::timezone::Zone;

/// The create form's fields (empty project or user: none).
#[derive(Debug, Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    org_id: String,
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    user_id: String,
}

fn optional(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

async fn render(s: &AppState, session: &Session, created: Option<&CreatedKey>) -> UiResult<Markup> {
    let who = &session.principal;
    let keys = s.store.list_keys(who.org(), true).await?;
    let orgs: Vec<String> = match who.org() {
        Some(org) => vec![org.to_string()],
        None => s
            .store
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect(),
    };
    let write = can_write(who);
    let zone = Zone::UTC;
    let body = html! {
        @if let Some(c) = created {
            (shown_once("key", &c.key.name, &c.key.id, &c.secret))
        }
        @if write {
            h2 { "New key" }
            form.create method="post" action="/ui/keys" {
                (csrf_field(session))
                label { "Name" input type="text" name="name" required maxlength="200"; }
                label { "Organisation" select name="org_id" { @for o in &orgs { option value=(o) { (o) } } } }
                label { "Project (optional)" input type="text" name="project_id"; }
                label { "User (optional)" input type="text" name="user_id"; }
                button type="submit" #create-key { "Create key" }
            }
        }
        h2 { "Keys" }
        @if keys.is_empty() {
            p.muted { "No keys yet." }
        } @else {
            table #keys {
                thead { tr {
                    th { "Name" } th { "Id" } th { "Prefix" } th { "Org" } th { "Project" } th { "User" }
                    th { "Created" } th { "Status" }
                    th { "Last used" }
                    @if write { th {} }
                } }
                tbody {
                    @for k in &keys {
                        tr data-key=(k.id) {
                            td { (k.name) } td { code { (k.id) } } td { code { (k.prefix) "…" } }
                            td { (k.org_id) } td { (k.project_id.as_deref().unwrap_or("—")) } td { (k.user_id.as_deref().unwrap_or("—")) }
                            td { (time(&zone, k.created_at)) }
                            td.last-used { @match k.last_used_at { Some(t) => (time(&zone, t)), None => span.muted { "never" } } }
                            (revocation(&zone, k.revoked_at))
                            @if write {
                                td { @if k.revoked_at.is_none() {
                                    (post_button(session, &format!("/ui/keys/{}/revoke", enc(&k.id)), "Revoke", true, &[]))
                                } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Keys", session, Nav::Keys, body))
}

/// `GET /ui/keys`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
) -> UiResult<Markup> {
    render(&s, &session, None).await
}

/// `POST /ui/keys`: creates the key; the answer shows its secret once.
pub async fn create(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Form(f): Form<NewKeyForm>,
) -> UiResult<Response> {
    let new = NewKeyBody {
        name: f.name.trim().to_string(),
        org_id: f.org_id.trim().to_string(),
        project_id: optional(&f.project_id),
        user_id: optional(&f.user_id),
    }
    .check()?;
    session.principal.require_org(Some(&new.org_id))?;
    let created = s.store.create_key(&new, s.clock.now()).await?;
    Ok(respond(
        StatusCode::CREATED,
        render(&s, &session, Some(&created)).await?,
    ))
}

/// `POST /ui/keys/{id}/revoke`.
pub async fn revoke(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let key = s.store.get_key(&id).await?;
    session.principal.require_org(Some(&key.org_id))?;
    s.store.revoke_key(&id, s.clock.now()).await?;
    Ok(see_other("/ui/keys"))
}
