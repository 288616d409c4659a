//! The real Tollgate `.wasm` driven through whole lifecycles: both roles (HTTP filter on a
//! worker, sync service) in one host with the same `vm_id`, against a mock control plane that
//! behaves like the real one (ETag/304, usage ingestion that adds to spend, per-reporter acks).
//!
//! Each test reads as a transcript: snapshot in, requests in, what the filter did out.
//! Run with `cargo test -p tollgate-harness --test tollgate_filter`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollgate_harness::{
    FailurePolicy, Host, HttpCall, HttpResponse, Outcome, Plugin, Reply, Request, StartError,
    Status, Upstream, VmId,
};

/// 2025-01-01T00:00:00Z, where the harness clock starts.
const T0: i64 = 1_735_689_600;
const DAY: i64 = 86_400;
const KEY: &str = "tg-test-key";

fn sha(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dec(s: &str) -> rust_decimal_lite::Dec {
    rust_decimal_lite::Dec::from_str(s).unwrap()
}

/// Tiny exact decimal for assertions (the harness does not link tollgate-core).
mod rust_decimal_lite {
    use std::str::FromStr;

    /// A decimal as an integer count of 10⁻¹⁸ USD.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Dec(pub i128);

    impl FromStr for Dec {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            if frac.len() > 18 {
                return Err(format!("too many decimals: {s}"));
            }
            let int: i128 = int.parse().map_err(|e| format!("{s}: {e}"))?;
            let frac_v: i128 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|e| format!("{s}: {e}"))?
            };
            let v = int * 10i128.pow(18) + frac_v * 10i128.pow(18 - frac.len() as u32);
            Ok(Dec(if neg { -v } else { v }))
        }
    }
}

/// A mock control plane with the real one's observable behaviour.
#[derive(Default)]
struct ControlPlane {
    up: bool,
    snapshot: Value,
    events: Vec<Value>,
    batches: usize,
    snapshot_calls: Vec<Option<String>>,
}

impl ControlPlane {
    fn new(snapshot: Value) -> Self {
        ControlPlane {
            up: true,
            snapshot,
            ..Default::default()
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.snapshot["version"])
    }

    fn answer(&mut self, call: &HttpCall) -> Reply {
        if !self.up {
            return Reply::Fail;
        }
        // Every call with the data-plane token; usage batches carry the reporter secret it
        // minted in their body (never in a header: Envoy logs headers); snapshot polls name
        // the reporter once enrolled.
        let auth = call.header("authorization").map(str::to_string);
        assert_eq!(auth.as_deref(), Some("Bearer dp-token"), "{}", call.path());
        match (call.method(), call.path_without_query()) {
            ("POST", "/v1/reporters") => HttpResponse::json(
                201,
                json!({"reporter": "harness-r", "secret": MOCK_REPORTER_SECRET}).to_string(),
            )
            .into(),
            ("POST", "/v1/usage")
                if serde_json::from_slice::<Value>(&call.body)
                    .ok()
                    .and_then(|b| b["reporter_secret"].as_str().map(str::to_string))
                    != Some(MOCK_REPORTER_SECRET.to_string()) =>
            {
                panic!("usage posted without the reporter secret in its body")
            }
            ("GET", "/v1/snapshot") => {
                let inm = call.header("if-none-match").map(str::to_string);
                self.snapshot_calls.push(inm.clone());
                if inm.as_deref() == Some(self.etag().as_str()) {
                    return HttpResponse::new(304).into();
                }
                HttpResponse::json(200, self.snapshot.to_string())
                    .header("etag", self.etag())
                    .into()
            }
            ("POST", "/v1/usage") => {
                let batch: Value = serde_json::from_slice(&call.body).unwrap();
                let (mut accepted, mut duplicate) = (0, 0);
                for e in batch["events"].as_array().unwrap() {
                    if self.events.iter().any(|old| old["id"] == e["id"]) {
                        duplicate += 1;
                        continue;
                    }
                    accepted += 1;
                    self.ingest(e);
                }
                self.batches += 1;
                HttpResponse::json(
                    200,
                    json!({"accepted": accepted, "duplicate": duplicate}).to_string(),
                )
                .into()
            }
            other => panic!("unexpected control-plane call {other:?}"),
        }
    }

    /// Adds the event's cost to every budget on its chain and acknowledges its reporter.
    fn ingest(&mut self, e: &Value) {
        let cost = dec(e["cost"]["total"].as_str().unwrap());
        let p = &e["principal"];
        for b in self.snapshot["budgets"].as_array_mut().unwrap() {
            let id = b["scope_id"].clone();
            if [&p["key"], &p["user"], &p["project"], &p["org"]].contains(&&id) {
                let spent = dec(b["spent_usd"].as_str().unwrap());
                b["spent_usd"] = json!(format_dec(rust_decimal_lite::Dec(spent.0 + cost.0)));
            }
        }
        let reporter = e["reporter"].as_str().unwrap().to_string();
        self.snapshot["reporters"][reporter] = e["seq"].clone();
        let v = self.snapshot["version"].as_u64().unwrap();
        self.snapshot["version"] = json!(v + 1);
        self.events.push(e.clone());
    }
}

