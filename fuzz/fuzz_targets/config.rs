//! The plugin configuration, as `on_configure` hands Envoy's bytes to `Config::parse` (both
//! roles, `filter/src/lib.rs`).
//!
//! Input: the configuration bytes. Checks: no panic; a refusal names at least one field; an
//! accepted config keeps every limit inside the bounds the parser enforces; and no secret —
//! any string under `control_plane.token` or `identity.providers`, wherever the operator put
//! it — shows in the accepted config's `Debug` or in the error Envoy logs, unless the same
//! text also appears somewhere in the document that is not a secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_core::config::{Config, Role, UnknownModel};
use tollgate_core::usage::Usage;
use tollgate_fuzz::{check_cost, check_price, check_usage};

/// Shorter strings are too likely to occur in messages by chance.
const MIN_SECRET_LEN: usize = 8;

/// Where the config holds secrets: the data-plane token and the provider keys (any string
/// under a provider but its header name and cluster, wherever in it the operator put it;
/// keys are refused there now, and the refusal must not quote them).
fn is_secret(path: &[&str]) -> bool {
    match path {
        ["control_plane", "token", ..] => true,
        // A deployment map names models, not credentials.
        ["identity", "providers", _, "header" | "cluster" | "deployments", ..] => false,
        ["identity", "providers", _, ..] => true,
        _ => false,
    }
}

/// Collects every string in `v` (keys too) into `secret` or `plain`, by where it sits.
fn strings(v: &Value, path: &[&str], secret: &mut Vec<String>, plain: &mut Vec<String>) {
    match v {
        Value::String(s) if is_secret(path) => secret.push(s.clone()),
        Value::String(s) => plain.push(s.clone()),
        Value::Number(n) => plain.push(n.to_string()),
        Value::Array(items) => {
            for item in items {
                strings(item, path, secret, plain);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                plain.push(k.clone());
                let mut p = path.to_vec();
                p.push(k);
                strings(item, &p, secret, plain);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Replaces every secret string of `v` by `Z`s of the same length.
fn redact(v: &mut Value, path: &[&str]) {
    match v {
        Value::String(s) if is_secret(path) => *s = "Z".repeat(s.len()),
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, path)),
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let mut p = path.to_vec();
                p.push(k);
                redact(item, &p);
            }
        }
        _ => {}
    }
}

/// Parses `data` and checks the result; returns what Envoy's log could show of it.
fn parse_and_check(data: &[u8]) -> String {
    match Config::parse(data) {
        Ok(c) => {
            let l = &c.limits;
            assert!((1024..=64 << 20).contains(&l.max_request_body_bytes));
            assert!((1024..=64 << 20).contains(&l.max_response_event_bytes));
            assert!((1..=10_000_000).contains(&l.max_queue_events));
            assert!((100..=3_600_000).contains(&c.control_plane.sync_interval_ms));
            // The sync role needs a token unless the control-plane cluster injects it
            // (`token_injected`); the HTTP filter role needs none.
            let injected = serde_json::from_slice::<Value>(data)
                .is_ok_and(|v| v["control_plane"]["token_injected"] == true);
            if c.role == Role::Sync && !injected {
                assert!(!c.control_plane.token.expose().trim().is_empty());
            }
            assert!(c.control_plane.snapshot_path.starts_with('/'));
            if let UnknownModel::DefaultPrice(p) = &c.unknown_model {
                check_price(p);
                let u = Usage {
                    input_uncached: 1_000,
                    output: 1_000,
                    ..Usage::default()
                };
                check_usage(&u);
                check_cost(p, &u);
            }
            format!("{c:?}")
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "a refusal without a problem");
            assert!(
                e.0.iter().all(|p| !p.field.is_empty()),
                "a problem without a field: {e}"
            );
            e.to_string()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let shown = parse_and_check(data);
    let Ok(mut doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (mut secret, mut plain) = (Vec::new(), Vec::new());
    strings(&doc, &[], &mut secret, &mut plain);
    // What the parser says anyway with the secrets replaced: a secret that reads like its own
    // messages ("required", "unknown field") is not a leak.
    redact(&mut doc, &[]);
    let vocabulary = parse_and_check(&serde_json::to_vec(&doc).unwrap_or_default());
    for s in secret.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        if plain.iter().any(|p| p.contains(s.as_str())) || vocabulary.contains(s.as_str()) {
            continue;
        }
        assert!(!shown.contains(s.as_str()), "secret {s:?} shown: {shown}");
    }
});
