//! Budgets and their per-window spend counters.
//!
//! A budget is `(scope, scope_id, period)`-unique. Its counters (`budget_spend`) are keyed by
//! window start in the budget's timezone and are added to by ingestion in the ledger's
//! transaction. Creating a budget, or changing its period or timezone, back-fills the current
//! window's counter from the ledger (a management-time scan on an indexed range, never on a
//! hot path), so a budget created mid-month starts from what was already spent. On PostgreSQL
//! that back-fill holds an advisory lock that ingestion takes shared, so no batch committed in
//! between is missed or counted twice.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::budget::{window, Mode, Period, Scope, Window};

use super::audit::{audit, Change, NONE, ORG_OF_SCOPE};
use super::tenants::not_found;
use super::{begin_write, with_pool, Db, Money, Store, StoreError, BUDGET_LOCK};
use crate::keys::generate_id;
use crate::timezone::Zone;

/// Bumps the snapshot and budget versions inside `$tx`.
macro_rules! bump_budgets {
    ($tx:expr) => {
        sqlx::query(
            "UPDATE meta SET version = version + 1, budgets_version = budgets_version + 1 \
             WHERE id = 1",
        )
        .execute(&mut *$tx)
        .await?;
    };
}

/// The organisation of budget `$b`'s principal (none for an unregistered one), read on `$tx`.
macro_rules! budget_org {
    ($tx:expr, $b:expr) => {
        sqlx::query_scalar::<_, Option<String>>(ORG_OF_SCOPE)
            .bind($b.scope.as_str())
            .bind(&$b.scope_id)
            .fetch_one(&mut *$tx)
            .await?
    };
}

/// Every counter whose window starts at one of `$starts`, as `(budget_id, window_start) →
/// spent`, read on connection or transaction `$conn`. The distinct starts are few (one per
/// period and timezone in use), so the `IN` list stays short and hits the window index.
macro_rules! counters_at {
    ($conn:expr, $pg:expr, $starts:expr) => {{
        let mut distinct: Vec<i64> = $starts.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut out: ::std::collections::HashMap<(String, i64), Decimal> =
            ::std::collections::HashMap::new();
        for chunk in distinct.chunks(500) {
            let mut qb = sqlx::QueryBuilder::new(if $pg {
                "SELECT budget_id, window_start, spent_usd FROM budget_spend WHERE window_start IN ("
                    .to_string()
            } else {
                $crate::store::sqlite_json_rows(
                    "budget_id, window_start, spent_usd",
                    "budget_spend WHERE window_start IN (",
                    None,
                )
            });
            let mut sep = qb.separated(", ");
            for s in chunk {
                sep.push_bind(*s);
            }
            qb.push(")");
            let rows: Vec<(String, i64, Money)> = if $pg {
                qb.build_query_as().fetch_all(&mut *$conn).await?
            } else {
                let json: String = qb.build_query_scalar().fetch_one(&mut *$conn).await?;
                $crate::store::from_json_rows("budget_spend", &json)?
            };
            out.extend(rows.into_iter().map(|(id, s, m)| ((id, s), m.0)));
        }
        out
    }};
}
pub(crate) use counters_at;

/// A budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Budget {
    /// Id (`bud_…`).
    pub id: String,
    /// Which link of the chain it applies to.
    pub scope: Scope,
    /// The id of that org / project / user / key.
    pub scope_id: String,
    /// How often it resets.
    pub period: Period,
    /// IANA timezone its calendar periods follow.
    pub timezone: String,
    /// Hard limit per window, USD.
    pub limit_usd: Decimal,
    /// Soft limit per window (warns), USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_limit_usd: Option<Decimal>,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl Budget {
    /// The budget's zone (validated when written).
    pub fn zone(&self) -> Zone {
        Zone::parse(&self.timezone).unwrap_or(Zone::UTC)
    }

    /// The window containing `now`.
    pub fn window_at(&self, now: i64) -> Window {
        window(self.period, &self.zone(), now)
    }
}

