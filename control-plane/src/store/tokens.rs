//! API tokens (migration 0007): a role (`admin`, `manager`, `viewer`) and, for the last two,
//! the one organisation they act on. The secret (`tgt-` and 40 base62 characters) is returned
//! once, at creation; only its SHA-256 is stored, with a short prefix for listings. Revoking
//! sets `revoked_at`, and a revoked token authenticates nothing from the next request on: every
//! request looks its token up (an indexed read; no cache to invalidate across replicas).
//! Creating and revoking are audited in their transaction.

use serde::{Deserialize, Serialize};

use super::audit::{audit, Change, NONE};
use super::tenants::{invalid_ref_if_missing, not_found};
use super::{begin_write, revocable_listing, with_pool, Store, StoreError};
use crate::keys::{generate_id, listed_prefix, random_base62, sha256_hex};

/// What every API token starts with (so a leaked one is recognisable in a scan).
pub const TOKEN_PREFIX: &str = "tgt-";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything, like `TOLLGATE_ADMIN_TOKEN`.
    Admin,
    /// Read and change its organisation's projects, users, keys and budgets; read its spend.
    Manager,
    /// Read its organisation's objects and spend.
    Viewer,
}

impl TokenRole {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Manager => "manager",
            TokenRole::Viewer => "viewer",
        }
    }

    fn parse(s: &str) -> Result<TokenRole, StoreError> {
        match s {
            "admin" => Ok(TokenRole::Admin),
            "manager" => Ok(TokenRole::Manager),
            "viewer" => Ok(TokenRole::Viewer),
            other => Err(StoreError::Corrupt(format!("token role {other:?}"))),
        }
    }
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Id (`tok_…`): what the audit log names as the actor.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it may do.
    pub role: TokenRole,
    /// The organisation a manager or viewer acts on (absent for an admin).
    pub org_id: Option<String>,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Who created it: a token id or `admin-env`.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
}

/// A token just created, with its secret: the only time the secret exists outside the caller.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: ApiToken,
    /// The secret (`tgt-…`), shown once: `Authorization: Bearer` of its requests.
    pub secret: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What a new token may do.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Display name.
    pub name: String,
    /// Role.
    pub role: TokenRole,
    /// Organisation (required for a manager or viewer, refused for an admin).
    pub org_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    org_id: Option<String>,
    prefix: String,
    created_by: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

/// A token's row with its stored digest.
#[derive(sqlx::FromRow)]
struct SecretRow {
    #[sqlx(flatten)]
    token: TokenRow,
    secret_sha256: String,
}

const TOKEN_COLUMNS: &str = "id, name, role, org_id, prefix, created_by, created_at, revoked_at";

fn from_row(r: TokenRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: r.id,
        name: r.name,
        role: TokenRole::parse(&r.role)?,
        org_id: r.org_id,
        prefix: r.prefix,
        created_by: r.created_by,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    })
}

impl Store {
    /// Creates a token and returns its secret. The creator is the request's actor.
    pub async fn create_token(&self, new: &NewToken, now: i64) -> Result<CreatedToken, StoreError> {
        match (new.role, &new.org_id) {
            (TokenRole::Admin, Some(_)) => {
                return Err(StoreError::Invalid {
                    field: "org_id".into(),
                    detail: "an admin token acts on every organisation: give none".into(),
                })
            }
            (TokenRole::Manager | TokenRole::Viewer, None) => {
                return Err(StoreError::Invalid {
                    field: "org_id".into(),
                    detail: format!("a {} token needs its organisation", new.role.as_str()),
                })
            }
            (_, Some(org)) => {
                self.get_org(org)
                    .await
                    .map_err(|e| invalid_ref_if_missing(e, "org_id"))?;
            }
            (TokenRole::Admin, None) => {}
        }
        let random = |e: crate::keys::RandomError| StoreError::Corrupt(e.to_string());
        let secret = format!("{TOKEN_PREFIX}{}", random_base62(40).map_err(random)?);
        let token = ApiToken {
            id: generate_id("tok").map_err(random)?,
            name: new.name.clone(),
            role: new.role,
            org_id: new.org_id.clone(),
            prefix: listed_prefix(&secret),
            created_by: super::audit::current().actor,
            created_at: now,
            revoked_at: None,
        };
        let digest = sha256_hex(secret.as_bytes());
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query(sql!(
                "INSERT INTO api_tokens ({TOKEN_COLUMNS}, secret_sha256) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&token.id)
            .bind(&token.name)
            .bind(token.role.as_str())
            .bind(&token.org_id)
            .bind(&token.prefix)
            .bind(&token.created_by)
            .bind(now)
            .bind(None::<i64>)
            .bind(&digest)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::from_constraint(e, "id", "token id or secret collides".into())
            })?;
            audit!(
                tx,
                Change::new(
                    "token",
                    &token.id,
                    token.org_id.as_deref(),
                    NONE,
                    Some(&token)
                )
            );
            tx.commit().await?;
        });
        Ok(CreatedToken { token, secret })
    }

    /// One token.
    pub async fn get_token(&self, id: &str) -> Result<ApiToken, StoreError> {
        let row: Option<TokenRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(sql!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        from_row(row.ok_or_else(|| not_found("token", id))?)
    }

    /// Tokens, optionally of one organisation, revoked ones only when asked, by id.
    pub async fn list_tokens(
        &self,
        org_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(revocable_listing(
                TOKEN_COLUMNS,
                "api_tokens",
            )))
            .bind(org_id)
            .bind(include_revoked)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Revokes a token (idempotent: revoking again changes nothing and records nothing).
    pub async fn revoke_token(&self, id: &str, now: i64) -> Result<ApiToken, StoreError> {
        let before = self.get_token(id).await?;
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let n = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                let after = ApiToken {
                    revoked_at: Some(now),
                    ..before.clone()
                };
                audit!(
                    tx,
                    Change::new(
                        "token",
                        id,
                        before.org_id.as_deref(),
                        Some(&before),
                        Some(&after)
                    )
                );
            }
            tx.commit().await?;
        });
        self.get_token(id).await
    }

    /// The live (not revoked) token whose secret hashes to `sha256` (lowercase hex), with
    /// that stored hash, if any.
    pub async fn live_token_by_secret(
        &self,
        sha256: &str,
    ) -> Result<Option<(ApiToken, String)>, StoreError> {
        let row: Option<SecretRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(sql!(
                "SELECT {TOKEN_COLUMNS}, secret_sha256 FROM api_tokens \
                 WHERE secret_sha256 = $1 AND revoked_at IS NULL"
            ))
            .bind(sha256)
            .fetch_optional(pool)
            .await?
        });
        row.map(|r| Ok((from_row(r.token)?, r.secret_sha256)))
            .transpose()
    }
}
