//! Usage ingestion, the pure half: checking a batch beyond core's own validation, finding the
//! budgets on each event's principal chain, summing each event's cost into the counter of the
//! window containing its `ts` (in the budget's timezone), and advancing a reporter's
//! acknowledged sequence. The transactional half is `store/ledger.rs`.
//!
//! Tests: `cargo test -p tollgate-control-plane --lib ingest`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use tollgate_core::budget::{window, Period, Window};
use tollgate_core::cost::cost;
use tollgate_core::event::{Charge, UsageBatch, UsageEvent};
use tollgate_core::pricing::PriceBook;

use crate::store::budgets::Budget;
use crate::timezone::Zone;

/// Largest cost one event may carry, USD: anything above is a bug or an attack, not a request.
pub const MAX_EVENT_COST_USD: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
/// Events may be stamped at most this far in the future (clock skew between Envoys).
pub const MAX_FUTURE_SKEW_S: i64 = 86_400;
/// Events stamped before 2000-01-01 are refused: no LLM traffic happened then.
pub const MIN_EVENT_TS: i64 = 946_684_800;

/// A batch problem, naming the field (`events[3].ts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct BatchError {
    /// The field, indexed within the batch.
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

/// Core's validation plus the control plane's range checks (the database stores `BIGINT`s;
/// absurd timestamps and costs are refused rather than counted).
pub fn validate(batch: &UsageBatch, now: i64) -> Result<(), BatchError> {
    batch.validate().map_err(|e| {
        let text = e.to_string();
        match text.split_once(": ") {
            Some((field, detail)) => BatchError {
                field: field.to_string(),
                detail: detail.to_string(),
            },
            None => BatchError {
                field: "events".into(),
                detail: text,
            },
        }
    })?;
    let max = i64::MAX.unsigned_abs();
    for (i, e) in batch.events.iter().enumerate() {
        let bad = |field: &str, detail: String| BatchError {
            field: format!("events[{i}].{field}"),
            detail,
        };
        if e.ts < MIN_EVENT_TS || e.ts > now.saturating_add(MAX_FUTURE_SKEW_S) {
            return Err(bad(
                "ts",
                format!(
                    "{} is outside [{MIN_EVENT_TS}, now + {MAX_FUTURE_SKEW_S}s]",
                    e.ts
                ),
            ));
        }
        if e.seq > max {
            return Err(bad("seq", format!("{} does not fit 63 bits", e.seq)));
        }
        if e.price_version > max {
            return Err(bad("price_version", "does not fit 63 bits".into()));
        }
        for (field, v) in e.usage.named_counts() {
            if v > tollgate_core::usage::MAX_TOKENS {
                return Err(bad(
                    &format!("usage.{field}"),
                    format!("{v} tokens is absurd"),
                ));
            }
        }
        if e.cost.total > MAX_EVENT_COST_USD {
            return Err(bad(
                "cost.total",
                format!("{} USD for one request is absurd", e.cost.total),
            ));
        }
        for (field, v) in [
            ("principal.key", &e.principal.key),
            ("principal.user", &e.principal.user),
            ("principal.project", &e.principal.project),
        ] {
            if v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 256) {
                return Err(bad(field, "must be 1 to 256 characters".into()));
            }
        }
    }
    Ok(())
}

/// What the control plane found when it priced an event's usage itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostCheck {
    /// The event's cost is what `tollgate_core::cost` gives for its usage at the control
    /// plane's price of its model.
    Match,
    /// It is not, and the control plane prices the model at the event's price version: the
    /// reporter computed something else (a bug, a tampered event, a stale book under the same
    /// version). Stored as reported, flagged and counted.
    Mismatch,
    /// It is not, but the event was priced with another price-book version (the price changed
    /// since), or the control plane has no price for the model: nothing to compare with.
    Unchecked,
}

impl CostCheck {
    /// The ledger's `cost_check` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CostCheck::Match => "match",
            CostCheck::Mismatch => "mismatch",
            CostCheck::Unchecked => "unchecked",
        }
    }
}

