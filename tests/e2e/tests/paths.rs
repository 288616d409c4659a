//! Issue 13, items 7, 8 and 9, through the real Envoy with the shipped `envoy/tollgate.yaml`:
//! - every variant of a metered path (percent escapes, `%2F`, trailing slash, case, `//`,
//!   `/./`, `/../`), sent byte for byte on a raw socket, is either refused before any
//!   provider sees it or normalised by Envoy into the metered path and metered; none is
//!   forwarded unjudged. The access log's `upstream_host` (null when no upstream was reached)
//!   and `decision` show which, and the ledger holds exactly the metered ones;
//! - a request on a path that is neither metered nor a model list is refused, with or without
//!   a virtual key;
//! - a metered request routed to another provider's cluster (a deployment's wrong route) is
//!   refused by the filter (`xds.cluster_name` is known in the request-header phase);
//! - a client's `x-envoy-original-path` does not reach the access log, which prints the path
//!   the filter judged.
//!
//! Run with `cargo test -p tollgate-tests --test paths`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::{eventually, Stack, StackOptions};

use common::SYNC_INTERVAL_MS;

/// One HTTP/1.1 request written byte for byte (no client library normalises the path):
/// status, headers (lowercase names) and body.
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: tollgate.test\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn chat() -> String {
    json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn messages() -> String {
    json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn gemini() -> String {
    json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
           "generationConfig": {"maxOutputTokens": 8}})
    .to_string()
}

/// The access log's lines once it holds at least `n`.
fn converse() -> String {
    r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":8}}"#
        .into()
}

fn invoke() -> String {
    r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#
        .into()
}

fn log_lines(stack: &Stack, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(10), || {
        let l = stack.access_log();
        (l.len() >= n).then_some(l)
    })
    .unwrap_or_else(|| panic!("fewer than {n} access log lines: {:?}", stack.access_log()))
}

/// A raw request: path, credential headers, body, expected status, metered or not.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], String, u16, bool);

