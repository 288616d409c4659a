//! Alerts (issue 16 part 3): subscriptions, the outbox filled by ingestion, and delivery to a
//! real HTTP receiver on 127.0.0.1. Every body runs on SQLite and on PostgreSQL
//! (`store_test!`); the replica test runs two stores on one database.
//!
//! Run: `cargo test -p tollgate-control-plane --test alerts -- --nocapture` (the latency from
//! a batch's commit to the receiver is printed as `alert latency`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::wait::eventually;
use common::*;
use tollgate_control_plane::alerts::deliveries::{Delivery, DeliveryQuery};
use tollgate_control_plane::alerts::dispatch::Dispatcher;
use tollgate_control_plane::alerts::signature::{self, VerifyError};
use tollgate_control_plane::alerts::webhooks::{NewWebhook, WebhookPatch};
use tollgate_control_plane::alerts::{Config, EventClass, Format};
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::store::audit::AuditQuery;
use tollgate_control_plane::store::budgets::NewBudget;
use tollgate_control_plane::store::{Store, StoreError};
use tollgate_control_plane::timezone::Zone;
use tollgate_core::budget::{Mode, Period, Scope};
use tollgate_testkit::webhook::{receiver, serve, Inbox};
use tollgate_testkit::{store_test, with_connection};

/// Fast retries for tests.
fn config() -> Config {
    Config {
        poll: Duration::from_millis(200),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        timeout: Duration::from_secs(2),
        lease: Duration::from_secs(5),
        // The receivers listen on loopback (refused by default: see the test below).
        allow_targets: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    }
}

/// Starts a dispatcher over `store`; abort the handle to stop it.
fn dispatcher(store: &Store) -> tokio::task::JoinHandle<()> {
    dispatcher_with(store, config())
}

fn dispatcher_with(store: &Store, config: Config) -> tokio::task::JoinHandle<()> {
    let d = Dispatcher::new(store.clone(), Clock::fixed(NOW), config).unwrap();
    tokio::spawn(d.run())
}

/// Org `acme` with users `u0`…`u{users-1}`; a monthly org budget of $100 with a soft
/// limit of $90, and a daily $10 budget per user. Returns the org budget's id.
async fn seed(store: &Store, users: usize) -> String {
    store.create_org("acme", "Acme", NOW).await.unwrap();
    store.create_org("other", "Other", NOW).await.unwrap();
    let budget = |scope, id: &str, period, limit: &str, soft: Option<&str>| NewBudget {
        scope,
        scope_id: id.into(),
        period,
        timezone: Zone::parse("UTC").unwrap(),
        limit_usd: d(limit),
        soft_limit_usd: soft.map(d),
        mode: Mode::Enforce,
    };
    for i in 0..users {
        let u = format!("u{i}");
        store.create_user(&u, "acme", "U", None, NOW).await.unwrap();
        store
            .create_budget(&budget(Scope::User, &u, Period::Daily, "10", None), NOW)
            .await
            .unwrap();
    }
    store
        .create_budget(
            &budget(Scope::Org, "acme", Period::Monthly, "100", Some("90")),
            NOW,
        )
        .await
        .unwrap()
        .id
}

fn webhook(org: Option<&str>, url: &str) -> NewWebhook {
    NewWebhook {
        org_id: org.map(str::to_string),
        name: "ops".into(),
        url: url.into(),
        enabled: true,
        ..NewWebhook::default()
    }
}

/// Ingests one event of `usd` charged to org acme (and user `user` when given).
async fn spend(
    store: &Store,
    cache: &BudgetCache,
    id: &str,
    seq: u64,
    user: Option<&str>,
    usd: &str,
) {
    let p = principal("acme", None, user, None);
    let e = event(id, "envoy-a", seq, NOW - 60, &p, usd);
    let out = store.ingest(&[e], NOW, cache).await.unwrap();
    assert_eq!(out.accepted, 1);
}

