//! Snapshot build for 10,000 budgets + 100,000 keys (goal ≤ 50 ms), on SQLite and PostgreSQL:
//! - `cold`: a new builder reads everything (first build after start, or after a key change);
//! - `after_batch`: the common case, a build after a usage batch changed only counters and
//!   acknowledgements (keys, budgets and prices come from the builder's caches).
//!
//! Run: `cargo bench -p tollgate-benches --bench snapshot`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_benches::{batch, now, runtime, seeded_store, selected_backends, total_of};
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::metrics::Metrics;
use tollgate_control_plane::snapshot::Snapshots;
use tollgate_testkit::TestDb;

const BUDGETS: usize = 10_000;
const KEYS: usize = 100_000;
const ORGS: usize = 100;

fn snapshot(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for backend in selected_backends() {
        let TestDb {
            store: s,
            file: _guard,
            ..
        } = rt.block_on(seeded_store(backend, ORGS, BUDGETS, KEYS));
        let cache = BudgetCache::default();
        rt.block_on(s.ingest(
            &batch("envoy-0", 0, 1000, KEYS as u64, ORGS as u64, now()).events,
            now(),
            &cache,
        ))
        .unwrap();
        let built = rt
            .block_on(
                Snapshots::new(s.clone(), Clock::system(), Arc::new(Metrics::default())).rebuild(),
            )
            .unwrap();
        println!(
            "{}: snapshot of {} budgets and {} keys is {} bytes",
            backend.as_str(),
            built.counts.0,
            built.counts.1,
            built.bytes.len()
        );
        group.bench_function(
            format!("{}/cold_10k_budgets_100k_keys", backend.as_str()),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(total_of(iters, || async {
                        let snaps = Snapshots::new(
                            s.clone(),
                            Clock::system(),
                            Arc::new(Metrics::default()),
                        );
                        let started = Instant::now();
                        snaps.rebuild().await.unwrap();
                        started.elapsed()
                    }))
                });
            },
        );
        let snaps = Snapshots::new(s.clone(), Clock::system(), Arc::new(Metrics::default()));
        rt.block_on(snaps.rebuild()).unwrap();
        let n = AtomicU64::new(1);
        group.bench_function(
            format!("{}/after_batch_10k_budgets_100k_keys", backend.as_str()),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(total_of(iters, || async {
                        let k = n.fetch_add(1, Ordering::SeqCst);
                        let events =
                            batch("envoy-0", k, 100, KEYS as u64, ORGS as u64, now()).events;
                        s.ingest(&events, now(), &cache).await.unwrap();
                        let started = Instant::now();
                        let b = snaps.rebuild().await.unwrap();
                        let took = started.elapsed();
                        assert!(b.counts.1 == KEYS);
                        took
                    }))
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
