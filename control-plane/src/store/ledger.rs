//! Usage ingestion, the transactional half: in ONE transaction, append the batch to the
//! ledger (idempotent by event id), add each new event's cost to the spend counter of every
//! budget on its chain, add the new metered events to the spend rollup (`rollup.rs`), advance
//! each reporter's acknowledged sequence, and bump the snapshot version. Nothing here reads the
//! ledger back: spend lives in the counters and the rollup.
//!
//! SQLite sums money in Rust (read the counters, add, write back) under its single writer,
//! and keeps the values it wrote for the next batch while nothing else wrote (`counters.rs`);
//! PostgreSQL adds in SQL (`spent_usd + EXCLUDED.spent_usd`), so replicas ingesting at the same
//! time never lose an update, and takes the budget advisory lock shared (see `budgets.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::sqlite::SqliteConnection;
use sqlx::Arguments;

use rust_decimal::Decimal;
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::UsageEvent;
use tollgate_core::usage::Usage;

use super::budgets::{budgets_from_rows, enum_name, BudgetRow, BUDGET_COLUMNS};
use super::counters::{Counters, Stamp};
use super::rollup::{self, Rollup};
use super::{
    begin_write, from_json_rows, sqlite_json_rows, to_i64, with_pool, Db, Money, Store, StoreError,
    BUDGET_LOCK,
};
use crate::alerts::outbox::{Outbox, Refused};
use crate::ingest::{advance_ack, deltas, window_stats, BudgetCache, BudgetIndex, CostCheck};

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events stored now.
    pub accepted: u64,
    /// Events already stored (earlier, or earlier in this batch) with the same content, ignored.
    pub duplicate: u64,
    /// Events whose id was stored (earlier, or earlier in this batch) with different content:
    /// refused, never stored, logged and counted (see [`content_sha256`]).
    pub conflict: u64,
    /// Events stored now whose cost differs from the one the control plane computes
    /// ([`crate::ingest::CostCheck::Mismatch`]).
    pub cost_mismatch: u64,
    /// The snapshot version after the batch (`None` when nothing changed).
    pub version: Option<i64>,
}

/// A reporter whose gap has not closed after this many later events gets the gap skipped:
/// the missing events are not coming (the sender gave up on them), and waiting forever would
/// stop the filter from ever dropping its local copy of the later ones.
pub const MAX_PENDING_SEQS: usize = 10_000;

/// Rows per multi-row `INSERT` (SQLite allows 32,766 bound values per statement; 24 columns).
const LEDGER_CHUNK: usize = 1_000;
/// Rows per counter or `reporter_pending` statement (three bound values at most per row).
const COUNTER_CHUNK: usize = 5_000;

struct EventRow<'a> {
    e: &'a UsageEvent,
    seq: i64,
    price_version: i64,
    api: String,
    charge: String,
    uncharged: Option<String>,
    status: i32,
    input_tokens: i64,
    output_tokens: i64,
    detail: String,
    content: String,
    cost_check: Option<&'static str>,
    denied_by: Option<&'a str>,
}

/// The SHA-256 (hex) of an event's content: its JSON encoding, which names every field in a
/// fixed order and keeps each decimal's scale, so a resend of the same event always hashes the
/// same and any change of a count, a cost, a principal or a time does not.
pub fn content_sha256(e: &UsageEvent) -> String {
    crate::keys::sha256_hex(&serde_json::to_vec(e).unwrap_or_default())
}

impl<'a> EventRow<'a> {
    fn new(index: usize, e: &'a UsageEvent, check: Option<CostCheck>) -> Result<Self, StoreError> {
        let field = |f: &'static str| move || format!("events[{index}].{f}");
        Ok(EventRow {
            e,
            seq: to_i64(field("seq"), e.seq)?,
            price_version: to_i64(field("price_version"), e.price_version)?,
            api: enum_name(&e.api),
            charge: enum_name(&e.charge),
            uncharged: e.uncharged.as_ref().map(enum_name),
            status: i32::from(e.status),
            input_tokens: to_i64(field("usage"), e.usage.prompt_total())?,
            output_tokens: to_i64(field("usage.output"), e.usage.output)?,
            detail: detail_of(e),
            content: content_sha256(e),
            cost_check: check.map(CostCheck::as_str),
            denied_by: e.denied.as_ref().map(|d| d.budget.as_str()),
        })
    }
}

