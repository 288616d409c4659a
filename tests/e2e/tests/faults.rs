//! Faults under load, each reporting the requests clients saw served against the events in
//! the ledger (the control plane killed and restarted is `outage.rs`):
//! - PostgreSQL crashes under the control plane and comes back: the control plane answers 5xx
//!   meanwhile and recovers by itself; the usage posted in the gap is retried by the sync
//!   service, and the ledger ends with every served request exactly once, at its exact cost;
//! - Envoy is killed (SIGKILL) under load: what it had not posted yet is lost, and that is
//!   bounded by the requests it served within one sync interval (plus scheduling slack) of
//!   the kill; a new Envoy on the same port meters everything again, and stopped gracefully
//!   (drain listeners, wait for `tollgate_queue_depth` 0, quit) it loses nothing;
//! - the upstream resets mid-stream (SSE and JSON): charged by the `missing_usage` policy
//!   (`charge_estimate`: the worst case; `charge_zero`: nothing) and counted as uncharged
//!   `truncated` in Envoy's `/stats` and in the ledger's events.
//!
//! Run with `cargo test -p tollgate-tests --test faults -- --nocapture` (about 40 s; the
//! figures are printed). The crash test starts a PostgreSQL server of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_testkit::postgres::start_server_with;
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book, worst_case};
use tollgate_tests::{eventually, Database, StackOptions};
use tollgate_upstream::{Api, Controls};

use common::{
    ledger_charges, ledger_has_chats, ledger_reaches, Steady, SCHEDULING_SLACK, SYNC_INTERVAL_MS,
};

/// How long PostgreSQL stays down.
const PG_DOWN: Duration = Duration::from_secs(5);

#[test]
fn postgres_crash_under_the_control_plane_loses_no_usage() {
    if tollgate_tests::skip_envoy() || common::skip_postgres() {
        return;
    }
    // A server of its own with PostgreSQL's durable defaults: the shared test server runs
    // without fsync and synchronous commit, and loses its last acknowledged commits in a
    // crash — as any PostgreSQL would with those settings.
    let server = start_server_with(true).unwrap_or_else(|e| panic!("{e}"));
    let Some(mut stack) = common::stack_with(StackOptions {
        database: Database::Url(server.admin_url.clone()),
        sync_interval_ms: SYNC_INTERVAL_MS,
        ..StackOptions::default()
    }) else {
        return;
    };
    let api = stack.api().unwrap();
    let chain = api.create_capped_chain("pg", "10").unwrap();
    stack.wait_for_sync().unwrap();

    let traffic = Steady::start(
        &stack.url(),
        &chain.secret,
        "pg request",
        Duration::from_millis(40),
    );
    thread::sleep(Duration::from_millis(1500));
    server.crash().unwrap();
    let down = Instant::now();
    thread::sleep(PG_DOWN / 2);
    // The control plane stays up and says it cannot work: usage posts fail (and are retried).
    let ready = reqwest::blocking::get(format!("{}/readyz", stack.cp.url())).unwrap();
    assert!(
        ready.status().is_server_error(),
        "/readyz with PostgreSQL down: {}",
        ready.status()
    );
    thread::sleep(PG_DOWN.saturating_sub(down.elapsed()));
    server.start_again().unwrap();
    let failures = stack.envoy.stat("tollgate_sync_failures").unwrap();
    thread::sleep(Duration::from_millis(1500));
    let seen = traffic.finish();
    stack.check_running().unwrap();
    assert!(
        seen.failed.is_empty(),
        "Envoy kept serving from its snapshot: {:?}",
        seen.failed
    );
    assert!(
        failures > 0,
        "no usage post failed while PostgreSQL was down"
    );

    let served = seen.served_requests();
    let took = ledger_has_chats(&stack, &chain.key_id, &served);
    // Nothing arrives twice later (the retried batches are idempotent).
    thread::sleep(stack.sync_interval() * 4);
    assert_eq!(
        api.spend("key", &chain.key_id).unwrap().requests,
        served.len() as u64
    );
    eprintln!(
        "postgres crash: down {PG_DOWN:?}; {} served, {} in the ledger (caught up {took:?} \
         after the traffic stopped), {failures} sync failures while down",
        served.len(),
        served.len()
    );
}

