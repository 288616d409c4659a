//! Ingestion throughput: `POST /v1/usage` with 1,000-event batches through the whole router
//! (JSON decode, validation, ledger insert, spend counters, reporter acks, version bump in one
//! transaction), on SQLite and on PostgreSQL. Each event's chain (key, user, project,
//! org) hits three to four of a fleet's 10,000 budgets (10,000 keys, 100 orgs), so a batch
//! moves about 2,000 spend counters. Goal: ≥ 50,000 events/s, an absolute figure that follows
//! the disk's `fsync` latency; the goal that holds on any machine is the ratio to the floor
//! measured in the same run by `ingest_floor.rs` (≥ 0.6×).
//!
//! `decode_only` is the baseline of the same run (JSON decoding alone); `4_concurrent` posts
//! four batches from four reporters at once, as several Envoys do.
//!
//! Run: `cargo bench -p tollgate-benches --bench ingest`
//! (`TOLLGATE_BENCH_BACKENDS=sqlite` for one backend; the throughput line is events/s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_benches::{
    batch, now, runtime, seeded_store, selected_backends, state, total_of, usage_post, BATCH, KEYS,
    ORGS,
};
use tollgate_control_plane::http::app;
use tollgate_testkit::TestDb;
use tower::ServiceExt;

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    // Baseline in the same run: decoding the batch alone (what any server must do with it).
    let body = serde_json::to_vec(&batch("envoy-0", 0, BATCH, KEYS, ORGS, now())).unwrap();
    group.bench_function("decode_only/batch_1000", |b| {
        b.iter(|| serde_json::from_slice::<tollgate_core::event::UsageBatch>(&body).unwrap())
    });
    // What the ledger's per-event content hash (conflict detection, issue 13) adds to a batch.
    let parsed = batch("envoy-0", 0, BATCH, KEYS, ORGS, now());
    group.bench_function("content_hash_only/batch_1000", |b| {
        b.iter(|| {
            parsed
                .events
                .iter()
                .map(tollgate_control_plane::store::ledger::content_sha256)
                .count()
        })
    });
    for backend in selected_backends() {
        let TestDb {
            store: s,
            file: _guard,
            ..
        } = rt.block_on(seeded_store(backend, ORGS as usize, 10_000, KEYS as usize));
        // Each poster is an enrolled reporter posting with its secret (the path Envoys take).
        let enroll = |r: usize| {
            rt.block_on(s.enroll_reporter(Some(&format!("bench{r}")), now()))
                .unwrap()
        };
        let single = enroll(0);
        let concurrent = [enroll(1), enroll(2), enroll(3), enroll(4)];
        let state = rt.block_on(state(s));
        let router = app(state);
        let n = AtomicU64::new(0);
        group.bench_function(format!("{}/batch_1000", backend.as_str()), |b| {
            b.iter_custom(|iters| {
                rt.block_on(total_of(iters, || async {
                    let k = n.fetch_add(1, Ordering::SeqCst);
                    let sent = batch(&single.reporter, k, BATCH, KEYS, ORGS, now());
                    let req = usage_post(&single.secret, &sent);
                    let started = Instant::now();
                    let resp = router.clone().oneshot(req).await.unwrap();
                    let took = started.elapsed();
                    assert_eq!(resp.status(), 200);
                    took
                }))
            });
        });
        // Several Envoys report at once: 4 batches in flight from 4 reporters.
        group.throughput(Throughput::Elements(BATCH * 4));
        group.bench_function(
            format!("{}/4_concurrent_batches_1000", backend.as_str()),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(total_of(iters, || async {
                        let k = n.fetch_add(1, Ordering::SeqCst);
                        let reqs: Vec<_> = concurrent
                            .iter()
                            .map(|me| {
                                let sent = batch(&me.reporter, k, BATCH, KEYS, ORGS, now());
                                usage_post(&me.secret, &sent)
                            })
                            .collect();
                        let started = Instant::now();
                        let tasks: Vec<_> = reqs
                            .into_iter()
                            .map(|req| tokio::spawn(router.clone().oneshot(req)))
                            .collect();
                        for t in tasks {
                            assert_eq!(t.await.unwrap().unwrap().status(), 200);
                        }
                        started.elapsed()
                    }))
                });
            },
        );
        group.throughput(Throughput::Elements(BATCH));
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