/// The ledger's `detail` column of an event: [`detail_json`], and for a denial record how many
/// requests it stands for and when the first was refused (`"denied"`).
fn detail_of(e: &UsageEvent) -> String {
    let mut s = detail_json(&e.usage, &e.cost);
    if let Some(d) = &e.denied {
        s.pop();
        s.push_str(&format!(
            ",\"denied\":{{\"requests\":{},\"first_ts\":{}}}}}",
            d.requests, d.first_ts
        ));
    }
    s
}

/// The ledger's `detail` column: the event's token counts and cost buckets as JSON, with the
/// buckets that are zero left out (`cost.total` always there). An event uses two or three of
/// the six buckets; written in full, the zeros were a third of every ledger row that each
/// batch writes and syncs. Built by hand (fixed keys, numbers and decimal strings need no
/// escaping): this runs for every event of every batch.
pub fn detail_json(usage: &Usage, cost: &CostBreakdown) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(128);
    s.push_str("{\"usage\":{");
    let mut sep = "";
    for (name, v) in usage.named_counts() {
        if v != 0 {
            let _ = write!(s, "{sep}\"{name}\":{v}");
            sep = ",";
        }
    }
    s.push('}');
    // The tier and search context only when they are not the defaults (they price the row).
    if !usage.service_tier.is_standard() {
        let _ = write!(s, ",\"service_tier\":\"{}\"", usage.service_tier.name());
    }
    if !usage.search_context.is_medium() {
        let _ = write!(s, ",\"search_context\":\"{}\"", usage.search_context.name());
    }
    s.push_str(",\"cost\":{");
    for (name, v) in cost.named_buckets() {
        if !v.is_zero() {
            let _ = write!(s, "\"{name}\":\"{v}\",");
        }
    }
    let _ = write!(s, "\"total\":\"{}\"}}}}", cost.total);
    s
}

/// What `GET /v1/usage/events` asks for.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    /// From (inclusive), Unix seconds of the event's `ts`.
    pub from: i64,
    /// To (exclusive).
    pub to: i64,
    /// Only this reporter's events.
    pub reporter: Option<String>,
    /// At most this many rows, newest first.
    pub limit: u32,
}

/// One ledger row as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LedgerEvent {
    /// Event id.
    pub id: String,
    /// Reporter (an enrolled Envoy).
    pub reporter: String,
    /// Its sequence number.
    pub seq: i64,
    /// When the response finished, Unix seconds.
    pub ts: i64,
    /// Organisation charged.
    pub org_id: String,
    /// Project charged.
    pub project_id: Option<String>,
    /// User charged.
    pub user_id: Option<String>,
    /// Key charged.
    pub key_id: Option<String>,
    /// The model priced (the one that served).
    pub model: String,
    /// The model the request named, when the provider served another.
    pub requested_model: Option<String>,
    /// API format.
    pub api: String,
    /// `actual`, `estimate` or `zero`.
    pub charge: String,
    /// Why there was no usage, if so.
    pub uncharged: Option<String>,
    /// Upstream status.
    pub status: i32,
    /// Price-book version the cost was computed with.
    pub price_version: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost charged, USD.
    #[serde(serialize_with = "money_string")]
    #[schema(value_type = String)]
    pub cost_usd: Money,
    /// The control plane's check of the cost: `match`, `mismatch`, `unchecked`, or absent
    /// (charged without usage, or stored before the check existed).
    pub cost_check: Option<String>,
    /// On a denial record (`uncharged` is `denied`): the budget that refused its requests;
    /// how many, and since when, are in the row's detail.
    pub denied_by: Option<String>,
    /// When the control plane stored it, Unix seconds.
    pub received_at: i64,
}

/// The columns of a [`LedgerEvent`].
const LEDGER_VIEW_COLUMNS: &str = "id, reporter, seq, ts, org_id, project_id, \
     user_id, key_id, model, requested_model, api, charge, uncharged, status, price_version, \
     input_tokens, output_tokens, cost_usd, cost_check, denied_by, received_at";

fn money_string<S: serde::Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&m.0.to_string())
}

impl Store {
    /// Ledger rows of `q`, newest first.
    pub async fn ledger_events(&self, q: &LedgerQuery) -> Result<Vec<LedgerEvent>, StoreError> {
        let mut sql =
            format!("SELECT {LEDGER_VIEW_COLUMNS} FROM usage_events WHERE ts >= $1 AND ts < $2");
        if q.reporter.is_some() {
            sql.push_str(" AND reporter = $4");
        }
        sql.push_str(" ORDER BY ts DESC, reporter, seq DESC LIMIT $3");
        with_pool!(self, read, |pool, pg| {
            let mut query = sqlx::query_as::<_, LedgerEvent>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(q.from)
                .bind(q.to)
                .bind(i64::from(q.limit));
            if let Some(r) = &q.reporter {
                query = query.bind(r.as_str());
            }
            Ok(query.fetch_all(pool).await?)
        })
    }

