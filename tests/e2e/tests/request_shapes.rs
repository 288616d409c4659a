//! Every way a request body can end, for every metered API, through the real Envoy: a request
//! is either refused before the provider sees it, or admitted and in the ledger exactly once at
//! the price of the model that served it (issue "Close the enforcement holes", hole 1).
//!
//! Shapes (sent by `tests/e2e/python/shapes.py`, raw sockets and the `h2` package):
//! HTTP/1.1 with Content-Length, chunked, chunked with trailers, `Expect: 100-continue`, two
//! requests pipelined on one connection, reset half-way through the body; HTTP/2 with
//! END_STREAM on the last DATA frame, with a trailers HEADERS frame (gRPC-style clients), reset
//! half-way through the body. APIs: OpenAI chat (JSON and stream), Responses (JSON and
//! stream), embeddings, Anthropic messages (JSON and stream), Gemini `generateContent` and
//! `streamGenerateContent?alt=sse`, and `generateContent` under `/v1/` (google-genai's `v1`).
//!
//! "The provider saw it" is read from Envoy's own counters: the requests Envoy started towards
//! the provider clusters (`cluster.<provider>.upstream_rq_total`), before and after each shape.
//!
//! `cargo test -p tollgate-tests --test request_shapes -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book};
use tollgate_tests::{python, Chain, Stack};
use tollgate_upstream::{Api, Controls};

use common::{ledger_reaches, ledger_rows};

/// One metered API call: where it goes, what it sends, which header carries the key.
struct Call {
    name: &'static str,
    api: Api,
    path: &'static str,
    body: Value,
    key_header: &'static str,
}

fn calls() -> Vec<Call> {
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "max_tokens": 12, "stream": stream,
               "messages": [{"role": "user", "content": "shapes of requests"}]})
    };
    let responses = |stream: bool| {
        json!({"model": "gpt-4o-mini", "max_output_tokens": 12, "stream": stream,
               "input": "shapes of requests"})
    };
    let messages = |stream: bool| {
        json!({"model": "claude-haiku-4-5", "max_tokens": 12, "stream": stream,
               "messages": [{"role": "user", "content": "shapes of requests"}]})
    };
    // Gemini names the model in the path; `model` here only tells the test's pricing which.
    let gemini = json!({"model": "gemini-2.0-flash",
        "contents": [{"role": "user", "parts": [{"text": "shapes of requests"}]}],
        "generationConfig": {"maxOutputTokens": 12}});
    let call = |name, api, path, body, key_header| Call {
        name,
        api,
        path,
        body,
        key_header,
    };
    vec![
        call(
            "chat",
            Api::OpenAiChat,
            "/v1/chat/completions",
            chat(false),
            "authorization",
        ),
        call(
            "chat-stream",
            Api::OpenAiChat,
            "/v1/chat/completions",
            chat(true),
            "authorization",
        ),
        call(
            "responses",
            Api::OpenAiResponses,
            "/v1/responses",
            responses(false),
            "authorization",
        ),
        call(
            "responses-stream",
            Api::OpenAiResponses,
            "/v1/responses",
            responses(true),
            "authorization",
        ),
        call(
            "embeddings",
            Api::OpenAiEmbeddings,
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "shapes of requests"}),
            "authorization",
        ),
        call(
            "messages",
            Api::AnthropicMessages,
            "/v1/messages",
            messages(false),
            "x-api-key",
        ),
        call(
            "messages-stream",
            Api::AnthropicMessages,
            "/v1/messages",
            messages(true),
            "x-api-key",
        ),
        call(
            "gemini",
            Api::Gemini,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            gemini.clone(),
            "x-goog-api-key",
        ),
        call(
            "gemini-stream",
            Api::Gemini,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            gemini.clone(),
            "x-goog-api-key",
        ),
        // google-genai with `api_version="v1"`.
        call(
            "gemini-v1",
            Api::Gemini,
            "/v1/models/gemini-2.0-flash:generateContent",
            gemini,
            "x-goog-api-key",
        ),
    ]
}

/// `(protocol, shape, answers expected)`: 0 answers for a reset.
const SHAPES: [(&str, &str, usize); 9] = [
    ("h1", "length", 1),
    ("h1", "chunked", 1),
    ("h1", "chunked_trailers", 1),
    ("h1", "expect_continue", 1),
    ("h1", "pipelined", 2),
    ("h1", "reset", 0),
    ("h2", "end_stream", 1),
    ("h2", "trailers", 1),
    ("h2", "reset", 0),
];

