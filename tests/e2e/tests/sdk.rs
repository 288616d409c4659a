//! The official `openai`, `anthropic` and `google-genai` Python SDKs, unchanged but for
//! `base_url` and the virtual key, through real Envoy with the Tollgate filter, against the
//! real control plane and the mock upstream (which demands each provider's key in that
//! provider's header and refuses virtual keys, so every 200 proves the virtual key was
//! stripped and the route's cluster injected its own provider's key):
//! - JSON and streamed requests are metered: the usage the SDK sees is the mock's
//!   deterministic usage, a streamed OpenAI request gets usage although the client did not
//!   ask for it (the filter injects `stream_options.include_usage`), and each request's cost
//!   reaches the ledger (and the access log) exactly equal to the price computed
//!   independently, within two sync intervals;
//! - the SDKs send their default `Accept-Encoding: gzip, deflate` and the mock compresses what
//!   is allowed, yet usage is exact: the filter asks the provider for `identity`, and Envoy's
//!   compressor gzips the JSON answers toward the SDK after metering (streams stay plain);
//! - `x-tollgate-budget-remaining` is the limit minus everything spent before the request;
//! - an exhausted budget is a 429 that each SDK raises as its own `RateLimitError`, carrying
//!   Tollgate's message.
//!
//! Run with `cargo test -p tollgate-tests --test sdk` (needs `.venv`: `bash scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_tests::pricing::{expected_with_prefix, litellm_book};
use tollgate_tests::{eventually, python, Chain, Stack};
use tollgate_upstream::{Api, Controls};

use common::{dec, key_spend_reaches, two_intervals};

/// Runs one SDK case with `chain`'s key; returns its JSON lines.
fn sdk(
    stack: &Stack,
    py: &std::path::PathBuf,
    chain: &Chain,
    case: &str,
    text: &str,
) -> Vec<Value> {
    python::run(
        py,
        "sdk_e2e.py",
        &[case, &stack.url(), text],
        &[("TOLLGATE_KEY", &chain.secret)],
        &stack.secrets,
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()))
}

/// Sends `cases` one by one and checks each against the mock's usage, the independent price,
/// the remaining-budget header, the access log and the ledger.
fn metered_exactly(prefix: &str, api: Api, cases: &[&str]) {
    metered_exactly_at(prefix, api, cases, "");
}

