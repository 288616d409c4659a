//! Metering holds whatever codings the client accepts and the provider sends (issue 14, item
//! 1), through the real Envoy with `envoy/tollgate.yaml`'s filters and the mock provider, which
//! compresses like a provider's edge:
//! - Tollgate asks the provider for `identity` on metered routes; a provider that compresses
//!   anyway (`x-mock-force-encoding: gzip|br|zstd`) is inflated by Envoy's decompressors before
//!   Tollgate meters: every request lands in the ledger with its exact token counts and price;
//! - a client that accepts gzip gets its JSON answer gzip-compressed by Envoy's compressor
//!   (after metering), decoding to the provider's answer; a stream reaches it uncompressed;
//! - a coding no decompressor reads (`deflate`) is charged by the `missing_usage` policy (the
//!   estimate by default) and counted as `encoded_answer`, never as an answer without usage.
//!
//! The official SDKs with their default `Accept-Encoding: gzip, deflate` are in `sdk.rs`.
//!
//! `cargo test -p tollgate-tests --test compression -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book, worst_case};
use tollgate_tests::{Chain, Stack};
use tollgate_upstream::encoding::decode;
use tollgate_upstream::{Api, Controls};

use common::{dec, funded, keyed_post, ledger_reaches, ledger_tokens};

/// One request of each metered API shape the SDKs send: (API, path, key header, body).
fn requests(text: &str) -> Vec<(Api, &'static str, &'static str, Value)> {
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "max_tokens": 20, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    let messages = |stream: bool| {
        json!({"model": "claude-haiku-4-5", "max_tokens": 20, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    let gemini = json!({"model": "gemini-2.5-flash",
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "generationConfig": {"maxOutputTokens": 20}});
    vec![
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(false),
        ),
        (
            Api::OpenAiChat,
            "/v1/chat/completions",
            "authorization",
            chat(true),
        ),
        (
            Api::AnthropicMessages,
            "/v1/messages",
            "x-api-key",
            messages(false),
        ),
        (
            Api::AnthropicMessages,
            "/v1/messages",
            "x-api-key",
            messages(true),
        ),
        (
            Api::Gemini,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "x-goog-api-key",
            gemini.clone(),
        ),
        (
            Api::Gemini,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            "x-goog-api-key",
            gemini,
        ),
    ]
}

/// What the client received.
struct Answer {
    status: u16,
    content_type: String,
    content_encoding: Option<String>,
    body: Vec<u8>,
}

/// Sends `body` with `chain`'s key and `headers`; the answer's bytes as they arrived (the
/// client decodes nothing itself).
fn send(
    url: &str,
    chain: &Chain,
    (path, key_header, body): (&str, &str, &Value),
    headers: &[(&str, &str)],
) -> Answer {
    let resp = keyed_post(url, chain, (path, key_header), headers, body);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: resp.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        content_encoding: header("content-encoding"),
        body: resp.bytes().unwrap().to_vec(),
    }
}

/// The key's ledger rows once there are `n` (at most 30 s).
fn rows_of(stack: &Stack, chain: &Chain, n: usize) -> Vec<common::TokenRow> {
    tollgate_tests::eventually(std::time::Duration::from_secs(30), || {
        let rows = ledger_tokens(stack, &chain.key_id);
        (rows.len() >= n).then_some(rows)
    })
    .unwrap_or_else(|| panic!("fewer than {n} ledger rows\n{}", stack.logs()))
}

#[test]
fn answers_compressed_despite_identity_are_inflated_and_metered_exactly() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let chain = funded(&stack, "forced", "5");
    let url = stack.url();
    let mut want_rows = Vec::new();
    let mut total = Decimal::ZERO;
    for coding in ["gzip", "br", "zstd"] {
        for (api, path, key_header, body) in requests(&format!("forced {coding} coding")) {
            // The client accepts nothing but identity; the provider's edge ignores it.
            let a = send(
                &url,
                &chain,
                (path, key_header, &body),
                &[("x-mock-force-encoding", coding)],
            );
            assert_eq!(a.status, 200, "{coding} {path}");
            assert_eq!(
                a.content_encoding, None,
                "{coding} {path}: inflated by Envoy"
            );
            let (usage, cost) = expected(book, api, &body, &Controls::default()).unwrap();
            let text = String::from_utf8(a.body).unwrap();
            assert!(
                text.contains(&usage.output.to_string()),
                "{coding} {path}: {text}"
            );
            total += cost;
            want_rows.push((
                "actual".to_string(),
                None,
                usage.prompt_total() as i64,
                usage.output as i64,
                cost,
            ));
        }
    }
    let got: Vec<_> = rows_of(&stack, &chain, want_rows.len())
        .into_iter()
        .map(|(charge, reason, input, output, cost)| (charge, reason, input, output, dec(&cost)))
        .collect();
    assert_eq!(got, want_rows, "each request at its exact counts and price");
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: want_rows.len() as u64,
            total_usd: total,
        },
    );
    // Each decompressor inflated its coding's answers (Envoy's own counters).
    let stats = stack.envoy.stats("decompressor").unwrap();
    for coding in ["gzip", "br", "zstd"] {
        let inflated: u64 = stats
            .iter()
            .filter(|(k, _)| {
                k.contains(&format!("decompressor.{coding}."))
                    && k.ends_with("response.decompressed")
            })
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(inflated, 6, "{coding}: {stats:?}");
    }
    assert_eq!(
        stack
            .envoy
            .stat("tollgate_uncharged_encoded_answer")
            .unwrap(),
        0
    );
    assert_eq!(stack.envoy.stat("tollgate_uncharged_no_usage").unwrap(), 0);
}

