//! The control plane goes away for 10 s under steady traffic (killed: a crash, not a polite
//! shutdown) and comes back on the same port with the same SQLite file. Meanwhile Envoy keeps
//! serving and keeps enforcing from its last snapshot plus its local spend: a key with a small
//! budget is refused once that budget is used up, with no control plane to ask. Afterwards
//! the ledger holds exactly one event per request Envoy served — none lost, none doubled —
//! and exactly the cost computed independently for each; and Envoy, which missed every delta
//! of the outage and whose versions the restarted process never built, converges on the
//! whole snapshot once, then deltas again.
//!
//! Run with `cargo test -p tollgate-tests --test outage` (about 30 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::control_plane::Spend;

use common::{chat, client, cost_of, dec, ledger_reaches, served_once, snapshot_polls, Steady};

const OUTAGE: Duration = Duration::from_secs(10);

#[test]
fn control_plane_down_10s_envoy_keeps_enforcing_and_the_ledger_gets_every_request_once() {
    let Some(mut stack) = common::stack() else {
        return;
    };
    let api = stack.api().unwrap();
    let steady = api.create_capped_chain("steady", "10").unwrap();
    // About ten requests' worth (gpt-4o-mini costs about $0.00001 per request here).
    let capped = api.create_chain("capped").unwrap();
    let capped_budget = api
        .create_budget("key", &capped.key_id, "total", "0.0001")
        .unwrap();
    stack.wait_for_sync().unwrap();

    // Steady traffic: one request every 40 ms until told to stop (bounded in count too).
    let traffic = Steady::warmed(&stack, &steady.secret);

    stack.cp.stop();
    let down = Instant::now();
    // Enforcement without the control plane: the capped key is served until its budget (last
    // snapshot + local spend + reservations) has no room for another request's worst case.
    let http = client();
    let mut capped_served = Vec::new();
    let mut refusal = None;
    for n in 0..50 {
        let (req, status, body) = chat(&http, &stack.url(), &capped.secret, &format!("capped {n}"));
        match status {
            200 => capped_served.push(req),
            429 => {
                refusal = Some(body);
                break;
            }
            other => panic!("capped request {n}: {other} {body}"),
        }
    }
    let refusal = refusal.expect("the capped key was never refused during the outage");
    assert_eq!(
        refusal["error"]["budget"]["id"],
        capped_budget.as_str(),
        "{refusal}"
    );
    assert!(!capped_served.is_empty());
    let capped_cost = cost_of(&capped_served);
    assert!(capped_cost <= dec("0.0001"), "overspent: {capped_cost}");
    assert!(
        down.elapsed() < OUTAGE,
        "the capped requests outlasted the outage"
    );
    thread::sleep(Duration::from_secs(3));
    let failures = stack.envoy.stat("tollgate_sync_failures").unwrap();
    assert!(failures > 0, "the sync service never noticed the outage");
    // An operator prices a new model on the database while the server is down: the version
    // moves past whatever Envoy holds. (Without it Envoy may hold the database's current
    // version, when its last poll came after the last usage batch committed; the restarted
    // process then answers 304, rightly, and no whole snapshot is needed.)
    let prices = stack.dir.join("outage-prices.json");
    std::fs::write(
        &prices,
        serde_json::to_vec(&serde_json::json!({"outage-imported-model": {
            "litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}))
        .unwrap(),
    )
    .unwrap();
    let imported = stack.cp.import_prices(&prices).unwrap();
    assert!(imported.starts_with("imported 1 models"), "{imported}");
    thread::sleep(OUTAGE.saturating_sub(down.elapsed()));

    stack.cp.restart().unwrap();
    eprintln!(
        "control plane down for {:?}, {failures} sync failures counted by then",
        down.elapsed()
    );
    thread::sleep(Duration::from_millis(1500));
    // Every served request exactly once, at exactly its price.
    let served = served_once(&stack, &steady.key_id, traffic.finish(), 100);
    ledger_reaches(
        &stack,
        "key",
        &capped.key_id,
        Spend {
            requests: capped_served.len() as u64,
            total_usd: capped_cost,
        },
    );
    // Nothing arrives twice later (a retried batch is idempotent).
    thread::sleep(stack.sync_interval() * 4);
    let again = api_spend(&stack, &steady.key_id);
    assert_eq!(again.requests, served.len() as u64);
    // The restarted control plane built none of the versions Envoy held before (the import
    // moved the database past them): Envoy got the whole snapshot from it once, then deltas,
    // and holds its current version.
    stack.wait_for_sync().unwrap();
    let (deltas, whole, _) = snapshot_polls(&stack.cp.url());
    assert!(
        whole >= 1 && deltas >= 1,
        "after the restart: {whole} whole, {deltas} deltas"
    );
}

fn api_spend(stack: &tollgate_tests::Stack, key: &str) -> Spend {
    stack.api().unwrap().spend("key", key).unwrap()
}