/// A budget to create (validated by the caller: limits non-negative, soft below hard).
#[derive(Debug, Clone)]
pub struct NewBudget {
    /// Scope.
    pub scope: Scope,
    /// Scope id.
    pub scope_id: String,
    /// Period.
    pub period: Period,
    /// Timezone.
    pub timezone: Zone,
    /// Hard limit, USD.
    pub limit_usd: Decimal,
    /// Soft limit, USD.
    pub soft_limit_usd: Option<Decimal>,
    /// Mode.
    pub mode: Mode,
}

/// A change to a budget; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct BudgetPatch {
    /// New period.
    pub period: Option<Period>,
    /// New timezone.
    pub timezone: Option<Zone>,
    /// New hard limit.
    pub limit_usd: Option<Decimal>,
    /// New soft limit (`Some(None)` removes it).
    pub soft_limit_usd: Option<Option<Decimal>>,
    /// New mode.
    pub mode: Option<Mode>,
}

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct BudgetRow {
    id: String,
    scope: String,
    scope_id: String,
    period: String,
    timezone: String,
    limit_usd: Money,
    soft_limit_usd: Option<Money>,
    mode: String,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const BUDGET_COLUMNS: &str = "id, scope, scope_id, period, timezone, limit_usd, \
     soft_limit_usd, mode, created_at, updated_at";

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    use serde::de::IntoDeserializer;
    T::deserialize(s.into_deserializer())
        .map_err(|_: serde::de::value::Error| StoreError::Corrupt(format!("{what} {s:?}")))
}

