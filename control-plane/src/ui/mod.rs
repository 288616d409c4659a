//! The budget owners' web console at `/ui`, served by the control plane's own router
//! ([`crate::http::app`] merges [`router`]): server-side rendered HTML (maud templates,
//! escaped by default), charts drawn as SVG on the server (`charts.rs`, plotters), one
//! stylesheet embedded in the binary (`assets/console.css`), no JavaScript, nothing fetched
//! from elsewhere: it works offline.
//!
//! Who: a person signs in with an API token (the environment's admin token or a `tgt-` token,
//! `signin.rs`) and gets a session cookie (`sessions.rs`: a random id whose SHA-256 the store
//! keeps, never the token). Each page of the route [`table`] has an API [`Access`] level, and
//! [`guard`] applies exactly the API's rules to the session's [`Principal`]
//! (`Principal::allows`), then handlers confine a manager or viewer to its organisation with
//! the same `require_org` / `require_scope` / `org_filter` the API's handlers use. A viewer
//! sees no create or revoke buttons, and a POST it forges is refused here. Every POST carries
//! the session's CSRF token (checked here, before any handler) and a same-origin `Origin`.
//!
//! Pages: overview (`overview.rs`), spend (`spend.rs`), a budget (`budget.rs`), keys
//! (`keys.rs`), prices (`prices.rs`), alert subscriptions and deliveries (`alerts.rs`), API
//! tokens (`tokens.rs`, an admin's; the navigation shows each page only to those who may use it).
//!
//! Tests: `cargo test -p tollgate-control-plane --test console` (router: sign-in, cookie flags,
//! CSRF, every route with every role, no secret in any page, CSV equals the shown rows) and
//! `cargo test -p tollgate-tests --test console` (a real Chromium after real traffic through
//! Envoy).

mod alerts;
mod budget;
mod charts;
mod keys;
mod layout;
mod overview;
mod prices;
pub mod sessions;
mod signin;
mod spend;
mod tokens;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Form, Router};
use serde::Deserialize;

use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::{Access, AppState, Route};
use sessions::Session;

/// Budgets the overview shows a page.
pub const OVERVIEW_PAGE_ROWS: usize = overview::PAGE_ROWS;

/// Largest form body a console POST may send (a key's name and ids, the CSRF token).
pub const FORM_LIMIT: usize = 64 * 1024;

/// One page or form action of the console.
struct UiRoute {
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
}

fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> UiRoute {
    UiRoute {
        method,
        path,
        access,
        handler,
    }
}

/// The console's routes: every page and form action, with who may use it (the API's levels:
/// `Public` needs no session; the others a session whose principal `allows` the level).
fn table() -> Vec<UiRoute> {
    use Access::{Admin, OrgRead, OrgWrite, Public, Read};
    vec![
        route("GET", "/ui/login", Public, get(signin::form)),
        route("POST", "/ui/login", Public, post(signin::sign_in)),
        route("POST", "/ui/logout", Read, post(signin::sign_out)),
        route(
            "GET",
            "/ui/assets/console.css",
            Public,
            get(layout::stylesheet),
        ),
        route("GET", "/ui", OrgRead, get(overview::page)),
        route("GET", "/ui/spend", OrgRead, get(spend::page)),
        route("GET", "/ui/spend.csv", OrgRead, get(spend::csv)),
        route("GET", "/ui/budgets/{id}", OrgRead, get(budget::page)),
        route("GET", "/ui/keys", OrgRead, get(keys::page)),
        route("POST", "/ui/keys", OrgWrite, post(keys::create)),
        route("POST", "/ui/keys/{id}/revoke", OrgWrite, post(keys::revoke)),
        route("GET", "/ui/prices", Read, get(prices::list)),
        route("GET", "/ui/prices/{*model}", Read, get(prices::model)),
        route("GET", "/ui/alerts", OrgRead, get(alerts::page)),
        route("POST", "/ui/alerts", OrgWrite, post(alerts::create)),
        route(
            "POST",
            "/ui/alerts/{id}/enabled",
            OrgWrite,
            post(alerts::set_enabled),
        ),
        route(
            "POST",
            "/ui/alerts/{id}/delete",
            OrgWrite,
            post(alerts::delete),
        ),
        route("GET", "/ui/tokens", Admin, get(tokens::page)),
        route("POST", "/ui/tokens", Admin, post(tokens::create)),
        route(
            "POST",
            "/ui/tokens/{id}/revoke",
            Admin,
            post(tokens::revoke),
        ),
    ]
}

