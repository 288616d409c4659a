//! The snapshot, as the sync service takes the control plane's `GET /v1/snapshot` body
//! (`sections::Held::apply`, `filter/sync`) and every worker reads it back from the sections it
//! publishes (`SnapshotIndex::from_sections`, the key buckets; `filter/src/root.rs`), against
//! a whole-document decode (`SnapshotIndex::decode`); then what a request does with it
//! (`http.rs`): find the key's principal, the budgets on its chain, their spend at `now`,
//! decide, and build the 429.
//!
//! Input: the snapshot bytes. Checks: no panic anywhere on that path at instants around every
//! window edge; lookups find what the snapshot holds; the budgets of a chain belong to it; a
//! decision never reports negative room; every price bills non-negative, exactly summed costs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use tollgate_core::budget::{decide, window_at, BudgetState, Decision, Mode};
use tollgate_core::reply::budget_exceeded;
use tollgate_core::snapshot::sections::{key_bucket, principal_in_bucket, Held};
use tollgate_core::snapshot::{KeyLookup, SnapshotIndex};
use tollgate_fuzz::{check_cost, check_price, sample_usages};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = SnapshotIndex::decode(data) else {
        return;
    };
    // The sync service takes what a whole decode takes, and workers read the same back from
    // its sections: prices, budgets by id (the last of a repeated id), every key.
    let mut held = Held::default();
    held.apply(data)
        .expect("the sync service takes a valid whole snapshot");
    let (prices, budgets, spend) = (
        held.prices_json().as_bytes().to_vec(),
        held.budgets_json(),
        held.spend_bytes(),
    );
    let worker = SnapshotIndex::from_sections(held.manifest, None, |s| match s {
        "prices" => Some(prices.clone()),
        "budgets" => Some(budgets.clone()),
        _ => Some(spend.clone()),
    })
    .expect("a worker reads what the sync service published");
    let snap = &index.snapshot;
    assert_eq!(worker.snapshot.prices, snap.prices);
    let by_id: std::collections::BTreeMap<_, _> = snap
        .budgets
        .iter()
        .map(|b| (b.id.clone(), b.clone()))
        .collect();
    assert_eq!(
        *worker.snapshot.budgets,
        by_id.into_values().collect::<Vec<_>>()
    );
    for key in snap.keys.iter() {
        let hash = key.sha256.to_ascii_lowercase();
        let found = principal_in_bucket(held.bucket(key_bucket(&hash)).as_bytes(), &hash)
            .expect("every key is in its bucket");
        assert!(snap
            .keys
            .iter()
            .any(|k| k.sha256.eq_ignore_ascii_case(&hash) && k.principal == found));
    }
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
    for b in snap.budgets.iter() {
        if let Some(t) = b.window.valid_until() {
            instants.extend([t.saturating_sub(1), t, t.saturating_add(1)]);
        }
        if let Some(w) = window_at(&b.window, snap.generated_at) {
            instants.extend([w.start.saturating_sub(1), w.start]);
            instants.extend(w.end);
        }
    }
    for key in snap.keys.iter() {
        let principal = &index
            .principal_for_key(&key.sha256.to_ascii_lowercase())
            .expect("a key of the snapshot is found by its hash");
        let chain: Vec<_> = principal.chain().collect();
        let budgets: Vec<_> = index.budgets_for(principal).collect();
        for (b, names) in &budgets {
            assert!(
                chain.contains(&(b.scope, b.scope_id.as_str())),
                "budget {} is not on the chain",
                b.id
            );
            assert_eq!(*names.id, *b.id, "a budget's names are another budget's");
        }
        let budgets: Vec<_> = budgets.into_iter().map(|(b, _)| b).collect();
        for &now in &instants {
            let states: Vec<BudgetState<'_>> = budgets
                .iter()
                .map(|b| {
                    let (spent, resets_at) = b.spent_at(now).unwrap_or((Decimal::ZERO, None));
                    BudgetState::of(b, spent, resets_at)
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
