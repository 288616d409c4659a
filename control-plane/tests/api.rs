//! Router tests: every endpoint through `tower::ServiceExt::oneshot` (no socket), with the
//! 401 / 403 / 404 / 405 / 409 / 413 / 415 / 422 paths, plus one test over a real listener.
//! SQLite underneath (the store tests cover PostgreSQL).
//!
//! Run: `cargo test -p tollgate-control-plane --test api`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tollgate_control_plane::http::openapi::{document, documented, openapi_path};
use tollgate_control_plane::http::{app, routes, Access, AppState};
use tollgate_control_plane::store::audit::AuditQuery;
use tollgate_core::snapshot::Snapshot;
use tollgate_testkit::{sqlite_store, with_connection, TempSqlite};
use tower::ServiceExt;

struct Api {
    app: Router,
    state: AppState,
    db: TempSqlite,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// Asserts a problem document with this status (and field, when given).
    fn problem(&self, status: u16, field: Option<&str>) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{}",
            self.text
        );
        let v = self.json();
        assert_eq!(v["status"], status);
        assert!(v["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tollgate:problem:"));
        assert!(v["title"].is_string() && v["detail"].is_string());
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{}", self.text);
        }
        v
    }
}

async fn api() -> Api {
    let (store, db) = sqlite_store().await;
    let (state, _clock) = state(store).await;
    Api {
        app: app(state.clone()),
        state,
        db,
    }
}

impl Api {
    async fn raw(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN), body).await
    }
}

