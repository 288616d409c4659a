//! What budgets refused and warned about reaches the control plane, through the real Envoy:
//! every `429` a budget answered is counted against that budget's window exactly once, however
//! fast the client retries (the filter sends one denial record per budget, principal and model
//! per second and worker, not one per refusal); every soft-limit warning a client saw is
//! counted; refusals are not spend; and a key's last use is recorded.
//!
//! `cargo test -p tollgate-tests --test refusals -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::eventually;

use common::{chat, client, synced_chain, wait_key_known};

/// Refusals the test provokes: a client retrying as fast as it can.
const HAMMER: usize = 60;
/// Requests admitted above a soft limit.
const WARNED: usize = 4;

/// The budget as the control plane shows it once `field` reaches `want`.
fn budget_once(api: &tollgate_tests::Api, id: &str, field: &str, want: u64) -> Value {
    let mut last = Value::Null;
    let got = eventually(Duration::from_secs(20), || {
        last = api.get(&format!("/v1/budgets/{id}")).unwrap();
        (last[field].as_u64() == Some(want)).then(|| last.clone())
    });
    got.unwrap_or_else(|| panic!("budget {id}: {field} never reached {want}: {last}"))
}

#[test]
fn every_refusal_and_warning_is_counted_once_against_its_budget() {
    let Some(stack) = common::stack() else {
        return;
    };
    let (api, chain) = synced_chain(&stack, "refusals");
    // Nothing fits a zero limit: every request of this key is refused by it.
    let denying = api
        .create_budget("key", &chain.key_id, "total", "0")
        .unwrap();
    // The user's budget admits everything but warns from the first cent.
    let warning = api
        .post(
            "/v1/budgets",
            &json!({"scope": "user", "scope_id": chain.user, "period": "total",
                    "limit_usd": "100", "soft_limit_usd": "0.000001"}),
        )
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    stack.wait_for_sync().unwrap();
    let url = stack.url();
    let http = client();

    let mut refused = 0;
    for i in 0..HAMMER {
        let (_, status, body) = chat(&http, &url, &chain.secret, &format!("retry {i}"));
        assert_eq!(status, 429, "{body}");
        assert!(
            body.to_string().contains(&denying),
            "the 429 names the key's budget: {body}"
        );
        refused += 1;
    }
    let b = budget_once(&api, &denying, "denied", refused);
    assert!(b["first_denied_at"].as_i64().is_some() && b["last_denied_at"].as_i64().is_some());
    assert!(b["first_denied_at"].as_i64() <= b["last_denied_at"].as_i64());
    let records = api
        .get(&format!("/v1/budgets/{denying}/denials?limit=1000"))
        .unwrap();
    let records = records.as_array().unwrap();
    let total: i64 = records
        .iter()
        .map(|r| r["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total, HAMMER as i64,
        "the records add up to the refusals: {records:?}"
    );
    assert!(
        records.len() < HAMMER / 4,
        "refusals are reported in bulk, not one row each: {} records",
        records.len()
    );
    assert!(records
        .iter()
        .all(|r| r["key_id"] == chain.key_id.as_str() && r["model"] == "gpt-4o-mini"));
    // Refusals are not spend.
    assert_eq!(api.spend("key", &chain.key_id).unwrap().requests, 0);

    // Another key of the same user, without the zero budget: admitted, and warned.
    let (_, secret) = api
        .create_key(
            &chain.org,
            Some(&chain.project),
            Some(&chain.user),
            "warned",
        )
        .unwrap();
    stack.wait_for_sync().unwrap();
    wait_key_known(&url, &secret);
    let mut seen = 0;
    for i in 0..WARNED {
        let resp = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 24,
                          "messages": [{"role": "user", "content": format!("warned {i}")}]}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let header = resp
            .headers()
            .get("x-tollgate-soft-limit")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        if header.split(',').any(|id| id == warning) {
            seen += 1;
        }
        resp.text().unwrap();
    }
    assert_eq!(
        seen, WARNED,
        "every admitted request crossed the soft limit"
    );
    let w = budget_once(&api, &warning, "soft_warned", seen as u64);
    assert_eq!(w["denied"], 0, "the user's budget refused nothing");
    // The refused key was used too (denied requests count as use).
    let key = api.get(&format!("/v1/keys/{}", chain.key_id)).unwrap();
    assert!(key["last_used_at"].as_i64().is_some(), "{key}");
}
