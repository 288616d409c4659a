//! Every endpoint of the mock upstream over a real socket: JSON and SSE shapes, OpenAI's
//! `include_usage` on and off, the `x-mock-*` controls, and that each reported usage equals
//! `usage_for`. Also starts the binary once to check its CLI contract.
//!
//! Run with `cargo test -p tollgate-upstream --test endpoints`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_upstream::usage::{reply_text, MAX_TEXT_CHUNKS};
use tollgate_upstream::{usage_for, Api, Controls, Options, Usage};

/// A response, read whole (or up to where the server cut it).
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// The body ended with a transport error (the server dropped the connection).
    cut: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// SSE events as (event name, data).
    fn events(&self) -> Vec<(Option<String>, String)> {
        let text = String::from_utf8(self.body.clone())
            .unwrap()
            .replace("\r\n", "\n");
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut name = None;
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (name, data)
            })
            .collect()
    }

    fn event_json(&self) -> Vec<(Option<String>, Value)> {
        self.events()
            .into_iter()
            .filter(|(_, d)| d != "[DONE]")
            .map(|(n, d)| (n, serde_json::from_str(&d).unwrap()))
            .collect()
    }
}

async fn server() -> SocketAddr {
    server_with(Options::default()).await
}

async fn server_with(options: Options) -> SocketAddr {
    let (addr, _task) = tollgate_upstream::spawn(options).await.unwrap();
    addr
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut body = Vec::new();
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    Reply {
        status,
        content_type,
        body,
        cut,
    }
}

fn chat_request() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Count the tokens in this sentence, please."}]})
}

fn anthropic_request() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Be brief.",
           "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there, Claude"}]}]})
}

fn gemini_request() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
           "generationConfig": {"maxOutputTokens": 64}})
}

/// Reads OpenAI chat `usage` into the neutral buckets.
fn from_chat_usage(u: &Value) -> Usage {
    let prompt = u["prompt_tokens"].as_u64().unwrap();
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let out = u["completion_tokens"].as_u64().unwrap();
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + out);
    Usage {
        input_uncached: prompt - cached,
        cache_read: cached,
        output: out,
        reasoning: u["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap(),
        ..Usage::default()
    }
}