    /// Stores a validated batch (see the module doc). `budgets` caches the budget index
    /// between batches; it is reloaded inside the transaction when budgets changed.
    pub async fn ingest(
        &self,
        events: &[UsageEvent],
        now: i64,
        budgets: &BudgetCache,
    ) -> Result<IngestOutcome, StoreError> {
        self.ingest_checked(events, &[], now, budgets).await
    }

    /// [`Store::ingest`] with the outcome of each event's cost check (`checks[i]` for
    /// `events[i]`; missing entries are `None`), stored in the ledger row's `cost_check`.
    /// An event whose id was stored before, or earlier in the batch, with a different content
    /// hash is a conflict: not stored, logged (id and reporter) and counted.
    pub async fn ingest_checked(
        &self,
        events: &[UsageEvent],
        checks: &[Option<CostCheck>],
        now: i64,
        budgets: &BudgetCache,
    ) -> Result<IngestOutcome, StoreError> {
        // Each id's first row, by its position in `rows`.
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(events.len());
        let mut rows: Vec<EventRow<'_>> = Vec::with_capacity(events.len());
        let mut in_batch_duplicate = 0u64;
        let mut in_batch_conflict = 0u64;
        for (i, e) in events.iter().enumerate() {
            let row = EventRow::new(i, e, checks.get(i).copied().flatten())?;
            match seen.get(e.id.as_str()) {
                None => {
                    seen.insert(e.id.as_str(), rows.len());
                    rows.push(row);
                }
                Some(&first) if rows.get(first).is_some_and(|f| f.content == row.content) => {
                    in_batch_duplicate += 1
                }
                Some(_) => {
                    tracing::warn!(
                        id = %e.id,
                        reporter = %e.reporter,
                        "usage event refused: its id came twice in one batch with different content"
                    );
                    in_batch_conflict += 1;
                }
            }
        }
        if rows.is_empty() {
            return Ok(IngestOutcome {
                duplicate: in_batch_duplicate,
                conflict: in_batch_conflict,
                ..IngestOutcome::default()
            });
        }
        let cache = match &self.db {
            Db::Sqlite { counters, .. } => Some(counters.as_ref()),
            Db::Postgres(_) => None,
        };
        with_pool!(self, write, |pool, pg| {
            // PostgreSQL inserts the ledger rows plainly first: `ON CONFLICT` costs a third
            // of the insert, and a batch almost never repeats an id. When one does, the
            // unique violation aborts the transaction, which runs again skipping stored ids.
            let mut skip_stored = !pg;
            'attempt: loop {
                let mut tx = pool.begin_with(begin_write(pg)).await?;
                if pg {
                    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                        .bind(BUDGET_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }

                // The budgets this transaction charges: the cached index unless budgets changed.
                // SQLite: and the counters' values as the last batch wrote them, unless anything
                // else wrote since (see `counters.rs`).
                let (budgets_version, stamp, mut known) = match cache {
                    None => {
                        let budgets_version: i64 =
                            sqlx::query_scalar("SELECT budgets_version FROM meta WHERE id = 1")
                                .fetch_one(&mut *tx)
                                .await?;
                        (budgets_version, None, Counters::default())
                    }
                    Some(cache) => {
                        let (budgets_version, version, data_version, total_changes) =
                            sqlx::query_as::<_, (i64, i64, i64, i64)>(
                                "SELECT budgets_version, version, \
                                 (SELECT data_version FROM pragma_data_version), \
                                 total_changes() FROM meta WHERE id = 1",
                            )
                            .fetch_one(&mut *tx)
                            .await?;
                        let stamp = Stamp {
                            connection: cache.connection(),
                            data_version,
                            total_changes,
                            version,
                        };
                        (budgets_version, Some(stamp), cache.take(stamp))
                    }
                };
                let index = match budgets.get(budgets_version) {
                    Some(index) => index,
                    None => {
                        let rows: Vec<BudgetRow> =
                            sqlx::query_as(sql!("SELECT {BUDGET_COLUMNS} FROM budgets"))
                                .fetch_all(&mut *tx)
                                .await?;
                        let index = std::sync::Arc::new(BudgetIndex::new(
                            budgets_version,
                            &budgets_from_rows(rows)?,
                        ));
                        budgets.put(index.clone());
                        index
                    }
                };

                // 1. The ledger, and meanwhile (while the database works) the counter deltas of
                // the whole batch, which are the ones to add unless some ids were stored before.
                let (inserted, all_new) = tokio::join!(
                    Bulk::insert_events(&mut *tx, &rows, now, skip_stored),
                    async { deltas(&index, rows.iter().map(|r| r.e)) },
                );
                let inserted = match inserted {
                    Err(e) if !skip_stored && is_unique_violation(&e) => {
                        tx.rollback().await?;
                        skip_stored = true;
                        continue 'attempt;
                    }
                    other => other?,
                };
                let mut conflict = in_batch_conflict;
                let (new_rows, d): (Vec<&EventRow<'_>>, _) = match inserted {
                    None => (rows.iter().collect(), all_new),
                    Some(ids) => {
                        let ids: HashSet<String> = ids.into_iter().collect();
                        let (new, old): (Vec<&EventRow<'_>>, Vec<&EventRow<'_>>) =
                            rows.iter().partition(|r| ids.contains(&r.e.id));
                        // The ids stored before: the same content is a duplicate, another
                        // content a conflict (rows stored before 0006 have no hash: duplicate).
                        let old_ids: Vec<&str> = old.iter().map(|r| r.e.id.as_str()).collect();
                        let stored = if old_ids.is_empty() {
                            HashMap::new()
                        } else {
                            StoredHashes::stored_hashes(&mut *tx, &old_ids).await?
                        };
                        for r in &old {
                            let differs = stored
                                .get(r.e.id.as_str())
                                .and_then(Option::as_deref)
                                .is_some_and(|h| h != r.content);
                            if differs {
                                tracing::warn!(
                                    id = %r.e.id,
                                    reporter = %r.e.reporter,
                                    "usage event refused: its id is stored with different content"
                                );
                                conflict += 1;
                            }
                        }
                        let d = deltas(&index, new.iter().map(|r| r.e));
                        (new, d)
                    }
                };
                let cost_mismatch = new_rows
                    .iter()
                    .filter(|r| r.cost_check == Some(CostCheck::Mismatch.as_str()))
                    .count() as u64;
                let new_events: Vec<&UsageEvent> = new_rows.iter().map(|r| r.e).collect();

                // 2. Spend counters, in key order (lock order on PostgreSQL).
                let d = d.map_err(StoreError::Corrupt)?;
                let d: Vec<(&str, i64, Decimal)> =
                    d.iter().map(|((id, s), v)| (id.as_str(), *s, *v)).collect();
                Bulk::add_to_counters(&mut *tx, &d, &mut known).await?;
                // Refusals and soft warnings per budget window.
                let stats: Vec<_> = window_stats(&index, new_events.iter().copied())
                    .into_iter()
                    .collect();
                // The alerts this batch fired (thresholds crossed, a window's first refusal),
                // recorded in this transaction (`alerts/outbox.rs`).
                let refused: Vec<Refused<'_>> = stats
                    .iter()
                    .filter_map(|((id, start), st)| {
                        st.denied_span
                            .map(|(first, _)| (id.as_str(), *start, first))
                    })
                    .collect();
                let alerted = Outbox::record_crossings(&mut *tx, &d, &refused, now).await?;

                // 2b. The window stats (only batches that carry refusals or soft warnings
                // touch the table), and the keys' last use (see `key_use.rs`).
                for chunk in stats.chunks(COUNTER_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO budget_window_stats (budget_id, window_start, denied, \
                         soft_warned, first_denied_at, last_denied_at) ",
                    );
                    qb.push_values(chunk, |mut b, ((id, start), st)| {
                        b.push_bind(id.as_str())
                            .push_bind(*start)
                            .push_bind(st.denied)
                            .push_bind(st.soft_warned)
                            .push_bind(st.denied_span.map(|s| s.0))
                            .push_bind(st.denied_span.map(|s| s.1));
                    });
                    qb.push(STATS_UPSERT);
                    qb.build().execute(&mut *tx).await?;
                }
                let key_use = self.key_use.due(new_events.iter().copied());
                for chunk in key_use.chunks(COUNTER_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::new("WITH used (id, ts) AS (");
                    qb.push_values(chunk, |mut b, (id, ts)| {
                        b.push_bind(id.as_str()).push_bind(*ts);
                    });
                    qb.push(
                        ") UPDATE virtual_keys SET last_used_at = used.ts FROM used \
                         WHERE virtual_keys.id = used.id AND (virtual_keys.last_used_at IS NULL \
                         OR virtual_keys.last_used_at < used.ts)",
                    );
                    qb.build().execute(&mut *tx).await?;
                }

                // 3. Reporter acknowledgements.
                let mut by_reporter: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
                for e in &new_events {
                    by_reporter
                        .entry(e.reporter.as_str())
                        .or_default()
                        .push(e.seq);
                }
                for (reporter, seqs) in by_reporter {
                    // Creates the reporter's row or, on PostgreSQL, locks it.
                    let acked: i64 = sqlx::query_scalar(
                        "INSERT INTO reporters (reporter, acked_seq, last_seen) \
                         VALUES ($1, 0, $2) ON CONFLICT (reporter) \
                         DO UPDATE SET last_seen = excluded.last_seen RETURNING acked_seq",
                    )
                    .bind(reporter)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let pending: Vec<i64> =
                        sqlx::query_scalar("SELECT seq FROM reporter_pending WHERE reporter = $1")
                            .bind(reporter)
                            .fetch_all(&mut *tx)
                            .await?;
                    let old_acked = super::to_u64(acked);
                    let (mut new_acked, mut still) = advance_ack(
                        old_acked,
                        pending.iter().map(|&s| super::to_u64(s)),
                        seqs.iter().copied(),
                    );
                    if still.len() > MAX_PENDING_SEQS {
                        tracing::warn!(
                            reporter,
                            acked = new_acked,
                            pending = still.len(),
                            "skipping a usage sequence gap that never closed"
                        );
                        if let Some(&first) = still.first() {
                            let (a, s) = advance_ack(first.saturating_sub(1), still, []);
                            new_acked = a;
                            still = s;
                        }
                    }
                    // `last_seen` was set by the upsert above.
                    sqlx::query("UPDATE reporters SET acked_seq = $1 WHERE reporter = $2")
                        .bind(to_i64(|| "seq".into(), new_acked)?)
                        .bind(reporter)
                        .execute(&mut *tx)
                        .await?;
                    if !pending.is_empty() {
                        sqlx::query(
                            "DELETE FROM reporter_pending WHERE reporter = $1 AND seq <= $2",
                        )
                        .bind(reporter)
                        .bind(to_i64(|| "seq".into(), new_acked)?)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let fresh: Vec<i64> = seqs
                        .iter()
                        .filter(|s| still.contains(s))
                        .filter_map(|&s| i64::try_from(s).ok())
                        .collect();
                    for chunk in fresh.chunks(COUNTER_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::new(
                            "INSERT INTO reporter_pending (reporter, seq) ",
                        );
                        qb.push_values(chunk, |mut b, s| {
                            b.push_bind(reporter).push_bind(*s);
                        });
                        qb.push(" ON CONFLICT (reporter, seq) DO NOTHING");
                        qb.build().execute(&mut *tx).await?;
                    }
                }

                // 3b. The spend rollup, from the rows inserted now (`rollup.rs`). Late, like
                // the version: on PostgreSQL every replica's batches of the same quarter hour
                // update the same rows, whose locks are held until commit.
                let sums = rollup::batch_sums(new_events.iter().copied())?;
                Rollup::add_to_rollup(&mut *tx, &sums).await?;

                // 4. The version, last: on PostgreSQL its row lock is held only until commit.
                let version = if new_events.is_empty() {
                    None
                } else {
                    Some(
                        sqlx::query_scalar::<_, i64>(
                            "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
                        )
                        .fetch_one(&mut *tx)
                        .await?,
                    )
                };
                // SQLite: what the next batch must find for `known` to hold (this transaction's
                // own changes counted).
                let total_changes = match stamp {
                    Some(_) => Some(
                        sqlx::query_scalar::<_, i64>("SELECT total_changes()")
                            .fetch_one(&mut *tx)
                            .await?,
                    ),
                    None => None,
                };
                tx.commit().await?;
                if let (Some(cache), Some(before), Some(total_changes)) =
                    (cache, stamp, total_changes)
                {
                    let after = Stamp {
                        total_changes,
                        version: version.unwrap_or(before.version),
                        ..before
                    };
                    cache.put(after, known);
                }
                if version.is_some() {
                    self.committed_change();
                }
                self.key_use.written(key_use);
                if alerted {
                    self.wake_alerts();
                }
                let accepted = new_events.len() as u64;
                break Ok(IngestOutcome {
                    accepted,
                    duplicate: (events.len() as u64)
                        .saturating_sub(accepted)
                        .saturating_sub(conflict),
                    conflict,
                    cost_mismatch,
                    version,
                });
            }
        })
    }
}

