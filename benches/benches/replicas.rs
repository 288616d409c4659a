//! Ingestion with 1, 2 and 4 control-plane replicas on one PostgreSQL (issue 18, goal ≥ 1.6×
//! from 1 to 2 replicas). Each replica is what a `tollgate serve` process holds: its own
//! store (connection pool), snapshot builder, reporter cache and router, here in one process
//! (the runtime's two worker threads: this machine's cores). Each replica has two posters
//! (two Envoys' sync services, each its own enrolled reporter) sending 1,000-event batches one
//! at a time, as the filter does; all of them hit the same fleet (10,000 budgets, 10,000 keys),
//! so replicas contend on the same budget counters, as they would in production. Reports the
//! events/s of every replica count, measured in one run, and the ratios to one replica.
//!
//! Run: `cargo bench -p tollgate-benches --bench replicas` (`TOLLGATE_REPLICA_BATCHES` batches
//! per poster, default 12; `TOLLGATE_REPLICAS` the replica counts, default `1,2,4`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::time::Instant;

use tollgate_benches::{
    batch, now, runtime, seeded_store, state, usage_post, Backend, BATCH, BUDGETS, KEYS, ORGS,
};
use tollgate_control_plane::http::app;
use tollgate_control_plane::store::Store;
use tower::ServiceExt;
const POSTERS_PER_REPLICA: usize = 2;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events per second ingested by `replicas` replicas on the database at `url`, each fed by
/// its posters for `batches` batches each. `round` keeps event ids unique across runs.
async fn run(url: &str, replicas: usize, batches: u64, round: u64) -> f64 {
    let mut posters = Vec::new();
    for r in 0..replicas {
        let store = Store::connect(url).await.unwrap();
        let me: Vec<_> = {
            let mut v = Vec::new();
            for p in 0..POSTERS_PER_REPLICA {
                let node = format!("bench-{round}-{r}-{p}");
                v.push(store.enroll_reporter(Some(&node), now()).await.unwrap());
            }
            v
        };
        let router = app(state(store).await);
        for reporter in me {
            // The requests built beforehand: what is timed is the control plane.
            let requests: Vec<_> = (0..batches)
                .map(|k| {
                    let b = batch(&reporter.reporter, k, BATCH, KEYS, ORGS, now());
                    usage_post(&reporter.secret, &b)
                })
                .collect();
            posters.push((router.clone(), requests));
        }
    }
    let started = Instant::now();
    let tasks: Vec<_> = posters
        .into_iter()
        .map(|(router, requests)| {
            tokio::spawn(async move {
                for req in requests {
                    let resp = router.clone().oneshot(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    (replicas * POSTERS_PER_REPLICA) as f64 * (batches * BATCH) as f64 / took
}

fn main() {
    let batches = env_or("TOLLGATE_REPLICA_BATCHES", 12u64);
    let counts: Vec<usize> = std::env::var("TOLLGATE_REPLICAS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let rt = runtime();
    rt.block_on(async {
        let db = seeded_store(Backend::Postgres, usize::try_from(ORGS).unwrap(), BUDGETS, usize::try_from(KEYS).unwrap()).await;
        db.store.close().await;
        // A warm-up round, untimed.
        run(&db.url, 1, 2, 0).await;
        let mut results = Vec::new();
        for (round, &n) in counts.iter().enumerate() {
            let rate = run(&db.url, n, batches, round as u64 + 1).await;
            println!(
                "replicas {n}: {rate:>8.0} events/s ({} posters, {batches} batches of {BATCH} each)",
                n * POSTERS_PER_REPLICA
            );
            results.push((n, rate));
        }
        if let Some(&(_, one)) = results.iter().find(|(n, _)| *n == 1) {
            for (n, rate) in &results {
                println!("replicas {n} / 1: {:.2}", rate / one);
            }
            if let Some((_, two)) = results.iter().find(|(n, _)| *n == 2) {
                let r = two / one;
                println!(
                    "goal ≥ 1.6× from 1 to 2 replicas: {:.2} {}",
                    r,
                    if r >= 1.6 { "met" } else { "NOT met" }
                );
            }
        }
    });
}
