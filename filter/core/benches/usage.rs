//! Usage extraction cost per response, natively, each beside a naive serde_json baseline in
//! the same run (quote the ratio, not the absolute time: this machine is noisy).
//!
//! - `usage_json/*`: a ~1 KB OpenAI chat completion (`tests/fixtures/usage/openai_chat.json`).
//!   Goal: `tollgate` under 1 µs. Baseline: parse the body into a `serde_json::Value`.
//! - `usage_sse/*`: a 100-event OpenAI chat stream with `include_usage` (~150-byte chunks,
//!   the last one holding usage, then `[DONE]`), pushed one event per chunk. Goal: `tollgate`
//!   under 10 µs for the whole stream. Baseline: split on blank lines and parse every chunk.
//!
//! - `stream_framing/*` (issue 15): the same 100-event answer — a start, 98 text deltas of
//!   ~80 bytes, the usage — as an Anthropic SSE stream, as a Bedrock ConverseStream and as a
//!   Bedrock InvokeModel stream (AWS event-stream framing; InvokeModel's events are base64
//!   inside `chunk` events), each pushed one event per chunk. Goal: an event-stream event
//!   costs no more than an SSE event (compare the per-byte throughputs and the per-stream
//!   times, all from one run).
//!
//! Run: `cargo bench -p tollgate-core --bench usage`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::eventstream::encode_event;
use tollgate_core::usage::{from_json, EventStreamUsage, SseUsage};

const CHAT_JSON: &[u8] = include_bytes!("../tests/fixtures/usage/openai_chat.json");

/// 98 content chunks, the finish chunk, the usage chunk: 100 events, then `[DONE]`.
fn chat_stream_events() -> Vec<Vec<u8>> {
    let head = r#"data: {"id":"chatcmpl-BQy0l3Yt9ZC7cWqJ","object":"chat.completion.chunk","created":1745933001,"model":"gpt-4o-mini","#;
    let mut events: Vec<Vec<u8>> = (0..98)
        .map(|i| {
            format!(
                "{head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
            )
            .into_bytes()
        })
        .collect();
    events.push(
        format!("{head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n")
            .into_bytes(),
    );
    events.push(
        format!("{head}\"choices\":[],\"usage\":{{\"prompt_tokens\":1250,\"completion_tokens\":98,\"total_tokens\":1348,\"prompt_tokens_details\":{{\"cached_tokens\":1024}},\"completion_tokens_details\":{{\"reasoning_tokens\":0}}}}}}\n\n")
            .into_bytes(),
    );
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn json(c: &mut Criterion) {
    assert!(from_json(ApiFormat::OpenAiChat, CHAT_JSON).is_ok());
    let mut g = c.benchmark_group("usage_json");
    g.throughput(Throughput::Bytes(CHAT_JSON.len() as u64));
    g.bench_function("chat_1kb/tollgate", |b| {
        b.iter(|| from_json(ApiFormat::OpenAiChat, black_box(CHAT_JSON)))
    });
    g.bench_function("chat_1kb/baseline_serde_value", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(CHAT_JSON)).unwrap();
            v.get("usage")
                .and_then(|u| u.get("prompt_tokens"))
                .and_then(serde_json::Value::as_u64)
        })
    });
    g.finish();
}

fn sse(c: &mut Criterion) {
    let events = chat_stream_events();
    let total: usize = events.iter().map(Vec::len).sum();
    {
        let mut s = SseUsage::new(ApiFormat::OpenAiChat, 64 * 1024);
        events.iter().for_each(|e| s.push(e));
        let o = s.finish();
        assert!(o.complete && o.usage.is_some_and(|u| u.output == 98));
    }
    let mut g = c.benchmark_group("usage_sse");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("chat_100_events/tollgate", |b| {
        b.iter(|| {
            let mut s = SseUsage::new(ApiFormat::OpenAiChat, 64 * 1024);
            for e in &events {
                s.push(black_box(e));
            }
            s.finish()
        })
    });
    g.bench_function("chat_100_events/baseline_serde_each_event", |b| {
        b.iter(|| {
            let mut usage = None;
            for e in &events {
                let e = black_box(e.as_slice());
                let data = e.strip_prefix(b"data: ").unwrap_or(e).trim_ascii();
                if data == b"[DONE]" {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(data).unwrap();
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    usage = u
                        .get("completion_tokens")
                        .and_then(serde_json::Value::as_u64);
                }
            }
            usage
        })
    });
    g.finish();
}

/// The 98 delta texts every framing carries.
fn delta_texts() -> Vec<String> {
    (0..98)
        .map(|i| format!(" token {i:02} of a reply that streams text in deltas of this size.."))
        .collect()
}

/// Anthropic's events as JSON (`message_start`, deltas, `message_delta`, `message_stop`).
fn anthropic_events() -> Vec<String> {
    let mut events = vec![r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[],"usage":{"input_tokens":1250,"cache_read_input_tokens":0,"output_tokens":1}}}"#.to_string()];
    for t in delta_texts() {
        events.push(format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{t}"}}}}"#
        ));
    }
    events.push(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":98}}"#.to_string());
    events.push(r#"{"type":"message_stop"}"#.to_string());
    events
}

fn framing(c: &mut Criterion) {
    use base64::Engine;
    let sse: Vec<Vec<u8>> = anthropic_events()
        .iter()
        .map(|e| {
            let name = &e[9..e[9..].find('"').unwrap() + 9];
            format!("event: {name}\ndata: {e}\n\n").into_bytes()
        })
        .collect();
    let mut converse = vec![encode_event("messageStart", br#"{"role":"assistant"}"#)];
    for t in delta_texts() {
        converse.push(encode_event(
            "contentBlockDelta",
            format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{t}"}}}}"#).as_bytes(),
        ));
    }
    converse.push(encode_event("messageStop", br#"{"stopReason":"end_turn"}"#));
    converse.push(encode_event(
        "metadata",
        br#"{"usage":{"inputTokens":1250,"outputTokens":98,"totalTokens":1348},"metrics":{"latencyMs":900}}"#,
    ));
    let invoke: Vec<Vec<u8>> = anthropic_events()
        .iter()
        .map(|e| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(e);
            encode_event("chunk", format!(r#"{{"bytes":"{b64}"}}"#).as_bytes())
        })
        .collect();
    let mut g = c.benchmark_group("stream_framing");
    let cases: [(&str, ApiFormat, &Vec<Vec<u8>>, bool); 3] = [
        (
            "anthropic_sse_100_events",
            ApiFormat::AnthropicMessages,
            &sse,
            false,
        ),
        (
            "bedrock_converse_100_events",
            ApiFormat::BedrockConverse,
            &converse,
            true,
        ),
        (
            "bedrock_invoke_100_events",
            ApiFormat::BedrockInvoke,
            &invoke,
            true,
        ),
    ];
    for (name, format, events, binary) in cases {
        let run = || {
            if binary {
                let mut s = EventStreamUsage::new(format, 64 * 1024);
                events.iter().for_each(|e| s.push(black_box(e)));
                s.finish()
            } else {
                let mut s = SseUsage::new(format, 64 * 1024);
                events.iter().for_each(|e| s.push(black_box(e)));
                s.finish()
            }
        };
        let o = run();
        assert!(
            o.complete && o.usage.is_some_and(|u| u.output == 98),
            "{name}: {o:?}"
        );
        let total: usize = events.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(total as u64));
        g.bench_function(name, |b| b.iter(run));
    }
    g.finish();
}

criterion_group!(benches, json, sse, framing);
criterion_main!(benches);
