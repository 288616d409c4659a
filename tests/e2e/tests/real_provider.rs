//! `scripts/run.sh --provider-url URL --provider-key-env VAR`: one provider's cluster points at
//! another endpoint and that cluster injects that provider's key. Tested against a second mock
//! provider standing in for the real one (plain HTTP on 127.0.0.1, demanding its own key), and
//! the HTTPS form (LOGICAL_DNS + TLS with SNI, as for `https://api.openai.com`) through
//! `envoy --mode validate`, since tests do not reach the internet.
//!
//! Run with `cargo test -p tollgate-tests --test real_provider`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::envoy::{
    render_tollgate, write_secrets, ProviderKeys, RealProvider, TollgateVars,
};
use tollgate_tests::process::{Echo, Proc, Secrets};
use tollgate_tests::stack::{scratch_dir, start_upstream};
use tollgate_tests::{random_token, Stack, StackOptions};

#[test]
fn a_provider_url_sends_that_providers_traffic_there_with_its_key() {
    let Some(bins) = common::bins() else { return };
    let secrets = Secrets::default();
    let real_key = random_token("sk-real-").unwrap();
    secrets.add(&real_key);
    // The "real" provider: another mock that accepts only its own key.
    let (_real, real_addr) = start_upstream(
        &bins.upstream,
        std::slice::from_ref(&real_key),
        None,
        &secrets,
        Echo::Quiet,
    )
    .unwrap();
    let stack = Stack::start(
        &bins,
        StackOptions {
            sync_interval_ms: common::SYNC_INTERVAL_MS,
            real_provider: Some(RealProvider {
                provider: "openai".into(),
                url: format!("http://{real_addr}"),
                key: real_key.clone(),
            }),
            ..StackOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let api = stack.api().unwrap();
    let map = std::fs::read(tollgate_tests::pricing::litellm_map_path().unwrap()).unwrap();
    api.import_litellm(map).unwrap();
    let chain = api.create_chain("real").unwrap();
    stack.wait_for_sync().unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let send = |path: &str, body: Value| {
        let r = http
            .post(format!("{}{path}", stack.url()))
            .bearer_auth(&chain.secret)
            .header("x-api-key", &chain.secret)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    // OpenAI traffic reaches the "real" provider, which accepts only the real key.
    let (status, body) = send(
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 200, "{body}\n{}", stack.logs());
    // Anthropic traffic still goes to the local mock with the mock's key.
    let (status, body) = send(
        "/v1/messages",
        json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 200, "{body}");
    // No key of any kind in any log.
    let logs = stack.logs();
    for secret in [&real_key, &chain.secret, &stack.provider_key().to_string()] {
        assert!(!logs.contains(secret.as_str()));
    }
}

#[test]
fn an_https_provider_url_renders_a_tls_cluster_that_envoy_validates() {
    let Some(bins) = common::bins() else { return };
    let dir = scratch_dir().unwrap();
    let vars = TollgateVars {
        listen_port: 0,
        cp_port: 9,
        upstream_port: 9,
        wasm: bins.filter_wasm.clone(),
        sync_wasm: bins.sync_wasm.clone(),
        dataplane_token: "dp-validate-token-0123456789".into(),
        provider_keys: ProviderKeys::same("sk-mock"),
        secrets_dir: dir.join("secrets"),
        access_log: dir.join("access.log"),
        sync_interval_ms: 1000,
        real_provider: Some(RealProvider {
            provider: "anthropic".into(),
            url: "https://api.anthropic.com".into(),
            key: "sk-ant-validate".into(),
        }),
        cp_standby_ports: Vec::new(),
    };
    write_secrets(&vars).unwrap();
    let yaml = render_tollgate(&vars).unwrap();
    assert!(yaml.contains("sni: api.anthropic.com"), "{yaml}");
    let config = dir.join("tollgate.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let mut cmd = Command::new(&bins.envoy);
    cmd.args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config);
    let (mut envoy, _) = Proc::spawn(
        "envoy --mode validate",
        cmd,
        &Secrets::default(),
        Echo::Quiet,
    )
    .unwrap();
    let status = envoy
        .wait_exit(Duration::from_secs(60))
        .expect("envoy --mode validate still running after 60 s");
    let text = envoy.output();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success() && text.contains("OK"), "{text}");
}
