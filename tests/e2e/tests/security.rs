//! Security end to end, through real Envoy:
//! - no token or key in any log line: the control plane at `debug`, Envoy at `debug` (but
//!   for the components that print whole header maps, see [`ENVOY_LOG`]), the mock upstream
//!   and the access log, after SDK traffic (JSON and streamed, both SDKs), every deny path
//!   (no key, unknown key, exhausted budget, revoked key, wrong API tokens) and usage syncs;
//!   the admin token, the data-plane token, the provider key and every virtual key secret
//!   are looked for in every line, and the logs must be non-empty for that to mean anything;
//! - a principal header sent by the client is ignored when no trusted filter sets it (the
//!   shipped config): a virtual key's own chain is charged and judged, whatever the header
//!   says, and the header alone is no identity;
//! - with a trusted principal header configured, its chain is judged and charged, a malformed
//!   one refused, and every credential the client sent still stripped, text or not.
//!
//! Run with `cargo test -p tollgate-tests --test security`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::{eventually, python, Chain, Stack, StackOptions};

use common::{client_with, ledger_reaches, two_intervals, SYNC_INTERVAL_MS};

/// Envoy's log levels for the log scan: everything at `debug`, except `http`, whose
/// "request headers complete" line prints every header the client sent, its own virtual key
/// included (Envoy's behaviour, whatever filter runs). `router` ("router decoding headers",
/// after the filter stripped the virtual key and before the cluster injects the provider
/// key) and `config` (no secret is in the configuration any more) run at debug.
const ENVOY_LOG: [&str; 4] = ["--log-level", "debug", "--component-log-level", "http:info"];

/// How long one request may take here (longer than `common::client`'s 10 s).
const TIMEOUT: Duration = Duration::from_secs(30);

/// One chat completion through Envoy with these extra headers: status and JSON body.
fn chat(stack: &Stack, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client_with(TIMEOUT)
        .post(format!("{}/v1/chat/completions", stack.url()))
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "security"}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn bearer(chain: &Chain) -> String {
    format!("Bearer {}", chain.secret)
}

