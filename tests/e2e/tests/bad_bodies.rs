//! Oversized and malformed bodies through real Envoy leave the filter alive. Requests: over
//! the filter's body limit, malformed JSON, wrong types, deep nesting, invalid UTF-8, empty,
//! chunked. Responses (the mock's `x-mock-*` controls): truncated and unparsable SSE,
//! unparsable JSON, huge JSON and SSE. Each gets a clear answer (a 4xx naming the problem,
//! or the provider's answer passed through and counted as uncharged), and afterwards a
//! normal request is served and metered exactly, with no wasm VM failure or reload in
//! Envoy's stats.
//!
//! Run with `cargo test -p tollgate-tests --test bad_bodies -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book};
use tollgate_tests::{eventually, Chain, Stack};
use tollgate_upstream::{Api, Controls};

use common::{client_with, ledger_reaches};

/// The filter's default `limits.max_request_body_bytes` (4 MiB), which the shipped config
/// keeps.
const FILTER_BODY_LIMIT: usize = 4 << 20;
/// Envoy's own answer to a request body over the listener's buffer limit.
const ENVOY_413: &str = "Payload Too Large";

/// How long one request may take here (longer than `common::client`'s 10 s: some bodies and
/// answers here are huge).
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the client saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    body: Vec<u8>,
    /// The body ended in a transport error.
    cut: bool,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(500)
            .collect()
    }
}

fn send(
    stack: &Stack,
    chain: &Chain,
    path: &str,
    headers: &[(&str, &str)],
    body: reqwest::blocking::Body,
) -> Seen {
    let mut req = client_with(TIMEOUT)
        .post(format!("{}{path}", stack.url()))
        .bearer_auth(&chain.secret)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req
        .send()
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", stack.logs()));
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let cut = std::io::Read::read_to_end(&mut resp, &mut body).is_err();
    Seen { status, body, cut }
}

fn chat_body(extra: Value) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "bad bodies"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// A request refused by the filter: this status, an OpenAI-shaped error whose message
/// contains `says`.
fn refused(seen: &Seen, status: u16, says: &str, what: &str) {
    assert_eq!(seen.status, status, "{what}: {}", seen.text());
    let msg = seen.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(says),
        "{what}: expected {says:?} in {}",
        seen.text()
    );
}

/// Envoy's wasm stats that would show a VM failing or being reloaded.
fn vm_stats(stack: &Stack) -> HashMap<String, u64> {
    stack.envoy.stats("wasm").unwrap()
}

/// Counter deltas since `before`, for the counters whose name contains `needle`; waits (at
/// most 5 s) until they equal `want` (counters not named in `want` must stay put).
fn counters_move(
    stack: &Stack,
    needle: &str,
    before: &HashMap<String, u64>,
    want: &[(&str, u64)],
    what: &str,
) -> HashMap<String, u64> {
    let mut last = HashMap::new();
    let ok = eventually(Duration::from_secs(5), || {
        let now = stack.envoy.stats(needle).unwrap();
        last = now.clone();
        now.iter()
            .all(|(k, v)| {
                let delta = v - before.get(k).copied().unwrap_or(0);
                let wanted = want
                    .iter()
                    .find(|(n, _)| k.ends_with(n))
                    .map_or(0, |(_, d)| *d);
                delta == wanted
            })
            .then_some(now)
    });
    ok.unwrap_or_else(|| {
        panic!("{what}: {needle} counters {last:?}, before {before:?}, want deltas {want:?}")
    })
}

