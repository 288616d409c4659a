//! What is logged while alerts are delivered (everything, at debug): the subscription, the
//! URL's host, the status or the error; never the secret, nor the URL's path or query (a Slack hook's path is its credential). Its
//! own test binary: it installs the process's tracing subscriber (see `logs.rs` for why).
//!
//! Run: `cargo test -p tollgate-control-plane --test alert_logs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::wait::eventually;
use common::*;
use tollgate_control_plane::alerts::dispatch::Dispatcher;
use tollgate_control_plane::alerts::webhooks::NewWebhook;
use tollgate_control_plane::alerts::Config;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::store::budgets::NewBudget;
use tollgate_control_plane::timezone::Zone;
use tollgate_core::budget::{Mode, Period, Scope};
use tollgate_testkit::sqlite_store;
use tollgate_testkit::webhook::receiver;

#[tokio::test]
async fn deliveries_log_the_host_never_the_path_query_or_secret() {
    let (subscriber, buf) = debug_log();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (store, _db) = sqlite_store().await;
    store.create_org("acme", "Acme", NOW).await.unwrap();
    let budget = NewBudget {
        scope: Scope::Org,
        scope_id: "acme".into(),
        period: Period::Monthly,
        timezone: Zone::parse("UTC").unwrap(),
        limit_usd: d("100"),
        soft_limit_usd: None,
        mode: Mode::Enforce,
    };
    store.create_budget(&budget, NOW).await.unwrap();
    // One receiver failing once then answering, one port refusing connections; both URLs
    // carry a credential in their path and query.
    let (url, inbox, server) = receiver(1).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut secrets = Vec::new();
    for base in [url.clone(), format!("http://127.0.0.1:{port}/hook")] {
        let created = store
            .create_webhook(
                &NewWebhook {
                    org_id: Some("acme".into()),
                    name: "ops".into(),
                    url: format!("{base}/PATHSECRET?token=QUERYSECRET"),
                    enabled: true,
                    ..NewWebhook::default()
                },
                NOW,
            )
            .await
            .unwrap();
        secrets.push(created.secret);
    }
    let config = Config {
        poll: Duration::from_millis(100),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        allow_targets: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    let task = tokio::spawn(
        Dispatcher::new(store.clone(), Clock::fixed(NOW), config)
            .unwrap()
            .run(),
    );
    let p = principal("acme", None, None, None);
    let e = event("e0", "envoy-a", 1, NOW - 60, &p, "60");
    store
        .ingest(&[e], NOW, &BudgetCache::default())
        .await
        .unwrap();
    eventually(10, "delivered after a 500", || async {
        inbox.received().len() == 1
    })
    .await;
    eventually(10, "the refused one failed twice", || async {
        let log = buf.text();
        log.matches("alert delivery failed").count() >= 3
    })
    .await;
    task.abort();
    server.abort();

    let log = buf.text();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("alert")).collect();
    assert!(log.contains("alert delivered"), "{ours:#?}");
    assert!(log.contains("HTTP 500"), "{ours:#?}");
    assert!(log.contains("host=127.0.0.1"), "{ours:#?}");
    assert!(log.contains("Connection refused"), "{ours:#?}");
    // (The host and port are not secret: hyper's own debug lines name them.)
    let hidden: Vec<&str> = secrets.iter().map(|s| &s[6..]).collect();
    for h in hidden.iter().copied().chain(["PATHSECRET", "QUERYSECRET"]) {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(h)).collect();
        assert!(found.is_empty(), "{h} logged: {found:#?}");
    }
}
