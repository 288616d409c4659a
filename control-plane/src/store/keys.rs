//! Virtual keys: created with their whole principal chain, stored as the SHA-256 of the
//! secret (the secret itself is returned once and never stored), listed by prefix, revoked by
//! setting `revoked_at` (a revoked key leaves the snapshot at the next version). Every change
//! bumps `keys_version` and then re-encodes the key's bucket of the snapshot's keys
//! (`key_buckets.rs`), in that order and in one transaction.

use serde::Serialize;

use super::audit::{audit, Change, NONE};
use super::key_buckets;
use super::tenants::{invalid_ref_if_missing, not_found};
use super::{begin_write, revocable_listing, with_pool, Store, StoreError};
use crate::keys::{generate_id, generate_secret, listed_prefix};

/// A virtual key as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VirtualKey {
    /// Key id: the `key` link of its principal chain.
    pub id: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Display name.
    pub name: String,
    /// Organisation charged.
    pub org_id: String,
    /// Project charged, if any.
    pub project_id: Option<String>,
    /// User charged, if any.
    pub user_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
    /// When it last made a request the ledger knows of (up to a minute behind; absent when
    /// never used). See `store/key_use.rs`.
    pub last_used_at: Option<i64>,
}

/// What a new key charges.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Display name.
    pub name: String,
    /// Organisation (must exist).
    pub org_id: String,
    /// Project (must exist in the organisation).
    pub project_id: Option<String>,
    /// User (must exist in the organisation).
    pub user_id: Option<String>,
}

/// A key just created, with its secret: the only time the secret exists outside the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub key: VirtualKey,
    /// The secret (`tg-…`), shown once.
    pub secret: String,
}

pub(crate) const KEY_COLUMNS: &str =
    "id, prefix, name, org_id, project_id, user_id, created_at, revoked_at, last_used_at";

/// Refuses a key whose `kind` (`project`, `user`) `id`, owned by `owner`, is missing or in
/// another organisation than the key's `org`.
fn in_org(
    owner: Result<String, StoreError>,
    kind: &str,
    id: &str,
    org: &str,
) -> Result<(), StoreError> {
    let field = format!("{kind}_id");
    let owner = owner.map_err(|e| invalid_ref_if_missing(e, &field))?;
    if owner == org {
        return Ok(());
    }
    Err(StoreError::Invalid {
        field,
        detail: format!("{kind} {id:?} belongs to organisation {owner:?}"),
    })
}

impl Store {
    /// Creates a key for an existing chain and returns its secret.
    pub async fn create_key(&self, new: &NewKey, now: i64) -> Result<CreatedKey, StoreError> {
        self.get_org(&new.org_id)
            .await
            .map_err(|e| invalid_ref_if_missing(e, "org_id"))?;
        if let Some(p) = &new.project_id {
            let owner = self.get_project(p).await.map(|project| project.org_id);
            in_org(owner, "project", p, &new.org_id)?;
        }
        if let Some(u) = &new.user_id {
            let owner = self.get_user(u).await.map(|user| user.org_id);
            in_org(owner, "user", u, &new.org_id)?;
        }
        let random = |e: crate::keys::RandomError| StoreError::Corrupt(e.to_string());
        let secret = generate_secret().map_err(random)?;
        let key = VirtualKey {
            id: generate_id("key").map_err(random)?,
            prefix: listed_prefix(&secret),
            name: new.name.clone(),
            org_id: new.org_id.clone(),
            project_id: new.project_id.clone(),
            user_id: new.user_id.clone(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        };
        // The hash the filter looks the key up by: one definition, in core.
        let sha = tollgate_core::identity::key_hash(&secret);
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query(
                "INSERT INTO virtual_keys (id, sha256, prefix, name, org_id, project_id, user_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&key.id)
            .bind(&sha)
            .bind(&key.prefix)
            .bind(&key.name)
            .bind(&key.org_id)
            .bind(&key.project_id)
            .bind(&key.user_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::from_constraint(e, "id", "key id or secret collides".into())
            })?;
            sqlx::query(
                "UPDATE meta SET version = version + 1, keys_version = keys_version + 1 WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(key_buckets::refresh_sql(pg)))
                .bind(key_buckets::bucket_of(&sha))
                .execute(&mut *tx)
                .await?;
            audit!(
                tx,
                Change::new("key", &key.id, Some(&key.org_id), NONE, Some(&key))
            );
            tx.commit().await?;
        });
        self.committed_change();
        Ok(CreatedKey { key, secret })
    }

    /// One key.
    pub async fn get_key(&self, id: &str) -> Result<VirtualKey, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, VirtualKey>(sql!(
                "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| not_found("key", id))
    }

    /// Keys, optionally of one organisation, revoked ones only when asked, by id.
    pub async fn list_keys(
        &self,
        org_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<VirtualKey>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, VirtualKey>(sqlx::AssertSqlSafe(revocable_listing(
                KEY_COLUMNS,
                "virtual_keys",
            )))
            .bind(org_id)
            .bind(include_revoked)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Revokes a key (idempotent: revoking again changes nothing).
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<VirtualKey, StoreError> {
        let before = self.get_key(id).await?;
        let revoked = with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let revoked: Option<String> = sqlx::query_scalar(
                "UPDATE virtual_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                 RETURNING sha256",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(sha) = &revoked {
                sqlx::query(
                    "UPDATE meta SET version = version + 1, keys_version = keys_version + 1 \
                     WHERE id = 1",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(key_buckets::refresh_sql(pg)))
                    .bind(key_buckets::bucket_of(sha))
                    .execute(&mut *tx)
                    .await?;
                let after = VirtualKey {
                    revoked_at: Some(now),
                    ..before.clone()
                };
                audit!(
                    tx,
                    Change::new("key", id, Some(&before.org_id), Some(&before), Some(&after))
                );
            }
            tx.commit().await?;
            revoked.is_some()
        });
        if revoked {
            self.committed_change();
        }
        self.get_key(id).await
    }
}