/// The snake_case serde name of a unit enum value (`Scope::Org` → `org`).
pub(crate) fn enum_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl TryFrom<BudgetRow> for Budget {
    type Error = StoreError;

    fn try_from(r: BudgetRow) -> Result<Budget, StoreError> {
        Ok(Budget {
            scope: parse_enum("scope", &r.scope)?,
            period: parse_enum("period", &r.period)?,
            mode: parse_enum("mode", &r.mode)?,
            id: r.id,
            scope_id: r.scope_id,
            timezone: r.timezone,
            limit_usd: r.limit_usd.0,
            soft_limit_usd: r.soft_limit_usd.map(|m| m.0),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(crate) fn budgets_from_rows(rows: Vec<BudgetRow>) -> Result<Vec<Budget>, StoreError> {
    rows.into_iter().map(Budget::try_from).collect()
}

/// The ledger column holding the id of a scope.
pub(crate) fn scope_column(scope: Scope) -> &'static str {
    match scope {
        Scope::Org => "org_id",
        Scope::Project => "project_id",
        Scope::User => "user_id",
        Scope::Key => "key_id",
    }
}

/// Bind-friendly window bounds: a total window is `[i64::MIN, i64::MAX)`.
pub(crate) fn bounds(w: &Window) -> (i64, i64) {
    (w.start, w.end.unwrap_or(i64::MAX))
}

/// Back-fills the counter of `b`'s window containing `now` from the ledger, inside `$tx`.
/// PostgreSQL sums in SQL; SQLite returns the rows and Rust sums them (TEXT money).
macro_rules! backfill {
    ($tx:expr, $pg:expr, $b:expr, $now:expr) => {{
        let b: &Budget = $b;
        let w = b.window_at($now);
        let (from, to) = bounds(&w);
        let col = scope_column(b.scope);
        let sql = if $pg {
            format!(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM usage_events \
                 WHERE {col} = $1 AND ts >= $2 AND ts < $3"
            )
        } else {
            format!("SELECT cost_usd FROM usage_events WHERE {col} = $1 AND ts >= $2 AND ts < $3")
        };
        let rows: Vec<Money> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&b.scope_id)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *$tx)
            .await?;
        let spent = rows
            .iter()
            .try_fold(Decimal::ZERO, |acc, m| acc.checked_add(m.0))
            .ok_or_else(|| StoreError::Corrupt(format!("budget {} spend overflows", b.id)))?;
        sqlx::query("DELETE FROM budget_spend WHERE budget_id = $1")
            .bind(&b.id)
            .execute(&mut *$tx)
            .await?;
        if !spent.is_zero() {
            sqlx::query(
                "INSERT INTO budget_spend (budget_id, window_start, spent_usd) VALUES ($1, $2, $3)",
            )
            .bind(&b.id)
            .bind(w.start)
            .bind(Money(spent))
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use backfill;

/// A budget write's error: the one-budget-per-scope-and-period constraint as a conflict on
/// `period` (see [`StoreError::from_constraint`]), anything else as it is.
fn period_taken(e: sqlx::Error, b: &Budget) -> StoreError {
    StoreError::from_constraint(
        e,
        "period",
        format!(
            "{} {} already has a {} budget",
            b.scope, b.scope_id, b.period
        ),
    )
}

impl Store {
    /// Creates a budget and back-fills its current window from the ledger.
    pub async fn create_budget(&self, new: &NewBudget, now: i64) -> Result<Budget, StoreError> {
        let id = generate_id("bud").map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let b = Budget {
            id,
            scope: new.scope,
            scope_id: new.scope_id.clone(),
            period: new.period,
            timezone: new.timezone.name().to_string(),
            limit_usd: new.limit_usd,
            soft_limit_usd: new.soft_limit_usd,
            mode: new.mode,
            created_at: now,
            updated_at: now,
        };
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            if pg {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(BUDGET_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(sql!(
                "INSERT INTO budgets ({BUDGET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&b.id)
            .bind(b.scope.as_str())
            .bind(&b.scope_id)
            .bind(b.period.as_str())
            .bind(&b.timezone)
            .bind(Money(b.limit_usd))
            .bind(b.soft_limit_usd.map(Money))
            .bind(b.mode.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| period_taken(e, &b))?;
            backfill!(tx, pg, &b, now);
            bump_budgets!(tx);
            let org = budget_org!(tx, &b);
            audit!(
                tx,
                Change::new("budget", &b.id, org.as_deref(), NONE, Some(&b))
            );
            tx.commit().await?;
        });
        self.committed_change();
        Ok(b)
    }

    /// One budget.
    pub async fn get_budget(&self, id: &str) -> Result<Budget, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, BudgetRow>(sql!(
                "SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| not_found("budget", id))?.try_into()
    }

    /// Budgets, optionally of one scope and scope id, by scope, scope id, period.
    pub async fn list_budgets(
        &self,
        scope: Option<Scope>,
        scope_id: Option<&str>,
    ) -> Result<Vec<Budget>, StoreError> {
        self.list_budgets_in(scope, scope_id, None).await
    }

    /// [`Store::list_budgets`], optionally only of principals registered in organisation
    /// `org` (the org itself, its projects, users and keys).
    pub async fn list_budgets_in(
        &self,
        scope: Option<Scope>,
        scope_id: Option<&str>,
        org: Option<&str>,
    ) -> Result<Vec<Budget>, StoreError> {
        const FROM: &str = "budgets WHERE ($1 IS NULL OR scope = $1) \
             AND ($2 IS NULL OR scope_id = $2) AND ($3 IS NULL \
             OR (scope = 'org' AND scope_id = $3) \
             OR (scope = 'project' AND scope_id IN (SELECT id FROM projects WHERE org_id = $3)) \
             OR (scope = 'user' AND scope_id IN (SELECT id FROM users WHERE org_id = $3)) \
             OR (scope = 'key' AND scope_id IN (SELECT id FROM virtual_keys WHERE org_id = $3)))";
        const ORDER: &str = "scope, scope_id, period";
        let rows: Vec<BudgetRow> = match &self.db {
            // One JSON text rather than rows one at a time (`sqlite_json_rows`): the console's
            // overview lists every budget (10,000: 46 ms as rows).
            Db::Sqlite { read, .. } => {
                let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(
                    super::sqlite_json_rows(BUDGET_COLUMNS, FROM, Some(ORDER)),
                ))
                .bind(scope.map(Scope::as_str))
                .bind(scope_id)
                .bind(org)
                .fetch_one(read)
                .await?;
                super::from_json_rows("budgets", &json)?
            }
            Db::Postgres(pool) => {
                sqlx::query_as::<_, BudgetRow>(sql!(
                    "SELECT {BUDGET_COLUMNS} FROM {FROM} ORDER BY {ORDER}"
                ))
                .bind(scope.map(Scope::as_str))
                .bind(scope_id)
                .bind(org)
                .fetch_all(pool)
                .await?
            }
        };
        budgets_from_rows(rows)
    }

    /// Changes a budget. A new period or timezone re-keys its counters: they are rebuilt for
    /// the current window from the ledger.
    pub async fn update_budget(
        &self,
        id: &str,
        patch: &BudgetPatch,
        now: i64,
    ) -> Result<Budget, StoreError> {
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            if pg {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(BUDGET_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let row = sqlx::query_as::<_, BudgetRow>(sql!(
                "SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("budget", id))?;
            let before = Budget::try_from(row)?;
            let mut b = before.clone();
            let rekey = patch.period.is_some_and(|p| p != b.period)
                || patch.timezone.is_some_and(|z| z.name() != b.timezone);
            if let Some(p) = patch.period {
                b.period = p;
            }
            if let Some(z) = patch.timezone {
                b.timezone = z.name().to_string();
            }
            if let Some(l) = patch.limit_usd {
                b.limit_usd = l;
            }
            if let Some(s) = patch.soft_limit_usd {
                b.soft_limit_usd = s;
            }
            if let Some(m) = patch.mode {
                b.mode = m;
            }
            if b.soft_limit_usd.is_some_and(|s| s >= b.limit_usd) {
                return Err(StoreError::Invalid {
                    field: "soft_limit_usd".into(),
                    detail: format!("must be below limit_usd ({})", b.limit_usd),
                });
            }
            b.updated_at = now;
            sqlx::query(
                "UPDATE budgets SET period = $1, timezone = $2, limit_usd = $3, \
                 soft_limit_usd = $4, mode = $5, updated_at = $6 WHERE id = $7",
            )
            .bind(b.period.as_str())
            .bind(&b.timezone)
            .bind(Money(b.limit_usd))
            .bind(b.soft_limit_usd.map(Money))
            .bind(b.mode.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| period_taken(e, &b))?;
            if rekey {
                backfill!(tx, pg, &b, now);
            }
            bump_budgets!(tx);
            let org = budget_org!(tx, &b);
            audit!(
                tx,
                Change::new("budget", id, org.as_deref(), Some(&before), Some(&b))
            );
            tx.commit().await?;
            self.committed_change();
            Ok(b)
        })
    }

    /// Deletes a budget and its counters.
    pub async fn delete_budget(&self, id: &str) -> Result<(), StoreError> {
        let n = with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let Some(row) = sqlx::query_as::<_, BudgetRow>(sql!(
                "SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Err(not_found("budget", id));
            };
            let before = Budget::try_from(row)?;
            let org = budget_org!(tx, &before);
            // Counters first: SQLite only cascades with foreign keys on, and this keeps the
            // delete independent of that setting.
            sqlx::query("DELETE FROM budget_spend WHERE budget_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM budgets WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                bump_budgets!(tx);
                audit!(
                    tx,
                    Change::new("budget", id, org.as_deref(), Some(&before), NONE)
                );
            }
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(not_found("budget", id));
        }
        self.committed_change();
        Ok(())
    }

    /// Spend of each budget in its window containing `now` (zero when it has none yet).
    pub async fn spend_now(
        &self,
        budgets: &[Budget],
        now: i64,
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        let starts: Vec<i64> = budgets.iter().map(|b| b.window_at(now).start).collect();
        let counters = with_pool!(self, read, |pool, pg| {
            let mut conn = pool.acquire().await?;
            counters_at!(conn, pg, &starts)
        });
        Ok(budgets
            .iter()
            .zip(&starts)
            .map(|(b, s)| {
                let spent = counters
                    .get(&(b.id.clone(), *s))
                    .copied()
                    .unwrap_or(Decimal::ZERO);
                (b.id.clone(), spent)
            })
            .collect())
    }
}