/// Prices `e`'s usage with `book` (the price book of the current snapshot) and compares with
/// the cost it carries. `None` for events not charged from usage (`estimate` and `zero`
/// charges carry a policy amount, not a price of tokens).
pub fn check_cost(e: &UsageEvent, book: &PriceBook) -> Option<CostCheck> {
    if e.charge != Charge::Actual || e.uncharged.is_some() {
        return None;
    }
    let Some(price) = book.models.get(&e.model) else {
        return Some(CostCheck::Unchecked);
    };
    let same = cost(price, &e.usage).is_ok_and(|c| c == e.cost || c.total == e.cost.total);
    Some(if same {
        CostCheck::Match
    } else if e.price_version == book.version {
        CostCheck::Mismatch
    } else {
        CostCheck::Unchecked
    })
}

/// One budget as ingestion needs it.
#[derive(Debug, Clone)]
pub struct BudgetRule {
    /// Budget id.
    pub id: String,
    /// Period.
    pub period: Period,
    /// Zone.
    pub zone: Zone,
}

/// Budgets by the chain link they apply to, for one `budgets_version`.
#[derive(Debug, Default)]
pub struct BudgetIndex {
    /// The `meta.budgets_version` it was built from.
    pub version: i64,
    rules: Vec<BudgetRule>,
    /// Per scope (by `Scope::chain_rank`), scope id → positions in `rules`. Keyed by `String`
    /// so a lookup by `&str` allocates nothing.
    by_link: [HashMap<String, Vec<u32>>; 4],
}

impl BudgetIndex {
    /// Indexes budgets.
    pub fn new(version: i64, budgets: &[Budget]) -> BudgetIndex {
        let mut index = BudgetIndex {
            version,
            ..BudgetIndex::default()
        };
        for b in budgets {
            let Ok(pos) = u32::try_from(index.rules.len()) else {
                break;
            };
            index.rules.push(BudgetRule {
                id: b.id.clone(),
                period: b.period,
                zone: b.zone(),
            });
            if let Some(map) = index.by_link.get_mut(usize::from(b.scope.chain_rank())) {
                map.entry(b.scope_id.clone()).or_default().push(pos);
            }
        }
        index
    }

    /// Positions (in this index) of the budgets on `event`'s chain.
    fn positions<'a>(&'a self, event: &'a UsageEvent) -> impl Iterator<Item = u32> + 'a {
        event.principal.chain().flat_map(move |(scope, id)| {
            self.by_link
                .get(usize::from(scope.chain_rank()))
                .and_then(|m| m.get(id))
                .into_iter()
                .flatten()
                .copied()
        })
    }

    /// The budgets on `event`'s chain.
    pub fn for_event<'a>(&'a self, event: &'a UsageEvent) -> impl Iterator<Item = &'a BudgetRule> {
        self.positions(event)
            .filter_map(|p| self.rules.get(usize::try_from(p).unwrap_or(usize::MAX)))
    }

    /// How many budgets are indexed.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no budget is indexed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The last built [`BudgetIndex`], shared by every ingestion (rebuilt when budgets change).
#[derive(Debug, Default)]
pub struct BudgetCache(RwLock<Option<Arc<BudgetIndex>>>);

impl BudgetCache {
    /// The cached index if it is of `version`.
    pub fn get(&self, version: i64) -> Option<Arc<BudgetIndex>> {
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|i| i.version == version).cloned()
    }

    /// Replaces the cached index.
    pub fn put(&self, index: Arc<BudgetIndex>) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        *guard = Some(index);
    }
}

/// Counter deltas `(budget id, window start) → USD`, sorted (so concurrent transactions lock
/// counter rows in one order and cannot deadlock).
pub type Deltas = BTreeMap<(String, i64), Decimal>;

