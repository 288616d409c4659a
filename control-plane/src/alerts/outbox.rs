//! The outbox: alert events recorded once per (subject, window, kind) by a unique key, in the
//! transaction of the change that caused them, each with one pending delivery per matching
//! subscription. A crossing commits with the spend that crossed (never lost), and a second
//! replica crossing the same threshold at the same time finds the key taken (never doubled):
//! on PostgreSQL the counter's row lock orders the two batches, so the second one's "before"
//! already holds the first one's spend, and the unique key would catch anything else.
//!
//! - [`Outbox::record_crossings`]: ingestion's hook (`store/ledger.rs`), right after the
//!   counters were added to: the spend after the batch is read back, the spend before is that
//!   minus the batch's delta, and [`evaluate::crossings`] says what fired; a window the
//!   batch's denial records name fires `hard_limit` (once: the key). Subscriptions are read
//!   first, so without any the hook costs one small query per batch.
//! - The sweep ([`Store::record_window_resets`], [`Store::record_stale_reporters`],
//!   [`Store::record_price_book_change`]), which the dispatcher runs on its slow poll for what
//!   no usage batch causes.

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tollgate_core::budget::Period;

use super::evaluate::{self, thresholds_of, BudgetRef};
use super::webhooks::{Webhook, WebhookRow, WEBHOOK_COLUMNS};
use super::{payload, EventKind};
use crate::store::budgets::{Budget, BudgetRow, BUDGET_COLUMNS};
use crate::store::{begin_write, with_pool, Money, Store, StoreError};

/// A budget's row with the organisation of its principal.
#[derive(sqlx::FromRow)]
struct BudgetOrgRow {
    #[sqlx(flatten)]
    budget: BudgetRow,
    org_id: Option<String>,
}

/// The organisation of a budget's principal, as a column of `FROM budgets b` (an org budget
/// names its org whether or not it is registered: that is what subscriptions select by).
const ORG_OF_BUDGET: &str = "CASE b.scope WHEN 'org' THEN b.scope_id \
     WHEN 'project' THEN (SELECT p.org_id FROM projects p WHERE p.id = b.scope_id) \
     WHEN 'user' THEN (SELECT u.org_id FROM users u WHERE u.id = b.scope_id) \
     WHEN 'key' THEN (SELECT k.org_id FROM virtual_keys k WHERE k.id = b.scope_id) END AS org_id";

/// The enabled subscriptions, read on `$conn`.
macro_rules! enabled_webhooks {
    ($conn:expr) => {{
        let rows: Vec<WebhookRow> = sqlx::query_as(sql!(
            "SELECT {WEBHOOK_COLUMNS} FROM alert_webhooks WHERE enabled = $1 ORDER BY id"
        ))
        .bind(true)
        .fetch_all(&mut *$conn)
        .await?;
        rows.iter()
            .map(WebhookRow::view)
            .collect::<Result<Vec<Webhook>, StoreError>>()?
    }};
}

/// Budgets (those of `$ids`, a `&[&str]`, or every one when `None`) with their organisation.
macro_rules! budgets_with_org {
    ($conn:expr, $ids:expr) => {{
        let ids: Option<&[&str]> = $ids;
        let base = format!("SELECT {BUDGET_COLUMNS}, {ORG_OF_BUDGET} FROM budgets b");
        let mut rows: Vec<BudgetOrgRow> = Vec::new();
        match ids {
            None => {
                rows = sqlx::query_as(sqlx::AssertSqlSafe(base.as_str()))
                    .fetch_all(&mut *$conn)
                    .await?
            }
            Some(ids) => {
                for chunk in ids.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::new(format!("{base} WHERE b.id IN ("));
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    rows.extend(
                        qb.build_query_as::<BudgetOrgRow>()
                            .fetch_all(&mut *$conn)
                            .await?,
                    );
                }
            }
        }
        rows.into_iter()
            .map(|r| Ok((Budget::try_from(r.budget)?, r.org_id)))
            .collect::<Result<Vec<(Budget, Option<String>)>, StoreError>>()?
    }};
}