#[test]
fn variants_of_metered_paths_are_refused_or_metered_never_forwarded_unjudged() {
    let Some(stack) = common::stack() else { return };
    let (api, chain) = common::synced_chain(&stack, "paths");
    let bearer = format!("Bearer {}", chain.secret);
    let openai: &[(&str, &str)] = &[("authorization", &bearer)];
    let anthropic: &[(&str, &str)] = &[("x-api-key", &chain.secret)];
    let google: &[(&str, &str)] = &[("x-goog-api-key", &chain.secret)];
    // Bedrock: the virtual key as a Bedrock API key (the bedrock cluster signs with SigV4).
    let aws: &[(&str, &str)] = &[("authorization", &bearer)];
    // (path, credentials, body, expected status, metered?)
    let cases: Vec<Case<'_>> = vec![
        // Bedrock model ids hold `:`, which boto3 escapes: `%3A` is let through there only.
        ("/model/amazon.nova-pro-v1%3A0/converse", aws, converse(), 200, true),
        ("/model/amazon.nova-pro-v1:0/converse", aws, converse(), 200, true),
        ("/model/amazon.nova-pro-v1%3a0/conv%65rse", aws, converse(), 200, true),
        (
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke",
            aws,
            invoke(),
            200,
            true,
        ),
        // Any other escape, an escaped `:` elsewhere, a double escape: refused by the filter.
        ("/model/amazon.nova-pro-v1%3A0/converse%3A", aws, converse(), 400, false),
        ("/model/amazon.nova-pro-v1%253A0/converse", aws, converse(), 400, false),
        // An ARN's escaped slash: refused by Envoy.
        ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.m/converse", aws, converse(), 400, false),
        // Other vendors' InvokeModel bodies are not metered: refused, never forwarded.
        ("/model/meta.llama3-70b-instruct-v1%3A0/invoke", aws, converse(), 404, false),
        ("/model/amazon.nova-pro-v1%3A0/count-tokens", aws, converse(), 404, false),
        // Escapes Envoy keeps: refused by the filter.
        (
            "/v1beta/models/gemini-2.5-pro%3AgenerateContent",
            google,
            gemini(),
            400,
            false,
        ),
        (
            "/v1beta/models/gemini-2.5-flash%3agenerateContent",
            google,
            gemini(),
            400,
            false,
        ),
        (
            "/v1/models/gemini-2.5-flash%3AstreamGenerateContent?alt=sse",
            google,
            gemini(),
            400,
            false,
        ),
        // A key in the query (Gemini's other way): refused, it would reach the provider.
        (
            "/v1beta/models/gemini-2.5-flash:generateContent?key=tg-in-the-query",
            google,
            gemini(),
            400,
            false,
        ),
        // Escaped slashes: refused by Envoy (path_with_escaped_slashes_action: REJECT_REQUEST).
        ("/v1%2Fchat%2Fcompletions", openai, chat(), 400, false),
        ("/v1/chat/completions%2F", openai, chat(), 400, false),
        ("/v1/chat%5Ccompletions", openai, chat(), 400, false),
        // Trailing slash and case: not the provider's path, refused.
        ("/v1/chat/completions/", openai, chat(), 404, false),
        ("/v1/messages/", anthropic, messages(), 404, false),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent/",
            google,
            gemini(),
            404,
            false,
        ),
        ("/V1/chat/completions", openai, chat(), 404, false),
        ("/v1/Chat/Completions", openai, chat(), 404, false),
        ("/v1/MESSAGES", anthropic, messages(), 404, false),
        (
            "/v1beta/models/gemini-2.5-flash:GenerateContent",
            google,
            gemini(),
            404,
            false,
        ),
        // Normalised by Envoy into the metered path, then metered.
        ("/v1/./chat/completions", openai, chat(), 200, true),
        ("/v1/x/../chat/completions", openai, chat(), 200, true),
        ("//v1//chat//completions", openai, chat(), 200, true),
        ("/v1/chat/complet%69ons", openai, chat(), 200, true),
        ("/v1/./messages", anthropic, messages(), 200, true),
        (
            "/v1beta//models/gemini-2.5-flash:generateContent",
            google,
            gemini(),
            200,
            true,
        ),
        // Not an endpoint Tollgate judges: refused, with or without a key.
        ("/v1/files", openai, "{}".into(), 404, false),
        ("/v1/files", &[], "{}".into(), 404, false),
        ("/v1/batches", openai, "{}".into(), 404, false),
        (
            "/v1beta/models/gemini-2.5-flash:countTokens",
            google,
            gemini(),
            404,
            false,
        ),
        (
            "/v1/messages/count_tokens",
            anthropic,
            messages(),
            404,
            false,
        ),
    ];
    let mut metered = 0;
    for (path, creds, body, want, is_metered) in &cases {
        let (status, headers, text) = raw(stack.envoy.listener, "POST", path, creds, body);
        assert_eq!(status, *want, "{path}: {text}\n{}", stack.logs());
        if *is_metered {
            metered += 1;
            assert!(
                header(&headers, "x-tollgate-budget-remaining").is_some() || status == 200,
                "{path}"
            );
        } else if status == 404
            || (status == 400
                && (path.contains("%3") || path.contains("key="))
                && !path.contains("%2F"))
        {
            // The filter's own answer, OpenAI-shaped.
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
            assert!(
                v["error"]["message"].as_str().unwrap().contains("Tollgate"),
                "{path}: {v}"
            );
            assert_eq!(
                header(&headers, "x-tollgate-decision"),
                Some("refused"),
                "{path}"
            );
        }
    }
    // The free list: forwarded (the mock demands the provider's key), counted, not charged.
    for (path, creds) in [
        ("/v1/models", openai),
        ("/v1/models/gpt-4o-mini", openai),
        ("/v1beta/models", google),
        ("/v1beta/models/gemini-2.5-flash", google),
    ] {
        let (status, _, text) = raw(stack.envoy.listener, "GET", path, creds, "");
        assert_eq!(status, 200, "{path}: {text}");
    }
    // ... but never without a valid virtual key.
    let (status, _, _) = raw(stack.envoy.listener, "GET", "/v1/models", &[], "");
    assert_eq!(status, 401);
    // Counted as free (the counter of requests forwarded without metering).
    assert_eq!(
        stack.envoy.stat("tollgate_requests_unmetered").unwrap(),
        4,
        "{}",
        stack.logs()
    );

    // Every line: reached a provider only if metered (decision allow) or free.
    let n = cases.len() + 5;
    let lines = log_lines(&stack, n);
    let mut reached = 0;
    for l in &lines {
        let upstream_reached = !l["upstream_host"].is_null();
        let decision = l["decision"].as_str().unwrap_or("");
        if upstream_reached {
            reached += 1;
            assert!(
                decision == "allow" || decision == "free",
                "forwarded unjudged: {l}"
            );
        }
    }
    assert_eq!(reached, metered + 4, "{lines:#?}");
    // The ledger holds exactly the metered ones.
    let spend = eventually(Duration::from_secs(30), || {
        let s = api.spend("key", &chain.key_id).unwrap();
        (s.requests >= metered as u64).then_some(s)
    })
    .unwrap();
    std::thread::sleep(stack.sync_interval() * 3);
    assert_eq!(
        api.spend("key", &chain.key_id).unwrap().requests,
        metered as u64,
        "{spend:?}"
    );
}

