//! Budgets as Prometheus gauges (`GET /v1/metrics/budgets`, admin token: org and budget names
//! are tenant data, unlike the process metrics of the public `/metrics`).
//!
//! Rendered from the snapshot being served, with a registry of its own per scrape, so that a
//! deleted budget's series disappear with it. Cardinality is bounded: at most `max` budgets
//! (`--budget-metrics-max`, default 10,000), the most used first when there are more, and
//! `tollgate_budget_metrics_omitted` says how many were left out. Values are USD as floats:
//! Prometheus has no other number, and nothing computes money from them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tollgate_core::snapshot::{BudgetRef, SnapshotBudget};

/// Budgets exported by default.
pub const DEFAULT_MAX: usize = 10_000;

/// The labels of every budget series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
    scope: String,
    scope_id: String,
    period: String,
    mode: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// One budget as exported: spend in its current window at `now`, and when that window ends.
struct Row<'a> {
    budget: &'a SnapshotBudget,
    spent: Decimal,
    resets_at: Option<i64>,
}

impl Row<'_> {
    /// Spend over limit (0 for a zero limit without spend; a zero limit with spend is over).
    fn utilization(&self) -> f64 {
        let limit = self.budget.limit_usd;
        if limit.is_zero() {
            return if self.spent.is_zero() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        (self.spent / limit).to_f64().unwrap_or(f64::INFINITY)
    }
}

fn usd(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// The gauges of `budgets` at `now` in the Prometheus text format, at most `max` budgets.
pub fn render<'a>(
    budgets: impl Iterator<Item = &'a SnapshotBudget>,
    now: i64,
    max: usize,
) -> String {
    let mut rows: Vec<Row<'_>> = budgets
        .map(|b| {
            // As the filter counts it (zero once a boundary has passed since the snapshot's
            // spend); past the known bounds, the spend as built.
            let (spent, resets_at) = BudgetRef {
                budget: b,
                spent: (b.spent_window_start, b.spent_usd),
            }
            .spent_at(now)
            .unwrap_or((b.spent_usd, None));
            Row {
                budget: b,
                spent,
                resets_at,
            }
        })
        .collect();
    let omitted = rows.len().saturating_sub(max);
    if omitted > 0 {
        rows.sort_by(|a, b| b.utilization().total_cmp(&a.utilization()));
        rows.truncate(max);
    }
    let families: [(&str, &str, Family<BudgetLabels, FloatGauge>); 5] = [
        (
            "tollgate_budget_spend_usd",
            "Spend in the budget's current window, USD",
            Family::default(),
        ),
        (
            "tollgate_budget_limit_usd",
            "The budget's hard limit per window, USD",
            Family::default(),
        ),
        (
            "tollgate_budget_soft_limit_usd",
            "The budget's soft limit, USD (budgets that have one)",
            Family::default(),
        ),
        (
            "tollgate_budget_utilization",
            "Spend over the hard limit (1 = at the limit)",
            Family::default(),
        ),
        (
            "tollgate_budget_resets_at_seconds",
            "When the current window ends, Unix seconds (windowed budgets)",
            Family::default(),
        ),
    ];
    for r in &rows {
        let b = r.budget;
        let labels = BudgetLabels {
            budget: b.id.clone(),
            scope: b.scope.as_str().to_owned(),
            scope_id: b.scope_id.clone(),
            period: b.window.period().as_str().to_owned(),
            mode: b.mode.as_str().to_owned(),
        };
        let [spend, limit, soft, utilization, resets] = &families;
        spend.2.get_or_create(&labels).set(usd(r.spent));
        limit.2.get_or_create(&labels).set(usd(b.limit_usd));
        if let Some(s) = b.soft_limit_usd {
            soft.2.get_or_create(&labels).set(usd(s));
        }
        utilization.2.get_or_create(&labels).set(r.utilization());
        if let Some(t) = r.resets_at {
            resets.2.get_or_create(&labels).set(t as f64);
        }
    }
    let mut registry = Registry::default();
    for (name, help, family) in families {
        registry.register(name, help, family);
    }
    let omitted_gauge: Gauge = Gauge::default();
    omitted_gauge.set(i64::try_from(omitted).unwrap_or(i64::MAX));
    registry.register(
        "tollgate_budget_metrics_omitted",
        "Budgets left out of these metrics by --budget-metrics-max (the least used)",
        omitted_gauge,
    );
    let mut out = String::with_capacity(256 + rows.len() * 600);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::budget::{Mode, Period, Scope, WindowBounds};

    fn budget(id: &str, limit: &str, spent: &str) -> SnapshotBudget {
        SnapshotBudget {
            id: id.into(),
            scope: Scope::Project,
            scope_id: "web".into(),
            limit_usd: limit.parse().unwrap_or_default(),
            soft_limit_usd: None,
            mode: Mode::Enforce,
            window: WindowBounds::compute(Period::Daily, &crate::timezone::Zone::UTC, 1_000_000, 2),
            spent_window_start: Some(950_400),
            spent_usd: spent.parse().unwrap_or_default(),
        }
    }

    #[test]
    fn gauges_per_budget_and_a_bound_on_how_many() {
        let all = [
            budget("a", "10", "8"),
            budget("b", "100", "1"),
            budget("c", "0", "0"),
        ];
        let text = render(all.iter(), 1_000_000, 10);
        let line = |name: &str, id: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("budget=\"{id}\"")))
                .unwrap_or_else(|| panic!("no {name} for {id} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(line("tollgate_budget_utilization", "a"), "0.8");
        assert_eq!(line("tollgate_budget_spend_usd", "a"), "8.0");
        assert_eq!(line("tollgate_budget_limit_usd", "b"), "100.0");
        assert_eq!(line("tollgate_budget_utilization", "c"), "0.0");
        assert_eq!(line("tollgate_budget_resets_at_seconds", "a"), "1036800.0");
        assert!(text.contains("scope=\"project\""), "{text}");
        assert!(text.contains("period=\"daily\""), "{text}");
        assert!(text.contains("tollgate_budget_metrics_omitted 0"), "{text}");
        // A day later the spend belongs to a window that has passed.
        let later = render(all.iter(), 1_036_800, 10);
        assert!(
            later.contains("tollgate_budget_spend_usd{budget=\"a\""),
            "{later}"
        );
        assert!(!later.contains(
            "budget=\"a\",scope=\"project\",scope_id=\"web\",period=\"daily\",mode=\"enforce\"} 8"
        ));
        // Past the bound: the most used first, the rest counted.
        let two = render(all.iter(), 1_000_000, 1);
        assert!(two.contains("budget=\"a\""), "{two}");
        assert!(!two.contains("budget=\"b\""), "{two}");
        assert!(two.contains("tollgate_budget_metrics_omitted 2"), "{two}");
    }
}
