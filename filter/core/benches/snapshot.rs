//! What a worker pays when a new snapshot version arrives: a full decode of a snapshot carrying
//! LiteLLM's whole price map and 10,000 keys, against a decode after the previous version
//! where only spend moved (the prices and keys sections are recognised and reused), which is
//! what happens every sync interval under traffic.
//! Run with `cargo bench -p tollgate-core --bench snapshot` (needs `.venv` from
//! `bash scripts/setup.sh`, for litellm's price map).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rust_decimal::Decimal;
use tollgate_core::budget::{Mode, Scope, WindowBounds};
use tollgate_core::identity::Principal;
use tollgate_core::snapshot::{KeyEntry, Snapshot, SnapshotBudget, SnapshotIndex};

fn litellm_map() -> Vec<u8> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/lib");
    let path = std::fs::read_dir(venv)
        .expect("no .venv: run bash scripts/setup.sh")
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("site-packages/litellm/model_prices_and_context_window_backup.json")
        })
        .find(|p| p.exists())
        .expect("litellm's price map is not in .venv: run bash scripts/setup.sh");
    std::fs::read(path).unwrap()
}

fn snapshot(version: u64, spent: Decimal) -> Snapshot {
    let book = tollgate_core::pricing::litellm::import(&litellm_map())
        .unwrap()
        .book;
    let keys = (0..10_000)
        .map(|i| KeyEntry {
            sha256: format!("{i:064x}"),
            principal: Principal {
                key: Some(format!("key-{i}")),
                user: Some(format!("user-{}", i % 100)),
                project: None,
                org: "acme".into(),
            },
        })
        .collect();
    let budgets = (0..1_000)
        .map(|i| SnapshotBudget {
            id: format!("b-{i}"),
            scope: Scope::Key,
            scope_id: format!("key-{i}"),
            limit_usd: Decimal::from(100),
            soft_limit_usd: None,
            mode: Mode::Enforce,
            window: WindowBounds::total(),
            spent_window_start: None,
            spent_usd: spent,
        })
        .collect();
    Snapshot {
        version,
        generated_at: 1_700_000_000,
        prices: Arc::new(book),
        budgets,
        keys: Arc::new(keys),
        reporters: [("envoy-1".to_string(), version * 10)].into(),
    }
}

fn benches(c: &mut Criterion) {
    let first = serde_json::to_vec(&snapshot(1, Decimal::ONE)).unwrap();
    let next = serde_json::to_vec(&snapshot(2, Decimal::TWO)).unwrap();
    eprintln!("snapshot: {} bytes", next.len());
    let previous = SnapshotIndex::decode(&first).unwrap();
    let mut g = c.benchmark_group("snapshot_decode");
    g.sample_size(20);
    g.bench_function("full", |b| {
        b.iter(|| SnapshotIndex::decode(black_box(&next)).unwrap())
    });
    g.bench_function("after_previous_version", |b| {
        b.iter(|| SnapshotIndex::decode_after(black_box(&next), Some(&previous)).unwrap())
    });
    g.finish();
}

criterion_group!(snapshot_decode, benches);
criterion_main!(snapshot_decode);
