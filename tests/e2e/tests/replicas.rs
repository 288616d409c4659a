//! Two control-plane replicas on one PostgreSQL behind Envoy's control-plane cluster (the
//! second as the next priority, `envoy/tollgate.yaml`), and the first killed under steady
//! traffic (issue 18). Envoy's sync service moves to the standby once the health check finds
//! the first gone, and gets deltas from it (from the version it holds when the standby built
//! that version too, else the whole snapshot once: `control-plane/tests/snapshot_delta.rs`). Throughout, the snapshot version Envoy holds never goes back
//! (sampled every 50 ms), every request Envoy served is in the ledger exactly once at its
//! price (usage batches in flight when the replica died are posted again to the standby,
//! idempotent by event id), and a key revoked through the standby is refused within two sync
//! intervals of the health check's switch.
//!
//! Run with `cargo test -p tollgate-tests --test replicas` (about 20 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::{eventually, Database, StackOptions};

use common::{chat, client, served_once, snapshot_polls as polls, Steady};

#[test]
fn killing_a_replica_loses_nothing_counts_nothing_twice_and_never_goes_back() {
    if common::skip_postgres() {
        return;
    }
    let Some(mut stack) = common::stack_with(StackOptions {
        database: Database::Postgres,
        control_plane_standbys: 1,
        sync_interval_ms: 250,
        ..StackOptions::default()
    }) else {
        return;
    };
    let api = stack.api().unwrap();
    let steady = api.create_capped_chain("steady", "10").unwrap();
    let victim = api.create_chain("victim").unwrap();
    stack.wait_for_sync().unwrap();
    common::wait_key_known(&stack.url(), &victim.secret);
    let primary_deltas = polls(&stack.cp.url()).0;

    // The version Envoy holds, sampled until told to stop (bounded in count too).
    let stop = Arc::new(AtomicBool::new(false));
    let versions = {
        let (stop, admin) = (Arc::clone(&stop), stack.envoy.admin);
        thread::spawn(move || {
            let http = client();
            let mut seen = Vec::new();
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text = http
                    .get(format!(
                        "http://{admin}/stats?filter=tollgate_snapshot_version$"
                    ))
                    .send()
                    .and_then(|r| r.text());
                if let Some(v) = text.ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.split_once(": ").map(|(_, v)| v.trim().parse::<u64>()))
                        .and_then(Result::ok)
                }) {
                    seen.push(v);
                }
                thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let traffic = Steady::warmed(&stack, &steady.secret);
    assert!(
        polls(&stack.cp.url()).0 > primary_deltas,
        "the sync service takes deltas from the replica it is on"
    );

    // (Envoy may have polled the standby at start, before the first health check passed.)
    let standby = stack.standbys[0].url();
    let before = polls(&standby);
    stack.cp.stop();
    let killed = Instant::now();
    // From here on the standby is the control plane every helper talks to.
    std::mem::swap(&mut stack.cp, &mut stack.standbys[0]);
    // The standby answers deltas from the version Envoy holds when it built that version too
    // (its refresher builds every version it sees), else the whole snapshot once.
    let switched = eventually(Duration::from_secs(15), || {
        let now = polls(&standby);
        (now.0 + now.1 + now.2 > before.0 + before.1 + before.2).then(|| killed.elapsed())
    })
    .expect("the sync service never came to the standby");
    eventually(Duration::from_secs(10), || {
        (polls(&standby).0 > before.0).then_some(())
    })
    .expect("the standby never sent a delta");

    // A change made through the standby reaches Envoy.
    let api = stack.api().unwrap();
    api.revoke_key(&victim.key_id).unwrap();
    let revoked = Instant::now();
    let http = client();
    let refused = eventually(Duration::from_secs(15), || {
        let (_, status, _) = chat(&http, &stack.url(), &victim.secret, "victim");
        (status == 401).then(|| revoked.elapsed())
    })
    .expect("a key revoked through the standby was never refused");
    eprintln!(
        "standby serving {switched:?} after the kill (health check), a revocation through it \
         applied after {refused:?}"
    );
    assert!(
        refused <= common::two_intervals(&stack),
        "revocation took {refused:?}"
    );

    thread::sleep(Duration::from_millis(1000));
    let seen = traffic.finish();
    stop.store(true, Ordering::Relaxed);
    let versions = versions.join().unwrap();
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "Envoy's snapshot went back: {versions:?}"
    );
    // Every served request exactly once, at exactly its price, in the ledger both share.
    served_once(&stack, &steady.key_id, seen, 50);
}