#[test]
fn a_metered_request_routed_to_another_providers_cluster_is_refused() {
    // A deployment whose route sends Anthropic's path to the OpenAI cluster.
    let Some(stack) = common::stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        envoy_yaml_edits: vec![(
            "route: { cluster: anthropic, timeout: 600s }".into(),
            "route: { cluster: openai, timeout: 600s }".into(),
        )],
        ..StackOptions::default()
    }) else {
        return;
    };
    let (_, chain) = common::synced_chain(&stack, "misrouted");
    let (status, headers, text) = raw(
        stack.envoy.listener,
        "POST",
        "/v1/messages",
        &[("x-api-key", &chain.secret)],
        &messages(),
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("provider_route_mismatch"), "{text}");
    assert_eq!(header(&headers, "x-tollgate-decision"), Some("refused"));
    // OpenAI's own path on the same Envoy still works.
    let bearer = format!("Bearer {}", chain.secret);
    let (status, _, text) = raw(
        stack.envoy.listener,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &chat(),
    );
    assert_eq!(status, 200, "{text}");
    let lines = log_lines(&stack, 2);
    let refused = lines.iter().find(|l| l["path"] == "/v1/messages").unwrap();
    assert!(refused["upstream_host"].is_null(), "{refused}");
}

#[test]
fn a_forged_original_path_never_reaches_the_access_log() {
    let Some(stack) = common::stack() else { return };
    let (_, chain) = common::synced_chain(&stack, "forged");
    let bearer = format!("Bearer {}", chain.secret);
    let forged = "/v1/models/forged-by-the-client";
    let (status, _, text) = raw(
        stack.envoy.listener,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("x-envoy-original-path", forged),
        ],
        &chat(),
    );
    assert_eq!(status, 200, "{text}");
    // A refused one too.
    let (status, _, _) = raw(
        stack.envoy.listener,
        "POST",
        "/v1/files",
        &[
            ("authorization", &bearer),
            ("x-envoy-original-path", forged),
        ],
        "{}",
    );
    assert_eq!(status, 404);
    let lines = log_lines(&stack, 2);
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/files"], "{lines:#?}");
    assert_eq!(lines[0]["decision"], "allow");
    let text = std::fs::read_to_string(stack.dir.join("access.log")).unwrap();
    assert!(!text.contains("forged-by-the-client"), "{text}");
}

/// Issue 15 (Azure OpenAI): a deployment the filter config does not map is refused before it
/// reaches Azure, on both surfaces, whatever model the body names; a mapped one goes through
/// with Azure's key (the mock demands it in `api-key`) and never the virtual key.
#[test]
fn an_unmapped_azure_deployment_never_reaches_azure() {
    let Some(stack) = common::stack() else { return };
    let (_, chain) = common::synced_chain(&stack, "azure-paths");
    let key = [("api-key", chain.secret.as_str())];
    for path in [
        "/openai/deployments/not-mapped/chat/completions?api-version=2024-10-21",
        "/openai/v1/chat/completions",
    ] {
        let body = json!({"model": "not-mapped", "max_tokens": 8,
                          "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let (status, headers, text) = raw(stack.envoy.listener, "POST", path, &key, &body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("unknown_deployment"), "{text}");
        assert_eq!(header(&headers, "x-tollgate-decision"), Some("refused"));
    }
    let (status, _, text) = raw(
        stack.envoy.listener,
        "POST",
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        &key,
        &chat(),
    );
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = eventually(Duration::from_secs(10), || {
        let azure: Vec<Value> = stack
            .access_log()
            .into_iter()
            .filter(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/openai/"))
            })
            .collect();
        (azure.len() >= 3).then_some(azure)
    })
    .expect("three Azure lines in the access log");
    for l in &lines {
        let reached = !l["upstream_host"].is_null();
        assert_eq!(reached, l["status"] == 200, "{l}");
    }
}
