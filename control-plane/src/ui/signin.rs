//! Signing in and out. `POST /ui/login` takes an API token (the environment's admin token or
//! a live `tgt-` token; never the data-plane token or a reporter secret), checked exactly as
//! the API checks a bearer, and opens a session (`sessions.rs`); the token is not kept. A
//! wrong token gets the form again with a 401 that does not repeat it. `POST /ui/logout`
//! deletes the session and clears the cookie.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::bare;
use super::sessions::{self, Session};
use super::{page, see_other, UiError, UiResult};
use crate::http::auth::{api_token, Principal, Role};
use crate::http::error::ApiError;
use crate::http::AppState;

fn form_markup(problem: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            @if let Some(p) = problem { p.error #error { (p) } }
            form method="post" action="/ui/login" {
                label {
                    "API token (the admin token or a tgt- token)"
                    input type="password" name="token" autocomplete="off" required autofocus;
                }
                button type="submit" { "Sign in" }
            }
            p.muted { "Managers and viewers see their organisation's budgets, keys and spend; "
                "viewers cannot change anything." }
        },
    )
}

/// `GET /ui/login`: the form.
pub async fn form() -> Markup {
    form_markup(None)
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
}

/// Who a presented token is, as the API's management middleware decides it.
async fn principal_of(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    match state.tokens.role(token) {
        Some(Role::Admin) => Ok(Some(Principal::AdminEnv)),
        Some(Role::DataPlane) => Ok(None),
        None => Ok(api_token(state, token).await?.map(Principal::Token)),
    }
}

/// `POST /ui/login`: a session for a good token (303 to the overview), the form again with a
/// 401 for a bad one. Same-origin only: a page elsewhere cannot sign a browser in.
pub async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> UiResult<Response> {
    if !sessions::same_origin(&headers) {
        return Err(UiError(ApiError::Forbidden("cross-origin form refused")));
    }
    let Some(principal) = principal_of(&s, f.token.trim()).await? else {
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            form_markup(Some(
                "That token is not a management token, or it was revoked.",
            )),
        ));
    };
    let id = sessions::new_session_id()?;
    let (token_id, admin_tag) = match &principal {
        Principal::AdminEnv => (None, Some(s.tokens.admin_tag(id.as_bytes()))),
        Principal::Token(t) => (Some(t.id.as_str()), None),
    };
    s.store
        .open_ui_session(&id, token_id, admin_tag.as_deref(), s.clock.now())
        .await?;
    let mut resp = see_other("/ui");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        sessions::set_cookie(Some(&id), sessions::over_https(&headers)),
    );
    Ok(resp)
}

/// `POST /ui/logout`: ends the session, clears the cookie, back to the form.
pub async fn sign_out(
    State(s): State<AppState>,
    Extension(_session): Extension<Session>,
    headers: HeaderMap,
) -> UiResult<Response> {
    if let Some(id) = sessions::cookie_value(&headers) {
        s.store.close_ui_session(&id).await?;
    }
    let mut resp = see_other("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        sessions::set_cookie(None, sessions::over_https(&headers)),
    );
    Ok(resp)
}
