//! Alerts through the real stack: traffic through Envoy crosses 50 % of a key's budget and the
//! webhook receiver (on 127.0.0.1) gets one signed `threshold_50` alert; more traffic past
//! 50 % sends nothing more.
//!
//! Run with `cargo test -p tollgate-tests --test alerts -- --nocapture` (prints the time from
//! the crossing request's answer to the alert, which includes the filter's usage sync).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_control_plane::alerts::signature;
use tollgate_testkit::webhook::receiver;
use tollgate_tests::control_plane::Spend;
use tollgate_tests::eventually;

#[test]
fn traffic_crossing_half_a_budget_alerts_once() {
    let Some(stack) = common::stack() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, inbox, server) = rt.block_on(receiver(0));
    let api = stack.api().unwrap();
    let chain = api.create_chain("alerts").unwrap();
    let hook = api
        .post(
            "/v1/alerts/webhooks",
            &json!({"org_id": chain.org, "url": url, "events": ["threshold"], "thresholds": [50]}),
        )
        .unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    // Forty requests' worth (admission reserves a worst case well above one request's cost):
    // the twentieth reaches 50 %.
    let text = "alert me";
    let one = json!({"model": "gpt-4o-mini", "max_tokens": 24,
                     "messages": [{"role": "user", "content": text}]});
    let cost = common::cost_of(&[one]);
    let limit = cost * rust_decimal::Decimal::from(40);
    let budget = api
        .create_budget("key", &chain.key_id, "total", &limit.to_string())
        .unwrap();
    stack.wait_for_sync().unwrap();
    common::wait_key_known(&stack.url(), &chain.secret);

    let http = common::client();
    for _ in 0..20 {
        let (_, status, body) = common::chat(&http, &stack.url(), &chain.secret, text);
        assert_eq!(status, 200, "{body}\n{}", stack.logs());
    }
    let answered = Instant::now();
    let got = eventually(Duration::from_secs(15), || {
        let got = inbox.received();
        (!got.is_empty()).then_some(got)
    })
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
        limit / rust_decimal::Decimal::from(2)
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
            total_usd: cost * rust_decimal::Decimal::from(22),
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