fn from_responses_usage(u: &Value) -> Usage {
    let input = u["input_tokens"].as_u64().unwrap();
    let cached = u["input_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let out = u["output_tokens"].as_u64().unwrap();
    assert_eq!(u["total_tokens"].as_u64().unwrap(), input + out);
    Usage {
        input_uncached: input - cached,
        cache_read: cached,
        output: out,
        reasoning: u["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap(),
        ..Usage::default()
    }
}

fn from_anthropic_usage(u: &Value) -> Usage {
    let w5 = u["cache_creation"]["ephemeral_5m_input_tokens"]
        .as_u64()
        .unwrap();
    let w1 = u["cache_creation"]["ephemeral_1h_input_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(u["cache_creation_input_tokens"].as_u64().unwrap(), w5 + w1);
    Usage {
        input_uncached: u["input_tokens"].as_u64().unwrap(),
        cache_read: u["cache_read_input_tokens"].as_u64().unwrap(),
        cache_write_5m: w5,
        cache_write_1h: w1,
        output: u["output_tokens"].as_u64().unwrap(),
        // Anthropic does not report reasoning apart; the test compares it separately.
        reasoning: 0,
        web_searches: u["server_tool_use"]["web_search_requests"]
            .as_u64()
            .unwrap(),
        ..Usage::default()
    }
}

fn from_gemini_usage(u: &Value) -> Usage {
    let prompt = u["promptTokenCount"].as_u64().unwrap();
    let cached = u
        .get("cachedContentTokenCount")
        .map_or(0, |v| v.as_u64().unwrap());
    let cand = u["candidatesTokenCount"].as_u64().unwrap();
    let thoughts = u
        .get("thoughtsTokenCount")
        .map_or(0, |v| v.as_u64().unwrap());
    assert_eq!(
        u["totalTokenCount"].as_u64().unwrap(),
        prompt + cand + thoughts
    );
    Usage {
        input_uncached: prompt - cached,
        cache_read: cached,
        output: cand + thoughts,
        reasoning: thoughts,
        ..Usage::default()
    }
}

fn controls(cached: u64, w5: u64, w1: u64, reasoning: u64) -> Controls {
    Controls {
        cached_tokens: cached,
        cache_write_5m: w5,
        cache_write_1h: w1,
        reasoning_tokens: reasoning,
        ..Controls::default()
    }
}

#[tokio::test]
async fn chat_json_reports_the_rule_and_the_shape_openai_uses() {
    let addr = server().await;
    let req = chat_request();
    let r = post(addr, "/v1/chat/completions", &[], &req).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json")
    );
    let v = r.json();
    let want = usage_for(Api::OpenAiChat, &req, &Controls::default()).unwrap();
    assert_eq!(from_chat_usage(&v["usage"]), want);
    // 14 + 42 = 56 bytes → 14 prompt tokens; output 8 + 14 % 17 = 22, capped by the default 16.
    assert_eq!((want.input_uncached, want.output), (14, 16));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], reply_text(16));
    // No explicit cap was set, so the default does not make it "length".
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let mut capped = req.clone();
    capped["max_completion_tokens"] = json!(5);
    let v = post(addr, "/v1/chat/completions", &[], &capped)
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage_anywhere() {
    let addr = server().await;
    let mut req = chat_request();
    req["stream"] = json!(true);
    let r = post(addr, "/v1/chat/completions", &[], &req).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "text/event-stream")
    );
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks = r.event_json();
    // Role chunk, 16 word chunks, finish chunk.
    assert_eq!(chunks.len(), 18);
    let mut text = String::new();
    for (name, c) in &chunks {
        assert!(name.is_none());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c.get("usage").is_none(), "usage without include_usage: {c}");
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(text, reply_text(16));
    assert_eq!(chunks[0].1["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks.last().unwrap().1["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_in_a_usage_chunk() {
    let addr = server().await;
    let mut req = chat_request();
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let c = controls(6, 0, 0, 4);
    let r = post(
        addr,
        "/v1/chat/completions",
        &[
            ("x-mock-cached-tokens", "6"),
            ("x-mock-reasoning-tokens", "4"),
        ],
        &req,
    )
    .await;
    let raw = r.events();
    let (last_data, rest) = raw.split_last().unwrap();
    assert_eq!(last_data.1, "[DONE]");
    let (usage_chunk, others) = rest.split_last().unwrap();
    for (_, data) in others {
        // The exact bytes OpenAI ends such chunks with, which meters rely on.
        assert!(data.ends_with(r#","usage":null}"#), "{data}");
    }
    let u: Value = serde_json::from_str(&usage_chunk.1).unwrap();
    assert_eq!(u["choices"], json!([]));
    let want = usage_for(Api::OpenAiChat, &req, &c).unwrap();
    assert_eq!(from_chat_usage(&u["usage"]), want);
    assert_eq!((want.cache_read, want.reasoning, want.output), (6, 4, 20));
}

#[tokio::test]
async fn responses_json_and_stream() {
    let addr = server().await;
    let req = json!({"model": "gpt-4.1", "instructions": "Answer briefly.",
                     "input": [{"role": "user", "content": "What is a tollgate?"}]});
    let c = controls(3, 0, 0, 0);
    let v = post(
        addr,
        "/v1/responses",
        &[("x-mock-cached-tokens", "3")],
        &req,
    )
    .await
    .json();
    let want = usage_for(Api::OpenAiResponses, &req, &c).unwrap();
    assert_eq!(from_responses_usage(&v["usage"]), want);
    assert_eq!(
        (v["object"].as_str(), v["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        reply_text(want.text_tokens())
    );

    let mut s = req.clone();
    s["stream"] = json!(true);
    let r = post(addr, "/v1/responses", &[("x-mock-cached-tokens", "3")], &s).await;
    let events = r.event_json();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let mut text = String::new();
    for (i, (name, e)) in events.iter().enumerate() {
        assert_eq!(
            e["type"].as_str(),
            name.as_deref(),
            "data.type matches event:"
        );
        assert_eq!(e["sequence_number"], i);
        if name.as_deref() == Some("response.output_text.delta") {
            text.push_str(e["delta"].as_str().unwrap());
        }
    }
    assert_eq!(text, reply_text(want.text_tokens()));
    assert_eq!(events[0].1["response"]["usage"], Value::Null);
    let done = &events.last().unwrap().1["response"];
    assert_eq!(from_responses_usage(&done["usage"]), want);

    // A binding max_output_tokens makes the reply incomplete, as OpenAI reports it.
    s["max_output_tokens"] = json!(2);
    let r = post(addr, "/v1/responses", &[], &s).await;
    let (name, last) = r.event_json().pop().unwrap();
    assert_eq!(name.as_deref(), Some("response.incomplete"));
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn embeddings_report_prompt_tokens_only() {
    let addr = server().await;
    let req = json!({"model": "text-embedding-3-small", "input": ["first text", "second one"],
                     "dimensions": 4});
    let v = post(
        addr,
        "/v1/embeddings",
        &[("x-mock-reasoning-tokens", "9")],
        &req,
    )
    .await
    .json();
    let want = usage_for(Api::OpenAiEmbeddings, &req, &controls(0, 0, 0, 9)).unwrap();
    assert_eq!(want.input_uncached, 5); // 10 + 10 bytes
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    // The SDK's default: base64 of little-endian f32s (4 floats → 16 bytes → 24 chars).
    let mut b = req.clone();
    b["encoding_format"] = json!("base64");
    let v = post(addr, "/v1/embeddings", &[], &b).await.json();
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn anthropic_json_and_stream_with_cache_headers() {
    let addr = server().await;
    let req = anthropic_request();
    let headers = [
        ("x-mock-cached-tokens", "100"),
        ("x-mock-cache-write-5m", "20"),
        ("x-mock-cache-write-1h", "30"),
        ("x-mock-reasoning-tokens", "7"),
    ];
    let c = controls(100, 20, 30, 7);
    let want = usage_for(Api::AnthropicMessages, &req, &c).unwrap();
    let v = post(addr, "/v1/messages", &headers, &req).await.json();
    assert_eq!(
        from_anthropic_usage(&v["usage"]),
        Usage {
            reasoning: 0,
            ..want
        }
    );
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], reply_text(want.text_tokens()));

    let mut s = req.clone();
    s["stream"] = json!(true);
    let r = post(addr, "/v1/messages", &headers, &s).await;
    let events = r.event_json();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["output_tokens"], 1);
    let delta = &events[names.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    // message_start's input and cache fields plus message_delta's output = the usage.
    let mut merged = from_anthropic_usage(start);
    merged.output = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(
        merged,
        Usage {
            reasoning: 0,
            ..want
        }
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, e)| e["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, reply_text(want.text_tokens()));
}

#[tokio::test]
async fn gemini_json_sse_and_array() {
    let addr = server().await;
    let req = gemini_request();
    let headers = [
        ("x-mock-cached-tokens", "2"),
        ("x-mock-reasoning-tokens", "5"),
    ];
    let want = usage_for(Api::Gemini, &req, &controls(2, 0, 0, 5)).unwrap();
    let path = "/v1beta/models/gemini-2.5-flash";
    let v = post(addr, &format!("{path}:generateContent"), &headers, &req)
        .await
        .json();
    assert_eq!(from_gemini_usage(&v["usageMetadata"]), want);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let r = post(
        addr,
        &format!("{path}:streamGenerateContent?alt=sse"),
        &headers,
        &req,
    )
    .await;
    assert_eq!(r.content_type, "text/event-stream");
    assert!(r.body.ends_with(b"\r\n\r\n"), "Gemini ends events in CRLF");
    let chunks = r.event_json();
    assert_eq!(chunks.len() as u64, want.text_tokens());
    let last = &chunks.last().unwrap().1;
    assert_eq!(from_gemini_usage(&last["usageMetadata"]), want);
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(chunks[0].1["candidates"][0].get("finishReason").is_none());

    let r = post(
        addr,
        &format!("{path}:streamGenerateContent"),
        &headers,
        &req,
    )
    .await;
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len() as u64, want.text_tokens());
}

#[tokio::test]
async fn mock_status_answers_in_each_providers_error_shape() {
    let addr = server().await;
    let h = [("x-mock-status", "429")];
    let v = post(addr, "/v1/chat/completions", &h, &chat_request()).await;
    assert_eq!(v.status, 429);
    assert_eq!(v.json()["error"]["type"], "rate_limit_error");
    assert!(v.json().get("usage").is_none());
    let v = post(
        addr,
        "/v1/messages",
        &[("x-mock-status", "529")],
        &anthropic_request(),
    )
    .await;
    assert_eq!(v.status, 529);
    assert_eq!(v.json()["type"], "error");
    assert_eq!(v.json()["error"]["type"], "overloaded_error");
    let v = post(
        addr,
        "/v1beta/models/g:generateContent",
        &[("x-mock-status", "500")],
        &gemini_request(),
    )
    .await;
    assert_eq!(
        (v.status, v.json()["error"]["status"].as_str()),
        (500, Some("INTERNAL"))
    );
    // A streaming request gets the error before any event, as JSON.
    let mut s = chat_request();
    s["stream"] = json!(true);
    let v = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-status", "503")],
        &s,
    )
    .await;
    assert_eq!(
        (v.status, v.content_type.as_str()),
        (503, "application/json")
    );
}

#[tokio::test]
async fn truncate_cuts_streams_and_json_without_an_end_marker() {
    let addr = server().await;
    let mut s = chat_request();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-truncate-after", "3")],
        &s,
    )
    .await;
    assert!(r.cut, "the connection must drop, not end cleanly");
    let events = r.events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|(_, d)| d != "[DONE]"));

    let mut a = anthropic_request();
    a["stream"] = json!(true);
    let r = post(addr, "/v1/messages", &[("x-mock-truncate-after", "1")], &a).await;
    assert!(r.cut);
    assert_eq!(r.events()[0].0.as_deref(), Some("message_start"));
    assert_eq!(r.events().len(), 1);

    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-truncate-after", "40")],
        &chat_request(),
    )
    .await;
    assert!(r.cut);
    assert_eq!(r.body.len(), 40);

    // N at or past the end changes nothing.
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-truncate-after", "1000")],
        &s,
    )
    .await;
    assert!(!r.cut);
    assert_eq!(r.events().last().unwrap().1, "[DONE]");
}

