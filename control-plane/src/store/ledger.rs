//! Usage ingestion, the transactional half: in ONE transaction, append the batch to the
//! ledger (idempotent by event id), add each new event's cost to the spend counter of every
//! budget on its chain, advance each reporter's acknowledged sequence, and bump the snapshot
//! version. Nothing here reads the ledger back: spend lives in the counters.
//!
//! SQLite sums money in Rust (read the counters, add, write back) under its single writer;
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
use super::{
    begin_write, from_json_rows, sqlite_json_rows, to_i64, with_pool, Money, Store, StoreError,
    BUDGET_LOCK,
};
use crate::ingest::{advance_ack, deltas, BudgetCache, BudgetIndex};

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events stored now.
    pub accepted: u64,
    /// Events already stored (earlier, or earlier in this batch), ignored.
    pub duplicate: u64,
    /// The snapshot version after the batch (`None` when nothing changed).
    pub version: Option<i64>,
}

/// A reporter whose gap has not closed after this many later events gets the gap skipped:
/// the missing events are not coming (the sender gave up on them), and waiting forever would
/// stop the filter from ever dropping its local copy of the later ones.
pub const MAX_PENDING_SEQS: usize = 10_000;

/// Rows per multi-row `INSERT` (SQLite allows 32,766 bound values per statement; 20 columns).
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
}

impl<'a> EventRow<'a> {
    fn new(index: usize, e: &'a UsageEvent) -> Result<Self, StoreError> {
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
            detail: detail_json(&e.usage, &e.cost),
        })
    }
}

/// The ledger's `detail` column: the event's token counts and cost buckets as JSON, with the
/// buckets that are zero left out (`cost.total` always there). An event uses two or three of
/// the six buckets; written in full, the zeros were a third of every ledger row that each
/// batch writes and syncs. Built by hand (fixed keys, numbers and decimal strings need no
/// escaping): this runs for every event of every batch.
fn detail_json(usage: &Usage, cost: &CostBreakdown) -> String {
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
    s.push_str("},\"cost\":{");
    for (name, v) in cost.named_buckets() {
        if !v.is_zero() {
            let _ = write!(s, "\"{name}\":\"{v}\",");
        }
    }
    let _ = write!(s, "\"total\":\"{}\"}}}}", cost.total);
    s
}

impl Store {
    /// Stores a validated batch (see the module doc). `budgets` caches the budget index
    /// between batches; it is reloaded inside the transaction when budgets changed.
    pub async fn ingest(
        &self,
        events: &[UsageEvent],
        now: i64,
        budgets: &BudgetCache,
    ) -> Result<IngestOutcome, StoreError> {
        let mut seen = HashSet::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert(e.id.as_str()) {
                rows.push(EventRow::new(i, e)?);
            }
        }
        if rows.is_empty() {
            return Ok(IngestOutcome::default());
        }
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
                let budgets_version: i64 =
                    sqlx::query_scalar("SELECT budgets_version FROM meta WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                let index = match budgets.get(budgets_version) {
                    Some(index) => index,
                    None => {
                        let rows: Vec<BudgetRow> =
                            sqlx::query_as(&format!("SELECT {BUDGET_COLUMNS} FROM budgets"))
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
                let (new_events, d): (Vec<&UsageEvent>, _) = match inserted {
                    None => (rows.iter().map(|r| r.e).collect(), all_new),
                    Some(ids) => {
                        let ids: HashSet<String> = ids.into_iter().collect();
                        let new: Vec<&UsageEvent> = rows
                            .iter()
                            .map(|r| r.e)
                            .filter(|e| ids.contains(&e.id))
                            .collect();
                        let d = deltas(&index, new.iter().copied());
                        (new, d)
                    }
                };

                // 2. Spend counters, in key order (lock order on PostgreSQL).
                let d = d.map_err(StoreError::Corrupt)?;
                let d: Vec<(&str, i64, Decimal)> =
                    d.iter().map(|((id, s), v)| (id.as_str(), *s, *v)).collect();
                Bulk::add_to_counters(&mut *tx, &d).await?;

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
                tx.commit().await?;
                let accepted = new_events.len() as u64;
                break Ok(IngestOutcome {
                    accepted,
                    duplicate: events.len() as u64 - accepted,
                    version,
                });
            }
        })
    }
}

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

    /// Adds `(budget id, window start, usd)` to the counters.
    async fn add_to_counters(&mut self, deltas: &[(&str, i64, Decimal)]) -> Result<(), StoreError>;
}