#[test]
fn no_token_or_key_reaches_any_log() {
    let Some(mut stack) = common::stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        envoy_args: ENVOY_LOG.iter().map(|s| s.to_string()).collect(),
        ..StackOptions::default()
    }) else {
        return;
    };
    stack.cp.set_rust_log("debug");
    stack.cp.restart().unwrap();
    let api = stack.api().unwrap();
    let chain = api.create_chain("logs").unwrap();
    let broke = api.create_capped_chain("broke", "0").unwrap();
    let (revoked_id, revoked) = api
        .create_key(&chain.org, Some(&chain.project), None, "to-revoke")
        .unwrap();
    stack.wait_for_sync().unwrap();

    // Allowed traffic: the official SDKs, JSON and streamed, when the venv is there; plain
    // HTTP otherwise.
    let mut served = 0;
    if let Some(py) = common::python() {
        for case in [
            "openai-chat",
            "openai-stream",
            "anthropic-messages",
            "anthropic-stream",
        ] {
            python::run(
                &py,
                "sdk_e2e.py",
                &[case, &stack.url(), "logs"],
                &[("TOLLGATE_KEY", &chain.secret)],
                &stack.secrets,
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
            served += 1;
        }
    }
    let (status, _) = chat(&stack, &[("authorization", &bearer(&chain))]);
    assert_eq!(status, 200);
    served += 1;
    let (status, _) = chat(&stack, &[("authorization", &format!("Bearer {revoked}"))]);
    assert_eq!(status, 200);

    // Every deny path.
    let (status, body) = chat(&stack, &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (status, _) = chat(
        &stack,
        &[("authorization", "Bearer tg-not-a-key-0123456789abcdef")],
    );
    assert_eq!(status, 401);
    let (status, body) = chat(&stack, &[("authorization", &bearer(&broke))]);
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (429, Some("budget_exceeded"))
    );
    api.revoke_key(&revoked_id).unwrap();
    let refused = eventually(two_intervals(&stack) * 4, || {
        let (status, _) = chat(&stack, &[("authorization", &format!("Bearer {revoked}"))]);
        (status == 401).then_some(())
    });
    assert!(refused.is_some(), "the revoked key still works");
    // The control plane refusing tokens.
    let http = client_with(TIMEOUT);
    let cp = stack.cp.url();
    for (token, want) in [
        (None, 401),
        (Some("tg-admin-wrong-0123456789abcdef"), 403),
        (Some(stack.cp.dataplane_token()), 403),
    ] {
        let mut req = http.get(format!("{cp}/v1/budgets"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().unwrap().status().as_u16(), want);
    }

    // Usage synced (the sync service's calls carry the data-plane token).
    let spend = ledger_reaches_at_least(&stack, &chain, served);
    assert!(spend.total_usd > rust_decimal::Decimal::ZERO);

    // The grep is only meaningful if the logs say something and the secrets are known.
    let envoy = stack.envoy.proc.output();
    let control_plane = stack.cp.output();
    let access_log = std::fs::read_to_string(stack.dir.join("access.log")).unwrap();
    assert!(
        envoy.lines().filter(|l| l.contains("[debug]")).count() > 20,
        "Envoy logged too little at debug:\n{envoy}"
    );
    assert!(
        envoy.contains("[wasm]") || envoy.contains("wasm log"),
        "no wasm line in Envoy's log:\n{envoy}"
    );
    assert!(
        control_plane.contains("DEBUG") && control_plane.contains("/v1/usage"),
        "the control plane logged no request at debug:\n{control_plane}"
    );
    assert!(access_log.lines().count() > served, "{access_log}");
    for (what, secret) in [
        ("admin token", stack.cp.admin_token()),
        ("data-plane token", stack.cp.dataplane_token()),
        ("provider key", stack.provider_key()),
        ("virtual key", chain.secret.as_str()),
        ("broke virtual key", broke.secret.as_str()),
        ("revoked virtual key", revoked.as_str()),
    ] {
        assert!(stack.secrets.found_in(secret), "{what} is not looked for");
    }

    assert_eq!(
        stack.envoy.proc.secret_leaks(),
        0,
        "Envoy logged a secret:\n{envoy}"
    );
    assert_eq!(
        stack.cp.secret_leaks(),
        0,
        "the control plane logged a secret:\n{control_plane}"
    );
    assert_eq!(
        stack.upstream.secret_leaks(),
        0,
        "the upstream logged a secret"
    );
    assert!(
        !stack.secrets.found_in(&access_log),
        "the access log holds a secret"
    );
    eprintln!(
        "log scan: {} Envoy lines, {} control-plane lines, {} access-log lines, 6 secrets, none found",
        envoy.lines().count(),
        control_plane.lines().count(),
        access_log.lines().count()
    );
}

/// Waits until the ledger holds at least `n` requests of `chain`'s key.
fn ledger_reaches_at_least(stack: &Stack, chain: &Chain, n: usize) -> Spend {
    let api = stack.api().unwrap();
    eventually(Duration::from_secs(30), || {
        let s = api.spend("key", &chain.key_id).unwrap();
        (s.requests >= n as u64).then_some(s)
    })
    .unwrap_or_else(|| panic!("fewer than {n} requests in the ledger\n{}", stack.logs()))
}

#[test]
fn a_client_principal_header_is_ignored_without_a_trusted_filter() {
    let Some(stack) = common::stack() else { return };
    let api = stack.api().unwrap();
    let victim = api.create_chain("victim").unwrap();
    let caller = api.create_chain("caller").unwrap();
    let broke = api.create_chain("broke").unwrap();
    api.create_budget("project", &broke.project, "total", "0")
        .unwrap();
    stack.wait_for_sync().unwrap();
    let spoof = format!(
        "org={};project={};user={};key={}",
        victim.org, victim.project, victim.user, victim.key_id
    );
    // Header names an operator might configure as the trusted one.
    let names = ["x-tollgate-principal", "x-principal", "x-forwarded-user"];

    // The header alone is no identity.
    for name in names {
        let (status, body) = chat(&stack, &[(name, &spoof)]);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("missing_api_key")),
            "{name}: {body}"
        );
    }
    // With a key, the key's chain is judged: a spent budget still denies ...
    for name in names {
        let (status, body) = chat(
            &stack,
            &[("authorization", &bearer(&broke)), (name, &spoof)],
        );
        assert_eq!(status, 429, "{name}: {body}");
        assert_eq!(body["error"]["budget"]["scope"], "project", "{body}");
    }
    // ... and the key's chain is charged, never the one the header names.
    for name in names {
        let (status, body) = chat(
            &stack,
            &[("authorization", &bearer(&caller)), (name, &spoof)],
        );
        assert_eq!(status, 200, "{name}: {body}");
    }
    let book = tollgate_tests::pricing::litellm_book().unwrap();
    let (_, one) = tollgate_tests::pricing::expected(
        book,
        tollgate_upstream::Api::OpenAiChat,
        &json!({"model": "gpt-4o-mini", "max_tokens": 16,
                "messages": [{"role": "user", "content": "security"}]}),
        &tollgate_upstream::Controls::default(),
    )
    .unwrap();
    ledger_reaches(
        &stack,
        "key",
        &caller.key_id,
        Spend {
            requests: names.len() as u64,
            total_usd: one * rust_decimal::Decimal::from(names.len()),
        },
    );
    let victim_spend = api.spend("org", &victim.org).unwrap();
    assert_eq!(victim_spend.requests, 0, "the spoofed chain was charged");
    // Envoy writes its access log file on its own flush interval (1 s): wait for the lines.
    let answered = || -> Vec<Value> {
        stack
            .access_log()
            .into_iter()
            .filter(|l| l["status"] == "200" || l["status"] == 200)
            .collect()
    };
    let logged = eventually(Duration::from_secs(10), || {
        let got = answered();
        (got.len() >= names.len()).then_some(got)
    })
    .unwrap_or_else(|| panic!("the access log lacks lines: {:?}", answered()));
    assert_eq!(logged.len(), names.len(), "{logged:?}");
    for l in &logged {
        let p = l["principal"].as_str().unwrap_or_default();
        assert!(p.contains(&caller.org) && !p.contains(&victim.org), "{l}");
    }
}

