//! The spend rollup (`store/rollup.rs`) against the ledger it summarises: every report the
//! rollup answers must equal, field for field, the one summed from the ledger rows
//! ([`Store::spend_from_ledger`]), on SQLite and on PostgreSQL (`store_test!`), whatever the
//! zone, and the rollup of rows stored before migration 0011 is built exactly once.
//!
//! Run: `cargo test -p tollgate-control-plane --test spend_rollup`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::store::spend::{GroupBy, SpendQuery};
use tollgate_control_plane::store::Store;
use tollgate_control_plane::timezone::Zone;
use tollgate_core::budget::Scope;
use tollgate_core::event::{Charge, Denied, UnchargedReason, UsageEvent};
use tollgate_testkit::{store_test, with_connection};

const ORGS: [&str; 3] = ["acme", "globex", "initech"];
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "o3"];
/// Costs of varied scales, as prices per token make them.
const COSTS: [&str; 6] = [
    "0.000123",
    "1.5",
    "0.0000000007",
    "0.02",
    "12.345678901234",
    "0",
];

/// A small deterministic generator (the test must replay the same way on both backends).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Event `i`: one of the orgs, models, keys and costs, at a time from ten days before
/// `TODAY` to two days after.
fn random_event(r: &mut Lcg, i: u64) -> UsageEvent {
    let org = ORGS[r.next(3) as usize];
    let key = format!("{org}-k{}", r.next(4));
    let p = principal(org, Some("p"), Some(&format!("{org}-u")), Some(&key));
    let ts = TODAY - 10 * DAY + r.next(12 * DAY as u64) as i64;
    let mut e = event(
        &format!("e{i}"),
        "r",
        i + 1,
        ts,
        &p,
        COSTS[r.next(6) as usize],
    );
    e.model = MODELS[r.next(4) as usize].into();
    e.usage.input_uncached = r.next(5_000);
    e.usage.cache_read = r.next(100);
    e.usage.output = r.next(2_000);
    if r.next(10) == 0 {
        // A denial record: no spend, whatever it counts.
        e.usage = Default::default();
        e.cost = Default::default();
        e.charge = Charge::Zero;
        e.uncharged = Some(UnchargedReason::Denied);
        e.status = 429;
        e.denied = Some(Denied {
            budget: format!("{org}-daily"),
            requests: 3,
            first_ts: ts - 1,
        });
    }
    e
}

/// Ingests 600 random events in batches, resending some of each earlier batch (duplicates,
/// stored once) and repeating some ids inside a batch.
async fn ingest_random(store: &Store, seed: u64, first_id: u64) -> Vec<UsageEvent> {
    let cache = BudgetCache::default();
    let mut r = Lcg(seed);
    let all: Vec<UsageEvent> = (first_id..first_id + 600)
        .map(|i| random_event(&mut r, i))
        .collect();
    let mut last: &[UsageEvent] = &[];
    for batch in all.chunks(75) {
        let mut b: Vec<UsageEvent> = batch.to_vec();
        b.extend(last.iter().step_by(7).cloned());
        b.push(batch[0].clone());
        let out = store.ingest(&b, NOW, &cache).await.unwrap();
        assert_eq!(out.accepted, batch.len() as u64);
        assert_eq!(out.conflict, 0);
        last = batch;
    }
    all
}

/// Local midnight of `TODAY - days` (UTC date) in `tz`.
fn midnight(tz: &str, days: i64) -> i64 {
    use chrono::TimeZone;
    let zone = Zone::parse(tz).unwrap();
    let date = chrono::DateTime::from_timestamp(TODAY - days * DAY, 0)
        .unwrap()
        .date_naive();
    zone.0
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp()
}

fn query(tz: &str, from: i64, to: i64, group_by: &[GroupBy]) -> SpendQuery {
    SpendQuery {
        scope: None,
        model: None,
        from,
        to,
        group_by: group_by.to_vec(),
        zone: Zone::parse(tz).unwrap(),
        org: None,
    }
}

