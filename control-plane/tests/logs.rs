//! What the control plane logs about requests: the method, the route template and the status,
//! never the raw path, its query or a header. Its own test binary, because a scoped tracing
//! subscriber is not reliable while other tests run in parallel threads of the same process
//! (callsite interest is cached process-wide).
//!
//! Run: `cargo test -p tollgate-control-plane --test logs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use tollgate_control_plane::http::app;
use tollgate_testkit::sqlite_store;
use tower::ServiceExt;

/// A token or key in the query or the `Authorization` header stays out of the log.
#[tokio::test]
async fn request_logs_name_the_route_never_the_query_or_a_token() {
    let (subscriber, buf) = debug_log();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (store, _db) = sqlite_store().await;
    let (state, _clock) = state(store).await;
    let app = app(state);
    let call = |uri: &str, token: &str| {
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    let ok = call(
        "/v1/usage/events?reporter=tg-query-secret-0123456789",
        ADMIN,
    )
    .await;
    assert_eq!(ok, StatusCode::OK);
    let refused = call("/v1/keys", "tg-wrong-secret-0123456789").await;
    assert_eq!(refused, StatusCode::FORBIDDEN);
    let unknown = call("/nowhere?token=tg-lost-0123", ADMIN).await;
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    // Keys created in bulk: their secrets are in the answer, never in the log.
    let post = |uri: &str, body: serde_json::Value| {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap() }
    };
    let org = post(
        "/v1/orgs",
        serde_json::json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    assert_eq!(org.status(), StatusCode::CREATED);
    let bulk = post(
        "/v1/bulk",
        serde_json::json!({"keys": [{"name": "a", "org_id": "acme"}, {"name": "b", "org_id": "acme"}]}),
    )
    .await;
    assert_eq!(bulk.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(bulk.into_body())
        .await
        .unwrap()
        .to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut secrets = each_str(&created["keys"], "secret");
    assert_eq!(secrets.len(), 2);
    // An API token: its secret is in the answer, then presented, never in the log.
    let token = post(
        "/v1/tokens",
        serde_json::json!({"name": "ops", "role": "manager", "org_id": "acme"}),
    )
    .await;
    assert_eq!(token.status(), StatusCode::CREATED);
    let body = http_body_util::BodyExt::collect(token.into_body())
        .await
        .unwrap()
        .to_bytes();
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = token["secret"].as_str().unwrap().to_string();
    assert_eq!(call("/v1/keys", &token).await, StatusCode::OK);
    assert_eq!(call("/v1/tokens", &token).await, StatusCode::FORBIDDEN);
    secrets.push(token);

    let log = buf.text();
    assert!(
        log.contains("request{method=GET route=/v1/usage/events}")
            && log.contains("route=\"/v1/usage/events\" status=200"),
        "{log}"
    );
    assert!(log.contains("route=\"/v1/keys\" status=403"), "{log}");
    assert!(log.contains("route=\"unmatched\" status=404"), "{log}");
    for secret in [
        ADMIN,
        "tg-query-secret",
        "tg-wrong-secret",
        "tg-lost",
        "/nowhere",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("route=\"/v1/bulk\" status=200"), "{log}");
    assert!(log.contains("route=\"/v1/tokens\" status=201"), "{log}");
    assert!(log.contains("route=\"/v1/tokens\" status=403"), "{log}");
    for secret in &secrets {
        // Not even the random part, in any form.
        assert!(
            !log.contains(&secret[4..]),
            "a new key's or token's secret in the log:\n{log}"
        );
    }
}