/// [`metered_exactly`], each request priced at the book's `{price_prefix}{model}`.
fn metered_exactly_at(prefix: &str, api: Api, cases: &[&str], price_prefix: &str) {
    let Some(stack) = common::stack() else { return };
    let Some(py) = common::python() else { return };
    let admin = stack.api().unwrap();
    let chain = admin.create_chain(prefix).unwrap();
    let limit = dec("5");
    let budget = admin
        .create_budget("key", &chain.key_id, "total", "5")
        .unwrap();
    stack.wait_for_sync().unwrap();
    let book = litellm_book().unwrap();
    let mut spent = Decimal::ZERO;
    for (i, case) in cases.iter().enumerate() {
        let text = format!("request {i} of {prefix}: {}", "words ".repeat(i * 7));
        let script = python::spawn(
            &py,
            "sdk_e2e.py",
            &[case, &stack.url(), &text],
            &[("TOLLGATE_KEY", &chain.secret)],
            &stack.secrets,
        )
        .unwrap();
        // Watch the ledger while the SDK works: when does this request's event land?
        let landed = eventually(Duration::from_secs(30), || {
            let s = admin.spend("key", &chain.key_id).unwrap();
            (s.requests > i as u64).then(SystemTime::now)
        });
        let lines = python::finish(script).unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
        let landed = landed.unwrap_or_else(|| panic!("request {i} never reached the ledger"));
        let r = &lines[0];
        let (usage, cost) =
            expected_with_prefix(book, api, &r["request"], &Controls::default(), price_prefix)
                .unwrap();
        match api {
            Api::OpenAiChat => {
                assert_eq!(
                    r["usage"]["prompt_tokens"],
                    usage.prompt_total(),
                    "{case}: {r}"
                );
                assert_eq!(r["usage"]["completion_tokens"], usage.output, "{case}: {r}");
            }
            Api::OpenAiEmbeddings => {
                assert_eq!(
                    r["usage"]["prompt_tokens"], usage.input_uncached,
                    "{case}: {r}"
                );
            }
            _ => {
                assert_eq!(
                    r["usage"]["input_tokens"], usage.input_uncached,
                    "{case}: {r}"
                );
                assert_eq!(r["usage"]["output_tokens"], usage.output, "{case}: {r}");
            }
        }
        assert!(!r["text"].as_str().unwrap().is_empty(), "{case}: {r}");
        // The SDK's default headers allow compression and the mock compresses whatever is
        // allowed: the exact usage above proves the filter read it anyway (it asks for
        // identity). JSON answers reach the SDK gzipped by Envoy's compressor, streams plain.
        // boto3 asks for no compression (botocore sets no Accept-Encoding; urllib3 sends
        // `identity`): nothing to compress toward it.
        let sent = r["accept_encoding"].as_str();
        let boto3 = r["api"].as_str().is_some_and(|a| a.starts_with("bedrock"));
        if let (Some(sent), false) = (sent, boto3) {
            assert!(sent.contains("gzip"), "{case}: {r}");
        }
        let accepts_gzip = match sent {
            Some(s) => s.contains("gzip"),
            None => !boto3,
        };
        let want_coding = (!case.contains("stream") && accepts_gzip).then_some("gzip");
        assert_eq!(r["content_encoding"].as_str(), want_coding, "{case}: {r}");
        // Known when the request was admitted: the limit minus everything settled before.
        assert_eq!(
            dec(r["remaining"]
                .as_str()
                .expect("x-tollgate-budget-remaining")),
            limit - spent,
            "{case}: {r}"
        );
        assert_eq!(r["budget"], format!("key:{budget}"), "{case}: {r}");
        spent += cost;
        key_spend_reaches(&stack, &chain.key_id, i + 1, spent);
        // From the moment the SDK had the whole response (the script's clock is this machine's)
        // to the first ledger read (every 20 ms) that showed its event.
        let done = UNIX_EPOCH + Duration::from_secs_f64(r["done_at"].as_f64().unwrap());
        let took = landed.duration_since(done).unwrap_or_default();
        eprintln!("{case}: cost {cost} USD in the ledger {took:?} after the response");
        assert!(
            took <= two_intervals(&stack),
            "{case}: the cost reached the ledger after {took:?}, more than two sync intervals"
        );
        // The access log prints the same cost from filter state (Envoy flushes it every
        // second).
        let metered: Vec<Value> = eventually(Duration::from_secs(5), || {
            let m: Vec<Value> = stack
                .access_log()
                .into_iter()
                .filter(|l| !l["cost_usd"].is_null())
                .collect();
            (m.len() > i).then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "no access log line for request {i}: {:#?}\n{}",
                std::fs::read_to_string(stack.dir.join("access.log")).unwrap_or_default(),
                stack.logs()
            )
        });
        assert_eq!(metered.len(), i + 1, "{metered:?}");
        let line = &metered[i];
        assert_eq!(dec(line["cost_usd"].as_str().unwrap()), cost, "{line}");
        assert_eq!(line["decision"], "allow", "{line}");
        assert_eq!(
            line["principal"],
            format!(
                "{}/{}/{}/{}",
                chain.org, chain.project, chain.user, chain.key_id
            )
        );
    }
}

#[test]
fn openai_sdk_json_and_streamed_requests_are_metered_exactly() {
    metered_exactly(
        "openai",
        Api::OpenAiChat,
        &[
            "openai-chat",
            "openai-stream",
            "openai-chat-h2",
            "openai-stream-h2",
        ],
    );
}

/// Issue 13, item 8: google-genai, default settings but for the base URL and the virtual key,
/// on both path versions it sends (`/v1beta/…` by default, `/v1/models/{m}:generateContent`
/// with `api_version="v1"`, which the old routes sent to OpenAI with the Gemini key): each
/// request reaches the Gemini cluster (the mock demands the Gemini key in `x-goog-api-key`) and
/// lands in the ledger once at its exact price.
#[test]
fn google_genai_sdk_json_and_streamed_requests_are_metered_exactly() {
    metered_exactly(
        "gemini",
        Api::Gemini,
        &[
            "gemini-generate",
            "gemini-stream",
            "gemini-v1-generate",
            "gemini-v1-stream",
        ],
    );
}

#[test]
fn openai_sdk_responses_json_and_streamed_are_metered_exactly() {
    metered_exactly(
        "responses",
        Api::OpenAiResponses,
        &["openai-responses", "openai-responses-stream"],
    );
}

