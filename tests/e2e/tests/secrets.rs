//! Issue 13, item 5: no secret is readable from Envoy's admin interface or its logs at any
//! level, through the real Envoy with the shipped `envoy/tollgate.yaml`.
//!
//! The stack writes the provider keys and the data-plane token into a secrets directory of
//! their own (SDS files naming key files); each cluster injects its own secret after routing.
//! Envoy runs at `--log-level trace` with its log in a file outside that directory. After
//! metered traffic on every provider API (both Gemini path versions), the free model lists
//! and refused requests, `/config_dump`, `/config_dump?include_eds`, the secrets dump and the
//! other read-only admin pages (`/clusters`, `/server_info`, `/stats`, `/runtime`, `/certs`,
//! `/listeners`) are searched for the data-plane token and each provider key, and so is the
//! whole trace log:
//! none is found. The mock upstream demands each provider's key in that provider's own header
//! and refuses any Tollgate virtual key, so every 200 proves the right key was injected.
//! The client's own virtual key *is* in the trace log (Envoy's HTTP/1 codec prints every
//! request header it reads at trace, before any filter runs): the test asserts that too,
//! which also shows the search would find a header value if one were printed.
//!
//! A second test rotates a provider key by renaming a new key file over the old one and
//! sees Envoy use it on the next request, without a restart.
//!
//! Run with `cargo test -p tollgate-tests --test secrets`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::envoy::write_secret_file;
use tollgate_tests::stack::scratch_dir;
use tollgate_tests::{eventually, StackOptions};

use common::SYNC_INTERVAL_MS;

/// Removes the directory when the test ends.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
}

fn messages() -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
}

fn gemini() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
           "generationConfig": {"maxOutputTokens": 8}})
}

