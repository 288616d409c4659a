//! Changes made through the control plane's API reach Envoy within two sync intervals:
//! a revoked key is refused, a new budget denies, a raised limit allows again, a new price
//! is judged and charged. Each test
//! polls through real Envoy every 20 ms from the moment the API call returns and measures
//! when the decision flips.
//!
//! Run with `cargo test -p tollgate-tests --test propagation`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::{eventually, Chain, Stack};

use common::two_intervals;

/// One chat completion through Envoy with `chain`'s key: status and JSON body.
fn chat(http: &reqwest::blocking::Client, stack: &Stack, chain: &Chain) -> (u16, Value) {
    let resp = http
        .post(format!("{}/v1/chat/completions", stack.url()))
        .bearer_auth(&chain.secret)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "propagation"}]}))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Sends requests until one gets `want`; returns how long that took after `since`.
fn flips_to(
    http: &reqwest::blocking::Client,
    stack: &Stack,
    chain: &Chain,
    want: u16,
    since: Instant,
) -> (Duration, Value) {
    let got = eventually(Duration::from_secs(15), || {
        let (status, body) = chat(http, stack, chain);
        (status == want).then(|| (since.elapsed(), body))
    });
    got.unwrap_or_else(|| panic!("never got {want} within 15 s\n{}", stack.logs()))
}

#[test]
fn a_revoked_key_is_refused_within_two_sync_intervals() {
    let Some(stack) = common::stack() else { return };
    let (api, chain) = common::synced_chain(&stack, "revoke");
    let http = common::client();
    assert_eq!(chat(&http, &stack, &chain).0, 200);

    api.revoke_key(&chain.key_id).unwrap();
    let revoked = Instant::now();
    let (took, body) = flips_to(&http, &stack, &chain, 401, revoked);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    eprintln!("revocation applied after {took:?}");
    assert!(
        took <= two_intervals(&stack),
        "revocation took {took:?}, more than two sync intervals of {:?}",
        stack.sync_interval()
    );
    // And it stays refused.
    for _ in 0..5 {
        assert_eq!(chat(&http, &stack, &chain).0, 401);
    }
}

#[test]
fn a_new_budget_takes_effect_within_two_sync_intervals_and_so_does_raising_it() {
    let Some(stack) = common::stack() else { return };
    let (api, chain) = common::synced_chain(&stack, "budget");
    let http = common::client();
    assert_eq!(chat(&http, &stack, &chain).0, 200, "no budget yet: allowed");

    // A zero budget on the project denies every priced request.
    let budget = api
        .create_budget("project", &chain.project, "daily", "0")
        .unwrap();
    let created = Instant::now();
    let (took, body) = flips_to(&http, &stack, &chain, 429, created);
    assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["budget"]["id"], budget.as_str(), "{body}");
    assert_eq!(body["error"]["budget"]["scope"], "project", "{body}");
    eprintln!("new budget applied after {took:?}");
    assert!(
        took <= two_intervals(&stack),
        "the new budget took {took:?} to apply, more than two sync intervals"
    );

    // Raising the limit lets requests through again, just as fast.
    api.send(
        reqwest::Method::PATCH,
        &format!("/v1/budgets/{budget}"),
        Some(json!({"limit_usd": "5"}).to_string().into_bytes()),
    )
    .unwrap();
    let raised = Instant::now();
    let (took, _) = flips_to(&http, &stack, &chain, 200, raised);
    eprintln!("raised limit applied after {took:?}");
    assert!(
        took <= two_intervals(&stack),
        "the raised limit took {took:?} to apply, more than two sync intervals"
    );
}

/// A price change reaches the admission decision and the charge within two sync intervals: a
/// model priced so dear that a request's worst case is over its project's budget is refused;
/// re-priced cheap, it is let through and charged at the cheap rates. A worker that kept the
/// old book would go on refusing (its worst case judged at the old rates) or charge the old
/// ones.
#[test]
fn a_new_price_reaches_the_decision_and_the_charge_within_two_sync_intervals() {
    const MODEL: &str = "propagation-priced-model";
    let Some(stack) = common::stack() else { return };
    let api = stack.api().unwrap();
    let chain = api.create_chain("price").unwrap();
    let map = |input: f64, output: f64| {
        serde_json::to_vec(
            &json!({MODEL: {"litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": input, "output_cost_per_token": output}}),
        )
        .unwrap()
    };
    let (dear, cheap) = (map(1e-3, 1e-3), map(1e-6, 2e-6));
    api.import_litellm(dear).unwrap();
    // About 14 prompt tokens and 16 output tokens: $0.03 at the dear rates, $0.00005 cheap.
    api.create_budget("project", &chain.project, "daily", "0.01")
        .unwrap();
    stack.wait_for_sync().unwrap();
    let request = json!({"model": MODEL, "max_tokens": 16,
                         "messages": [{"role": "user", "content": "propagation"}]});
    let http = common::client();
    let send = || {
        let resp = http
            .post(format!("{}/v1/chat/completions", stack.url()))
            .bearer_auth(&chain.secret)
            .json(&request)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    };
    // Every worker holds the dear price and the budget within a tick of the sync.
    let refused = eventually(Duration::from_secs(5), || {
        let (status, body) = send();
        (status == 429).then_some(body)
    });
    let refused =
        refused.unwrap_or_else(|| panic!("never refused at the dear price: {:?}", send()));
    assert_eq!(refused["error"]["budget"]["scope"], "project", "{refused}");

    api.import_litellm(cheap.clone()).unwrap();
    let repriced = Instant::now();
    let took = eventually(Duration::from_secs(15), || {
        (send().0 == 200).then(|| repriced.elapsed())
    })
    .unwrap_or_else(|| panic!("never allowed at the cheap price\n{}", stack.logs()));
    eprintln!("new price applied after {took:?}");
    assert!(
        took <= two_intervals(&stack),
        "the new price took {took:?} to apply, more than two sync intervals"
    );
    for _ in 0..2 {
        assert_eq!(send().0, 200);
    }
    // Charged at the cheap rates, each one of the three.
    let book = tollgate_core::pricing::litellm::import(&cheap)
        .unwrap()
        .book;
    let (_, one) = tollgate_tests::pricing::expected(
        &book,
        tollgate_upstream::Api::OpenAiChat,
        &request,
        &tollgate_upstream::Controls::default(),
    )
    .unwrap();
    common::ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: 3,
            total_usd: one * rust_decimal::Decimal::from(3),
        },
    );
}
