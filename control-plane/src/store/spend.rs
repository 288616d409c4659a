//! Spend reports: filter by one scope, a model and a time range; group by local day or hour,
//! model, or any link of the chain. Money is summed in Rust (or by PostgreSQL's exact
//! `NUMERIC`), never as floats.
//!
//! Two paths give the same [`SpendReport`]:
//! * the spend rollup (`rollup.rs`: per quarter hour, organisation and model), when it can
//!   answer exactly: `from` and `to` on quarter hours, grouped by day, hour, model and
//!   organisation only, filtered by model and organisation only (an organisation scope is an
//!   organisation filter), and every quarter hour read inside one local hour of the zone (true
//!   of every zone today; a zone's historical local mean time is not). The console's spend
//!   page always asks that way (local midnights are quarter hours);
//! * the ledger otherwise ([`Store::spend_from_ledger`]): stacks and filters by key, user or
//!   project, and ranges that are not quarter hours, read the ledger rows of the range over
//!   its indexes (`usage_events (org_id, ts)`, and `(ts)`: a BRIN index on PostgreSQL) and
//!   sum them in Rust, about 6 µs a row on SQLite.

use std::collections::BTreeMap;

use std::collections::HashMap;

use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::budget::Scope;

use super::budgets::scope_column;
use super::rollup::{sum_concatenated, BUCKET};
use super::{from_json_rows, sqlite_json_rows, to_u64, with_pool, Db, Money, Store, StoreError};
use crate::timezone::Zone;

/// What to report on.
#[derive(Debug, Clone)]
pub struct SpendQuery {
    /// Only this link of the chain.
    pub scope: Option<(Scope, String)>,
    /// Only this model.
    pub model: Option<String>,
    /// From (inclusive), Unix seconds.
    pub from: i64,
    /// To (exclusive), Unix seconds.
    pub to: i64,
    /// Grouping, in column order.
    pub group_by: Vec<GroupBy>,
    /// Zone that days are counted in.
    pub zone: Zone,
    /// Only this organisation's rows (what a manager or viewer token may see).
    pub org: Option<String>,
}

/// A grouping column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Local calendar day (`YYYY-MM-DD`) in the query's zone.
    Day,
    /// Local hour (`YYYY-MM-DD HH:00`) in the query's zone (the console's hourly chart).
    Hour,
    /// Model.
    Model,
    /// Organisation id.
    Org,
    /// Project id.
    Project,
    /// User id.
    User,
    /// Key id.
    Key,
}

impl GroupBy {
    /// The column name in answers.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
            GroupBy::Model => "model",
            GroupBy::Org => "org",
            GroupBy::Project => "project",
            GroupBy::User => "user",
            GroupBy::Key => "key",
        }
    }

    /// The grouping of a chain link.
    pub fn of_scope(scope: Scope) -> GroupBy {
        match scope {
            Scope::Org => GroupBy::Org,
            Scope::Project => GroupBy::Project,
            Scope::User => GroupBy::User,
            Scope::Key => GroupBy::Key,
        }
    }
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpendRow {
    /// The group's values, by column name (absent link: `null`).
    pub group: BTreeMap<&'static str, Option<String>>,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens (cached included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost, USD.
    pub cost_usd: Decimal,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpendReport {
    /// Groups, sorted by their values.
    pub rows: Vec<SpendRow>,
    /// Requests in all groups.
    pub requests: u64,
    /// Cost of all groups, USD.
    pub total_usd: Decimal,
}

#[derive(sqlx::FromRow)]
struct LedgerRow {
    ts: i64,
    model: String,
    org_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
    key_id: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: Money,
}

#[derive(Default)]
struct Acc {
    requests: u64,
    input: u64,
    output: u64,
    cost: Decimal,
}

impl SpendQuery {
    /// Whether the spend rollup holds what this query asks, going by its shape (the zone is
    /// checked per bucket as the rollup is read).
    pub fn rollup_shaped(&self) -> bool {
        let org_scope = match &self.scope {
            None => true,
            Some((Scope::Org, _)) => true,
            Some(_) => false,
        };
        org_scope
            && self.from.rem_euclid(BUCKET) == 0
            && self.to.rem_euclid(BUCKET) == 0
            && self.group_by.iter().all(|g| {
                matches!(
                    g,
                    GroupBy::Day | GroupBy::Hour | GroupBy::Model | GroupBy::Org
                )
            })
    }
}

type Groups = BTreeMap<Vec<Option<String>>, Acc>;

/// The labels of one rollup bucket in a zone, or `None` when the bucket does not lie inside
/// one local hour (an offset that is not a whole number of quarter hours, or a change of
/// offset inside the bucket).
fn bucket_labels(zone: &Zone, bucket: i64) -> Option<(String, String)> {
    use chrono::{Offset, TimeZone};
    let offset = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).map(|dt| {
            zone.0
                .offset_from_utc_datetime(&dt.naive_utc())
                .fix()
                .local_minus_utc()
        })
    };
    let first = offset(bucket)?;
    if i64::from(first).rem_euclid(BUCKET) != 0
        || offset(bucket.saturating_add(BUCKET - 1))? != first
    {
        return None;
    }
    Some((local_day(zone, bucket), local_hour(zone, bucket)))
}