/// Records event `$kind` of `$subject` in window `$start` unless it is recorded already, and
/// one pending delivery for each subscription of `$to` (`&Webhook`s). Evaluates to whether it
/// recorded the event with at least one delivery.
macro_rules! record_event {
    ($conn:expr, $subject:expr, $start:expr, $kind:expr, $org:expr, $payload:expr, $now:expr, $to:expr) => {{
        let kind: EventKind = $kind;
        let event: Option<i64> = sqlx::query_scalar(
            "INSERT INTO alert_events (subject, window_start, kind, org_id, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (subject, window_start, kind) DO NOTHING RETURNING id",
        )
        .bind($subject)
        .bind($start)
        .bind(kind.as_str())
        .bind($org)
        .bind($payload.to_string())
        .bind($now)
        .fetch_optional(&mut *$conn)
        .await?;
        let mut recorded = false;
        if let Some(event) = event {
            let now_ms = super::now_ms();
            for w in $to {
                let w: &Webhook = w;
                sqlx::query(
                    "INSERT INTO alert_deliveries (event_id, webhook_id, org_id, kind, status, \
                     attempts, next_attempt_ms, created_ms, updated_ms) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5) \
                     ON CONFLICT (event_id, webhook_id) DO NOTHING",
                )
                .bind(event)
                .bind(&w.id)
                .bind(&w.org_id)
                .bind(kind.as_str())
                .bind(now_ms)
                .execute(&mut *$conn)
                .await?;
                recorded = true;
            }
        }
        recorded
    }};
}

/// The subscriptions of `subs` that select budget `b` (of organisation `org`).
fn selecting<'a>(subs: &'a [Webhook], b: &Budget, org: Option<&str>) -> Vec<&'a Webhook> {
    let r = BudgetRef {
        id: &b.id,
        scope_id: &b.scope_id,
        org_id: org,
    };
    subs.iter().filter(|w| w.selects(r)).collect()
}

/// The subscriptions of `to` that ask for events of `kind`.
fn wanting<'a>(to: &[&'a Webhook], kind: EventKind) -> Vec<&'a Webhook> {
    to.iter().copied().filter(|w| w.wants(kind)).collect()
}

/// What a window-reset sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSweep {
    /// Whether it recorded a delivery.
    pub fired: bool,
    /// The earliest end of a watched budget's current window: nothing resets before it
    /// (unless budgets or subscriptions change).
    pub next_boundary: Option<i64>,
}

/// A budget window that refused requests in this batch: `(budget id, window start, the
/// earliest refusal's time)`, from the batch's denial records (`ingest::window_stats`).
pub(crate) type Refused<'a> = (&'a str, i64, i64);

