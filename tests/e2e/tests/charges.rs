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
//! - What providers bill beyond tokens of text (issue "Meter what the providers actually
//!   bill"): the service tier that served (OpenAI `service_tier`, Anthropic
//!   `usage.service_tier`), web searches (Responses `web_search_call` items, Anthropic
//!   `server_tool_use`, Gemini grounding), audio tokens; and the reservation at the dearest
//!   tier a request lets the provider choose.
//!
//! `cargo test -p tollgate-tests --test charges -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book, worst_case};
use tollgate_tests::Chain;
use tollgate_upstream::{Api, Controls};

use common::{funded, key_spend_reaches, keyed_post, ledger_details, ledger_reaches, ledger_rows};

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
    let resp = keyed_post(url, chain, (path, key_header), headers, body);
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 20, "stream": stream,
           "messages": [{"role": "user", "content": "what is charged"}]})
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

/// Bedrock's event streams, through Envoy and the bedrock cluster's SigV4 signing: a whole
/// ConverseStream is charged exactly; one the provider cut (`x-mock-truncate-after`) or ended
/// with a `modelStreamErrorException` message may have been billed, so it is charged the
/// estimate (`truncated`, `no_usage`); a throttled one (429 with Bedrock's error) nothing.
#[test]
fn bedrock_streams_are_charged_as_they_ended() {
    let Some(stack) = common::stack() else {
        return;
    };
    let chain = funded(&stack, "bedrock-charges", "1");
    let url = stack.url();
    let body = json!({"messages": [{"role": "user", "content": [{"text": "stream it"}]}],
                      "inferenceConfig": {"maxTokens": 20}});
    let path = "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream";
    for headers in [
        &[][..],
        &[("x-mock-truncate-after", "2")][..],
        &[("x-mock-garbage", "1")][..],
        &[("x-mock-status", "429")][..],
    ] {
        let (status, text) = post(&url, &chain, path, "authorization", headers, &body);
        let want = if headers.is_empty() || headers[0].0 != "x-mock-status" {
            200
        } else {
            429
        };
        assert_eq!(status, want, "{headers:?}: {text}");
    }
    let book = litellm_book().unwrap();
    let mut request = body.clone();
    request["model"] = json!("us.anthropic.claude-haiku-4-5-20251001-v1:0");
    let (_, exact) = expected(book, Api::BedrockConverse, &request, &Controls::default()).unwrap();
    let estimate = worst_case(book, Api::BedrockConverse, &request).unwrap();
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: 4,
            total_usd: exact + estimate + estimate,
        },
    );
    let rows = ledger_rows(&stack, &chain.key_id);
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.2.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("truncated"),
            Some("no_usage"),
            Some("upstream_429")
        ],
        "{rows:?}"
    );
}

/// A stack with LiteLLM's prices, the book the expected costs come from, and a chain funded
/// with 5 USD.
fn priced_chain(
    prefix: &str,
) -> Option<(
    tollgate_tests::Stack,
    &'static tollgate_core::pricing::PriceBook,
    Chain,
)> {
    let stack = common::stack()?;
    let chain = funded(&stack, prefix, "5");
    Some((stack, litellm_book().unwrap(), chain))
}

