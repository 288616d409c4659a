//! Alerts through the real stack: traffic through Envoy crosses 50 % of a key's budget and the
//! webhook receiver (on 127.0.0.1) gets one signed `threshold_50` alert; more traffic past
//! 50 % sends nothing more. A budget's first `429` sends one `hard_limit` alert however many
//! refusals follow.
//!
//! Run with `cargo test -p tollgate-tests --test alerts -- --nocapture` (prints the time from
//! the crossing request's answer to the alert, which includes the filter's usage sync).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_control_plane::alerts::signature;
use tollgate_testkit::webhook::receiver;
use tollgate_tests::control_plane::Spend;
use tollgate_tests::eventually;

/// A local webhook receiver, a subscription of a new chain's org to `events` (and 50 %) on
/// it, and a `total` budget of `requests` chat requests' worth of `text` on the chain's key,
/// known to Envoy.
struct Subscribed {
    _rt: tokio::runtime::Runtime,
    chain: tollgate_tests::Chain,
    secret: String,
    inbox: tollgate_testkit::webhook::Inbox,
    server: tokio::task::JoinHandle<()>,
    budget: String,
    /// One request's cost.
    cost: Decimal,
    limit: Decimal,
}

fn subscribe(
    stack: &tollgate_tests::Stack,
    prefix: &str,
    events: Value,
    text: &str,
    requests: u32,
) -> Subscribed {
    let api = stack.api().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, inbox, server) = rt.block_on(receiver(0));
    let chain = api.create_chain(prefix).unwrap();
    let mut body = json!({"org_id": chain.org, "url": url, "thresholds": [50]});
    body["events"] = events;
    let hook = api.post("/v1/alerts/webhooks", &body).unwrap();
    let one = json!({"model": "gpt-4o-mini", "max_tokens": 24,
                     "messages": [{"role": "user", "content": text}]});
    let cost = common::cost_of(&[one]);
    let limit = cost * Decimal::from(requests);
    let budget = api
        .create_budget("key", &chain.key_id, "total", &limit.to_string())
        .unwrap();
    stack.wait_for_sync().unwrap();
    common::wait_key_known(&stack.url(), &chain.secret);
    Subscribed {
        _rt: rt,
        chain,
        secret: hook["secret"].as_str().unwrap().to_string(),
        inbox,
        server,
        budget,
        cost,
        limit,
    }
}

#[test]
fn traffic_crossing_half_a_budget_alerts_once() {
    let Some(stack) = common::stack() else { return };
    let api = stack.api().unwrap();
    // Forty requests' worth (admission reserves a worst case well above one request's cost):
    // the twentieth reaches 50 %.
    let text = "alert me";
    let Subscribed {
        _rt,
        chain,
        secret,
        inbox,
        server,
        budget,
        cost,
        limit,
    } = subscribe(&stack, "alerts", json!(["threshold"]), text, 40);

    let http = common::client();
    for _ in 0..20 {
        let (_, status, body) = common::chat(&http, &stack.url(), &chain.secret, text);
        assert_eq!(status, 200, "{body}\n{}", stack.logs());
    }
    let answered = Instant::now();
    let got = inbox
        .wait_for(1, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no alert within 15 s\n{}", stack.logs()));
    eprintln!(
        "crossing request answered → alert received: {:?} (sync interval {:?})",
        got[0].at.saturating_duration_since(answered),
        stack.sync_interval()
    );
    let alert = got[0].json();
    assert_eq!(got[0].event, "threshold_50");
    assert_eq!(alert["budget"]["id"], budget.as_str());
    assert_eq!(alert["budget"]["org_id"], chain.org.as_str());
    assert_eq!(
        common::dec(alert["spent_usd"].as_str().unwrap()),
        limit / Decimal::from(2)
    );
    let now = tollgate_control_plane::store::unix_now();
    signature::verify(&secret, &got[0].signature, &got[0].body, now, 300).unwrap();
    assert!(signature::verify("whsec_other", &got[0].signature, &got[0].body, now, 300).is_err());

    // Two more (55 %): nothing more.
    for _ in 0..2 {
        let (_, status, body) = common::chat(&http, &stack.url(), &chain.secret, text);
        assert_eq!(status, 200, "{body}");
    }
    common::ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: 22,
            total_usd: cost * Decimal::from(22),
        },
    );
    // Its batch is committed: an alert would be on its way now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inbox.received().len(), 1);
    let log = api.get("/v1/alerts/deliveries").unwrap();
    assert_eq!(log["deliveries"][0]["status"], "delivered", "{log}");
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 1, "{log}");
    assert!(!stack.cp.output().contains(&secret[6..]));
    server.abort();
}

#[test]
fn a_budgets_first_refusal_alerts_hard_limit_once() {
    let Some(stack) = common::stack() else { return };
    let api = stack.api().unwrap();
    // Ten requests' worth: admission reserves a worst case well above one request's cost, so
    // the budget refuses before its counted spend reaches the limit (a spend-based alert
    // would never fire here).
    let text = "refuse me";
    let Subscribed {
        _rt,
        chain,
        secret,
        inbox,
        server,
        budget,
        limit,
        ..
    } = subscribe(&stack, "hardlimit", json!(["hard_limit"]), text, 10);

    let http = common::client();
    let started = tollgate_control_plane::store::unix_now();
    let mut admitted = 0;
    let mut refused = 0;
    for _ in 0..30 {
        let (_, status, body) = common::chat(&http, &stack.url(), &chain.secret, text);
        match status {
            200 => admitted += 1,
            429 => refused += 1,
            _ => panic!("{status}: {body}\n{}", stack.logs()),
        }
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "the budget never refused");
    assert!((1..10).contains(&admitted), "{admitted} admitted");
    let got = inbox
        .wait_for(1, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no hard_limit alert within 15 s\n{}", stack.logs()));
    assert_eq!(got[0].event, "hard_limit");
    let alert = got[0].json();
    assert_eq!(alert["budget"]["id"], budget.as_str());
    let first = alert["first_refused_at"].as_i64().unwrap();
    assert!(first >= started, "{alert}");
    assert!(
        common::dec(alert["spent_usd"].as_str().unwrap()) <= limit,
        "{alert}"
    );
    let now = tollgate_control_plane::store::unix_now();
    signature::verify(&secret, &got[0].signature, &got[0].body, now, 300).unwrap();

    // More refusals, reported in later records: still one alert.
    for _ in 0..5 {
        let (_, status, body) = common::chat(&http, &stack.url(), &chain.secret, text);
        assert_eq!(status, 429, "{body}");
    }
    let all_counted = eventually(Duration::from_secs(20), || {
        let b = api.get(&format!("/v1/budgets/{budget}")).unwrap();
        (b["denied"].as_u64() == Some(10)).then_some(())
    });
    assert!(all_counted.is_some(), "the ten refusals were never counted");
    std::thread::sleep(Duration::from_millis(500));
    let events: Vec<String> = inbox.received().into_iter().map(|r| r.event).collect();
    assert_eq!(events, ["hard_limit"]);
    server.abort();
}
