//! What the snapshot builder reads, in one read transaction so that the spend counters and the
//! reporter acknowledgements describe the same committed state (an acknowledgement ahead of
//! the counters would make the filter drop local spend the snapshot does not carry yet).
//!
//! Sections whose version did not change since the last build are not read again: a batch of
//! usage only changes counters and acknowledgements, so the 100,000 keys of a large fleet are
//! read once per key change, not once per batch.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use tollgate_core::principal::Principal;
use tollgate_core::snapshot::KeyEntry;

use super::budgets::{budgets_from_rows, counters_at, Budget, BudgetRow, BUDGET_COLUMNS};
use super::prices::{effective_prices, EffectivePrices};
use super::{begin_read, with_pool, Meta, Money, Store, StoreError, SELECT_META};

/// The section versions a builder already holds (`None`: never loaded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// `meta.keys_version` of the held keys.
    pub keys_version: Option<i64>,
    /// `meta.budgets_version` of the held budgets.
    pub budgets_version: Option<i64>,
    /// `meta.prices_version` of the held prices and the next instant a revision comes into
    /// effect after them (they are read again once that instant passes).
    pub prices: Option<(i64, Option<i64>)>,
}

/// One consistent read.
#[derive(Debug, Default)]
pub struct SnapshotRead {
    /// The versions read.
    pub meta: Meta,
    /// The instant the read is for: `max(now, meta.clock)`.
    pub at: i64,
    /// Active keys, when they changed.
    pub keys: Option<Vec<KeyEntry>>,
    /// Budgets, when they changed.
    pub budgets: Option<Vec<Budget>>,
    /// Prices in effect at `at`, when they changed.
    pub prices: Option<EffectivePrices>,
    /// Counters of the requested window starts: `(budget id, start) → spent`.
    pub counters: HashMap<(String, i64), Decimal>,
    /// Acknowledged sequence per reporter seen since `reporters_since`.
    pub reporters: BTreeMap<String, u64>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    sha256: String,
    org_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
}

impl Store {
    /// Reads what changed since `held`. `budgets` are the held budgets (used when they did
    /// not change); `starts` maps the budgets in force and `at` to the window start of each,
    /// whose counters are read. Reporters not seen since `reporters_since` are left out.
    pub async fn read_snapshot(
        &self,
        held: Held,
        budgets: Option<&[Budget]>,
        now: i64,
        reporters_since: i64,
        starts: impl FnOnce(&[Budget], i64) -> Vec<i64>,
    ) -> Result<SnapshotRead, StoreError> {
        with_pool!(self, read, |pool, pg| {
            let mut tx = pool.begin_with(begin_read(pg)).await?;
            let meta: Meta = sqlx::query_as(SELECT_META).fetch_one(&mut *tx).await?;
            let at = now.max(meta.clock);
            let mut out = SnapshotRead {
                meta,
                at,
                ..SnapshotRead::default()
            };
            if held.keys_version != Some(meta.keys_version) {
                let rows: Vec<KeyRow> = sqlx::query_as(
                    "SELECT id, sha256, org_id, project_id, user_id FROM virtual_keys \
                     WHERE revoked_at IS NULL ORDER BY sha256",
                )
                .fetch_all(&mut *tx)
                .await?;
                out.keys = Some(
                    rows.into_iter()
                        .map(|r| KeyEntry {
                            sha256: r.sha256,
                            principal: Principal {
                                key: Some(r.id),
                                user: r.user_id,
                                project: r.project_id,
                                org: r.org_id,
                            },
                        })
                        .collect(),
                );
            }
            if held.budgets_version != Some(meta.budgets_version) || budgets.is_none() {
                let rows: Vec<BudgetRow> =
                    sqlx::query_as(&format!("SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY id"))
                        .fetch_all(&mut *tx)
                        .await?;
                out.budgets = Some(budgets_from_rows(rows)?);
            }
            let prices_current = held
                .prices
                .is_some_and(|(v, next)| v == meta.prices_version && next.is_none_or(|n| at < n));
            if !prices_current {
                out.prices = Some(effective_prices!(tx, at)?);
            }
            let in_force: &[Budget] = match (&out.budgets, budgets) {
                (Some(b), _) => b,
                (None, Some(b)) => b,
                (None, None) => &[],
            };
            let window_starts = starts(in_force, at);
            out.counters = counters_at!(tx, &window_starts);
            let acks: Vec<(String, i64)> = sqlx::query_as(
                "SELECT reporter, acked_seq FROM reporters WHERE last_seen >= $1 AND acked_seq > 0",
            )
            .bind(reporters_since)
            .fetch_all(&mut *tx)
            .await?;
            out.reporters = acks
                .into_iter()
                .map(|(r, s)| (r, super::to_u64(s)))
                .collect();
            tx.commit().await?;
            Ok(out)
        })
    }
}
