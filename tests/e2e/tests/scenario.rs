//! One scenario file, two hosts, the same decisions: `scenarios/budget-decisions.json` (with
//! the filter config `scenarios/budget-decisions.filter.json`) is replayed in the wasmtime
//! harness — exactly what
//! `tollgate-harness run --wasm target/wasm32-wasip1/release/tollgate_filter.wasm
//! --config tests/e2e/scenarios/budget-decisions.filter.json tests/e2e/scenarios/budget-decisions.json`
//! does — and in real Envoy with `envoy/tollgate.yaml` carrying the same two plugin configs,
//! where a scripted control plane serves the scenario's `upstreams` and a scripted provider
//! answers each step's `response`. Every expectation must hold in both.
//!
//! Expectations checked in Envoy: `status`, `allowed` (the provider saw the request),
//! `headers`, `body_contains`, `upstream_headers`, `upstream_body_contains`. The scenario uses
//! no harness-only expectation (`queue_items`, `http_calls`, `trapped`, `logs_contain`); the
//! Envoy side refuses one rather than skip it silently.
//!
//! Run with `cargo test -p tollgate-tests --test scenario`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tollgate_tests::envoy::{
    render_tollgate, replace_plugin_config, write_secrets, Envoy, ProviderKeys, TollgateVars,
};
use tollgate_tests::process::{Echo, Secrets};
use tollgate_tests::stack::scratch_dir;
use tollgate_tests::{eventually, Binaries};

/// The scenario and its filter config, in this crate's `scenarios/`.
fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A string body as is, anything else serialized (the harness's rule).
fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// A response spec as the harness reads it: status, headers, body or chunks.
fn respond(spec: &Value) -> Response {
    let status = spec["status"].as_u64().unwrap_or(200) as u16;
    let body: Vec<u8> = match spec["chunks"].as_array() {
        Some(chunks) => chunks.iter().flat_map(bytes_of).collect(),
        None => spec.get("body").map(bytes_of).unwrap_or_default(),
    };
    let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(headers) = spec["headers"].as_object() {
        for (k, v) in headers {
            r.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.as_str().unwrap().parse().unwrap(),
            );
        }
    }
    r
}

/// What the scripted provider saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    headers: BTreeMap<String, String>,
    body: String,
}