fn format_dec(d: rust_decimal_lite::Dec) -> String {
    let (int, frac) = (d.0 / 10i128.pow(18), d.0 % 10i128.pow(18));
    let frac = format!("{frac:018}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// A snapshot: model `m` at $1/M input and $2/M output, one daily key budget.
fn snapshot(limit: &str, spent: &str, soft: Option<&str>) -> Value {
    let mut budget = json!({
        "id": "b-key", "scope": "key", "scope_id": "k1", "limit_usd": limit, "mode": "enforce",
        "window": {"period": "daily", "boundaries": [T0, T0 + DAY, T0 + 2 * DAY]},
        "spent_window_start": T0, "spent_usd": spent
    });
    if let Some(s) = soft {
        budget["soft_limit_usd"] = json!(s);
    }
    json!({
        "version": 1, "generated_at": T0,
        "prices": {"version": 3, "models": {"m": {"rates": {"input": "0.000001", "output": "0.000002"}}}},
        "budgets": [budget],
        "keys": [{"sha256": sha(KEY), "principal": {"key": "k1", "user": "u1", "project": "p1", "org": "o1"}}],
        "reporters": {}
    })
}

fn config(role: &str, extra: Value) -> String {
    let mut c = json!({
        "role": role, "vm_id": "tollgate",
        "control_plane": {"cluster": "cp", "authority": "cp.local", "token": "dp-token", "sync_interval_ms": 1000}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

/// A module compiled once per test binary under `vm_id` `tollgate` (compiling takes seconds).
fn compiled(cell: &'static std::sync::OnceLock<Plugin>, wasm: fn() -> Vec<u8>) -> Plugin {
    cell.get_or_init(|| Plugin::builder(wasm()).vm_id("tollgate").build().unwrap())
        .clone()
}

/// The filter module; tests derive configurations from it.
fn plugin() -> Plugin {
    static PLUGIN: std::sync::OnceLock<Plugin> = std::sync::OnceLock::new();
    compiled(&PLUGIN, common::tollgate_wasm)
}

/// The sync service's module (the same `vm_id`: shared data and the queue are common).
fn sync_plugin() -> Plugin {
    static PLUGIN: std::sync::OnceLock<Plugin> = std::sync::OnceLock::new();
    compiled(&PLUGIN, common::sync_wasm)
}

struct Tollgate {
    host: Host,
    cp: Arc<Mutex<ControlPlane>>,
    sync: VmId,
    worker: VmId,
}

impl Tollgate {
    /// Starts the sync service and one worker, and lets the first sync happen.
    fn start(snapshot: Value, extra: Value) -> Tollgate {
        Tollgate::start_with(snapshot, extra, FailurePolicy::FailReload)
    }

    fn start_with(snapshot: Value, extra: Value, policy: FailurePolicy) -> Tollgate {
        let plugin = plugin()
            .with_configuration(config("filter", extra.clone()))
            .with_failure_policy(policy);
        let cp = Arc::new(Mutex::new(ControlPlane::new(snapshot)));
        let mut host = Host::new();
        let c = Arc::clone(&cp);
        host.upstream(
            "cp",
            Upstream::script(move |call| c.lock().unwrap().answer(call)),
        );
        let sync = host
            .add_vm(&sync_plugin().with_configuration(config("sync", extra)))
            .unwrap();
        let worker = host.add_vm(&plugin).unwrap();
        let mut t = Tollgate {
            host,
            cp,
            sync,
            worker,
        };
        t.advance(1);
        t
    }

    fn advance(&mut self, seconds: u64) {
        self.host.advance(Duration::from_secs(seconds)).unwrap();
    }

    /// One worker tick (100 ms with the tests' 1 s sync interval), too short for the sync
    /// service to post and have acknowledged what the worker queues on it.
    fn tick(&mut self) {
        self.host.advance(Duration::from_millis(100)).unwrap();
    }

    fn send(&mut self, r: &Request) -> Outcome {
        let o = self.host.send_to(self.worker, r).unwrap();
        assert!(o.trap.is_none(), "filter trapped: {:?}", o.trap);
        o
    }

    /// The key budget's local state, rendered `r=<reserved>;<window>=<unsynced>...`.
    fn local(&self) -> String {
        let (v, _) = self
            .host
            .shared_data("tollgate", "tollgate.budget.b-key")
            .unwrap_or_default();
        render_local(&v)
    }
}

/// A `rust_decimal::Decimal::serialize()` form (flags, lo, mid, hi; scale in flags bits 16–23,
/// sign in bit 31) as plain decimal text. The harness does not link tollgate-core, so the
/// filter's binary local-state format is read here by hand.
fn decimal_text(b: &[u8]) -> String {
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let (flags, lo, mid, hi) = (word(0), word(4), word(8), word(12));
    let scale = ((flags >> 16) & 0xff) as usize;
    let mantissa = (u128::from(hi) << 64) | (u128::from(mid) << 32) | u128::from(lo);
    let digits = format!("{mantissa:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let frac = frac.trim_end_matches('0');
    let sign = if flags >> 31 == 1 && mantissa != 0 {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Renders the filter's binary local budget state (reserved, count, (window, amount)*).
fn render_local(b: &[u8]) -> String {
    if b.is_empty() {
        return "r=0".into();
    }
    let mut out = format!("r={}", decimal_text(&b[..16]));
    let n = usize::from(b[16]);
    for i in 0..n {
        let at = 17 + i * 24;
        let window = i64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        out.push_str(&format!(";{window}={}", decimal_text(&b[at + 8..at + 24])));
    }
    out
}

/// The binary local state for `mantissa × 10^-scale` USD reserved by requests in flight.
fn local_reserved(mantissa: u64, scale: u32) -> Vec<u8> {
    let mut b = vec![0u8; 17];
    b[2] = scale as u8;
    b[4..12].copy_from_slice(&mantissa.to_le_bytes());
    b
}

fn chat(max_tokens: u32) -> Request {
    chat_as(KEY, max_tokens)
}

/// [`chat`] with the virtual key `key`.
fn chat_as(key: &str, max_tokens: u32) -> Request {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(json!({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}).to_string())
}

/// A streaming chat request (50 tokens at most) with the virtual key.
fn chat_stream() -> Request {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .body(json!({"model": "m", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}).to_string())
}

fn chat_response(prompt: u64, completion: u64) -> String {
    json!({"id": "c1", "object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    .to_string()
}

#[test]
fn allows_swaps_the_key_and_settles_the_exact_cost() {
    let mut t = Tollgate::start(snapshot("1", "0.25", None), json!({}));
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_header("content-type", "application/json")
            .response_body(chat_response(10, 20)),
    );
    assert!(o.allowed(), "{o:?}");
    assert_eq!(
        o.upstream_header("authorization"),
        None,
        "virtual key stripped (Envoy's provider cluster injects the provider key)"
    );
    assert_eq!(
        o.response_header("x-tollgate-budget-remaining"),
        Some("0.75")
    );
    assert_eq!(o.response_header("x-tollgate-budget"), Some("key:b-key"));
    assert_eq!(
        o.filter_state("tollgate.cost"),
        Some(&b"0.00005"[..]),
        "10 × $1/M + 20 × $2/M"
    );
    assert_eq!(o.filter_state("tollgate.decision"), Some(&b"allow"[..]));
    // Settling needs no write of its own: the worker holds what it owes the budget until its
    // next admission on it or its tick, the reservation (the 100-token worst case) counted
    // until then.
    assert_eq!(t.local(), "r=0.000211");
    t.tick();
    // Reservation released, actual cost kept locally until acknowledged.
    assert_eq!(t.local(), format!("r=0;{T0}=0.00005"));

    t.advance(1); // post the batch
    t.advance(1); // next snapshot includes it and acknowledges the reporter
    let cp = t.cp.lock().unwrap();
    assert_eq!(cp.events.len(), 1);
    let e = &cp.events[0];
    assert_eq!(e["cost"]["total"], "0.00005");
    assert_eq!(e["charge"], "actual");
    assert_eq!(e["usage"]["input_uncached"], 10);
    assert_eq!(e["principal"]["key"], "k1");
    drop(cp);
    assert_eq!(
        t.local(),
        "r=0",
        "acknowledged spend is no longer counted locally"
    );
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(
        o.response_header("x-tollgate-budget-remaining"),
        Some("0.74995"),
        "now in the snapshot's spend"
    );
}

#[test]
fn without_filter_state_a_request_is_judged_and_metered_the_same() {
    // `"filter_state": false` (no access log prints Tollgate's fields): no filter state is
    // written, nothing else changes, a denial included.
    let mut t = Tollgate::start(snapshot("1", "0.25", None), json!({"filter_state": false}));
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_body(chat_response(10, 20)),
    );
    assert!(o.allowed(), "{o:?}");
    assert_eq!(
        o.response_header("x-tollgate-budget-remaining"),
        Some("0.75")
    );
    for name in ["tollgate.decision", "tollgate.principal", "tollgate.cost"] {
        assert_eq!(o.filter_state(name), None, "{name} written");
    }
    t.tick();
    assert_eq!(t.local(), format!("r=0;{T0}=0.00005"), "charged exactly");
    t.advance(1);
    {
        let cp = t.cp.lock().unwrap();
        assert_eq!(cp.events.len(), 1);
        assert_eq!(cp.events[0]["cost"]["total"], "0.00005");
    }
    // Worst case 100,000 output tokens × $2/M = $0.2 fits; 400,000 does not.
    let o = t.send(
        &chat(400_000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(o.status(), Some(429));
    assert_eq!(o.filter_state("tollgate.decision"), None);
}

/// The access log's principal label is kept with the last principal a worker saw: callers
/// taking turns each get their own, a caller whose key is revoked and reissued to another
/// principal gets the new one.
#[test]
fn each_caller_is_labelled_as_itself_whoever_came_before() {
    let second = "tg-test-key-2";
    let with_keys = |principal_of_second: Value| {
        let mut snap = snapshot("1", "0", None);
        snap["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"sha256": sha(second), "principal": principal_of_second}));
        snap
    };
    let mut t = Tollgate::start(
        with_keys(json!({"key": "k2", "user": "u2", "project": "p1", "org": "o1"})),
        json!({}),
    );
    let as_key = |key: &str| {
        chat_as(key, 10)
            .response_status(200)
            .response_body(chat_response(1, 1))
    };
    for (key, label) in [
        (KEY, "o1/p1/u1/k1"),
        (second, "o1/p1/u2/k2"),
        (second, "o1/p1/u2/k2"),
        (KEY, "o1/p1/u1/k1"),
    ] {
        let o = t.send(&as_key(key));
        assert_eq!(
            o.filter_state("tollgate.principal"),
            Some(label.as_bytes()),
            "{key}"
        );
    }
    // The second key now names another principal (no user, another project).
    {
        let mut cp = t.cp.lock().unwrap();
        cp.snapshot = with_keys(json!({"key": "k2", "project": "p2", "org": "o1"}));
        cp.snapshot["version"] = json!(2);
    }
    let sync = t.sync;
    t.host.tick(sync).unwrap();
    t.tick(); // the worker takes the new keys on its tick
    let o = t.send(&as_key(second));
    assert_eq!(
        o.filter_state("tollgate.principal"),
        Some(&b"o1/p2/-/k2"[..])
    );
}

/// Envoy refuses `proxy_set_property` where it has no stream info or where another filter
/// holds the name read-only (`NOT_FOUND`, `BAD_ARGUMENT`); the SDK's call panics on either,
/// which would trap the VM on a value only the access log reads. Every write refused: the
/// request is judged, answered and charged the same, and the VM lives on.
#[test]
fn a_refused_filter_state_write_loses_nothing() {
    let mut t = Tollgate::start(snapshot("1", "0.25", None), json!({}));
    t.host
        .inject_fault("proxy_set_property", Status::BadArgument, 1_000);
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_body(chat_response(10, 20)),
    );
    assert!(o.trap.is_none() && !o.vm_reloaded, "{o:?}");
    assert!(o.allowed(), "{o:?}");
    assert_eq!(o.filter_state("tollgate.cost"), None, "the host refused it");
    assert_eq!(
        o.response_header("x-tollgate-budget-remaining"),
        Some("0.75")
    );
    t.tick();
    assert_eq!(t.local(), format!("r=0;{T0}=0.00005"), "charged exactly");
    let o = t.send(
        &chat(400_000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert!(o.trap.is_none(), "{o:?}");
    assert_eq!(o.status(), Some(429), "a denial is answered too");
}

/// A Bedrock ConverseStream request: the SigV4 access key id is the virtual key, the answer
/// an AWS event stream (split mid-message), metered from its `metadata` event at the path's
/// model.
#[test]
fn bedrock_converse_stream_is_metered_from_the_event_stream() {
    let mut t = Tollgate::start(snapshot("1", "0.25", None), json!({}));
    let frames: Vec<u8> = [
        tollgate_upstream::bedrock::frame(
            &[(":event-type", "contentBlockDelta"), (":message-type", "event")],
            br#"{"contentBlockIndex":0,"delta":{"text":"usage"}}"#,
        ),
        tollgate_upstream::bedrock::frame(
            &[(":event-type", "metadata"), (":message-type", "event")],
            br#"{"usage":{"inputTokens":10,"outputTokens":20,"totalTokens":30},"metrics":{"latencyMs":5}}"#,
        ),
    ]
    .concat();
    let (a, b) = frames.split_at(frames.len() - 7);
    let o = t.send(
        &Request::post("/model/m/converse-stream")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={KEY}/20261203/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00"),
            )
            .header("content-type", "application/json")
            .body(json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                         "inferenceConfig": {"maxTokens": 100}}).to_string())
            .response_status(200)
            .response_header("content-type", "application/vnd.amazon.eventstream")
            .response_chunk(a.to_vec())
            .response_chunk(b.to_vec()),
    );
    assert!(o.allowed(), "{o:?}");
    assert_eq!(
        o.upstream_header("authorization"),
        None,
        "the client's signature is removed"
    );
    assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0.00005"[..]));
}

/// A Bedrock request over its budget gets the AWS error shape its SDKs read.
#[test]
fn bedrock_refusal_names_the_aws_error() {
    let mut t = Tollgate::start(snapshot("1", "0.9999", None), json!({}));
    let o = t.send(
        &Request::post("/model/m/converse")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(json!({"messages": [], "inferenceConfig": {"maxTokens": 1000}}).to_string()),
    );
    assert_eq!(o.status(), Some(429));
    assert_eq!(
        o.response_header("x-amzn-errortype"),
        Some("ThrottlingException")
    );
    let body: Value = serde_json::from_str(&o.body_text()).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("exhausted"),
        "{body}"
    );
}

#[test]
fn denies_at_the_limit_with_an_openai_shaped_429() {
    let mut t = Tollgate::start(snapshot("1", "0.9999", None), json!({}));
    // Worst case: 1000 output tokens × $2/M = $0.002 > $0.0001 left.
    let o = t.send(
        &chat(1000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(o.status(), Some(429));
    // Headers went upstream (Envoy cannot hold them and still see the body); the body never
    // did, and the local reply resets the upstream stream.
    assert!(
        o.upstream.as_ref().is_none_or(|u| u.body.is_empty()),
        "no body reached the provider"
    );
    let body: Value = serde_json::from_str(&o.body_text()).unwrap();
    assert_eq!(body["error"]["type"], "budget_exceeded");
    assert_eq!(body["error"]["budget"]["id"], "b-key");
    assert_eq!(body["error"]["budget"]["resets_at"], T0 + DAY);
    let retry: i64 = o.response_header("retry-after").unwrap().parse().unwrap();
    assert!(
        (DAY - 5..=DAY).contains(&retry),
        "retry-after until midnight: {retry}"
    );
    assert_eq!(o.filter_state("tollgate.decision"), Some(&b"deny"[..]));
    assert_eq!(
        t.host.metric("tollgate_requests_denied").map(|m| m.value()),
        Some(1)
    );
    assert_eq!(
        t.host
            .metric("tollgate_denied_scope_key")
            .map(|m| m.value()),
        Some(1)
    );
    // A request whose worst case fits is still allowed: 10 tokens × $2/M + prompt ≤ $0.0001.
    let o = t.send(
        &chat(10)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert!(o.allowed(), "{}", o.body_text());
}

#[test]
fn a_snapshot_published_between_worker_ticks_judges_the_next_request() {
    // Admission checks for a newer snapshot itself (the sync service acknowledges local spend
    // right after publishing, so deciding with the older one would count that spend nowhere).
    // It reads the empty marker the sync service writes after every manifest, and the manifest
    // only when the marker's CAS moved: here it must move, with no worker tick in between.
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let ok = chat(10)
        .response_status(200)
        .response_body(chat_response(1, 1));
    assert!(t.send(&ok).allowed());
    let (marker, cas) = t
        .host
        .shared_data("tollgate", "tollgate.snapshot.published")
        .expect("the sync service wrote the publish marker");
    assert!(marker.is_empty(), "the marker hands workers no bytes");
    // The control plane now says the budget is spent; only the sync service polls it.
    {
        let mut cp = t.cp.lock().unwrap();
        cp.snapshot = snapshot("1", "1", None);
        cp.snapshot["version"] = json!(2);
    }
    let sync = t.sync;
    t.host.tick(sync).unwrap();
    let (_, moved) = t
        .host
        .shared_data("tollgate", "tollgate.snapshot.published")
        .unwrap();
    assert!(
        moved > cas,
        "a publish moves the marker's CAS ({cas} → {moved})"
    );
    assert_eq!(t.send(&ok).status(), Some(429), "judged by version 2");
    // Nothing published since (the marker's CAS unchanged): judged the same.
    assert_eq!(t.send(&ok).status(), Some(429));
}

/// Each worker remembers its last price lookups (`PriceMemo`); once the worker holds a
/// snapshot with a new price book, the next request is priced at the new rates, at admission
/// (the worst case) and at settlement, a model the answer names (a dated `m`) included.
#[test]
fn a_new_price_book_prices_the_next_request() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let answered = |max_tokens| {
        chat(max_tokens).response_status(200).response_body(
            chat_response(10, 20).replace(r#""model":"m""#, r#""model":"m-2024-08-06""#),
        )
    };
    // 300,000 output tokens at $2/M fit the $1 budget; at $4/M they would not.
    let o = t.send(&answered(300_000));
    assert!(o.allowed(), "{o:?}");
    assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0.00005"[..]));
    // The control plane doubles the rates: a new book, version 4.
    {
        let mut cp = t.cp.lock().unwrap();
        cp.snapshot["version"] = json!(2);
        cp.snapshot["prices"] = json!({"version": 4, "models": {"m": {"rates": {"input": "0.000002", "output": "0.000004"}}}});
    }
    let sync = t.sync;
    t.host.tick(sync).unwrap();
    t.tick();
    let o = t.send(&answered(100));
    assert!(o.allowed(), "{o:?}");
    assert_eq!(
        o.filter_state("tollgate.cost"),
        Some(&b"0.0001"[..]),
        "settled at the new rates"
    );
    assert_eq!(
        t.send(&answered(300_000)).status(),
        Some(429),
        "the worst case at the new rates"
    );
}

#[test]
fn soft_limit_warns_but_allows() {
    let mut t = Tollgate::start(snapshot("1", "0.5", Some("0.4")), json!({}));
    let o = t.send(
        &chat(10)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert!(o.allowed());
    assert_eq!(o.response_header("x-tollgate-soft-limit"), Some("b-key"));
    assert_eq!(
        t.host
            .metric("tollgate_soft_limit_warnings")
            .map(|m| m.value()),
        Some(1)
    );
}

#[test]
fn reservations_of_requests_in_flight_count_against_the_budget() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    // Another worker holds $0.999 of reservations for requests still in flight.
    t.host
        .set_shared_data("tollgate", "tollgate.budget.b-key", local_reserved(999, 3));
    let o = t.send(
        &chat(1000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(
        o.status(),
        Some(429),
        "0.999 reserved + 0.002 worst case > 1"
    );
    assert_eq!(t.local(), "r=0.999", "a denied request reserves nothing");
    t.host
        .set_shared_data("tollgate", "tollgate.budget.b-key", local_reserved(5, 1));
    let o = t.send(
        &chat(1000)
            .response_status(200)
            .response_body(chat_response(100, 200)),
    );
    assert!(o.allowed());
    t.tick();
    assert_eq!(
        t.local(),
        format!("r=0.5;{T0}=0.0005"),
        "own reservation released, cost kept"
    );
}

#[test]
fn a_settled_request_is_written_with_the_next_admission_on_its_budget() {
    // Limit $1. A worst case of 400,000 output tokens reserves $0.8 (+ the prompt's); each
    // answer costs $0.000003. A second such request fits only if the first one's settlement
    // counts, not its reservation: the admission decides with what the worker owes the
    // budget applied, and writes it in the same compare-and-set.
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let big = || {
        chat(400_000)
            .response_status(200)
            .response_body(chat_response(1, 1))
    };
    assert!(t.send(&big()).allowed());
    let held = t.local();
    assert!(held.starts_with("r=0.8") && !held.contains(';'), "{held}");
    let o = t.send(&big());
    assert!(o.allowed(), "{o:?}");
    assert_eq!(
        o.response_header("x-tollgate-budget-remaining"),
        Some("0.999997"),
        "the first request's cost, not its reservation"
    );
    assert_eq!(
        t.local(),
        format!("{held};{T0}=0.000003"),
        "first settled in the second's admission; the second's reservation held"
    );
    // The tick writes the rest before it queues the usage: when the batch reaches the
    // control plane, both charges are in the local state.
    t.advance(1);
    assert_eq!(t.cp.lock().unwrap().events.len(), 2);
    assert_eq!(t.local(), format!("r=0;{T0}=0.000006"));
}

/// The counters every admitted request moves are added up in the worker and reach Envoy on
/// its tick (a host call per request saved), not lost and not counted twice.
#[test]
fn admitted_requests_reach_the_counters_on_the_tick() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let counter = |t: &Tollgate, name: &str| t.host.metric(name).map(|m| m.value());
    for _ in 0..3 {
        let o = t.send(
            &chat(1000)
                .response_status(200)
                .response_body(chat_response(100, 200)),
        );
        assert!(o.allowed());
    }
    assert_eq!(counter(&t, "tollgate_requests_allowed"), Some(0), "not yet");
    t.advance(1);
    assert_eq!(counter(&t, "tollgate_requests_allowed"), Some(3));
    // 3 × (100 × $1/M + 200 × $2/M) = $0.0015.
    assert_eq!(counter(&t, "tollgate_cost_micro_usd"), Some(1500));
    t.advance(1);
    assert_eq!(
        counter(&t, "tollgate_requests_allowed"),
        Some(3),
        "flushed once"
    );
}

/// The module's scanner searches sixteen bytes per wasm SIMD instruction, then eight, then
/// the last few (`usage/scan.rs`); natively the tests run a two-word stand-in. Here the real
/// module reads answers whose escapes (`\"`, `\\`) and line ends fall at every offset of that
/// search, the last bytes of the body among them. Message text that *mentions* usage must not
/// be read as it, and every answer is charged exactly 10 and 20 tokens.
#[test]
fn escapes_and_line_ends_at_every_offset_of_the_block_search_are_read_right() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    for pad in 0..34 {
        let text = format!(
            "{}\"usage\":{{\"prompt_tokens\":999}} \\{}\\\"",
            "x".repeat(pad),
            "y".repeat(pad % 7)
        );
        let answer = json!({"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            "system_fingerprint": format!("fp_{}\\\"", "z".repeat(pad % 16))});
        let o = t.send(
            &chat(100)
                .response_status(200)
                .response_header("content-type", "application/json")
                .response_body(answer.to_string()),
        );
        assert_eq!(
            o.filter_state("tollgate.cost"),
            Some(&b"0.00005"[..]),
            "JSON answer, pad {pad}: 10 × $1/M + 20 × $2/M"
        );
    }
    for pad in 0..34 {
        let delta = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": format!("{}\\\"\n", "x".repeat(pad))}}],
            "usage": null});
        let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}});
        let req = chat_stream()
            .response_status(200)
            .response_header("content-type", "text/event-stream")
            // The line ends at every offset; the second event's `\r\n` split across chunks.
            .response_chunk(format!("data: {delta}\n\ndata: {usage}\r"))
            .response_chunk("\n\r\ndata: [DONE]\n\n")
            .response_chunk("");
        let o = t.send(&req);
        assert_eq!(
            o.filter_state("tollgate.cost"),
            Some(&b"0.00005"[..]),
            "SSE answer, pad {pad}"
        );
    }
}

#[test]
fn streaming_gets_usage_injected_and_metered_as_it_passes() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let chunk = |content: &str| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}}], "usage": null})
        )
    };
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
    let req = chat_stream()
        .response_status(200)
        .response_header("content-type", "text/event-stream")
        .response_chunk(chunk("a"))
        .response_chunk(chunk("b"))
        .response_chunk(format!("data: {usage}\n\n"))
        .response_chunk("data: [DONE]\n\n")
        .response_chunk("");
    let o = t.send(&req);
    assert!(o.allowed());
    let sent: Value = serde_json::from_slice(&o.upstream.as_ref().unwrap().body).unwrap();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "usage requested for the client"
    );
    assert_eq!(
        sent["messages"][0]["content"], "hi",
        "the rest of the body unchanged"
    );
    assert!(
        o.upstream_header("content-length").is_none(),
        "stale length removed"
    );
    assert_eq!(
        o.filter_state("tollgate.cost"),
        Some(&b"0.000013"[..]),
        "7 × $1/M + 3 × $2/M"
    );
    assert!(
        o.body_text().contains("[DONE]"),
        "the stream passed through whole"
    );
}

