//! Criterion benches of the per-request admission path: the budget decision over a 4-level
//! chain (key → user → project → org, with a daily and a monthly budget on the key) and the
//! estimate of a typical 2 KB OpenAI chat request.
//!
//! Each group carries its baseline in the same run, so figures can be quoted as ratios: the
//! decision against an empty chain, the estimate against serde_json merely validating the same
//! body (`IgnoredAny`) and against parsing it into a `serde_json::Value` (the naive filter).
//!
//! Run with `cargo bench -p tollgate-core --bench decision`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{criterion_group, criterion_main, Criterion};
use serde::de::IgnoredAny;
use tollgate_core::budget::{
    decide, window_at, BudgetState, FixedOffset, Mode, Period, Scope, WindowBounds,
};
use tollgate_core::estimate::{summarize, worst_case, EstimateConfig};
use tollgate_core::pricing::ModelPrice;
use tollgate_core::provider::ApiFormat;
use tollgate_core::Decimal;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn chain() -> Vec<BudgetState<'static>> {
    let b = |id, scope, limit: &str, spent: &str| BudgetState {
        id,
        scope,
        mode: Mode::Enforce,
        limit: d(limit),
        soft_limit: Some(d(limit) * d("0.8")),
        spent: d(spent),
        unsynced: d("0.0123"),
        reserved: d("0.0456"),
        resets_at: Some(1_767_225_600),
    };
    vec![
        b("key-daily", Scope::Key, "10", "3.141592"),
        b("key-monthly", Scope::Key, "200", "57.5"),
        b("user-monthly", Scope::User, "500", "120.25"),
        b("project-monthly", Scope::Project, "5000", "1999.99"),
        b("org-monthly", Scope::Org, "50000", "31234.5678"),
    ]
}

fn bench_decision(c: &mut Criterion) {
    let chain = chain();
    let estimate = d("0.0712");
    let mut g = c.benchmark_group("decision");
    g.bench_function("empty_chain_baseline", |b| {
        b.iter(|| black_box(decide(black_box(&[]), black_box(estimate), Mode::Enforce)))
    });
    g.bench_function("chain4_allow", |b| {
        b.iter(|| {
            black_box(decide(
                black_box(&chain),
                black_box(estimate),
                Mode::Enforce,
            ))
        })
    });
    let big = d("7");
    g.bench_function("chain4_deny", |b| {
        b.iter(|| black_box(decide(black_box(&chain), black_box(big), Mode::Enforce)))
    });
    let bounds = WindowBounds::compute(Period::Monthly, &FixedOffset::UTC, 1_760_000_000, 2);
    g.bench_function("window_at", |b| {
        b.iter(|| black_box(window_at(black_box(&bounds), black_box(1_761_000_000))))
    });
    g.finish();
}

/// A typical chat request of about 2 KB: a system prompt, a short exchange, a question.
fn chat_body() -> String {
    let para = "Tollgate puts dollar budgets on LLM traffic, enforced inline in Envoy. \
                It prices each request exactly and denies it before it reaches the provider \
                once a budget is spent. ";
    let body = format!(
        r#"{{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":512,"stream":true,
"messages":[
{{"role":"system","content":"You are a helpful assistant. {para}"}},
{{"role":"user","content":"Summarise this for me: {para}{para}{para}"}},
{{"role":"assistant","content":"It is a budget enforcer for LLM calls. {para}"}},
{{"role":"user","content":"And how are windows computed? {para}{para}{para}{para}"}}],
"user":"alice@example.com","metadata":{{"team":"search","ticket":"ENG-1234"}}}}"#
    );
    assert!((1_900..2_200).contains(&body.len()), "{}", body.len());
    body
}

fn bench_estimate(c: &mut Criterion) {
    let body = chat_body();
    let bytes = body.as_bytes();
    let cfg = EstimateConfig::default();
    let price = ModelPrice {
        max_output_tokens: Some(16_384),
        ..ModelPrice::flat(d("0.00000015"), d("0.0000006"))
    };
    let mut g = c.benchmark_group("estimate_2kb_chat");
    g.throughput(criterion::Throughput::Bytes(bytes.len() as u64));
    g.bench_function("serde_validate_baseline", |b| {
        b.iter(|| black_box(serde_json::from_slice::<IgnoredAny>(black_box(bytes)).unwrap()))
    });
    g.bench_function("serde_value_naive", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(bytes)).unwrap()))
    });
    g.bench_function("summarize", |b| {
        b.iter(|| {
            black_box(summarize(black_box(bytes), ApiFormat::OpenAiChat, None, &cfg).unwrap())
        })
    });
    g.bench_function("summarize_and_worst_case", |b| {
        b.iter(|| {
            let s = summarize(black_box(bytes), ApiFormat::OpenAiChat, None, &cfg).unwrap();
            black_box(worst_case(&s, black_box(&price), &cfg).unwrap())
        })
    });
    // What the filter does for this streaming chat request: one read, then the splice.
    g.bench_function("summarize_and_include_usage_rewrite", |b| {
        b.iter(|| {
            let s = summarize(black_box(bytes), ApiFormat::OpenAiChat, None, &cfg).unwrap();
            black_box(s.usage_rewrite(bytes).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decision, bench_estimate);
criterion_main!(benches);
