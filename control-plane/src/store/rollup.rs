//! The spend rollup (`spend_rollup`, migration 0011): per quarter hour (`bucket`, Unix seconds
//! aligned to [`BUCKET`]), organisation and model, the metered requests, their tokens and their
//! exact cost. Spend reports grouped by day, hour, model or organisation read it instead of the
//! ledger (`spend.rs`); reports by key, user or project, or filtered to one of them, keep reading
//! the ledger: those dimensions are left out on purpose, since (org, model) is what keeps 30 days
//! of a 10 M-row ledger at most 2,880 buckets × organisations × models.
//!
//! It is kept in the ingestion transaction (`ledger.rs`) from the rows that batch inserted
//! (duplicates and conflicts are not inserted, denial records are not spend), summed per group
//! in Rust first. PostgreSQL adds in SQL (`cost_usd + excluded.cost_usd`, like the spend
//! counters), so replicas ingesting at once lose nothing; SQLite, which has no exact decimal
//! addition, reads the touched groups in the same write transaction, adds in Rust and writes
//! the sums back, safe under its one writer.
//!
//! Nothing deletes or rewrites ledger rows (no retention, no pruning; an organisation with
//! ledger rows is still deleted from `orgs` only, its ledger rows and rollup rows both stay),
//! so the rollup only ever grows with the ledger. Rows stored before the migration are summed
//! by [`Store::rebuild_spend_rollup`] when [`Store::migrate`] finds `meta.spend_rollup_built`
//! false: one transaction that holds the writer (SQLite) or the budget lock exclusively
//! (PostgreSQL; ingestion takes it shared), empties the rollup and recomputes it from the whole
//! ledger, so it can neither count a row twice nor miss one that a batch commits meanwhile.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tollgate_core::event::UsageEvent;

use super::{
    begin_write, from_json_rows, sqlite_json_rows, to_i64, Db, Money, Store, StoreError,
    BUDGET_LOCK,
};

/// Seconds per rollup bucket: a quarter hour, the granularity of every IANA zone's offset
/// today, so each local hour and day is a whole number of buckets.
pub const BUCKET: i64 = 900;

/// The bucket `ts` falls in (floor, also for times before 1970).
pub fn bucket_of(ts: i64) -> i64 {
    ts - ts.rem_euclid(BUCKET)
}

/// SQL for [`bucket_of`] of the column `ts` (both backends; `%` truncates towards zero).
const SQL_BUCKET: &str = "ts - ((ts % 900) + 900) % 900";

/// Sums of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Decimal,
}

impl Sums {
    fn add(&mut self, o: &Sums) -> Result<(), StoreError> {
        let overflow = || StoreError::Corrupt("spend rollup overflows".into());
        self.requests = self.requests.checked_add(o.requests).ok_or_else(overflow)?;
        self.input_tokens = self
            .input_tokens
            .checked_add(o.input_tokens)
            .ok_or_else(overflow)?;
        self.output_tokens = self
            .output_tokens
            .checked_add(o.output_tokens)
            .ok_or_else(overflow)?;
        self.cost = self.cost.checked_add(o.cost).ok_or_else(overflow)?;
        Ok(())
    }
}

/// A group's key: (bucket, org, model).
pub(crate) type GroupKey<'a> = (i64, &'a str, &'a str);

/// What a batch adds to the rollup: the newly inserted `events`, denial records left out,
/// summed per group (in key order: the lock order on PostgreSQL).
pub(crate) fn batch_sums<'a>(
    events: impl IntoIterator<Item = &'a UsageEvent>,
) -> Result<BTreeMap<GroupKey<'a>, Sums>, StoreError> {
    let mut out: BTreeMap<GroupKey<'a>, Sums> = BTreeMap::new();
    for e in events {
        if e.denied.is_some() {
            continue;
        }
        let one = Sums {
            requests: 1,
            input_tokens: to_i64(|| "usage".into(), e.usage.prompt_total())?,
            output_tokens: to_i64(|| "usage.output".into(), e.usage.output)?,
            cost: e.cost.total,
        };
        out.entry((bucket_of(e.ts), e.principal.org.as_str(), e.model.as_str()))
            .or_default()
            .add(&one)?;
    }
    Ok(out)
}

/// Sums `costs`, the decimal strings SQLite's `group_concat` joined with `,`.
pub(crate) fn sum_concatenated(costs: &str) -> Result<Decimal, StoreError> {
    let mut sum = Decimal::ZERO;
    for c in costs.split(',').filter(|c| !c.is_empty()) {
        let v: Decimal = c
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("cost {c:?}: {e}")))?;
        sum = sum
            .checked_add(v)
            .ok_or_else(|| StoreError::Corrupt("spend rollup overflows".into()))?;
    }
    Ok(sum)
}

/// Rows per rollup statement (SQLite: seven bound values a row, 32,766 at most a statement).
const ROLLUP_CHUNK: usize = 4_000;

/// Adds a batch's sums to the rollup, per backend.
pub(crate) trait Rollup {
    async fn add_to_rollup(
        &mut self,
        sums: &BTreeMap<GroupKey<'_>, Sums>,
    ) -> Result<(), StoreError>;
}

