//! Console sessions (migration 0010, `ui_sessions`): signing in trades an API token for a
//! random session id (`tgs-` and 40 base62 characters, about 238 bits) in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` when the browser reached us over HTTPS); the store keeps
//! only the id's SHA-256, the API token it was opened with (none for the environment's admin
//! token), a per-session CSRF token and the expiry ([`SESSION_TTL`]). Every request reads the
//! API token again, so revoking it ends its sessions at once on every replica; a session of
//! the environment's admin token carries a tag of that token and the session id
//! (`Tokens::admin_tag`), so changing the admin token ends those. Signing out deletes the row.
//! Expired rows are deleted when someone signs in.

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};
use subtle::ConstantTimeEq;

use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::keys::{random_base62, sha256_hex, RandomError};
use crate::store::{with_pool, Store, StoreError};

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_session";
/// How long a session lasts, seconds (a working day; then sign in again).
pub const SESSION_TTL: i64 = 8 * 3600;
/// What a session id starts with (recognisable if it leaks into a log or a ticket).
const SESSION_PREFIX: &str = "tgs-";

/// A signed-in request: who, and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in, as the API would see their token.
    pub principal: Principal,
    /// The session's CSRF token (a hidden field of every form).
    pub csrf: String,
}

impl Session {
    /// Whether a posted CSRF token is this session's (constant time).
    pub fn csrf_matches(&self, posted: &str) -> bool {
        !posted.is_empty() && bool::from(posted.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// A stored session: the API token it was opened with (`None`: the admin token), the admin
/// token's tag, and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredSession {
    /// The API token's id; `None` for the environment's admin token.
    pub token_id: Option<String>,
    /// For the admin token: `Tokens::admin_tag` of the session id when it was opened.
    pub admin_tag: Option<String>,
    /// The CSRF token.
    pub csrf: String,
}

/// A new session id: the cookie's value, never stored.
pub fn new_session_id() -> Result<String, StoreError> {
    Ok(format!(
        "{SESSION_PREFIX}{}",
        random_base62(40).map_err(random)?
    ))
}

fn random(e: RandomError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// Opens session `id` ([`new_session_id`]) for `token_id` (`None`: the admin token, with
    /// its `admin_tag`) at `now`; returns the stored row. Deletes expired sessions.
    pub async fn open_ui_session(
        &self,
        id: &str,
        token_id: Option<&str>,
        admin_tag: Option<&str>,
        now: i64,
    ) -> Result<StoredSession, StoreError> {
        let csrf = random_base62(32).map_err(random)?;
        with_pool!(self, write, |pool, pg| {
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO ui_sessions (id_sha256, token_id, admin_tag, csrf, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(sha256_hex(id.as_bytes()))
            .bind(token_id)
            .bind(admin_tag)
            .bind(&csrf)
            .bind(now)
            .bind(now.saturating_add(SESSION_TTL))
            .execute(pool)
            .await?;
        });
        Ok(StoredSession {
            token_id: token_id.map(str::to_string),
            admin_tag: admin_tag.map(str::to_string),
            csrf,
        })
    }

    /// The live session whose id is `id` at `now`, if any.
    pub async fn ui_session(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        if !id.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let digest = sha256_hex(id.as_bytes());
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, StoredSession>(
                "SELECT token_id, admin_tag, csrf FROM ui_sessions \
                 WHERE id_sha256 = $1 AND expires_at > $2",
            )
            .bind(&digest)
            .bind(now)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Ends the session whose id is `id`; whether there was one.
    pub async fn close_ui_session(&self, id: &str) -> Result<bool, StoreError> {
        let digest = sha256_hex(id.as_bytes());
        let n = with_pool!(self, write, |pool, pg| {
            sqlx::query("DELETE FROM ui_sessions WHERE id_sha256 = $1")
                .bind(&digest)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}

/// The session id in a request's cookies, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// The request's session, with its principal read afresh: `None` when there is no cookie, the
/// session is unknown or expired, its API token was revoked since, or (a session of the admin
/// token) the admin token is not the one it was opened with.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookie_value(headers) else {
        return Ok(None);
    };
    let Some(stored) = state.store.ui_session(&id, state.clock.now()).await? else {
        return Ok(None);
    };
    let principal = match &stored.token_id {
        None => {
            let now_tag = state.tokens.admin_tag(id.as_bytes());
            let same = stored
                .admin_tag
                .as_deref()
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(now_tag.as_bytes())));
            if !same {
                return Ok(None);
            }
            Principal::AdminEnv
        }
        Some(token_id) => match state.store.get_token(token_id).await {
            Ok(t) if t.revoked_at.is_none() => Principal::Token(t),
            Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(Some(Session {
        principal,
        csrf: stored.csrf,
    }))
}

/// Whether the browser reached us over HTTPS: a TLS-terminating proxy's
/// `X-Forwarded-Proto: https`, or an `https://` origin.
pub fn over_https(headers: &HeaderMap) -> bool {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("https://"));
    proto || origin
}

/// The `Set-Cookie` of a new session `id` (`None`: the one that clears it).
pub fn set_cookie(id: Option<&str>, secure: bool) -> HeaderValue {
    let mut c = Cookie::build((COOKIE, id.unwrap_or("").to_string()))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    c = match id {
        Some(_) => c.max_age(cookie::time::Duration::seconds(SESSION_TTL)),
        None => c.max_age(cookie::time::Duration::ZERO),
    };
    // A cookie's text is ASCII (base62 id, fixed attributes): always a valid header value.
    HeaderValue::from_str(&c.build().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("tollgate_session=; Max-Age=0; Path=/ui"))
}

/// Whether a POST comes from a page of this origin: its `Origin` (or, without one, its
/// `Referer`) names the host the request was sent to (`X-Forwarded-Host` behind a proxy).
/// Browsers send `Origin` on every POST; a request with neither header is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .or_else(|| text(header::HOST))
    else {
        return false;
    };
    let Some(from) = text(header::ORIGIN).or_else(|| text(header::REFERER)) else {
        return false;
    };
    let Some((_, rest)) = from.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_name_the_host() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080/ui/keys")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080.evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn cookie_flags() {
        let c = set_cookie(Some("tgs-abc"), true);
        let c = c.to_str().unwrap();
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/ui",
            "Max-Age=28800",
        ] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!set_cookie(Some("tgs-abc"), false)
            .to_str()
            .unwrap()
            .contains("Secure"));
        let h = headers(&[("cookie", "a=b; tollgate_session=tgs-xyz; c=d")]);
        assert_eq!(cookie_value(&h).as_deref(), Some("tgs-xyz"));
    }
}
