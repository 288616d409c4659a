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
//! Tokens are compared as SHA-256 digests with `subtle`'s constant-time equality, so neither
//! the content nor the length of a token leaks through timing. Tokens are never logged: this
//! module only ever hands out the [`Role`].

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

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

/// Middleware for management endpoints: the admin token only.
pub async fn admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match state.tokens.role(bearer(&req)?) {
        Some(Role::Admin) => Ok(next.run(req).await),
        Some(Role::DataPlane) => Err(ApiError::Forbidden(
            "the data-plane token cannot use management endpoints",
        )),
        None => Err(ApiError::Forbidden("wrong token")),
    }
}

/// Who presented `token`: a role token, an enrolled reporter's secret, or nobody known.
pub(crate) async fn caller(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    match state.tokens.role(token) {
        Some(Role::Admin) => return Ok(Some(Caller::Admin)),
        Some(Role::DataPlane) => return Ok(Some(Caller::DataPlane)),
        None => {}
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