/// Every console route, for documentation and the role walk in `tests/console.rs`.
pub fn routes() -> Vec<Route> {
    table()
        .into_iter()
        .map(|r| Route {
            method: r.method,
            path: r.path.to_string(),
            access: r.access,
        })
        .collect()
}

/// The console's routes, each behind [`guard`] unless public, and the security headers of
/// every answer. Merged into the API's router by `http::app`.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for r in table() {
        let handler = match r.access {
            Access::Public => r.handler,
            access => r.handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), access),
                guard,
            )),
        };
        router = router.route(r.path, handler);
    }
    router.layer(middleware::from_fn(security_headers))
}

/// A console answer that went wrong: an HTML page with the API error's status and message
/// (a 500's cause is logged, never shown).
#[derive(Debug)]
pub struct UiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for UiError {
    fn from(e: E) -> Self {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = match &self.0 {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        (status, layout::error_page(status, &message)).into_response()
    }
}

/// What a console handler returns.
pub type UiResult<T> = Result<T, UiError>;

/// The CSRF field every console form posts.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Runs before every non-public console route: finds the session (none: a page redirects to
/// the sign-in form, a POST is refused), applies the API's role rule for the route's level,
/// and for a POST checks the origin and the session's CSRF token before the handler sees the
/// form. The handler then runs inside the audit context of the request, like the API's.
async fn guard(
    State((state, access)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    let is_post = req.method() == Method::POST;
    let session = match sessions::current(&state, req.headers()).await {
        Ok(Some(s)) => s,
        Ok(None) if is_post => {
            return UiError(ApiError::Forbidden("sign in first")).into_response();
        }
        Ok(None) => return Redirect::to("/ui/login").into_response(),
        Err(e) => return e.into_response(),
    };
    if !session.principal.allows(access) {
        return UiError(ApiError::Forbidden(
            "this token's role cannot use this page",
        ))
        .into_response();
    }
    let req = if is_post {
        match checked_post(&session, req).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("", |p| p.as_str());
    let ctx = crate::store::audit::Context {
        actor: session.principal.actor().to_string(),
        action: format!("{} {route}", req.method()),
        at: state.clock.now(),
    };
    let mut req = req;
    req.extensions_mut().insert(session);
    crate::store::audit::scope(ctx, next.run(req)).await
}

/// A POST's origin and CSRF token checked; the request handed back with its body.
async fn checked_post(session: &Session, req: Request) -> UiResult<Request> {
    if !sessions::same_origin(req.headers()) {
        return Err(ApiError::Forbidden("cross-origin form refused").into());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit: FORM_LIMIT })?;
    let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let Form(field) = Form::<CsrfField>::from_request(probe, &())
        .await
        .map_err(|e| ApiError::BadRequest {
            detail: e.body_text(),
        })?;
    if !session.csrf_matches(&field.csrf) {
        return Err(ApiError::Forbidden("the form's CSRF token is missing or stale").into());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Headers of every console answer: no caching of pages (a new key's secret is on one), no
/// framing, no script, nothing loaded from elsewhere, no MIME sniffing, and the referrer
/// only to this origin (a POST's `Origin` stays set, which the CSRF check reads).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Who the page is for, as the layout and the handlers see it.
pub(crate) fn can_write(p: &Principal) -> bool {
    p.allows(Access::OrgWrite)
}

/// A 303 to `to` (after a form: the browser then GETs it).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A page with its status.
pub(crate) fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, markup).into_response()
}