async fn deliveries(store: &Store, kind: Option<&str>) -> Vec<Delivery> {
    store
        .list_deliveries(&DeliveryQuery {
            kind: kind.map(str::to_string),
            limit: 1000,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap()
}

/// The event rows of `kind`.
async fn events(url: &str, kind: &str) -> i64 {
    with_connection!(url, |conn, pg| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM alert_events WHERE kind = $1")
            .bind(kind)
            .fetch_one(&mut conn)
            .await
    })
    .unwrap()
}

fn kinds(list: &[Delivery]) -> Vec<String> {
    let mut k: Vec<String> = list.iter().map(|d| d.kind.clone()).collect();
    k.sort();
    k
}

store_test!(subscriptions_are_audited_and_keep_their_secret, |store| {
    seed(&store, 0).await;
    let created = store
        .create_webhook(
            &webhook(Some("acme"), "https://hooks.example/x?token=q"),
            NOW,
        )
        .await
        .unwrap();
    let secret = created.secret.clone();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 46,
        "{secret}"
    );
    let w = created.webhook.clone();
    // Defaults: every budget event, not the fleet's; 50/80/95/100.
    assert_eq!(w.thresholds, BTreeSet::from([50, 80, 95, 100]));
    assert!(!w.events.contains(&EventClass::FleetStale));
    assert_eq!(w.events.len(), 5);
    assert!(!format!("{created:?}").contains(&secret));
    assert_eq!(store.get_webhook(&w.id).await.unwrap(), w);
    assert_eq!(
        store.list_webhooks(Some("acme")).await.unwrap(),
        std::slice::from_ref(&w)
    );
    assert!(store.list_webhooks(Some("other")).await.unwrap().is_empty());

    let patch = WebhookPatch {
        thresholds: Some(BTreeSet::from([75])),
        format: Some(Format::Slack),
        ..WebhookPatch::default()
    };
    let changed = store.update_webhook(&w.id, &patch, NOW + 1).await.unwrap();
    assert_eq!(changed.thresholds, BTreeSet::from([75]));
    assert_eq!(changed.format, Format::Slack);
    store.delete_webhook(&w.id).await.unwrap();
    assert!(matches!(
        store.get_webhook(&w.id).await,
        Err(StoreError::NotFound { .. })
    ));

    // Created, changed, deleted: three audit rows, none with the secret.
    let audit = store
        .audit_log(&AuditQuery {
            object_type: Some("webhook".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|e| e.org_id.as_deref() == Some("acme")));
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&secret[6..]), "{text}");

    // Refused: not http(s), credentials in the URL, the fleet for an org, a 0 % threshold,
    // an org that does not exist.
    for (bad, field) in [
        (webhook(None, "ftp://x/y"), "url"),
        (webhook(None, "http://user:pw@x/y"), "url"),
        (
            NewWebhook {
                events: BTreeSet::from([EventClass::FleetStale]),
                ..webhook(Some("acme"), "http://x/")
            },
            "events",
        ),
        (
            NewWebhook {
                thresholds: BTreeSet::from([0]),
                ..webhook(None, "http://x/")
            },
            "thresholds",
        ),
        (webhook(Some("nobody"), "http://x/"), "org_id"),
    ] {
        match store.create_webhook(&bad, NOW).await {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
});

store_test!(each_crossing_fires_once, |store, url| {
    let org_budget = seed(&store, 1).await;
    let cache = BudgetCache::default();
    // Spend before the subscription exists.
    spend(&store, &cache, "e0", 1, None, "5").await;
    store
        .create_webhook(&webhook(Some("acme"), "http://127.0.0.1:9/none"), NOW)
        .await
        .unwrap();
    // Org budget ($100): 5 → 30 → 55 (50 %) → 65 → 85 (80 %).
    for (i, usd) in ["25", "25", "10", "20"].into_iter().enumerate() {
        spend(
            &store,
            &cache,
            &format!("e{}", i + 1),
            i as u64 + 2,
            None,
            usd,
        )
        .await;
    }
    assert_eq!(
        kinds(&deliveries(&store, None).await),
        ["threshold_50", "threshold_80"]
    );
    // One batch over 90 (soft) and 95; then one reaching exactly 100 (the limit): the 100 %
    // threshold, not yet the hard limit (nothing was refused).
    spend(&store, &cache, "e5", 6, None, "11").await;
    spend(&store, &cache, "e6", 7, None, "4").await;
    let spend_kinds = [
        "soft_limit",
        "threshold_100",
        "threshold_50",
        "threshold_80",
        "threshold_95",
    ];
    assert_eq!(kinds(&deliveries(&store, None).await), spend_kinds);
    // Past the limit, nothing more; a resend of a stored event adds nothing either.
    spend(&store, &cache, "e7", 8, None, "50").await;
    let p = principal("acme", None, None, None);
    let again = event("e3", "envoy-a", 4, NOW - 60, &p, "10");
    assert_eq!(
        store.ingest(&[again], NOW, &cache).await.unwrap().duplicate,
        1
    );
    assert_eq!(deliveries(&store, None).await.len(), 5);

    // The first refusal of the window is the hard limit, with when it happened; later denial
    // records of the window (another reporter's too), a resend, nothing more.
    let refused = |id: &str, seq, first| denial(id, seq, NOW - 30, &p, &org_budget, 3, first);
    let out = store
        .ingest(&[refused("d1", 1, NOW - 40)], NOW, &cache)
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    let hard = deliveries(&store, Some("hard_limit")).await;
    assert_eq!(hard.len(), 1);
    let payload = with_connection!(&url, |conn, pg| {
        sqlx::query_scalar::<_, String>("SELECT payload FROM alert_events WHERE kind = $1")
            .bind("hard_limit")
            .fetch_one(&mut conn)
            .await
    })
    .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["budget"]["id"], org_budget.as_str());
    assert_eq!(payload["first_refused_at"], NOW - 40);
    assert_eq!(payload["spent_usd"], "150");
    assert_eq!(payload["utilization_percent"], "150");
    let mut other = refused("d2", 1, NOW - 35);
    other.reporter = "envoy-b".into();
    store
        .ingest(&[refused("d1", 1, NOW - 40), other], NOW, &cache)
        .await
        .unwrap();
    assert_eq!(deliveries(&store, None).await.len(), 6);
    for kind in ["threshold_50", "threshold_80", "hard_limit"] {
        assert_eq!(events(&url, kind).await, 1, "{kind}");
    }

    // A user's daily $10 budget: one batch jumping over 50, 80 and 95 fires each once (the
    // org budget, past its limit, nothing).
    spend(&store, &cache, "u1", 9, Some("u0"), "9.6").await;
    let user: Vec<Delivery> = deliveries(&store, None)
        .await
        .into_iter()
        .filter(|d| d.id > 6)
        .collect();
    assert_eq!(
        kinds(&user),
        ["threshold_50", "threshold_80", "threshold_95"]
    );
    assert!(user
        .iter()
        .all(|d| d.status == "pending" && d.attempts == 0));

    // A subscription of another organisation never hears of acme's budgets.
    let n = deliveries(&store, None).await.len();
    store
        .create_webhook(&webhook(Some("other"), "http://127.0.0.1:9/other"), NOW)
        .await
        .unwrap();
    spend(&store, &cache, "u2", 10, Some("u0"), "0.5").await;
    assert_eq!(
        deliveries(&store, None).await.len(),
        n + 1,
        "100 %, to acme's only"
    );
});

