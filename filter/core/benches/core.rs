//! Criterion benches of the money engine's per-request work: the cost of one request, a
//! model lookup with a dated-snapshot fallback, and a local-state round trip as the filter
//! does per budget. Run with `cargo bench -p tollgate-core --bench core`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{criterion_group, criterion_main, Criterion};
use rust_decimal::Decimal;
use tollgate_core::cost::cost;
use tollgate_core::local_spend::LocalBudget;
use tollgate_core::pricing::{ModelPrice, PriceBook, Rates, ThresholdTier};
use tollgate_core::usage::Usage;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A long-context model with cache and reasoning rates: the most work `cost` does.
fn price() -> ModelPrice {
    ModelPrice {
        rates: Rates {
            input: d("0.00000125"),
            output: d("0.00001"),
            cache_read: Some(d("0.000000125")),
            cache_write_5m: Some(d("0.0000015625")),
            cache_write_1h: Some(d("0.0000025")),
            reasoning: Some(d("0.000012")),
        },
        tiers: vec![ThresholdTier {
            above_prompt_tokens: 200_000,
            inclusive: false,
            input: d("0.0000025"),
            output: Some(d("0.000015")),
            cache_read: Some(d("0.00000025")),
            cache_write_5m: None,
            cache_write_1h: None,
        }],
        ..ModelPrice::default()
    }
}

fn benches(c: &mut Criterion) {
    let p = price();
    let u = Usage {
        input_uncached: 1_234,
        cache_read: 20_000,
        cache_write_5m: 512,
        cache_write_1h: 256,
        output: 4_000,
        reasoning: 3_000,
        ..Usage::default()
    };
    c.bench_function("cost of one request", |b| {
        b.iter(|| cost(black_box(&p), black_box(&u)))
    });

    let mut book = PriceBook::default();
    for i in 0..2_000 {
        book.models.insert(format!("model-{i}"), p.clone());
    }
    book.models.insert("gpt-4o".into(), p.clone());
    c.bench_function("lookup dated snapshot name (2k models)", |b| {
        b.iter(|| book.lookup(black_box("gpt-4o-2024-08-06"), Some("openai")))
    });

    let mut state = LocalBudget::default();
    state.reserve(d("0.25")).unwrap();
    state.add_unsynced(1_735_689_600, d("12.3456789"));
    let bytes = state.encoded().to_vec();
    c.bench_function("local budget decode + reserve", |b| {
        b.iter(|| {
            let mut s = LocalBudget::decode(black_box(bytes.clone())).unwrap();
            s.reserve(d("0.01")).unwrap();
            s
        })
    });
}

criterion_group!(core, benches);
criterion_main!(core);