/// Ingestion's hook, on the ingestion transaction's connection.
pub(crate) trait Outbox {
    /// Records the events that the counter deltas `(budget id, window start, USD)` just added
    /// in this transaction fired, and `hard_limit` for each window of `refused` (the first
    /// batch that reports a refusal in a window records it; later ones find the key taken).
    /// Returns whether any delivery was recorded (then wake the dispatcher after the commit:
    /// [`Store::wake_alerts`]).
    async fn record_crossings(
        &mut self,
        deltas: &[(&str, i64, Decimal)],
        refused: &[Refused<'_>],
        now: i64,
    ) -> Result<bool, StoreError>;
}

macro_rules! outbox_impl {
    ($conn:ty) => {
        impl Outbox for $conn {
            async fn record_crossings(
                &mut self,
                deltas: &[(&str, i64, Decimal)],
                refused: &[Refused<'_>],
                now: i64,
            ) -> Result<bool, StoreError> {
                if deltas.is_empty() && refused.is_empty() {
                    return Ok(false);
                }
                let subs: Vec<Webhook> = enabled_webhooks!(self)
                    .into_iter()
                    .filter(Webhook::wants_budget_events)
                    .collect();
                if subs.is_empty() {
                    return Ok(false);
                }
                let mut ids: Vec<&str> = deltas.iter().map(|d| d.0).collect();
                ids.extend(refused.iter().map(|r| r.0));
                ids.sort_unstable();
                ids.dedup();
                let mut selected: HashMap<String, (Budget, Option<String>, Vec<&Webhook>)> =
                    HashMap::new();
                for (b, org) in budgets_with_org!(self, Some(&ids[..])) {
                    let to = selecting(&subs, &b, org.as_deref());
                    if !to.is_empty() {
                        selected.insert(b.id.clone(), (b, org, to));
                    }
                }
                if selected.is_empty() {
                    return Ok(false);
                }
                // The spend after the batch (this transaction's own write, under its row
                // lock on PostgreSQL).
                let min_start = deltas
                    .iter()
                    .map(|d| d.1)
                    .chain(refused.iter().map(|r| r.1))
                    .min()
                    .unwrap_or(i64::MIN);
                let sel: Vec<&str> = selected.keys().map(String::as_str).collect();
                let mut after: HashMap<(String, i64), Decimal> = HashMap::new();
                for chunk in sel.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "SELECT budget_id, window_start, spent_usd FROM budget_spend \
                         WHERE window_start >= ",
                    );
                    qb.push_bind(min_start);
                    qb.push(" AND budget_id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    let rows: Vec<(String, i64, Money)> =
                        qb.build_query_as().fetch_all(&mut *self).await?;
                    after.extend(rows.into_iter().map(|(id, s, m)| ((id, s), m.0)));
                }
                let mut fired = false;
                // In the deltas' order (budget, window): concurrent batches insert events in
                // one order.
                for &(id, start, delta) in deltas {
                    let Some((b, org, to)) = selected.get(id) else {
                        continue;
                    };
                    let Some(&spent) = after.get(&(id.to_string(), start)) else {
                        continue;
                    };
                    let before = spent.checked_sub(delta).unwrap_or(spent);
                    let thresholds = thresholds_of(to.iter().copied());
                    for kind in evaluate::crossings(
                        before,
                        spent,
                        b.limit_usd,
                        b.soft_limit_usd,
                        &thresholds,
                    ) {
                        let wanting = wanting(to, kind);
                        if wanting.is_empty() {
                            continue;
                        }
                        let window = b.window_at(start);
                        let body = payload::spend_event(
                            kind,
                            b,
                            org.as_deref(),
                            &window,
                            before,
                            spent,
                            now,
                        );
                        fired |= record_event!(
                            self,
                            id,
                            start,
                            kind,
                            org.as_deref(),
                            body,
                            now,
                            wanting
                        );
                    }
                }
                // The first refusal of each window (no spend row: a zero-limit budget refuses
                // with nothing spent).
                for &(id, start, first_refused) in refused {
                    let Some((b, org, to)) = selected.get(id) else {
                        continue;
                    };
                    let wanting = wanting(to, EventKind::HardLimit);
                    if wanting.is_empty() {
                        continue;
                    }
                    let spent = after
                        .get(&(id.to_string(), start))
                        .copied()
                        .unwrap_or(Decimal::ZERO);
                    let window = b.window_at(start);
                    let body =
                        payload::hard_limit(b, org.as_deref(), &window, spent, first_refused, now);
                    fired |= record_event!(
                        self,
                        id,
                        start,
                        EventKind::HardLimit,
                        org.as_deref(),
                        body,
                        now,
                        wanting
                    );
                }
                Ok(fired)
            }
        }
    };
}

outbox_impl!(SqliteConnection);
outbox_impl!(PgConnection);

impl Store {
    /// Wakes the dispatcher: an alert was committed. Call it after the commit.
    pub fn wake_alerts(&self) {
        self.alert_wake().notify_one();
    }