#[test]
fn a_client_that_accepts_gzip_gets_gzip_json_after_metering() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let chain = funded(&stack, "toward-client", "5");
    let url = stack.url();
    let mut total = Decimal::ZERO;
    let mut sent = 0;
    // The provider answers identity (asked) or br (forced): the client gets gzip either way.
    for forced in [None, Some("br")] {
        for (api, path, key_header, body) in requests("compress it for me") {
            let mut headers = vec![("accept-encoding", "gzip")];
            headers.extend(forced.map(|c| ("x-mock-force-encoding", c)));
            let a = send(&url, &chain, (path, key_header, &body), &headers);
            assert_eq!(a.status, 200, "{path}");
            let (usage, cost) = expected(book, api, &body, &Controls::default()).unwrap();
            total += cost;
            sent += 1;
            if a.content_type.starts_with("text/event-stream") {
                // Streams are left alone: each event reaches the client as it comes.
                assert_eq!(a.content_encoding, None, "{path}");
                let text = String::from_utf8(a.body).unwrap();
                assert!(text.contains("data: "), "{path}: {text}");
                continue;
            }
            assert_eq!(a.content_encoding.as_deref(), Some("gzip"), "{path}");
            let answer: Value = serde_json::from_slice(&decode(Some("gzip"), &a.body).unwrap())
                .unwrap_or_else(|e| panic!("{path}: not gzip JSON: {e}"));
            // The provider's answer, usage included, as the mock computed it.
            let (input, output) = match api {
                Api::OpenAiChat => (
                    &answer["usage"]["prompt_tokens"],
                    &answer["usage"]["completion_tokens"],
                ),
                Api::AnthropicMessages => (
                    &answer["usage"]["input_tokens"],
                    &answer["usage"]["output_tokens"],
                ),
                _ => (
                    &answer["usageMetadata"]["promptTokenCount"],
                    &answer["usageMetadata"]["candidatesTokenCount"],
                ),
            };
            assert_eq!(
                (input.as_u64(), output.as_u64()),
                (Some(usage.prompt_total()), Some(usage.output)),
                "{path}: {answer}"
            );
        }
    }
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: sent,
            total_usd: total,
        },
    );
    assert!(ledger_tokens(&stack, &chain.key_id)
        .iter()
        .all(|r| r.0 == "actual" && r.1.is_none()));
    let compressed = stack.envoy.stats("compressor").unwrap();
    let gzip: u64 = compressed
        .iter()
        .filter(|(k, _)| k.contains("compressor.gzip.") && k.ends_with(".compressed"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(gzip, 6, "3 JSON answers twice: {compressed:?}");
}

#[test]
fn an_unreadable_coding_is_charged_by_policy_and_counted_as_encoded_answer() {
    let Some(stack) = common::stack() else { return };
    let book = litellm_book().unwrap();
    let chain = funded(&stack, "unreadable", "5");
    let url = stack.url();
    // No decompressor reads deflate: the usage inside is unreadable.
    let cases = requests("deflated by the edge");
    let mut estimates = Decimal::ZERO;
    for (api, path, key_header, body) in &cases {
        let a = send(
            &url,
            &chain,
            (path, key_header, body),
            &[("x-mock-force-encoding", "deflate")],
        );
        assert_eq!(a.status, 200, "{path}");
        // The answer still reaches the client as the provider sent it.
        assert_eq!(a.content_encoding.as_deref(), Some("deflate"), "{path}");
        assert!(decode(Some("deflate"), &a.body).is_ok(), "{path}");
        estimates += worst_case(book, *api, body).unwrap();
    }
    let n = cases.len();
    ledger_reaches(
        &stack,
        "key",
        &chain.key_id,
        Spend {
            requests: n as u64,
            total_usd: estimates,
        },
    );
    let rows = ledger_tokens(&stack, &chain.key_id);
    assert!(
        rows.iter().all(|r| r.0 == "estimate"
            && r.1.as_deref() == Some("encoded_answer")
            && (r.2, r.3) == (0, 0)),
        "{rows:?}"
    );
    assert_eq!(
        stack
            .envoy
            .stat("tollgate_uncharged_encoded_answer")
            .unwrap(),
        n as u64
    );
    assert_eq!(stack.envoy.stat("tollgate_uncharged_no_usage").unwrap(), 0);
}
