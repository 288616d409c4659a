use rust_decimal::Decimal;
use tollgate_core::budget::{Mode, Scope, WindowBounds};

use super::*;
use crate::store::snapshot::KeyPart;

fn budget(id: &str, limit: i64, spent: i64) -> SnapshotBudget {
    SnapshotBudget {
        id: id.into(),
        scope: Scope::Org,
        scope_id: "acme".into(),
        limit_usd: Decimal::from(limit),
        soft_limit_usd: None,
        mode: Mode::Enforce,
        window: WindowBounds::total(),
        spent_window_start: None,
        spent_usd: Decimal::from(spent),
    }
}

fn keys(parts: &[(&str, &str)]) -> KeysJson {
    KeysJson {
        count: parts.len(),
        parts: parts
            .iter()
            .map(|(b, e)| KeyPart {
                bucket: (*b).into(),
                entries: (*e).into(),
            })
            .collect(),
    }
}

fn stamps(c: &Changes) -> Vec<(String, u64, u64)> {
    c.budgets
        .iter()
        .map(|s| (s.budget.id.clone(), s.defined, s.spent))
        .collect()
}

#[test]
fn each_section_is_stamped_with_the_build_that_changed_it() {
    let mut h = History::default();
    let none = keys(&[]);
    let two = keys(&[("ab1", "x"), ("cd2", "y")]);
    let c = h.record(
        1,
        vec![budget("a", 10, 0), budget("b", 5, 0)],
        true,
        Some((&none, &two)),
    );
    assert_eq!(stamps(&c), [("a".into(), 1, 1), ("b".into(), 1, 1)]);
    assert_eq!((c.prices, c.buckets["ab1"], c.buckets["cd2"]), (1, 1, 1));
    assert!(c.knows(1) && !c.knows(0));

    // Spend of `a` moved; `b` redefined; nothing else.
    let c = h.record(2, vec![budget("a", 10, 3), budget("b", 6, 0)], false, None);
    assert_eq!(stamps(&c), [("a".into(), 1, 2), ("b".into(), 2, 1)]);
    assert_eq!(c.prices, 1);

    // `b` gone, a bucket emptied and one changed.
    let one = keys(&[("ab1", "x2")]);
    let c = h.record(3, vec![budget("a", 10, 3)], false, Some((&two, &one)));
    assert_eq!(c.removed, [("b".to_string(), 3)]);
    assert_eq!((c.buckets["ab1"], c.buckets["cd2"]), (3, 3));

    // `b` back: no longer a tombstone.
    let c = h.record(4, vec![budget("a", 10, 3), budget("b", 1, 0)], false, None);
    assert!(c.removed.is_empty());
    assert_eq!(stamps(&c)[1], ("b".into(), 4, 4));
}

#[test]
fn the_history_is_bounded_and_old_tombstones_go() {
    let mut h = History::default();
    h.record(1, vec![budget("a", 1, 0)], true, None);
    h.record(2, vec![], false, None);
    let total = u64::try_from(HISTORY_BUILDS).unwrap() + 2;
    let mut last = Changes::default();
    for v in 3..=total {
        last = h.record(v, vec![], false, None);
    }
    assert!(!last.knows(2), "older than the history kept");
    assert!(last.knows(3) && last.knows(total));
    assert!(
        last.removed.is_empty(),
        "no base can need the tombstone of version 2"
    );
}
