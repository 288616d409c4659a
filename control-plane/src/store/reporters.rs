//! Reporter enrollment: each Envoy's sync service asks the control plane for a reporter id and
//! a secret (`POST /v1/reporters`, with the data-plane token) before it posts usage, and then
//! authenticates its usage posts and snapshot polls with that secret. The id is minted here, so
//! no Envoy can pick another's; the secret is returned once and only its SHA-256 is stored, in
//! the `reporters` row that also keeps the reporter's acknowledged sequence (migration 0006).
//! Rows persist: a restarted control plane still knows every enrolled Envoy.
//!
//! Liveness: `last_seen` moves with each usage batch, `last_synced_at` (migration 0012) with
//! snapshot polls that name the reporter ([`Store::note_sync`]); the `fleet_stale` alert reads
//! the later of the two, so an idle Envoy that keeps syncing is not stale.

use serde::Serialize;

use super::{with_pool, Store, StoreError};
use crate::keys::{random_base62, sha256_hex};

/// How stale `last_synced_at` may be, seconds: a poll writes it at most this often per
/// reporter and control-plane process (Envoys poll every few seconds; the stale alert waits
/// minutes).
pub const SYNC_RESOLUTION_S: i64 = 30;

/// What every reporter secret starts with (so a leaked one is recognisable in a scan).
pub const REPORTER_SECRET_PREFIX: &str = "tgr-";

/// A reporter just enrolled, with its secret: the only time the secret exists outside the
/// sync service that asked for it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// The reporter id: every event of this reporter carries it, and its ids start with it.
    pub reporter: String,
    /// The reporter secret (`tgr-…`): `Authorization: Bearer` of its usage posts.
    pub secret: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Enrolls a new reporter. `node` (an Envoy's node id, already checked) starts the id so
    /// that operators can tell whose it is; the rest is random, so ids never repeat.
    pub async fn enroll_reporter(
        &self,
        node: Option<&str>,
        now: i64,
    ) -> Result<Enrolled, StoreError> {
        let random = |e: crate::keys::RandomError| StoreError::Corrupt(e.to_string());
        let reporter = format!(
            "{}-{}",
            node.unwrap_or("envoy"),
            random_base62(12).map_err(random)?
        );
        let secret = format!(
            "{REPORTER_SECRET_PREFIX}{}",
            random_base62(40).map_err(random)?
        );
        let digest = sha256_hex(secret.as_bytes());
        with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO reporters (reporter, acked_seq, last_seen, secret_sha256, enrolled_at) \
                 VALUES ($1, 0, $2, $3, $2)",
            )
            .bind(&reporter)
            .bind(now)
            .bind(&digest)
            .execute(pool)
            .await
            .map_err(|e| {
                StoreError::from_constraint(e, "reporter", "reporter id already taken".into())
            })?;
            Ok(Enrolled { reporter, secret })
        })
    }

    /// Records that reporter `reporter` polled its snapshot at `now` (a name no reporter has
    /// changes nothing: a poll cannot create one). Writes at most once per
    /// [`SYNC_RESOLUTION_S`] per reporter and process, in a task of its own (the poll never
    /// waits for the write lock), and never moves the time back.
    pub fn note_sync(&self, reporter: &str, now: i64) {
        let due = self.sync_seen.due([(reporter, now)]);
        if due.is_empty() {
            return;
        }
        let store = self.clone();
        let reporter = reporter.to_string();
        tokio::spawn(async move {
            match store.write_sync(&reporter, now).await {
                Ok(()) => store.sync_seen.written(due),
                Err(e) => tracing::warn!(%reporter, error = %e, "could not record a snapshot poll"),
            }
        });
    }

    async fn write_sync(&self, reporter: &str, now: i64) -> Result<(), StoreError> {
        with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE reporters SET last_synced_at = $2 WHERE reporter = $1 \
                 AND (last_synced_at IS NULL OR last_synced_at < $2)",
            )
            .bind(reporter)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The reporter whose secret hashes to `sha256` (lowercase hex), if any.
    pub async fn reporter_by_secret(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, read, |pool, pg| {
            Ok(
                sqlx::query_scalar("SELECT reporter FROM reporters WHERE secret_sha256 = $1")
                    .bind(sha256)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }
}