impl Rollup for SqliteConnection {
    async fn add_to_rollup(
        &mut self,
        sums: &BTreeMap<GroupKey<'_>, Sums>,
    ) -> Result<(), StoreError> {
        if sums.is_empty() {
            return Ok(());
        }
        let keys: Vec<GroupKey<'_>> = sums.keys().copied().collect();
        let mut totals: Vec<(GroupKey<'_>, Sums)> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(ROLLUP_CHUNK) {
            // The groups' current sums, as one JSON text (see `sqlite_json_rows`).
            let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite_json_rows(
                "r.bucket, r.org_id, r.model, r.requests, r.input_tokens, r.output_tokens, \
                 r.cost_usd",
                "json_each($1) AS k JOIN spend_rollup AS r \
                 ON r.bucket = json_extract(k.value, '$[0]') \
                 AND r.org_id = json_extract(k.value, '$[1]') \
                 AND r.model = json_extract(k.value, '$[2]')",
                None,
            )))
            .bind(super::ledger::json_text(chunk)?)
            .fetch_one(&mut *self)
            .await?;
            let old: BTreeMap<(i64, String, String), Sums> =
                from_json_rows::<(i64, String, String, i64, i64, i64, Money)>(
                    "spend_rollup",
                    &json,
                )?
                .into_iter()
                .map(
                    |(b, org, model, requests, input_tokens, output_tokens, cost)| {
                        (
                            (b, org, model),
                            Sums {
                                requests,
                                input_tokens,
                                output_tokens,
                                cost: cost.0,
                            },
                        )
                    },
                )
                .collect();
            for k in chunk {
                let mut total = old
                    .get(&(k.0, k.1.to_string(), k.2.to_string()))
                    .copied()
                    .unwrap_or_default();
                if let Some(s) = sums.get(k) {
                    total.add(s)?;
                }
                totals.push((*k, total));
            }
        }
        for chunk in totals.chunks(ROLLUP_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO spend_rollup (bucket, org_id, model, requests, input_tokens, \
                 output_tokens, cost_usd) ",
            );
            qb.push_values(chunk, |mut b, ((bucket, org, model), s)| {
                b.push_bind(*bucket)
                    .push_bind(*org)
                    .push_bind(*model)
                    .push_bind(s.requests)
                    .push_bind(s.input_tokens)
                    .push_bind(s.output_tokens)
                    .push_bind(Money(s.cost));
            });
            qb.push(
                " ON CONFLICT (bucket, model, org_id) DO UPDATE SET \
                 requests = excluded.requests, input_tokens = excluded.input_tokens, \
                 output_tokens = excluded.output_tokens, cost_usd = excluded.cost_usd",
            );
            qb.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

