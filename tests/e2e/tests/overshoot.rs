//! Overshoot across a fleet: two Envoys share one control plane on PostgreSQL and one budget,
//! with concurrent clients on both until the budget refuses them. Each Envoy alone never
//! overspends (it reserves each request's worst case against its snapshot plus its own local
//! spend), but neither sees what the other admitted until that reaches the ledger and comes
//! back in a snapshot. The overshoot is bounded by what the other Envoy can admit in that
//! time (README, "Budget semantics across Envoys"):
//!
//! ```text
//! overshoot ≤ Σ_{j≠i} min(L, C_j · (⌊P / d_min⌋ + 2) · c_max)
//! P = worker_tick + 2 · sync_interval + snapshot_min_interval + ε
//! ```
//!
//! with `C_j` clients on Envoy `j`, each request taking at least `d_min`, costing at most
//! `c_max`, `L` the limit and `ε` the posting, build and polling latencies (here the tests'
//! scheduling slack). The test asserts the ledger's final spend stays within `L` plus that
//! bound, that every served request is in the ledger exactly once at its exact cost, and
//! prints the measured overshoot next to the bound. Then a burst — every client of both
//! Envoys at once on a fresh budget — shows the worst case, where only `spend ≤ N · L` holds.
//!
//! Run with `cargo test -p tollgate-tests --test overshoot -- --nocapture` (about 20 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::thread;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book};
use tollgate_tests::{Database, StackOptions};
use tollgate_upstream::{Api, Controls};

use common::{ledger_reaches, SCHEDULING_SLACK, SYNC_INTERVAL_MS};

/// Clients per Envoy.
const CLIENTS: u64 = 6;
/// Most requests one client sends.
const MAX_PER_CLIENT: usize = 200;
/// The mock holds every response this long: the shortest a request can take (`d_min`).
const MIN_REQUEST: Duration = Duration::from_millis(100);
/// Requests' worth of budget.
const BUDGET_REQUESTS: u64 = 150;
/// Clients per Envoy in the burst.
const BURST_CLIENTS: usize = 16;
/// The control plane's snapshot min interval.
const SNAPSHOT_MIN_INTERVAL_MS: u64 = 20;

/// One request of client `client`, number `n` (same length, so the same cost, for all).
fn request(client: usize, n: usize) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 64,
           "messages": [{"role": "user", "content": format!("client {client:03} request {n:04}")}]})
}

/// Sends requests until the first refusal (or `MAX_PER_CLIENT`); returns the served ones.
fn client(url: String, key: String, client: usize) -> Vec<Value> {
    let http = common::client();
    let mut served = Vec::new();
    for n in 0..MAX_PER_CLIENT {
        let req = request(client, n);
        let resp = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-mock-output-tokens", "64")
            .header("x-mock-delay-ms", MIN_REQUEST.as_millis().to_string())
            .json(&req)
            .send()
            .unwrap();
        match resp.status().as_u16() {
            200 => {
                resp.text().unwrap();
                served.push(req);
            }
            429 => break,
            other => panic!(
                "client {client}: {other} {}",
                resp.text().unwrap_or_default()
            ),
        }
    }
    served
}

