//! The snapshot, as the sync service and every worker decode the control plane's
//! `GET /v1/snapshot` body (`SnapshotIndex::decode`, `root.rs` / `service.rs`), then what a
//! request does with it (`http.rs`): find the key's principal, the budgets on its chain, their
//! spend at `now`, decide, and build the 429.
//!
//! Input: the snapshot bytes. Checks: no panic anywhere on that path at instants around every
//! window edge; lookups find what the snapshot holds; the budgets of a chain belong to it; a
//! decision never reports negative room; every price bills non-negative, exactly summed costs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use tollgate_core::budget::{decide, window_at, BudgetState, Decision, Mode};
use tollgate_core::reply::budget_exceeded;
use tollgate_core::snapshot::SnapshotIndex;
use tollgate_fuzz::{check_cost, check_price, sample_usages};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = SnapshotIndex::decode(data) else {
        return;
    };
    // The next version as workers decode it, reusing this one's unchanged sections: the same
    // content as a decode from scratch.
    let again = SnapshotIndex::decode_after(data, Some(&index)).expect("decoded once, again");
    assert_eq!(again.snapshot, index.snapshot);
    let snap = &index.snapshot;
    for (name, price) in &snap.prices.models {
        check_price(price);
        for u in sample_usages(price) {
            check_cost(price, &u);
        }
        assert!(snap
            .prices
            .lookup(name, price.provider.as_deref())
            .is_some());
    }
    let mut instants = vec![i64::MIN, i64::MAX, 0, snap.generated_at];
    for b in &snap.budgets {
        if let Some(t) = b.window.valid_until() {
            instants.extend([t.saturating_sub(1), t, t.saturating_add(1)]);
        }
        if let Some(w) = window_at(&b.window, snap.generated_at) {
            instants.extend([w.start.saturating_sub(1), w.start]);
            instants.extend(w.end);
        }
    }
    for key in snap.keys.iter() {
        let principal = index
            .principal_for_key(&key.sha256.to_ascii_lowercase())
            .expect("a key of the snapshot is found by its hash");
        let chain: Vec<_> = principal.chain().collect();
        let budgets: Vec<_> = index.budgets_for(principal).collect();
        for b in &budgets {
            assert!(
                chain.contains(&(b.scope, b.scope_id.as_str())),
                "budget {} is not on the chain",
                b.id
            );
        }
        for &now in &instants {
            let states: Vec<BudgetState<'_>> = budgets
                .iter()
                .map(|b| {
                    let (spent, resets_at) = b.spent_at(now).unwrap_or((Decimal::ZERO, None));
                    BudgetState {
                        id: &b.id,
                        scope: b.scope,
                        mode: b.mode,
                        limit: b.limit_usd,
                        soft_limit: b.soft_limit_usd,
                        spent,
                        unsynced: Decimal::ZERO,
                        reserved: Decimal::ZERO,
                        resets_at,
                    }
                })
                .collect();
            for estimate in [Decimal::ZERO, Decimal::new(5, 1), Decimal::MAX] {
                match decide(&states, estimate, Mode::Enforce) {
                    Decision::Deny(d) => {
                        let reply = budget_exceeded(&d, now);
                        assert_eq!(reply.status, 429);
                        assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_ok());
                    }
                    Decision::Allow(a) => {
                        if let Some(r) = a.remaining {
                            assert!(r.remaining >= Decimal::ZERO, "negative room {r:?}");
                        }
                    }
                }
            }
        }
    }
});
