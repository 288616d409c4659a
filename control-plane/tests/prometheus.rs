//! The Prometheus side (issue 16, part 4): the alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), every metric the rules and the Grafana dashboard
//! name is one Tollgate exports (the control plane's `/metrics` and `/v1/metrics/budgets`,
//! the filter's and the sync service's metrics as Envoy exports them), and the per-budget
//! gauges need the admin token and show a budget's spend after usage.
//!
//! Needs `promtool` (`bash scripts/setup.sh` installs it); fails loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::{header, Request};
use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use tollgate_control_plane::http::app;
use tollgate_testkit::sqlite_store;
use tower::ServiceExt;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("promtool not found ({e}): run `bash scripts/setup.sh`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alerting_rules_check_and_pass_their_tests() {
    let checked = promtool(&["check", "rules", "tollgate-rules.yaml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tollgate-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `tollgate_…` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tollgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The metric names the filter and the sync service define (`counter("…")`, `gauge("…")`):
/// Envoy exports them under these names (`/stats/prometheus`).
/// The families `filter/src/metrics.rs` names with a format string get one name per scope and
/// per uncharged reason.
fn filter_metrics() -> BTreeSet<String> {
    use tollgate_core::budget::Scope;
    use tollgate_core::event::UnchargedReason;
    let mut all: BTreeSet<String> = ["filter/src/metrics.rs", "filter/sync/src/gauges.rs"]
        .iter()
        .flat_map(|f| names(&std::fs::read_to_string(root().join(f)).unwrap()))
        .collect();
    for s in [Scope::Key, Scope::User, Scope::Project, Scope::Org] {
        all.insert(format!("tollgate_denied_scope_{}", s.as_str()));
    }
    for r in UnchargedReason::ALL {
        all.insert(format!("tollgate_uncharged_{}", r.as_str()));
    }
    all
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let (store, _db) = sqlite_store().await;
    let (state, _clock) = state(store).await;
    let router = app(state.clone());
    let admin = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Acme"})),
    )
    .await;
    let (status, _) = admin(
        "POST",
        "/v1/budgets",
        Some(json!({"scope": "org", "scope_id": "acme", "period": "total", "limit_usd": "10", "soft_limit_usd": "5"})),
    )
    .await;
    assert_eq!(status, 201);
    state.snapshots.rebuild().await.unwrap();
    let (status, budgets) = admin("GET", "/v1/metrics/budgets", None).await;
    assert_eq!(status, 200, "{budgets}");
    assert!(
        budgets.contains("tollgate_budget_soft_limit_usd{budget="),
        "{budgets}"
    );

    // The per-budget gauges are tenant data: not without the admin token.
    let anonymous = Request::get("/v1/metrics/budgets")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.clone().oneshot(anonymous).await.unwrap().status(),
        401
    );
    let dataplane = Request::get("/v1/metrics/budgets")
        .header(header::AUTHORIZATION, format!("Bearer {DATAPLANE}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.clone().oneshot(dataplane).await.unwrap().status(),
        403
    );

    let (_, process) = admin("GET", "/metrics", None).await;
    let mut exported = names(&process);
    exported.extend(names(&budgets));
    exported.extend(filter_metrics());
    for file in [
        "deploy/prometheus/tollgate-rules.yaml",
        "deploy/grafana/tollgate.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let used: BTreeSet<String> = names(&text)
            .into_iter()
            // The rules file's own file name and comments name files, not metrics.
            .filter(|n| !n.ends_with("_rules"))
            .collect();
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics nobody exports: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/tollgate.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}
