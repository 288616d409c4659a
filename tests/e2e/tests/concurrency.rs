//! Overshoot under concurrency: 64 streaming clients at once against one small budget, through
//! Envoy with 2 workers. Every request carries `max_tokens`, so the filter reserves each
//! request's worst case (shared across workers with CAS) before forwarding it, and the spend
//! that lands in the ledger never exceeds the limit — while the budget is still used up (some
//! requests served, the rest refused with 429).
//!
//! Run with `cargo test -p tollgate-tests --test concurrency` (about 15 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::thread;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use tollgate_tests::{eventually, StackOptions};

const CLIENTS: usize = 64;

/// The stack with an Envoy of two workers (`None`: its binaries are missing, as `common` says).
fn two_workers() -> Option<tollgate_tests::Stack> {
    common::stack_with(StackOptions {
        sync_interval_ms: common::SYNC_INTERVAL_MS,
        envoy_concurrency: 2,
        ..StackOptions::default()
    })
}

#[test]
fn sixty_four_concurrent_streams_never_push_spend_past_the_limit() {
    let Some(stack) = two_workers() else {
        return;
    };
    let api = stack.api().unwrap();
    let chain = api.create_chain("race").unwrap();
    // gpt-4o-mini at $0.60/M output: 64 output tokens ≈ $0.0000384 each, so a $0.0004 budget
    // fits roughly ten requests' worst case, far fewer than 64 clients.
    let limit: Decimal = "0.0004".parse().unwrap();
    api.create_budget("key", &chain.key_id, "total", &limit.to_string())
        .unwrap();
    stack.wait_for_sync().unwrap();

    let url = stack.url();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, key) = (url.clone(), chain.secret.clone());
            thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 64,
                                  "messages": [{"role": "user", "content": format!("client {i}")}]});
                let resp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    // Every reply uses its whole max_tokens, streamed slowly so requests overlap.
                    .header("x-mock-output-tokens", "64")
                    .header("x-mock-delay-ms", "10")
                    .json(&body)
                    .send()
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().unwrap_or_default();
                (status, text)
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let served = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(served + refused, CLIENTS, "only 200s and 429s: {results:?}");
    assert!(served >= 1, "the budget let some requests through");
    assert!(refused >= 1, "the budget refused the rest");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 200)
            .all(|(_, t)| t.contains("[DONE]")),
        "served streams ran to the end"
    );

    // Every served request reaches the ledger; together they stay within the limit.
    let mut last = None;
    let settled = eventually(Duration::from_secs(30), || {
        let s = api.spend("key", &chain.key_id).unwrap();
        last = Some(s);
        (s.requests == served as u64).then_some(s)
    });
    let spend = settled.unwrap_or_else(|| panic!("ledger never showed {served} events: {last:?}"));
    assert!(
        spend.total_usd <= limit,
        "spent {} over the {limit} limit with {served} of {CLIENTS} served",
        spend.total_usd
    );
    eprintln!(
        "concurrency: {served} served, {refused} refused, spent {} of {limit}",
        spend.total_usd
    );
}

/// A settled request writes nothing to shared data itself: its worker owes the budget the
/// release of its reservation and its cost, and writes them with its next admission on the
/// budget or on its tick. Whichever worker takes the next request must count the cost, not the
/// reservation, once a tick has passed. Each request on a fresh connection (Envoy spreads
/// connections over its two workers); the worst case reserved (4,000 output tokens ≈ $0.0024)
/// is over a hundred times what an answer costs (≤ 24 output tokens), so one reservation still
/// held anywhere shows in the next request's remaining budget.
#[test]
fn every_worker_counts_a_settled_cost_not_its_reservation() {
    let Some(stack) = two_workers() else {
        return;
    };
    let chain = common::funded(&stack, "owed", "1");
    let workers = || {
        let stats = stack.envoy.stats("downstream_cx_total").unwrap();
        (0..2)
            .map(|w| {
                let name = format!(".worker_{w}.downstream_cx_total");
                stats
                    .iter()
                    .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(&name))
                    .map(|(_, v)| *v)
                    .sum::<u64>()
            })
            .collect::<Vec<u64>>()
    };
    let before = workers();
    let url = stack.url();
    let mut served = 0;
    // Until both workers served two requests each (bounded: 40 requests).
    for i in 0..40 {
        let http = common::client();
        let resp = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&chain.secret)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 4000,
                          "messages": [{"role": "user", "content": format!("request {i}")}]}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let remaining: Decimal = resp.headers()["x-tollgate-budget-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        resp.text().unwrap();
        served += 1;
        assert!(
            remaining > "0.999".parse().unwrap(),
            "request {i}: {remaining} remaining: a settled request's reservation still counted"
        );
        let now = workers();
        if now.iter().zip(&before).all(|(n, b)| n - b >= 2) {
            break;
        }
        // Past the workers' tick (100 ms with this sync interval), with room for a busy machine.
        thread::sleep(Duration::from_millis(400));
    }
    let after = workers();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a - b >= 2),
        "both workers served: {before:?} -> {after:?} connections in {served} requests"
    );
}
