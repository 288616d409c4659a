//! What a request is charged, through the real Envoy: only what the provider bills
//! (issue "Close the enforcement holes", holes 2–4).
//!
//! - A complete error answer from the provider (`429`, `400`, `404`, `5xx`) is charged zero and
//!   counted under its status class (`upstream_429`, `upstream_4xx`, `upstream_5xx`); the
//!   `provider_errors: charge_estimate` policy still charges the worst case where an operator
//!   wants it.
//! - The model the provider says served the request is the one priced (JSON and streams, each
//!   provider), and Gemini is priced by the model in its path, not a `model` in the body.
//! - A request's own output cap bounds its reservation even above the price book's.
//!
//! `cargo test -p tollgate-tests --test charges -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book, worst_case};
use tollgate_tests::{Chain, Stack};
use tollgate_upstream::{Api, Controls};

use common::{client, ledger_reaches, ledger_rows};

/// Sends `body` to `path` with `chain`'s key in `key_header` and extra headers; the status
/// and the whole body.
fn post(
    url: &str,
    chain: &Chain,
    path: &str,
    key_header: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, String) {
    let key = if key_header == "authorization" {
        format!("Bearer {}", chain.secret)
    } else {
        chain.secret.clone()
    };
    let mut req = client()
        .post(format!("{url}{path}"))
        .header(key_header, key)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 20, "stream": stream,
           "messages": [{"role": "user", "content": "what is charged"}]})
}

/// A chain with a budget of `limit` USD on its key, known to Envoy.
fn funded(stack: &Stack, prefix: &str, limit: &str) -> Chain {
    let admin = stack.api().unwrap();
    let chain = admin.create_chain(prefix).unwrap();
    admin
        .create_budget("key", &chain.key_id, "total", limit)
        .unwrap();
    chain
}

#[test]
fn provider_error_answers_are_charged_zero() {
    let Some(stack) = common::stack() else {
        return;
    };
    let chain = funded(&stack, "errors", "1");
    // A second Envoy on the same control plane, configured to charge the estimate anyway.
    let strict = stack
        .start_envoy(0, Some(&json!({"provider_errors": "charge_estimate"})))
        .unwrap();
    let strict_chain = funded(&stack, "errors-strict", "1");
    stack.wait_for_sync().unwrap();
    stack.wait_for_sync_of(&strict).unwrap();
    let url = stack.url();
    let statuses = [
        ("429", "upstream_429"),
        ("400", "upstream_4xx"),
        ("404", "upstream_4xx"),
        ("500", "upstream_5xx"),
        ("503", "upstream_5xx"),
    ];
    for (status, _) in statuses {
        for stream in [false, true] {
            let (got, body) = post(
                &url,
                &chain,
                "/v1/chat/completions",
                "authorization",
                &[("x-mock-status", status)],
                &chat(stream),
            );
            assert_eq!(got.to_string(), status, "{body}");
        }
    }
    // And an Anthropic rate limit, the other SDK that retries on 429.
    let msg = json!({"model": "claude-haiku-4-5", "max_tokens": 20,
                     "messages": [{"role": "user", "content": "rate limited"}]});
    let (got, _) = post(
        &url,
        &chain,
        "/v1/messages",
        "x-api-key",
        &[("x-mock-status", "429")],
        &msg,
    );
    assert_eq!(got, 429);
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: 11,
            total_usd: Decimal::ZERO,
        },
    );
    let rows = ledger_rows(&stack, &chain.key_id);
    let mut want: Vec<&str> = statuses
        .iter()
        .flat_map(|(_, reason)| [*reason, *reason])
        .collect();
    want.push("upstream_429");
    let got: Vec<&str> = rows.iter().filter_map(|r| r.2.as_deref()).collect();
    assert_eq!(got, want, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == "zero"), "{rows:?}");
    for (name, n) in [
        ("tollgate_uncharged_upstream_429", 3),
        ("tollgate_uncharged_upstream_4xx", 4),
        ("tollgate_uncharged_upstream_5xx", 4),
    ] {
        assert_eq!(stack.envoy.stat(name).unwrap(), n, "{name}");
    }

    // The other policy: the worst case, as before.
    let strict_url = format!("http://{}", strict.listener);
    let (got, _) = post(
        &strict_url,
        &strict_chain,
        "/v1/chat/completions",
        "authorization",
        &[("x-mock-status", "429")],
        &chat(false),
    );
    assert_eq!(got, 429);
    let book = litellm_book().unwrap();
    ledger_reaches(
        &stack,
        "key",
        &strict_chain.key_id,
        Spend {
            requests: 1,
            total_usd: worst_case(book, Api::OpenAiChat, &chat(false)).unwrap(),
        },
    );
    eprintln!("provider errors: {rows:?}");
}