impl Store {
    /// Runs a spend report: from the spend rollup when it answers exactly, else from the
    /// ledger (see the module doc); the same report either way.
    pub async fn spend(&self, q: &SpendQuery) -> Result<SpendReport, StoreError> {
        if q.rollup_shaped() && self.spend_rollup_built().await? {
            if let Some(groups) = self.rollup_groups(q).await? {
                return finish(q, groups);
            }
        }
        self.spend_from_ledger(q).await
    }

    /// The groups of `q` from the rollup, or `None` when a bucket read is not inside one local
    /// hour of the query's zone. Sums what it can in SQL (counts, tokens; money on PostgreSQL)
    /// per bucket and grouped column; SQLite's costs come as their decimal strings joined, and
    /// are summed in Rust.
    async fn rollup_groups(&self, q: &SpendQuery) -> Result<Option<Groups>, StoreError> {
        let by_time = q
            .group_by
            .iter()
            .any(|g| matches!(g, GroupBy::Day | GroupBy::Hour));
        let by_model = q.group_by.contains(&GroupBy::Model);
        let by_org = q.group_by.contains(&GroupBy::Org);
        let col = |yes: bool, c: &'static str| if yes { c } else { "NULL" };
        let mut group = Vec::new();
        if by_time {
            group.push("bucket");
        }
        // In the rollup's key order, which SQLite then reads without sorting.
        if by_model {
            group.push("model");
        }
        if by_org {
            group.push("org_id");
        }
        let mut filter = String::from("bucket >= $1 AND bucket < $2");
        let mut n = 2;
        let mut binds: Vec<&str> = Vec::new();
        if let Some((_, org)) = &q.scope {
            n += 1;
            filter.push_str(&format!(" AND org_id = ${n}"));
            binds.push(org);
        }
        if let Some(m) = &q.model {
            n += 1;
            filter.push_str(&format!(" AND model = ${n}"));
            binds.push(m);
        }
        if let Some(org) = &q.org {
            n += 1;
            filter.push_str(&format!(" AND org_id = ${n}"));
            binds.push(org);
        }
        let group_sql = if group.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", group.join(", "))
        };
        let cols = format!(
            "{} AS b, {} AS o, {} AS m, CAST(sum(requests) AS BIGINT) AS n, \
             CAST(sum(input_tokens) AS BIGINT) AS i, CAST(sum(output_tokens) AS BIGINT) AS t",
            col(by_time, "bucket"),
            col(by_org, "org_id"),
            col(by_model, "model"),
        );
        // (bucket, org, model, requests, input, output, cost): as read, each column NULL when
        // it is not grouped by or nothing matched; the cost a backend's own type.
        type Raw<C> = (
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<C>,
        );
        type Row = (
            Option<i64>,
            Option<String>,
            Option<String>,
            i64,
            i64,
            i64,
            Decimal,
        );
        let rows: Vec<Row> = match &self.db {
            Db::Sqlite { read, .. } => {
                let sql = sqlite_json_rows(
                    "b, o, m, n, i, t, c",
                    &format!(
                        "(SELECT {cols}, group_concat(cost_usd) AS c FROM spend_rollup \
                         WHERE {filter}{group_sql})"
                    ),
                    None,
                );
                let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(q.from)
                    .bind(q.to);
                for b in &binds {
                    query = query.bind(*b);
                }
                let json = query.fetch_one(read).await?;
                let raw = from_json_rows::<Raw<String>>("spend_rollup", &json)?;
                let mut rows = Vec::with_capacity(raw.len());
                for (b, o, m, n, i, t, c) in raw {
                    // No group: one row of NULL sums when nothing matched.
                    let Some(n) = n else { continue };
                    let cost = sum_concatenated(c.as_deref().unwrap_or_default())?;
                    rows.push((b, o, m, n, i.unwrap_or(0), t.unwrap_or(0), cost));
                }
                rows
            }
            Db::Postgres(pool) => {
                let sql = format!(
                    "SELECT {cols}, sum(cost_usd) AS c FROM spend_rollup WHERE {filter}{group_sql}"
                );
                let mut query = sqlx::query_as::<_, Raw<Money>>(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(q.from)
                    .bind(q.to);
                for b in &binds {
                    query = query.bind(*b);
                }
                query
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .filter_map(|(b, o, m, n, i, t, c)| {
                        Some((
                            b,
                            o,
                            m,
                            n?,
                            i.unwrap_or(0),
                            t.unwrap_or(0),
                            c.map_or(Decimal::ZERO, |c| c.0),
                        ))
                    })
                    .collect()
            }
        };
        let overflow = || StoreError::Corrupt("spend total overflows".into());
        let mut labels: HashMap<i64, (String, String)> = HashMap::new();
        let mut groups = Groups::new();
        for (b, org, model, requests, input, output, cost) in rows {
            let label = match b {
                Some(b) => match labels.get(&b) {
                    Some(l) => Some(l),
                    None => match bucket_labels(&q.zone, b) {
                        Some(l) => Some(&*labels.entry(b).or_insert(l)),
                        None => return Ok(None),
                    },
                },
                None => None,
            };
            let key: Vec<Option<String>> = q
                .group_by
                .iter()
                .map(|g| match g {
                    GroupBy::Day => label.map(|l| l.0.clone()),
                    GroupBy::Hour => label.map(|l| l.1.clone()),
                    GroupBy::Model => model.clone(),
                    GroupBy::Org => org.clone(),
                    GroupBy::Project | GroupBy::User | GroupBy::Key => None,
                })
                .collect();
            let acc = groups.entry(key).or_default();
            acc.requests += to_u64(requests);
            acc.input = acc.input.saturating_add(to_u64(input));
            acc.output = acc.output.saturating_add(to_u64(output));
            acc.cost = acc.cost.checked_add(cost).ok_or_else(overflow)?;
        }
        Ok(Some(groups))
    }