#[test]
fn no_secret_in_config_dump_or_trace_log() {
    let dir = Dir(scratch_dir().unwrap());
    let log = dir.0.join("envoy-trace.log");
    let Some(stack) = common::stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        envoy_args: vec![
            "--log-level".into(),
            "trace".into(),
            "--log-path".into(),
            log.display().to_string(),
        ],
        dir: Some(dir.0.clone()),
        ..StackOptions::default()
    }) else {
        return;
    };
    assert!(
        !log.starts_with(dir.0.join("secrets")),
        "the log must not be in the watched secrets directory"
    );
    let (api, chain) = common::synced_chain(&stack, "secrets");
    let url = stack.url();
    let http = http();
    let send = |method: &str, path: &str, key: Option<(&str, String)>, body: Option<&Value>| {
        let mut req = http.request(method.parse().unwrap(), format!("{url}{path}"));
        if let Some((h, v)) = key {
            req = req.header(h, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.text().unwrap())
    };
    let bearer = || Some(("authorization", format!("Bearer {}", chain.secret)));
    let goog = || Some(("x-goog-api-key", chain.secret.clone()));
    // Metered, one per provider API; each 200 is the mock accepting that provider's key.
    for (path, key, body) in [
        ("/v1/chat/completions", bearer(), chat()),
        (
            "/v1/messages",
            Some(("x-api-key", chain.secret.clone())),
            messages(),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            goog(),
            gemini(),
        ),
        (
            "/v1/models/gemini-2.5-flash:generateContent",
            goog(),
            gemini(),
        ),
    ] {
        let (status, text) = send("POST", path, key, Some(&body));
        assert_eq!(status, 200, "{path}: {text}\n{}", stack.logs());
    }
    // Free: forwarded with the provider's key, not charged.
    let (status, text) = send("GET", "/v1/models", bearer(), None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["object"],
        "list"
    );
    let (status, text) = send("GET", "/v1beta/models", goog(), None);
    assert_eq!(status, 200, "{text}");
    // Refused: not an endpoint Tollgate judges, with and without a key; no key at all.
    let (status, text) = send("POST", "/v1/files", bearer(), Some(&json!({})));
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_endpoint"), "{text}");
    let (status, _) = send("GET", "/v1/files", None, None);
    assert_eq!(status, 404);
    let (status, text) = send("GET", "/v1/models", None, None);
    assert_eq!(status, 401, "{text}");
    let (status, text) = send("POST", "/v1/chat/completions", None, Some(&chat()));
    assert_eq!(status, 401, "{text}");

    // The four metered requests are in the ledger; the model lists are not.
    let spend = eventually(Duration::from_secs(30), || {
        let s = api.spend("key", &chain.key_id).unwrap();
        (s.requests >= 4).then_some(s)
    })
    .unwrap_or_else(|| panic!("metered requests missing from the ledger\n{}", stack.logs()));
    assert_eq!(spend.requests, 4);

    let keys = stack.provider_keys().clone();
    let mut secrets: Vec<(&str, String)> = keys
        .all()
        .iter()
        .map(|(p, k)| (*p, k.to_string()))
        .collect();
    secrets.push(("data-plane token", stack.cp.dataplane_token().to_string()));
    secrets.push(("admin token", stack.cp.admin_token().to_string()));

    // The admin interface: every dump there is, with EDS and the secrets section.
    let admin = stack.envoy.admin;
    for path in [
        "/config_dump",
        "/config_dump?include_eds",
        "/config_dump?resource=dynamic_active_secrets",
        "/config_dump?mask=",
        "/clusters",
        "/server_info",
        "/stats",
        "/runtime",
        "/certs",
        "/listeners",
    ] {
        let dump = http
            .get(format!("http://{admin}{path}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(dump.len() > 10, "{path}: {dump}");
        for (what, s) in &secrets {
            assert!(!dump.contains(s.as_str()), "{what} in {path}");
        }
        if path == "/config_dump" {
            // Meaningful only if the injection is what the dump describes.
            for want in ["credential_injector", "openai.yaml", "dataplane.yaml"] {
                assert!(dump.contains(want), "{want} not in /config_dump");
            }
        }
        if path.contains("dynamic_active_secrets") {
            assert!(dump.contains("openai_key"), "{dump}");
        }
    }

    // The whole trace log (flushed: Envoy writes its log file as it goes; wait for the last
    // request's lines).
    let text = eventually(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.contains("/v1/files").then_some(t)
    })
    .unwrap_or_else(|| panic!("no trace log at {}", log.display()));
    assert!(
        text.lines().filter(|l| l.contains("][trace][")).count() > 1000,
        "Envoy logged too little at trace"
    );
    for (what, s) in &secrets {
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(s.as_str())).collect();
        assert!(
            hits.is_empty(),
            "{what} in Envoy's trace log, {} lines, the first: {}",
            hits.len(),
            stack.secrets.redact(hits[0])
        );
    }
    // The sync service's reporter secret (`tgr-…`, minted at enrollment, held only in the sync
    // VM and, hashed, by the control plane) travels in usage bodies, which Envoy never logs;
    // the usage did arrive (the spend above), so enrollment and posts happened.
    let reporter_lines = text.lines().filter(|l| l.contains("tgr-")).count();
    assert_eq!(
        reporter_lines, 0,
        "a reporter secret in Envoy's trace log ({reporter_lines} lines)"
    );
    // Envoy's own HTTP/1 codec prints the client's request headers at trace, virtual key
    // included, before any filter runs (documented; only the client's own credential).
    assert!(
        text.contains(&chain.secret),
        "the trace log should show the client's own header"
    );
    eprintln!(
        "searched {} trace lines and 10 admin pages for {} secrets: none found",
        text.lines().count(),
        secrets.len()
    );
}

#[test]
fn a_provider_key_rotates_without_a_restart() {
    let Some(stack) = common::stack() else { return };
    let (_, chain) = common::synced_chain(&stack, "rotate");
    let http = http();
    let chat_status = || {
        http.post(format!("{}/v1/chat/completions", stack.url()))
            .bearer_auth(&chain.secret)
            .json(&chat())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(chat_status(), 200);
    let key_file = stack.dir.join("secrets").join("openai.key");
    let pid = stack.envoy.proc.pid();
    // Writes `key` to the file Envoy watches; within 10 s chats get `status`.
    let rotate = |key: &[u8], status: u16, otherwise: &str| {
        write_secret_file(&key_file, key).unwrap();
        let seen = eventually(Duration::from_secs(10), || {
            (chat_status() == status).then_some(())
        });
        assert!(seen.is_some(), "{otherwise}\n{}", stack.logs());
    };
    // A key the mock does not accept: once Envoy uses it, the mock answers 401.
    rotate(
        b"sk-rotated-unknown-to-the-mock",
        401,
        "Envoy kept the old key",
    );
    // And back: the right key again.
    rotate(
        stack.provider_keys().openai.as_bytes(),
        200,
        "Envoy did not reload the key",
    );
    assert_eq!(stack.envoy.proc.pid(), pid, "same Envoy process");
}