/// The scripted control plane and provider.
#[derive(Default)]
struct Script {
    control_plane: BTreeMap<String, Value>,
    response: Option<Value>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Script>>;

async fn control_plane(State(s): State<Shared>, uri: Uri) -> Response {
    let spec = s.lock().unwrap().control_plane.get(uri.path()).cloned();
    match spec {
        Some(spec) => respond(&spec),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn provider(
    State(s): State<Shared>,
    _method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = s.lock().unwrap();
    s.seen.push(Seen {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    match &s.response {
        Some(spec) => respond(spec),
        None => StatusCode::OK.into_response(),
    }
}

/// Serves both scripts on free ports from a background runtime (dropped with the test).
fn serve(script: Shared) -> (tokio::runtime::Runtime, SocketAddr, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cp, up) = rt.block_on(async {
        let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (cp_addr, up_addr) = (cp.local_addr().unwrap(), up.local_addr().unwrap());
        let cp_app = Router::new()
            .fallback(control_plane)
            .with_state(script.clone());
        let up_app = Router::new().fallback(provider).with_state(script.clone());
        tokio::spawn(async move { axum::serve(cp, cp_app).await });
        tokio::spawn(async move { axum::serve(up, up_app).await });
        (cp_addr, up_addr)
    });
    (rt, cp, up)
}

/// Checks one step's outcome in Envoy against its expectations; one line per mismatch.
fn check(
    expect: &Value,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    upstream: Option<&Seen>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for unsupported in ["queue_items", "http_calls", "trapped", "logs_contain"] {
        if expect.get(unsupported).is_some() {
            problems.push(format!("{unsupported}: not observable in Envoy"));
        }
    }
    if let Some(want) = expect["status"].as_u64() {
        if u64::from(status) != want {
            problems.push(format!("status: expected {want}, got {status}"));
        }
    }
    if let Some(want) = expect["allowed"].as_bool() {
        if upstream.is_some() != want {
            problems.push(format!(
                "allowed: expected {want}, got {}",
                upstream.is_some()
            ));
        }
    }
    for (name, want) in expect["headers"].as_object().into_iter().flatten() {
        let got = headers.get(name).map(|v| v.to_str().unwrap().to_string());
        if got.as_deref() != want.as_str() {
            problems.push(format!(
                "response header {name}: expected {want}, got {got:?}"
            ));
        }
    }
    if let Some(needle) = expect["body_contains"].as_str() {
        if !body.contains(needle) {
            problems.push(format!("response body: expected {needle:?} in {body:?}"));
        }
    }
    for (name, want) in expect["upstream_headers"].as_object().into_iter().flatten() {
        let got = upstream.and_then(|u| u.headers.get(name.as_str()));
        if got.map(String::as_str) != want.as_str() {
            problems.push(format!(
                "upstream header {name}: expected {want}, got {got:?}"
            ));
        }
    }
    if let Some(needle) = expect["upstream_body_contains"].as_str() {
        let got = upstream.map(|u| u.body.as_str()).unwrap_or("");
        if !got.contains(needle) {
            problems.push(format!("upstream body: expected {needle:?} in {got:?}"));
        }
    }
    problems
}

/// Replays the scenario through real Envoy; returns the mismatches, each naming its step.
fn run_in_envoy(bins: &Binaries, scenario: &Value, filter_config: &Value) -> Vec<String> {
    let script: Shared = Arc::default();
    {
        let mut s = script.lock().unwrap();
        for (path, spec) in scenario["upstreams"]["tollgate_control_plane"]
            .as_object()
            .unwrap()
        {
            s.control_plane.insert(path.clone(), spec.clone());
        }
    }
    let (_rt, cp, up) = serve(script.clone());
    let dir = scratch_dir().unwrap();
    let sync_config = &scenario["services"][0];
    let vars = TollgateVars {
        listen_port: 0,
        cp_port: cp.port(),
        upstream_port: up.port(),
        wasm: bins.filter_wasm.clone(),
        sync_wasm: bins.sync_wasm.clone(),
        // What the scenario's control plane expects (the cluster injects it).
        dataplane_token: sync_config["control_plane"]["token"]
            .as_str()
            .unwrap_or("dp-scenario")
            .into(),
        provider_keys: ProviderKeys::same("sk-scenario-upstream"),
        secrets_dir: dir.join("secrets"),
        access_log: dir.join("access.log"),
        sync_interval_ms: filter_config["control_plane"]["sync_interval_ms"]
            .as_u64()
            .unwrap(),
        real_provider: None,
        cp_standby_ports: Vec::new(),
    };
    write_secrets(&vars).unwrap();
    let yaml = render_tollgate(&vars).unwrap();
    let yaml = replace_plugin_config(&yaml, "filter", filter_config).unwrap();
    let yaml = replace_plugin_config(&yaml, "sync", sync_config).unwrap();
    let config = dir.join("tollgate.yaml");
    std::fs::write(&config, yaml).unwrap();
    let envoy = Envoy::start(
        &bins.envoy,
        &config,
        &dir,
        1,
        &Secrets::default(),
        Echo::Quiet,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let mut problems = Vec::new();
    let mut synced = false;
    for (n, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
        let label = match step["name"].as_str() {
            Some(name) => format!("step {} ({name})", n + 1),
            None => format!("step {}", n + 1),
        };
        if let Some(ms) = step["advance_ms"].as_u64() {
            // Real time stands in for the harness's virtual clock.
            std::thread::sleep(Duration::from_millis(ms.min(5_000)));
        }
        if step["tick"].as_bool() == Some(true) {
            std::thread::sleep(Duration::from_millis(300));
        }
        let Some(request) = step.get("request") else {
            continue;
        };
        if !synced {
            // What the harness's clock guarantees by construction, wait for in real time: the
            // sync service holds the snapshot and the worker has looked for it.
            let loaded = eventually(Duration::from_secs(20), || {
                (envoy.stat("tollgate_snapshot_version").ok()? > 0).then_some(())
            });
            assert!(
                loaded.is_some(),
                "no snapshot in Envoy:\n{}",
                envoy.proc.output()
            );
            std::thread::sleep(Duration::from_millis(400));
            synced = true;
        }
        let before = {
            let mut s = script.lock().unwrap();
            s.response = request.get("response").cloned();
            s.seen.len()
        };
        let method = request["method"].as_str().unwrap_or("POST");
        let mut req = http.request(
            method.parse().unwrap(),
            format!(
                "http://{}{}",
                envoy.listener,
                request["path"].as_str().unwrap()
            ),
        );
        for (k, v) in request["headers"].as_object().into_iter().flatten() {
            req = req.header(k.as_str(), v.as_str().unwrap());
        }
        if let Some(body) = request.get("body") {
            req = req.body(bytes_of(body));
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{label}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().unwrap_or_default();
        let upstream = {
            let s = script.lock().unwrap();
            (s.seen.len() > before).then(|| s.seen[s.seen.len() - 1].clone())
        };
        if let Some(expect) = step.get("expect") {
            problems.extend(
                check(expect, status, &headers, &body, upstream.as_ref())
                    .into_iter()
                    .map(|p| format!("{label}: {p}")),
            );
        }
    }
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
    problems
}

#[test]
fn one_scenario_file_gives_the_same_decisions_in_the_harness_and_in_envoy() {
    let Some(bins) = common::bins() else { return };
    let text = std::fs::read_to_string(file("budget-decisions.json")).unwrap();
    let config_text = std::fs::read_to_string(file("budget-decisions.filter.json")).unwrap();

    // The harness: what `tollgate-harness run --wasm … --service-wasm … --config … SCENARIO`
    // does.
    let scenario = tollgate_harness::scenario::parse(&text).unwrap();
    let builder = tollgate_harness::Plugin::builder(std::fs::read(&bins.filter_wasm).unwrap())
        .configuration(config_text.clone().into_bytes());
    let sync = std::fs::read(&bins.sync_wasm).unwrap();
    let in_harness = tollgate_harness::scenario::run(builder, Some(sync), &scenario).unwrap();
    assert!(
        in_harness.is_empty(),
        "the harness disagrees with the scenario:\n{}",
        in_harness.join("\n")
    );

    // Real Envoy, the same two plugin configs.
    let scenario: Value = serde_json::from_str(&text).unwrap();
    let config: Value = serde_json::from_str(&config_text).unwrap();
    let in_envoy = run_in_envoy(&bins, &scenario, &config);
    assert!(
        in_envoy.is_empty(),
        "Envoy disagrees with the scenario (and so with the harness):\n{}",
        in_envoy.join("\n")
    );
}
