//! Spend reports from the ledger: filter by one scope, a model and a time range; group by
//! local day, model, or any link of the chain. This is a management query over indexed ranges
//! (`usage_events (org_id, ts)`, and `(ts)`: a BRIN index on PostgreSQL), never a hot path;
//! rows are streamed and summed in Rust so money stays exact on both backends.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::budget::Scope;

use super::budgets::scope_column;
use super::{to_u64, with_pool, Money, Store, StoreError};
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

impl Store {
    /// Runs a spend report.
    pub async fn spend(&self, q: &SpendQuery) -> Result<SpendReport, StoreError> {
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
        let mut groups: BTreeMap<Vec<Option<String>>, Acc> = BTreeMap::new();
        let overflow = || StoreError::Corrupt("spend total overflows".into());
        with_pool!(self, read, |pool, pg| {
            let mut query = sqlx::query_as::<_, LedgerRow>(&sql).bind(q.from).bind(q.to);
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