/// With `trusted_principal_header` set (the operator's earlier filter, `jwt_authn` or
/// `ext_authz`, writes it), the chain the header names is judged and charged, a malformed one
/// is refused, and every credential the client sent is still stripped before the cluster
/// injects the provider's key: a virtual key in another provider's header, and a value that
/// is not text (which the filter cannot read, and must remove all the same). The mock refuses
/// a virtual key in any header and any credential header that is not text, so each 200 shows
/// the header never reached it.
#[test]
fn a_trusted_principal_header_is_judged_and_every_credential_still_stripped() {
    const HEADER: &str = "x-tollgate-principal";
    let Some(stack) = common::stack_with(StackOptions {
        filter_config: Some(json!({"identity": {"trusted_principal_header": HEADER}})),
        ..StackOptions::default()
    }) else {
        return;
    };
    let api = stack.api().unwrap();
    let trusted = api.create_chain("trusted").unwrap();
    let broke = api.create_chain("trusted-broke").unwrap();
    api.create_budget("project", &broke.project, "total", "0")
        .unwrap();
    stack.wait_for_sync().unwrap();
    let principal = |c: &Chain| {
        format!(
            "org={};project={};user={};key={}",
            c.org, c.project, c.user, c.key_id
        )
    };
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "security"}]});
    let send = |chain: &str, extra: Option<(&str, &[u8])>| -> (u16, Value) {
        let mut req = client_with(TIMEOUT)
            .post(format!("{}/v1/chat/completions", stack.url()))
            .header(HEADER, chain)
            .json(&request);
        if let Some((name, value)) = extra {
            req = req.header(
                name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    };

    let credentials: [(&str, &[u8]); 3] = [
        ("x-goog-api-key", trusted.secret.as_bytes()),
        ("api-key", b"sk-client-\xff\xfe-own"),
        ("x-api-key", b"tg-\xff-not-text"),
    ];
    for (name, value) in credentials {
        let (status, body) = send(&principal(&trusted), Some((name, value)));
        assert_eq!(status, 200, "{name}: {body}");
    }
    // A malformed header is no identity; a spent budget on the named chain denies.
    let (status, body) = send("org=", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_principal")),
        "{body}"
    );
    let (status, body) = send(&principal(&broke), None);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["budget"]["scope"], "project", "{body}");

    let book = tollgate_tests::pricing::litellm_book().unwrap();
    let (_, one) = tollgate_tests::pricing::expected(
        book,
        tollgate_upstream::Api::OpenAiChat,
        &request,
        &tollgate_upstream::Controls::default(),
    )
    .unwrap();
    let n = credentials.len() as u64;
    ledger_reaches(
        &stack,
        "key",
        &trusted.key_id,
        Spend {
            requests: n,
            total_usd: one * rust_decimal::Decimal::from(n),
        },
    );
    assert_eq!(api.spend("org", &broke.org).unwrap().requests, 0);
}
