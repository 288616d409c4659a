//! Bearer-token authentication.
//!
//! Two tokens, both from the environment at start-up: the admin token
//! (`TOLLGATE_ADMIN_TOKEN`) for management endpoints and the data-plane token
//! (`TOLLGATE_DATAPLANE_TOKEN`) for `GET /v1/snapshot` and `POST /v1/usage`. The admin token is
//! also accepted on the data-plane endpoints (an operator can look at the snapshot with the
//! CLI); the data-plane token never opens a management endpoint, so a leaked Envoy config
//! cannot change budgets. No token: 401. A wrong token, or the data-plane token on a
//! management endpoint: 403.
//!
//! Reporter secrets (`tgr-…`, minted by `POST /v1/reporters`, see `store/reporters.rs`)
//! authenticate one Envoy's sync service as its reporter: they open `GET /v1/snapshot` (whose
//! `reporters` map then holds that reporter's own acknowledgement) and `POST /v1/usage`, whose
//! events must all carry that reporter. The data-plane token alone can enroll and poll, but not
//! post usage, so a holder of it can never report under another Envoy's id. The caller is
//! handed to handlers as a [`Caller`] request extension.
//!
//! API tokens (`tgt-…`, minted by `POST /v1/tokens`, see `store/tokens.rs`) open the
//! management endpoints as their role allows ([`Principal::allows`]): an `admin` token
//! everything `TOLLGATE_ADMIN_TOKEN` opens (data-plane endpoints included), a `manager` or
//! `viewer` only the routes declared `Read`, `OrgRead` (both) or `OrgWrite` (manager), whose
//! handlers then confine it to its organisation ([`Principal::require_org`],
//! [`Principal::org_filter`]). Every request looks its API token up in the store (an indexed
//! read of one row), so a revoked token is refused from the next request on, by every replica.
//! The management middleware also sets the audit context (`store/audit.rs`) of the request:
//! who (the token id or `admin-env`) and which route.
//!
//! Tokens are compared as SHA-256 digests with `subtle`'s constant-time equality, so neither
//! the content nor the length of a token leaks through timing (an API token is found by its
//! digest's index, then its digest compared the same way). Tokens are never logged: this
//! module only ever hands out the [`Role`], the [`Caller`] or the [`Principal`] (an API token
//! as listed: id, role, organisation, never its secret or digest).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{Access, AppState};
use crate::store::tokens::{ApiToken, TokenRole, TOKEN_PREFIX};

/// Shortest token accepted at start-up: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who a request authenticated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The admin token.
    Admin,
    /// The data-plane token.
    DataPlane,
}

/// Who called, as handlers see it (a request extension set by the middlewares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token.
    Admin,
    /// The data-plane token.
    DataPlane,
    /// An enrolled reporter, by id.
    Reporter(String),
}

/// Reporter secrets seen, by SHA-256 hex → reporter id, so a snapshot poll or usage post does
/// not read the database to authenticate (an unknown secret is looked up every time; a known
/// one never changes owner). Bounded: cleared when it reaches [`ReporterCache::MAX`].
#[derive(Debug, Default)]
pub struct ReporterCache(std::sync::RwLock<std::collections::HashMap<String, String>>);

impl ReporterCache {
    /// Most entries kept (one per Envoy: far more than a fleet).
    pub const MAX: usize = 100_000;

    fn get(&self, digest: &str) -> Option<String> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(digest).cloned()
    }

    fn put(&self, digest: String, reporter: String) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(digest, reporter);
    }
}

/// The two tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    admin: [u8; 32],
    dataplane: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