#[test]
fn snapshot_sync_uses_etags_and_posts_usage_batches() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    t.advance(1);
    {
        let cp = t.cp.lock().unwrap();
        assert_eq!(cp.snapshot_calls[0], None, "first pull has no ETag");
        assert_eq!(
            cp.snapshot_calls[1].as_deref(),
            Some("\"1\""),
            "then If-None-Match (answered 304)"
        );
    }
    for _ in 0..5 {
        t.send(
            &chat(10)
                .response_status(200)
                .response_body(chat_response(2, 3)),
        );
    }
    t.advance(1);
    let cp = t.cp.lock().unwrap();
    assert_eq!(cp.batches, 1, "five events in one batch");
    let ids: Vec<&str> = cp
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let seqs: Vec<u64> = cp
        .events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn control_plane_down_then_back_loses_and_doubles_nothing() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    t.cp.lock().unwrap().up = false;
    for _ in 0..3 {
        let o = t.send(
            &chat(10)
                .response_status(200)
                .response_body(chat_response(1, 1)),
        );
        assert!(o.allowed(), "keeps enforcing from the last snapshot");
    }
    t.advance(5);
    assert!(
        t.host
            .metric("tollgate_sync_failures")
            .map(|m| m.value())
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        t.host.metric("tollgate_queue_depth").map(|m| m.value()),
        Some(3)
    );
    t.send(
        &chat(10)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    t.cp.lock().unwrap().up = true;
    t.advance(40); // past the retry backoff
    let cp = t.cp.lock().unwrap();
    assert_eq!(cp.events.len(), 4, "every served request exactly once");
    let mut ids: Vec<&str> = cp
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    drop(cp);
    assert_eq!(t.local(), "r=0", "all acknowledged");
}

