//! The REST API v1: [`app`] builds the router from one route table (`table`), which the
//! OpenAPI document (`openapi.rs`) is generated from.
//!
//! Access: `Public` (health, metrics, the OpenAPI document), `DataPlane` (snapshot and
//! reporter enrollment: the data-plane token, a reporter secret or the admin token),
//! `Reporter` (usage: a reporter secret or the admin token), and for management routes
//! `Admin` (admin only), `Read` (any API token: prices, quotes), `OrgRead` (a manager or
//! viewer, confined by the handler to its organisation) and `OrgWrite` (a manager, likewise);
//! see `auth.rs` for the roles. Body limits: 1 MiB by
//! default, 16 MiB for `POST /v1/usage` (10,000 events), 32 MiB for a LiteLLM price-map
//! import and for `POST /v1/bulk` (100,000 items). Router tests: `cargo test -p tollgate-control-plane --test api`.
//!
//! Every answer is logged by tower-http's `TraceLayer` at `debug` (method, route template,
//! status, latency: never the URI, whose query may carry ids, nor a header, so never a token),
//! counted by route and status, and its latency observed by method and route (`metrics.rs`).
//! The snapshot is marked dirty by the store itself when a write commits (`store::Changes`),
//! not here.

pub(crate) mod alerts;
mod audit;
pub mod auth;
pub(crate) mod budgets;
mod bulk;
mod cost;
pub mod error;
pub mod formats;
pub(crate) mod keys;
pub mod money;
pub mod openapi;
mod ops;
mod prices;
mod snapshot;
pub(crate) mod spend;
mod tenants;
pub(crate) mod tokens;
mod usage;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::clock::Clock;
use crate::ingest::BudgetCache;
use crate::metrics::Metrics;
use crate::snapshot::Snapshots;
use crate::store::Store;
use auth::Tokens;
use error::{ApiError, BodyLimit, DEFAULT_BODY_LIMIT};

/// Body limit of `POST /v1/usage`: 10,000 events of about 700 bytes, with room to spare.
pub const USAGE_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Body limit of a price-map import (LiteLLM's map is about 1.5 MB today).
pub const IMPORT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The shared state behind [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// The database.
    pub store: Store,
    /// The two API tokens.
    pub tokens: Tokens,
    /// Reporter secrets already authenticated.
    pub reporter_secrets: auth::ReporterCache,
    /// The snapshot service.
    pub snapshots: Arc<Snapshots>,
    /// Budget index used by ingestion.
    pub budgets: BudgetCache,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Clock,
    /// Most budgets `GET /v1/metrics/budgets` exports.
    pub budget_metrics_max: std::sync::atomic::AtomicUsize,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State over a migrated store. Build the first snapshot with
    /// `state.snapshots.rebuild()` before serving.
    pub fn new(store: Store, tokens: Tokens, clock: Clock) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let snapshots = Arc::new(Snapshots::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
        ));
        AppState(Arc::new(Inner {
            store,
            tokens,
            reporter_secrets: auth::ReporterCache::default(),
            snapshots,
            budgets: BudgetCache::default(),
            metrics,
            clock,
            budget_metrics_max: crate::budget_metrics::DEFAULT_MAX.into(),
        }))
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Anyone.
    Public,
    /// The data-plane token, a reporter secret or the admin token.
    DataPlane,
    /// A reporter secret or the admin token.
    Reporter,
    /// The admin token or an admin API token.
    Admin,
    /// Any management token: an admin, or a manager or viewer of any organisation (data of
    /// no organisation: prices, quotes).
    Read,
    /// An admin, or a manager or viewer of the organisation of the object (the handler
    /// confines it with `Principal::require_org` / `org_filter`).
    OrgRead,
    /// An admin, or a manager of the organisation of the object (likewise).
    OrgWrite,
}

impl Access {
    /// Whether routes of this level are management routes (guarded by `auth::management`).
    pub fn is_management(self) -> bool {
        matches!(
            self,
            Access::Admin | Access::Read | Access::OrgRead | Access::OrgWrite
        )
    }
}

/// One route of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template as axum spells it (`{id}`, `{*model}` for a rest-of-path).
    pub path: String,
    /// Who may call it.
    pub access: Access,
}

/// A handler with its OpenAPI operation and the schemas it uses (utoipa-axum's `routes!`).
pub(crate) type Routed = utoipa_axum::router::UtoipaMethodRouter<AppState>;