const LEDGER_COLUMNS: &str = "id, reporter, seq, ts, org_id, project_id, user_id, key_id, model, \
     api, charge, uncharged, status, stream, price_version, input_tokens, output_tokens, \
     cost_usd, detail, received_at";

/// SQLite: the multi-row `INSERT` of `chunk` into the ledger, skipping stored ids.
fn sqlite_ledger_insert<'a>(
    chunk: &'a [EventRow<'a>],
    now: i64,
) -> sqlx::QueryBuilder<'a, sqlx::Sqlite> {
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
            .push_bind(now);
    });
    qb.push(" ON CONFLICT (id) DO NOTHING");
    qb
}

/// `v` as the JSON text SQLite's `json_each` reads.
fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
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

    async fn add_to_counters(&mut self, deltas: &[(&str, i64, Decimal)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        // Read-modify-write in Rust (TEXT money), safe under the one writer connection and
        // the IMMEDIATE transaction. The read walks the primary key by budget id, from the
        // earliest window touched.
        let min_start = deltas.iter().map(|d| d.1).min().unwrap_or(i64::MIN);
        // The ~2,000 counters come back as one JSON text rather than as rows, which sqlx would
        // hand over one at a time.
        let mut ids: Vec<&str> = deltas.iter().map(|d| d.0).collect();
        ids.dedup();
        let old: String = sqlx::query_scalar(&sqlite_json_rows(
            "budget_id, window_start, spent_usd",
            "budget_spend WHERE budget_id IN (SELECT value FROM json_each($1)) \
             AND window_start >= $2",
            None,
        ))
        .bind(json_text(&ids)?)
        .bind(min_start)
        .fetch_one(&mut *self)
        .await?;
        let old: HashMap<(String, i64), Decimal> =
            from_json_rows::<(String, i64, Money)>("budget_spend", &old)?
                .into_iter()
                .map(|(id, s, m)| ((id, s), m.0))
                .collect();
        let mut totals = Vec::with_capacity(deltas.len());
        for &(id, start, v) in deltas {
            let prev = old
                .get(&(id.to_string(), start))
                .copied()
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
            now,
        );
        let insert = format!(
            "INSERT INTO usage_events ({LEDGER_COLUMNS}) \
             SELECT u.*, $20 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
               $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
               $11::text[], $12::text[], $13::int4[], $14::bool[], $15::int8[], $16::int8[], \
               $17::int8[], $18::numeric[], $19::text[]) AS u"
        );
        if !skip_stored {
            sqlx::query_with(&insert, args).execute(&mut *self).await?;
            return Ok(None);
        }
        // The new ids come back only when some were stored before (they would be a thousand
        // rows for the driver to hand over, for nothing).
        add!(i64::try_from(rows.len()).unwrap_or(i64::MAX));
        let (count, ids): (i64, Option<Vec<String>>) = sqlx::query_as_with(
            &format!(
                "WITH new AS ({insert} ON CONFLICT (id) DO NOTHING RETURNING id) \
                 SELECT count(*), CASE WHEN count(*) < $21 THEN array_agg(id) END FROM new"
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

    async fn add_to_counters(&mut self, deltas: &[(&str, i64, Decimal)]) -> Result<(), StoreError> {
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
        };
        let cost = CostBreakdown {
            input: d("0.000300"),
            cache_read: Decimal::ZERO,
            cache_write_5m: d("0.0000000000000000000000000001"),
            cache_write_1h: d("0.000"),
            output: d("1.5"),
            reasoning: Decimal::ZERO,
            total: d("1.5003000000000000000000000001"),
        };
        let v: Value = serde_json::from_str(&detail_json(&usage, &cost)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "usage": {"input_uncached": 1200, "cache_write_5m": 7, "output": 300,
                          "reasoning": 18_446_744_073_709_551_615_u64},
                "cost": {"input": "0.000300", "cache_write_5m": "0.0000000000000000000000000001",
                         "output": "1.5", "total": "1.5003000000000000000000000001"}
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
