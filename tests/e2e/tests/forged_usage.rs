//! Issue 13, item 6: the data-plane token can no longer erase or forge another Envoy's usage.
//!
//! The attack, through the real stack: a holder of the data-plane token reads the snapshot to
//! learn a real Envoy's reporter id and acknowledged sequence, then posts zero-cost events under
//! that Envoy's next ids so that the real events that follow would be dropped as duplicates.
//! Now: the snapshot shows the data-plane token no reporter at all; a usage post with the
//! data-plane token is refused (403, enroll first); an enrolled impostor posting under the
//! real Envoy's id is refused (403, counted); an event id repeated with different content is a
//! conflict (refused, counted), the same content a duplicate; and every request the real Envoy
//! serves before and after reaches the ledger once, at its exact price, under its own reporter.
//!
//! Run with `cargo test -p tollgate-tests --test forged_usage -- --nocapture` (about 15 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use reqwest::blocking::Client;
use serde_json::{json, Value};
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::{Charge, UsageEvent};
use tollgate_core::identity::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::Usage;

use common::{chat, client, dec, ledger_has_chats};

/// `METHOD path` on the control plane with `token`: status and JSON answer (`null` if none).
fn call(
    http: &Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One timestamp for every forged event of the run, read once: an event built again must be
/// the same content (a `now` per call made "the same event" a conflict when a second ticked
/// between two posts).
fn test_start() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    })
}

fn forged(reporter: &str, seq: u64, p: &Principal, total: &str) -> UsageEvent {
    UsageEvent {
        id: format!("{reporter}-{seq}"),
        reporter: reporter.into(),
        seq,
        ts: test_start(),
        principal: p.clone().into(),
        model: "gpt-4o-mini".into(),
        api: ApiFormat::OpenAiChat,
        usage: Usage::default(),
        cost: CostBreakdown {
            total: dec(total),
            ..CostBreakdown::default()
        },
        price_version: 1,
        charge: Charge::Zero,
        uncharged: Some(tollgate_core::event::UnchargedReason::NoUsage),
        status: 200,
        stream: false,
        requested_model: None,
        soft_warned: Vec::new(),
        denied: None,
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn forged_usage_is_refused() {
    let Some(stack) = common::stack() else {
        return;
    };
    let api = stack.api().unwrap();
    let chain = api.create_capped_chain("victim", "10").unwrap();
    stack.wait_for_sync().unwrap();
    common::wait_key_known(&stack.url(), &chain.secret);
    let http = client();
    let base = stack.cp.url();
    let dp = stack.cp.dataplane_token().to_string();

    // The real Envoy serves two requests; they reach the ledger under its enrolled reporter.
    let mut served = Vec::new();
    for n in 0..2 {
        let (req, status, body) = chat(&http, &stack.url(), &chain.secret, &format!("before {n}"));
        assert_eq!(status, 200, "{body}");
        served.push(req);
    }
    ledger_has_chats(&stack, &chain.key_id, &served);
    let rows = api.get("/v1/usage/events?limit=100").unwrap();
    let real = rows[0]["reporter"].as_str().unwrap().to_string();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reporter"] == real.as_str()));
    eprintln!("the real Envoy reports as {real}");

    // 1. The data-plane token learns no reporter from the snapshot.
    let (status, snap) = call(&http, &base, "GET", "/v1/snapshot", &dp, None);
    assert_eq!(status, 200);
    assert_eq!(
        snap["reporters"],
        json!({}),
        "no reporter ids or sequences for the data-plane token"
    );

    // 2. Zero-cost events under the real Envoy's next ids, with the data-plane token: refused.
    let p = Principal {
        key: Some(chain.key_id.clone()),
        user: Some(chain.user.clone()),
        project: Some(chain.project.clone()),
        org: chain.org.clone(),
    };
    // The impostor's own events charge the organisation only (not the key the ledger check
    // below counts).
    let org_only = Principal {
        org: chain.org.clone(),
        ..Principal::default()
    };
    let attack = json!({"events": (3..=10).map(|s| forged(&real, s, &p, "0")).collect::<Vec<_>>()});
    let (status, body) = call(&http, &base, "POST", "/v1/usage", &dp, Some(&attack));
    assert_eq!(status, 403, "{body}");

    // 3. An impostor enrolls (the data-plane token allows that) and posts under the real id:
    // refused, counted.
    let (status, me) = call(
        &http,
        &base,
        "POST",
        "/v1/reporters",
        &dp,
        Some(&json!({"node": "impostor"})),
    );
    assert_eq!(status, 201, "{me}");
    let my_id = me["reporter"].as_str().unwrap().to_string();
    let my_secret = me["secret"].as_str().unwrap().to_string();
    stack.secrets.add(&my_secret);
    let (status, body) = call(&http, &base, "POST", "/v1/usage", &my_secret, Some(&attack));
    assert_eq!(status, 403, "{body}");
    let (_, snap) = call(&http, &base, "GET", "/v1/snapshot", &my_secret, None);
    assert!(
        snap["reporters"].get(&real).is_none(),
        "the impostor sees no other reporter: {}",
        snap["reporters"]
    );

    // 4. Under its own id: an event id posted again with different content is a conflict,
    // the same content a duplicate.
    let post_own = |event: &UsageEvent| {
        let batch = json!({"events": [event]});
        call(&http, &base, "POST", "/v1/usage", &my_secret, Some(&batch))
    };
    let own = forged(&my_id, 1, &org_only, "0");
    let (status, ack) = post_own(&own);
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(1)), "{ack}");
    let mut changed = forged(&my_id, 1, &org_only, "0");
    changed.status = 500;
    let (status, ack) = post_own(&changed);
    assert_eq!(status, 200);
    assert_eq!(ack, json!({"accepted": 0, "duplicate": 0, "conflict": 1}));
    let same = forged(&my_id, 1, &org_only, "0");
    let (_, ack) = post_own(&same);
    assert_eq!(ack, json!({"accepted": 0, "duplicate": 1, "conflict": 0}));
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric(&metrics, "tollgate_usage_events_conflict_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "tollgate_usage_refused_total{reason=\"foreign_reporter\"}"
        ),
        8
    );
    assert_eq!(
        metric(
            &metrics,
            "tollgate_usage_refused_total{reason=\"not_enrolled\"}"
        ),
        1
    );

    // 5. The real Envoy's later requests all reach the ledger, once each, at their price.
    for n in 0..3 {
        let (req, status, body) = chat(&http, &stack.url(), &chain.secret, &format!("after {n}"));
        assert_eq!(status, 200, "{body}");
        served.push(req);
    }
    ledger_has_chats(&stack, &chain.key_id, &served);
    let rows = api
        .get(&format!("/v1/usage/events?reporter={real}"))
        .unwrap();
    let mut seqs: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5],
        "every real event stored under the real reporter"
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["cost_check"] == "match"),
        "{rows}"
    );
    assert_eq!(
        stack.cp.secret_leaks(),
        0,
        "no secret in the control plane's log"
    );
    // The real Envoy's reporter secret exists only in its sync service's memory: no log line
    // of Envoy, the control plane or the upstream holds a `tgr-` secret (the impostor's,
    // registered above, would show as redacted).
    let logs = stack.logs();
    assert!(
        !logs.contains("tgr-"),
        "a reporter secret reached a log:\n{logs}"
    );
    assert!(
        logs.contains(&format!("enrolled as reporter {real}")),
        "the Envoy logs its id"
    );
}