#[test]
fn the_model_that_served_is_the_one_priced() {
    let Some((stack, book, chain)) = priced_chain("served") else {
        return;
    };
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
        key_spend_reaches(&stack, &chain.key_id, i + 1, total);
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

#[test]
fn tiers_searches_and_audio_are_billed_as_the_provider_reports_them() {
    let Some((stack, book, chain)) = priced_chain("beyond-text") else {
        return;
    };
    let url = stack.url();
    let say = |extra: Value| {
        let mut body = json!({"model": "gpt-4o-mini", "max_tokens": 20,
                              "messages": [{"role": "user", "content": "bill me right"}]});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    };
    let responses = json!({"model": "gpt-4.1", "input": "search the web", "max_output_tokens": 30,
                           "tools": [{"type": "web_search", "search_context_size": "high"}]});
    let claude = json!({"model": "claude-sonnet-4-5", "max_tokens": 30,
                        "messages": [{"role": "user", "content": "search"}],
                        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "who won"}]}],
                        "tools": [{"googleSearch": {}}],
                        "generationConfig": {"maxOutputTokens": 20}});
    // (api, path, key header, mock headers, body, what the ledger detail must say)
    type Case<'a> = (Api, &'a str, &'a str, Vec<(&'a str, &'a str)>, Value, Value);
    let cases: Vec<Case> = vec![
        // The project serves `auto` at priority: priced at gpt-4o-mini's priority rates.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            vec![("x-mock-service-tier", "priority")],
            say(json!({})),
            json!({"service_tier": "priority"}),
        ),
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            vec![("x-mock-service-tier", "priority")],
            say(json!({"stream": true, "stream_options": {"include_usage": true}})),
            json!({"service_tier": "priority"}),
        ),
        // Asked for flex, served flex: gpt-5-mini's flex rates.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            vec![],
            say(json!({"model": "gpt-5-mini", "service_tier": "flex"})),
            json!({"service_tier": "flex"}),
        ),
        // Audio in and out: gpt-4o-audio-preview's audio rates.
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            vec![
                ("x-mock-input-audio-tokens", "600"),
                ("x-mock-output-audio-tokens", "240"),
            ],
            say(json!({"model": "gpt-4o-audio-preview"})),
            json!({"usage": {"input_audio": 600, "output_audio": 240}}),
        ),
        // Two searches at the high context size the request asked for.
        (
            Api::OpenAiResponses,
            "/v1/responses",
            "authorization",
            vec![("x-mock-web-searches", "2")],
            responses,
            json!({"usage": {"web_searches": 2}, "search_context": "high"}),
        ),
        (
            Api::AnthropicMessages,
            "/v1/messages",
            "x-api-key",
            vec![
                ("x-mock-web-searches", "3"),
                ("x-mock-service-tier", "priority"),
            ],
            claude,
            json!({"usage": {"web_searches": 3}, "service_tier": "priority"}),
        ),
        // Gemini 2.5 bills one grounded prompt however many queries it ran.
        (
            Api::Gemini,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "x-goog-api-key",
            vec![("x-mock-web-searches", "4")],
            gemini,
            json!({"usage": {"web_searches": 4}}),
        ),
    ];
    let mut total = Decimal::ZERO;
    for (i, (api, path, key_header, headers, body, want)) in cases.iter().enumerate() {
        let (status, text) = post(&url, &chain, path, key_header, headers, body);
        assert_eq!(status, 200, "case {i}: {text}");
        let mut priced = body.clone();
        if *api == Api::Gemini {
            priced["model"] = json!("gemini-2.5-flash");
        }
        let controls = Controls::from_headers(&header_map(headers)).unwrap();
        let (_, cost) = expected(book, *api, &priced, &controls).unwrap();
        total += cost;
        key_spend_reaches(&stack, &chain.key_id, i + 1, total);
        let detail = ledger_details(&stack, &chain.key_id).pop().unwrap();
        for (k, v) in want.as_object().unwrap() {
            match v {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        assert_eq!(&detail[k][ik], iv, "case {i} {k}.{ik}: {detail}");
                    }
                }
                v => assert_eq!(&detail[k], v, "case {i} {k}: {detail}"),
            }
        }
        // What a search or the tier adds is a cost bucket of its own.
        if want["usage"]["web_searches"].is_u64() {
            assert!(
                detail["cost"]["web_search"].is_string(),
                "case {i}: {detail}"
            );
        }
    }
}

/// A request that lets the provider choose its tier reserves at the dearest tier the model
/// has: a budget between the standard and the priority worst case admits the request that
/// asks for `default` and refuses the one that says nothing (OpenAI's `auto`).
#[test]
fn auto_tier_reserves_the_dearest_tier() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let body = |tier: Option<&str>| {
        let mut b = json!({"model": "gpt-4o-mini", "max_tokens": 100_000,
                           "messages": [{"role": "user", "content": "how dear"}]});
        if let Some(t) = tier {
            b["service_tier"] = json!(t);
        }
        b
    };
    let standard = worst_case(book, Api::OpenAiChat, &body(Some("default"))).unwrap();
    let auto = worst_case(book, Api::OpenAiChat, &body(None)).unwrap();
    assert!(auto > standard, "{auto} vs {standard}");
    let limit = (standard + auto) / Decimal::TWO;
    let chain = funded(&stack, "auto-tier", &limit.round_dp(6).to_string());
    let url = stack.url();
    let (status, text) = post(
        &url,
        &chain,
        "/v1/chat/completions",
        "authorization",
        &[],
        &body(None),
    );
    assert_eq!(status, 429, "auto reserves at priority: {text}");
    let (status, text) = post(
        &url,
        &chain,
        "/v1/chat/completions",
        "authorization",
        &[],
        &body(Some("default")),
    );
    assert_eq!(status, 200, "default reserves at standard rates: {text}");
}

fn header_map(headers: &[(&str, &str)]) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}