/// Why the tokens were refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Missing or too short.
    #[error("{0} must be set to at least {MIN_TOKEN_LEN} characters")]
    TooShort(&'static str),
    /// Both the same: the data plane would hold admin rights.
    #[error("TOLLGATE_ADMIN_TOKEN and TOLLGATE_DATAPLANE_TOKEN must differ")]
    Same,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Checks and keeps the tokens.
    pub fn new(admin: &str, dataplane: &str) -> Result<Tokens, TokenError> {
        if admin.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort("TOLLGATE_ADMIN_TOKEN"));
        }
        if dataplane.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort("TOLLGATE_DATAPLANE_TOKEN"));
        }
        if admin == dataplane {
            return Err(TokenError::Same);
        }
        Ok(Tokens {
            admin: digest(admin),
            dataplane: digest(dataplane),
        })
    }

    /// A tag binding something to the admin token as it is now: hex SHA-256 of the admin
    /// token's digest and `context`. The console keeps it with a session opened with the admin
    /// token (`context`: the session id, which the store does not keep), so the session ends
    /// when the admin token is changed, and the stored tag says nothing about the token without
    /// the session id.
    pub fn admin_tag(&self, context: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.admin);
        h.update(context);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The role of a presented token, if any. Both comparisons always run.
    pub fn role(&self, presented: &str) -> Option<Role> {
        let d = digest(presented);
        let admin = d.ct_eq(&self.admin);
        let dataplane = d.ct_eq(&self.dataplane);
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(dataplane) {
            Some(Role::DataPlane)
        } else {
            None
        }
    }
}

/// The bearer token of a request: 401 when there is none.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?
        .to_str()
        .map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(token.trim())
}

/// Who called a management endpoint, as its handler sees it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `TOLLGATE_ADMIN_TOKEN`.
    AdminEnv,
    /// A live API token.
    Token(ApiToken),
}

/// What a handler's scope check refuses with.
const OTHER_ORG: ApiError = ApiError::Forbidden("this token acts on another organisation");

impl Principal {
    /// Who the audit log names: the token id, or `admin-env`.
    pub fn actor(&self) -> &str {
        match self {
            Principal::AdminEnv => "admin-env",
            Principal::Token(t) => &t.id,
        }
    }

    /// The organisation the caller is confined to; `None` for an admin.
    pub fn org(&self) -> Option<&str> {
        match self {
            Principal::AdminEnv => None,
            Principal::Token(t) => match t.role {
                TokenRole::Admin => None,
                TokenRole::Manager | TokenRole::Viewer => t.org_id.as_deref(),
            },
        }
    }

    fn role(&self) -> TokenRole {
        match self {
            Principal::AdminEnv => TokenRole::Admin,
            Principal::Token(t) => t.role,
        }
    }

    /// Whether the caller's role opens a route of this access level (its organisation is the
    /// handler's to check).
    pub fn allows(&self, access: Access) -> bool {
        matches!(
            (self.role(), access),
            (TokenRole::Admin, _)
                | (_, Access::Read | Access::OrgRead)
                | (TokenRole::Manager, Access::OrgWrite)
        )
    }

    /// Refuses (403) an object of organisation `org` (`None`: of no organisation, such as a
    /// budget on an unregistered principal) unless the caller is an admin or acts on `org`.
    pub fn require_org(&self, org: Option<&str>) -> Result<(), ApiError> {
        match self.org() {
            None => Ok(()),
            Some(mine) if org == Some(mine) => Ok(()),
            Some(_) => Err(OTHER_ORG),
        }
    }

    /// Refuses (403) the principal `scope` `id` unless the caller is an admin or the principal
    /// is registered in the caller's organisation.
    pub async fn require_scope(
        &self,
        state: &AppState,
        scope: tollgate_core::budget::Scope,
        id: &str,
    ) -> Result<(), ApiError> {
        if self.org().is_none() {
            return Ok(());
        }
        let org = state.store.org_of_scope(scope, id).await?;
        self.require_org(org.as_deref())
    }

    /// The organisation a listing is confined to: what was asked for (`None`: every one) for
    /// an admin; the caller's own for a scoped token, which may name no other (403).
    pub fn org_filter<'a>(&'a self, asked: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
        match (self.org(), asked) {
            (None, asked) => Ok(asked),
            (Some(mine), None) => Ok(Some(mine)),
            (Some(mine), Some(asked)) if asked == mine => Ok(Some(mine)),
            (Some(_), Some(_)) => Err(OTHER_ORG),
        }
    }
}