store_test!(alerts_arrive_once_signed_and_fast, |store| {
    seed(&store, 0).await;
    let (url, inbox, server) = receiver(0).await;
    let created = store
        .create_webhook(&webhook(Some("acme"), &url), NOW)
        .await
        .unwrap();
    let cache = BudgetCache::default();
    let task = dispatcher(&store);
    // 0 → 30 → 55 (50 %) → 70 → 85 (80 %): two alerts, each right after its batch.
    let mut latencies = Vec::new();
    for (i, usd) in ["30", "25", "15", "15"].into_iter().enumerate() {
        let want = inbox.received().len() + usize::from(i == 1 || i == 3);
        spend(&store, &cache, &format!("e{i}"), i as u64 + 1, None, usd).await;
        let committed = Instant::now();
        eventually(5, "the alert", || async { inbox.received().len() >= want }).await;
        if i == 1 || i == 3 {
            latencies.push(inbox.received().last().unwrap().at - committed);
        }
    }
    eprintln!("alert latency (commit → receiver): {latencies:?}");
    // Nothing more comes (two slow polls later).
    tokio::time::sleep(Duration::from_millis(450)).await;
    let got = inbox.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["threshold_50", "threshold_80"]
    );
    let body = got[1].json();
    assert_eq!(body["event"], "threshold_80");
    assert_eq!(body["threshold_percent"], 80);
    assert_eq!(body["spent_usd"], "85");
    assert_eq!(body["previous_spent_usd"], "70");
    assert_eq!(body["budget"]["org_id"], "acme");
    assert_eq!(body["webhook_id"], created.webhook.id.as_str());
    // The signature verifies with the secret, and not with another one or another body.
    let now = tollgate_control_plane::store::unix_now();
    for r in &got {
        signature::verify(&created.secret, &r.signature, &r.body, now, 300).unwrap();
        assert_eq!(
            signature::verify("whsec_wrong", &r.signature, &r.body, now, 300),
            Err(VerifyError::Mismatch)
        );
        let mut tampered = r.body.clone();
        tampered.push(b' ');
        assert_eq!(
            signature::verify(&created.secret, &r.signature, &tampered, now, 300),
            Err(VerifyError::Mismatch)
        );
    }
    let log = deliveries(&store, None).await;
    assert!(log
        .iter()
        .all(|d| d.status == "delivered" && d.attempts == 1 && d.last_status == Some(204)));
    task.abort();
    server.abort();
});