/// Adds a batch's counts to a budget window's (both backends: `excluded` is the new row). The
/// first refusal only moves earlier and the last only later, whatever order batches commit in.
const STATS_UPSERT: &str = " ON CONFLICT (budget_id, window_start) DO UPDATE SET \
     denied = budget_window_stats.denied + excluded.denied, \
     soft_warned = budget_window_stats.soft_warned + excluded.soft_warned, \
     first_denied_at = CASE WHEN budget_window_stats.first_denied_at IS NULL \
       OR excluded.first_denied_at < budget_window_stats.first_denied_at \
       THEN excluded.first_denied_at ELSE budget_window_stats.first_denied_at END, \
     last_denied_at = CASE WHEN budget_window_stats.last_denied_at IS NULL \
       OR excluded.last_denied_at > budget_window_stats.last_denied_at \
       THEN excluded.last_denied_at ELSE budget_window_stats.last_denied_at END";

/// A unique violation: from the ledger insert, an id stored before (the primary key is the
/// table's only unique index).
fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation())
}

/// The bulk statements of an ingestion, per backend: SQLite takes multi-row `VALUES` (and sums
/// money in Rust); PostgreSQL takes one array per column through `UNNEST`, which parses and
/// binds 20 parameters instead of 20,000 and adds money in SQL.
trait Bulk {
    /// Inserts the events: `None` when every one was new, else the new ids. Stored ids are
    /// skipped when `skip_stored`, else they may fail the insert with a unique violation.
    async fn insert_events(
        &mut self,
        rows: &[EventRow<'_>],
        now: i64,
        skip_stored: bool,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// Adds `(budget id, window start, usd)` to the counters. SQLite takes the values of those
    /// in `known` from there instead of reading them, and leaves every value it wrote there;
    /// PostgreSQL, which adds in SQL, leaves `known` alone.
    async fn add_to_counters(
        &mut self,
        deltas: &[(&str, i64, Decimal)],
        known: &mut Counters,
    ) -> Result<(), StoreError>;
}

const LEDGER_COLUMNS: &str = "id, reporter, seq, ts, org_id, project_id, user_id, key_id, model, \
     api, charge, uncharged, status, stream, price_version, input_tokens, output_tokens, \
     cost_usd, detail, content_sha256, cost_check, requested_model, denied_by, received_at";

/// Reads stored content hashes by id, per backend.
trait StoredHashes {
    async fn stored_hashes(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, Option<String>>, StoreError>;
}

impl StoredHashes for SqliteConnection {
    async fn stored_hashes(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, Option<String>>, StoreError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, content_sha256 FROM usage_events \
             WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(json_text(ids)?)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

impl StoredHashes for PgConnection {
    async fn stored_hashes(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, Option<String>>, StoreError> {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, content_sha256 FROM usage_events WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&mut *self)
                .await?;
        Ok(rows.into_iter().collect())
    }
}

/// SQLite: the multi-row `INSERT` of `chunk` into the ledger, skipping stored ids.
fn sqlite_ledger_insert<'a>(
    chunk: &'a [EventRow<'a>],
    now: i64,
) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO usage_events ({LEDGER_COLUMNS}) "));
    qb.push_values(chunk, |mut b, r| {
        let p = &r.e.principal;
        b.push_bind(r.e.id.as_str())
            .push_bind(r.e.reporter.as_str())
            .push_bind(r.seq)
            .push_bind(r.e.ts)
            .push_bind(p.org.as_str())
            .push_bind(p.project.as_deref())
            .push_bind(p.user.as_deref())
            .push_bind(p.key.as_deref())
            .push_bind(r.e.model.as_str())
            .push_bind(r.api.as_str())
            .push_bind(r.charge.as_str())
            .push_bind(r.uncharged.as_deref())
            .push_bind(r.status)
            .push_bind(r.e.stream)
            .push_bind(r.price_version)
            .push_bind(r.input_tokens)
            .push_bind(r.output_tokens)
            .push_bind(Money(r.e.cost.total))
            .push_bind(r.detail.as_str())
            .push_bind(r.content.as_str())
            .push_bind(r.cost_check)
            .push_bind(r.e.requested_model.as_deref())
            .push_bind(r.denied_by)
            .push_bind(now);
    });
    qb.push(" ON CONFLICT (id) DO NOTHING");
    qb
}

/// `v` as the JSON text SQLite's `json_each` reads.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Bulk for SqliteConnection {
    /// Always skips stored ids: `ON CONFLICT DO NOTHING` costs SQLite nothing.
    async fn insert_events(
        &mut self,
        rows: &[EventRow<'_>],
        now: i64,
        _skip_stored: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        // Without `RETURNING`, whose rows sqlx hands over one at a time (a third of the
        // insert's time), and counted. When the count is short some ids were stored before;
        // the new rows are then the last ones: this connection is the only writer, and SQLite
        // gives each new row the highest rowid plus one.
        let mut stored = 0;
        for chunk in rows.chunks(LEDGER_CHUNK) {
            stored += sqlite_ledger_insert(chunk, now)
                .build()
                .execute(&mut *self)
                .await?
                .rows_affected();
        }
        if stored == rows.len() as u64 {
            return Ok(None);
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM usage_events \
             WHERE rowid > (SELECT max(rowid) FROM usage_events) - $1",
        )
        .bind(to_i64(|| "events".into(), stored)?)
        .fetch_all(&mut *self)
        .await?;
        if ids.len() as u64 != stored {
            return Err(StoreError::Corrupt(format!(
                "usage_events: {stored} rows stored, {} found at the end",
                ids.len()
            )));
        }
        Ok(Some(ids))
    }

    async fn add_to_counters(
        &mut self,
        deltas: &[(&str, i64, Decimal)],
        known: &mut Counters,
    ) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        // Read-modify-write in Rust (TEXT money), safe under the one writer connection and
        // the IMMEDIATE transaction. Only the counters not in `known` are read: the read walks
        // the primary key by budget id, from the earliest window touched.
        let unknown: Vec<&(&str, i64, Decimal)> = deltas
            .iter()
            .filter(|d| known.get(d.0, d.1).is_none())
            .collect();
        let mut old: HashMap<(String, i64), Decimal> = HashMap::new();
        if !unknown.is_empty() {
            let min_start = unknown.iter().map(|d| d.1).min().unwrap_or(i64::MIN);
            // The ~2,000 counters come back as one JSON text rather than as rows, which sqlx
            // would hand over one at a time.
            let mut ids: Vec<&str> = unknown.iter().map(|d| d.0).collect();
            ids.dedup();
            let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite_json_rows(
                "budget_id, window_start, spent_usd",
                "budget_spend WHERE budget_id IN (SELECT value FROM json_each($1)) \
                 AND window_start >= $2",
                None,
            )))
            .bind(json_text(&ids)?)
            .bind(min_start)
            .fetch_one(&mut *self)
            .await?;
            old = from_json_rows::<(String, i64, Money)>("budget_spend", &json)?
                .into_iter()
                .map(|(id, s, m)| ((id, s), m.0))
                .collect();
        }
        let mut totals = Vec::with_capacity(deltas.len());
        for &(id, start, v) in deltas {
            let prev = known
                .get(id, start)
                .or_else(|| old.get(&(id.to_string(), start)).copied())
                .unwrap_or(Decimal::ZERO);
            let sum = v
                .checked_add(prev)
                .ok_or_else(|| StoreError::Corrupt(format!("budget {id} spend overflows")))?;
            totals.push((id, start, sum));
        }
        // Written back with bound values: through `json_each` it measured slower.
        for chunk in totals.chunks(COUNTER_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO budget_spend (budget_id, window_start, spent_usd) ",
            );
            qb.push_values(chunk, |mut b, (id, s, v)| {
                b.push_bind(*id).push_bind(*s).push_bind(Money(*v));
            });
            qb.push(
                " ON CONFLICT (budget_id, window_start) DO UPDATE SET spent_usd = excluded.spent_usd",
            );
            qb.build().execute(&mut *self).await?;
        }
        for (id, start, v) in totals {
            known.set(id, start, v);
        }
        Ok(())
    }
}

