//! Store tests: every body runs twice, on SQLite and on PostgreSQL (`store_test!` makes
//! `<name>::sqlite` and `<name>::postgres`). PostgreSQL is a throwaway server this binary
//! starts itself (see `tollgate_testkit::postgres`).
//!
//! Run: `cargo test -p tollgate-control-plane --test store`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use rust_decimal::Decimal;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::metrics::Metrics;
use tollgate_control_plane::snapshot::Snapshots;
use tollgate_control_plane::store::audit::{AuditEntry, AuditQuery};
use tollgate_control_plane::store::budgets::{BudgetPatch, NewBudget};
use tollgate_control_plane::store::keys::NewKey;
use tollgate_control_plane::store::prices::NewRevision;
use tollgate_control_plane::store::spend::{GroupBy, SpendQuery};
use tollgate_control_plane::store::tokens::{NewToken, TokenRole};
use tollgate_control_plane::store::{Store, StoreError};
use tollgate_control_plane::timezone::Zone;
use tollgate_core::budget::{Mode, Period, Scope};
use tollgate_core::pricing::ModelPrice;
use tollgate_core::snapshot::{KeyLookup, Snapshot, SnapshotIndex};
use tollgate_testkit::{store_test, with_connection};

fn budget(scope: Scope, id: &str, period: Period, tz: &str, limit: &str) -> NewBudget {
    NewBudget {
        scope,
        scope_id: id.into(),
        period,
        timezone: Zone::parse(tz).unwrap(),
        limit_usd: d(limit),
        soft_limit_usd: None,
        mode: Mode::Enforce,
    }
}

async fn seed_tenants(store: &Store) {
    store.create_org("acme", "Acme", NOW).await.unwrap();
    store
        .create_project("web", "acme", "Web", NOW)
        .await
        .unwrap();
    store
        .create_user("alice", "acme", "Alice", Some("a@acme.test"), NOW)
        .await
        .unwrap();
}

store_test!(tenants_crud_and_constraints, |store| {
    seed_tenants(&store).await;
    assert_eq!(store.get_org("acme").await.unwrap().name, "Acme");
    assert!(matches!(
        store.create_org("acme", "Again", NOW).await,
        Err(StoreError::Conflict { field: "id", .. })
    ));
    assert!(matches!(
        store.get_org("nope").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.create_project("p2", "nope", "P", NOW).await,
        Err(StoreError::Invalid { ref field, .. }) if field == "org_id"
    ));
    assert_eq!(store.rename_org("acme", "ACME").await.unwrap().name, "ACME");
    assert_eq!(store.list_projects(Some("acme")).await.unwrap().len(), 1);
    assert_eq!(store.list_projects(Some("other")).await.unwrap().len(), 0);
    assert_eq!(
        store.list_users(None).await.unwrap()[0].email.as_deref(),
        Some("a@acme.test")
    );
    // Referenced rows cannot go: 409, not a silent cascade.
    assert!(matches!(
        store.delete_org("acme").await,
        Err(StoreError::Conflict { .. })
    ));
    store.delete_project("web").await.unwrap();
    store.delete_user("alice").await.unwrap();
    store.delete_org("acme").await.unwrap();
    assert!(matches!(
        store.delete_org("acme").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list_orgs().await.unwrap().is_empty());
});

store_test!(keys_are_hashed_listed_and_revoked, |store| {
    seed_tenants(&store).await;
    store.create_org("globex", "Globex", NOW).await.unwrap();
    let v0 = store.meta().await.unwrap();
    let new = NewKey {
        name: "ci".into(),
        org_id: "acme".into(),
        project_id: Some("web".into()),
        user_id: Some("alice".into()),
    };
    let k = store.create_key(&new, NOW).await.unwrap();
    assert!(k.secret.starts_with("tg-"));
    assert_eq!(k.key.prefix, k.secret[..11]);
    let v1 = store.meta().await.unwrap();
    assert!(v1.version > v0.version && v1.keys_version > v0.keys_version);
    // The secret is not stored anywhere the store can give back.
    let listed = store.list_keys(Some("acme"), false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains(&k.secret[3..]));
    // A project of another org is refused, naming the field.
    let bad = NewKey {
        org_id: "globex".into(),
        user_id: None,
        ..new.clone()
    };
    assert!(matches!(
        store.create_key(&bad, NOW).await,
        Err(StoreError::Invalid { ref field, .. }) if field == "project_id"
    ));
    let revoked = store.revoke_key(&k.key.id, NOW + 5).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    let again = store.revoke_key(&k.key.id, NOW + 9).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(NOW + 5),
        "revoking twice keeps the first time"
    );
    assert!(store.list_keys(None, false).await.unwrap().is_empty());
    assert_eq!(store.list_keys(None, true).await.unwrap().len(), 1);
    assert!(matches!(
        store.revoke_key("key_nope", NOW).await,
        Err(StoreError::NotFound { .. })
    ));
});