/// The route table: every route the router serves, and nothing else. Each handler's
/// `#[utoipa::path]` names its method and path; the access level here guards it (`app`) and
/// is its `security` in the OpenAPI document (`openapi.rs`).
pub(crate) fn table() -> Vec<(Access, Routed)> {
    use utoipa_axum::routes;
    use Access::{Admin, DataPlane, OrgRead, OrgWrite, Public, Read, Reporter};
    vec![
        (Public, routes!(ops::healthz)),
        (Public, routes!(ops::readyz)),
        (Public, routes!(ops::metrics)),
        (Admin, routes!(budgets::metrics)),
        (Public, routes!(ops::openapi)),
        (DataPlane, routes!(snapshot::get)),
        (Reporter, routes!(usage::post)),
        (DataPlane, routes!(usage::enroll)),
        (Admin, routes!(usage::events)),
        (OrgRead, routes!(tenants::list_orgs)),
        (Admin, routes!(tenants::create_org)),
        (OrgRead, routes!(tenants::get_org)),
        (OrgWrite, routes!(tenants::update_org)),
        (Admin, routes!(tenants::delete_org)),
        (OrgRead, routes!(tenants::list_projects)),
        (OrgWrite, routes!(tenants::create_project)),
        (OrgRead, routes!(tenants::get_project)),
        (OrgWrite, routes!(tenants::delete_project)),
        (OrgRead, routes!(tenants::list_users)),
        (OrgWrite, routes!(tenants::create_user)),
        (OrgRead, routes!(tenants::get_user)),
        (OrgWrite, routes!(tenants::delete_user)),
        (OrgRead, routes!(keys::list)),
        (OrgWrite, routes!(keys::create)),
        (OrgRead, routes!(keys::get)),
        (OrgWrite, routes!(keys::revoke)),
        (Admin, routes!(bulk::apply)),
        (OrgRead, routes!(budgets::list)),
        (OrgWrite, routes!(budgets::create)),
        (OrgRead, routes!(budgets::get)),
        (OrgRead, routes!(budgets::denials)),
        (OrgWrite, routes!(budgets::update)),
        (OrgWrite, routes!(budgets::delete)),
        (Read, routes!(prices::list)),
        (Admin, routes!(prices::create)),
        (Admin, routes!(prices::import)),
        (Read, routes!(prices::get)),
        (Admin, routes!(prices::put)),
        (Admin, routes!(prices::delete)),
        (OrgRead, routes!(spend::get)),
        (Read, routes!(cost::quote)),
        (Admin, routes!(tokens::list)),
        (Admin, routes!(tokens::create)),
        (Admin, routes!(tokens::get)),
        (Admin, routes!(tokens::revoke)),
        (OrgRead, routes!(audit::list)),
        (OrgRead, routes!(alerts::list)),
        (OrgWrite, routes!(alerts::create)),
        (OrgRead, routes!(alerts::get)),
        (OrgWrite, routes!(alerts::update)),
        (OrgWrite, routes!(alerts::delete)),
        (OrgRead, routes!(alerts::deliveries)),
    ]
}

/// The routes of one table entry (one handler: one method on one path).
fn routes_of(access: Access, routed: &mut Routed) -> Vec<Route> {
    let mut out = Vec::new();
    for (path, item) in routed.1.paths.iter_mut() {
        for (method, _) in openapi::operations(item) {
            out.push(Route {
                method,
                path: path.clone(),
                access,
            });
        }
    }
    out
}

/// Every route, for documentation and its test.
pub fn routes() -> Vec<Route> {
    table()
        .into_iter()
        .flat_map(|(access, mut routed)| routes_of(access, &mut routed))
        .collect()
}

/// The body limit of a route, bytes.
pub fn body_limit(route: &Route) -> usize {
    match (route.method, route.path.as_str()) {
        ("POST", "/v1/usage") => USAGE_BODY_LIMIT,
        ("POST", "/v1/prices/import") => IMPORT_BODY_LIMIT,
        ("POST", "/v1/bulk") => bulk::BULK_BODY_LIMIT,
        _ => DEFAULT_BODY_LIMIT,
    }
}

/// The router. Tests call it with `tower::ServiceExt::oneshot`; `serve` binds it.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for (access, mut routed) in table() {
        let Some(route) = routes_of(access, &mut routed).pop() else {
            continue;
        };
        let mr = routed.2;
        let limit = body_limit(&route);
        let mr: MethodRouter<AppState> = mr
            .layer::<_, std::convert::Infallible>(Extension(BodyLimit(limit)))
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit));
        let mr = match route.access {
            Access::Public => mr,
            // `POST /v1/usage` (Reporter) admits the same callers; its handler then requires
            // a reporter secret, as the bearer or in the batch (`usage::post`).
            Access::DataPlane | Access::Reporter => mr.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::dataplane,
            )),
            Access::Admin | Access::Read | Access::OrgRead | Access::OrgWrite => mr.route_layer(
                middleware::from_fn_with_state((state.clone(), route.access), auth::management),
            ),
        };
        router = router.route(&route.path, mr);
    }
    // The console's pages (`crate::ui`), on the same listener; labelled, counted and traced
    // like the API's routes, outside its OpenAPI document (they answer HTML).
    router
        .merge(crate::ui::router(&state))
        .route_layer(middleware::from_fn(label))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_eos(())
                // A 500 is logged with its cause where it is made (`error.rs`).
                .on_failure(()),
        )
        .with_state(state)
}

/// The span of one request: the method, and the route template once routing matched it
/// ([`label`] records it). Never the URI or a header.
fn request_span(req: &Request) -> Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        route = tracing::field::Empty
    )
}

/// Logs an answer inside its request span: route template, status and latency.
fn log_response(resp: &Response, latency: Duration, _span: &Span) {
    tracing::debug!(
        route = route_of(resp),
        status = resp.status().as_u16(),
        micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

/// The matched route template, handed from the inner layer to [`count`] (a clone of
/// axum's `MatchedPath` is a reference count, not a copy: this runs on every snapshot poll).
#[derive(Debug, Clone)]
struct RouteLabel(MatchedPath);

/// Runs inside the matched route: names the route in the request span and hands it out.
async fn label(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    if let Some(route) = &route {
        Span::current().record("route", tracing::field::display(route.as_str()));
    }
    let mut resp = next.run(req).await;
    if let Some(route) = route {
        resp.extensions_mut().insert(RouteLabel(route));
    }
    resp
}

/// The route template that answered, `unmatched` outside every route.
fn route_of(resp: &Response) -> &str {
    resp.extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |r| r.0.as_str())
}

/// Counts every answer by route template and status, and its latency by method and route.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    state.metrics.request(
        &method,
        route_of(&resp),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Checks a registered id (`acme`, `team.web`, `alice@example.com`): 1 to 128 characters of
/// letters, digits and `._@:-`, so it can appear in the trusted principal header as is.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 128 characters of letters, digits and ._@:-",
        ))
    }
}

/// Checks a display name: 1 to 200 characters, no control characters.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n == 0 || n > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(())
}