#[test]
fn bad_bodies_get_clear_answers_and_leave_the_filter_alive() {
    let Some(stack) = common::stack() else { return };
    let api = stack.api().unwrap();
    let chain = api.create_chain("bad").unwrap();
    let fresh = api.create_chain("after").unwrap();
    stack.wait_for_sync().unwrap();
    let vm_before = vm_stats(&stack);
    let chat = "/v1/chat/completions";
    let json_body = |v: &Value| reqwest::blocking::Body::from(v.to_string());

    // Requests the filter refuses, each with a 4xx that says why (OpenAI's error shape).
    let long =
        |n: usize| chat_body(json!({"messages": [{"role": "user", "content": "x".repeat(n)}]}));
    let mut deep = br#"{"model": "gpt-4o-mini", "messages": "#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.push(b'}');
    let mut utf8 =
        br#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""#.to_vec();
    utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    utf8.extend_from_slice(br#""}]}"#);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "over the body limit",
            long(FILTER_BODY_LIMIT + 1).to_string().into_bytes(),
            413,
            "request body over 4194304 bytes",
        ),
        (
            "far over the body limit",
            long(3 * FILTER_BODY_LIMIT).to_string().into_bytes(),
            413,
            "request body over 4194304 bytes",
        ),
        (
            "malformed JSON",
            b"{\"model\": \"gpt-4o".to_vec(),
            400,
            "malformed json",
        ),
        (
            "max_tokens a string",
            chat_body(json!({"max_tokens": "x"}))
                .to_string()
                .into_bytes(),
            400,
            "`max_tokens` must be an integer",
        ),
        (
            "model a number",
            chat_body(json!({"model": 5})).to_string().into_bytes(),
            400,
            "`model` must be a string",
        ),
        ("nested 100,000 deep", deep, 400, "recursion limit exceeded"),
        ("invalid UTF-8", utf8, 400, "malformed json"),
        ("empty", Vec::new(), 400, "empty body"),
    ];
    for (what, body, status, says) in cases {
        let before = stack.envoy.stats("tollgate_requests_refused").unwrap();
        let seen = send(&stack, &chain, chat, &[], body.into());
        // Envoy sends a wasm filter's reply after the filter's callback returns, and buffers
        // the data the callback was given first: when one read carries a body far over the
        // filter's limit past the listener's 5 MiB buffer, Envoy refuses it itself. Refused
        // either way; which answer comes depends on read sizes.
        if what == "far over the body limit" && seen.status == 413 && seen.text() == ENVOY_413 {
            continue;
        }
        refused(&seen, status, says, what);
        counters_move(
            &stack,
            "tollgate_requests_refused",
            &before,
            &[("tollgate_requests_refused", 1)],
            what,
        );
    }

    // Served: a body between Envoy's default buffer limit (1 MiB) and the filter's, and a
    // chunked body (no content-length).
    let book = litellm_book().unwrap();
    let mut spent = Spend {
        requests: 0,
        total_usd: rust_decimal::Decimal::ZERO,
    };
    let served = [
        ("2 MiB body", json_body(&long(2 << 20)), long(2 << 20)),
        (
            "chunked",
            reqwest::blocking::Body::new(std::io::Cursor::new(
                chat_body(json!({})).to_string().into_bytes(),
            )),
            chat_body(json!({})),
        ),
    ];
    for (what, body, sent) in served {
        let seen = send(&stack, &chain, chat, &[], body);
        assert_eq!(seen.status, 200, "{what}: {}", seen.text());
        let (_, cost) = expected(book, Api::OpenAiChat, &sent, &Controls::default()).unwrap();
        spent.requests += 1;
        spent.total_usd += cost;
        ledger_reaches(&stack, "key", &chain.key_id, spent);
    }

    // Bad responses: passed through as the provider sent them, counted as uncharged with the
    // reason (huge SSE comments are skipped, so that stream is metered).
    let stream = chat_body(json!({"stream": true}));
    let plain = chat_body(json!({}));
    /// A bad response: the `x-mock-*` header asking for it, whether the client sees the
    /// connection cut, and the uncharged reason the filter counts (none: metered).
    struct Bad<'a>(
        &'a str,
        (&'a str, &'a str),
        &'a Value,
        bool,
        Option<&'a str>,
    );
    let responses = [
        Bad(
            "truncated SSE",
            ("x-mock-truncate-after", "2"),
            &stream,
            true,
            Some("truncated"),
        ),
        Bad(
            "truncated JSON",
            ("x-mock-truncate-after", "30"),
            &plain,
            true,
            Some("truncated"),
        ),
        Bad(
            "unparsable SSE",
            ("x-mock-garbage", "1"),
            &stream,
            false,
            Some("no_usage"),
        ),
        Bad(
            "unparsable JSON",
            ("x-mock-garbage", "1"),
            &plain,
            false,
            Some("no_usage"),
        ),
        Bad(
            "3 MB JSON",
            ("x-mock-pad-bytes", "3000000"),
            &plain,
            false,
            Some("too_large"),
        ),
        Bad(
            "3 MB SSE",
            ("x-mock-pad-bytes", "3000000"),
            &stream,
            false,
            None,
        ),
        Bad(
            "provider error",
            ("x-mock-status", "500"),
            &plain,
            false,
            Some("upstream_5xx"),
        ),
    ];
    for Bad(what, header, body, cut, reason) in responses {
        let before = stack.envoy.stats("tollgate_uncharged").unwrap();
        let seen = send(&stack, &chain, chat, &[header], json_body(body));
        let want_status = if header.0 == "x-mock-status" {
            500
        } else {
            200
        };
        assert_eq!(
            (seen.status, seen.cut),
            (want_status, cut),
            "{what}: {}",
            seen.text()
        );
        if header.0 == "x-mock-pad-bytes" {
            assert!(
                seen.body.len() > 3_000_000,
                "{what}: {} bytes",
                seen.body.len()
            );
        }
        let name = reason.map(|r| format!("tollgate_uncharged_{r}"));
        let want: Vec<(&str, u64)> = name.iter().map(|n| (n.as_str(), 1)).collect();
        counters_move(&stack, "tollgate_uncharged", &before, &want, what);
    }

    // Afterwards a normal request is served and metered exactly ...
    let body = chat_body(json!({}));
    let seen = send(&stack, &fresh, chat, &[], json_body(&body));
    assert_eq!(seen.status, 200, "{}", seen.text());
    let (_, cost) = expected(book, Api::OpenAiChat, &body, &Controls::default()).unwrap();
    ledger_reaches(
        &stack,
        "key",
        &fresh.key_id,
        Spend {
            requests: 1,
            total_usd: cost,
        },
    );
    // ... by the VMs that started: none failed, was reloaded or created since.
    let vm_after = vm_stats(&stack);
    for (name, v) in &vm_after {
        if name.contains("vm_reload")
            || name.contains("runtime.v8.")
            || name == "wasm.wasm_vm_count"
        {
            assert_eq!(
                Some(v),
                vm_before.get(name),
                "{name} changed: {vm_before:?} → {vm_after:?}"
            );
        }
    }
    for name in [
        "wasm.tollgate.vm_reload",
        "wasm.tollgate_sync.vm_reload_failure",
        "wasm.envoy.wasm.runtime.v8.created",
    ] {
        assert!(vm_after.contains_key(name), "no stat {name}: {vm_after:?}");
    }
    assert!(
        vm_after
            .iter()
            .filter(|(k, _)| k.contains("vm_reload"))
            .all(|(_, v)| *v == 0),
        "{vm_after:?}"
    );
}