impl Rollup for PgConnection {
    async fn add_to_rollup(
        &mut self,
        sums: &BTreeMap<GroupKey<'_>, Sums>,
    ) -> Result<(), StoreError> {
        if sums.is_empty() {
            return Ok(());
        }
        // In key order (the map's): concurrent batches lock rows in one order.
        sqlx::query(
            "INSERT INTO spend_rollup (bucket, org_id, model, requests, input_tokens, \
             output_tokens, cost_usd) \
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[], \
               $6::int8[], $7::numeric[]) \
             ON CONFLICT (bucket, model, org_id) DO UPDATE SET \
             requests = spend_rollup.requests + excluded.requests, \
             input_tokens = spend_rollup.input_tokens + excluded.input_tokens, \
             output_tokens = spend_rollup.output_tokens + excluded.output_tokens, \
             cost_usd = spend_rollup.cost_usd + excluded.cost_usd",
        )
        .bind(sums.keys().map(|k| k.0).collect::<Vec<i64>>())
        .bind(sums.keys().map(|k| k.1).collect::<Vec<&str>>())
        .bind(sums.keys().map(|k| k.2).collect::<Vec<&str>>())
        .bind(sums.values().map(|s| s.requests).collect::<Vec<i64>>())
        .bind(sums.values().map(|s| s.input_tokens).collect::<Vec<i64>>())
        .bind(sums.values().map(|s| s.output_tokens).collect::<Vec<i64>>())
        .bind(sums.values().map(|s| s.cost).collect::<Vec<Decimal>>())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

/// SQLite rebuilds the rollup one ledger time range of this many seconds at a time (a day:
/// its groups are at most 96 buckets × organisations × models).
const REBUILD_RANGE: i64 = 86_400;

impl Store {
    /// Whether the rollup holds every ledger row (`meta.spend_rollup_built`); spend reports
    /// read the ledger until it does.
    pub async fn spend_rollup_built(&self) -> Result<bool, StoreError> {
        Ok(super::with_pool!(self, read, |pool, pg| {
            sqlx::query_scalar::<_, bool>("SELECT spend_rollup_built FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Builds the rollup from the ledger when `meta.spend_rollup_built` says it was not
    /// (after migration 0011 on a database with a ledger); [`Store::migrate`] calls it.
    /// Returns whether it built.
    pub async fn build_spend_rollup_if_needed(&self) -> Result<bool, StoreError> {
        // Read first: the usual answer needs no write lock.
        if self.spend_rollup_built().await? {
            return Ok(false);
        }
        self.rebuild(false).await
    }

    /// Empties the rollup and sums the whole ledger into it again, in one transaction that
    /// ingestion waits for (see the module doc), and marks it built. For repairs (rows a
    /// replica of an older version ingested without keeping the rollup) and for benches that
    /// load a ledger in bulk; takes a while on a large ledger (about a minute per 10 M rows
    /// on SQLite), during which no batch is stored.
    pub async fn rebuild_spend_rollup(&self) -> Result<(), StoreError> {
        self.rebuild(true).await.map(|_| ())
    }

    async fn rebuild(&self, always: bool) -> Result<bool, StoreError> {
        const BUILT: &str = "SELECT spend_rollup_built FROM meta WHERE id = 1";
        const MARK: &str = "UPDATE meta SET spend_rollup_built = TRUE WHERE id = 1";
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin_with(begin_write(true)).await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(BUDGET_LOCK)
                    .execute(&mut *tx)
                    .await?;
                if !always
                    && sqlx::query_scalar::<_, bool>(BUILT)
                        .fetch_one(&mut *tx)
                        .await?
                {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM spend_rollup")
                    .execute(&mut *tx)
                    .await?;
                // NUMERIC sums are exact.
                sqlx::query(sql!(
                    "INSERT INTO spend_rollup (bucket, org_id, model, requests, input_tokens, \
                     output_tokens, cost_usd) \
                     SELECT {SQL_BUCKET}, org_id, model, count(*), sum(input_tokens), \
                     sum(output_tokens), sum(cost_usd) FROM usage_events \
                     WHERE denied_by IS NULL GROUP BY 1, 2, 3"
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query(MARK).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(begin_write(false)).await?;
                if !always
                    && sqlx::query_scalar::<_, bool>(BUILT)
                        .fetch_one(&mut *tx)
                        .await?
                {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM spend_rollup")
                    .execute(&mut *tx)
                    .await?;
                // Ranges aligned to buckets, so each group is in exactly one of them and is
                // inserted once, whole; each starts at the next stored time (over the time
                // index), so far-apart times cost no empty ranges in between.
                const NEXT: &str = "SELECT min(ts) FROM usage_events WHERE ts >= $1";
                let mut next: Option<i64> = sqlx::query_scalar(NEXT)
                    .bind(i64::MIN)
                    .fetch_one(&mut *tx)
                    .await?;
                while let Some(first) = next {
                    let from = bucket_of(first);
                    let to = from.saturating_add(REBUILD_RANGE);
                    // Inclusive, so a time of i64::MAX is not left out.
                    let last = if to == i64::MAX { to } else { to - 1 };
                    let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite_json_rows(
                        "b, org_id, model, n, i, o, c",
                        &format!(
                            "(SELECT {SQL_BUCKET} AS b, org_id, model, count(*) AS n, \
                             sum(input_tokens) AS i, sum(output_tokens) AS o, \
                             group_concat(cost_usd) AS c FROM usage_events \
                             WHERE ts >= $1 AND ts <= $2 AND denied_by IS NULL \
                             GROUP BY b, org_id, model)"
                        ),
                        None,
                    )))
                    .bind(from)
                    .bind(last)
                    .fetch_one(&mut *tx)
                    .await?;
                    let rows = from_json_rows::<(i64, String, String, i64, i64, i64, String)>(
                        "usage_events",
                        &json,
                    )?;
                    let mut sums = Vec::with_capacity(rows.len());
                    for (b, org, model, n, i, o, c) in rows {
                        sums.push((b, org, model, n, i, o, sum_concatenated(&c)?));
                    }
                    for chunk in sums.chunks(ROLLUP_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::new(
                            "INSERT INTO spend_rollup (bucket, org_id, model, requests, \
                             input_tokens, output_tokens, cost_usd) ",
                        );
                        qb.push_values(chunk, |mut b, (bucket, org, model, n, i, o, c)| {
                            b.push_bind(*bucket)
                                .push_bind(org.as_str())
                                .push_bind(model.as_str())
                                .push_bind(*n)
                                .push_bind(*i)
                                .push_bind(*o)
                                .push_bind(Money(*c));
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    next = if to == i64::MAX {
                        None
                    } else {
                        sqlx::query_scalar(NEXT)
                            .bind(to)
                            .fetch_one(&mut *tx)
                            .await?
                    };
                }
                sqlx::query(MARK).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_floor_to_quarter_hours() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(899), 0);
        assert_eq!(bucket_of(900), 900);
        assert_eq!(bucket_of(-1), -900);
        assert_eq!(bucket_of(-900), -900);
        assert_eq!(bucket_of(1_764_806_399), 1_764_805_500);
    }

    #[test]
    fn concatenated_costs_sum_exactly() {
        assert_eq!(
            sum_concatenated("0.1,0.2,0.0000000001,3").unwrap(),
            "3.3000000001".parse::<Decimal>().unwrap()
        );
        assert_eq!(sum_concatenated("").unwrap(), Decimal::ZERO);
        assert!(sum_concatenated("1,x").is_err());
    }
}
