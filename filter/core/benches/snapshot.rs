//! What a new snapshot version costs, for a snapshot carrying LiteLLM's whole price map, 1,000
//! budgets and 10,000 keys: the sync service applying the whole document (an Envoy starting)
//! against applying a delta where every budget's spend moved (every sync interval under
//! traffic); a worker loading the new version's sections (the spend section decoded, the
//! definitions and the price book reused); and a key looked up in its bucket (a worker's key
//! cache miss).
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
use tollgate_core::snapshot::sections::{key_bucket, principal_in_bucket, Held};
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
            sha256: tollgate_core::identity::key_hash(&format!("tg-bench-{i}")),
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
        .collect::<Vec<_>>();
    Snapshot {
        version,
        generated_at: 1_700_000_000,
        prices: Arc::new(book),
        budgets: Arc::new(budgets),
        keys: Arc::new(keys),
        reporters: [("envoy-1".to_string(), version * 10)].into(),
    }
}

fn benches(c: &mut Criterion) {
    let whole = snapshot(1, Decimal::ONE);
    let first = serde_json::to_vec(&whole).unwrap();
    // Every budget's spend moved: one short row each.
    let rows: Vec<_> = whole
        .budgets
        .iter()
        .map(|b| (b.id.clone(), None::<i64>, Decimal::TWO))
        .collect();
    let delta = serde_json::to_vec(&serde_json::json!({
        "version": 2, "generated_at": 1_700_000_001, "base": 1, "spend": rows,
        "reporters": {"envoy-1": 20}
    }))
    .unwrap();
    eprintln!(
        "snapshot: whole {} bytes, spend delta {} bytes",
        first.len(),
        delta.len()
    );
    let mut held = Held::default();
    held.apply(&first).unwrap();
    let mut g = c.benchmark_group("snapshot_sync");
    g.sample_size(20);
    g.bench_function("apply_whole", |b| {
        b.iter(|| Held::default().apply(black_box(&first)).unwrap())
    });
    g.bench_function("apply_spend_delta", |b| {
        b.iter_batched_ref(
            || {
                let mut h = Held::default();
                h.apply(&first).unwrap();
                h
            },
            |h| h.apply(black_box(&delta)).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();

    let prices = held.prices_json().as_bytes().to_vec();
    let before = held.budgets_json();
    let previous = SnapshotIndex::from_sections(held.manifest, None, |s| {
        Some(if s == "prices" {
            prices.clone()
        } else {
            before.clone()
        })
    })
    .unwrap();
    held.apply(&delta).unwrap();
    let budgets = held.budgets_json();
    let mut g = c.benchmark_group("snapshot_worker");
    g.bench_function("load_new_version", |b| {
        b.iter(|| {
            SnapshotIndex::from_sections(held.manifest, Some(&previous), |_| Some(budgets.clone()))
                .unwrap()
        })
    });
    let hash = tollgate_core::identity::key_hash("tg-bench-4321");
    let bucket = held.bucket(key_bucket(&hash)).as_bytes().to_vec();
    g.bench_function("key_in_bucket", |b| {
        b.iter(|| principal_in_bucket(black_box(&bucket), &hash).unwrap())
    });
    g.finish();
}

criterion_group!(snapshot_sections, benches);
criterion_main!(snapshot_sections);
