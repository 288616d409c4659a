//! What budgets refused and warned about, as ingestion recorded it (`budget_window_stats` and
//! the ledger's denial records, migration 0008): the counts the budget views and the console
//! show, and a budget's recent refusals ([`DenialRecord`]).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::budgets::Budget;
use super::{with_pool, Store, StoreError};

/// A budget window's refusals and soft warnings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct WindowCounts {
    /// Requests the budget refused in the window.
    pub denied: i64,
    /// Admitted requests that crossed its soft limit in the window.
    pub soft_warned: i64,
    /// The first refusal, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_denied_at: Option<i64>,
    /// The last refusal, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_denied_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StatRow {
    budget_id: String,
    #[sqlx(flatten)]
    counts: WindowCounts,
}

impl Store {
    /// Each budget's counts in its window containing `now` (absent: none yet).
    pub async fn window_counts(
        &self,
        budgets: &[Budget],
        now: i64,
    ) -> Result<HashMap<String, WindowCounts>, StoreError> {
        let wanted: HashMap<&str, i64> = budgets
            .iter()
            .map(|b| (b.id.as_str(), b.window_at(now).start))
            .collect();
        // Budgets share few window starts (one per period and zone): a query per start.
        let starts: BTreeSet<i64> = wanted.values().copied().collect();
        let mut out = HashMap::new();
        for start in starts {
            let rows: Vec<StatRow> = with_pool!(self, read, |pool, pg| {
                sqlx::query_as(
                    "SELECT budget_id, denied, soft_warned, first_denied_at, last_denied_at \
                     FROM budget_window_stats WHERE window_start = $1",
                )
                .bind(start)
                .fetch_all(pool)
                .await?
            });
            for r in rows {
                if wanted.get(r.budget_id.as_str()) == Some(&start) {
                    out.insert(r.budget_id, r.counts);
                }
            }
        }
        Ok(out)
    }

    /// The budget's latest denial records, newest first.
    pub async fn denials(
        &self,
        budget_id: &str,
        limit: u32,
    ) -> Result<Vec<DenialRecord>, StoreError> {
        let rows: Vec<DenialRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(
                "SELECT id, reporter, ts, org_id, project_id, user_id, key_id, model, api, \
                 detail FROM usage_events WHERE denied_by = $1 \
                 ORDER BY ts DESC, reporter, seq DESC LIMIT $2",
            )
            .bind(budget_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(DenialRecord::try_from).collect()
    }
}

/// Requests one Envoy worker refused with this budget binding, in about a second, for one
/// principal and model: one denial record of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DenialRecord {
    /// The record's ledger id.
    pub id: String,
    /// The Envoy that refused them.
    pub reporter: String,
    /// How many requests.
    pub requests: i64,
    /// The first refusal, Unix seconds.
    pub first_ts: i64,
    /// The last refusal, Unix seconds.
    pub last_ts: i64,
    /// Organisation of the refused requests.
    pub org_id: String,
    /// Their project.
    pub project_id: Option<String>,
    /// Their user.
    pub user_id: Option<String>,
    /// Their key.
    pub key_id: Option<String>,
    /// The model they asked for (as priced).
    pub model: String,
    /// The API they spoke.
    pub api: String,
}

#[derive(sqlx::FromRow)]
struct DenialRow {
    id: String,
    reporter: String,
    ts: i64,
    org_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
    key_id: Option<String>,
    model: String,
    api: String,
    detail: String,
}

/// The part of a denial record's `detail` this reads (written by `ledger.rs`).
#[derive(serde::Deserialize)]
struct DetailDenied {
    denied: DeniedCounts,
}

#[derive(serde::Deserialize)]
struct DeniedCounts {
    requests: i64,
    first_ts: i64,
}

impl TryFrom<DenialRow> for DenialRecord {
    type Error = StoreError;

    fn try_from(r: DenialRow) -> Result<DenialRecord, StoreError> {
        let d: DetailDenied = serde_json::from_str(&r.detail).map_err(|e| {
            StoreError::Corrupt(format!("usage_events {}: denial detail: {e}", r.id))
        })?;
        Ok(DenialRecord {
            id: r.id,
            reporter: r.reporter,
            requests: d.denied.requests,
            first_ts: d.denied.first_ts,
            last_ts: r.ts,
            org_id: r.org_id,
            project_id: r.project_id,
            user_id: r.user_id,
            key_id: r.key_id,
            model: r.model,
            api: r.api,
        })
    }
}