    /// Records `window_reset` for every budget (selected by a subscription that wants it)
    /// whose current window began after `since` and at or before `now` (Unix seconds, the
    /// app's clock). `total` budgets never reset. Reads on the read side first, and takes the
    /// write lock only when there is something to record.
    pub async fn record_window_resets(
        &self,
        since: i64,
        now: i64,
    ) -> Result<WindowSweep, StoreError> {
        let (subs, budgets) = with_pool!(self, read, |pool, pg| {
            let mut conn = pool.acquire().await?;
            let subs: Vec<Webhook> = enabled_webhooks!(conn)
                .into_iter()
                .filter(|w| w.wants(EventKind::WindowReset))
                .collect();
            if subs.is_empty() {
                return Ok(WindowSweep::default());
            }
            (subs, budgets_with_org!(conn, None))
        });
        let mut next_boundary: Option<i64> = None;
        let mut due = Vec::new();
        for (b, org) in budgets {
            if b.period == Period::Total {
                continue;
            }
            let to: Vec<&Webhook> = selecting(&subs, &b, org.as_deref());
            if to.is_empty() {
                continue;
            }
            let w = b.window_at(now);
            if let Some(end) = w.end {
                next_boundary = Some(next_boundary.map_or(end, |n| n.min(end)));
            }
            if w.start > since && w.start <= now {
                due.push((b, org, w, to));
            }
        }
        let mut fired = false;
        if !due.is_empty() {
            with_pool!(self, write, |pool, pg| {
                let mut tx = pool.begin_with(begin_write(pg)).await?;
                for (b, org, w, to) in &due {
                    let body = payload::window_reset(b, org.as_deref(), w, now);
                    fired |= record_event!(
                        tx,
                        &b.id,
                        w.start,
                        EventKind::WindowReset,
                        org.as_deref(),
                        body,
                        now,
                        to.iter().copied()
                    );
                }
                tx.commit().await?;
            });
        }
        Ok(WindowSweep {
            fired,
            next_boundary,
        })
    }

    /// Records `fleet_stale` for every reporter last heard from (a usage batch or a snapshot
    /// poll, `store/reporters.rs`) after `since - stale_after_s` and at or before
    /// `now - stale_after_s`: those that went quiet since the last sweep. Once per quiet spell
    /// (the event is keyed by that last contact).
    pub async fn record_stale_reporters(
        &self,
        since: i64,
        now: i64,
        stale_after_s: u64,
    ) -> Result<bool, StoreError> {
        let n = i64::try_from(stale_after_s).unwrap_or(i64::MAX);
        let (subs, quiet) = with_pool!(self, read, |pool, pg| {
            let mut conn = pool.acquire().await?;
            let subs: Vec<Webhook> = enabled_webhooks!(conn)
                .into_iter()
                .filter(|w| w.wants(EventKind::FleetStale))
                .collect();
            if subs.is_empty() {
                return Ok(false);
            }
            // Its last contact: the later of its last usage batch and its last snapshot poll.
            let quiet: Vec<(String, i64)> = sqlx::query_as(
                "SELECT reporter, contact FROM (SELECT reporter, CASE \
                 WHEN last_synced_at > last_seen THEN last_synced_at ELSE last_seen END \
                 AS contact FROM reporters) r \
                 WHERE contact > $1 AND contact <= $2 ORDER BY reporter",
            )
            .bind(since.saturating_sub(n))
            .bind(now.saturating_sub(n))
            .fetch_all(&mut *conn)
            .await?;
            (subs, quiet)
        });
        if quiet.is_empty() {
            return Ok(false);
        }
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let mut fired = false;
            for (reporter, last_seen) in &quiet {
                let body = payload::fleet_stale(reporter, *last_seen, stale_after_s, now);
                fired |= record_event!(
                    tx,
                    reporter,
                    *last_seen,
                    EventKind::FleetStale,
                    None::<&str>,
                    body,
                    now,
                    subs.iter()
                );
            }
            tx.commit().await?;
            Ok(fired)
        })
    }

    /// Records `price_book_changed` for price-book version `version` (once, whichever replica
    /// saw it first).
    pub async fn record_price_book_change(
        &self,
        version: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let subs: Vec<Webhook> = enabled_webhooks!(tx)
                .into_iter()
                .filter(|w| w.wants(EventKind::PriceBookChanged))
                .collect();
            let mut fired = false;
            if !subs.is_empty() {
                let body = payload::price_book_changed(version, now);
                fired = record_event!(
                    tx,
                    "prices",
                    version,
                    EventKind::PriceBookChanged,
                    None::<&str>,
                    body,
                    now,
                    subs.iter()
                );
            }
            tx.commit().await?;
            Ok(fired)
        })
    }
}