/// Sums each event's cost into the counter of every budget on its chain, for the window
/// containing the event's `ts` in the budget's zone. `Err` names the budget whose sum would
/// overflow (unreachable with [`MAX_EVENT_COST_USD`] short of 10²² events).
pub fn deltas<'a>(
    index: &BudgetIndex,
    events: impl IntoIterator<Item = &'a UsageEvent>,
) -> Result<Deltas, String> {
    // Windows depend only on (period, zone, ts), and a batch spans seconds: compute each
    // (period, zone)'s window once and reuse it while the timestamps stay inside it (the tz
    // arithmetic is the costly part; a fleet has thousands of budgets but few zones). Sums are
    // keyed by budget position, not id, so the hot loop allocates nothing.
    let mut last: HashMap<(Period, &'static str), Window> = HashMap::new();
    let mut sums: HashMap<(u32, i64), Decimal> = HashMap::new();
    for e in events {
        if e.cost.total.is_zero() {
            continue;
        }
        for pos in index.positions(e) {
            let Some(rule) = index.rules.get(usize::try_from(pos).unwrap_or(usize::MAX)) else {
                continue;
            };
            let key = (rule.period, rule.zone.name());
            let w = match last.get(&key) {
                Some(w) if w.contains(e.ts) => *w,
                _ => {
                    let w = window(rule.period, &rule.zone, e.ts);
                    last.insert(key, w);
                    w
                }
            };
            let slot = sums.entry((pos, w.start)).or_default();
            *slot = slot
                .checked_add(e.cost.total)
                .ok_or_else(|| format!("budget {} spend overflows", rule.id))?;
        }
    }
    Ok(sums
        .into_iter()
        .filter_map(|((pos, start), v)| {
            let rule = index.rules.get(usize::try_from(pos).ok()?)?;
            Some(((rule.id.clone(), start), v))
        })
        .collect())
}

/// What one batch adds to a budget window's refusal and warning counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStat {
    /// Requests refused by this budget.
    pub denied: i64,
    /// Admitted requests that crossed its soft limit.
    pub soft_warned: i64,
    /// The first and last refusal, Unix seconds (`None` without refusals).
    pub denied_span: Option<(i64, i64)>,
}

/// Refusals and soft warnings per `(budget id, window start)`, sorted like [`Deltas`]: a denial
/// record counts its requests against the budget that refused them, an admitted event one
/// warning against each budget it names in `soft_warned`, each in the window containing the
/// record's `ts`. A budget that is not on the event's chain under the current budgets (deleted
/// since, or never there) is skipped: its counts have nowhere to go.
pub fn window_stats<'a>(
    index: &BudgetIndex,
    events: impl IntoIterator<Item = &'a UsageEvent>,
) -> BTreeMap<(String, i64), WindowStat> {
    let mut out: BTreeMap<(String, i64), WindowStat> = BTreeMap::new();
    for e in events {
        let on_chain = |id: &str| {
            index
                .for_event(e)
                .find(|r| r.id == id)
                .map(|r| (r.id.clone(), window(r.period, &r.zone, e.ts).start))
        };
        if let Some(d) = &e.denied {
            if let Some(key) = on_chain(&d.budget) {
                let stat = out.entry(key).or_default();
                stat.denied = stat
                    .denied
                    .saturating_add(i64::try_from(d.requests).unwrap_or(i64::MAX));
                let first = d.first_ts.min(e.ts);
                stat.denied_span = Some(match stat.denied_span {
                    None => (first, e.ts),
                    Some((a, b)) => (a.min(first), b.max(e.ts)),
                });
            }
        }
        for id in &e.soft_warned {
            if let Some(key) = on_chain(id) {
                let stat = out.entry(key).or_default();
                stat.soft_warned = stat.soft_warned.saturating_add(1);
            }
        }
    }
    out
}