#[tokio::test]
async fn garbage_and_padding_make_bad_and_huge_responses() {
    let addr = server().await;
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-garbage", "1")],
        &chat_request(),
    )
    .await;
    assert_eq!((r.status, r.cut), (200, false));
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    let mut s = chat_request();
    s["stream"] = json!(true);
    let r = post(addr, "/v1/chat/completions", &[("x-mock-garbage", "1")], &s).await;
    assert_eq!((r.status, r.cut), (200, false));
    let events = r.events();
    assert_eq!(events.len(), 2);
    assert!(serde_json::from_str::<serde_json::Value>(&events[0].1).is_err());
    assert_eq!(events[1].1, "[DONE]");

    let plain = post(addr, "/v1/chat/completions", &[], &chat_request()).await;
    let padded = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-pad-bytes", "100000")],
        &chat_request(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&padded.body).unwrap();
    assert_eq!(v["padding"].as_str().unwrap().len(), 100_000);
    assert_eq!(padded.json()["usage"], plain.json()["usage"]);
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-pad-bytes", "5000")],
        &s,
    )
    .await;
    let text = String::from_utf8(r.body).unwrap();
    let (comment, events) = text.split_once("\n\n").unwrap();
    assert_eq!(
        comment,
        format!(": {}", "x".repeat(5000)),
        "an SSE comment first"
    );
    assert!(
        events.ends_with("data: [DONE]\n\n"),
        "then the usual stream"
    );
    let r = post(addr, "/v1/chat/completions", &[("x-mock-garbage", "2")], &s).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn delay_applies_per_event_and_before_json() {
    let addr = server().await;
    let mut req = chat_request();
    req["max_tokens"] = json!(3);
    let t = Instant::now();
    post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-delay-ms", "60")],
        &req,
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(60));
    req["stream"] = json!(true);
    let t = Instant::now();
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-delay-ms", "20")],
        &req,
    )
    .await;
    // Role, 3 words, finish, [DONE] = 6 events, 20 ms each.
    assert_eq!(r.events().len(), 6);
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn long_replies_are_capped_at_256_chunks() {
    let addr = server().await;
    let req = json!({"messages": [{"role": "user", "content": "Write a long story."}],
                     "max_tokens": 5000, "stream": true});
    let h = [("x-mock-output-tokens", "1000")];
    let c = Controls {
        output_tokens: Some(1000),
        ..Controls::default()
    };
    assert_eq!(usage_for(Api::OpenAiChat, &req, &c).unwrap().output, 1000);
    let r = post(addr, "/v1/chat/completions", &h, &req).await;
    // Role chunk, 256 text chunks, finish chunk, [DONE].
    assert_eq!(r.events().len() as u64, MAX_TEXT_CHUNKS + 3);
    let text: String = r
        .event_json()
        .iter()
        .filter_map(|(_, e)| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, reply_text(1000));
    // The cap still binds.
    let mut capped = req.clone();
    capped["max_tokens"] = json!(30);
    let r = post(addr, "/v1/chat/completions", &h, &capped).await;
    assert_eq!(r.events().len(), 30 + 3);
}