impl Bulk for PgConnection {
    async fn insert_events(
        &mut self,
        rows: &[EventRow<'_>],
        now: i64,
        skip_stored: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        // One array per column.
        macro_rules! col {
            (|$r:ident| $e:expr) => {
                rows.iter().map(|$r| $e).collect::<Vec<_>>()
            };
        }
        let mut args = PgArguments::default();
        macro_rules! add {
            ($($v:expr),* $(,)?) => {
                $(args.add($v).map_err(|e| StoreError::Corrupt(e.to_string()))?;)*
            };
        }
        add!(
            col!(|r| r.e.id.as_str()),
            col!(|r| r.e.reporter.as_str()),
            col!(|r| r.seq),
            col!(|r| r.e.ts),
            col!(|r| r.e.principal.org.as_str()),
            col!(|r| r.e.principal.project.as_deref()),
            col!(|r| r.e.principal.user.as_deref()),
            col!(|r| r.e.principal.key.as_deref()),
            col!(|r| r.e.model.as_str()),
            col!(|r| r.api.as_str()),
            col!(|r| r.charge.as_str()),
            col!(|r| r.uncharged.as_deref()),
            col!(|r| r.status),
            col!(|r| r.e.stream),
            col!(|r| r.price_version),
            col!(|r| r.input_tokens),
            col!(|r| r.output_tokens),
            col!(|r| r.e.cost.total),
            col!(|r| r.detail.as_str()),
            col!(|r| r.content.as_str()),
            col!(|r| r.cost_check),
            col!(|r| r.e.requested_model.as_deref()),
            col!(|r| r.denied_by),
            now,
        );
        let insert = format!(
            "INSERT INTO usage_events ({LEDGER_COLUMNS}) \
             SELECT u.*, $24 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
               $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
               $11::text[], $12::text[], $13::int4[], $14::bool[], $15::int8[], $16::int8[], \
               $17::int8[], $18::numeric[], $19::text[], $20::text[], $21::text[], \
               $22::text[], $23::text[]) AS u"
        );
        if !skip_stored {
            sqlx::query_with(sqlx::AssertSqlSafe(insert.as_str()), args)
                .execute(&mut *self)
                .await?;
            return Ok(None);
        }
        // The new ids come back only when some were stored before (they would be a thousand
        // rows for the driver to hand over, for nothing).
        add!(i64::try_from(rows.len()).unwrap_or(i64::MAX));
        let (count, ids): (i64, Option<Vec<String>>) = sqlx::query_as_with(
            sql!(
                "WITH new AS ({insert} ON CONFLICT (id) DO NOTHING RETURNING id) \
                 SELECT count(*), CASE WHEN count(*) < $25 THEN array_agg(id) END FROM new"
            ),
            args,
        )
        .fetch_one(&mut *self)
        .await?;
        Ok(if count == rows.len() as i64 {
            None
        } else {
            Some(ids.unwrap_or_default())
        })
    }

