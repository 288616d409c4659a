//! Criterion benches of whole request lifecycles through the wasmtime harness.
//!
//! - `lifecycle/noop/non_streaming`: the representative chat completion (JSON request,
//!   ~1 KB JSON response delivered as data + empty end of stream) through the no-op filter:
//!   the harness's own cost per request, the floor every filter figure sits on.
//! - `lifecycle/noop/streaming_100_chunks`: the same request answered by a 100-chunk SSE
//!   stream, one `proxy_on_response_body` per chunk.
//!
//! The real filter joins these groups once it exists; quote it as a ratio to the no-op line
//! of the same run (this machine is noisy). Run:
//! `CARGO_TARGET_DIR=... cargo bench -p tollgate-harness --bench lifecycle`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_harness::{bench::chat_completion_request, Request};

/// The representative request answered by a 100-event SSE stream (the last with usage).
fn streaming_request() -> Request {
    let body = chat_completion_request().body_chunks().concat();
    let head = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"gpt-4o-mini","#;
    let mut request = Request::post("/v1/chat/completions")
        .authority("api.openai.com")
        .header("authorization", "Bearer tg-bench-0123456789abcdef")
        .header("content-type", "application/json")
        .body(body)
        .response_header("content-type", "text/event-stream");
    for i in 0..99 {
        request = request.response_chunk(format!(
            "{head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    request.response_chunk(format!(
        "{head}\"choices\":[],\"usage\":{{\"prompt_tokens\":31,\"completion_tokens\":99,\"total_tokens\":130}}}}\n\ndata: [DONE]\n\n"
    ))
}

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle/noop");
    let mut host = common::noop_plugin().start().unwrap();

    let non_streaming = chat_completion_request();
    group.bench_function("non_streaming", |b| {
        b.iter(|| {
            let outcome = host.send(black_box(&non_streaming)).unwrap();
            black_box(outcome)
        })
    });

    let streaming = streaming_request();
    assert_eq!(streaming.response().body.len(), 100);
    group.bench_function("streaming_100_chunks", |b| {
        b.iter(|| {
            let outcome = host.send(black_box(&streaming)).unwrap();
            black_box(outcome)
        })
    });
    group.finish();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