#[test]
fn envoy_kill_loses_at_most_one_sync_interval_and_a_drained_stop_loses_nothing() {
    let Some(mut stack) = common::stack() else {
        return;
    };
    let api = stack.api().unwrap();
    let before = api.create_chain("before").unwrap();
    let after = api.create_chain("after").unwrap();
    stack.wait_for_sync().unwrap();

    // Three clients back to back: the busiest this test machine can be while staying fair.
    let clients: Vec<Steady> = (0..3)
        .map(|i| {
            Steady::start(
                &stack.url(),
                &before.secret,
                &format!("client {i}"),
                Duration::ZERO,
            )
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    stack.envoy.proc.kill();
    let killed = Instant::now();
    let seen: Vec<_> = clients.into_iter().map(Steady::finish).collect();
    let served: Vec<Value> = seen.iter().flat_map(|s| s.served_requests()).collect();
    // What the sync service held in memory: requests settled since its last post, at most
    // one sync interval (plus the post's round trip, within the slack) before the kill.
    let window = stack.sync_interval() + SCHEDULING_SLACK;
    let recent = seen
        .iter()
        .flat_map(|s| &s.served)
        .filter(|(_, at)| *at + window >= killed)
        .count();

    // The ledger settles on what was posted before the kill.
    let mut last = None;
    let settled = eventually(Duration::from_secs(10), || {
        let s = api.spend("key", &before.key_id).unwrap();
        let same = last == Some(s.requests);
        last = Some(s.requests);
        thread::sleep(stack.sync_interval());
        same.then_some(s)
    })
    .unwrap();
    let stored = settled.requests as usize;
    let lost = served.len().saturating_sub(stored);
    // A request settled (and posted) just before its last bytes reached the client is in the
    // ledger though the client saw it fail: at most one per client.
    assert!(
        stored <= served.len() + seen.len(),
        "{stored} events for {} served requests",
        served.len()
    );
    assert!(
        lost <= recent,
        "lost {lost} events, more than the {recent} served in the last {window:?} before the kill"
    );

    // A new Envoy on the same port starts from the snapshot and meters everything again; this
    // one is stopped gracefully: listeners drained, the usage queue flushed
    // (`tollgate_queue_depth` 0 after a sync tick), then quit — and loses nothing.
    let port = stack.envoy.listener.port();
    stack.envoy = stack.start_envoy(port, None).unwrap();
    stack.wait_for_sync().unwrap();
    common::wait_key_known(&stack.url(), &after.secret);
    let traffic = Steady::start(
        &stack.url(),
        &after.secret,
        "after restart",
        Duration::from_millis(10),
    );
    thread::sleep(Duration::from_secs(2));
    let admin = format!("http://{}", stack.envoy.admin);
    let http = common::client();
    http.post(format!("{admin}/drain_listeners"))
        .send()
        .unwrap()
        .error_for_status()
        .unwrap();
    let again = traffic.finish();
    thread::sleep(stack.sync_interval() * 2);
    // Bounded generously: on a loaded 2-core machine the debug-built control plane's answer
    // and Envoy's admin `/stats` (a 5 s client timeout) each take seconds, and a post that
    // timed out waits out its backoff before the next (CI failed once at 10 s).
    let mut last = None;
    let flushed = eventually(Duration::from_secs(30), || {
        let depth = stack.envoy.stat("tollgate_queue_depth");
        let empty = matches!(depth, Ok(0));
        last = Some(depth.map_err(|e| e.to_string()));
        empty.then_some(())
    });
    assert!(
        flushed.is_some(),
        "the usage queue never emptied: last tollgate_queue_depth {last:?}, \
         tollgate_sync_failures {:?}, tollgate_sync_enrolled {:?}\n{}",
        stack.envoy.stat("tollgate_sync_failures").ok(),
        stack.envoy.stat("tollgate_sync_enrolled").ok(),
        stack.logs()
    );
    http.post(format!("{admin}/quitquitquit"))
        .send()
        .unwrap()
        .error_for_status()
        .unwrap();
    assert!(
        stack
            .envoy
            .proc
            .wait_exit(Duration::from_secs(30))
            .is_some(),
        "envoy did not quit"
    );
    // Requests refused once the listener closed are the only failures.
    assert!(
        again.failed.iter().all(|(_, status, _)| *status == 0),
        "{:?}",
        again.failed
    );
    let again = again.served_requests();
    ledger_has_chats(&stack, &after.key_id, &again);
    eprintln!(
        "envoy kill -9: {} served before the kill, {stored} in the ledger, {lost} lost \
         (bound: {recent} served in the last {window:?}); restarted, then drained and quit: \
         {} served, {} in the ledger",
        served.len(),
        again.len(),
        again.len()
    );
}

/// A streamed and a JSON chat request the mock cuts short, and a whole one.
fn cut_requests(label: &str) -> [(Value, Option<&'static str>); 3] {
    let req = |stream: bool, text: &str| {
        json!({"model": "gpt-4o-mini", "max_tokens": 40, "stream": stream,
               "messages": [{"role": "user", "content": format!("{label} {text}")}]})
    };
    [
        (req(true, "stream cut"), Some("2")),
        (req(false, "json cut"), Some("40")),
        (req(false, "whole"), None),
    ]
}

#[test]
fn upstream_reset_mid_stream_is_charged_by_policy_and_counted() {
    let Some(stack) = common::stack() else {
        return;
    };
    // The stack's Envoy charges the estimate (the default); a second one charges nothing.
    let zero_envoy = stack
        .start_envoy(0, Some(&json!({"missing_usage": "charge_zero"})))
        .unwrap();
    let api = stack.api().unwrap();
    let book = litellm_book().unwrap();
    // A connection per request: a reset response leaves its connection dead, and a pooled
    // dead connection would fail the next request before it reaches Envoy.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    const ROUNDS: usize = 3;
    stack.wait_for_sync().unwrap();
    stack.wait_for_sync_of(&zero_envoy).unwrap();

    for (policy, envoy) in [("estimate", &stack.envoy), ("zero", &zero_envoy)] {
        let chain = api.create_chain(policy).unwrap();
        stack.wait_for_sync_of(envoy).unwrap();
        common::wait_key_known(&format!("http://{}", envoy.listener), &chain.secret);
        let mut want = Decimal::ZERO;
        for round in 0..ROUNDS {
            for (req, cut) in cut_requests(&format!("{policy} {round}")) {
                let mut r = http
                    .post(format!("http://{}/v1/chat/completions", envoy.listener))
                    .bearer_auth(&chain.secret)
                    .json(&req);
                if let Some(n) = cut {
                    r = r.header("x-mock-truncate-after", n);
                }
                // A cut request gets its 200, then a body cut short (an error reading it).
                let whole = r.send().map_err(|e| format!("{e:?}")).and_then(|resp| {
                    let status = resp.status();
                    match resp.text() {
                        Ok(text) if status == 200 => Ok(text),
                        Ok(text) => Err(format!("{status}: {text}")),
                        Err(e) => Err(format!("{status}: {e:?}")),
                    }
                });
                if let (Some(_), Err(e)) = (cut, &whole) {
                    assert!(e.starts_with("200 OK"), "{policy}: a cut request: {e}");
                }
                match cut {
                    None => {
                        if let Err(e) = whole {
                            panic!("{policy}: a whole response failed: {e}\n{}", stack.logs());
                        }
                        want += expected(book, Api::OpenAiChat, &req, &Controls::default())
                            .unwrap()
                            .1;
                    }
                    Some(_) if policy == "estimate" => {
                        want += worst_case(book, Api::OpenAiChat, &req).unwrap();
                    }
                    Some(_) => {}
                }
            }
        }
        let cut = 2 * ROUNDS;
        ledger_reaches(
            &stack,
            "key",
            &chain.key_id,
            Spend {
                requests: (3 * ROUNDS) as u64,
                total_usd: want,
            },
        );
        let rows = ledger_charges(&stack, &chain.key_id);
        assert_eq!(
            rows,
            vec![
                ("actual".to_string(), None, ROUNDS as i64),
                (
                    policy.to_string(),
                    Some("truncated".to_string()),
                    cut as i64
                ),
            ],
            "{policy}: ledger rows by charge"
        );
        let counted = envoy.stat("tollgate_uncharged_truncated").unwrap();
        assert_eq!(counted, cut as u64, "{policy}: Envoy's uncharged counter");
        eprintln!(
            "upstream reset, charge_{policy}: {cut} cut + {ROUNDS} whole served; ledger \
             {rows:?}, total {want}; tollgate_uncharged_truncated = {counted}"
        );
    }
}
