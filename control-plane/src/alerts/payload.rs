//! What a delivery sends. An event's payload (JSON, stored with the event) is built once when
//! the event is recorded; each delivery adds its ids and renders it in the subscription's
//! format: Tollgate's JSON as is, or a Slack incoming-webhook message (`text`, plus one
//! `section` block with the same text in Slack's `mrkdwn`), which Slack, Mattermost and
//! Rocket.Chat accept.
//!
//! Tollgate's JSON, a threshold crossed (money as decimal strings, times Unix seconds):
//!
//! ```json
//! {"event": "threshold_80", "event_id": 7, "delivery_id": 9, "webhook_id": "whk_…",
//!  "occurred_at": 1710504000,
//!  "budget": {"id": "bud_…", "scope": "org", "scope_id": "acme", "org_id": "acme",
//!             "period": "monthly", "timezone": "UTC", "limit_usd": "100",
//!             "soft_limit_usd": "80", "mode": "enforce"},
//!  "window": {"start": 1709251200, "end": 1711929600},
//!  "threshold_percent": 80, "previous_spent_usd": "79.5", "spent_usd": "81.25",
//!  "utilization_percent": "81.25"}
//! ```
//!
//! `hard_limit` (the budget's first refusal in the window) carries `budget`, `window`,
//! `first_refused_at`, `spent_usd` and `utilization_percent`; `window_reset` carries `budget`
//! and the new `window`; `price_book_changed` carries
//! `prices_version`; `fleet_stale` carries `reporter`, `last_seen` and `stale_after_s`.

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_core::budget::Window;

use super::{EventKind, Format};
use crate::store::budgets::Budget;

fn budget_json(b: &Budget, org_id: Option<&str>) -> Value {
    json!({
        "id": b.id,
        "scope": b.scope,
        "scope_id": b.scope_id,
        "org_id": org_id,
        "period": b.period,
        "timezone": b.timezone,
        "limit_usd": b.limit_usd.to_string(),
        "soft_limit_usd": b.soft_limit_usd.map(|s| s.to_string()),
        "mode": b.mode,
    })
}

fn window_json(w: &Window) -> Value {
    json!({"start": w.start, "end": w.end})
}

/// Spend as a percentage of `limit`, two decimals (none for a zero limit).
pub fn utilization(spent: Decimal, limit: Decimal) -> Option<Decimal> {
    if limit <= Decimal::ZERO {
        return None;
    }
    Some(
        spent
            .checked_mul(Decimal::ONE_HUNDRED)?
            .checked_div(limit)?
            .round_dp(2)
            .normalize(),
    )
}

/// A spend event of budget `b` (a threshold or the soft limit) in `window`.
pub fn spend_event(
    kind: EventKind,
    b: &Budget,
    org_id: Option<&str>,
    window: &Window,
    before: Decimal,
    after: Decimal,
    now: i64,
) -> Value {
    let mut v = json!({
        "event": kind.as_str(),
        "occurred_at": now,
        "budget": budget_json(b, org_id),
        "window": window_json(window),
        "previous_spent_usd": before.to_string(),
        "spent_usd": after.to_string(),
        "utilization_percent": utilization(after, b.limit_usd).map(|u| u.to_string()),
    });
    if let (EventKind::Threshold(p), Some(o)) = (kind, v.as_object_mut()) {
        o.insert("threshold_percent".into(), json!(p));
    }
    v
}

/// Budget `b` refused its first request of `window` at `first_refused` (Unix seconds), with
/// `spent` counted in the window when the batch that reported it was ingested.
pub fn hard_limit(
    b: &Budget,
    org_id: Option<&str>,
    window: &Window,
    spent: Decimal,
    first_refused: i64,
    now: i64,
) -> Value {
    json!({
        "event": EventKind::HardLimit.as_str(),
        "occurred_at": now,
        "budget": budget_json(b, org_id),
        "window": window_json(window),
        "first_refused_at": first_refused,
        "spent_usd": spent.to_string(),
        "utilization_percent": utilization(spent, b.limit_usd).map(|u| u.to_string()),
    })
}

/// Budget `b`'s new `window` began.
pub fn window_reset(b: &Budget, org_id: Option<&str>, window: &Window, now: i64) -> Value {
    json!({
        "event": EventKind::WindowReset.as_str(),
        "occurred_at": now,
        "budget": budget_json(b, org_id),
        "window": window_json(window),
    })
}

/// A price revision was written: the book is now at `version`.
pub fn price_book_changed(version: i64, now: i64) -> Value {
    json!({
        "event": EventKind::PriceBookChanged.as_str(),
        "occurred_at": now,
        "prices_version": version,
    })
}

/// Reporter `reporter` sent nothing since `last_seen`.
pub fn fleet_stale(reporter: &str, last_seen: i64, stale_after_s: u64, now: i64) -> Value {
    json!({
        "event": EventKind::FleetStale.as_str(),
        "occurred_at": now,
        "reporter": reporter,
        "last_seen": last_seen,
        "stale_after_s": stale_after_s,
    })
}

/// The ids a delivery adds to its event's payload.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    /// The event row.
    pub event_id: i64,
    /// The delivery row (what a receiver deduplicates on: a retry repeats it).
    pub delivery_id: i64,
    /// The subscription.
    pub webhook_id: &'a str,
}

/// The body sent for `payload` in `format`.
pub fn render(format: Format, payload: &Value, ids: Ids<'_>) -> Value {
    match format {
        Format::Tollgate => {
            let mut v = payload.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("event_id".into(), json!(ids.event_id));
                o.insert("delivery_id".into(), json!(ids.delivery_id));
                o.insert("webhook_id".into(), json!(ids.webhook_id));
            }
            v
        }
        Format::Slack => {
            let text = slack_text(payload);
            json!({
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            })
        }
    }
}

/// The member at `path` of `v` as text (a string as is, a number as written), `?` if absent.
fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = Some(v);
    for p in path {
        cur = cur.and_then(|c| c.get(*p));
    }
    match cur {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".into(),
        Some(other) => other.to_string(),
    }
}

/// One line a person reads in a channel.
pub fn slack_text(p: &Value) -> String {
    let budget = format!(
        "budget `{}` ({} {}, {} limit ${})",
        s(p, &["budget", "id"]),
        s(p, &["budget", "scope"]),
        s(p, &["budget", "scope_id"]),
        s(p, &["budget", "period"]),
        s(p, &["budget", "limit_usd"]),
    );
    let spent = format!(
        "${} spent this window ({}% of the limit)",
        s(p, &["spent_usd"]),
        s(p, &["utilization_percent"])
    );
    match s(p, &["event"]).as_str() {
        "soft_limit" => format!(
            ":warning: Tollgate: {budget} crossed its soft limit of ${}: {spent}",
            s(p, &["budget", "soft_limit_usd"])
        ),
        "hard_limit" => format!(
            ":no_entry: Tollgate: {budget} refused its first request at its hard limit: {spent}; requests are refused until the window resets"
        ),
        "window_reset" => format!(":arrows_counterclockwise: Tollgate: {budget} began a new window"),
        "price_book_changed" => format!(
            ":label: Tollgate: the price book changed (version {})",
            s(p, &["prices_version"])
        ),
        "fleet_stale" => format!(
            ":satellite: Tollgate: Envoy reporter `{}` sent nothing for over {} s (last seen at {})",
            s(p, &["reporter"]),
            s(p, &["stale_after_s"]),
            s(p, &["last_seen"])
        ),
        _ => format!(
            ":bar_chart: Tollgate: {budget} crossed {}%: {spent}",
            s(p, &["threshold_percent"])
        ),
    }
}
