//! Bulk provisioning through the whole router (`POST /v1/bulk`: JSON decode, checks, one
//! transaction, the answer with every secret encoded), on SQLite and on PostgreSQL. Goal:
//! 100,000 keys in ≤ 20 s on SQLite.
//!
//! Per backend, on a fresh database: 100 organisations (one by one), then one call creating
//! 10,000 users, one creating `TOLLGATE_PROVISION_KEYS` keys (default 100,000) each charged
//! to one of those users, a second such call (the table then already holds as many keys),
//! and one call revoking every key of the first. The baseline of the same run is the same
//! router creating `TOLLGATE_PROVISION_SINGLE` keys (default 1,000) one by one with
//! `POST /v1/keys` (the only way before); the ratio is the bulk rate over that rate.
//!
//! Run: `cargo bench -p tollgate-benches --bench provision`
//! (`TOLLGATE_BENCH_BACKENDS=sqlite` for one backend).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tollgate_benches::{runtime, selected_backends, state, store, Backend, ADMIN};
use tollgate_control_plane::http::app;
use tollgate_testkit::TestDb;
use tower::ServiceExt;

const ORGS: usize = 100;
const USERS: usize = 10_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Posts `body` to `path` as the admin; returns the status, the answer and the time taken.
async fn post(router: &Router, path: &str, body: &Value) -> (u16, Value, Duration) {
    let bytes = serde_json::to_vec(body).unwrap();
    let req = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap();
    let started = Instant::now();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let elapsed = started.elapsed();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, elapsed)
}

fn keys_body(n: usize, round: usize) -> Value {
    let keys: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "name": format!("bench-{round}-{i}"),
                "org_id": format!("org-{}", (i / 10) % ORGS),
                "user_id": format!("usr-{}", i % USERS),
            })
        })
        .collect();
    json!({ "keys": keys })
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn run(backend: Backend, keys: usize, single: usize) {
    let TestDb {
        store: s,
        file: _guard,
        ..
    } = store(backend).await;
    let router = app(state(s).await);
    for i in 0..ORGS {
        let (status, _, _) = post(
            &router,
            "/v1/orgs",
            &json!({"id": format!("org-{i}"), "name": "bench"}),
        )
        .await;
        assert_eq!(status, 201);
    }
    // Users by the ten thousand: org of user i is the org of the keys that name it.
    let users: Vec<Value> = (0..USERS)
        .map(|i| json!({"id": format!("usr-{i}"), "org_id": format!("org-{}", (i / 10) % ORGS), "name": "u"}))
        .collect();
    let (status, _, took) = post(&router, "/v1/bulk", &json!({ "users": users })).await;
    assert_eq!(status, 200);
    println!(
        "{:<8} bulk users        {USERS:>7} in {:>7.3} s  {:>9.0}/s",
        backend.as_str(),
        took.as_secs_f64(),
        rate(USERS, took)
    );

    // Baseline of the same run: one key per call.
    let started = Instant::now();
    for i in 0..single {
        let (status, _, _) = post(
            &router,
            "/v1/keys",
            &json!({"name": "one", "org_id": format!("org-{}", (i / 10) % ORGS), "user_id": format!("usr-{}", i % USERS)}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let one_by_one = rate(single, started.elapsed());
    println!(
        "{:<8} one by one keys   {single:>7} in {:>7.3} s  {:>9.0}/s  (baseline)",
        backend.as_str(),
        started.elapsed().as_secs_f64(),
        one_by_one
    );

    let mut first_ids = Vec::new();
    for round in 0..2 {
        let body = keys_body(keys, round);
        let (status, answer, took) = post(&router, "/v1/bulk", &body).await;
        assert_eq!(status, 200, "{answer}");
        let created = answer["keys"].as_array().unwrap();
        assert_eq!(created.len(), keys);
        assert!(created[0]["secret"].as_str().unwrap().starts_with("tg-"));
        if round == 0 {
            first_ids = created
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_string())
                .collect();
        }
        println!(
            "{:<8} bulk keys (#{})    {keys:>7} in {:>7.3} s  {:>9.0}/s  ratio to one by one {:>6.1}x{}",
            backend.as_str(),
            round + 1,
            took.as_secs_f64(),
            rate(keys, took),
            rate(keys, took) / one_by_one,
            if backend == Backend::Sqlite && keys == 100_000 {
                format!(
                    "  (goal 100,000 in 20 s: {})",
                    if took.as_secs_f64() <= 20.0 { "met" } else { "NOT met" }
                )
            } else {
                String::new()
            }
        );
    }
    let (status, answer, took) =
        post(&router, "/v1/bulk", &json!({ "revoke_keys": first_ids })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked_keys"].as_array().unwrap().len(), keys);
    println!(
        "{:<8} bulk revocations  {keys:>7} in {:>7.3} s  {:>9.0}/s",
        backend.as_str(),
        took.as_secs_f64(),
        rate(keys, took)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let keys = env("TOLLGATE_PROVISION_KEYS", 100_000);
    let single = env("TOLLGATE_PROVISION_SINGLE", 1_000);
    let rt = runtime();
    for backend in selected_backends() {
        rt.block_on(run(backend, keys, single));
    }
}