#[tokio::test]
async fn bad_requests_are_400_in_the_providers_shape() {
    let addr = server().await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{addr}/v1/messages"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-cached-tokens", "lots")],
        &chat_request(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-mock-cached-tokens"));
    let r = post(
        addr,
        "/v1/chat/completions",
        &[],
        &json!({"max_tokens": -1}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = post(addr, "/v1/nothing", &[], &json!({})).await;
    assert_eq!(r.status, 404);
    let r = post(addr, "/v1beta/models/g:countTokens", &[], &json!({})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn expect_key_refuses_requests_without_the_provider_key() {
    let addr = server_with(Options {
        expect_key: Some("sk-real".into()),
        ..Options::default()
    })
    .await;
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer tg-virtual")],
        &chat_request(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-real")],
        &chat_request(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        addr,
        "/v1/messages",
        &[("x-api-key", "sk-real")],
        &anthropic_request(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        addr,
        "/v1beta/models/g:generateContent?key=sk-real",
        &[],
        &gemini_request(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        addr,
        "/v1messages",
        &[("x-api-key", "sk-real")],
        &anthropic_request(),
    )
    .await;
    assert_eq!(r.status, 404);
}

/// `--expect-key PROVIDER=KEY`: each provider's key only in its own header, on its own API;
/// a Tollgate virtual key anywhere is refused; the model lists and Gemini under `/v1/` too.
#[tokio::test]
async fn provider_keys_are_demanded_in_their_own_provider_header() {
    let addr = server_with(Options {
        provider_keys: vec![
            ("openai".into(), "sk-o".into()),
            ("anthropic".into(), "sk-a".into()),
            ("gemini".into(), "g-key".into()),
        ],
        ..Options::default()
    })
    .await;
    let chat = "/v1/chat/completions";
    for (headers, want) in [
        (vec![("authorization", "Bearer sk-o")], 200),
        (vec![("authorization", "Bearer sk-a")], 401),
        (vec![("x-api-key", "sk-o")], 401),
        (
            vec![
                ("authorization", "Bearer sk-o"),
                ("x-api-key", "tg-virtual"),
            ],
            401,
        ),
    ] {
        let r = post(addr, chat, &headers, &chat_request()).await;
        assert_eq!(r.status, want, "{headers:?}");
    }
    let r = post(
        addr,
        "/v1/messages",
        &[("x-api-key", "sk-a")],
        &anthropic_request(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        addr,
        "/v1/messages",
        &[("authorization", "Bearer sk-o")],
        &anthropic_request(),
    )
    .await;
    assert_eq!(r.status, 401);
    for path in [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1/models/gemini-2.5-flash:generateContent",
    ] {
        let r = post(
            addr,
            path,
            &[("x-goog-api-key", "g-key")],
            &gemini_request(),
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.json()["usageMetadata"]["promptTokenCount"].is_u64());
        let r = post(
            addr,
            path,
            &[("authorization", "Bearer sk-o")],
            &gemini_request(),
        )
        .await;
        assert_eq!(r.status, 401, "{path}");
    }
    let get = |path: &'static str, h: &'static str, v: &'static str| async move {
        let r = reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .header(h, v)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, v) = get("/v1/models", "authorization", "Bearer sk-o").await;
    assert_eq!((status, v["object"].as_str()), (200, Some("list")));
    let (status, v) = get("/v1/models/gpt-4o-mini", "authorization", "Bearer sk-o").await;
    assert_eq!((status, v["id"].as_str()), (200, Some("gpt-4o-mini")));
    let (status, v) = get("/v1beta/models", "x-goog-api-key", "g-key").await;
    assert_eq!(status, 200);
    assert!(v["models"].as_array().is_some_and(|m| !m.is_empty()));
    let (status, v) = get("/v1beta/models/gemini-2.5-flash", "x-goog-api-key", "g-key").await;
    assert_eq!(
        (status, v["name"].as_str()),
        (200, Some("models/gemini-2.5-flash"))
    );
    let (status, _) = get("/v1beta/models", "authorization", "Bearer sk-o").await;
    assert_eq!(status, 401);
}

#[test]
fn binary_prints_its_address_and_serves() {
    let (guard, addr) = common::start_upstream(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(post(addr, "/v1/chat/completions", &[], &chat_request()));
    assert_eq!(r.status, 200);
    let health = rt.block_on(async {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(health, "ok");
    drop(guard);
}

/// A reply read whole with its `content-encoding`, the client's codings accepted as given.
async fn post_encoded(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (Option<String>, Vec<u8>) {
    let resp = common::post_json(addr, path, headers, body).await;
    assert_eq!(resp.status(), 200);
    let coding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    (coding, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn answers_are_compressed_as_the_client_allows_or_as_forced() {
    use tollgate_upstream::encoding::{decode, CODINGS};
    let addr = server().await;
    let mut stream = chat_request();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    for req in [chat_request(), stream] {
        let want = usage_for(Api::OpenAiChat, &req, &Controls::default()).unwrap();
        let plain = post_encoded(addr, "/v1/chat/completions", &[], &req).await;
        assert_eq!(plain.0, None, "no Accept-Encoding, no compression");
        // What the official SDKs send (httpx): gzip is preferred over deflate.
        let sdk = [("accept-encoding", "gzip, deflate")];
        let (coding, bytes) = post_encoded(addr, "/v1/chat/completions", &sdk, &req).await;
        assert_eq!(coding.as_deref(), Some("gzip"));
        let text = String::from_utf8(decode(coding.as_deref(), &bytes).unwrap()).unwrap();
        assert!(
            text.contains(&format!("\"prompt_tokens\":{}", want.input_uncached)),
            "{text}"
        );
        let identity = [("accept-encoding", "identity")];
        let (coding, _) = post_encoded(addr, "/v1/chat/completions", &identity, &req).await;
        assert_eq!(coding, None, "identity asked, identity served");
        for c in CODINGS {
            let allowed = [("accept-encoding", c)];
            let (coding, bytes) = post_encoded(addr, "/v1/chat/completions", &allowed, &req).await;
            assert_eq!(coding.as_deref(), Some(c));
            assert!(String::from_utf8(decode(Some(c), &bytes).unwrap())
                .unwrap()
                .contains("\"usage\":{"));
            // An edge that ignores the client's `identity`.
            let forced = [
                ("accept-encoding", "identity"),
                ("x-mock-force-encoding", c),
            ];
            let (coding, bytes) = post_encoded(addr, "/v1/chat/completions", &forced, &req).await;
            assert_eq!(coding.as_deref(), Some(c));
            assert!(String::from_utf8(decode(Some(c), &bytes).unwrap())
                .unwrap()
                .contains("\"usage\":{"));
        }
    }
}

/// Azure OpenAI: a deployment (path or v1 body) answers as the model behind it, its key only in
/// `api-key` (or an Entra bearer), `api-version` required on the deployment surface.
#[tokio::test]
async fn azure_deployments_answer_as_their_model_with_the_azure_key() {
    let addr = server_with(Options {
        provider_keys: vec![("azure".into(), "az-key".into())],
        azure_deployments: vec![("prod-mini".into(), "gpt-4o-mini-2024-07-18".into())],
        ..Options::default()
    })
    .await;
    let path = "/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21";
    let r = post(addr, path, &[("api-key", "az-key")], &chat_request()).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["model"], "gpt-4o-mini-2024-07-18");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let bearer = post(
        addr,
        path,
        &[("authorization", "Bearer az-key")],
        &chat_request(),
    )
    .await;
    assert_eq!(bearer.status, 200);
    for headers in [
        vec![("authorization", "Bearer sk-o")],
        vec![("api-key", "tg-virtual")],
        vec![],
    ] {
        let r = post(addr, path, &headers, &chat_request()).await;
        assert_eq!(r.status, 401, "{headers:?}");
    }
    let unversioned = "/openai/deployments/prod-mini/chat/completions";
    let r = post(addr, unversioned, &[("api-key", "az-key")], &chat_request()).await;
    assert_eq!(r.status, 404);
    let mut v1 = chat_request();
    v1["model"] = "prod-mini".into();
    let r = post(
        addr,
        "/openai/v1/chat/completions",
        &[("api-key", "az-key")],
        &v1,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["model"].clone()),
        (200, "gpt-4o-mini-2024-07-18".into())
    );
    let emb = serde_json::json!({"model": "text-embedding-3-small", "input": "hello"});
    let r = post(
        addr,
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21",
        &[("api-key", "az-key")],
        &emb,
    )
    .await;
    assert_eq!(r.status, 200);
}

/// Vertex AI: Gemini and Anthropic on the publishers' paths, the OAuth token only as a bearer,
/// Anthropic's body without `model` but with the `anthropic_version` Vertex demands.
#[tokio::test]
async fn vertex_publishers_answer_with_the_vertex_token_only() {
    let addr = server_with(Options {
        provider_keys: vec![("vertex_ai".into(), "ya29.token".into())],
        ..Options::default()
    })
    .await;
    let base = "/v1/projects/acme/locations/us-east5/publishers";
    let bearer = [("authorization", "Bearer ya29.token")];
    let gemini = format!("{base}/google/models/gemini-2.5-flash:generateContent");
    let r = post(addr, &gemini, &bearer, &gemini_request()).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["usageMetadata"]["promptTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );
    for headers in [
        vec![("x-goog-api-key", "ya29.token")],
        vec![("authorization", "Bearer tg-v")],
    ] {
        assert_eq!(
            post(addr, &gemini, &headers, &gemini_request())
                .await
                .status,
            401
        );
    }
    let claude = format!("{base}/anthropic/models/claude-haiku-4-5@20251001:rawPredict");
    let mut body = anthropic_request();
    body.as_object_mut().unwrap().remove("model");
    assert_eq!(
        post(addr, &claude, &bearer, &body).await.status,
        400,
        "no anthropic_version"
    );
    body["anthropic_version"] = "vertex-2023-10-16".into();
    let r = post(addr, &claude, &bearer, &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "claude-haiku-4-5@20251001");
}