/// Requests Envoy has started towards the provider clusters.
fn upstream_requests(stack: &Stack) -> u64 {
    stack
        .envoy
        .stats("upstream_rq_total")
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("cluster.") && !name.contains("tollgate"))
        .map(|(_, v)| *v)
        .sum()
}

/// Sends `call` in `shape` with `chain`'s key; the answers.
fn send(
    stack: &Stack,
    py: &std::path::Path,
    chain: &Chain,
    call: &Call,
    shape: (&str, &str),
) -> Vec<Value> {
    let spec = json!({
        "port": stack.envoy.listener.port(),
        "proto": shape.0,
        "shape": shape.1,
        "path": call.path,
        "body": call.body.to_string(),
        "key_header": call.key_header,
        "copies": 2,
    });
    python::run(
        &py.to_path_buf(),
        "shapes.py",
        &[&spec.to_string()],
        &[("TOLLGATE_KEY", &chain.secret)],
        &stack.secrets,
    )
    .unwrap_or_else(|e| panic!("{} {shape:?}: {e:#}\n{}", call.name, stack.logs()))
}

#[test]
fn every_request_shape_is_judged_and_metered_once() {
    let Some(stack) = common::stack() else { return };
    let Some(py) = common::python() else { return };
    let admin = stack.api().unwrap();
    let book = litellm_book().unwrap();
    let calls = calls();
    // One chain per (call, shape) with room for a few requests, and one exhausted chain.
    let mut room = Vec::new();
    for i in 0..calls.len() {
        for (j, _) in SHAPES.iter().enumerate() {
            let chain = admin.create_chain(&format!("shape-{i}-{j}")).unwrap();
            admin
                .create_budget("key", &chain.key_id, "total", "1")
                .unwrap();
            room.push(chain);
        }
    }
    let broke = admin.create_chain("shape-broke").unwrap();
    admin
        .create_budget("key", &broke.key_id, "total", "0.0000001")
        .unwrap();
    stack.wait_for_sync().unwrap();

    let mut rooms = room.iter();
    let mut summary = Vec::new();
    for call in &calls {
        let (_, cost) = expected(book, call.api, &call.body, &Controls::default()).unwrap();
        for &(proto, shape, answers) in &SHAPES {
            let chain = rooms.next().unwrap();
            let label = format!("{} over {proto} {shape}", call.name);

            // Over budget: refused by Tollgate, and the provider never sees it.
            let before = upstream_requests(&stack);
            let got = send(&stack, &py, &broke, call, (proto, shape));
            assert_eq!(
                upstream_requests(&stack),
                before,
                "{label}, over budget: the request reached the provider: {got:?}\n{}",
                stack.logs()
            );
            for r in &got {
                if answers > 0 {
                    assert_eq!(r["status"], 429, "{label}, over budget: {r}");
                    assert_eq!(r["headers"]["x-tollgate-decision"], "deny", "{label}: {r}");
                }
            }

            // Under budget: served, and in the ledger once per answer at the exact price.
            let before = upstream_requests(&stack);
            let got = send(&stack, &py, chain, call, (proto, shape));
            let seen = upstream_requests(&stack) - before;
            assert_eq!(got.len(), answers.max(1), "{label}: {got:?}");
            for r in got.iter().take(answers) {
                assert_eq!(r["status"], 200, "{label}: {r}\n{}", stack.logs());
            }
            assert_eq!(
                seen,
                answers as u64,
                "{label}: the provider saw {seen} requests for {answers} answers\n{}",
                stack.logs()
            );
            summary.push((label, chain, answers, cost));
        }
    }
    // Every answered request reaches the ledger exactly once; a reset one never does.
    for (label, chain, answers, cost) in &summary {
        let n = *answers as u64;
        ledger_reaches(
            &stack,
            "key",
            &chain.key_id,
            Spend {
                requests: n,
                total_usd: *cost * Decimal::from(n),
            },
        );
        let rows = ledger_rows(&stack, &chain.key_id);
        assert!(
            rows.iter().all(|r| r.1 == "actual"),
            "{label}: every charge is the provider's usage: {rows:?}"
        );
    }
    assert_eq!(
        admin.spend("key", &broke.key_id).unwrap().requests,
        0,
        "nothing over budget was metered"
    );
    eprintln!(
        "{} shapes × {} APIs: every over-budget request refused before the provider, every \
         admitted one in the ledger once at its exact cost",
        SHAPES.len(),
        calls.len()
    );
}