    /// Runs a spend report from the ledger rows, whatever its shape: the reference that the
    /// rollup path ([`Store::spend`]) must equal, and the path of every report the rollup
    /// cannot answer.
    pub async fn spend_from_ledger(&self, q: &SpendQuery) -> Result<SpendReport, StoreError> {
        let mut sql = String::from(
            "SELECT ts, model, org_id, project_id, user_id, key_id, input_tokens, \
             output_tokens, cost_usd FROM usage_events WHERE ts >= $1 AND ts < $2 \
             AND denied_by IS NULL",
        );
        let mut n = 2;
        if let Some((scope, _)) = &q.scope {
            n += 1;
            sql.push_str(&format!(" AND {} = ${n}", scope_column(*scope)));
        }
        if q.model.is_some() {
            n += 1;
            sql.push_str(&format!(" AND model = ${n}"));
        }
        if q.org.is_some() {
            n += 1;
            sql.push_str(&format!(" AND org_id = ${n}"));
        }
        let mut groups = Groups::new();
        let overflow = || StoreError::Corrupt("spend total overflows".into());
        with_pool!(self, read, |pool, pg| {
            let mut query = sqlx::query_as::<_, LedgerRow>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(q.from)
                .bind(q.to);
            if let Some((_, id)) = &q.scope {
                query = query.bind(id.as_str());
            }
            if let Some(m) = &q.model {
                query = query.bind(m.as_str());
            }
            if let Some(org) = &q.org {
                query = query.bind(org.as_str());
            }
            let mut rows = query.fetch(pool);
            while let Some(r) = rows.try_next().await? {
                let key: Vec<Option<String>> = q
                    .group_by
                    .iter()
                    .map(|g| match g {
                        GroupBy::Day => Some(local_day(&q.zone, r.ts)),
                        GroupBy::Hour => Some(local_hour(&q.zone, r.ts)),
                        GroupBy::Model => Some(r.model.clone()),
                        GroupBy::Org => Some(r.org_id.clone()),
                        GroupBy::Project => r.project_id.clone(),
                        GroupBy::User => r.user_id.clone(),
                        GroupBy::Key => r.key_id.clone(),
                    })
                    .collect();
                let acc = groups.entry(key).or_default();
                acc.requests += 1;
                acc.input = acc.input.saturating_add(to_u64(r.input_tokens));
                acc.output = acc.output.saturating_add(to_u64(r.output_tokens));
                acc.cost = acc.cost.checked_add(r.cost_usd.0).ok_or_else(overflow)?;
            }
        });
        finish(q, groups)
    }
}

/// The report of `groups`, sorted by their values.
fn finish(q: &SpendQuery, groups: Groups) -> Result<SpendReport, StoreError> {
    let overflow = || StoreError::Corrupt("spend total overflows".into());
    let mut report = SpendReport {
        rows: Vec::with_capacity(groups.len()),
        requests: 0,
        total_usd: Decimal::ZERO,
    };
    for (key, acc) in groups {
        report.requests += acc.requests;
        report.total_usd = report
            .total_usd
            .checked_add(acc.cost)
            .ok_or_else(overflow)?;
        report.rows.push(SpendRow {
            group: q.group_by.iter().map(|g| g.name()).zip(key).collect(),
            requests: acc.requests,
            input_tokens: acc.input,
            output_tokens: acc.output,
            cost_usd: acc.cost.normalize(),
        });
    }
    report.total_usd = report.total_usd.normalize();
    Ok(report)
}

/// `YYYY-MM-DD` of `ts` in `zone`.
pub fn local_day(zone: &Zone, ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|dt| dt.with_timezone(&zone.0).date_naive().to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:00` of `ts` in `zone` (sorts as text in time order, like [`local_day`]).
pub fn local_hour(zone: &Zone, ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|dt| {
            dt.with_timezone(&zone.0)
                .format("%Y-%m-%d %H:00")
                .to_string()
        })
        .unwrap_or_default()
}