#[test]
fn the_model_that_served_is_the_one_priced() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let chain = funded(&stack, "served", "5");
    stack.wait_for_sync().unwrap();
    let url = stack.url();
    let anthropic = |stream: bool| {
        json!({"model": "claude-haiku-4-5", "max_tokens": 20, "stream": stream,
               "messages": [{"role": "user", "content": "which model served"}]})
    };
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "which model"}]}],
                        "generationConfig": {"maxOutputTokens": 20}});
    // (api, path, key header, body, model the provider says served, the served model's
    // name in the price book)
    let cases: Vec<(Api, &str, &str, Value, &str, &str)> = vec![
        // An alias answered with its dated snapshot: same price, the snapshot recorded.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(false),
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-mini-2024-07-18",
        ),
        // Another model altogether (a router, a fallback): its price.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(false),
            "gpt-4o",
            "gpt-4o",
        ),
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(true),
            "gpt-4o",
            "gpt-4o",
        ),
        (
            Api::AnthropicMessages,
            "/v1/messages",
            "x-api-key",
            anthropic(true),
            "claude-sonnet-4-5",
            "claude-sonnet-4-5",
        ),
        (
            Api::Gemini,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "x-goog-api-key",
            gemini.clone(),
            "gemini-2.5-flash",
            "gemini-2.5-flash",
        ),
        // A served model the book does not know: the requested model's price stays.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(false),
            "gpt-unknown-preview",
            "gpt-4o-mini",
        ),
    ];
    let mut total = Decimal::ZERO;
    for (i, (api, path, key_header, body, served, priced)) in cases.iter().enumerate() {
        let (status, text) = post(
            &url,
            &chain,
            path,
            key_header,
            &[("x-mock-served-model", served)],
            body,
        );
        assert_eq!(status, 200, "{served}: {text}");
        let mut as_served = body.clone();
        as_served["model"] = json!(priced);
        let (_, cost) = expected(book, *api, &as_served, &Controls::default()).unwrap();
        total += cost;
        ledger_reaches(
            &stack,
            "key",
            &chain.key_id,
            Spend {
                requests: i as u64 + 1,
                total_usd: total,
            },
        );
        let rows = ledger_rows(&stack, &chain.key_id);
        let row = rows.last().unwrap();
        assert_eq!(
            (row.0.as_str(), row.1.as_str()),
            (*priced, "actual"),
            "{served}: {rows:?}"
        );
        // The model the request named is kept beside the one priced when they differ.
        let asked = body["model"].as_str().unwrap_or("gemini-2.0-flash");
        let want_requested = (asked != *priced).then_some(asked);
        assert_eq!(row.5.as_deref(), want_requested, "{served}: {rows:?}");
    }
}

#[test]
fn gemini_is_priced_by_the_model_in_its_path() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let chain = funded(&stack, "gemini-path", "5");
    stack.wait_for_sync().unwrap();
    // The body names a model 32× cheaper; Google ignores it and runs the path's.
    let body = json!({"model": "gemini-2.0-flash-lite",
        "contents": [{"role": "user", "parts": [{"text": "priced by the path"}]}],
        "generationConfig": {"maxOutputTokens": 20}});
    let (status, text) = post(
        &stack.url(),
        &chain,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "x-goog-api-key",
        &[],
        &body,
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["modelVersion"], "gemini-2.5-pro",
        "the mock runs the path's"
    );
    let mut as_run = body.clone();
    as_run["model"] = json!("gemini-2.5-pro");
    let (_, cost) = expected(book, Api::Gemini, &as_run, &Controls::default()).unwrap();
    let (_, cheap) = expected(book, Api::Gemini, &body, &Controls::default()).unwrap();
    assert!(cost > cheap * Decimal::from(10), "{cost} vs {cheap}");
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: 1,
            total_usd: cost,
        },
    );
    let rows = ledger_rows(&stack, &chain.key_id);
    assert!(rows[0].0.ends_with("gemini-2.5-pro"), "{rows:?}");
}

#[test]
fn a_request_cap_above_the_book_bounds_the_reservation() {
    let Some(stack) = common::stack() else { return };
    let chain = funded(&stack, "cap", "1");
    stack.wait_for_sync().unwrap();
    // claude-3-7-sonnet's book says 64,000 output tokens; with Anthropic's output-128k beta
    // it serves 128,000: 128,000 × 15 USD/M = 1.92 USD, more than the budget.
    let body = |max_tokens: u64| {
        json!({"model": "claude-3-7-sonnet-20250219", "max_tokens": max_tokens,
               "messages": [{"role": "user", "content": "write a long essay"}]})
    };
    let (status, text) = post(
        &stack.url(),
        &chain,
        "/v1/messages",
        "x-api-key",
        &[("anthropic-beta", "output-128k-2025-02-19")],
        &body(128_000),
    );
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("budget_exceeded"), "{text}");
    // Under the book's cap the same budget admits it.
    let (status, text) = post(
        &stack.url(),
        &chain,
        "/v1/messages",
        "x-api-key",
        &[],
        &body(60_000),
    );
    assert_eq!(status, 200, "{text}");
}