#[test]
fn two_envoys_on_one_budget_overshoot_within_the_bound() {
    if common::skip_postgres() {
        return;
    }
    let Some(stack) = common::stack_with(StackOptions {
        database: Database::Postgres,
        sync_interval_ms: SYNC_INTERVAL_MS,
        snapshot_min_interval_ms: SNAPSHOT_MIN_INTERVAL_MS,
        ..StackOptions::default()
    }) else {
        return;
    };
    let second = stack.start_envoy(0, None).unwrap();
    let api = stack.api().unwrap();
    let chain = api.create_chain("fleet").unwrap();
    let book = litellm_book().unwrap();
    let controls = Controls {
        output_tokens: Some(64),
        ..Controls::default()
    };
    let cost = |r: &Value| expected(book, Api::OpenAiChat, r, &controls).unwrap().1;
    let c_max = cost(&request(0, 0));
    let limit = c_max * Decimal::from(BUDGET_REQUESTS);
    api.create_budget("key", &chain.key_id, "total", &limit.to_string())
        .unwrap();
    stack.wait_for_sync().unwrap();
    stack.wait_for_sync_of(&second).unwrap();

    let urls = [stack.url(), format!("http://{}", second.listener)];
    let handles: Vec<_> = (0..2 * CLIENTS as usize)
        .map(|i| {
            let (url, key) = (urls[i % 2].clone(), chain.secret.clone());
            thread::spawn(move || (i % 2, client(url, key, i)))
        })
        .collect();
    let mut served: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for h in handles {
        let (envoy, s) = h.join().unwrap();
        served[envoy].extend(s);
    }
    let all: Vec<Value> = served.concat();
    let spent: Decimal = all.iter().map(cost).sum();
    assert!(
        all.iter().all(|r| cost(r) == c_max),
        "every request costs the same"
    );

    // Every served request in the ledger exactly once, at its exact cost.
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: all.len() as u64,
            total_usd: spent,
        },
    );
    // A worker hands its usage batch to the queue on its tick: sync_interval / 2, ≤ 100 ms.
    let worker_tick = (stack.sync_interval() / 2).min(Duration::from_millis(100));
    let p = worker_tick
        + stack.sync_interval() * 2
        + Duration::from_millis(SNAPSHOT_MIN_INTERVAL_MS)
        + SCHEDULING_SLACK;
    let per_client = u64::try_from(p.as_millis() / MIN_REQUEST.as_millis()).unwrap() + 2;
    let bound = limit.min(Decimal::from(CLIENTS * per_client) * c_max);
    let overshoot = (spent - limit).max(Decimal::ZERO);
    eprintln!(
        "overshoot, 2 Envoys × {CLIENTS} clients, limit {limit} ({BUDGET_REQUESTS} requests): \
         served {} + {} = {} requests, spent {spent}, overshoot {overshoot} ({} requests); \
         bound {bound} ({} requests: P = {p:?}, {per_client} per client); (N−1)·L = {limit}",
        served[0].len(),
        served[1].len(),
        all.len(),
        overshoot / c_max,
        bound / c_max,
    );
    assert!(
        spent <= limit + bound,
        "spent {spent}: over the limit {limit} by more than the bound {bound}"
    );
    assert!(
        !served[0].is_empty() && !served[1].is_empty(),
        "both Envoys served"
    );

    // A burst: every client of both Envoys at once against a fresh budget of ten requests'
    // worth. Both Envoys decide from the same snapshot, so each may admit up to the whole
    // limit: only the hard cap N · L holds.
    let burst = api.create_chain("burst").unwrap();
    let burst_limit = c_max * Decimal::from(10);
    api.create_budget("key", &burst.key_id, "total", &burst_limit.to_string())
        .unwrap();
    stack.wait_for_sync().unwrap();
    stack.wait_for_sync_of(&second).unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(2 * BURST_CLIENTS));
    let handles: Vec<_> = (0..2 * BURST_CLIENTS)
        .map(|i| {
            let (url, key, start) = (urls[i % 2].clone(), burst.secret.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                client(url, key, i)
            })
        })
        .collect();
    let burst_served: Vec<Value> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let burst_spent: Decimal = burst_served.iter().map(cost).sum();
    ledger_reaches(
        &stack,
        "key",
        &burst.key_id,
        Spend {
            requests: burst_served.len() as u64,
            total_usd: burst_spent,
        },
    );
    eprintln!(
        "overshoot, burst of 2 × {BURST_CLIENTS} clients at once, limit {burst_limit} (10 \
         requests): {} served, spent {burst_spent}, overshoot {} requests; hard cap 2 × limit",
        burst_served.len(),
        ((burst_spent - burst_limit).max(Decimal::ZERO) / c_max).normalize(),
    );
    assert!(
        burst_spent <= burst_limit * Decimal::TWO,
        "spent {burst_spent}: over N · L"
    );
}