/// Issue 15: `openai.AzureOpenAI` on the deployment surface (the virtual key in `api-key`,
/// Azure's own key injected by the azure cluster) and `openai.OpenAI` on Azure's v1 surface:
/// each deployment priced at the Azure entry its map names (`azure/gpt-4o-mini` bills 10 %
/// above OpenAI's own `gpt-4o-mini`, so a request priced as OpenAI's would not match).
#[test]
fn azure_openai_sdk_requests_are_metered_at_azure_prices() {
    metered_exactly_at(
        "azure",
        Api::OpenAiChat,
        &["azure-chat", "azure-stream", "azure-v1-chat"],
        "azure/",
    );
}

#[test]
fn azure_openai_sdk_embeddings_and_responses_are_metered_at_azure_prices() {
    metered_exactly_at(
        "azure-emb",
        Api::OpenAiEmbeddings,
        &["azure-embeddings"],
        "azure/",
    );
    metered_exactly_at(
        "azure-resp",
        Api::OpenAiResponses,
        &["azure-v1-responses"],
        "azure/",
    );
}

/// Issue 15: Vertex AI through `google-genai` (`vertexai=True`) and `anthropic.AnthropicVertex`,
/// the virtual key as the OAuth access token: the vertex_ai cluster injects the platform's token
/// (the mock demands it as the bearer and refuses a virtual key); Claude priced at its
/// `vertex_ai/` entry, Gemini at LiteLLM's Vertex entry.
#[test]
fn vertex_ai_sdk_requests_are_metered_exactly() {
    metered_exactly(
        "vertex-gemini",
        Api::Gemini,
        &["vertex-gemini-generate", "vertex-gemini-stream"],
    );
    metered_exactly_at(
        "vertex-claude",
        Api::AnthropicMessages,
        &["vertex-anthropic-messages", "vertex-anthropic-stream"],
        "vertex_ai/",
    );
}

/// Issue 15: Amazon Bedrock through boto3 (Converse on a non-Anthropic model, ConverseStream
/// on a `us.` region profile, InvokeModel and its response stream with Anthropic bodies) and
/// `anthropic.AnthropicBedrock`, the virtual key as a Bedrock API key (a bearer): the mock
/// refuses any request without a SigV4 signature by the platform's access key (Envoy's
/// aws_request_signing on the bedrock cluster) or with a virtual key, reads the AWS event
/// streams through botocore, and each request is priced at the path's model id (the region
/// profile's rate, not the name the answer gives the model).
#[test]
fn bedrock_sdk_requests_are_signed_and_metered_exactly() {
    metered_exactly(
        "bedrock-converse",
        Api::BedrockConverse,
        &["bedrock-converse", "bedrock-converse-stream"],
    );
    metered_exactly(
        "bedrock-invoke",
        Api::BedrockInvoke,
        &[
            "bedrock-invoke",
            "bedrock-invoke-stream",
            "bedrock-anthropic-messages",
            "bedrock-anthropic-stream",
        ],
    );
}

/// A Bedrock request over its budget is boto3's own `ThrottlingException` (the AWS error
/// shape: `x-amzn-errortype` and a top-level `message`) carrying Tollgate's message; boto3's
/// retries of it are refused again and never charged.
#[test]
fn bedrock_budget_refusal_is_boto3s_throttling_exception() {
    let Some(stack) = common::stack() else { return };
    let Some(py) = common::python() else { return };
    let admin = stack.api().unwrap();
    let chain = admin.create_chain("bedrock-x").unwrap();
    let budget = admin
        .create_budget("key", &chain.key_id, "total", "0.0001")
        .unwrap();
    stack.wait_for_sync().unwrap();
    let lines = sdk(&stack, &py, &chain, "bedrock-exhaust", "spend it all");
    let (refusal, allowed) = lines.split_last().unwrap();
    assert!(!allowed.is_empty(), "{lines:?}");
    assert_eq!(refusal["case"], "rate_limited", "{refusal}");
    assert_eq!(
        refusal["error_class"], "botocore.errorfactory.ThrottlingException",
        "{refusal}"
    );
    assert_eq!(refusal["code"], "ThrottlingException");
    assert_eq!(refusal["status"], 429);
    assert_exhausted(refusal, &budget);
    assert_eq!(refusal["budget"], format!("key:{budget}"));
    let book = litellm_book().unwrap();
    let spent: Decimal = allowed
        .iter()
        .map(|r| {
            expected_with_prefix(
                book,
                Api::BedrockConverse,
                &r["request"],
                &Controls::default(),
                "",
            )
            .unwrap()
            .1
        })
        .sum();
    key_spend_reaches(&stack, &chain.key_id, allowed.len(), spent);
}