#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let served: BTreeSet<_> = routes()
        .iter()
        .map(|r| (r.method.to_string(), openapi_path(&r.path), r.access))
        .collect();
    let doc: BTreeSet<_> = documented().into_iter().collect();
    assert_eq!(served.len(), routes().len(), "no route twice");
    let key = |(m, p, a): &(String, String, Access)| (m.clone(), p.clone(), format!("{a:?}"));
    let served: BTreeSet<_> = served.iter().map(key).collect();
    let doc: BTreeSet<_> = doc.iter().map(key).collect();
    assert_eq!(served, doc, "router and OpenAPI document disagree");
    let d = document();
    assert_eq!(d["openapi"], "3.1.0");
    let mut ops = 0;
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops += 1;
            let r = routes()
                .into_iter()
                .find(|r| openapi_path(&r.path) == *path && r.method.eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            let security = op["security"].to_string();
            let tokens = |roles: &[&str]| {
                roles
                    .iter()
                    .map(|r| format!(r#",{{"token":["{r}"]}}"#))
                    .collect::<String>()
            };
            match r.access {
                Access::Public => assert_eq!(security, "[]"),
                Access::DataPlane => {
                    assert!(security.contains("dataplane") && security.contains("admin"))
                }
                Access::Admin => assert_eq!(
                    security,
                    format!(r#"[{{"admin":[]}}{}]"#, tokens(&["admin"]))
                ),
                Access::Read => assert_eq!(
                    security,
                    format!(
                        r#"[{{"admin":[]}}{}]"#,
                        tokens(&["admin", "manager", "viewer"])
                    )
                ),
                Access::OrgRead => assert_eq!(
                    security,
                    format!(
                        r#"[{{"admin":[]}}{}]"#,
                        tokens(&["admin", "manager@org", "viewer@org"])
                    )
                ),
                Access::OrgWrite => assert_eq!(
                    security,
                    format!(r#"[{{"admin":[]}}{}]"#, tokens(&["admin", "manager@org"]))
                ),
                Access::Reporter => assert_eq!(
                    security,
                    format!(
                        r#"[{{"reporter":[]}},{{"dataplane":[]}},{{"admin":[]}}{}]"#,
                        tokens(&["admin"])
                    )
                ),
            }
            if r.access != Access::Public {
                assert!(op["responses"]["401"].is_object() && op["responses"]["403"].is_object());
            }
        }
    }
    assert_eq!(ops, routes().len());
    let api = api().await;
    let served_doc = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(served_doc.status, 200);
    assert_eq!(served_doc.json(), d);
}

/// Every operation of the served OpenAPI document is guarded as its `security` says, so a new
/// endpoint is covered as soon as it is documented (and the test above fails if it is routed
/// without being documented): no token → 401 (or an answer for public operations), a wrong
/// token → 403, the data-plane token → 403 on management operations and accepted on the
/// data-plane ones, the admin token → neither 401 nor 403 anywhere.
#[tokio::test]
async fn every_documented_operation_is_guarded_as_its_security_says() {
    let api = api().await;
    let doc = api.call("GET", "/openapi.json", None, None).await.json();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template.replace("{id}", "x").replace("{model}", "gpt-4o");
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let what = format!("{method} {template}");
            let schemes: BTreeSet<&str> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no security"))
                .iter()
                .flat_map(|req| req.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let no_token = api.call(&method, &path, None, None).await;
            let wrong = api
                .call(&method, &path, Some("not-the-token-at-all-0000"), None)
                .await;
            let dp = api.call(&method, &path, Some(DATAPLANE), None).await;
            let admin = api.call(&method, &path, Some(ADMIN), None).await;
            if schemes.is_empty() {
                assert!(no_token.status.is_success(), "{what}: {}", no_token.status);
            } else {
                no_token.problem(401, None);
                assert_eq!(
                    no_token.headers[header::WWW_AUTHENTICATE],
                    "Bearer",
                    "{what}"
                );
                wrong.problem(403, None);
                assert!(schemes.contains("admin"), "{what}: admin must be accepted");
            }
            if schemes.contains("dataplane") || schemes.is_empty() {
                assert!(
                    ![401, 403].contains(&dp.status.as_u16()),
                    "{what} refused the data-plane token: {}",
                    dp.text
                );
            } else {
                dp.problem(403, None);
            }
            assert!(
                ![401, 403].contains(&admin.status.as_u16()),
                "{what} refused the admin token: {}",
                admin.text
            );
            checked += 1;
        }
    }
    assert_eq!(checked, routes().len(), "every route was checked");
    // Scheme is case-insensitive; other schemes are not bearer tokens.
    let req = Request::get("/v1/orgs")
        .header(header::AUTHORIZATION, format!("bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(req).await.status, 200);
    let req = Request::get("/v1/orgs")
        .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    api.raw(req).await.problem(401, None);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let api = api().await;
    api.admin("GET", "/v1/nothing", None)
        .await
        .problem(404, None);
    api.admin("PUT", "/v1/orgs", None).await.problem(405, None);
    let m = api.call("GET", "/metrics", None, None).await;
    assert!(
        m.text
            .contains(r#"tollgate_http_requests_total{route="unmatched",status="404"} 1"#),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn tenants_crud() {
    let api = api().await;
    let org = api
        .admin(
            "POST",
            "/v1/orgs",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(org.status, 201, "{}", org.text);
    assert_eq!(org.json()["id"], "acme");
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Again"})),
    )
    .await
    .problem(409, Some("id"));
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "no spaces", "name": "x"})),
    )
    .await
    .problem(422, Some("id"));
    api.admin("POST", "/v1/orgs", Some(json!({"name": ""})))
        .await
        .problem(422, Some("name"));
    api.admin("POST", "/v1/orgs", Some(json!({"name": "x", "extra": 1})))
        .await
        .problem(422, None);
    api.admin(
        "POST",
        "/v1/budgets",
        Some(json!({"scope": null, "scope_id": "acme", "period": "daily", "limit_usd": "1"})),
    )
    .await
    .problem(422, Some("scope"));
    api.admin("POST", "/v1/orgs", Some(json!({"id": 5, "name": "x"})))
        .await
        .problem(422, Some("id"));
    let generated = api
        .admin("POST", "/v1/orgs", Some(json!({"name": "Globex"})))
        .await;
    assert!(generated.json()["id"].as_str().unwrap().starts_with("org_"));
    // Found by schemathesis: optional fields accept `null` (read as absent), and the document
    // now says so (utoipa writes an optional field as `oneOf` the type or `null`).
    assert_eq!(
        document()["components"]["schemas"]["NewOrg"]["properties"]["id"]["oneOf"][1],
        json!({"type": "null"})
    );
    let null_id = api
        .admin(
            "POST",
            "/v1/orgs",
            Some(json!({"id": null, "name": "Initech"})),
        )
        .await;
    assert_eq!(null_id.status, 201, "{}", null_id.text);
    assert!(null_id.json()["id"].as_str().unwrap().starts_with("org_"));
    api.admin(
        "DELETE",
        &format!("/v1/orgs/{}", null_id.json()["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        api.admin("GET", "/v1/orgs", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api.admin("GET", "/v1/orgs/acme", None).await.json()["name"],
        "Acme"
    );
    api.admin("GET", "/v1/orgs/nope", None)
        .await
        .problem(404, None);
    let renamed = api
        .admin("PATCH", "/v1/orgs/acme", Some(json!({"name": "ACME"})))
        .await;
    assert_eq!(renamed.json()["name"], "ACME");
    api.admin("PATCH", "/v1/orgs/nope", Some(json!({"name": "x"})))
        .await
        .problem(404, None);

    let p = api
        .admin(
            "POST",
            "/v1/projects",
            Some(json!({"id": "web", "org_id": "acme", "name": "Web"})),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);
    api.admin(
        "POST",
        "/v1/projects",
        Some(json!({"id": "x", "org_id": "nope", "name": "X"})),
    )
    .await
    .problem(422, Some("org_id"));
    api.admin(
        "POST",
        "/v1/projects",
        Some(json!({"id": "web", "org_id": "acme", "name": "W"})),
    )
    .await
    .problem(409, Some("id"));
    assert_eq!(
        api.admin("GET", "/v1/projects?org_id=acme", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.admin("GET", "/v1/projects?team=1", None)
        .await
        .problem(422, Some("team"));
    assert_eq!(
        api.admin("GET", "/v1/projects/web", None).await.json()["org_id"],
        "acme"
    );
    api.admin("GET", "/v1/projects/nope", None)
        .await
        .problem(404, None);

    let u = api
        .admin(
            "POST",
            "/v1/users",
            Some(json!({"id": "alice", "org_id": "acme", "name": "Alice", "email": "a@acme.test"})),
        )
        .await;
    assert_eq!(u.status, 201, "{}", u.text);
    api.admin(
        "POST",
        "/v1/users",
        Some(json!({"org_id": "acme", "name": "Bob", "email": "nope"})),
    )
    .await
    .problem(422, Some("email"));
    assert_eq!(
        api.admin("GET", "/v1/users", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.admin("GET", "/v1/users/alice", None).await.json()["email"],
        "a@acme.test"
    );
    api.admin("GET", "/v1/users/nope", None)
        .await
        .problem(404, None);

    api.admin("DELETE", "/v1/orgs/acme", None)
        .await
        .problem(409, None);
    assert_eq!(
        api.admin("DELETE", "/v1/users/alice", None).await.status,
        204
    );
    assert_eq!(
        api.admin("DELETE", "/v1/projects/web", None).await.status,
        204
    );
    api.admin("DELETE", "/v1/projects/web", None)
        .await
        .problem(404, None);
    api.admin("DELETE", "/v1/users/alice", None)
        .await
        .problem(404, None);
    assert_eq!(api.admin("DELETE", "/v1/orgs/acme", None).await.status, 204);
}

#[tokio::test]
async fn keys_secret_shown_once_and_revocable() {
    let api = api().await;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Acme"})),
    )
    .await;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "globex", "name": "Globex"})),
    )
    .await;
    api.admin(
        "POST",
        "/v1/projects",
        Some(json!({"id": "web", "org_id": "acme", "name": "Web"})),
    )
    .await;
    let k = api
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "ci", "org_id": "acme", "project_id": "web"})),
        )
        .await;
    assert_eq!(k.status, 201, "{}", k.text);
    let k = k.json();
    let secret = k["secret"].as_str().unwrap();
    let id = k["id"].as_str().unwrap();
    assert!(secret.starts_with("tg-"));
    let listed = api.admin("GET", "/v1/keys?org_id=acme", None).await;
    assert!(
        !listed.text.contains(&secret[11..]),
        "the secret never comes back"
    );
    assert_eq!(listed.json()[0]["prefix"], &secret[..11]);
    let got = api.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert!(got.json()["secret"].is_null());
    api.admin("GET", "/v1/keys/key_nope", None)
        .await
        .problem(404, None);
    api.admin(
        "POST",
        "/v1/keys",
        Some(json!({"name": "x", "org_id": "globex", "project_id": "web"})),
    )
    .await
    .problem(422, Some("project_id"));
    api.admin(
        "POST",
        "/v1/keys",
        Some(json!({"name": "x", "org_id": "nope"})),
    )
    .await
    .problem(422, Some("org_id"));
    api.admin("GET", "/v1/keys?include_revoked=maybe", None)
        .await
        .problem(422, Some("include_revoked"));

    // The key is in the snapshot by its hash, then gone once revoked.
    let sha = tollgate_control_plane::keys::sha256_hex(secret.as_bytes());
    let snap = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    assert!(snap.text.contains(&sha));
    assert!(!snap.text.contains(&secret[3..]));
    let r = api
        .admin("POST", &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert!(r.json()["revoked_at"].is_i64());
    api.admin("POST", "/v1/keys/key_nope/revoke", None)
        .await
        .problem(404, None);
    let snap = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    assert!(!snap.text.contains(&sha));
    assert_eq!(
        api.admin("GET", "/v1/keys", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        api.admin("GET", "/v1/keys?include_revoked=true", None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `POST /v1/bulk`: every bad item named in one 422 and nothing written; then everything in
/// one transaction, the secrets in that answer only, the keys in the next snapshot; then
/// revoked in bulk and gone from it.
#[tokio::test]
async fn bulk_provisioning_is_all_or_nothing_with_per_item_errors() {
    let api = api().await;
    for (path, body) in [
        ("/v1/orgs", json!({"id": "acme", "name": "Acme"})),
        ("/v1/orgs", json!({"id": "globex", "name": "Globex"})),
        (
            "/v1/projects",
            json!({"id": "web", "org_id": "acme", "name": "Web"}),
        ),
    ] {
        assert_eq!(api.admin("POST", path, Some(body)).await.status, 201);
    }
    let version = |a: &Answer| a.headers[header::ETAG].to_str().unwrap().to_string();
    let snap0 = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;

    // Bad items in every section, found by the API's own checks (name, money, timezone, id)
    // and by the store's (references, uniqueness): all of them in one answer.
    let bad = api
        .admin(
            "POST",
            "/v1/bulk",
            Some(json!({
                "users": [
                    {"id": "bob", "org_id": "acme", "name": "Bob"},
                    {"id": "eve", "org_id": "acme", "name": "bad\u{7}name"},
                    {"id": "bob", "org_id": "acme", "name": "Bob again"},
                ],
                "keys": [
                    {"name": "ok", "org_id": "acme", "project_id": "web", "user_id": "bob"},
                    {"name": "x", "org_id": "globex", "project_id": "web"},
                    {"name": "x", "org_id": "bad id!"},
                ],
                "budgets": [
                    {"scope": "user", "scope_id": "bob", "period": "daily", "limit_usd": "5"},
                    {"scope": "org", "scope_id": "acme", "period": "daily", "limit_usd": "-1"},
                    {"scope": "org", "scope_id": "acme", "period": "weekly", "limit_usd": "5",
                     "timezone": "Mars/Olympus"},
                    {"scope": "user", "scope_id": "ghost", "period": "daily", "limit_usd": "5"},
                ],
                "revoke_keys": ["key_nope", "not an id"],
            })),
        )
        .await;
    let p = bad.problem(422, Some("users[1].name"));
    let errors: Vec<(String, String, u64)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
            (
                e["item"].as_str().unwrap().to_string(),
                e["field"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("users[1]", "users[1].name", 422),
        ("users[2]", "users[2].id", 409),
        ("keys[1]", "keys[1].project_id", 422),
        ("keys[2]", "keys[2].org_id", 422),
        ("budgets[1]", "budgets[1].limit_usd", 422),
        ("budgets[2]", "budgets[2].timezone", 422),
        ("budgets[3]", "budgets[3].scope_id", 422),
        ("revoke_keys[0]", "revoke_keys[0]", 404),
        ("revoke_keys[1]", "revoke_keys[1]", 404),
    ]
    .iter()
    .map(|(i, f, s)| (i.to_string(), f.to_string(), *s))
    .collect();
    assert_eq!(errors, expected, "{}", bad.text);
    assert!(
        p["detail"].as_str().unwrap().contains("9 of 12 items"),
        "{}",
        bad.text
    );
    // Nothing was written: no user, no key, no budget, the same snapshot.
    assert_eq!(api.admin("GET", "/v1/users", None).await.json(), json!([]));
    assert_eq!(
        api.admin("GET", "/v1/keys?include_revoked=true", None)
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        api.admin("GET", "/v1/budgets", None).await.json(),
        json!([])
    );
    let snap = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    assert_eq!(version(&snap), version(&snap0));

    // Whole-body errors stay whole-body problems.
    api.admin("POST", "/v1/bulk", Some(json!({"keys": [{"name": "x"}]})))
        .await
        .problem(422, Some("keys[0]"));
    api.admin("POST", "/v1/bulk", Some(json!({"nope": []})))
        .await
        .problem(422, None);

    // The corrected call: everything, in one transaction.
    let keys: Vec<Value> = (0..50)
        .map(|i| json!({"name": format!("k{i}"), "org_id": "acme", "user_id": "bob"}))
        .chain([json!({"name": "web", "org_id": "acme", "project_id": "web"})])
        .collect();
    let ok = api
        .admin(
            "POST",
            "/v1/bulk",
            Some(json!({
                "users": [{"id": "bob", "org_id": "acme", "name": "Bob", "email": "b@acme.test"}],
                "keys": keys,
                "budgets": [
                    {"scope": "user", "scope_id": "bob", "period": "daily", "limit_usd": "5"},
                    {"scope": "org", "scope_id": "acme", "period": "monthly", "limit_usd": "100",
                     "soft_limit_usd": "80", "timezone": "Europe/Paris"},
                ],
            })),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let done = ok.json();
    assert_eq!(done["users"][0]["id"], "bob");
    assert_eq!(done["budgets"][1]["limit_usd"], "100");
    assert_eq!(done["revoked_keys"], json!([]));
    let created = done["keys"].as_array().unwrap();
    assert_eq!(created.len(), 51);
    assert_eq!(created[50]["project_id"], "web");
    let secrets: Vec<&str> = created
        .iter()
        .map(|k| k["secret"].as_str().unwrap())
        .collect();
    assert!(secrets
        .iter()
        .all(|s| s.starts_with("tg-") && s.len() == 43));
    let listed = api.admin("GET", "/v1/keys", None).await;
    assert_eq!(listed.json().as_array().unwrap().len(), 51);
    let snap = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    assert_ne!(version(&snap), version(&snap0));
    for s in &secrets {
        assert!(
            !listed.text.contains(&s[11..]),
            "a secret comes back once only"
        );
        assert!(!snap.text.contains(&s[3..]));
        let sha = tollgate_control_plane::keys::sha256_hex(s.as_bytes());
        assert!(
            snap.text.contains(&sha),
            "a new key is usable: in the snapshot"
        );
    }
    let snapshot: Snapshot = serde_json::from_str(&snap.text).unwrap();
    assert_eq!(snapshot.keys.len(), 51);
    assert_eq!(snapshot.budgets.len(), 2);

    // Revoked in bulk: gone from the next snapshot.
    let ids: Vec<&str> = created.iter().map(|k| k["id"].as_str().unwrap()).collect();
    let r = api
        .admin("POST", "/v1/bulk", Some(json!({"revoke_keys": ids})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let revoked = r.json();
    assert_eq!(revoked["revoked_keys"].as_array().unwrap().len(), 51);
    assert!(revoked["revoked_keys"][0]["revoked_at"].is_i64());
    assert!(revoked["revoked_keys"][0].get("secret").is_none());
    let snap = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    let snapshot: Snapshot = serde_json::from_str(&snap.text).unwrap();
    assert!(snapshot.keys.is_empty());
    assert_eq!(api.admin("GET", "/v1/keys", None).await.json(), json!([]));

    // More than 100,000 items in one call is refused before anything is checked.
    let many: Vec<&str> = vec!["key_x"; 100_001];
    api.admin("POST", "/v1/bulk", Some(json!({"revoke_keys": many})))
        .await
        .problem(422, Some("body"));
}

#[tokio::test]
async fn budgets_crud_and_bad_money() {
    let api = api().await;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Acme"})),
    )
    .await;
    let body = json!({"scope": "org", "scope_id": "acme", "period": "monthly", "timezone": "Europe/Paris",
                      "limit_usd": "100", "soft_limit_usd": "80", "mode": "shadow"});
    let b = api.admin("POST", "/v1/budgets", Some(body.clone())).await;
    assert_eq!(b.status, 201, "{}", b.text);
    let b = b.json();
    assert_eq!(
        (b["limit_usd"].as_str(), b["spent_usd"].as_str()),
        (Some("100"), Some("0"))
    );
    assert_eq!(
        b["window_start"], 1_709_247_600,
        "March 1st, Paris midnight"
    );
    assert_eq!(b["window_end"], 1_711_922_400);
    let id = b["id"].as_str().unwrap().to_string();
    api.admin("POST", "/v1/budgets", Some(body.clone()))
        .await
        .problem(409, Some("period"));
    for (field, value, expect) in [
        ("limit_usd", json!("-1"), "limit_usd"),
        ("limit_usd", json!("NaN"), "limit_usd"),
        ("limit_usd", json!("1e40"), "limit_usd"),
        ("limit_usd", json!("5000000000"), "limit_usd"),
        ("limit_usd", json!(100.5), "limit_usd"),
        ("soft_limit_usd", json!("150"), "soft_limit_usd"),
        ("soft_limit_usd", json!("-3"), "soft_limit_usd"),
        ("timezone", json!("Mars/Olympus"), "timezone"),
        ("period", json!("yearly"), "period"),
        ("scope", json!("team"), "scope"),
        ("scope_id", json!(""), "scope_id"),
    ] {
        let mut bad = body.clone();
        bad[field] = value.clone();
        bad["period"] = if field == "period" {
            value
        } else {
            json!("daily")
        };
        let a = api.admin("POST", "/v1/budgets", Some(bad)).await;
        a.problem(422, Some(expect));
    }
    let list = api
        .admin("GET", "/v1/budgets?scope=org&scope_id=acme", None)
        .await;
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    api.admin("GET", "/v1/budgets?scope=team", None)
        .await
        .problem(422, Some("scope"));
    let patched = api
        .admin(
            "PATCH",
            &format!("/v1/budgets/{id}"),
            Some(json!({"limit_usd": "200", "soft_limit_usd": null, "mode": "enforce"})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let p = patched.json();
    assert_eq!(
        (p["limit_usd"].as_str(), p["mode"].as_str()),
        (Some("200"), Some("enforce"))
    );
    assert!(p["soft_limit_usd"].is_null());
    api.admin(
        "PATCH",
        &format!("/v1/budgets/{id}"),
        Some(json!({"soft_limit_usd": "300"})),
    )
    .await
    .problem(422, Some("soft_limit_usd"));
    api.admin(
        "PATCH",
        "/v1/budgets/bud_nope",
        Some(json!({"limit_usd": "1"})),
    )
    .await
    .problem(404, None);
    // Found by schemathesis: `null` was read as "unchanged" for fields that cannot be removed.
    // And `null` for an enum was a 400 "not valid JSON" (serde_json calls it a syntax error).
    for field in ["period", "timezone", "limit_usd", "mode"] {
        api.admin(
            "PATCH",
            &format!("/v1/budgets/{id}"),
            Some(json!({ field: null })),
        )
        .await
        .problem(422, Some(field));
    }
    // Found by schemathesis (seed 2): serde's derive reads a struct from an array of its
    // fields, so `[]` was a patch with every field absent, answered 200.
    api.admin("PATCH", &format!("/v1/budgets/{id}"), Some(json!([])))
        .await
        .problem(422, Some("body"));
    assert_eq!(
        api.admin("GET", &format!("/v1/budgets/{id}"), None)
            .await
            .json()["limit_usd"],
        "200"
    );
    assert_eq!(
        api.admin("DELETE", &format!("/v1/budgets/{id}"), None)
            .await
            .status,
        204
    );
    api.admin("GET", &format!("/v1/budgets/{id}"), None)
        .await
        .problem(404, None);
    api.admin("DELETE", &format!("/v1/budgets/{id}"), None)
        .await
        .problem(404, None);
}

#[tokio::test]
async fn bodies_are_checked_for_type_size_and_syntax() {
    let api = api().await;
    let req = Request::post("/v1/orgs")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    api.raw(req).await.problem(415, None);
    let req = Request::post("/v1/orgs")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": "x""#))
        .unwrap();
    api.raw(req).await.problem(400, None);
    // Every body is an object: not the array of a struct's fields serde's derive would take.
    api.admin("POST", "/v1/orgs", Some(json!([null, "Globex"])))
        .await
        .problem(422, Some("body"));
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let req = Request::post("/v1/orgs")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    let a = api.raw(req).await;
    let v = a.problem(413, None);
    assert!(v["detail"].as_str().unwrap().contains("1048576"));
}

#[tokio::test]
async fn prices_per_million_with_history_and_import() {
    let api = api().await;
    let gpt = json!({"model": "gpt-4o", "provider": "openai", "input_per_million": "2.5", "output_per_million": "10",
                     "cache_read_per_million": "1.25", "effective_from": 0});
    let p = api.admin("POST", "/v1/prices", Some(gpt.clone())).await;
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.json()["rates"]["input_per_million"], "2.5");
    api.admin("POST", "/v1/prices", Some(gpt.clone()))
        .await
        .problem(409, Some("model"));
    let mut per_token = gpt.clone();
    per_token["model"] = json!("o1");
    per_token["input_per_million"] = json!("0.0000025");
    let a = api.admin("POST", "/v1/prices", Some(per_token)).await;
    let v = a.problem(422, Some("input_per_million"));
    assert!(v["detail"].as_str().unwrap().contains("per-token"), "{v}");
    let mut huge = gpt.clone();
    huge["model"] = json!("o1");
    huge["tiers"] = json!([{"above_prompt_tokens": 200000, "input_per_million": "50000"}]);
    api.admin("POST", "/v1/prices", Some(huge))
        .await
        .problem(422, Some("tiers[0].input_per_million"));
    let mut negative = gpt.clone();
    negative["model"] = json!("o1");
    negative["output_per_million"] = json!("-1");
    api.admin("POST", "/v1/prices", Some(negative))
        .await
        .problem(422, Some("output_per_million"));
    api.admin(
        "POST",
        "/v1/prices",
        Some(json!({"input_per_million": "1", "output_per_million": "1"})),
    )
    .await
    .problem(422, Some("model"));
    // A revision, and a namespaced model name with a slash.
    let put = api
        .admin(
            "PUT",
            "/v1/prices/gpt-4o",
            Some(
                json!({"input_per_million": "3", "output_per_million": "12", "effective_from": 1}),
            ),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let gem = api
        .admin("PUT", "/v1/prices/gemini/gemini-2.5-pro", Some(json!({"input_per_million": "1.25", "output_per_million": "10", "effective_from": 0})))
        .await;
    assert_eq!(gem.json()["model"], "gemini/gemini-2.5-pro");
    api.admin(
        "PUT",
        "/v1/prices/a",
        Some(json!({"model": "b", "input_per_million": "1", "output_per_million": "1"})),
    )
    .await
    .problem(422, Some("model"));
    let detail = api.admin("GET", "/v1/prices/gpt-4o", None).await.json();
    assert_eq!(detail["history"].as_array().unwrap().len(), 2);
    assert_eq!(detail["current"]["rates"]["input_per_million"], "3");
    api.admin("GET", "/v1/prices/nope", None)
        .await
        .problem(404, None);
    let list = api.admin("GET", "/v1/prices", None).await.json();
    assert_eq!(list["models"].as_array().unwrap().len(), 2);
    let v1 = list["version"].as_u64().unwrap();
    assert_eq!(
        api.admin("DELETE", "/v1/prices/gemini/gemini-2.5-pro", None)
            .await
            .status,
        204
    );
    api.admin("DELETE", "/v1/prices/gemini/gemini-2.5-pro", None)
        .await
        .problem(404, None);
    let list = api.admin("GET", "/v1/prices", None).await.json();
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    assert!(list["version"].as_u64().unwrap() > v1);
    api.admin("GET", "/v1/prices?at=yesterday", None)
        .await
        .problem(422, Some("at"));

    // LiteLLM import: new models imported, unchanged counted, others skipped with a reason.
    let map = json!({
        "sample_spec": {"mode": "chat"},
        "claude-sonnet-4-5": {"litellm_provider": "anthropic", "mode": "chat",
                              "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
        "dall-e-3": {"mode": "image_generation", "output_cost_per_image": 0.04}
    });
    let req = Request::post("/v1/prices/import?format=litellm")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(map.to_string()))
        .unwrap();
    let r = api.raw(req).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = r.json();
    assert_eq!(r["imported"], 1);
    let skipped = each_str(&r["skipped"], "model");
    assert_eq!(skipped, ["dall-e-3", "sample_spec"]);
    let again = api
        .raw(
            Request::post("/v1/prices/import")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::from(map.to_string()))
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(
        (again["imported"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(1))
    );
    let bad = api
        .raw(
            Request::post("/v1/prices/import")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::from("[1]"))
                .unwrap(),
        )
        .await;
    bad.problem(422, Some("body"));
    let bad = api
        .raw(
            Request::post("/v1/prices/import")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    bad.problem(400, None);
    api.admin("POST", "/v1/prices/import?format=csv", Some(json!({})))
        .await
        .problem(422, Some("format"));
}

#[tokio::test]
async fn usage_snapshot_etag_and_spend() {
    let api = api().await;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Acme"})),
    )
    .await;
    let b = api
        .admin(
            "POST",
            "/v1/budgets",
            Some(json!({"scope": "org", "scope_id": "acme", "period": "daily", "limit_usd": "10"})),
        )
        .await
        .json();
    let first = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers[header::CONTENT_TYPE], "application/json");
    let etag = first.headers[header::ETAG].to_str().unwrap().to_string();
    let snap: Snapshot = serde_json::from_str(&first.text).unwrap();
    assert_eq!(etag, format!("\"{}\"", snap.version));

    // Unchanged: 304 from memory, with the same ETag.
    let req = Request::get("/v1/snapshot")
        .header(header::AUTHORIZATION, format!("Bearer {DATAPLANE}"))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let nm = api.raw(req).await;
    assert_eq!(nm.status, 304);
    assert_eq!(nm.headers[header::ETAG], etag.as_str());
    assert!(nm.text.is_empty());

    let p = principal("acme", Some("web"), None, Some("k1"));
    // Usage is posted by an enrolled reporter, with its secret.
    let enrolled = api
        .call(
            "POST",
            "/v1/reporters",
            Some(DATAPLANE),
            Some(json!({"node": "envoy-a"})),
        )
        .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    let me = enrolled.json()["reporter"].as_str().unwrap().to_string();
    let secret = enrolled.json()["secret"].as_str().unwrap().to_string();
    assert!(me.starts_with("envoy-a-") && secret.starts_with("tgr-"));
    // A poll naming the reporter, even one answered 304, is a sync: `fleet_stale` reads it.
    let req = Request::get("/v1/snapshot")
        .header(header::AUTHORIZATION, format!("Bearer {DATAPLANE}"))
        .header(header::IF_NONE_MATCH, &etag)
        .header("x-tollgate-reporter", &me)
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(req).await.status, 304);
    let mut synced = None;
    for _ in 0..250 {
        synced = with_connection!(&api.db.url(), |conn, pg| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT last_synced_at FROM reporters WHERE reporter = $1",
            )
            .bind(&me)
            .fetch_one(&mut conn)
            .await
        })
        .unwrap();
        if synced.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(synced, Some(NOW), "the poll was not recorded");
    let batch = json!({"events": [event("e1", &me, 1, NOW, &p, "1.25"), event("e2", &me, 2, NOW, &p, "0.75")]});
    let ack = api
        .call(
            "POST",
            "/v1/usage",
            Some(secret.as_str()),
            Some(batch.clone()),
        )
        .await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(
        ack.json(),
        json!({"accepted": 2, "duplicate": 0, "conflict": 0})
    );
    let ack = api
        .call("POST", "/v1/usage", Some(ADMIN), Some(batch))
        .await;
    assert_eq!(
        ack.json(),
        json!({"accepted": 0, "duplicate": 2, "conflict": 0}),
        "admin token works on the data plane"
    );

    // Changed: the old ETag gets the new document.
    let req = Request::get("/v1/snapshot")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let next = api.raw(req).await;
    assert_eq!(next.status, 200);
    let snap2: Snapshot = serde_json::from_str(&next.text).unwrap();
    assert!(snap2.version > snap.version);
    assert_eq!(snap2.budgets[0].spent_usd, d("2.00"));
    assert_eq!(snap2.reporters[&me], 2);
    assert_eq!(
        snap2.reporters.len(),
        1,
        "a reporter sees its own acknowledgement only"
    );
    let public = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
    let public: Snapshot = serde_json::from_str(&public.text).unwrap();
    assert_eq!(public.version, snap2.version);
    assert!(
        public.reporters.is_empty(),
        "the data-plane token sees no reporter"
    );
    let budget = api
        .admin(
            "GET",
            &format!("/v1/budgets/{}", b["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(budget["spent_usd"], "2.00");

    // Bad batches are refused whole, naming the event and field.
    let mut bad = event("e3", &me, 3, NOW, &p, "1");
    bad.cost.total = d("2");
    api.call(
        "POST",
        "/v1/usage",
        Some(secret.as_str()),
        Some(json!({"events": [bad]})),
    )
    .await
    .problem(422, Some("events[0].cost.total"));
    let mut v = serde_json::to_value(event("e3", &me, 3, NOW, &p, "1")).unwrap();
    v["cost"]["total"] = json!("NaN");
    api.call(
        "POST",
        "/v1/usage",
        Some(secret.as_str()),
        Some(json!({"events": [v]})),
    )
    .await
    .problem(422, Some("events[0].cost.total"));
    let future = event("e4", &me, 4, NOW + 3 * DAY, &p, "1");
    api.call(
        "POST",
        "/v1/usage",
        Some(secret.as_str()),
        Some(json!({"events": [future]})),
    )
    .await
    .problem(422, Some("events[0].ts"));
    let many: Vec<_> = (0..10_001)
        .map(|i| event(&format!("m{i}"), &me, i + 1, NOW, &p, "0"))
        .collect();
    api.call(
        "POST",
        "/v1/usage",
        Some(secret.as_str()),
        Some(json!({"events": many})),
    )
    .await
    .problem(422, Some("events"));
    api.call(
        "POST",
        "/v1/usage",
        Some(secret.as_str()),
        Some(json!({"events": "x"})),
    )
    .await
    .problem(422, Some("events"));

    // Spend: JSON and CSV.
    let s = api
        .admin(
            "GET",
            "/v1/spend?scope=org&scope_id=acme&group_by=day,model",
            None,
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    let s = s.json();
    assert_eq!(s["total_usd"], "2");
    assert_eq!(
        s["rows"][0]["group"],
        json!({"day": "2024-03-15", "model": "gpt-4o"})
    );
    let req = Request::get(
        "/v1/spend?group_by=scope&scope=project&scope_id=web&from=2024-03-15&to=2024-03-16",
    )
    .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
    .header(header::ACCEPT, "text/csv")
    .body(Body::empty())
    .unwrap();
    let csv = api.raw(req).await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text,
        "project,requests,input_tokens,output_tokens,cost_usd\nweb,2,2000,20,2\n"
    );
    api.admin("GET", "/v1/spend?scope=org", None)
        .await
        .problem(422, Some("scope_id"));
    api.admin("GET", "/v1/spend?group_by=week", None)
        .await
        .problem(422, Some("group_by"));
    api.admin("GET", "/v1/spend?from=soon", None)
        .await
        .problem(422, Some("from"));
    api.admin("GET", "/v1/spend?tz=Nowhere", None)
        .await
        .problem(422, Some("tz"));

    let m = api.call("GET", "/metrics", None, None).await.text;
    assert!(m.contains("tollgate_usage_events_accepted_total 2"), "{m}");
    assert!(m.contains("tollgate_usage_events_duplicate_total 2"), "{m}");
    assert!(
        m.contains(r#"tollgate_http_requests_total{route="/v1/usage",status="200"} 2"#),
        "{m}"
    );
    assert!(m.contains("tollgate_snapshot_not_modified_total 2"), "{m}");
    assert!(
        m.contains(&format!("tollgate_snapshot_version {}", snap2.version)),
        "{m}"
    );
}

#[tokio::test]
async fn cost_quote_uses_the_snapshot_prices() {
    let api = api().await;
    api.admin("POST", "/v1/prices", Some(json!({"model": "gpt-4o", "input_per_million": "2.5", "output_per_million": "10", "effective_from": 0})))
        .await;
    let q = api
        .admin(
            "POST",
            "/v1/cost/quote",
            Some(json!({"model": "gpt-4o-2024-08-06",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})),
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.text);
    let q = q.json();
    assert_eq!(q["priced_as"], "gpt-4o");
    assert_eq!(q["usage_format"], "open_ai_chat");
    assert_eq!(q["total_usd"], "0.0035");
    assert_eq!(q["cost"]["output"], "0.001");
    let normalised = api
        .admin(
            "POST",
            "/v1/cost/quote",
            Some(json!({"model": "gpt-4o", "usage": {"input_uncached": 1000000}})),
        )
        .await
        .json();
    assert_eq!(normalised["total_usd"], "2.5");
    api.admin(
        "POST",
        "/v1/cost/quote",
        Some(json!({"model": "nope", "usage": {"input_uncached": 1}})),
    )
    .await
    .problem(422, Some("model"));
    api.admin(
        "POST",
        "/v1/cost/quote",
        Some(json!({"model": "gpt-4o", "usage": {"tokens": "many"}})),
    )
    .await
    .problem(422, Some("usage"));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let api = api().await;
    assert_eq!(
        api.call("GET", "/healthz", None, None).await.json()["status"],
        "ok"
    );
    let r = api.call("GET", "/readyz", None, None).await.json();
    assert_eq!(
        (r["status"].as_str(), r["database"].as_str()),
        (Some("ready"), Some("sqlite"))
    );
    let m = api.call("GET", "/metrics", None, None).await;
    assert!(m.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(m
        .text
        .contains("# TYPE tollgate_snapshot_build_seconds_last gauge"));
    api.state.store.close().await;
    api.call("GET", "/readyz", None, None)
        .await
        .problem(503, None);
}

/// `/metrics` in the Prometheus text format 0.0.4: every sample belongs to a family that has
/// a `# HELP` and a `# TYPE` (a counter's family named with its `_total`, a histogram's
/// samples its `_bucket`, `_sum` and `_count`), and API latency is a histogram by method and
/// route template, never by raw path or an arbitrary method.
#[tokio::test]
async fn metrics_are_typed_families_with_latency_by_route() {
    let api = api().await;
    api.admin("GET", "/v1/keys/key_nope_1", None)
        .await
        .problem(404, None);
    api.admin("GET", "/v1/keys/key_nope_2", None)
        .await
        .problem(404, None);
    api.call("BREW", "/nowhere-raw", None, None).await;
    let m = api.call("GET", "/metrics", None, None).await.text;
    assert!(
        m.contains(
            r#"tollgate_http_request_duration_seconds_count{method="GET",route="/v1/keys/{id}"} 2"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"tollgate_http_request_duration_seconds_bucket{method="GET",route="/v1/keys/{id}",le="+Inf"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"tollgate_http_request_duration_seconds_count{method="other",route="unmatched"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"tollgate_http_requests_total{route="/v1/keys/{id}",status="404"} 2"#),
        "{m}"
    );
    for raw in ["key_nope", "nowhere-raw", "BREW"] {
        assert!(!m.contains(raw), "{raw} in a label:\n{m}");
    }
    assert!(m.contains("# TYPE tollgate_http_request_duration_seconds histogram"));
    assert!(m.contains("# TYPE tollgate_http_requests_total counter"));
    assert!(m.contains("# TYPE tollgate_snapshot_version gauge"));

    let mut helped = BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    for line in m.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty() && !help.ends_with(".."), "{line}");
            assert!(helped.insert(name.to_string()), "{name} helped twice");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "no HELP before {line}");
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "{name} typed twice"
            );
        } else if !line.is_empty() {
            assert!(!line.starts_with('#'), "{line}");
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            let kind = typed
                .get(family)
                .unwrap_or_else(|| panic!("{name} has no # TYPE before it:\n{m}"));
            if kind == "counter" {
                assert!(family.ends_with("_total"), "{line}");
            }
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}

/// The same app over a real socket, as Envoy's sync service and the CLI reach it.
#[tokio::test]
async fn serves_over_a_real_listener() {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(api.state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}");
    let h = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let snap = client
        .get(format!("{url}/v1/snapshot"))
        .bearer_auth(DATAPLANE)
        .send()
        .await
        .unwrap();
    assert_eq!(snap.status(), 200);
    let etag = snap.headers()[header::ETAG.as_str()]
        .to_str()
        .unwrap()
        .to_string();
    let again = client
        .request(Method::GET, format!("{url}/v1/snapshot"))
        .bearer_auth(DATAPLANE)
        .header(header::IF_NONE_MATCH.as_str(), etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let denied = client
        .get(format!("{url}/v1/budgets"))
        .bearer_auth(DATAPLANE)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    server.abort();
}

/// Issue 13 item 10: money strings the published pattern forbids, a 31-digit amount, an
/// absurd `max_output_tokens` and a LiteLLM entry off by 10⁶ are refused (each accepted before).
#[tokio::test]
async fn validation_gaps_are_closed() {
    let api = api().await;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "acme", "name": "Acme"})),
    )
    .await;
    for bad in ["1e5", "+1", ".5", "1234567890123456789012345678901"] {
        api.admin(
            "POST",
            "/v1/budgets",
            Some(json!({"scope": "org", "scope_id": "acme", "period": "daily", "limit_usd": bad})),
        )
        .await
        .problem(422, Some("limit_usd"));
        api.admin(
            "PUT",
            "/v1/prices/gpt-x",
            Some(json!({"input_per_million": bad, "output_per_million": "1"})),
        )
        .await
        .problem(422, Some("input_per_million"));
    }
    api.admin(
        "PUT",
        "/v1/prices/gpt-x",
        Some(json!({"input_per_million": "1", "output_per_million": "1",
                    "max_output_tokens": 9_223_372_036_854_775_808u64})),
    )
    .await
    .problem(422, Some("max_output_tokens"));
    let ok = api
        .admin(
            "PUT",
            "/v1/prices/gpt-x",
            Some(
                json!({"input_per_million": "2.5", "output_per_million": "10",
                        "max_output_tokens": 10_000_000}),
            ),
        )
        .await;
    assert!(ok.status.is_success(), "{}", ok.text);
    // PATCH reads money with the same parser.
    let b = api
        .admin(
            "POST",
            "/v1/budgets",
            Some(json!({"scope": "org", "scope_id": "acme", "period": "daily", "limit_usd": "1"})),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.text);
    let id = b.json()["id"].as_str().unwrap().to_string();
    for (field, bad) in [("limit_usd", "1e5"), ("soft_limit_usd", ".5")] {
        api.admin(
            "PATCH",
            &format!("/v1/budgets/{id}"),
            Some(json!({field: bad})),
        )
        .await
        .problem(422, Some(field));
    }
    // A budget on a scope that does not exist: 422 naming it, unless asked for explicitly
    // (a principal only a trusted header will name).
    for scope in ["org", "project", "user", "key"] {
        let a = api
            .admin(
                "POST",
                "/v1/budgets",
                Some(json!({"scope": scope, "scope_id": "nobody", "period": "daily", "limit_usd": "1"})),
            )
            .await;
        a.problem(422, Some("scope_id"));
        assert!(a.text.contains("nobody"), "{}", a.text);
    }
    let explicit = api
        .admin(
            "POST",
            "/v1/budgets",
            Some(
                json!({"scope": "user", "scope_id": "jwt-sub-42", "period": "daily",
                        "limit_usd": "1", "allow_unregistered": true}),
            ),
        )
        .await;
    assert_eq!(explicit.status, 201, "{}", explicit.text);
    // 1 USD per token through the import: skipped with the reason, like PUT refuses it.
    let map = json!({
        "dear": {"litellm_provider": "openai", "mode": "chat",
                 "input_cost_per_token": 1.0, "output_cost_per_token": 1.0},
        "fine": {"litellm_provider": "openai", "mode": "chat",
                 "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}
    });
    let report = api
        .admin("POST", "/v1/prices/import", Some(map))
        .await
        .json();
    assert_eq!(report["imported"], 1, "{report}");
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["model"] == "dear" && s["reason"].as_str().unwrap().contains("per_million")),
        "{report}"
    );
}

/// Issue 13 item 6 at the router: usage only under the authenticated reporter, conflicts
/// refused and counted, the cost checked against the control plane's own price, and the
/// served/requested models in the ledger answer.
#[tokio::test]
async fn usage_is_posted_only_as_oneself_and_conflicts_are_counted() {
    let api = api().await;
    api.admin("POST", "/v1/prices", Some(json!({"model": "gpt-4o", "input_per_million": "2.5", "output_per_million": "10", "effective_from": 0})))
        .await;
    let snap = api
        .call("GET", "/v1/snapshot", Some(DATAPLANE), None)
        .await
        .json();
    let book_version = snap["prices"]["version"].as_u64().unwrap();
    let enroll = |node: &'static str| {
        let api = &api;
        async move {
            let a = api
                .call(
                    "POST",
                    "/v1/reporters",
                    Some(DATAPLANE),
                    Some(json!({"node": node})),
                )
                .await;
            assert_eq!(a.status, 201, "{}", a.text);
            let v = a.json();
            (
                v["reporter"].as_str().unwrap().to_string(),
                v["secret"].as_str().unwrap().to_string(),
            )
        }
    };
    let (a, a_secret) = enroll("envoy-a").await;
    let (_b, b_secret) = enroll("envoy-b").await;
    let p = principal("acme", None, None, None);
    // gpt-4o: 1000 input tokens × 2.5/M + 10 output × 10/M = 0.0026.
    let mut right = event(&format!("{a}-1"), &a, 1, NOW, &p, "0.0026");
    right.price_version = book_version;
    right.requested_model = Some("gpt-4o-2024-08-06".into());
    let mut wrong = event(&format!("{a}-2"), &a, 2, NOW, &p, "0.0001");
    wrong.price_version = book_version;
    let batch = json!({"events": [right.clone(), wrong.clone()]});
    // The data-plane token may not post; another reporter may not post a's events.
    api.call("POST", "/v1/usage", Some(DATAPLANE), Some(batch.clone()))
        .await
        .problem(403, None);
    api.call("POST", "/v1/usage", Some(&b_secret), Some(batch.clone()))
        .await
        .problem(403, None);
    api.call(
        "POST",
        "/v1/usage",
        Some("tgr-not-a-secret-0000"),
        Some(batch.clone()),
    )
    .await
    .problem(403, None);
    // The data-plane token with another reporter's secret, or an unknown one, in the body
    // (how the filter posts): refused too.
    for secret in [b_secret.as_str(), "tgr-not-a-secret-0000", DATAPLANE] {
        let mut with = batch.clone();
        with["reporter_secret"] = json!(secret);
        api.call("POST", "/v1/usage", Some(DATAPLANE), Some(with))
            .await
            .problem(403, None);
    }
    // With a's secret in the body: a's events are stored.
    let mut with = batch.clone();
    with["reporter_secret"] = json!(a_secret);
    let ack = api
        .call("POST", "/v1/usage", Some(DATAPLANE), Some(with))
        .await;
    assert_eq!(
        ack.json(),
        json!({"accepted": 2, "duplicate": 0, "conflict": 0})
    );
    // As the bearer, the same batch again: duplicates.
    let ack = api
        .call("POST", "/v1/usage", Some(&a_secret), Some(batch))
        .await;
    assert_eq!(
        ack.json(),
        json!({"accepted": 0, "duplicate": 2, "conflict": 0})
    );
    let mut changed = right.clone();
    changed.cost.input = d("0");
    changed.cost.total = d("0");
    let ack = api
        .call(
            "POST",
            "/v1/usage",
            Some(&a_secret),
            Some(json!({"events": [right, changed]})),
        )
        .await;
    assert_eq!(
        ack.json(),
        json!({"accepted": 0, "duplicate": 1, "conflict": 1})
    );
    let rows = api
        .admin("GET", &format!("/v1/usage/events?reporter={a}"), None)
        .await
        .json();
    let by_id = |id: String| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    let r1 = by_id(format!("{a}-1"));
    assert_eq!(r1["cost_check"], "match");
    assert_eq!(r1["requested_model"], "gpt-4o-2024-08-06");
    assert_eq!(r1["cost_usd"], "0.0026", "the first content stays");
    assert_eq!(by_id(format!("{a}-2"))["cost_check"], "mismatch");
    let m = api.call("GET", "/metrics", None, None).await.text;
    assert!(m.contains("tollgate_usage_events_conflict_total 1"), "{m}");
    assert!(
        m.contains("tollgate_usage_events_cost_mismatch_total 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_usage_refused_total{reason=\"foreign_reporter\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_usage_refused_total{reason=\"not_enrolled\"} 3"),
        "{m}"
    );
    assert!(!m.contains(&a_secret));
    // Each reporter's snapshot shows only its own acknowledgement.
    let sa = api
        .call("GET", "/v1/snapshot", Some(&a_secret), None)
        .await
        .json();
    assert_eq!(sa["reporters"], json!({a.clone(): 2}));
    let sb = api
        .call("GET", "/v1/snapshot", Some(&b_secret), None)
        .await
        .json();
    assert_eq!(sb["reporters"], json!({}));
}

/// Service-tier, audio and web-search rates set through `POST /v1/prices` (a provider's
/// published rates where the LiteLLM map has none), shown back, and priced by the quote.
#[tokio::test]
async fn prices_take_tier_audio_and_search_rates() {
    let api = api().await;
    let price = json!({"model": "gpt-x", "input_per_million": "2", "output_per_million": "8",
        "effective_from": 0, "input_audio_per_million": "40", "output_audio_per_million": "80",
        "service_tiers": {"priority": {"input_per_million": "4", "output_per_million": "16"},
                          "flex": {"input_per_million": "1"}},
        "web_search_per_call": {"low": "0.025", "medium": "0.0275", "high": "0.03"}});
    let r = api.admin("POST", "/v1/prices", Some(price.clone())).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    let shown = api.admin("GET", "/v1/prices/gpt-x", None).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    let v = shown.json();
    let p = &v["current"];
    assert_eq!(
        p["service_tiers"]["priority"]["output_per_million"], "16",
        "{v}"
    );
    assert_eq!(p["rates"]["input_audio_per_million"], "40", "{v}");
    assert_eq!(p["web_search_per_call"]["high"], "0.03", "{v}");
    // 1000 in × 4/M + 100 out × 16/M at priority, two searches at the high context.
    let q = api
        .admin(
            "POST",
            "/v1/cost/quote",
            Some(
                json!({"model": "gpt-x", "usage": {"input_uncached": 1000, "output": 100,
                "service_tier": "priority", "web_searches": 2, "search_context": "high"}}),
            ),
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.text);
    let q = q.json();
    assert_eq!(q["total_usd"], "0.0656", "{q}");
    assert_eq!(q["cost"]["web_search"], "0.06", "{q}");
    // Refused, naming the field: a fee per 1,000 searches given per search, the standard
    // tier as an override, a tier rate off by 10^6.
    for (bad, field) in [
        (
            json!({"web_search_per_call": {"low": "10", "medium": "10", "high": "10"}}),
            "web_search_per_call.low",
        ),
        (
            json!({"service_tiers": {"standard": {"input_per_million": "3"}}}),
            "service_tiers.standard",
        ),
        (
            json!({"service_tiers": {"priority": {"input_per_million": "0.0000004"}}}),
            "service_tiers.priority.input_per_million",
        ),
    ] {
        let mut body = price.clone();
        body["model"] = json!(format!("gpt-bad-{field}"));
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = api.admin("POST", "/v1/prices", Some(body)).await;
        assert_eq!(r.status, 422, "{field}: {}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
}

/// The snapshot is marked dirty by the store when a write commits, so a write that does not
/// come through a handler (ingestion, the CLI in process, a store call) is in the next poll;
/// a write that changes nothing the snapshot shows does not bump its version.
#[tokio::test]
async fn writes_through_the_store_are_in_the_next_snapshot() {
    use tollgate_control_plane::store::budgets::NewBudget;
    use tollgate_control_plane::store::keys::NewKey;
    use tollgate_control_plane::timezone::Zone;
    use tollgate_core::budget::{Mode, Period, Scope};

    let api = api().await;
    let snapshot = || async {
        let a = api.call("GET", "/v1/snapshot", Some(DATAPLANE), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        serde_json::from_str::<Snapshot>(&a.text).unwrap()
    };
    let store = &api.state.store;
    store.create_org("acme", "Acme", NOW).await.unwrap();
    let v0 = snapshot().await.version;

    let key = store
        .create_key(
            &NewKey {
                name: "ci".into(),
                org_id: "acme".into(),
                project_id: None,
                user_id: None,
            },
            NOW,
        )
        .await
        .unwrap();
    let s = snapshot().await;
    assert!(s.version > v0);
    assert_eq!(s.keys.len(), 1);

    let budget = store
        .create_budget(
            &NewBudget {
                scope: Scope::Org,
                scope_id: "acme".into(),
                period: Period::Daily,
                timezone: Zone::parse("UTC").unwrap(),
                limit_usd: d("10"),
                soft_limit_usd: None,
                mode: Mode::Enforce,
            },
            NOW,
        )
        .await
        .unwrap();
    let s = snapshot().await;
    assert_eq!(s.budgets.len(), 1);
    assert_eq!(s.budgets[0].id, budget.id);

    store.revoke_key(&key.key.id, NOW).await.unwrap();
    let s = snapshot().await;
    assert!(s.keys.is_empty());
    let v1 = s.version;

    store.delete_budget(&budget.id).await.unwrap();
    let s = snapshot().await;
    assert!(s.budgets.is_empty());
    assert!(s.version > v1);

    // A tenant write is not in the snapshot: same version.
    let v2 = s.version;
    api.admin(
        "POST",
        "/v1/orgs",
        Some(json!({"id": "globex", "name": "Globex"})),
    )
    .await;
    assert_eq!(snapshot().await.version, v2);
}

/// The OpenAPI document's operations and their security, frozen as the hand-written document
/// (issue 19) had them plus the API tokens of issue 16 (the `token` scheme, whose role names
/// say who may call; `/v1/tokens`, `/v1/audit`): a document generated from the types must keep
/// exactly this set, each operation's security alternatives (order aside) and the four bearer
/// schemes.
#[tokio::test]
async fn openapi_operations_and_security_are_the_frozen_set() {
    const ADMIN: &[&str] = &["admin", "token:admin"];
    const READ: &[&str] = &["admin", "token:admin", "token:manager", "token:viewer"];
    const ORG_READ: &[&str] = &[
        "admin",
        "token:admin",
        "token:manager@org",
        "token:viewer@org",
    ];
    const ORG_WRITE: &[&str] = &["admin", "token:admin", "token:manager@org"];
    const DATA: &[&str] = &["admin", "dataplane", "reporter", "token:admin"];
    const FROZEN: &[(&str, &str, &[&str])] = &[
        ("GET", "/healthz", &[]),
        ("GET", "/metrics", &[]),
        ("GET", "/openapi.json", &[]),
        ("GET", "/readyz", &[]),
        ("GET", "/v1/alerts/deliveries", ORG_READ),
        ("GET", "/v1/alerts/webhooks", ORG_READ),
        ("POST", "/v1/alerts/webhooks", ORG_WRITE),
        ("GET", "/v1/alerts/webhooks/{id}", ORG_READ),
        ("PATCH", "/v1/alerts/webhooks/{id}", ORG_WRITE),
        ("DELETE", "/v1/alerts/webhooks/{id}", ORG_WRITE),
        ("GET", "/v1/audit", ORG_READ),
        ("GET", "/v1/budgets", ORG_READ),
        ("POST", "/v1/budgets", ORG_WRITE),
        ("DELETE", "/v1/budgets/{id}", ORG_WRITE),
        ("POST", "/v1/bulk", ADMIN),
        ("GET", "/v1/budgets/{id}", ORG_READ),
        ("GET", "/v1/budgets/{id}/denials", ORG_READ),
        ("PATCH", "/v1/budgets/{id}", ORG_WRITE),
        ("POST", "/v1/cost/quote", READ),
        ("GET", "/v1/keys", ORG_READ),
        ("POST", "/v1/keys", ORG_WRITE),
        ("GET", "/v1/keys/{id}", ORG_READ),
        ("POST", "/v1/keys/{id}/revoke", ORG_WRITE),
        ("GET", "/v1/orgs", ORG_READ),
        ("POST", "/v1/orgs", ADMIN),
        ("DELETE", "/v1/orgs/{id}", ADMIN),
        ("GET", "/v1/orgs/{id}", ORG_READ),
        ("PATCH", "/v1/orgs/{id}", ORG_WRITE),
        ("GET", "/v1/prices", READ),
        ("POST", "/v1/prices", ADMIN),
        ("POST", "/v1/prices/import", ADMIN),
        ("DELETE", "/v1/prices/{model}", ADMIN),
        ("GET", "/v1/prices/{model}", READ),
        ("PUT", "/v1/prices/{model}", ADMIN),
        ("GET", "/v1/metrics/budgets", ADMIN),
        ("GET", "/v1/projects", ORG_READ),
        ("POST", "/v1/projects", ORG_WRITE),
        ("DELETE", "/v1/projects/{id}", ORG_WRITE),
        ("GET", "/v1/projects/{id}", ORG_READ),
        ("POST", "/v1/reporters", DATA),
        ("GET", "/v1/snapshot", DATA),
        ("GET", "/v1/spend", ORG_READ),
        ("GET", "/v1/tokens", ADMIN),
        ("POST", "/v1/tokens", ADMIN),
        ("GET", "/v1/tokens/{id}", ADMIN),
        ("POST", "/v1/tokens/{id}/revoke", ADMIN),
        ("POST", "/v1/usage", DATA),
        ("GET", "/v1/usage/events", ADMIN),
        ("GET", "/v1/users", ORG_READ),
        ("POST", "/v1/users", ORG_WRITE),
        ("DELETE", "/v1/users/{id}", ORG_WRITE),
        ("GET", "/v1/users/{id}", ORG_READ),
    ];
    let api = api().await;
    let d = api.call("GET", "/openapi.json", None, None).await.json();
    let mut served = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut security: Vec<String> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no security"))
                .iter()
                .map(|alt| {
                    let alt = alt.as_object().unwrap();
                    assert!(alt.len() <= 1, "{method} {path}: {alt:?}");
                    let (name, roles) = alt.iter().next().unwrap();
                    match roles.as_array().unwrap().as_slice() {
                        [] => name.clone(),
                        [role] => format!("{name}:{}", role.as_str().unwrap()),
                        more => panic!("{method} {path}: {more:?}"),
                    }
                })
                .collect();
            security.sort();
            served.insert((method.to_uppercase(), path.clone(), security));
        }
    }
    let frozen: BTreeSet<_> = FROZEN
        .iter()
        .map(|(m, p, s)| {
            (
                m.to_string(),
                p.to_string(),
                s.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(served, frozen);
    for scheme in ["admin", "dataplane", "reporter", "token"] {
        let s = &d["components"]["securitySchemes"][scheme];
        assert_eq!(
            (s["type"].as_str(), s["scheme"].as_str()),
            (Some("http"), Some("bearer")),
            "{scheme}"
        );
    }
    assert_eq!(
        d["components"]["securitySchemes"]
            .as_object()
            .unwrap()
            .len(),
        4
    );
}

/// Who calls, in the route walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    AdminEnv,
    AdminToken,
    ManagerA,
    ViewerA,
}

/// Whether `who` may call a route of `access` on an object of org B (`of_b`; false for org A
/// or a route that names no organisation): the rules of `http/auth.rs`, restated.
fn may(access: Access, who: Who, of_b: bool) -> bool {
    let admin = matches!(who, Who::AdminEnv | Who::AdminToken);
    match access {
        Access::Public | Access::Read => true,
        Access::DataPlane | Access::Reporter | Access::Admin => admin,
        Access::OrgRead => admin || !of_b,
        Access::OrgWrite => admin || (who == Who::ManagerA && !of_b),
    }
}

/// The objects of one organisation the walk acts on.
struct Objects {
    org: &'static str,
    project: String,
    user: String,
    key: String,
    budget: String,
    token: String,
    webhook: String,
}

async fn objects(api: &Api, org: &'static str) -> Objects {
    let ok = |a: Answer| {
        assert!(a.status.is_success(), "{}", a.text);
        a.json()
    };
    for id in [
        org.to_string(),
        format!("{org}-spare0"),
        format!("{org}-spare1"),
    ] {
        ok(api
            .admin("POST", "/v1/orgs", Some(json!({"id": id, "name": org})))
            .await);
    }
    let project = format!("{org}-p");
    let user = format!("{org}-u");
    for id in [project.clone(), format!("{project}-spare")] {
        ok(api
            .admin(
                "POST",
                "/v1/projects",
                Some(json!({"id": id, "org_id": org, "name": "P"})),
            )
            .await);
    }
    for id in [user.clone(), format!("{user}-spare")] {
        ok(api
            .admin(
                "POST",
                "/v1/users",
                Some(json!({"id": id, "org_id": org, "name": "U"})),
            )
            .await);
    }
    // The key holds the project and the user: deleting them is a 409, so they stay.
    let key = ok(api
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"name": "k", "org_id": org, "project_id": project, "user_id": user})),
        )
        .await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let budget = ok(api
        .admin(
            "POST",
            "/v1/budgets",
            Some(json!({"scope": "org", "scope_id": org, "period": "monthly", "limit_usd": "100"})),
        )
        .await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = ok(api
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "object", "role": "viewer", "org_id": org})),
        )
        .await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let webhook = ok(api
        .admin(
            "POST",
            "/v1/alerts/webhooks",
            Some(json!({"org_id": org, "url": "http://127.0.0.1:9/hook"})),
        )
        .await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    Objects {
        org,
        project,
        user,
        key,
        budget,
        token,
        webhook,
    }
}

/// The request the walk sends to a route for organisation `o` (`n` makes created ids
/// unique), and whether it names that organisation. `None`: the route has no fixture — a
/// new route must get one, and with it a checked rule.
fn fixture(
    method: &str,
    path: &str,
    o: &Objects,
    n: usize,
) -> Option<(String, Option<Value>, bool)> {
    let org = o.org;
    let none = |p: &str| Some((p.to_string(), None, false));
    let mine = |p: String, body: Option<Value>| Some((p, body, true));
    let price = json!({"input_per_million": "1", "output_per_million": "2", "effective_from": 0});
    match (method, path) {
        ("GET", "/healthz" | "/readyz" | "/metrics" | "/openapi.json") => none(path),
        ("GET", "/v1/snapshot" | "/v1/usage/events" | "/v1/metrics/budgets") => none(path),
        ("GET", "/v1/orgs" | "/v1/prices" | "/v1/tokens") => none(path),
        ("POST", "/v1/usage") => Some((path.into(), Some(json!({"events": []})), false)),
        ("POST", "/v1/reporters") => Some((path.into(), Some(json!({"node": "walk"})), false)),
        ("POST", "/v1/orgs") => Some((
            path.into(),
            Some(json!({"id": format!("new{n}"), "name": "N"})),
            false,
        )),
        ("GET", "/v1/orgs/{id}") => mine(format!("/v1/orgs/{org}"), None),
        // Of an organisation nothing references yet (the first admin call deletes it).
        ("DELETE", "/v1/orgs/{id}") => mine(format!("/v1/orgs/{org}-spare{}", n % 2), None),
        ("PATCH", "/v1/orgs/{id}") => mine(
            format!("/v1/orgs/{org}"),
            Some(json!({"name": format!("R{n}")})),
        ),
        ("GET", "/v1/projects" | "/v1/users" | "/v1/keys" | "/v1/audit") => {
            mine(format!("{path}?org_id={org}"), None)
        }
        ("POST", "/v1/projects" | "/v1/users") => mine(
            path.into(),
            Some(json!({"id": format!("{org}-new{n}"), "org_id": org, "name": "N"})),
        ),
        ("GET", "/v1/projects/{id}") => mine(format!("/v1/projects/{}", o.project), None),
        ("GET", "/v1/users/{id}") => mine(format!("/v1/users/{}", o.user), None),
        ("DELETE", "/v1/projects/{id}") => mine(format!("/v1/projects/{}-spare", o.project), None),
        ("DELETE", "/v1/users/{id}") => mine(format!("/v1/users/{}-spare", o.user), None),
        ("POST", "/v1/keys") => mine(path.into(), Some(json!({"name": "k", "org_id": org}))),
        ("GET", "/v1/keys/{id}") => mine(format!("/v1/keys/{}", o.key), None),
        ("POST", "/v1/keys/{id}/revoke") => mine(format!("/v1/keys/{}/revoke", o.key), None),
        ("POST", "/v1/bulk") => mine(
            path.into(),
            Some(json!({"users": [{"id": format!("{org}-bulk{n}"), "org_id": org, "name": "B"}]})),
        ),
        ("GET", "/v1/budgets" | "/v1/spend") => {
            mine(format!("{path}?scope=org&scope_id={org}"), None)
        }
        ("POST", "/v1/budgets") => mine(
            path.into(),
            Some(
                json!({"scope": "user", "scope_id": o.user, "period": "daily", "limit_usd": format!("{n}")}),
            ),
        ),
        ("GET" | "DELETE", "/v1/budgets/{id}") => mine(format!("/v1/budgets/{}", o.budget), None),
        ("GET", "/v1/budgets/{id}/denials") => {
            mine(format!("/v1/budgets/{}/denials", o.budget), None)
        }
        ("PATCH", "/v1/budgets/{id}") => mine(
            format!("/v1/budgets/{}", o.budget),
            Some(json!({"limit_usd": format!("{}", n + 1)})),
        ),
        ("POST", "/v1/prices") => {
            let mut p = price;
            p["model"] = json!(format!("m{n}"));
            Some((path.into(), Some(p), false))
        }
        ("POST", "/v1/prices/import") => Some((
            path.into(),
            Some(
                json!({format!("imported-{n}"): {"litellm_provider": "openai", "mode": "chat",
                        "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}),
            ),
            false,
        )),
        ("GET" | "DELETE", "/v1/prices/{*model}") => none("/v1/prices/walk"),
        ("PUT", "/v1/prices/{*model}") => Some(("/v1/prices/walk".into(), Some(price), false)),
        ("POST", "/v1/cost/quote") => Some((
            path.into(),
            Some(
                json!({"model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}),
            ),
            false,
        )),
        ("POST", "/v1/tokens") => mine(
            path.into(),
            Some(json!({"name": "t", "role": "viewer", "org_id": org})),
        ),
        ("GET", "/v1/tokens/{id}") => mine(format!("/v1/tokens/{}", o.token), None),
        ("POST", "/v1/tokens/{id}/revoke") => mine(format!("/v1/tokens/{}/revoke", o.token), None),
        ("GET", "/v1/alerts/webhooks" | "/v1/alerts/deliveries") => {
            mine(format!("{path}?org_id={org}"), None)
        }
        ("POST", "/v1/alerts/webhooks") => mine(
            path.into(),
            Some(json!({"org_id": org, "url": format!("http://127.0.0.1:9/{n}")})),
        ),
        ("GET" | "DELETE", "/v1/alerts/webhooks/{id}") => {
            mine(format!("/v1/alerts/webhooks/{}", o.webhook), None)
        }
        ("PATCH", "/v1/alerts/webhooks/{id}") => mine(
            format!("/v1/alerts/webhooks/{}", o.webhook),
            Some(json!({"name": format!("w{n}"), "thresholds": [n % 100 + 1]})),
        ),
        _ => None,
    }
}

async fn latest_audit(api: &Api) -> Option<(i64, String)> {
    let q = AuditQuery {
        limit: 1,
        ..AuditQuery::default()
    };
    let rows = api.state.store.audit_log(&q).await.unwrap();
    rows.first().map(|e| (e.id, e.actor.clone()))
}

/// Every route of the table, with every role and scope: the environment's admin token, an
/// admin API token, a manager and a viewer of org A, each against org A's objects and org B's.
/// Allowed calls are neither 401 nor 403, refused ones are 403 and change nothing; every
/// successful change through a management route leaves an audit row naming its caller. A
/// route without a fixture fails the walk, and every management route must succeed at least
/// once, so the fixtures cannot silently test only refusals.
#[tokio::test]
async fn every_route_with_every_role_and_scope() {
    let api = api().await;
    for model in ["gpt-4o", "walk"] {
        let price = json!({"model": model, "input_per_million": "2.5", "output_per_million": "10", "effective_from": 0});
        assert_eq!(
            api.admin("POST", "/v1/prices", Some(price)).await.status,
            201
        );
    }
    let a = objects(&api, "a").await;
    let b = objects(&api, "b").await;

    let api = &api;
    let mint = |role: &str, org: Option<&str>| {
        let body = json!({"name": role, "role": role, "org_id": org});
        async move {
            let t = api.admin("POST", "/v1/tokens", Some(body)).await.json();
            (
                t["secret"].as_str().unwrap().to_string(),
                t["id"].as_str().unwrap().to_string(),
            )
        }
    };
    let admin_token = mint("admin", None).await;
    let manager = mint("manager", Some("a")).await;
    let viewer = mint("viewer", Some("a")).await;
    let callers = [
        (Who::ViewerA, viewer.0.clone(), viewer.1.clone()),
        (Who::ManagerA, manager.0.clone(), manager.1.clone()),
        (
            Who::AdminToken,
            admin_token.0.clone(),
            admin_token.1.clone(),
        ),
        (Who::AdminEnv, ADMIN.to_string(), "admin-env".to_string()),
    ];
    let mut n = 0;
    let mut succeeded = BTreeSet::new();
    let mut checked = 0;
    for route in routes() {
        for (who, secret, actor) in &callers {
            for objects in [&a, &b] {
                n += 1;
                let what = format!(
                    "{} {} as {who:?} on {}",
                    route.method, route.path, objects.org
                );
                let (uri, body, named) = fixture(route.method, &route.path, objects, n)
                    .unwrap_or_else(|| panic!("no fixture for {} {}", route.method, route.path));
                let of_b = named && objects.org == "b";
                let before = latest_audit(api).await;
                let answer = api.call(route.method, &uri, Some(secret), body).await;
                let after = latest_audit(api).await;
                if may(route.access, *who, of_b) {
                    assert!(
                        ![401, 403].contains(&answer.status.as_u16()),
                        "{what} was refused: {}",
                        answer.text
                    );
                } else {
                    answer.problem(403, None);
                    assert_eq!(before, after, "{what}: refused, yet audited");
                }
                // A quote is a POST that computes and stores nothing.
                let change = route.method != "GET"
                    && route.path != "/v1/cost/quote"
                    && route.access.is_management();
                // The first success on an object changes it (a revocation repeated changes
                // nothing and records nothing); whatever is recorded names the caller.
                let first = answer.status.is_success()
                    && succeeded.insert((route.method, route.path.clone(), objects.org));
                if change && first {
                    let (id, _) = after.clone().unwrap_or_else(|| panic!("{what}: no audit"));
                    assert!(
                        before.as_ref().is_none_or(|b| b.0 < id),
                        "{what}: not audited"
                    );
                }
                if before != after {
                    assert!(change && answer.status.is_success(), "{what}: audited");
                    assert_eq!(&after.clone().unwrap().1, actor, "{what}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, routes().len() * callers.len() * 2);
    for route in routes().iter().filter(|r| r.access.is_management()) {
        assert!(
            succeeded.contains(&(route.method, route.path.clone(), "a")),
            "{} {}: no call succeeded, the fixture tests nothing",
            route.method,
            route.path
        );
    }
}

/// Deleting an organisation takes its API tokens and alert webhooks with it (`ON DELETE
/// CASCADE`): the tokens are gone and refused at once, the webhooks gone. (Why schemathesis's
/// `ensure_resource_availability` is off for these two resources: control-plane/tests/
/// schemathesis.toml.)
#[tokio::test]
async fn a_deleted_org_takes_its_tokens_and_webhooks_with_it() {
    let api = api().await;
    let made = api
        .admin(
            "POST",
            "/v1/orgs",
            Some(json!({"id": "gone", "name": "Gone"})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let token = api
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "ops", "role": "manager", "org_id": "gone"})),
        )
        .await
        .json();
    let (token_id, secret) = (
        token["id"].as_str().unwrap(),
        token["secret"].as_str().unwrap(),
    );
    let hook = api
        .admin(
            "POST",
            "/v1/alerts/webhooks",
            Some(json!({"org_id": "gone", "url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let hook_id = hook.json()["id"].as_str().unwrap().to_string();
    let orgs = api.call("GET", "/v1/orgs", Some(secret), None).await;
    assert_eq!(orgs.status, 200, "{}", orgs.text);

    assert_eq!(api.admin("DELETE", "/v1/orgs/gone", None).await.status, 204);
    api.admin("GET", &format!("/v1/tokens/{token_id}"), None)
        .await
        .problem(404, None);
    api.admin("GET", &format!("/v1/alerts/webhooks/{hook_id}"), None)
        .await
        .problem(404, None);
    // Refused as any unknown token is.
    api.call("GET", "/v1/orgs", Some(secret), None)
        .await
        .problem(403, None);
}

/// A manager sees and changes its organisation only, lists are confined to it, the audit log
/// names who changed what (never a secret), and a revoked token is refused at once.
#[tokio::test]
async fn scoped_tokens_see_their_org_and_are_audited() {
    let api = api().await;
    let a = objects(&api, "a").await;
    let b = objects(&api, "b").await;
    let created = api
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "ops", "role": "manager", "org_id": "a"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tgt-"));
    assert_eq!(created["created_by"], "admin-env");
    // Listed without the secret.
    let listed = api.admin("GET", "/v1/tokens?org_id=a", None).await;
    assert!(!listed.text.contains(&secret[4..]), "{}", listed.text);
    assert!(each_str(&listed.json(), "id").contains(&id));
    let tok = Some(secret.as_str());

    // Lists are confined to org a, whatever the filter asks.
    let orgs = api.call("GET", "/v1/orgs", tok, None).await.json();
    assert_eq!(each_str(&orgs, "id"), ["a"]);
    for list in ["/v1/projects", "/v1/users", "/v1/keys"] {
        let all = api.call("GET", list, tok, None).await.json();
        let orgs: BTreeSet<String> = each_str(&all, "org_id").into_iter().collect();
        assert_eq!(orgs, BTreeSet::from(["a".to_string()]), "{list}");
        api.call("GET", &format!("{list}?org_id=b"), tok, None)
            .await
            .problem(403, None);
    }
    let budgets = api.call("GET", "/v1/budgets", tok, None).await.json();
    assert_eq!(each_str(&budgets, "id"), [a.budget.as_str()]);
    let all = api.admin("GET", "/v1/budgets", None).await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);

    // A change by the manager, in the audit log under its id; b's objects stay out of reach.
    let patch = Some(json!({"limit_usd": "42"}));
    let changed = api
        .call(
            "PATCH",
            &format!("/v1/budgets/{}", a.budget),
            tok,
            patch.clone(),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    api.call("PATCH", &format!("/v1/budgets/{}", b.budget), tok, patch)
        .await
        .problem(403, None);
    let key = api
        .call(
            "POST",
            "/v1/keys",
            tok,
            Some(json!({"name": "new", "org_id": "a"})),
        )
        .await
        .json();
    let key_secret = key["secret"].as_str().unwrap();
    api.call(
        "POST",
        "/v1/keys",
        tok,
        Some(json!({"name": "new", "org_id": "b"})),
    )
    .await
    .problem(403, None);
    let log = api.call("GET", "/v1/audit?limit=2", tok, None).await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert!(!log.text.contains(&key_secret[3..]), "{}", log.text);
    let page = log.json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries[0]["actor"], id.as_str());
    assert_eq!(entries[0]["action"], "POST /v1/keys");
    assert_eq!(entries[0]["object_type"], "key");
    assert_eq!(entries[0]["after"]["prefix"], key["prefix"]);
    assert_eq!(entries[1]["action"], "PATCH /v1/budgets/{id}");
    assert_eq!(entries[1]["before"]["limit_usd"], "100");
    assert_eq!(entries[1]["after"]["limit_usd"], "42");
    // The next page, then the manager's whole view: org a's changes only.
    let before = page["next_before"].as_i64().unwrap();
    let older = api
        .call(
            "GET",
            &format!("/v1/audit?before={before}&limit=1000"),
            tok,
            None,
        )
        .await
        .json();
    let older = older["entries"].as_array().unwrap();
    assert!(older
        .iter()
        .all(|e| e["id"].as_i64().unwrap() < before && e["org_id"] == "a"));
    assert!(older.iter().any(|e| e["object_type"] == "org"));
    let admin_view = api.admin("GET", "/v1/audit?limit=1000", None).await.json();
    assert!(admin_view["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["org_id"] == "b"));
    assert!(admin_view.get("next_before").is_none());
    let by_actor = api
        .admin("GET", &format!("/v1/audit?actor={id}"), None)
        .await
        .json();
    assert_eq!(by_actor["entries"].as_array().unwrap().len(), 2);
    api.call("GET", "/v1/audit?org_id=b", tok, None)
        .await
        .problem(403, None);
    api.admin("GET", "/v1/audit?limit=0", None)
        .await
        .problem(422, Some("limit"));

    // A bulk call of org a's objects: one row, with the ids it made, in the manager's view.
    let bulk = Some(
        json!({"users": [{"id": "bulky", "org_id": "a", "name": "B"}],
                           "keys": [{"name": "bk", "org_id": "a", "user_id": "bulky"}]}),
    );
    let done = api.admin("POST", "/v1/bulk", bulk).await.json();
    let row = api
        .call("GET", "/v1/audit?object_type=bulk", tok, None)
        .await
        .json();
    let row = &row["entries"][0];
    assert_eq!(row["after"]["users"], json!(["bulky"]));
    assert_eq!(row["after"]["keys"], json!([done["keys"][0]["id"]]));
    let bulk_secret = done["keys"][0]["secret"].as_str().unwrap();
    assert!(!row.to_string().contains(&bulk_secret[3..]));

    // Not a data-plane credential, not an admin.
    api.call("GET", "/v1/snapshot", tok, None)
        .await
        .problem(403, None);
    api.call(
        "POST",
        "/v1/tokens",
        tok,
        Some(json!({"name": "x", "role": "admin"})),
    )
    .await
    .problem(403, None);

    // Revoked: refused from the next request on.
    let revoked = api
        .admin("POST", &format!("/v1/tokens/{id}/revoke"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    api.call("GET", "/v1/orgs", tok, None)
        .await
        .problem(403, None);
    let token_log = api
        .admin(
            "GET",
            &format!("/v1/audit?object_type=token&object_id={id}"),
            None,
        )
        .await
        .json();
    let token_log = token_log["entries"].as_array().unwrap();
    assert_eq!(token_log.len(), 2);
    assert_eq!(token_log[0]["actor"], "admin-env");
    assert!(token_log[0]["after"]["revoked_at"].is_i64());
    assert!(!serde_json::to_string(&token_log)
        .unwrap()
        .contains(&secret[4..]));
}

/// A webhook's signing secret is in the answer that created it and in no other: not in a
/// listing, a read, a change, the delivery log or the audit log. A manager's subscription is
/// of its organisation; one of every organisation is an admin's.
#[tokio::test]
async fn webhook_secret_only_in_the_create_answer() {
    let api = api().await;
    objects(&api, "a").await;
    objects(&api, "b").await;
    let created = api
        .admin(
            "POST",
            "/v1/alerts/webhooks",
            Some(json!({"org_id": "a", "url": "https://hooks.example/x", "format": "slack"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["thresholds"], json!([50, 80, 95, 100]));
    let one = format!("/v1/alerts/webhooks/{id}");
    for (method, path, body) in [
        ("GET", "/v1/alerts/webhooks", None),
        ("GET", one.as_str(), None),
        ("PATCH", one.as_str(), Some(json!({"enabled": false}))),
        ("GET", "/v1/alerts/deliveries", None),
        ("GET", "/v1/audit?object_type=webhook", None),
    ] {
        let answer = api.admin(method, path, body).await;
        assert!(
            answer.status.is_success(),
            "{method} {path}: {}",
            answer.text
        );
        assert!(
            !answer.text.contains(&secret[6..]),
            "{method} {path}: {}",
            answer.text
        );
    }
    let listed = api
        .admin("GET", "/v1/alerts/webhooks?org_id=a", None)
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w.get("secret").is_none()));

    let manager = api
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "m", "role": "manager", "org_id": "a"})),
        )
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let tok = Some(manager.as_str());
    let body = json!({"url": "http://127.0.0.1:9/m"});
    let mine = api
        .call("POST", "/v1/alerts/webhooks", tok, Some(body))
        .await;
    assert_eq!(mine.status, 201, "{}", mine.text);
    assert_eq!(mine.json()["org_id"], "a");
    let fleet = json!({"org_id": null, "url": "http://127.0.0.1:9/m", "events": ["fleet_stale"]});
    api.call("POST", "/v1/alerts/webhooks", tok, Some(fleet.clone()))
        .await
        .problem(422, None);
    let admin_fleet = api.admin("POST", "/v1/alerts/webhooks", Some(fleet)).await;
    assert_eq!(admin_fleet.status, 201, "{}", admin_fleet.text);
    let seen = api
        .call("GET", "/v1/alerts/webhooks", tok, None)
        .await
        .json();
    assert!(seen.as_array().unwrap().iter().all(|w| w["org_id"] == "a"));
    api.admin(
        "POST",
        "/v1/alerts/webhooks",
        Some(json!({"url": "ftp://x"})),
    )
    .await
    .problem(422, Some("url"));

    // The URL's path may be a credential (Slack's is): a viewer and the audit log see the
    // scheme and host only; a manager sees it whole.
    let viewer = api
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "v", "role": "viewer", "org_id": "a"})),
        )
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let hook = "https://hooks.example/services/T0/B0/PATHCREDENTIAL";
    let made = api
        .call(
            "POST",
            "/v1/alerts/webhooks",
            tok,
            Some(json!({"url": hook})),
        )
        .await
        .json();
    let one = format!("/v1/alerts/webhooks/{}", made["id"].as_str().unwrap());
    assert_eq!(api.call("GET", &one, tok, None).await.json()["url"], hook);
    let seen = api.call("GET", &one, Some(&viewer), None).await;
    assert_eq!(
        seen.json()["url"],
        "https://hooks.example/…",
        "{}",
        seen.text
    );
    let listed = api
        .call("GET", "/v1/alerts/webhooks", Some(&viewer), None)
        .await;
    assert!(!listed.text.contains("PATHCREDENTIAL"), "{}", listed.text);
    let audit = api
        .admin("GET", "/v1/audit?object_type=webhook", None)
        .await;
    assert!(!audit.text.contains("PATHCREDENTIAL"), "{}", audit.text);
}