#[test]
fn stale_snapshot_policy_deny_refuses_and_allow_keeps_enforcing() {
    let extra = json!({"max_staleness_s": 10, "stale_policy": "deny"});
    let mut t = Tollgate::start(snapshot("1", "0", None), extra);
    t.cp.lock().unwrap().up = false;
    t.advance(20);
    let o = t.send(
        &chat(10)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(o.status(), Some(503));
    assert!(o.body_text().contains("budget_snapshot_stale"));

    let mut t = Tollgate::start(
        snapshot("1", "0.9999", None),
        json!({"max_staleness_s": 10}),
    );
    t.cp.lock().unwrap().up = false;
    t.advance(20);
    let o = t.send(
        &chat(1000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(
        o.status(),
        Some(429),
        "stale but allowed: still enforcing the last snapshot"
    );
}

#[test]
fn an_unchanged_snapshot_confirmed_by_304s_is_not_stale() {
    // generated_at stays at T0 while the control plane keeps answering 304.
    let mut t = Tollgate::start(
        snapshot("1", "0", None),
        json!({"max_staleness_s": 10, "stale_policy": "deny"}),
    );
    t.advance(30);
    let o = t.send(
        &chat(10)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert!(o.allowed(), "{}", o.body_text());
}

/// Issue 13, item 8: a metered request is admitted only when Envoy routed it to the cluster
/// the config names for its provider (`xds.cluster_name`); the provider key is injected by
/// that cluster, so another cluster would carry another provider's key.
#[test]
fn a_metered_request_on_another_providers_cluster_is_refused() {
    let mut t = Tollgate::start(
        snapshot("1", "0", None),
        json!({"identity": {"providers": {"openai": {"cluster": "openai"},
                                          "anthropic": {"cluster": "anthropic"}}}}),
    );
    let ok = |r: Request| {
        r.response_status(200)
            .response_header("content-type", "application/json")
            .response_body(chat_response(10, 20))
    };
    let o = t.send(&ok(chat(100).property("xds.cluster_name", "openai")));
    assert!(o.allowed(), "{o:?}");
    for cluster in [Some("anthropic"), Some("openai-other"), None] {
        let mut r = chat(100);
        if let Some(c) = cluster {
            r = r.property("xds.cluster_name", c);
        }
        let o = t.send(&ok(r));
        assert!(!o.allowed(), "{cluster:?}: {o:?}");
        assert_eq!(o.status(), Some(404), "{cluster:?}");
        assert!(
            o.body_text().contains("provider_route_mismatch"),
            "{}",
            o.body_text()
        );
    }
    // Envoy refusing the property read (a status the SDK's call would abort the VM on):
    // the cluster is unknown, so the request is refused, and the VM lives on.
    t.host
        .inject_fault("proxy_get_property", Status::BadArgument, 1);
    let o = t.send(&ok(chat(100).property("xds.cluster_name", "openai")));
    assert!(o.trap.is_none() && !o.vm_reloaded, "{o:?}");
    assert_eq!(o.status(), Some(404), "{o:?}");
    let o = t.send(&ok(chat(100).property("xds.cluster_name", "openai")));
    assert!(o.allowed(), "the next read answers: {o:?}");
    // A provider the config does not list (Gemini here) is refused whatever the cluster.
    let gemini = Request::post("/v1beta/models/gemini-2.5-flash:generateContent")
        .header("x-goog-api-key", KEY)
        .header("content-type", "application/json")
        .property("xds.cluster_name", "gemini")
        .body(json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string());
    let o = t.send(&gemini);
    assert_eq!(o.status(), Some(404), "{o:?}");
    assert!(t.host.vm_failure(t.worker).is_none());
}

#[test]
fn refuses_unknown_keys_models_and_bad_bodies_without_trapping() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let o = t.send(
        &Request::post("/v1/chat/completions")
            .header("authorization", "Bearer tg-nope")
            .body("{}"),
    );
    assert_eq!(o.status(), Some(401));
    let o = t.send(&Request::post("/v1/chat/completions").body("{}"));
    assert_eq!(o.status(), Some(401));
    let o = t.send(
        &Request::post("/v1/chat/completions")
            .header("x-api-key", KEY)
            .body(r#"{"model":"nope","messages":[]}"#),
    );
    assert_eq!(o.status(), Some(400));
    assert!(o.body_text().contains("model_not_priced"));
    for bad in [
        &b"{"[..],
        b"[]",
        b"\xff\xfe",
        br#"{"model":"m","max_tokens":-1}"#,
        br#"{"model":5}"#,
    ] {
        let o = t.send(
            &Request::post("/v1/chat/completions")
                .header("authorization", format!("Bearer {KEY}"))
                .body(bad.to_vec()),
        );
        assert_eq!(o.status(), Some(400), "{}", String::from_utf8_lossy(bad));
    }
    // Garbage responses: allowed, charged by policy, counted, no trap.
    let o = t.send(&chat(10).response_status(200).response_body("not json"));
    assert!(o.allowed());
    let o = t.send(
        &chat(10)
            .response_status(200)
            .response_header("content-type", "text/event-stream")
            .response_body("data: {broken\n\n"),
    );
    assert!(o.allowed());
    // Both streams ended normally without usage: charged by policy as `no_usage`.
    assert_eq!(
        t.host
            .metric("tollgate_uncharged_no_usage")
            .map(|m| m.value()),
        Some(2)
    );
    // A path neither metered nor free is refused: the provider clusters inject the provider
    // key, so nothing passes unjudged.
    let o = t.send(&Request::get("/healthz").response_status(200));
    assert!(!o.allowed());
    assert!(t.host.vm_failure(t.worker).is_none());
}

/// Envoy refusing a host call the SDK does not expect to fail makes the SDK panic, which
/// traps the VM. Under FAIL_RELOAD (the shipped policy) the next request runs on a fresh VM
/// that still enforces from the shared snapshot; under FAIL_CLOSED every later request is 503.
#[test]
fn a_trap_reloads_the_vm_under_fail_reload_and_fails_closed_otherwise() {
    let mut t = Tollgate::start(snapshot("1", "0.9999", None), json!({}));
    t.host
        .inject_fault("proxy_get_buffer_bytes", Status::InternalFailure, 1);
    let o = t.host.send_to(t.worker, &chat(10)).unwrap();
    assert!(o.trap.is_some(), "the SDK panics on the unexpected status");
    let o = t.send(
        &chat(1000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert!(o.vm_reloaded, "a fresh VM serves the next request");
    assert_eq!(
        o.status(),
        Some(429),
        "and still enforces the shared snapshot"
    );

    let mut t = Tollgate::start_with(
        snapshot("1", "0", None),
        json!({}),
        FailurePolicy::FailClosed,
    );
    t.host
        .inject_fault("proxy_get_buffer_bytes", Status::InternalFailure, 1);
    let o = t.host.send_to(t.worker, &chat(10)).unwrap();
    assert!(o.trap.is_some());
    let o = t
        .host
        .send_to(
            t.worker,
            &chat(10)
                .response_status(200)
                .response_body(chat_response(1, 1)),
        )
        .unwrap();
    assert_eq!(
        o.status(),
        Some(503),
        "fail closed: the dead VM answers nothing else"
    );
}

#[test]
fn invalid_config_is_refused_naming_every_field() {
    let plugin = plugin().with_configuration(
        r#"{"control_plane":{"cluster":"cp","authority":"a","token":"t","sync_interval_ms":1},"stale_policy":"maybe"}"#,
    );
    let Err(err) = plugin.start() else {
        panic!("config must be refused")
    };
    let start = err.downcast_ref::<StartError>().expect("a StartError");
    assert!(start.config_rejected(), "{err}");
    let text = err.to_string();
    assert!(text.contains("control_plane.sync_interval_ms"), "{text}");
    assert!(text.contains("stale_policy"), "{text}");
    assert!(!text.contains("\"t\""), "no secret in the log");
}

/// A chat request whose body comes in two chunks and ends with a trailers frame (HTTP/2,
/// gRPC-style clients): the body callback never sees `end_of_stream`.
fn chat_with_trailers(max_tokens: u32) -> Request {
    let body = json!({"model": "m", "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let (a, b) = body.split_at(body.len() / 2);
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body_chunk(a)
        .body_chunk(b)
        .trailer("x-client-checksum", "1234")
}

#[test]
fn a_body_ended_by_trailers_is_judged_and_metered() {
    // Over budget: refused in the trailers phase; the body never reaches the provider.
    let mut t = Tollgate::start(snapshot("1", "0.9999", None), json!({}));
    let o = t.send(
        &chat_with_trailers(1000)
            .response_status(200)
            .response_body(chat_response(1, 1)),
    );
    assert_eq!(o.status(), Some(429), "{}", o.body_text());
    assert!(
        o.upstream.as_ref().is_none_or(|u| u.body.is_empty()),
        "no body reached the provider"
    );
    assert_eq!(o.filter_state("tollgate.decision"), Some(&b"deny"[..]));
    // Under budget: admitted at the trailers, metered like any other request.
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let o = t.send(
        &chat_with_trailers(100)
            .response_status(200)
            .response_header("content-type", "application/json")
            .response_body(chat_response(10, 20)),
    );
    assert!(o.allowed(), "{}", o.body_text());
    assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0.00005"[..]));
}

#[test]
fn a_complete_provider_error_is_charged_zero_under_its_status_class() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    for status in [429, 400, 503] {
        let o = t.send(
            &chat(100)
                .response_status(status)
                .response_header("content-type", "application/json")
                .response_body(r#"{"error":{"message":"no","type":"rate_limit_error"}}"#),
        );
        assert_eq!(o.status(), Some(status));
        assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0"[..]), "{status}");
    }
    t.tick();
    assert_eq!(
        t.local(),
        format!("r=0;{T0}=0"),
        "reservations released, nothing spent"
    );
    for (name, n) in [
        ("tollgate_uncharged_upstream_429", 1),
        ("tollgate_uncharged_upstream_4xx", 1),
        ("tollgate_uncharged_upstream_5xx", 1),
    ] {
        assert_eq!(t.host.metric(name).map(|m| m.value()), Some(n), "{name}");
    }
    t.advance(1);
    let cp = t.cp.lock().unwrap();
    let reasons: Vec<&str> = cp
        .events
        .iter()
        .map(|e| e["uncharged"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["upstream_429", "upstream_4xx", "upstream_5xx"]);
    assert!(cp.events.iter().all(|e| e["charge"] == "zero"));
}

#[test]
fn metered_requests_ask_the_provider_for_identity_and_free_ones_keep_accept_encoding() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    // What the official SDKs (httpx) send, and a client that sends nothing.
    for accepted in [Some("gzip, deflate"), Some("br;q=1.0, zstd"), None] {
        let mut r = chat(100);
        if let Some(a) = accepted {
            r = r.header("accept-encoding", a);
        }
        let o = t.send(
            &r.response_status(200)
                .response_header("content-type", "application/json")
                .response_body(chat_response(10, 20)),
        );
        assert!(o.allowed(), "{o:?}");
        assert_eq!(
            o.upstream_header("accept-encoding"),
            Some("identity"),
            "usage is read from the answer's bytes: {accepted:?}"
        );
    }
    // A model list is forwarded, not metered: the client's codings reach the provider.
    let o = t.send(
        &Request::get("/v1/models")
            .header("authorization", format!("Bearer {KEY}"))
            .header("accept-encoding", "gzip, deflate")
            .response_status(200),
    );
    assert_eq!(o.filter_state("tollgate.decision"), Some(&b"free"[..]));
    assert_eq!(o.upstream_header("accept-encoding"), Some("gzip, deflate"));
}

/// Envoy's decompressor ends an inflated answer with trailers (its byte counts): the body
/// callbacks then never see `end_of_stream`, and the answer is still complete.
#[test]
fn an_answer_ended_by_trailers_is_metered_exactly() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_header("content-type", "application/json")
            .response_body(chat_response(10, 20))
            .response_trailer("x-envoy-decompressor-gzip-compressed-bytes", "120"),
    );
    assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0.00005"[..]));
    t.advance(1);
    let cp = t.cp.lock().unwrap();
    assert_eq!(cp.events[0]["charge"], "actual");
    assert_eq!(cp.events[0]["usage"]["output"], 20);
}

#[test]
fn an_answer_the_filter_cannot_read_is_charged_by_policy_as_encoded_answer() {
    let mut t = Tollgate::start(snapshot("1", "0", None), json!({}));
    // The same request with an answer that has no usage: the estimate, by policy.
    let unread = t.send(&chat(100).response_status(200).response_body("not json"));
    let estimate = unread.filter_state("tollgate.cost").unwrap().to_vec();
    assert_ne!(
        estimate, b"0",
        "the default missing_usage policy charges the estimate"
    );
    // An edge that compressed despite `identity`, with no decompressor in front of the filter:
    // the usage inside is unreadable, whatever the bytes (gzip magic, then anything).
    for (coding, ctype) in [("gzip", "application/json"), ("br", "text/event-stream")] {
        let o = t.send(
            &chat(100)
                .response_status(200)
                .response_header("content-type", ctype)
                .response_header("content-encoding", coding)
                .response_body(&b"\x1f\x8b\x08\x00compressed usage"[..]),
        );
        assert!(o.allowed());
        assert_eq!(
            o.filter_state("tollgate.cost"),
            Some(&estimate[..]),
            "{coding}"
        );
    }
    assert_eq!(
        t.host
            .metric("tollgate_uncharged_encoded_answer")
            .map(|m| m.value()),
        Some(2)
    );
    assert_eq!(
        t.host
            .metric("tollgate_uncharged_no_usage")
            .map(|m| m.value()),
        Some(1),
        "never counted as an answer without usage"
    );
    // `identity` is no coding: read as usual.
    let o = t.send(
        &chat(100)
            .response_status(200)
            .response_header("content-type", "application/json")
            .response_header("content-encoding", "identity")
            .response_body(chat_response(10, 20)),
    );
    assert_eq!(o.filter_state("tollgate.cost"), Some(&b"0.00005"[..]));
    t.advance(1);
    let cp = t.cp.lock().unwrap();
    let reasons: Vec<Option<&str>> = cp.events.iter().map(|e| e["uncharged"].as_str()).collect();
    assert_eq!(
        reasons,
        [
            Some("no_usage"),
            Some("encoded_answer"),
            Some("encoded_answer"),
            None
        ]
    );
    let encoded = &cp.events[1];
    assert_eq!(encoded["charge"], "estimate");
    assert_eq!(encoded["usage"]["input_uncached"], 0);
}

/// The secret the mock control plane mints at enrollment.
const MOCK_REPORTER_SECRET: &str = "tgr-harness-secret";

/// `scripts/wasm-link.sh` links the filter without the callbacks it never implements (gRPC,
/// HTTP-call answers, foreign functions, queues, network filters): their dispatch code is
/// 17 KB of the module. Envoy calls a callback only when the module exports it, so a feature
/// that starts using one of them must take it off that list; this test is where that shows.
#[test]
fn the_filter_exports_only_the_callbacks_it_uses() {
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, common::tollgate_wasm()).unwrap();
    let mut exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
    exports.sort_unstable();
    assert_eq!(
        exports,
        [
            "_initialize",
            "memory",
            "proxy_abi_version_0_2_1",
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_done",
            "proxy_on_log",
            "proxy_on_memory_allocate",
            "proxy_on_request_body",
            "proxy_on_request_headers",
            "proxy_on_request_trailers",
            "proxy_on_response_body",
            "proxy_on_response_headers",
            "proxy_on_response_trailers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ]
    );
    // The sync service keeps the SDK's whole set: it makes HTTP calls and reads the queue.
    let sync = wasmtime::Module::new(&engine, common::sync_wasm()).unwrap();
    for used in ["proxy_on_http_call_response", "proxy_on_queue_ready"] {
        assert!(sync.exports().any(|e| e.name() == used), "{used}");
    }
}