/// The reports the rollup answers, as the console and the API ask them.
fn rollup_queries() -> Vec<SpendQuery> {
    use GroupBy::*;
    let mut qs = Vec::new();
    for tz in ["UTC", "Asia/Kathmandu", "America/St_Johns"] {
        let (from, to) = (midnight(tz, 11), midnight(tz, -3));
        qs.push(query(tz, from, to, &[Day, Model]));
        qs.push(query(tz, from, to, &[Hour, Model]));
        qs.push(query(tz, from, to, &[Day, Org]));
        qs.push(SpendQuery {
            model: Some("o3".into()),
            ..query(tz, midnight(tz, 6), to, &[Hour, Model])
        });
        qs.push(SpendQuery {
            org: Some("globex".into()),
            ..query(tz, from, to, &[Day, Model])
        });
        qs.push(SpendQuery {
            scope: Some((Scope::Org, "acme".into())),
            ..query(tz, midnight(tz, 4), midnight(tz, 2), &[Model])
        });
    }
    qs.push(query("UTC", TODAY - 20 * DAY, TODAY + 5 * DAY, &[]));
    qs.push(query(
        "Asia/Kathmandu",
        TODAY - 3 * DAY + 900,
        TODAY - DAY - 1800,
        &[GroupBy::Org, GroupBy::Hour, GroupBy::Model],
    ));
    qs
}

/// Reports only the ledger can answer.
fn ledger_queries() -> Vec<SpendQuery> {
    use GroupBy::*;
    let tz = "Asia/Kathmandu";
    let (from, to) = (midnight(tz, 11), midnight(tz, -3));
    vec![
        // Not on quarter hours.
        query(tz, from + 1, to, &[Day, Model]),
        query("UTC", from, to - 7, &[Hour]),
        // Stacked by key, filtered by user.
        query(tz, from, to, &[Day, Key]),
        SpendQuery {
            scope: Some((Scope::User, "acme-u".into())),
            ..query(tz, from, to, &[Day, Model])
        },
    ]
}

/// Every query's report from `spend` equals the ledger's, and is not empty.
async fn assert_same(store: &Store, qs: &[SpendQuery]) {
    for q in qs {
        let via = store.spend(q).await.unwrap();
        let ledger = store.spend_from_ledger(q).await.unwrap();
        assert_eq!(via, ledger, "{q:?}");
        assert!(ledger.requests > 0, "{q:?} found nothing");
    }
}

/// Runs `sql` behind the store's back.
async fn execute(url: &str, sql: &str) {
    with_connection!(url, |conn, pg| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map(|_| ())
    })
    .unwrap();
}

/// The rollup's rows, costs as text: what a rebuild must reproduce exactly.
async fn rollup_rows(url: &str) -> Vec<(i64, String, String, i64, i64, i64, String)> {
    with_connection!(url, |conn, pg| {
        sqlx::query_as(
            "SELECT bucket, org_id, model, requests, input_tokens, output_tokens, \
             CAST(cost_usd AS TEXT) FROM spend_rollup ORDER BY bucket, org_id, model",
        )
        .fetch_all(&mut conn)
        .await
    })
    .unwrap()
}

store_test!(rollup_reports_equal_ledger_reports, |store, url| {
    ingest_random(&store, 7, 0).await;
    let rollup = rollup_queries();
    for q in &rollup {
        assert!(q.rollup_shaped(), "{q:?}");
    }
    assert_same(&store, &rollup).await;
    let ledger = ledger_queries();
    for q in &ledger {
        assert!(!q.rollup_shaped(), "{q:?}");
    }
    assert_same(&store, &ledger).await;

    // Denial records and duplicates are not in the rollup: its requests are the ledger's
    // metered rows.
    let (metered, rolled): (i64, i64) = with_connection!(&url, |conn, pg| {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM usage_events WHERE denied_by IS NULL), \
             (SELECT CAST(sum(requests) AS BIGINT) FROM spend_rollup)",
        )
        .fetch_one(&mut conn)
        .await
    })
    .unwrap();
    assert_eq!(metered, rolled);
    assert!(metered > 400 && metered < 600, "{metered}");

    // The rollup answered: with the ledger gone behind the store's back, its reports stay.
    let before: Vec<_> = {
        let mut v = Vec::new();
        for q in &rollup {
            v.push(store.spend(q).await.unwrap());
        }
        v
    };
    execute(&url, "DELETE FROM usage_events").await;
    for (q, b) in rollup.iter().zip(&before) {
        assert_eq!(&store.spend(q).await.unwrap(), b, "{q:?}");
    }
    assert_eq!(
        store.spend_from_ledger(&rollup[0]).await.unwrap().requests,
        0
    );
    assert_eq!(store.spend(&ledger[0]).await.unwrap().requests, 0);
});

