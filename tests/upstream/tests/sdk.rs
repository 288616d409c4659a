//! The official `openai` and `anthropic` Python SDKs (versions pinned in
//! scripts/requirements.txt) against the mock upstream binary: `sdk_check.py` sends each kind of
//! request and prints the usage each SDK parsed; this test compares it with `usage_for`.
//!
//! Run with `cargo test -p tollgate-upstream --test sdk`. Needs `/work/main/.venv` (or the
//! workspace's `.venv`) with the SDKs installed; without it the test fails loudly unless
//! `TOLLGATE_SKIP_PYTHON=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use serde_json::Value;
use tollgate_upstream::envoy::{venv_python, workspace_root};
use tollgate_upstream::usage::reply_text;
use tollgate_upstream::{usage_for, Api, Controls};

/// The controls the script sent as headers.
fn controls(headers: &Value) -> Controls {
    let n = |k: &str| {
        headers
            .get(k)
            .map_or(0, |v| v.as_str().unwrap().parse().unwrap())
    };
    Controls {
        cached_tokens: n("x-mock-cached-tokens"),
        cache_write_5m: n("x-mock-cache-write-5m"),
        cache_write_1h: n("x-mock-cache-write-1h"),
        reasoning_tokens: n("x-mock-reasoning-tokens"),
        ..Controls::default()
    }
}

#[test]
fn official_sdks_parse_every_shape_and_read_the_expected_usage() {
    let Some(python) = venv_python() else {
        if std::env::var("TOLLGATE_SKIP_PYTHON").as_deref() == Ok("1") {
            return;
        }
        panic!(
            "no .venv/bin/python: create it with `python3 -m venv .venv && .venv/bin/pip install \
             -r scripts/requirements.txt`, or set TOLLGATE_SKIP_PYTHON=1"
        );
    };
    let (upstream, addr) = common::start_upstream(&[]);
    let out = Command::new(python)
        .arg(workspace_root().join("tests/upstream/sdk_check.py"))
        .arg(format!("http://{addr}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_check.py failed:\n{}\nupstream:\n{}",
        String::from_utf8_lossy(&out.stderr),
        upstream.output()
    );
    let cases: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "chat_json",
            "chat_stream_include_usage",
            "responses_json",
            "responses_stream",
            "responses_stream_helper",
            "messages_json",
            "messages_stream"
        ]
    );
    for case in &cases {
        let name = case["case"].as_str().unwrap();
        let api = match case["api"].as_str().unwrap() {
            "openai_chat" => Api::OpenAiChat,
            "openai_responses" => Api::OpenAiResponses,
            "anthropic_messages" => Api::AnthropicMessages,
            other => panic!("unknown api {other}"),
        };
        let want = usage_for(api, &case["request"], &controls(&case["headers"])).unwrap();
        let u = &case["usage"];
        // Where each API's SDK reports a count (a JSON pointer into its usage), and the count.
        let reported: Vec<(&str, u64)> = match api {
            Api::OpenAiChat => vec![
                ("/prompt_tokens", want.prompt_total()),
                ("/completion_tokens", want.output),
                ("/prompt_tokens_details/cached_tokens", want.cache_read),
                (
                    "/completion_tokens_details/reasoning_tokens",
                    want.reasoning,
                ),
            ],
            Api::OpenAiResponses => vec![
                ("/input_tokens", want.prompt_total()),
                ("/output_tokens", want.output),
                ("/input_tokens_details/cached_tokens", want.cache_read),
            ],
            Api::AnthropicMessages => vec![
                ("/input_tokens", want.input_uncached),
                ("/output_tokens", want.output),
                ("/cache_read_input_tokens", want.cache_read),
                (
                    "/cache_creation_input_tokens",
                    want.cache_write_5m + want.cache_write_1h,
                ),
                (
                    "/cache_creation/ephemeral_5m_input_tokens",
                    want.cache_write_5m,
                ),
                (
                    "/cache_creation/ephemeral_1h_input_tokens",
                    want.cache_write_1h,
                ),
            ],
            _ => unreachable!(),
        };
        for (pointer, count) in reported {
            assert_eq!(
                u.pointer(pointer).and_then(Value::as_u64),
                Some(count),
                "{name}: {pointer} in {u}"
            );
        }
        assert_eq!(case["text"], reply_text(want.text_tokens()), "{name}");
    }
}