store_test!(budgets_crud_and_unique_per_period, |store| {
    let b = store
        .create_budget(
            &budget(Scope::Org, "acme", Period::Monthly, "Europe/Paris", "100"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(b.timezone, "Europe/Paris");
    assert!(matches!(
        store
            .create_budget(
                &budget(Scope::Org, "acme", Period::Monthly, "UTC", "5"),
                NOW
            )
            .await,
        Err(StoreError::Conflict {
            field: "period",
            ..
        })
    ));
    store
        .create_budget(&budget(Scope::Org, "acme", Period::Daily, "UTC", "5"), NOW)
        .await
        .unwrap();
    assert_eq!(
        store
            .list_budgets(Some(Scope::Org), Some("acme"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .list_budgets(Some(Scope::Key), None)
            .await
            .unwrap()
            .len(),
        0
    );
    let patch = BudgetPatch {
        limit_usd: Some(d("250.50")),
        soft_limit_usd: Some(Some(d("200"))),
        mode: Some(Mode::Shadow),
        ..BudgetPatch::default()
    };
    let u = store.update_budget(&b.id, &patch, NOW + 1).await.unwrap();
    assert_eq!(
        (u.limit_usd, u.soft_limit_usd, u.mode),
        (d("250.50"), Some(d("200")), Mode::Shadow)
    );
    assert_eq!(
        store.get_budget(&b.id).await.unwrap(),
        u,
        "money round-trips exactly"
    );
    let too_high = BudgetPatch {
        soft_limit_usd: Some(Some(d("300"))),
        ..BudgetPatch::default()
    };
    assert!(matches!(
        store.update_budget(&b.id, &too_high, NOW).await,
        Err(StoreError::Invalid { ref field, .. }) if field == "soft_limit_usd"
    ));
    store.delete_budget(&b.id).await.unwrap();
    assert!(matches!(
        store.get_budget(&b.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_budget(&b.id).await,
        Err(StoreError::NotFound { .. })
    ));
});

store_test!(refusals_warnings_and_last_use_are_counted_once, |store| {
    seed_tenants(&store).await;
    let cache = BudgetCache::default();
    let key = store
        .create_key(
            &NewKey {
                name: "k".into(),
                org_id: "acme".into(),
                ..NewKey::default()
            },
            NOW,
        )
        .await
        .unwrap()
        .key;
    let kb = store
        .create_budget(&budget(Scope::Key, &key.id, Period::Daily, "UTC", "1"), NOW)
        .await
        .unwrap();
    let ob = store
        .create_budget(
            &budget(Scope::Org, "acme", Period::Monthly, "UTC", "100"),
            NOW,
        )
        .await
        .unwrap();
    let p = principal("acme", None, None, Some(&key.id));
    let mut warned = event("e1", "r1", 1, NOW, &p, "0.60");
    warned.soft_warned = vec![kb.id.clone(), "not-on-the-chain".into()];
    let batch = vec![
        warned,
        denial("d1", 2, NOW, &p, &kb.id, 5, NOW - 1),
        // A budget deleted since (or never on this chain): stored, counted nowhere.
        denial("d2", 3, NOW, &p, "gone", 9, NOW),
    ];
    for e in &batch {
        e.validate(0).unwrap();
    }
    assert_eq!(store.ingest(&batch, NOW, &cache).await.unwrap().accepted, 3);
    assert_eq!(store.ingest(&batch, NOW, &cache).await.unwrap().accepted, 0);
    let later = vec![denial("d3", 4, NOW + 1, &p, &kb.id, 2, NOW - 3)];
    store.ingest(&later, NOW, &cache).await.unwrap();

    let budgets = [store.get_budget(&kb.id).await.unwrap(), ob.clone()];
    let counts = store.window_counts(&budgets, NOW).await.unwrap();
    let k = counts[&kb.id];
    assert_eq!(
        (k.denied, k.soft_warned),
        (7, 1),
        "a resent batch counts nothing twice"
    );
    assert_eq!(
        (k.first_denied_at, k.last_denied_at),
        (Some(NOW - 3), Some(NOW + 1))
    );
    assert!(
        !counts.contains_key(&ob.id),
        "the org budget refused and warned nothing"
    );
    // The next day is a new window of the daily budget.
    assert!(store
        .window_counts(&budgets, NOW + DAY)
        .await
        .unwrap()
        .is_empty());

    let denials = store.denials(&kb.id, 10).await.unwrap();
    let ids: Vec<&str> = denials.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d3", "d1"], "newest first, only this budget's");
    let counts: Vec<(i64, i64, i64)> = denials
        .iter()
        .map(|d| (d.requests, d.first_ts, d.last_ts))
        .collect();
    assert_eq!(counts, [(2, NOW - 3, NOW + 1), (5, NOW - 1, NOW)]);
    assert_eq!(denials[0].key_id.as_deref(), Some(key.id.as_str()));
    assert_eq!(store.denials("gone", 10).await.unwrap().len(), 1);

    // Refusals are not spend: the report counts the one metered request.
    let report = store
        .spend(&SpendQuery {
            from: NOW - DAY,
            to: NOW + DAY,
            group_by: vec![GroupBy::Model],
            scope: None,
            model: None,
            zone: Zone::parse("UTC").unwrap(),
            org: None,
        })
        .await
        .unwrap();
    assert_eq!((report.requests, report.total_usd), (1, d("0.6")));

    // Last use: the first batch's latest time; then at most once a minute, never backwards.
    assert_eq!(
        store.get_key(&key.id).await.unwrap().last_used_at,
        Some(NOW)
    );
    let mut e = event("e5", "r1", 5, NOW + 60, &p, "0.01");
    store
        .ingest(std::slice::from_ref(&e), NOW, &cache)
        .await
        .unwrap();
    assert_eq!(
        store.get_key(&key.id).await.unwrap().last_used_at,
        Some(NOW + 60)
    );
    e.id = "e6".into();
    e.seq = 6;
    e.ts = NOW + 30;
    store.ingest(&[e], NOW, &cache).await.unwrap();
    assert_eq!(
        store.get_key(&key.id).await.unwrap().last_used_at,
        Some(NOW + 60)
    );
});

store_test!(
    ingest_is_idempotent_and_charges_every_budget_on_the_chain,
    |store| {
        let cache = BudgetCache::default();
        let org = store
            .create_budget(
                &budget(Scope::Org, "acme", Period::Daily, "UTC", "100"),
                NOW,
            )
            .await
            .unwrap();
        let key = store
            .create_budget(&budget(Scope::Key, "k1", Period::Total, "UTC", "10"), NOW)
            .await
            .unwrap();
        let other = store
            .create_budget(
                &budget(Scope::Org, "globex", Period::Daily, "UTC", "100"),
                NOW,
            )
            .await
            .unwrap();
        let p = principal("acme", Some("web"), None, Some("k1"));
        let batch = vec![
            event("e1", "r1", 1, NOW, &p, "0.10"),
            event("e2", "r1", 2, NOW - DAY, &p, "0.25"),
            event("e1", "r1", 1, NOW, &p, "0.10"),
        ];
        let v0 = store.meta().await.unwrap().version;
        let out = store.ingest(&batch, NOW, &cache).await.unwrap();
        assert_eq!((out.accepted, out.duplicate), (2, 1));
        assert!(out.version.unwrap() > v0);
        let again = store.ingest(&batch, NOW, &cache).await.unwrap();
        assert_eq!(
            (again.accepted, again.duplicate),
            (0, 3),
            "a retried batch changes nothing"
        );
        assert_eq!(again.version, None);
        let budgets = vec![
            store.get_budget(&org.id).await.unwrap(),
            store.get_budget(&key.id).await.unwrap(),
            store.get_budget(&other.id).await.unwrap(),
        ];
        let spent = store.spend_now(&budgets, NOW).await.unwrap();
        assert_eq!(
            spent[&org.id],
            d("0.10"),
            "yesterday's event is in yesterday's window"
        );
        assert_eq!(
            spent[&key.id],
            d("0.35"),
            "a total budget counts everything"
        );
        assert_eq!(spent[&other.id], Decimal::ZERO);
        let yesterday = store.spend_now(&budgets, NOW - DAY).await.unwrap();
        assert_eq!(yesterday[&org.id], d("0.25"));
        // Stored and new ids in one batch, a stored one between new ones: only the new ones
        // are stored and counted.
        let mixed = vec![
            event("e4", "r1", 4, NOW, &p, "0.01"),
            event("e2", "r1", 2, NOW - DAY, &p, "0.25"),
            event("e3", "r1", 3, NOW, &p, "0.05"),
        ];
        let out = store.ingest(&mixed, NOW, &cache).await.unwrap();
        assert_eq!((out.accepted, out.duplicate), (2, 1));
        let spent = store.spend_now(&budgets, NOW).await.unwrap();
        assert_eq!((spent[&org.id], spent[&key.id]), (d("0.16"), d("0.41")));
    }
);

store_test!(
    new_budget_is_backfilled_and_rekeyed_from_the_ledger,
    |store| {
        let cache = BudgetCache::default();
        let p = principal("acme", Some("web"), Some("alice"), None);
        store
            .ingest(
                &[
                    event("a", "r", 1, TODAY + 60, &p, "1.5"),
                    event("b", "r", 2, TODAY - 3600, &p, "2"),
                ],
                NOW,
                &cache,
            )
            .await
            .unwrap();
        // Created after the events: starts from what the current window already spent.
        let b = store
            .create_budget(
                &budget(Scope::Project, "web", Period::Daily, "UTC", "10"),
                NOW,
            )
            .await
            .unwrap();
        let spent = store
            .spend_now(std::slice::from_ref(&b), NOW)
            .await
            .unwrap();
        assert_eq!(spent[&b.id], d("1.5"));
        // In a zone two hours ahead of UTC, 23:00 UTC yesterday is already "today".
        let patch = BudgetPatch {
            timezone: Some(Zone::parse("Africa/Johannesburg").unwrap()),
            ..BudgetPatch::default()
        };
        let b = store.update_budget(&b.id, &patch, NOW).await.unwrap();
        let spent = store
            .spend_now(std::slice::from_ref(&b), NOW)
            .await
            .unwrap();
        assert_eq!(spent[&b.id], d("3.5"));
        // Later events land on top, and the cache picks up the budget change.
        store
            .ingest(&[event("c", "r", 3, NOW, &p, "0.5")], NOW, &cache)
            .await
            .unwrap();
        let spent = store
            .spend_now(std::slice::from_ref(&b), NOW)
            .await
            .unwrap();
        assert_eq!(spent[&b.id], d("4.0"));
    }
);

// SQLite keeps the counters' values between batches (`store/counters.rs`). Each writer below
// changes a counter behind that cache; the next batch must add to what the database holds, not
// to what this store wrote last. (PostgreSQL adds in SQL and must agree.)
store_test!(cached_counters_yield_to_every_other_writer, |store, url| {
    use tollgate_control_plane::store::Money;
    let cache = BudgetCache::default();
    let b = store
        .create_budget(
            &budget(Scope::Org, "acme", Period::Total, "UTC", "1000"),
            NOW,
        )
        .await
        .unwrap();
    let p = principal("acme", None, None, None);
    let mut seq = 0;
    let mut one = |usd: &str| {
        seq += 1;
        vec![event(&format!("e{seq}"), "r", seq, NOW, &p, usd)]
    };
    let spent = |store: Store| {
        let b = b.clone();
        async move {
            store
                .spend_now(std::slice::from_ref(&b), NOW)
                .await
                .unwrap()[&b.id]
        }
    };
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    assert_eq!(spent(store.clone()).await, d("2.00"));

    // Another connection (another process, the CLI, a `sqlite3` shell) sets the counter and
    // bumps no version: only `PRAGMA data_version` tells.
    with_connection!(&url, |conn, pg| {
        sqlx::query("UPDATE budget_spend SET spent_usd = $1 WHERE budget_id = $2")
            .bind(Money(d("10.00")))
            .bind(&b.id)
            .execute(&mut conn)
            .await
            .map(|done| done.rows_affected())
    })
    .unwrap();
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    assert_eq!(spent(store.clone()).await, d("11.00"));

    // A second control plane on the same database ingests between this store's batches, and
    // this store between its batches.
    let other = Store::connect(&url).await.unwrap();
    let other_cache = BudgetCache::default();
    other.ingest(&one("1.00"), NOW, &other_cache).await.unwrap();
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    other.ingest(&one("1.00"), NOW, &other_cache).await.unwrap();
    assert_eq!(spent(store.clone()).await, d("14.00"));
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    assert_eq!(spent(other.clone()).await, d("15.00"));
    other.close().await;

    // This store rewrites the counter itself: a new time zone back-fills it from the ledger
    // (seven events of $1; the $10 set above was never in the ledger).
    let patch = BudgetPatch {
        timezone: Some(Zone::parse("Europe/Paris").unwrap()),
        ..BudgetPatch::default()
    };
    store.update_budget(&b.id, &patch, NOW).await.unwrap();
    assert_eq!(spent(store.clone()).await, d("7.00"));
    store.ingest(&one("1.00"), NOW, &cache).await.unwrap();
    assert_eq!(spent(store.clone()).await, d("8.00"));
});

store_test!(reporter_acknowledgement_waits_for_gaps, |store| {
    let cache = BudgetCache::default();
    let p = principal("acme", None, None, None);
    let snapshots = Snapshots::new(
        store.clone(),
        Clock::fixed(NOW),
        Arc::new(Metrics::default()),
    );
    // The acknowledgements read with the spend (each reporter is shown only its own entry).
    let acks = |s: &Snapshots| (*s.current().reporters).clone();
    store
        .ingest(
            &[
                event("1", "r1", 1, NOW, &p, "1"),
                event("2", "r1", 2, NOW, &p, "1"),
            ],
            NOW,
            &cache,
        )
        .await
        .unwrap();
    store
        .ingest(
            &[
                event("5", "r1", 5, NOW, &p, "1"),
                event("x1", "r2", 1, NOW, &p, "1"),
            ],
            NOW,
            &cache,
        )
        .await
        .unwrap();
    snapshots.rebuild().await.unwrap();
    assert_eq!(
        acks(&snapshots),
        BTreeMap::from([("r1".into(), 2), ("r2".into(), 1)])
    );
    store
        .ingest(
            &[
                event("3", "r1", 3, NOW, &p, "1"),
                event("4", "r1", 4, NOW, &p, "1"),
            ],
            NOW,
            &cache,
        )
        .await
        .unwrap();
    snapshots.rebuild().await.unwrap();
    assert_eq!(
        acks(&snapshots)["r1"],
        5,
        "the gap closed: 3 and 4 join the pending 5"
    );
    // Duplicates of acknowledged events do not move anything.
    store
        .ingest(&[event("2", "r1", 2, NOW, &p, "1")], NOW, &cache)
        .await
        .unwrap();
    snapshots.rebuild().await.unwrap();
    assert_eq!(acks(&snapshots)["r1"], 5);
});

/// For the concurrency tests: a budget cache to share between tasks, a $1,000 monthly budget
/// on the organisation `acme`, and a principal it applies to.
async fn shared_monthly_budget(
    store: &Store,
) -> (
    Arc<BudgetCache>,
    tollgate_control_plane::store::budgets::Budget,
    tollgate_core::identity::Principal,
) {
    let b = store
        .create_budget(
            &budget(Scope::Org, "acme", Period::Monthly, "UTC", "1000"),
            NOW,
        )
        .await
        .unwrap();
    let p = principal("acme", None, None, None);
    (Arc::new(BudgetCache::default()), b, p)
}

store_test!(concurrent_batches_lose_no_update, |store| {
    let (cache, b, p) = shared_monthly_budget(&store).await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, cache, p) = (store.clone(), cache.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..5u64 {
                let events: Vec<_> = (0..20u64)
                    .map(|i| {
                        let seq = n * 20 + i + 1;
                        event(
                            &format!("t{t}-{seq}"),
                            &format!("r{t}"),
                            seq,
                            NOW,
                            &p,
                            "0.01",
                        )
                    })
                    .collect();
                store.ingest(&events, NOW, &cache).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let spent = store
        .spend_now(std::slice::from_ref(&b), NOW)
        .await
        .unwrap();
    assert_eq!(spent[&b.id], d("8.00"), "8 tasks × 100 events × $0.01");
});

// A retried batch racing the original (and other overlapping batches): every event is stored
// and counted once, whichever transaction gets there first.
store_test!(racing_retries_store_each_event_once, |store| {
    let (cache, b, p) = shared_monthly_budget(&store).await;
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (store, cache, p) = (store.clone(), cache.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            // Ids 10·t to 10·t + 39: each overlaps the next three tasks' batches.
            let events: Vec<_> = (t * 10 + 1..=t * 10 + 40)
                .map(|seq| event(&format!("e{seq}"), "r", seq, NOW, &p, "0.01"))
                .collect();
            store.ingest(&events, NOW, &cache).await.unwrap()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let out = t.await.unwrap();
        assert_eq!(out.accepted + out.duplicate, 40);
        accepted += out.accepted;
    }
    assert_eq!(accepted, 90, "ids 1 to 90, each once");
    let spent = store
        .spend_now(std::slice::from_ref(&b), NOW)
        .await
        .unwrap();
    assert_eq!(spent[&b.id], d("0.90"));
});

store_test!(price_revisions_take_effect_in_order, |store| {
    let price = |input: i64| ModelPrice::flat(Decimal::new(input, 6), Decimal::new(input * 4, 6));
    let rev = |model: &str, from: i64, p: Option<ModelPrice>| NewRevision {
        model: model.into(),
        effective_from: from,
        price: p,
        source: "api".into(),
    };
    store
        .add_price_revisions(
            &[
                rev("gpt-4o", NOW - 100, Some(price(2))),
                rev("o1", NOW - 100, Some(price(15))),
            ],
            NOW,
        )
        .await
        .unwrap();
    store
        .add_price_revisions(
            &[
                rev("gpt-4o", NOW + 100, Some(price(3))),
                rev("o1", NOW + 50, None),
            ],
            NOW,
        )
        .await
        .unwrap();
    let now = store.effective_prices(NOW).await.unwrap();
    assert_eq!(now.book.models["gpt-4o"], price(2));
    assert_eq!(now.book.models.len(), 2);
    assert_eq!(now.next_change, Some(NOW + 50));
    let later = store.effective_prices(NOW + 100).await.unwrap();
    assert_eq!(later.book.models["gpt-4o"], price(3));
    assert!(
        !later.book.models.contains_key("o1"),
        "deleted from NOW + 50 on"
    );
    assert!(later.book.version > now.book.version);
    assert_eq!(later.next_change, None);
    let history = store.price_history("gpt-4o").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(store.price_at("o1", NOW + 60).await.unwrap(), None);
    assert_eq!(
        store.price_at("o1", NOW).await.unwrap().unwrap().price,
        Some(price(15))
    );
});

store_test!(snapshot_carries_windows_spend_keys_and_versions, |store| {
    seed_tenants(&store).await;
    let clock = Clock::fixed(NOW);
    let metrics = Arc::new(Metrics::default());
    let snapshots = Snapshots::new(store.clone(), clock.clone(), metrics);
    let cache = BudgetCache::default();
    let key = store
        .create_key(
            &NewKey {
                name: "k".into(),
                org_id: "acme".into(),
                project_id: Some("web".into()),
                user_id: None,
            },
            NOW,
        )
        .await
        .unwrap();
    let daily = store
        .create_budget(&budget(Scope::Org, "acme", Period::Daily, "UTC", "50"), NOW)
        .await
        .unwrap();
    store
        .create_budget(
            &budget(Scope::Key, &key.key.id, Period::Total, "UTC", "5"),
            NOW,
        )
        .await
        .unwrap();
    store
        .add_price_revisions(
            &[NewRevision {
                model: "gpt-4o".into(),
                effective_from: 0,
                price: Some(ModelPrice::flat(Decimal::new(25, 7), Decimal::new(1, 5))),
                source: "api".into(),
            }],
            NOW,
        )
        .await
        .unwrap();
    let p = principal("acme", Some("web"), None, Some(&key.key.id));
    store
        .ingest(&[event("e1", "env-1", 1, NOW, &p, "1.25")], NOW, &cache)
        .await
        .unwrap();
    let built = snapshots.rebuild().await.unwrap();
    assert_eq!(built.version, store.meta().await.unwrap().version as u64);
    let snap: Snapshot = serde_json::from_slice(&built.bytes).unwrap();
    let idx = SnapshotIndex::new(snap.clone()).unwrap();
    let who = idx.principal_for_key(&tollgate_control_plane::keys::sha256_hex(
        key.secret.as_bytes(),
    ));
    assert_eq!(who, Some(p.clone()), "the key resolves to its whole chain");
    let on_chain: Vec<_> = idx
        .budgets_for(&p)
        .map(|(b, _)| (b.id.clone(), b.spent_usd))
        .collect();
    assert_eq!(on_chain.len(), 2);
    assert!(on_chain.iter().all(|(_, s)| *s == d("1.25")));
    let b = snap.budgets.iter().find(|b| b.id == daily.id).unwrap();
    assert_eq!(
        b.window.boundaries(),
        [TODAY, TODAY + DAY, TODAY + 2 * DAY, TODAY + 3 * DAY]
    );
    assert_eq!(b.spent_window_start, Some(TODAY));
    assert!(
        snap.reporters.is_empty(),
        "the shared bytes name no reporter"
    );
    let (head, tail) = built.for_reporter(&built.bytes, "env-1");
    let mine: Snapshot = serde_json::from_slice(&[head.as_ref(), tail.as_ref()].concat()).unwrap();
    assert_eq!(mine.reporters, BTreeMap::from([("env-1".to_string(), 1)]));
    // The delta document the sync service asks for names it too.
    let delta = built.delta(None).unwrap().0;
    let (head, tail) = built.for_reporter(&delta, "env-1");
    let mut held = tollgate_core::snapshot::sections::Held::default();
    held.apply(&[head.as_ref(), tail.as_ref()].concat())
        .unwrap();
    assert_eq!(held.reporters, mine.reporters);
    let (head, tail) = built.for_reporter(&built.bytes, "someone-else");
    assert!(
        tail.is_empty() && head == built.bytes,
        "no entry: the shared bytes"
    );
    assert_eq!(snap.prices.models.len(), 1);
    assert_eq!(snap.generated_at, NOW);
    // Nothing changed: same version, same bytes, no rebuild.
    let same = snapshots.rebuild().await.unwrap();
    assert_eq!((same.version, &same.bytes), (built.version, &built.bytes));
    // Revoking the key removes it from the next version.
    store.revoke_key(&key.key.id, NOW).await.unwrap();
    let next = snapshots.refresh().await.unwrap();
    assert!(next.version > built.version);
    let snap: Snapshot = serde_json::from_slice(&next.bytes).unwrap();
    assert!(snap.keys.is_empty());
    // Crossing midnight: the refresher turns the boundary into one version bump, and the
    // new window starts with no spend.
    assert_eq!(next.next_boundary, Some(TODAY + DAY));
    clock.set(TODAY + DAY + 1);
    let flipped = snapshots.refresh().await.unwrap();
    assert!(flipped.version > next.version);
    let snap: Snapshot = serde_json::from_slice(&flipped.bytes).unwrap();
    let b = snap.budgets.iter().find(|b| b.id == daily.id).unwrap();
    assert_eq!(b.spent_window_start, Some(TODAY + DAY));
    assert_eq!(b.spent_usd, Decimal::ZERO);
    assert!(
        !store.advance_clock(TODAY + DAY).await.unwrap(),
        "a second replica does not bump again"
    );
});

/// Rebuilds the snapshot's key buckets from scratch with migration 0003's back-fill statement,
/// on a connection of its own, in one write transaction. Bumps nothing: the content must not
/// change.
async fn refill_key_buckets(url: &str) -> Result<(), sqlx::Error> {
    with_connection!(url, |conn, pg| {
        let mut tx = conn
            .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
            .await?;
        sqlx::query("DELETE FROM key_buckets")
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(
            tollgate_control_plane::store::key_buckets::refresh_all_sql(pg),
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    })
}

store_test!(snapshot_keys_are_serdes_key_entries, |store, url| {
    // The keys section is JSON written by the database: it must decode to the active keys in
    // `sha256` order and be byte for byte what serde writes for them, also for ids the API
    // would refuse (the store does not check them) and for keys on both sides of the split.
    let (org, web, alice) = ("a\"c\\mé/\t", "w\u{1}e\u{7f}b", "al\nice\u{1f}");
    store.create_org(org, "Odd", NOW).await.unwrap();
    store.create_project(web, org, "Web", NOW).await.unwrap();
    store
        .create_user(alice, org, "Alice", None, NOW)
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..40 {
        let new = NewKey {
            name: format!("k{i}"),
            org_id: org.into(),
            project_id: (i % 2 == 0).then(|| web.to_string()),
            user_id: (i % 3 == 0).then(|| alice.to_string()),
        };
        let created = store.create_key(&new, NOW).await.unwrap();
        if i == 7 {
            store.revoke_key(&created.key.id, NOW).await.unwrap();
            continue;
        }
        expected.push(tollgate_core::snapshot::KeyEntry {
            sha256: tollgate_control_plane::keys::sha256_hex(created.secret.as_bytes()),
            principal: principal(
                org,
                new.project_id.as_deref(),
                new.user_id.as_deref(),
                Some(&created.key.id),
            ),
        });
    }
    expected.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert!(expected.iter().any(|k| k.sha256.as_str() < "8"));
    assert!(expected.iter().any(|k| k.sha256.as_str() >= "8"));
    let snapshots = Snapshots::new(
        store.clone(),
        Clock::fixed(NOW),
        Arc::new(Metrics::default()),
    );
    let built = snapshots.rebuild().await.unwrap();
    assert_eq!(built.counts.1, expected.len());
    let snap: Snapshot = serde_json::from_slice(&built.bytes).unwrap();
    assert_eq!(*snap.keys, expected);
    let section = format!(
        "\"keys\":{},\"reporters\"",
        serde_json::to_string(&expected).unwrap()
    );
    assert!(
        String::from_utf8_lossy(&built.bytes).contains(&section),
        "keys section differs from serde's: {}",
        String::from_utf8_lossy(&built.bytes)
    );
    // Migration 0003's back-fill writes the buckets the key-by-key changes kept.
    refill_key_buckets(&url).await.unwrap();
    let cold = Snapshots::new(
        store.clone(),
        Clock::fixed(NOW),
        Arc::new(Metrics::default()),
    );
    assert_eq!(cold.rebuild().await.unwrap().bytes, built.bytes);
});

store_test!(concurrent_key_changes_all_reach_the_snapshot, |store| {
    // Keys created and revoked at once, from many connections, all reach the snapshot's key
    // buckets. Each change re-encodes its bucket after taking the `meta` row lock, so two
    // changes in one bucket cannot drop each other's key; with 4,096 buckets two of these
    // changes overlap in one only now and then, so this checks the paths more than the race.
    seed_tenants(&store).await;
    let new = NewKey {
        name: "k".into(),
        org_id: "acme".into(),
        project_id: Some("web".into()),
        user_id: None,
    };
    let first = futures_util::future::join_all((0..128).map(|_| store.create_key(&new, NOW))).await;
    let first: Vec<_> = first.into_iter().map(Result::unwrap).collect();
    let (revoked, second) = tokio::join!(
        futures_util::future::join_all(
            first
                .iter()
                .step_by(3)
                .map(|k| store.revoke_key(&k.key.id, NOW))
        ),
        futures_util::future::join_all((0..128).map(|_| store.create_key(&new, NOW))),
    );
    assert!(revoked.iter().all(Result::is_ok));
    let mut expected: Vec<_> = first
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, k)| k)
        .chain(second.iter().map(|k| k.as_ref().unwrap()))
        .map(|k| tollgate_core::snapshot::KeyEntry {
            sha256: tollgate_control_plane::keys::sha256_hex(k.secret.as_bytes()),
            principal: principal("acme", Some("web"), None, Some(&k.key.id)),
        })
        .collect();
    expected.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(expected.len(), 256 - 43);
    let built = Snapshots::new(
        store.clone(),
        Clock::fixed(NOW),
        Arc::new(Metrics::default()),
    )
    .rebuild()
    .await
    .unwrap();
    let snap: Snapshot = serde_json::from_slice(&built.bytes).unwrap();
    assert_eq!(built.counts.1, expected.len());
    assert_eq!(*snap.keys, expected);
});

store_test!(spend_reports_group_and_filter, |store| {
    let cache = BudgetCache::default();
    let a = principal("acme", Some("web"), Some("alice"), Some("k1"));
    let b = principal("acme", Some("api"), None, Some("k2"));
    let mut e3 = event("3", "r", 3, TODAY - 1, &b, "0.5");
    e3.model = "claude".into();
    store
        .ingest(
            &[
                event("1", "r", 1, TODAY + 10, &a, "1"),
                event("2", "r", 2, TODAY + 20, &b, "2"),
                e3,
            ],
            NOW,
            &cache,
        )
        .await
        .unwrap();
    let q = SpendQuery {
        scope: Some((Scope::Org, "acme".into())),
        model: None,
        from: i64::MIN,
        to: i64::MAX,
        group_by: vec![GroupBy::Day, GroupBy::Project],
        zone: Zone::UTC,
        org: None,
    };
    let r = store.spend(&q).await.unwrap();
    assert_eq!(r.total_usd, d("3.5"));
    assert_eq!(r.requests, 3);
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|r| {
            (
                r.group["day"].clone().unwrap(),
                r.group["project"].clone().unwrap(),
                r.cost_usd,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("2024-03-14".into(), "api".into(), d("0.5")),
            ("2024-03-15".into(), "api".into(), d("2")),
            ("2024-03-15".into(), "web".into(), d("1")),
        ]
    );
    let only = SpendQuery {
        scope: Some((Scope::Key, "k1".into())),
        group_by: vec![GroupBy::Model],
        ..q.clone()
    };
    let r = store.spend(&only).await.unwrap();
    assert_eq!(r.total_usd, d("1"));
    let model = SpendQuery {
        scope: None,
        model: Some("claude".into()),
        group_by: vec![],
        from: TODAY - DAY,
        to: TODAY,
        ..q
    };
    let r = store.spend(&model).await.unwrap();
    assert_eq!((r.requests, r.total_usd), (1, d("0.5")));
    assert_eq!(r.rows[0].input_tokens, 1000);
});

/// Creates keys (one revoked) and returns their secrets: the rows a raw-bytes scan must not
/// betray.
async fn keys_for_the_at_rest_scan(store: &Store) -> Vec<String> {
    seed_tenants(store).await;
    let mut secrets = Vec::new();
    for (i, project) in [None, Some("web"), Some("web")].into_iter().enumerate() {
        let k = store
            .create_key(
                &NewKey {
                    name: format!("scan-{i}"),
                    org_id: "acme".into(),
                    project_id: project.map(str::to_string),
                    user_id: None,
                },
                NOW,
            )
            .await
            .unwrap();
        if i == 2 {
            store.revoke_key(&k.key.id, NOW + 1).await.unwrap();
        }
        secrets.push(k.secret);
    }
    secrets
}

/// Every secret is absent from `raw` (whole, and past its listed prefix), and its SHA-256 is
/// present, so the scan looked at the right bytes.
fn assert_only_hashes_at_rest(raw: &[u8], secrets: &[String], what: &str) {
    let contains = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    for s in secrets {
        assert!(!contains(s), "{what} holds a virtual key secret");
        assert!(
            !contains(&s[tollgate_control_plane::keys::LISTED_PREFIX_LEN..]),
            "{what} holds the secret part of a virtual key"
        );
        let sha = tollgate_control_plane::keys::sha256_hex(s.as_bytes());
        assert!(contains(&sha), "{what} lacks the key's SHA-256 {sha}");
    }
}

/// Virtual keys at rest on SQLite: the raw database file and its WAL, byte by byte.
#[tokio::test]
async fn keys_are_only_hashes_in_the_sqlite_file() {
    let (store, db) = tollgate_testkit::sqlite_store().await;
    let secrets = keys_for_the_at_rest_scan(&store).await;
    let raw = || {
        let mut raw = Vec::new();
        for suffix in ["", "-wal"] {
            let mut p = db.path().to_owned().into_os_string();
            p.push(suffix);
            raw.extend(std::fs::read(&p).unwrap_or_default());
        }
        raw
    };
    assert_only_hashes_at_rest(&raw(), &secrets, "the SQLite file and WAL");
    // Closed (checkpointed): still only hashes.
    store.close().await;
    assert_only_hashes_at_rest(&raw(), &secrets, "the closed SQLite file and WAL");
}

/// Virtual keys at rest on PostgreSQL: a text dump of every table in the database.
#[tokio::test]
async fn keys_are_only_hashes_in_a_postgres_dump() {
    use sqlx::{Connection as _, Row as _};
    let url = match tollgate_testkit::postgres_url().await {
        Ok(url) => url,
        Err(e) if tollgate_testkit::postgres::skip() => {
            eprintln!("SKIPPING PostgreSQL: {e}");
            return;
        }
        Err(e) => panic!("PostgreSQL test server unavailable: {e}"),
    };
    let store = Store::connect(&url).await.unwrap();
    let secrets = keys_for_the_at_rest_scan(&store).await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT schemaname || '.' || quote_ident(tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        tables.iter().any(|t| t.ends_with(".virtual_keys")),
        "{tables:?}"
    );
    let mut dump = String::new();
    for t in &tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM {t} t"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        dump.push_str(&format!("-- {t}\n{}\n", rows.unwrap_or_default()));
    }
    assert_only_hashes_at_rest(dump.as_bytes(), &secrets, "the PostgreSQL dump");
    store.close().await;
}

store_test!(reporters_enroll_and_authenticate_by_secret_hash, |store| {
    let a = store.enroll_reporter(Some("envoy-1"), NOW).await.unwrap();
    let b = store.enroll_reporter(None, NOW).await.unwrap();
    assert!(a.reporter.starts_with("envoy-1-") && b.reporter.starts_with("envoy-"));
    assert_ne!(a.reporter, b.reporter);
    assert!(a.secret.starts_with("tgr-") && a.secret.len() == 44);
    assert!(
        !format!("{a:?}").contains(&a.secret),
        "Debug hides the secret"
    );
    let sha = |s: &str| tollgate_control_plane::keys::sha256_hex(s.as_bytes());
    assert_eq!(
        store.reporter_by_secret(&sha(&a.secret)).await.unwrap(),
        Some(a.reporter.clone())
    );
    assert_eq!(
        store.reporter_by_secret(&sha(&b.secret)).await.unwrap(),
        Some(b.reporter.clone())
    );
    assert_eq!(
        store.reporter_by_secret(&sha("tgr-nope")).await.unwrap(),
        None
    );
    // An enrolled reporter's events are acknowledged under its row.
    let cache = BudgetCache::default();
    let p = principal("acme", None, None, None);
    store
        .ingest(
            &[event(
                &format!("{}-1", a.reporter),
                &a.reporter,
                1,
                NOW,
                &p,
                "1",
            )],
            NOW,
            &cache,
        )
        .await
        .unwrap();
    let snapshots = Snapshots::new(
        store.clone(),
        Clock::fixed(NOW),
        Arc::new(Metrics::default()),
    );
    let built = snapshots.rebuild().await.unwrap();
    assert_eq!(built.reporters.get(&a.reporter), Some(&1));
});

store_test!(
    a_repeated_id_with_other_content_is_a_conflict_and_requested_model_round_trips,
    |store| {
        use tollgate_control_plane::ingest::CostCheck;
        use tollgate_control_plane::store::ledger::LedgerQuery;
        let cache = BudgetCache::default();
        let org = store
            .create_budget(
                &budget(Scope::Org, "acme", Period::Total, "UTC", "100"),
                NOW,
            )
            .await
            .unwrap();
        let p = principal("acme", None, None, None);
        let mut e1 = event("r-1", "r", 1, NOW, &p, "0.5");
        e1.requested_model = Some("gemini-2.0-flash-lite".into());
        e1.model = "gemini-2.5-pro".into();
        let e2 = event("r-2", "r", 2, NOW, &p, "0.25");
        let out = store
            .ingest_checked(
                &[e1.clone(), e2.clone()],
                &[Some(CostCheck::Match), Some(CostCheck::Mismatch)],
                NOW,
                &cache,
            )
            .await
            .unwrap();
        assert_eq!(
            (out.accepted, out.duplicate, out.conflict, out.cost_mismatch),
            (2, 0, 0, 1)
        );
        // The same id with another cost: a conflict, not stored, not charged.
        let mut forged = e1.clone();
        forged.cost.input = d("0");
        forged.cost.total = d("0");
        let out = store.ingest(&[forged.clone()], NOW, &cache).await.unwrap();
        assert_eq!((out.accepted, out.duplicate, out.conflict), (0, 0, 1));
        assert_eq!(out.version, None);
        // The same content again: a duplicate. Within one batch too.
        let out = store
            .ingest(&[e1.clone(), e2.clone(), forged], NOW, &cache)
            .await
            .unwrap();
        assert_eq!((out.accepted, out.duplicate, out.conflict), (0, 2, 1));
        let e3 = event("r-3", "r", 3, NOW, &p, "0.1");
        let mut e3b = e3.clone();
        e3b.status = 500;
        let out = store.ingest(&[e3, e3b], NOW, &cache).await.unwrap();
        assert_eq!((out.accepted, out.duplicate, out.conflict), (1, 0, 1));
        let spent = store
            .spend_now(&[store.get_budget(&org.id).await.unwrap()], NOW)
            .await
            .unwrap();
        assert_eq!(spent[&org.id], d("0.85"), "only the first contents count");
        let rows = store
            .ledger_events(&LedgerQuery {
                from: i64::MIN,
                to: i64::MAX,
                reporter: Some("r".into()),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        let r1 = rows.iter().find(|r| r.id == "r-1").unwrap();
        assert_eq!(r1.model, "gemini-2.5-pro");
        assert_eq!(r1.requested_model.as_deref(), Some("gemini-2.0-flash-lite"));
        assert_eq!(r1.cost_check.as_deref(), Some("match"));
        assert_eq!(r1.cost_usd.0, d("0.5"));
        let r2 = rows.iter().find(|r| r.id == "r-2").unwrap();
        assert_eq!(r2.requested_model, None);
        assert_eq!(r2.cost_check.as_deref(), Some("mismatch"));
    }
);

fn bulk_user(id: &str, org: &str) -> tollgate_control_plane::store::provision::NewUser {
    tollgate_control_plane::store::provision::NewUser {
        id: id.into(),
        org_id: org.into(),
        name: id.into(),
        email: None,
    }
}

fn bulk_key(org: &str, project: Option<&str>, user: Option<&str>) -> NewKey {
    NewKey {
        name: "bulk".into(),
        org_id: org.into(),
        project_id: project.map(str::to_string),
        user_id: user.map(str::to_string),
    }
}

fn bulk_budget(
    scope: Scope,
    id: &str,
    period: Period,
    allow_unregistered: bool,
) -> tollgate_control_plane::store::provision::NewBulkBudget {
    tollgate_control_plane::store::provision::NewBulkBudget {
        budget: budget(scope, id, period, "Europe/Paris", "50"),
        allow_unregistered,
    }
}

store_test!(
    bulk_provisioning_is_all_or_nothing_with_every_bad_item_named,
    |store, url| {
        use tollgate_control_plane::store::provision::{Provision, ProvisionOutcome, Section};
        seed_tenants(&store).await;
        store.create_org("globex", "Globex", NOW).await.unwrap();
        store
            .create_budget(
                &budget(Scope::Org, "acme", Period::Monthly, "UTC", "100"),
                NOW,
            )
            .await
            .unwrap();
        // Spend already in the ledger: a budget created in bulk starts from it, as one alone does.
        let chain = principal("acme", None, Some("alice"), None);
        store
            .ingest(
                &[event("e1", "r1", 1, NOW - 60, &chain, "1.25")],
                NOW,
                &BudgetCache::default(),
            )
            .await
            .unwrap();
        let before = store.meta().await.unwrap();

        // One call with bad items in every section: all of them named, nothing written.
        let bad = Provision {
            users: vec![
                bulk_user("bob", "acme"),
                bulk_user("bob", "acme"),
                bulk_user("alice", "acme"),
                bulk_user("dave", "nope"),
            ],
            keys: vec![
                bulk_key("acme", Some("web"), Some("bob")),
                bulk_key("globex", Some("web"), None),
                bulk_key("globex", None, Some("bob")),
                bulk_key("nope", None, None),
                bulk_key("acme", None, Some("ghost")),
            ],
            budgets: vec![
                bulk_budget(Scope::User, "bob", Period::Daily, false),
                bulk_budget(Scope::User, "ghost", Period::Daily, false),
                bulk_budget(Scope::Org, "acme", Period::Monthly, false),
                bulk_budget(Scope::User, "bob", Period::Daily, false),
            ],
            revoke_keys: vec!["key_nope".into()],
        };
        let ProvisionOutcome::Refused(errors) = store.provision(&bad, NOW, false).await.unwrap()
        else {
            panic!("a call with bad items must be refused");
        };
        let got: Vec<(Section, usize, Option<&str>, u16)> = errors
            .iter()
            .map(|e| (e.section, e.index, e.field, e.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (Section::Users, 1, Some("id"), 409),
                (Section::Users, 2, Some("id"), 409),
                (Section::Users, 3, Some("org_id"), 422),
                (Section::Keys, 1, Some("project_id"), 422),
                (Section::Keys, 2, Some("user_id"), 422),
                (Section::Keys, 3, Some("org_id"), 422),
                (Section::Keys, 4, Some("user_id"), 422),
                (Section::Budgets, 1, Some("scope_id"), 422),
                (Section::Budgets, 2, Some("period"), 409),
                (Section::Budgets, 3, Some("period"), 409),
                (Section::RevokeKeys, 0, None, 404),
            ],
            "{errors:#?}"
        );
        assert!(
            errors[3].detail.contains("belongs to organisation"),
            "{}",
            errors[3].detail
        );
        assert_eq!(store.meta().await.unwrap(), before, "nothing written");
        assert!(store.get_user("bob").await.is_err());
        assert!(store.list_keys(None, true).await.unwrap().is_empty());

        // The good items alone: checked without writing, then applied in one transaction.
        let good = Provision {
            users: vec![bulk_user("bob", "acme"), bulk_user("carol", "globex")],
            keys: vec![
                bulk_key("acme", Some("web"), Some("bob")),
                bulk_key("globex", None, Some("carol")),
                bulk_key("acme", None, Some("alice")),
            ],
            budgets: vec![
                bulk_budget(Scope::User, "bob", Period::Daily, false),
                bulk_budget(Scope::User, "alice", Period::Total, false),
                bulk_budget(Scope::Project, "not-yet", Period::Weekly, true),
            ],
            revoke_keys: vec![],
        };
        assert!(matches!(
            store.provision(&good, NOW, true).await.unwrap(),
            ProvisionOutcome::Checked
        ));
        assert_eq!(store.meta().await.unwrap(), before);
        let ProvisionOutcome::Applied(done) = store.provision(&good, NOW, false).await.unwrap()
        else {
            panic!("a good call is applied");
        };
        let after = store.meta().await.unwrap();
        assert_eq!(
            after.version,
            before.version + 1,
            "one version for the whole call"
        );
        assert_eq!(after.keys_version, before.keys_version + 1);
        assert_eq!(after.budgets_version, before.budgets_version + 1);
        assert_eq!(
            done.users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            ["bob", "carol"]
        );
        assert_eq!(store.get_user("carol").await.unwrap().org_id, "globex");
        assert_eq!(done.keys.len(), 3);
        for (k, asked) in done.keys.iter().zip(&good.keys) {
            assert!(k.secret.starts_with("tg-") && k.secret.len() == 43);
            assert_eq!(k.key.prefix, k.secret[..11]);
            assert_eq!(k.key.user_id, asked.user_id);
            assert_eq!(store.get_key(&k.key.id).await.unwrap(), k.key);
        }
        let listed = store.list_keys(None, true).await.unwrap();
        assert!(!format!("{listed:?}").contains(&done.keys[0].secret[11..]));
        assert_eq!(done.budgets.len(), 3);
        let spend = store.spend_now(&done.budgets, NOW).await.unwrap();
        assert_eq!(
            spend[&done.budgets[1].id],
            d("1.25"),
            "back-filled from the ledger"
        );
        assert_eq!(spend[&done.budgets[0].id], Decimal::ZERO);

        // The keys are in the snapshot by their hashes, with their chains; the buckets written in
        // bulk are those migration 0003's back-fill writes.
        let built = Snapshots::new(
            store.clone(),
            Clock::fixed(NOW),
            Arc::new(Metrics::default()),
        )
        .rebuild()
        .await
        .unwrap();
        let snap: Snapshot = serde_json::from_slice(&built.bytes).unwrap();
        for k in &done.keys {
            let sha = tollgate_control_plane::keys::sha256_hex(k.secret.as_bytes());
            let entry = snap
                .keys
                .iter()
                .find(|e| e.sha256 == sha)
                .expect("key in snapshot");
            assert_eq!(entry.principal.key.as_deref(), Some(k.key.id.as_str()));
            assert_eq!(entry.principal.user, k.key.user_id);
            assert!(!String::from_utf8_lossy(&built.bytes).contains(&k.secret[3..]));
        }
        refill_key_buckets(&url).await.unwrap();
        let cold = Snapshots::new(
            store.clone(),
            Clock::fixed(NOW),
            Arc::new(Metrics::default()),
        );
        assert_eq!(cold.rebuild().await.unwrap().bytes, built.bytes);

        // Revocation in bulk, twice the same key, one already revoked: idempotent.
        store
            .revoke_key(&done.keys[2].key.id, NOW + 1)
            .await
            .unwrap();
        let revoke = Provision {
            revoke_keys: vec![
                done.keys[0].key.id.clone(),
                done.keys[2].key.id.clone(),
                done.keys[0].key.id.clone(),
            ],
            ..Provision::default()
        };
        let ProvisionOutcome::Applied(r) = store.provision(&revoke, NOW + 5, false).await.unwrap()
        else {
            panic!("revocation applies");
        };
        let times: Vec<_> = r
            .revoked_keys
            .iter()
            .map(|k| (k.id.clone(), k.revoked_at))
            .collect();
        assert_eq!(
            times,
            vec![
                (done.keys[0].key.id.clone(), Some(NOW + 5)),
                (done.keys[2].key.id.clone(), Some(NOW + 1)),
                (done.keys[0].key.id.clone(), Some(NOW + 5)),
            ]
        );
        let active = store.list_keys(None, false).await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].id, done.keys[1].key.id);
        let built = Snapshots::new(
            store.clone(),
            Clock::fixed(NOW),
            Arc::new(Metrics::default()),
        )
        .rebuild()
        .await
        .unwrap();
        let snap: Snapshot = serde_json::from_slice(&built.bytes).unwrap();
        assert_eq!(snap.keys.len(), 1);
        assert_eq!(
            snap.keys[0].sha256,
            tollgate_control_plane::keys::sha256_hex(done.keys[1].secret.as_bytes())
        );
    }
);

store_test!(api_tokens_are_hashed_scoped_and_revocable, |store| {
    seed_tenants(&store).await;
    let new = |role, org: Option<&str>| NewToken {
        name: "t".into(),
        role,
        org_id: org.map(str::to_string),
    };
    let manager = store
        .create_token(&new(TokenRole::Manager, Some("acme")), NOW)
        .await
        .unwrap();
    assert!(manager.secret.starts_with("tgt-") && manager.secret.len() == 44);
    assert!(manager.secret.starts_with(&manager.token.prefix));
    assert_eq!(manager.token.created_by, "local");
    let digest = tollgate_control_plane::keys::sha256_hex(manager.secret.as_bytes());
    let (found, stored) = store.live_token_by_secret(&digest).await.unwrap().unwrap();
    assert_eq!((found, stored), (manager.token.clone(), digest.clone()));
    // A role and an organisation go together; the organisation must exist.
    for (role, org, field) in [
        (TokenRole::Admin, Some("acme"), "org_id"),
        (TokenRole::Viewer, None, "org_id"),
        (TokenRole::Viewer, Some("nope"), "org_id"),
    ] {
        assert!(
            matches!(store.create_token(&new(role, org), NOW).await,
                Err(StoreError::Invalid { field: ref f, .. }) if f == field),
            "{role:?} {org:?}"
        );
    }
    let admin = store
        .create_token(&new(TokenRole::Admin, None), NOW)
        .await
        .unwrap();
    assert_eq!(
        store.list_tokens(Some("acme"), false).await.unwrap().len(),
        1
    );
    assert_eq!(store.list_tokens(None, false).await.unwrap().len(), 2);
    let revoked = store
        .revoke_token(&manager.token.id, NOW + 5)
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    // Revoking again keeps the first time and records nothing more.
    let again = store
        .revoke_token(&manager.token.id, NOW + 9)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(NOW + 5));
    assert!(store.live_token_by_secret(&digest).await.unwrap().is_none());
    assert_eq!(store.list_tokens(None, false).await.unwrap(), [admin.token]);
    assert_eq!(store.list_tokens(None, true).await.unwrap().len(), 2);
    assert!(matches!(
        store.revoke_token("tok_nope", NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    let q = AuditQuery {
        object_type: Some("token".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    let log = store.audit_log(&q).await.unwrap();
    assert_eq!(log.len(), 3, "two creations and one revocation: {log:?}");
    assert_eq!(
        log[0].before.as_ref().unwrap()["revoked_at"],
        serde_json::Value::Null
    );
    assert_eq!(log[0].after.as_ref().unwrap()["revoked_at"], NOW + 5);
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(&manager.secret[4..]) && !text.contains(&admin.secret[4..]));
});

store_test!(every_store_change_is_audited_in_its_transaction, |store| {
    use tollgate_control_plane::store::audit::{scope, Context};
    let ctx = Context {
        actor: "tok_x".into(),
        action: "POST /v1/test".into(),
        at: NOW + 1,
    };
    scope(ctx, async {
        seed_tenants(&store).await;
        let key = store
            .create_key(&bulk_key("acme", None, None), NOW)
            .await
            .unwrap();
        store.revoke_key(&key.key.id, NOW).await.unwrap();
        let b = store
            .create_budget(
                &budget(Scope::Project, "web", Period::Daily, "UTC", "5"),
                NOW,
            )
            .await
            .unwrap();
        let patch = BudgetPatch {
            limit_usd: Some(d("7")),
            ..BudgetPatch::default()
        };
        store.update_budget(&b.id, &patch, NOW).await.unwrap();
        store.delete_budget(&b.id).await.unwrap();
        store.rename_org("acme", "ACME").await.unwrap();
        store.create_org("gone", "Gone", NOW).await.unwrap();
        store.delete_org("gone").await.unwrap();
        // A change refused by the database leaves no row.
        assert!(store.create_org("acme", "Again", NOW).await.is_err());
        assert!(store.delete_budget(&b.id).await.is_err());
        store
            .add_price_revisions(
                &[NewRevision {
                    model: "m".into(),
                    effective_from: 0,
                    price: None,
                    source: "test".into(),
                }],
                NOW,
            )
            .await
            .unwrap();
    })
    .await;
    let all = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    let log = store.audit_log(&all).await.unwrap();
    let seen: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|e| (e.object_type.as_str(), e.org_id.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        seen,
        [
            ("org", "acme"),
            ("project", "acme"),
            ("user", "acme"),
            ("key", "acme"),
            ("key", "acme"),
            ("budget", "acme"),
            ("budget", "acme"),
            ("budget", "acme"),
            ("org", "acme"),
            ("org", "gone"),
            ("org", "gone"),
            ("price", "-"),
        ]
    );
    assert!(log
        .iter()
        .all(|e| e.actor == "tok_x" && e.action == "POST /v1/test" && e.at == NOW + 1));
    assert_eq!(log[0].after.as_ref().unwrap()["revisions"][0]["model"], "m");
    let budget_update = &log[5];
    assert_eq!(budget_update.before.as_ref().unwrap()["limit_usd"], "5");
    assert_eq!(budget_update.after.as_ref().unwrap()["limit_usd"], "7");
    let deleted = &log[4];
    assert!(deleted.after.is_none() && deleted.before.as_ref().unwrap()["limit_usd"] == "7");
    // Filters and pages.
    let acme = AuditQuery {
        org_id: Some("acme".into()),
        limit: 4,
        ..AuditQuery::default()
    };
    let first = store.audit_log(&acme).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = store
        .audit_log(&AuditQuery {
            before_id: Some(first[3].id),
            limit: 100,
            ..acme.clone()
        })
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 9);
    assert!(rest.iter().all(|e| e.id < first[3].id));
    let keys = AuditQuery {
        object_type: Some("key".into()),
        object_id: Some(key_id(&log)),
        limit: 100,
        ..AuditQuery::default()
    };
    assert_eq!(store.audit_log(&keys).await.unwrap().len(), 2);
    // Outside a request the actor is `local`.
    store.create_org("later", "Later", NOW).await.unwrap();
    let latest = &store.audit_log(&all).await.unwrap()[0];
    assert_eq!(
        (latest.actor.as_str(), latest.action.as_str()),
        ("local", "store")
    );
});

fn key_id(log: &[AuditEntry]) -> String {
    log.iter()
        .find(|e| e.object_type == "key")
        .unwrap()
        .object_id
        .clone()
}

// A request whose client hangs up is dropped wherever it is waiting, a transaction's `BEGIN`
// included. sqlx 0.8 then handed the connection back to its pool still inside that
// transaction: on SQLite a reader kept answering from the moment of the `BEGIN` (e2e `faults`
// saw every reporter enrolled after an Envoy restart refused, the usage queue held back), and
// the writer would have kept every later write uncommitted. Each round drops a snapshot build
// (a read transaction) and a write transaction part way, then every reader must see what the
// writer committed after them.
store_test!(
    a_transaction_dropped_part_way_leaves_no_connection_inside_it,
    |store| {
        use std::time::Duration;
        let (state, _clock) = state(store.clone()).await;
        let mut made_orgs = Vec::new();
        for round in 0..300u64 {
            let wait = Duration::from_micros(round % 30 * 20);
            let _ = tokio::time::timeout(wait, state.snapshots.rebuild()).await;
            let org = format!("org{round}");
            if let Ok(made) = tokio::time::timeout(wait, store.create_org(&org, "Org", NOW)).await {
                made.unwrap();
                made_orgs.push(org);
            }
            let enrolled = store.enroll_reporter(Some("n"), NOW).await.unwrap();
            let sha = tollgate_control_plane::keys::sha256_hex(enrolled.secret.as_bytes());
            // More lookups at once than the read pool has connections, so each reader answers.
            let found =
                futures_util::future::join_all((0..6).map(|_| store.reporter_by_secret(&sha)))
                    .await;
            for f in found {
                assert_eq!(
                    f.unwrap().as_deref(),
                    Some(enrolled.reporter.as_str()),
                    "round {round}: a reader does not see a reporter committed after it"
                );
            }
        }
        // The writer still commits: every org whose creation finished is there for a reader, and
        // a new one can be made.
        assert!(!made_orgs.is_empty(), "no write finished inside its time");
        for org in made_orgs {
            assert_eq!(store.get_org(&org).await.unwrap().name, "Org", "{org}");
        }
        store.create_org("after", "After", NOW).await.unwrap();
        assert_eq!(store.get_org("after").await.unwrap().name, "After");
    }
);