    async fn add_to_counters(
        &mut self,
        deltas: &[(&str, i64, Decimal)],
        _known: &mut Counters,
    ) -> Result<(), StoreError> {
        // Sorted by (budget, window) by the caller: concurrent batches lock rows in one order.
        sqlx::query(
            "INSERT INTO budget_spend (budget_id, window_start, spent_usd) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::numeric[]) \
             ON CONFLICT (budget_id, window_start) DO UPDATE \
             SET spent_usd = budget_spend.spent_usd + EXCLUDED.spent_usd",
        )
        .bind(deltas.iter().map(|d| d.0).collect::<Vec<&str>>())
        .bind(deltas.iter().map(|d| d.1).collect::<Vec<i64>>())
        .bind(deltas.iter().map(|d| d.2).collect::<Vec<Decimal>>())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::Value;
    use tollgate_core::pricing::{SearchContext, ServiceTier};

    /// The detail holds every non-zero count and bucket exactly (decimal strings keep their
    /// scale), the total always, and nothing else.
    #[test]
    fn detail_keeps_what_is_not_zero() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let usage = Usage {
            input_uncached: 1200,
            cache_read: 0,
            cache_write_5m: 7,
            cache_write_1h: 0,
            output: 300,
            reasoning: 18_446_744_073_709_551_615,
            web_searches: 2,
            service_tier: ServiceTier::Priority,
            search_context: SearchContext::High,
            ..Usage::default()
        };
        let cost = CostBreakdown {
            input: d("0.000300"),
            cache_read: Decimal::ZERO,
            cache_write_5m: d("0.0000000000000000000000000001"),
            cache_write_1h: d("0.000"),
            output: d("1.5"),
            reasoning: Decimal::ZERO,
            web_search: d("0.06"),
            total: d("1.5603000000000000000000000001"),
            ..CostBreakdown::default()
        };
        let v: Value = serde_json::from_str(&detail_json(&usage, &cost)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "usage": {"input_uncached": 1200, "cache_write_5m": 7, "output": 300,
                          "reasoning": 18_446_744_073_709_551_615_u64, "web_searches": 2},
                "service_tier": "priority", "search_context": "high",
                "cost": {"input": "0.000300", "cache_write_5m": "0.0000000000000000000000000001",
                         "output": "1.5", "web_search": "0.06",
                         "total": "1.5603000000000000000000000001"}
            })
        );
        let zero: Value =
            serde_json::from_str(&detail_json(&Usage::default(), &CostBreakdown::default()))
                .unwrap();
        assert_eq!(
            zero,
            serde_json::json!({"usage": {}, "cost": {"total": "0"}})
        );
    }
}