store_test!(a_receiver_down_for_a_while_gets_the_alert_once, |store| {
    seed(&store, 0).await;
    let cache = BudgetCache::default();
    // 1. Answering 500 three times, then 204.
    let (url, inbox, server) = receiver(3).await;
    store
        .create_webhook(
            &NewWebhook {
                thresholds: BTreeSet::from([50]),
                ..webhook(Some("acme"), &url)
            },
            NOW,
        )
        .await
        .unwrap();
    // 2. Refusing connections: a port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused_url = format!("http://127.0.0.1:{port}/hook");
    store
        .create_webhook(
            &NewWebhook {
                thresholds: BTreeSet::from([50]),
                ..webhook(Some("acme"), &refused_url)
            },
            NOW,
        )
        .await
        .unwrap();
    let task = dispatcher(&store);
    spend(&store, &cache, "e0", 1, None, "60").await;
    eventually(10, "the 500s are retried until delivered", || async {
        inbox.received().len() == 1
    })
    .await;
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 4);
    // The refusing one has failed a few times, with the cause and without its URL.
    eventually(10, "refused attempts recorded", || async {
        deliveries(&store, None)
            .await
            .iter()
            .any(|d| d.status == "pending" && d.attempts >= 2)
    })
    .await;
    let failing = deliveries(&store, None)
        .await
        .into_iter()
        .find(|d| d.status == "pending")
        .unwrap();
    let error = failing.last_error.clone().unwrap();
    assert!(!error.contains(&port.to_string()), "{error}");
    assert_eq!(failing.last_status, None);
    // Up again: it arrives within the backoff (at most 400 ms here) plus a poll.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let late = Inbox::default();
    let up = Instant::now();
    let server2 = serve(listener, late.clone());
    eventually(10, "the refused alert once the receiver is up", || async {
        late.received().len() == 1
    })
    .await;
    eprintln!("receiver back up → alert: {:?}", late.received()[0].at - up);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(late.received().len(), 1);
    assert_eq!(inbox.received().len(), 1);
    let log = deliveries(&store, None).await;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d.status == "delivered"), "{log:?}");
    task.abort();
    server.abort();
    server2.abort();
});

store_test!(slack_format_is_an_incoming_webhook_message, |store| {
    seed(&store, 0).await;
    let (url, inbox, server) = receiver(0).await;
    store
        .create_webhook(
            &NewWebhook {
                format: Format::Slack,
                events: BTreeSet::from([EventClass::Threshold]),
                thresholds: BTreeSet::from([80]),
                ..webhook(Some("acme"), &url)
            },
            NOW,
        )
        .await
        .unwrap();
    let task = dispatcher(&store);
    spend(&store, &BudgetCache::default(), "e0", 1, None, "81.5").await;
    eventually(5, "the slack alert", || async {
        inbox.received().len() == 1
    })
    .await;
    let body = inbox.received()[0].json();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("crossed 80%"), "{text}");
    assert!(text.contains("$81.5 spent"), "{text}");
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(body["blocks"][0]["text"]["text"], text);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    task.abort();
    server.abort();
});

