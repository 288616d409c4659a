//! The delivery log: one row per (event, subscription), at least once. A dispatcher claims
//! due rows under a lease (a random token and an expiry), sends, and records the outcome under
//! that token; a lease that expires (a replica died mid-send) makes the row due again, so
//! another replica sends it. Listed by `GET /v1/alerts/deliveries`.

use serde::Serialize;

use super::webhooks::{Webhook, WebhookRow, WEBHOOK_COLUMNS};
use crate::store::{with_pool, Store, StoreError};

/// A delivery as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    /// Id; the cursor of the next page, and `delivery_id` in the body sent.
    pub id: i64,
    /// The event (`event_id` in the body sent).
    pub event_id: i64,
    /// The subscription.
    pub webhook_id: String,
    /// The subscription's organisation.
    pub org_id: Option<String>,
    /// The event's kind (`threshold_80`, `hard_limit`, …).
    pub kind: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Attempts made (or started).
    pub attempts: i64,
    /// When the next attempt is due, Unix milliseconds (meaningful while `pending`).
    pub next_attempt_ms: i64,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<i64>,
    /// Why the last attempt failed, if it did (never the URL or the secret).
    pub last_error: Option<String>,
    /// When it was recorded, Unix milliseconds.
    pub created_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: i64,
}

const DELIVERY_COLUMNS: &str = "id, event_id, webhook_id, org_id, kind, status, attempts, \
     next_attempt_ms, last_status, last_error, created_ms, updated_ms";

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Only this organisation's subscriptions'.
    pub org_id: Option<String>,
    /// Only this subscription's.
    pub webhook_id: Option<String>,
    /// Only in this status.
    pub status: Option<String>,
    /// Only of this event kind.
    pub kind: Option<String>,
    /// Only rows with a smaller id (the previous page's `next_before`).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// A delivery claimed for sending, with what it needs (the subscription's secret included).
pub(crate) struct Claimed {
    pub id: i64,
    pub event_id: i64,
    pub attempts: i64,
    pub created_ms: i64,
    pub payload: String,
    pub webhook: Webhook,
    pub secret: String,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    d_id: i64,
    d_event_id: i64,
    d_attempts: i64,
    d_created_ms: i64,
    e_payload: String,
    #[sqlx(flatten)]
    webhook: WebhookRow,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer with this status.
    Delivered(u16),
    /// Failed; try again at this time (Unix ms).
    Retry {
        /// The HTTP status, if an answer came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_ms: i64,
    },
    /// Failed, and the retries are over.
    Failed {
        /// The HTTP status, if an answer came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

impl Store {
    /// Deliveries of `q`, newest first.
    pub async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        with_pool!(self, read, |pool, pg| {
            Ok(sqlx::query_as::<_, Delivery>(sql!(
                "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries \
                 WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR webhook_id = $2) \
                 AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR kind = $4) \
                 AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
            ))
            .bind(&q.org_id)
            .bind(&q.webhook_id)
            .bind(&q.status)
            .bind(&q.kind)
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?)
        })
    }

    /// Claims up to `limit` due deliveries (pending, due at `now_ms`, not leased) for `lease_ms`
    /// under `token`, counting the attempt. A row another replica claimed meanwhile is skipped:
    /// on PostgreSQL the outer conditions are checked again on the row once its lock is had.
    pub(crate) async fn claim_deliveries(
        &self,
        token: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let claimable = "status = 'pending' AND next_attempt_ms <= $3 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $3)";
        let rows: Vec<ClaimedRow> = with_pool!(self, write, |pool, pg| {
            let n = sqlx::query(sql!(
                "UPDATE alert_deliveries SET lease_until_ms = $1, lease_token = $2, \
                 attempts = attempts + 1, updated_ms = $3 \
                 WHERE id IN (SELECT id FROM alert_deliveries WHERE {claimable} \
                              ORDER BY next_attempt_ms, id LIMIT $4) AND {claimable}"
            ))
            .bind(now_ms.saturating_add(lease_ms))
            .bind(token)
            .bind(now_ms)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(Vec::new());
            }
            let cols = WEBHOOK_COLUMNS
                .split(", ")
                .map(|c| format!("w.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            sqlx::query_as(sql!(
                "SELECT d.id AS d_id, d.event_id AS d_event_id, d.attempts AS d_attempts, \
                 d.created_ms AS d_created_ms, e.payload AS e_payload, {cols} \
                 FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id \
                 JOIN alert_webhooks w ON w.id = d.webhook_id \
                 WHERE d.lease_token = $1 AND d.status = 'pending' ORDER BY d.id"
            ))
            .bind(token)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.d_id,
                    event_id: r.d_event_id,
                    attempts: r.d_attempts,
                    created_ms: r.d_created_ms,
                    payload: r.e_payload,
                    webhook: r.webhook.view()?,
                    secret: r.webhook.secret,
                })
            })
            .collect()
    }

    /// Records how the attempt on delivery `id` claimed under `token` ended (nothing when the
    /// lease was lost meanwhile: the other claimant records its own).
    pub(crate) async fn finish_delivery(
        &self,
        id: i64,
        token: &str,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (status, next, code, error) = match outcome {
            Outcome::Delivered(code) => ("delivered", now_ms, Some(*code), None),
            Outcome::Retry {
                status,
                error,
                next_attempt_ms,
            } => ("pending", *next_attempt_ms, *status, Some(error.as_str())),
            Outcome::Failed { status, error } => ("failed", now_ms, *status, Some(error.as_str())),
        };
        with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE alert_deliveries SET status = $1, next_attempt_ms = $2, \
                 last_status = $3, last_error = $4, lease_until_ms = NULL, lease_token = NULL, \
                 updated_ms = $5 WHERE id = $6 AND lease_token = $7",
            )
            .bind(status)
            .bind(next)
            .bind(code.map(i64::from))
            .bind(error)
            .bind(now_ms)
            .bind(id)
            .bind(token)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// When the next pending delivery is due (its lease's end, when leased), Unix ms.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, read, |pool, pg| {
            Ok(sqlx::query_scalar::<_, Option<i64>>(
                "SELECT min(CASE WHEN lease_until_ms IS NOT NULL \
                 AND lease_until_ms > next_attempt_ms THEN lease_until_ms \
                 ELSE next_attempt_ms END) FROM alert_deliveries WHERE status = 'pending'",
            )
            .fetch_one(pool)
            .await?)
        })
    }
}