/// Advances a reporter's acknowledgement: `acked` is the highest seq whose events up to it are
/// all stored (0 = none: sequences start at 1), `pending` the stored seqs beyond a gap. Returns
/// the new `acked` and what stays pending.
pub fn advance_ack(
    acked: u64,
    pending: impl IntoIterator<Item = u64>,
    stored: impl IntoIterator<Item = u64>,
) -> (u64, BTreeSet<u64>) {
    let mut set: BTreeSet<u64> = pending
        .into_iter()
        .chain(stored)
        .filter(|&s| s > acked)
        .collect();
    let mut acked = acked;
    while let Some(&first) = set.first() {
        if Some(first) != acked.checked_add(1) {
            break;
        }
        acked = first;
        set.pop_first();
    }
    (acked, set)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use tollgate_core::budget::{Mode, Scope};
    use tollgate_core::cost::CostBreakdown;
    use tollgate_core::event::Charge;
    use tollgate_core::identity::Principal;
    use tollgate_core::provider::ApiFormat;
    use tollgate_core::usage::Usage;

    pub(crate) fn event(id: &str, seq: u64, ts: i64, cents: i64) -> UsageEvent {
        let total = Decimal::new(cents, 2);
        UsageEvent {
            id: id.into(),
            reporter: "r1".into(),
            seq,
            ts,
            principal: Arc::new(Principal {
                key: Some("k1".into()),
                user: None,
                project: Some("web".into()),
                org: "acme".into(),
            }),
            model: "gpt-4o".into(),
            api: ApiFormat::OpenAiChat,
            usage: Usage::default(),
            cost: CostBreakdown {
                total,
                ..CostBreakdown::default()
            },
            price_version: 1,
            charge: Charge::Estimate,
            uncharged: Some(tollgate_core::event::UnchargedReason::NoUsage),
            status: 200,
            stream: false,
            requested_model: None,
            soft_warned: Vec::new(),
            denied: None,
        }
    }

    fn budget(id: &str, scope: Scope, scope_id: &str, period: Period, tz: &str) -> Budget {
        Budget {
            id: id.into(),
            scope,
            scope_id: scope_id.into(),
            period,
            timezone: tz.into(),
            limit_usd: Decimal::ONE_HUNDRED,
            soft_limit_usd: None,
            mode: Mode::Enforce,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn each_event_lands_in_its_window_in_the_budget_zone() {
        // 2024-03-31 23:30 UTC is already April 1st in Paris.
        let late_march = 1_711_927_800;
        let index = BudgetIndex::new(
            1,
            &[
                budget(
                    "b-org-paris",
                    Scope::Org,
                    "acme",
                    Period::Monthly,
                    "Europe/Paris",
                ),
                budget("b-org-utc", Scope::Org, "acme", Period::Daily, "UTC"),
                budget("b-key", Scope::Key, "k1", Period::Total, "UTC"),
                budget("b-other", Scope::Org, "globex", Period::Total, "UTC"),
            ],
        );
        let events = [
            event("a", 1, late_march, 150),
            event("b", 2, late_march - 86_400, 25),
            event("c", 3, late_march, 0),
        ];
        let d = deltas(&index, &events).unwrap();
        let april_paris = 1_711_922_400; // 2024-03-31 22:00 UTC
        let march_paris = 1_709_247_600;
        let day = |t: i64| t - t.rem_euclid(86_400);
        let expect: Deltas = [
            (("b-key".to_string(), i64::MIN), Decimal::new(175, 2)),
            (
                ("b-org-paris".to_string(), april_paris),
                Decimal::new(150, 2),
            ),
            (
                ("b-org-paris".to_string(), march_paris),
                Decimal::new(25, 2),
            ),
            (
                ("b-org-utc".to_string(), day(late_march)),
                Decimal::new(150, 2),
            ),
            (
                ("b-org-utc".to_string(), day(late_march - 86_400)),
                Decimal::new(25, 2),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(d, expect);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn acknowledgement_advances_over_contiguous_seqs_only() {
        assert_eq!(advance_ack(0, [], [1, 2, 3]), (3, BTreeSet::new()));
        assert_eq!(advance_ack(3, [], [5, 6]), (3, [5, 6].into()));
        assert_eq!(advance_ack(3, [5, 6], [4]), (6, BTreeSet::new()));
        assert_eq!(
            advance_ack(6, [], [2, 6]),
            (6, BTreeSet::new()),
            "old seqs are no-ops"
        );
        assert_eq!(
            advance_ack(u64::MAX - 1, [], [u64::MAX]),
            (u64::MAX, BTreeSet::new())
        );
    }

    #[test]
    fn validation_names_the_field() {
        let now = 1_800_000_000;
        let ok = UsageBatch {
            events: vec![event("a", 1, now, 1)],
            reporter_secret: None,
        };
        assert_eq!(validate(&ok, now), Ok(()));
        let mut b = ok.clone();
        b.events[0].ts = now + 2 * 86_400;
        assert_eq!(validate(&b, now).unwrap_err().field, "events[0].ts");
        let mut b = ok.clone();
        b.events[0].seq = u64::MAX;
        assert_eq!(validate(&b, now).unwrap_err().field, "events[0].seq");
        let mut b = ok.clone();
        b.events[0].cost.total = Decimal::from(2_000_000);
        assert_eq!(validate(&b, now).unwrap_err().field, "events[0].cost.total");
        let mut b = ok.clone();
        b.events[0].id.clear();
        assert_eq!(validate(&b, now).unwrap_err().field, "events[0].id");
        let mut b = ok;
        Arc::make_mut(&mut b.events[0].principal).user = Some(String::new());
        assert_eq!(
            validate(&b, now).unwrap_err().field,
            "events[0].principal.user"
        );
    }
}
