//! Snapshot deltas (issue 18): whatever version an Envoy holds, what the control plane sends
//! it leads to exactly the snapshot of the current version; a version this process did not
//! build (another replica's, or before a restart) gets the whole snapshot; a replica lagging
//! behind cannot take an Envoy backwards. On SQLite and PostgreSQL (`store_test!`), through
//! the router, with the sync service's own reader (`tollgate_core::snapshot::sections::Held`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::http::{app, AppState};
use tollgate_control_plane::snapshot::Built;
use tollgate_control_plane::store::Store;
use tollgate_core::snapshot::sections::{Held, DELTA_MEDIA_TYPE};
use tollgate_testkit::store_test;
use tower::ServiceExt;

/// One call through the router: status, content type, body.
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, bytes.to_vec())
}

async fn admin(app: &Router, method: &str, path: &str, body: Value) -> Value {
    let (status, _, bytes) = send(app, method, path, ADMIN, &[], Some(body)).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The sync service's copy after the whole snapshot of `built`.
fn whole(built: &Built) -> Held {
    let mut held = Held::default();
    held.apply(&built.delta(None).unwrap().0).unwrap();
    held
}

/// A fleet that changes in every way a snapshot can, one build per step.
async fn history(state: &AppState, clock: &Clock) -> Vec<Arc<Built>> {
    let app = app(state.clone());
    let mut builds = Vec::new();
    for (path, body) in [
        ("/v1/orgs", json!({"id": "acme", "name": "Acme"})),
        (
            "/v1/users",
            json!({"id": "ann", "org_id": "acme", "name": "Ann"}),
        ),
    ] {
        admin(&app, "POST", path, body).await;
    }
    let mut budgets = Vec::new();
    for (scope, id, period, limit) in [
        ("org", "acme", "daily", "10"),
        ("user", "ann", "total", "5"),
    ] {
        let body = json!({"scope": scope, "scope_id": id, "period": period, "limit_usd": limit});
        budgets.push(admin(&app, "POST", "/v1/budgets", body).await);
    }
    let (org, user) = (&budgets[0], &budgets[1]);
    let mut keys = Vec::new();
    for name in ["a", "b", "c"] {
        let body = json!({"name": name, "org_id": "acme", "user_id": "ann"});
        keys.push(admin(&app, "POST", "/v1/keys", body).await);
    }
    builds.push(state.snapshots.rebuild().await.unwrap());

    // Spend moves (a reporter's batch).
    let (_, _, enrolled) = send(
        &app,
        "POST",
        "/v1/reporters",
        DATAPLANE,
        &[],
        Some(json!({"node": "envoy-a"})),
    )
    .await;
    let enrolled: Value = serde_json::from_slice(&enrolled).unwrap();
    let (me, secret) = (
        enrolled["reporter"].as_str().unwrap(),
        enrolled["secret"].as_str().unwrap(),
    );
    let p = principal(
        "acme",
        None,
        Some("ann"),
        Some(keys[0]["id"].as_str().unwrap()),
    );
    for seq in 1..=2u64 {
        let batch = json!({"events": [event(&format!("e{seq}"), me, seq, NOW, &p, "0.5")]});
        let (status, _, body) = send(&app, "POST", "/v1/usage", secret, &[], Some(batch)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        builds.push(state.snapshots.rebuild().await.unwrap());
    }
    // A key revoked, a key created, a budget redefined, a budget deleted, a new price.
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let changes = [
        (
            "POST",
            format!("/v1/keys/{}/revoke", id(&keys[1])),
            json!({}),
        ),
        (
            "POST",
            "/v1/keys".into(),
            json!({"name": "d", "org_id": "acme"}),
        ),
        (
            "PATCH",
            format!("/v1/budgets/{}", id(org)),
            json!({"limit_usd": "20"}),
        ),
        ("DELETE", format!("/v1/budgets/{}", id(user)), json!({})),
        (
            "POST",
            "/v1/prices".into(),
            json!({"model": "gpt-4o", "provider": "openai",
            "input_per_million": "2.5", "output_per_million": "10", "effective_from": 0}),
        ),
    ];
    for (method, path, body) in changes {
        admin(&app, method, &path, body).await;
        builds.push(state.snapshots.rebuild().await.unwrap());
    }
    // The daily window ends: bounds move and the spend of the new window is zero.
    clock.set(NOW + 86_400);
    builds.push(state.snapshots.refresh().await.unwrap());
    builds.dedup_by_key(|b| b.version);
    builds
}

store_test!(every_delta_leads_to_the_version_it_names, |store, url| {
    let clock = Clock::fixed(NOW);
    let state = AppState::new(store, tokens(), clock.clone());
    state.snapshots.rebuild().await.unwrap();
    let builds = history(&state, &clock).await;
    assert!(builds.len() >= 9, "one version per step: {}", builds.len());
    for (i, from) in builds.iter().enumerate() {
        for to in &builds[i + 1..] {
            let delta = to.delta(Some(from.version)).unwrap().0;
            let doc: Value = serde_json::from_slice(&delta).unwrap();
            assert_eq!(
                doc["base"],
                json!(from.version),
                "a delta, not the whole snapshot"
            );
            let mut held = whole(from);
            held.apply(&delta).unwrap();
            assert!(
                held.same_snapshot(&whole(to)),
                "{} -> {}: {}",
                from.version,
                to.version,
                String::from_utf8_lossy(&delta)
            );
        }
    }
    // The steady state is small: one short row per budget whose spend moved.
    let spend = builds[2].delta(Some(builds[1].version)).unwrap().0;
    let doc: Value = serde_json::from_slice(&spend).unwrap();
    assert_eq!(
        doc["spend"].as_array().unwrap().len(),
        2,
        "{doc}\n{}",
        String::from_utf8_lossy(&builds[2].delta(None).unwrap().0)
    );
    for empty in ["budgets", "removed_budgets"] {
        assert_eq!(doc[empty], json!([]), "{doc}");
    }
    assert_eq!(doc["key_buckets"], json!({}), "{doc}");
    assert!(doc.get("prices").is_none(), "{doc}");
    assert!(spend.len() < 400, "{} bytes", spend.len());
    assert!(
        doc["spend"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.as_array().unwrap().len() == 2),
        "the current window's spend goes without its start: {doc}"
    );

    // Another replica on the same database built none of these versions: whoever holds one
    // gets the whole snapshot, which it takes (same version or newer).
    let other = AppState::new(Store::connect(&url).await.unwrap(), tokens(), clock.clone());
    let last = other.snapshots.rebuild().await.unwrap();
    assert_eq!(last.version, builds.last().unwrap().version);
    let doc = last.delta(Some(builds[0].version)).unwrap().0;
    assert!(serde_json::from_slice::<Value>(&doc)
        .unwrap()
        .get("base")
        .is_none());
    let mut held = whole(&builds[0]);
    held.apply(&doc).unwrap();
    assert!(held.same_snapshot(&whole(&last)));

    // A replica that has not seen the last changes cannot take an Envoy back.
    let mut ahead = whole(builds.last().unwrap());
    let err = ahead.apply(&builds[3].delta(None).unwrap().0).unwrap_err();
    assert!(err.to_string().contains("older"), "{err}");
    assert!(ahead.same_snapshot(&whole(builds.last().unwrap())));
});

#[tokio::test]
async fn the_sync_service_asks_by_media_type_and_gets_304_when_current() {
    let (store, _db) = tollgate_testkit::sqlite_store().await;
    let (state, _clock) = state(store).await;
    let app = app(state.clone());
    admin(
        &app,
        "POST",
        "/v1/orgs",
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    let v1 = state.snapshots.rebuild().await.unwrap().version;
    admin(
        &app,
        "POST",
        "/v1/keys",
        json!({"name": "k", "org_id": "acme"}),
    )
    .await;
    let v2 = state.snapshots.rebuild().await.unwrap().version;
    // A poll as the sync service makes it (or a plain GET), naming the version it holds.
    let poll = |held: u64, delta: bool| {
        let tag = format!("\"{held}\"");
        let app = app.clone();
        async move {
            let mut headers = vec![("if-none-match", tag.as_str())];
            if delta {
                headers.push(("accept", DELTA_MEDIA_TYPE));
            }
            send(&app, "GET", "/v1/snapshot", DATAPLANE, &headers, None).await
        }
    };
    let (status, ctype, body) = poll(v1, true).await;
    assert_eq!((status, ctype.as_str()), (200, DELTA_MEDIA_TYPE));
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (doc["base"].as_u64(), doc["version"].as_u64()),
        (Some(v1), Some(v2))
    );
    assert_eq!(doc["key_buckets"].as_object().unwrap().len(), 1, "{doc}");
    let (status, _, body) = poll(v2, true).await;
    assert_eq!((status, body.len()), (304, 0));
    // Without the media type: the whole document, as before.
    let (status, ctype, body) = poll(v1, false).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc.get("base").is_none() && doc["keys"].as_array().unwrap().len() == 1);
}