// A zone whose offset was not a whole number of quarter hours (Monrovia, -0:44:30 until 1972):
// a bucket there spans two local days, so the report is read from the ledger.
store_test!(rollup_is_not_used_across_odd_offsets, |store| {
    let cache = BudgetCache::default();
    let p = principal("acme", None, None, Some("k"));
    // 1971-06-01 00:00 UTC; local midnight is 00:44:30 UTC, inside the bucket 00:30–00:45.
    let day = 44_582_400;
    let events = [
        event("a", "r", 1, day + 44 * 60 + 20, &p, "1"),
        event("b", "r", 2, day + 44 * 60 + 40, &p, "2"),
        event("c", "r", 3, day + 3600, &p, "4"),
    ];
    store.ingest(&events, NOW, &cache).await.unwrap();
    let q = query(
        "Africa/Monrovia",
        day - DAY,
        day + DAY,
        &[GroupBy::Day, GroupBy::Model],
    );
    assert!(q.rollup_shaped());
    let r = store.spend(&q).await.unwrap();
    assert_eq!(r, store.spend_from_ledger(&q).await.unwrap());
    let days: Vec<_> = r
        .rows
        .iter()
        .map(|r| (r.group["day"].clone().unwrap(), r.cost_usd))
        .collect();
    assert_eq!(
        days,
        [
            ("1971-05-31".to_string(), d("1")),
            ("1971-06-01".to_string(), d("6"))
        ]
    );
});

// Rows stored before migration 0011: `migrate` sums them into the rollup once, exactly as
// ingestion would have; a second `migrate` adds nothing; batches after it add their rows.
store_test!(rollup_is_built_once_from_an_older_ledger, |store, url| {
    let first = ingest_random(&store, 11, 0).await;
    // And times far apart (the build steps from one stored time to the next).
    let p = principal("acme", None, None, Some("k"));
    let far = [
        event("far-1", "r2", 1, 44_582_400, &p, "0.25"),
        event("far-2", "r2", 2, 44_582_400 + 899, &p, "0.5"),
        event("far-3", "r2", 3, TODAY + 400 * DAY, &p, "1"),
    ];
    store
        .ingest(&far, NOW, &BudgetCache::default())
        .await
        .unwrap();
    let kept = rollup_rows(&url).await;
    assert!(!kept.is_empty());
    // The state migration 0011 leaves on a database with a ledger.
    execute(&url, "DELETE FROM spend_rollup").await;
    execute(&url, "UPDATE meta SET spend_rollup_built = FALSE").await;
    assert!(!store.spend_rollup_built().await.unwrap());
    // Until it is built, reports come from the ledger.
    assert_same(&store, &rollup_queries()).await;
    store.migrate().await.unwrap();
    assert!(store.spend_rollup_built().await.unwrap());
    assert_eq!(rollup_rows(&url).await, kept);
    assert_eq!(kept.first().map(|r| (r.0, r.3)), Some((44_582_400, 2)));
    store.migrate().await.unwrap();
    assert!(!store.build_spend_rollup_if_needed().await.unwrap());
    assert_eq!(rollup_rows(&url).await, kept);
    assert_same(&store, &rollup_queries()).await;
    // Later batches keep it; old events resent add nothing.
    ingest_random(&store, 12, 600).await;
    let resent = store
        .ingest(&first[..50], NOW, &BudgetCache::default())
        .await
        .unwrap();
    assert_eq!((resent.accepted, resent.duplicate), (0, 50));
    assert_same(&store, &rollup_queries()).await;
    let grown = rollup_rows(&url).await;
    store.rebuild_spend_rollup().await.unwrap();
    assert_eq!(rollup_rows(&url).await, grown);
});
