//! Which events a change of a budget's window spend fires, and which subscriptions an event
//! of a budget goes to. Pure: the outbox (`outbox.rs`) reads the spend before and after a
//! batch and asks here.

use std::collections::BTreeSet;

use rust_decimal::Decimal;

use super::webhooks::Webhook;
use super::{EventClass, EventKind};

/// Whether the window's spend went from below `level` to at or above it.
fn crossed(before: Decimal, after: Decimal, level: Decimal) -> bool {
    before < level && after >= level
}

/// `percent` % of `limit` (exact; `None` only on overflow, far beyond any budget).
pub fn threshold_level(limit: Decimal, percent: u32) -> Option<Decimal> {
    limit
        .checked_mul(Decimal::from(percent))?
        .checked_div(Decimal::ONE_HUNDRED)
}

/// The events a window whose spend went from `before` to `after` fires: each of `thresholds`
/// (percent of `limit`) crossed and the soft limit crossed. A batch that jumps over several
/// thresholds fires each of them. A budget with a zero limit has no thresholds (every cent
/// would cross all of them at once).
///
/// Not `hard_limit`: spend reaching the limit is the 100 % threshold; `hard_limit` is the
/// first request the budget refused in the window, which only the filter's denial records
/// tell (`ingest::window_stats`), and which a spend figure cannot: admission refuses on the
/// worst-case reservation before the counted spend reaches the limit, and a zero-limit budget
/// refuses with no spend at all.
pub fn crossings(
    before: Decimal,
    after: Decimal,
    limit: Decimal,
    soft_limit: Option<Decimal>,
    thresholds: &BTreeSet<u32>,
) -> Vec<EventKind> {
    let mut out = Vec::new();
    if after <= before {
        return out;
    }
    if limit > Decimal::ZERO {
        for &p in thresholds {
            if threshold_level(limit, p).is_some_and(|level| crossed(before, after, level)) {
                out.push(EventKind::Threshold(p));
            }
        }
    }
    if soft_limit.is_some_and(|s| s > Decimal::ZERO && crossed(before, after, s)) {
        out.push(EventKind::SoftLimit);
    }
    out
}

/// A budget as subscriptions select it.
#[derive(Debug, Clone, Copy)]
pub struct BudgetRef<'a> {
    /// Budget id.
    pub id: &'a str,
    /// The id of the principal it applies to.
    pub scope_id: &'a str,
    /// Its organisation (none for an unregistered principal).
    pub org_id: Option<&'a str>,
}

impl Webhook {
    /// Whether this subscription gets events of budget `b`: it is enabled, of no organisation
    /// or of `b`'s, and names `b` among its budgets, or `b`'s principal or organisation among
    /// its scopes, or names neither (every budget it may see).
    pub fn selects(&self, b: BudgetRef<'_>) -> bool {
        let org_ok = match &self.org_id {
            None => true,
            Some(mine) => b.org_id == Some(mine.as_str()),
        };
        let named = (self.budget_ids.is_empty() && self.scope_ids.is_empty())
            || self.budget_ids.iter().any(|id| id == b.id)
            || self
                .scope_ids
                .iter()
                .any(|s| s == b.scope_id || Some(s.as_str()) == b.org_id);
        self.enabled && org_ok && named
    }

    /// Whether this subscription asks for events of `kind` (a threshold only if it is one of
    /// its thresholds; the fleet only for a subscription of no organisation).
    pub fn wants(&self, kind: EventKind) -> bool {
        let class = kind.class();
        if !self.enabled || !self.events.contains(&class) {
            return false;
        }
        match kind {
            EventKind::Threshold(p) => self.thresholds.contains(&p),
            EventKind::FleetStale => self.org_id.is_none(),
            _ => true,
        }
    }

    /// Whether it asks for any event about budgets.
    pub fn wants_budget_events(&self) -> bool {
        self.enabled && self.events.iter().any(|c| c.is_budget())
    }
}

/// The thresholds any of `subs` asks for.
pub fn thresholds_of<'a>(subs: impl IntoIterator<Item = &'a Webhook>) -> BTreeSet<u32> {
    subs.into_iter()
        .filter(|w| w.events.contains(&EventClass::Threshold))
        .flat_map(|w| w.thresholds.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn each_threshold_fires_when_crossed_and_only_then() {
        let t = set(&[50, 80, 95, 100]);
        let limit = d("100");
        // Below, up to exactly 50: fires 50.
        assert_eq!(
            crossings(d("10"), d("50"), limit, None, &t),
            [EventKind::Threshold(50)]
        );
        // Already past 50: nothing new until 80.
        assert!(crossings(d("50"), d("79.99"), limit, None, &t).is_empty());
        // One jump over 50, 80 and 95.
        assert_eq!(
            crossings(d("49"), d("96"), limit, None, &t),
            [
                EventKind::Threshold(50),
                EventKind::Threshold(80),
                EventKind::Threshold(95)
            ]
        );
        // The limit: the 100 % threshold (the hard limit is the first refusal, not spend).
        assert_eq!(
            crossings(d("99"), d("100"), limit, Some(d("90")), &t),
            [EventKind::Threshold(100)]
        );
        assert_eq!(
            crossings(d("89"), d("91"), limit, Some(d("90")), &t),
            [EventKind::SoftLimit]
        );
        // No spend added, a refund, a zero limit: nothing.
        assert!(crossings(d("60"), d("60"), limit, None, &t).is_empty());
        assert!(crossings(d("0"), d("5"), Decimal::ZERO, None, &t).is_empty());
        // Exact decimals: 80 % of 0.3 is 0.24, not 0.23999….
        assert_eq!(
            crossings(d("0.2"), d("0.24"), d("0.3"), None, &set(&[80])),
            [EventKind::Threshold(80)]
        );
        assert!(crossings(d("0.2"), d("0.2399999"), d("0.3"), None, &set(&[80])).is_empty());
    }
}