/// The live API token `token` is, if it is one.
pub(crate) async fn api_token(state: &AppState, token: &str) -> Result<Option<ApiToken>, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let presented = crate::keys::sha256_hex(token.as_bytes());
    let Some((found, stored)) = state.store.live_token_by_secret(&presented).await? else {
        return Ok(None);
    };
    // The index found it by digest; the digests are compared once more in constant time.
    Ok(bool::from(presented.as_bytes().ct_eq(stored.as_bytes())).then_some(found))
}

/// Middleware for management endpoints of access level `access`: the admin token, or an API
/// token whose role opens it. Hands the [`Principal`] to the handler and runs it inside the
/// request's audit context.
pub async fn management(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&req)?;
    let principal = match state.tokens.role(token) {
        Some(Role::Admin) => Principal::AdminEnv,
        Some(Role::DataPlane) => {
            return Err(ApiError::Forbidden(
                "the data-plane token cannot use management endpoints",
            ))
        }
        None => match api_token(&state, token).await? {
            Some(t) => Principal::Token(t),
            None => return Err(ApiError::Forbidden("wrong token")),
        },
    };
    if !principal.allows(access) {
        return Err(ApiError::Forbidden(
            "this token's role cannot use this endpoint",
        ));
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("", |p| p.as_str());
    let ctx = crate::store::audit::Context {
        actor: principal.actor().to_string(),
        action: format!("{} {route}", req.method()),
        at: state.clock.now(),
    };
    req.extensions_mut().insert(principal);
    Ok(crate::store::audit::scope(ctx, next.run(req)).await)
}

/// Who presented `token`: a role token, an admin API token (as the admin), an enrolled
/// reporter's secret, or nobody known.
pub(crate) async fn caller(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    match state.tokens.role(token) {
        Some(Role::Admin) => return Ok(Some(Caller::Admin)),
        Some(Role::DataPlane) => return Ok(Some(Caller::DataPlane)),
        None => {}
    }
    if let Some(t) = api_token(state, token).await? {
        return Ok((t.role == TokenRole::Admin).then_some(Caller::Admin));
    }
    if !token.starts_with(crate::store::reporters::REPORTER_SECRET_PREFIX) {
        return Ok(None);
    }
    let digest = crate::keys::sha256_hex(token.as_bytes());
    if let Some(reporter) = state.reporter_secrets.get(&digest) {
        return Ok(Some(Caller::Reporter(reporter)));
    }
    match state.store.reporter_by_secret(&digest).await? {
        Some(reporter) => {
            state.reporter_secrets.put(digest, reporter.clone());
            Ok(Some(Caller::Reporter(reporter)))
        }
        None => Ok(None),
    }
}

/// Middleware for data-plane endpoints: the data-plane token, a reporter secret or the admin
/// token.
pub async fn dataplane(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match caller(&state, bearer(&req)?).await? {
        Some(c) => {
            req.extensions_mut().insert(c);
            Ok(next.run(req).await)
        }
        None => Err(ApiError::Forbidden("wrong token")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_and_start_up_checks() {
        let t = Tokens::new("admin-token-0123456789", "dataplane-token-0123").unwrap();
        assert_eq!(t.role("admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(t.role("dataplane-token-0123"), Some(Role::DataPlane));
        assert_eq!(t.role("admin-token-012345678"), None);
        assert_eq!(t.role(""), None);
        assert_eq!(
            Tokens::new("short", "dataplane-token-0123").unwrap_err(),
            TokenError::TooShort("TOLLGATE_ADMIN_TOKEN")
        );
        assert_eq!(
            Tokens::new("same-token-0123456789", "same-token-0123456789").unwrap_err(),
            TokenError::Same
        );
        assert!(!format!("{t:?}").contains("admin"));
    }
}