#[test]
fn openai_sdk_embeddings_are_metered_exactly() {
    metered_exactly("embeddings", Api::OpenAiEmbeddings, &["openai-embeddings"]);
}

#[test]
fn anthropic_sdk_json_and_streamed_requests_are_metered_exactly() {
    metered_exactly(
        "anthropic",
        Api::AnthropicMessages,
        &[
            "anthropic-messages",
            "anthropic-stream",
            "anthropic-messages",
        ],
    );
}

/// The refusal's message names the exhausted budget, as every SDK shows it.
fn assert_exhausted(refusal: &Value, budget: &str) {
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "Tollgate: budget \"{budget}\" for this key is exhausted"
        )),
        "{message}"
    );
}

/// Spends a small budget until Tollgate refuses, in one SDK; checks the error and the ledger.
fn exhaust(stack: &Stack, py: &std::path::PathBuf, prefix: &str, api: Api, limit: &str) {
    exhaust_with(stack, py, prefix, prefix, api, limit, "");
}

/// [`exhaust`] with the case `{prefix}-exhaust` of the SDK module `sdk_name`, each request
/// priced at `{price_prefix}{model}`.
fn exhaust_with(
    stack: &Stack,
    py: &std::path::PathBuf,
    prefix: &str,
    sdk_name: &str,
    api: Api,
    limit: &str,
    price_prefix: &str,
) {
    let admin = stack.api().unwrap();
    let chain = admin.create_chain(prefix).unwrap();
    let budget = admin
        .create_budget("key", &chain.key_id, "total", limit)
        .unwrap();
    stack.wait_for_sync().unwrap();
    let lines = sdk(
        stack,
        py,
        &chain,
        &format!("{prefix}-exhaust"),
        "spend it all",
    );
    let (refusal, allowed) = lines.split_last().unwrap();
    assert!(
        !allowed.is_empty(),
        "the first request fits the budget: {lines:?}"
    );
    let book = litellm_book().unwrap();
    let limit = dec(limit);
    let mut spent = Decimal::ZERO;
    for r in allowed {
        assert_eq!(r["case"], "allowed");
        assert_eq!(
            dec(r["remaining"].as_str().unwrap()),
            limit - spent,
            "{prefix}: {r}"
        );
        spent += expected_with_prefix(book, api, &r["request"], &Controls::default(), price_prefix)
            .unwrap()
            .1;
    }
    assert!(spent <= limit, "spent {spent} of {limit}");
    // The SDK's own rate-limit exception, carrying Tollgate's message.
    assert_eq!(refusal["case"], "rate_limited", "{refusal}");
    let class = refusal["error_class"].as_str().unwrap();
    assert!(
        class.starts_with(&format!("{sdk_name}.")) && class.ends_with(".RateLimitError"),
        "{class}"
    );
    assert_eq!(refusal["status"], 429);
    assert_exhausted(refusal, &budget);
    let body = &refusal["body"];
    let error = if body["error"].is_object() {
        &body["error"]
    } else {
        body
    };
    assert_eq!(error["type"], "budget_exceeded", "{body}");
    assert_eq!(error["budget"]["id"], budget.as_str(), "{body}");
    assert_eq!(refusal["budget"], format!("key:{budget}"));
    // Refused requests are not metered: the ledger holds the allowed ones, exactly.
    key_spend_reaches(stack, &chain.key_id, allowed.len(), spent);
}

#[test]
fn exhausted_budget_is_each_sdks_rate_limit_error_with_our_message() {
    let Some(stack) = common::stack() else { return };
    let Some(py) = common::python() else { return };
    // A few requests' worth each: gpt-4o-mini costs about $0.00001 per request here,
    // claude-haiku-4-5 about $0.00007.
    exhaust(&stack, &py, "openai", Api::OpenAiChat, "0.00005");
    exhaust(&stack, &py, "anthropic", Api::AnthropicMessages, "0.0004");
    // Azure OpenAI through openai.AzureOpenAI: the same 429, raised as the openai SDK's.
    exhaust_with(
        &stack,
        &py,
        "azure",
        "openai",
        Api::OpenAiChat,
        "0.00005",
        "azure/",
    );
}