store_test!(two_replicas_fire_and_send_once, |store, url| {
    const USERS: usize = 6;
    seed(&store, USERS).await;
    let (hook_url, inbox, server) = receiver(0).await;
    store
        .create_webhook(
            &NewWebhook {
                thresholds: BTreeSet::from([50]),
                events: BTreeSet::from([EventClass::Threshold]),
                ..webhook(Some("acme"), &hook_url)
            },
            NOW,
        )
        .await
        .unwrap();
    // A second control plane on the same database, with its own caches.
    let other = Store::connect(&url).await.unwrap();
    let (cache_a, cache_b) = (BudgetCache::default(), BudgetCache::default());
    // Each user's $10 budget: $4 first, then both replicas at once add $1.5 each (55 % or
    // 70 % after both): 50 % is crossed by exactly one of the two batches.
    for i in 0..USERS {
        let u = format!("u{i}");
        let p = principal("acme", None, Some(&u), None);
        let seq = 10 * i as u64;
        let first = event(&format!("{u}-0"), "envoy-a", seq + 1, NOW - 60, &p, "4");
        store.ingest(&[first], NOW, &cache_a).await.unwrap();
        let a = event(&format!("{u}-a"), "envoy-a", seq + 2, NOW - 60, &p, "1.5");
        let b = event(&format!("{u}-b"), "envoy-b", seq + 1, NOW - 60, &p, "1.5");
        let (ra, rb) = tokio::join!(
            store.ingest(std::slice::from_ref(&a), NOW, &cache_a),
            other.ingest(std::slice::from_ref(&b), NOW, &cache_b)
        );
        assert_eq!(ra.unwrap().accepted + rb.unwrap().accepted, 2);
    }
    assert_eq!(events(&url, "threshold_50").await, USERS as i64);
    assert_eq!(deliveries(&store, None).await.len(), USERS);
    // Both replicas send at once, to a slow receiver (deliveries stay in flight while the
    // other replica claims): each delivery goes out once.
    inbox.delay_ms.store(300, Ordering::SeqCst);
    let (ta, tb) = (dispatcher(&store), dispatcher(&other));
    eventually(10, "every alert", || async {
        inbox.received().len() >= USERS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(inbox.received().len(), USERS);
    let ids: BTreeSet<i64> = inbox
        .received()
        .iter()
        .map(|r| r.json()["delivery_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), USERS);
    ta.abort();
    tb.abort();
    server.abort();
    other.close().await;
});

store_test!(
    the_sweep_fires_resets_stale_reporters_and_prices_once,
    |store, url| {
        seed(&store, 1).await;
        store
            .create_webhook(&webhook(None, "http://127.0.0.1:9/admin"), NOW)
            .await
            .unwrap();
        // The user's daily window began at TODAY: a sweep covering that instant fires it once.
        let swept = store.record_window_resets(TODAY - 1, NOW).await.unwrap();
        assert!(swept.fired);
        assert_eq!(
            swept.next_boundary,
            Some(TODAY + DAY),
            "the daily budget's next reset"
        );
        assert!(
            !store
                .record_window_resets(TODAY - 1, NOW)
                .await
                .unwrap()
                .fired
        );
        assert!(!store.record_window_resets(TODAY, NOW).await.unwrap().fired);
        assert_eq!(
            events(&url, "window_reset").await,
            1,
            "daily only: the monthly began on the 1st"
        );
        // A reporter last seen at NOW - 60 is stale (N = 30 s) for a sweep from NOW - 60 on.
        // Another, with no usage since then either, polled its snapshot at NOW - 10: it is
        // alive (idle, not stale) until 30 s after that poll. A poll naming no reporter
        // creates none.
        let p = principal("acme", None, None, None);
        let a = event("e0", "envoy-a", 1, NOW - 60, &p, "1");
        let b = event("e1", "envoy-b", 1, NOW - 60, &p, "1");
        store
            .ingest(&[a, b], NOW - 60, &BudgetCache::default())
            .await
            .unwrap();
        store.note_sync("envoy-b", NOW - 10);
        store.note_sync("nobody", NOW - 10);
        let synced = || async {
            with_connection!(&url, |conn, pg| {
                sqlx::query_as::<_, (String, Option<i64>)>(
                    "SELECT reporter, last_synced_at FROM reporters ORDER BY reporter",
                )
                .fetch_all(&mut conn)
                .await
            })
            .unwrap()
        };
        eventually(5, "the poll recorded", || async {
            synced().await.contains(&("envoy-b".into(), Some(NOW - 10)))
        })
        .await;
        assert_eq!(
            synced().await,
            [("envoy-a".into(), None), ("envoy-b".into(), Some(NOW - 10))]
        );
        assert!(!store
            .record_stale_reporters(NOW - 60, NOW - 40, 30)
            .await
            .unwrap());
        assert!(store
            .record_stale_reporters(NOW - 40, NOW, 30)
            .await
            .unwrap());
        assert!(!store
            .record_stale_reporters(NOW - 40, NOW, 30)
            .await
            .unwrap());
        assert_eq!(events(&url, "fleet_stale").await, 1, "envoy-a only");
        assert!(store
            .record_stale_reporters(NOW, NOW + 30, 30)
            .await
            .unwrap());
        assert_eq!(
            events(&url, "fleet_stale").await,
            2,
            "envoy-b, 30 s after its poll"
        );
        // A price-book version fires once.
        assert!(store.record_price_book_change(7, NOW).await.unwrap());
        assert!(!store.record_price_book_change(7, NOW).await.unwrap());
        assert_eq!(
            kinds(&deliveries(&store, None).await),
            [
                "fleet_stale",
                "fleet_stale",
                "price_book_changed",
                "window_reset"
            ]
        );
    }
);

store_test!(
    a_delivery_failing_past_the_give_up_time_is_failed,
    |store| {
        seed(&store, 0).await;
        let (url, inbox, server) = receiver(usize::MAX).await;
        store
            .create_webhook(&webhook(Some("acme"), &url), NOW)
            .await
            .unwrap();
        // Retries for 300 ms at most.
        let task = dispatcher_with(
            &store,
            Config {
                give_up_after: Duration::from_millis(300),
                ..config()
            },
        );
        spend(&store, &BudgetCache::default(), "e0", 1, None, "50").await;
        eventually(10, "given up", || async {
            deliveries(&store, None).await[0].status == "failed"
        })
        .await;
        let d = &deliveries(&store, None).await[0];
        assert!(d.attempts >= 2, "{d:?}");
        assert_eq!(d.last_status, Some(500));
        assert_eq!(
            d.last_error.as_deref(),
            Some("HTTP 500 Internal Server Error")
        );
        let calls = inbox.calls.load(Ordering::SeqCst);
        assert_eq!(calls as i64, d.attempts);
        // Failed is final: no more attempts.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(inbox.calls.load(Ordering::SeqCst), calls);
        assert!(inbox.received().is_empty());
        task.abort();
        server.abort();
    }
);

// A subscription aimed at the control plane's own network (a co-located Envoy's admin port,
// `localhost`, the metadata service) is never sent, by address or by name, unless the
// operator allowed the range; the delivery log says why.
store_test!(deliveries_refuse_non_public_targets_by_default, |store| {
    seed(&store, 0).await;
    let (url, inbox, server) = receiver(0).await;
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    for target in [url.clone(), format!("http://localhost:{port}/hook")] {
        store
            .create_webhook(&webhook(Some("acme"), &target), NOW)
            .await
            .unwrap();
    }
    let cache = BudgetCache::default();
    spend(&store, &cache, "e0", 1, None, "55").await;
    let task = dispatcher_with(
        &store,
        Config {
            allow_targets: Vec::new(),
            ..config()
        },
    );
    eventually(10, "both refused attempts recorded", || async {
        let d = deliveries(&store, None).await;
        d.len() == 2 && d.iter().all(|d| d.last_error.is_some())
    })
    .await;
    for d in &deliveries(&store, None).await {
        assert_eq!(d.status, "pending", "{d:?}");
        let error = d.last_error.as_deref().unwrap_or("");
        assert!(
            error.contains("loopback") && error.contains("--alert-allow-target"),
            "{error}"
        );
        assert!(
            !error.contains("/hook"),
            "the URL's path is not in the log: {error}"
        );
    }
    assert_eq!(
        inbox.calls.load(Ordering::SeqCst),
        0,
        "the receiver was called"
    );
    task.abort();

    // Allowed: both arrive.
    let task = dispatcher(&store);
    eventually(10, "both delivered once allowed", || async {
        inbox.received().len() == 2
    })
    .await;
    task.abort();
    server.abort();
});
