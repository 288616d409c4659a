//! Router tests of the console at `/ui` (`tollgate_control_plane::ui`), through `oneshot`:
//! signing in with good and bad tokens, the session cookie's flags and what the store keeps,
//! CSRF and Origin refusals, every console route with every role (derived from
//! `ui::routes()`, as the API's walk derives its list from the route table), no secret in any
//! page but a new key's once, the spend page's CSV equal to its rows and its total to the
//! API's, and the overview's bars and order. SQLite underneath; the sessions' store methods
//! run on both backends at the end.
//!
//! Run: `cargo test -p tollgate-control-plane --test console`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use common::*;
use http_body_util::BodyExt;
use tollgate_control_plane::alerts::webhooks::NewWebhook;
use tollgate_control_plane::http::{app, Access, AppState};
use tollgate_control_plane::store::budgets::NewBudget;
use tollgate_control_plane::store::keys::NewKey;
use tollgate_control_plane::store::tokens::{NewToken, TokenRole};
use tollgate_control_plane::timezone::Zone;
use tollgate_control_plane::ui;
use tollgate_core::budget::{Mode, Period, Scope};
use tollgate_testkit::{sqlite_store, store_test, TempSqlite};
use tower::ServiceExt;

const HOST: &str = "console.test";
const ORIGIN: &str = "http://console.test";

struct Console {
    app: Router,
    state: AppState,
    db: TempSqlite,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }
}

/// A signed-in browser: its cookie and the CSRF token its pages carry.
#[derive(Clone, Debug)]
struct Browser {
    cookie: String,
    csrf: String,
}

/// The objects of one organisation.
struct Objects {
    org: &'static str,
    key: String,
    key_secret: String,
    spare_key: String,
    budget: String,
    webhook: String,
}

async fn console() -> Console {
    let (store, db) = sqlite_store().await;
    let (state, _clock) = state(store).await;
    Console {
        app: app(state.clone()),
        state,
        db,
    }
}

impl Console {
    async fn send(&self, req: Request<Body>) -> Page {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str, who: Option<&Browser>) -> Page {
        let mut req = Request::get(uri).header(header::HOST, HOST);
        if let Some(b) = who {
            req = req.header(
                header::COOKIE,
                format!("{}={}", ui::sessions::COOKIE, b.cookie),
            );
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    /// A form POST from a page of this origin (`origin`: its `Origin` header, if any).
    async fn post_from(
        &self,
        uri: &str,
        who: Option<&Browser>,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> Page {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", ui_enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = Request::post(uri)
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(b) = who {
            req = req.header(
                header::COOKIE,
                format!("{}={}", ui::sessions::COOKIE, b.cookie),
            );
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A form POST with the browser's CSRF token.
    async fn post(&self, uri: &str, who: &Browser, form: &[(&str, &str)]) -> Page {
        let mut form = form.to_vec();
        form.push(("csrf", &who.csrf));
        self.post_from(uri, Some(who), Some(ORIGIN), &form).await
    }

    /// Signs in with `token`: the browser, or `None` when refused.
    async fn sign_in(&self, token: &str) -> Option<Browser> {
        let page = self
            .post_from("/ui/login", None, Some(ORIGIN), &[("token", token)])
            .await;
        if page.status != StatusCode::SEE_OTHER {
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.text);
            assert!(page.headers.get(header::SET_COOKIE).is_none());
            return None;
        }
        assert_eq!(page.location(), "/ui");
        let cookie = set_cookie_value(&page).expect("a session cookie");
        let mut b = Browser {
            cookie,
            csrf: String::new(),
        };
        let home = self.get("/ui", Some(&b)).await;
        assert_eq!(home.status, 200, "{}", home.text);
        b.csrf = csrf_of(&home.text);
        Some(b)
    }

    async fn token(&self, role: TokenRole, org: Option<&str>) -> (String, String) {
        let t = self
            .state
            .store
            .create_token(
                &NewToken {
                    name: role.as_str().into(),
                    role,
                    org_id: org.map(str::to_string),
                },
                NOW,
            )
            .await
            .unwrap();
        (t.secret, t.token.id)
    }

    /// An organisation with two keys, a daily budget of $10 on the first, and `usd` of spend
    /// on it today in two events.
    async fn objects(&self, org: &'static str, usd: [&str; 2]) -> Objects {
        let s = &self.state.store;
        s.create_org(org, org, NOW).await.unwrap();
        let key = |name: &str| NewKey {
            name: name.into(),
            org_id: org.into(),
            project_id: None,
            user_id: None,
        };
        let k = s.create_key(&key("main"), NOW).await.unwrap();
        let spare = s.create_key(&key("spare"), NOW).await.unwrap();
        let budget = s
            .create_budget(
                &NewBudget {
                    scope: Scope::Key,
                    scope_id: k.key.id.clone(),
                    period: Period::Daily,
                    timezone: Zone::UTC,
                    limit_usd: d("10"),
                    soft_limit_usd: Some(d("8")),
                    mode: Mode::Enforce,
                },
                NOW,
            )
            .await
            .unwrap();
        let p = principal(org, None, None, Some(&k.key.id));
        let events = vec![
            event(&format!("{org}-e1"), org, 1, NOW - 3600, &p, usd[0]),
            event(&format!("{org}-e2"), org, 2, NOW - 60, &p, usd[1]),
        ];
        s.ingest(&events, NOW, &self.state.budgets).await.unwrap();
        Objects {
            org,
            key: k.key.id,
            key_secret: k.secret,
            spare_key: spare.key.id,
            budget: budget.id,
            webhook: self.webhook(org).await,
        }
    }

    /// A new alert subscription of `org`; its id.
    async fn webhook(&self, org: &str) -> String {
        let new = NewWebhook {
            org_id: Some(org.into()),
            name: format!("{org}-hook"),
            url: format!("https://hooks.example/{org}/T0/secret-path"),
            enabled: true,
            ..NewWebhook::default()
        };
        let created = self.state.store.create_webhook(&new, NOW).await.unwrap();
        created.webhook.id
    }
}

fn ui_enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn set_cookie_value(page: &Page) -> Option<String> {
    let c = page.headers.get(header::SET_COOKIE)?.to_str().unwrap();
    let first = c.split(';').next()?;
    let (name, value) = first.split_once('=')?;
    assert_eq!(name, ui::sessions::COOKIE);
    Some(value.to_string())
}

/// The value of the first `name="csrf"` hidden field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// The text of each cell of each body row of the table with this id (maud writes no
/// whitespace between tags; no cell of these tables holds a nested tag but an `<a>`).
fn rows(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id}: {html}"));
    let table = &html[start..start + html[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr")
        .skip(1)
        .map(|tr| {
            tr.split("<td")
                .skip(1)
                .map(|td| strip_tags(&td[td.find('>').unwrap() + 1..td.find("</td>").unwrap()]))
                .collect()
        })
        .collect()
}

/// The secret a create answer shows once (`<code id="new-secret">`).
fn new_secret(html: &str) -> String {
    let at = html.find("<code id=\"new-secret\">").unwrap() + 22;
    html[at..].split('<').next().unwrap().to_string()
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&").replace("&quot;", "\"")
}

#[tokio::test]
async fn sign_in_good_and_bad_tokens_and_the_cookie() {
    let c = console().await;
    c.objects("a", ["1", "2"]).await;
    // No session: pages send the browser to the form; the form is public.
    let p = c.get("/ui", None).await;
    assert_eq!(
        (p.status, p.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert_eq!(c.get("/ui/login", None).await.status, 200);
    let bogus = Browser {
        cookie: "tgs-0000000000000000000000000000000000000000".into(),
        csrf: String::new(),
    };
    assert_eq!(c.get("/ui/keys", Some(&bogus)).await.status, 303);

    // Bad tokens: nothing to sign in with, no cookie.
    for bad in ["", "wrong-token-0123456789", DATAPLANE, "tgt-notatoken"] {
        assert!(c.sign_in(bad).await.is_none(), "{bad:?} signed in");
    }
    let page = c
        .post_from(
            "/ui/login",
            None,
            Some(ORIGIN),
            &[("token", "wrong-token-0123456789")],
        )
        .await;
    assert!(!page.text.contains("wrong-token-0123456789"));
    // From another site: refused before the token is even looked at.
    let page = c
        .post_from(
            "/ui/login",
            None,
            Some("http://evil.test"),
            &[("token", ADMIN)],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(page.headers.get(header::SET_COOKIE).is_none());

    // The admin token: a session cookie, HttpOnly, SameSite=Strict, Secure only over HTTPS.
    let page = c
        .post_from("/ui/login", None, Some(ORIGIN), &[("token", ADMIN)])
        .await;
    assert_eq!(page.status, 303);
    let cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(!cookie.contains(ADMIN));
    let page = c
        .post_from(
            "/ui/login",
            None,
            Some("https://console.test"),
            &[("token", ADMIN)],
        )
        .await;
    // (the origin names the host, whatever the scheme: the request came through a TLS proxy)
    assert_eq!(page.status, 303, "{}", page.text);
    assert!(page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Secure"));

    // The store keeps the session id's digest, never the id or the token.
    let admin = c.sign_in(ADMIN).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&c.db.url()).await.unwrap();
    let stored: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id_sha256, token_id, admin_tag FROM ui_sessions")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 3);
    let admin_digest = tollgate_control_plane::keys::sha256_hex(ADMIN.as_bytes());
    for (id, token, tag) in &stored {
        assert!(id.len() == 64 && !id.contains(&admin.cookie) && token.is_none());
        let tag = tag.as_deref().unwrap();
        assert!(tag.len() == 64 && tag != admin_digest && !tag.contains(ADMIN));
    }
    pool.close().await;

    // A scoped token signs in; revoking it ends its session at once.
    let (viewer, viewer_id) = c.token(TokenRole::Viewer, Some("a")).await;
    let v = c.sign_in(&viewer).await.unwrap();
    let home = c.get("/ui", Some(&v)).await;
    assert!(home.text.contains(&format!("viewer of a ({viewer_id})")));
    c.state.store.revoke_token(&viewer_id, NOW).await.unwrap();
    assert_eq!(c.get("/ui", Some(&v)).await.status, 303);
    assert!(c.sign_in(&viewer).await.is_none());

    // Signing out deletes the session and clears the cookie.
    let out = c.post("/ui/logout", &admin, &[]).await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(c.get("/ui", Some(&admin)).await.status, 303);

    // A session of the admin token ends when the admin token is changed (a restart with
    // another TOLLGATE_ADMIN_TOKEN over the same database).
    let before = c.sign_in(ADMIN).await.unwrap();
    let rotated = AppState::new(
        c.state.store.clone(),
        tollgate_control_plane::http::auth::Tokens::new("another-admin-token-0123", DATAPLANE)
            .unwrap(),
        c.state.clock.clone(),
    );
    rotated.snapshots.rebuild().await.unwrap();
    let resp = app(rotated)
        .oneshot(
            Request::get("/ui")
                .header(header::HOST, HOST)
                .header(
                    header::COOKIE,
                    format!("{}={}", ui::sessions::COOKIE, before.cookie),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(c.get("/ui", Some(&before)).await.status, 200);

    // An expired session is gone too.
    let old = c.sign_in(ADMIN).await.unwrap();
    c.state.clock.set(NOW + ui::sessions::SESSION_TTL);
    assert_eq!(c.get("/ui", Some(&old)).await.status, 303);
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token_and_this_origin() {
    let c = console().await;
    c.objects("a", ["1", "2"]).await;
    let (manager, _) = c.token(TokenRole::Manager, Some("a")).await;
    let m = c.sign_in(&manager).await.unwrap();
    let other = c.sign_in(ADMIN).await.unwrap();
    assert_ne!(m.csrf, other.csrf);
    let keys = || async { c.state.store.list_keys(None, true).await.unwrap().len() };
    let before = keys().await;
    let form = [("name", "forged"), ("org_id", "a")];
    let refused = [
        ("no token", None, Some(ORIGIN)),
        ("a wrong token", Some("x".repeat(32)), Some(ORIGIN)),
        (
            "another session's token",
            Some(other.csrf.clone()),
            Some(ORIGIN),
        ),
        (
            "another origin",
            Some(m.csrf.clone()),
            Some("http://evil.test"),
        ),
        (
            "a look-alike origin",
            Some(m.csrf.clone()),
            Some("http://console.test.evil.test"),
        ),
        ("no origin", Some(m.csrf.clone()), None),
    ];
    for (what, csrf, origin) in refused {
        let mut f = form.to_vec();
        if let Some(t) = &csrf {
            f.push(("csrf", t));
        }
        let page = c.post_from("/ui/keys", Some(&m), origin, &f).await;
        assert_eq!(page.status, 403, "{what}: {}", page.text);
        assert!(page.text.contains("id=\"error\""), "{what}");
    }
    assert_eq!(keys().await, before, "a refused form changed something");
    // Without a session a POST is refused, not redirected.
    let page = c
        .post_from(
            "/ui/keys",
            None,
            Some(ORIGIN),
            &[("csrf", &m.csrf), ("name", "x"), ("org_id", "a")],
        )
        .await;
    assert_eq!(page.status, 403);
    // The right token from this origin goes through.
    let page = c.post("/ui/keys", &m, &form).await;
    assert_eq!(page.status, 201, "{}", page.text);
    assert_eq!(keys().await, before + 1);
}

/// A console request: its URI, its form fields, and whether it names an object.
type Fixture = (String, Vec<(String, String)>, bool);

/// A request for `method path` naming `o`'s objects; `true` when the route names an object
/// (so a scoped token of another organisation must be refused).
fn fixture(method: &str, path: &str, o: &Objects, n: usize, fresh: &str) -> Option<Fixture> {
    let none = Vec::new;
    Some(match (method, path) {
        ("GET", "/ui/login") => ("/ui/login".into(), none(), false),
        ("POST", "/ui/login") => (
            "/ui/login".into(),
            vec![("token".into(), "wrong-token-0123456789".into())],
            false,
        ),
        ("POST", "/ui/logout") => ("/ui/logout".into(), none(), false),
        ("GET", "/ui/assets/console.css") => (path.into(), none(), false),
        ("GET", "/ui") => ("/ui?sort=spend".into(), none(), false),
        ("GET", "/ui/spend") => (
            "/ui/spend?bucket=hour&stack=key&from=2024-03-14&to=2024-03-15".into(),
            none(),
            false,
        ),
        ("GET", "/ui/spend.csv") => ("/ui/spend.csv?stack=model".into(), none(), false),
        ("GET", "/ui/budgets/{id}") => (format!("/ui/budgets/{}", o.budget), none(), true),
        ("GET", "/ui/keys") => ("/ui/keys".into(), none(), false),
        ("POST", "/ui/keys") => (
            "/ui/keys".into(),
            vec![
                ("name".into(), format!("walk-{n}")),
                ("org_id".into(), o.org.into()),
            ],
            true,
        ),
        ("POST", "/ui/keys/{id}/revoke") => {
            (format!("/ui/keys/{}/revoke", o.spare_key), none(), true)
        }
        ("GET", "/ui/prices") => ("/ui/prices?q=gpt".into(), none(), false),
        ("GET", "/ui/prices/{*model}") => ("/ui/prices/gpt-4o".into(), none(), false),
        ("GET", "/ui/alerts") => ("/ui/alerts?status=pending".into(), none(), false),
        ("POST", "/ui/alerts") => (
            "/ui/alerts".into(),
            vec![
                ("name".into(), format!("walk-{n}")),
                ("org_id".into(), o.org.into()),
                ("url".into(), "https://hooks.example/walk".into()),
                ("events".into(), "hard_limit".into()),
                ("events".into(), "threshold".into()),
                ("thresholds".into(), "50, 90".into()),
            ],
            true,
        ),
        ("POST", "/ui/alerts/{id}/enabled") => (
            format!("/ui/alerts/{}/enabled", o.webhook),
            vec![("enabled".into(), n.is_multiple_of(2).to_string())],
            true,
        ),
        // The walk deletes a subscription and revokes a token made for each call (`fresh`).
        ("POST", "/ui/alerts/{id}/delete") => (format!("/ui/alerts/{fresh}/delete"), none(), true),
        ("GET", "/ui/tokens") => ("/ui/tokens".into(), none(), false),
        ("POST", "/ui/tokens") => (
            "/ui/tokens".into(),
            vec![
                ("name".into(), format!("walk-{n}")),
                ("role".into(), "viewer".into()),
                ("org_id".into(), o.org.into()),
            ],
            false,
        ),
        ("POST", "/ui/tokens/{id}/revoke") => (format!("/ui/tokens/{fresh}/revoke"), none(), false),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    ViewerA,
    ManagerA,
    AdminToken,
    AdminEnv,
}

/// Whether `who` may use a route of `access` on an object of org b (`of_b`), by the API's
/// rules.
fn may(access: Access, who: Who, of_b: bool) -> bool {
    match (who, access) {
        (_, Access::Public) => true,
        (Who::Nobody, _) => false,
        (Who::AdminToken | Who::AdminEnv, _) => true,
        (Who::ViewerA, Access::Read | Access::OrgRead)
        | (Who::ManagerA, Access::Read | Access::OrgRead | Access::OrgWrite) => !of_b,
        _ => false,
    }
}

/// Every console route (from `ui::routes()`) as nobody, a viewer and a manager of org a, an
/// admin token and the admin token of the environment, on org a's and org b's objects. A
/// route without a fixture fails the walk; every non-public route must succeed at least once.
#[tokio::test]
async fn every_console_route_with_every_role() {
    let c = console().await;
    let price = serde_json::json!({"model": "gpt-4o", "input_per_million": "2.5", "output_per_million": "10", "effective_from": 0});
    let resp = c
        .send(
            Request::post("/v1/prices")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(price.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let a = c.objects("a", ["1", "2"]).await;
    let b = c.objects("b", ["3", "4"]).await;
    let viewer = c
        .sign_in(&c.token(TokenRole::Viewer, Some("a")).await.0)
        .await;
    let manager = c
        .sign_in(&c.token(TokenRole::Manager, Some("a")).await.0)
        .await;
    let admin_token = c.sign_in(&c.token(TokenRole::Admin, None).await.0).await;
    let admin_env = c.sign_in(ADMIN).await;
    let routes = ui::routes();
    assert!(routes.len() >= 12);
    let mut succeeded = BTreeSet::new();
    let mut n = 0;
    for route in &routes {
        for (who, browser) in [
            (Who::Nobody, None),
            (Who::ViewerA, viewer.clone()),
            (Who::ManagerA, manager.clone()),
            (Who::AdminToken, admin_token.clone()),
            (Who::AdminEnv, admin_env.clone()),
        ] {
            for o in [&a, &b] {
                n += 1;
                let what = format!("{} {} as {who:?} on {}", route.method, route.path, o.org);
                let fresh = match route.path.as_str() {
                    "/ui/alerts/{id}/delete" => c.webhook(o.org).await,
                    "/ui/tokens/{id}/revoke" => c.token(TokenRole::Viewer, Some(o.org)).await.1,
                    _ => String::new(),
                };
                let (uri, form, named) = fixture(route.method, &route.path, o, n, &fresh)
                    .unwrap_or_else(|| panic!("no fixture for {} {}", route.method, route.path));
                // Signing out ends the session: the walk signs out a fresh one of each.
                let fresh;
                let browser = if route.path == "/ui/logout" && who != Who::Nobody {
                    let token = match who {
                        Who::AdminEnv => ADMIN.to_string(),
                        _ => {
                            c.token(
                                match who {
                                    Who::ViewerA => TokenRole::Viewer,
                                    Who::ManagerA => TokenRole::Manager,
                                    _ => TokenRole::Admin,
                                },
                                (who != Who::AdminToken).then_some("a"),
                            )
                            .await
                            .0
                        }
                    };
                    fresh = c.sign_in(&token).await;
                    fresh.as_ref()
                } else {
                    browser.as_ref()
                };
                let page = if route.method == "GET" {
                    c.get(&uri, browser).await
                } else {
                    let form: Vec<(&str, &str)> =
                        form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    match browser {
                        Some(bw) => c.post(&uri, bw, &form).await,
                        None => c.post_from(&uri, None, Some(ORIGIN), &form).await,
                    }
                };
                let of_b = named && o.org == "b";
                if may(route.access, who, of_b) {
                    assert!(
                        ![401, 403].contains(&page.status.as_u16()) || route.path == "/ui/login",
                        "{what} was refused: {} {}",
                        page.status,
                        page.text
                    );
                    if route.access != Access::Public {
                        assert!(
                            page.status.is_success() || page.status == 303,
                            "{what}: {} {}",
                            page.status,
                            page.text
                        );
                        if page.status != 303 || route.method == "POST" {
                            succeeded.insert((route.method, route.path.clone()));
                        }
                    }
                } else if who == Who::Nobody && route.method == "GET" {
                    assert_eq!(
                        (page.status, page.location()),
                        (StatusCode::SEE_OTHER, "/ui/login"),
                        "{what}"
                    );
                } else {
                    assert_eq!(page.status, 403, "{what} was allowed: {}", page.text);
                }
                // Security headers on every console answer.
                assert!(
                    page.headers.contains_key(header::CONTENT_SECURITY_POLICY),
                    "{what}"
                );
            }
        }
    }
    for route in routes.iter().filter(|r| r.access != Access::Public) {
        assert!(
            succeeded.contains(&(route.method, route.path.clone())),
            "{} {}: no call succeeded, the fixture tests nothing",
            route.method,
            route.path
        );
    }
    // What a viewer sees: no create form, no revoke button; a manager sees both.
    let v = c.get("/ui/keys", viewer.as_ref()).await.text;
    assert!(
        !v.contains("Create key") && !v.contains("Revoke") && v.contains(&a.key),
        "{v}"
    );
    assert!(!v.contains(&b.key), "a viewer of a sees b's key");
    let m = c.get("/ui/keys", manager.as_ref()).await.text;
    assert!(m.contains("Create key") && m.contains("Revoke"), "{m}");
}

#[tokio::test]
async fn no_secret_in_any_page_but_a_new_key_once() {
    let c = console().await;
    let a = c.objects("a", ["1", "2"]).await;
    let b = c.objects("b", ["3", "4"]).await;
    let (manager, _) = c.token(TokenRole::Manager, Some("a")).await;
    let (viewer, _) = c.token(TokenRole::Viewer, Some("a")).await;
    let admin = c.sign_in(ADMIN).await.unwrap();
    let m = c.sign_in(&manager).await.unwrap();
    let v = c.sign_in(&viewer).await.unwrap();
    let created = c
        .post("/ui/keys", &m, &[("name", "fresh"), ("org_id", "a")])
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = new_secret(&created.text);
    assert!(secret.len() > 20, "{secret}");
    assert_eq!(created.text.matches(&secret).count(), 1);
    assert_eq!(created.headers[header::CACHE_CONTROL], "no-store");
    let listed = c.state.store.list_keys(Some("a"), true).await.unwrap();
    assert!(listed
        .iter()
        .any(|k| k.name == "fresh" && secret.starts_with(&k.prefix)));

    let secrets = [
        ADMIN.to_string(),
        DATAPLANE.to_string(),
        manager.clone(),
        viewer.clone(),
        a.key_secret.clone(),
        b.key_secret.clone(),
        secret.clone(),
        admin.cookie.clone(),
        m.cookie.clone(),
        v.cookie.clone(),
    ];
    let budget_a = format!("/ui/budgets/{}", a.budget);
    let pages = [
        "/ui",
        "/ui?sort=scope",
        "/ui/spend",
        "/ui/spend?stack=key&bucket=hour&from=2024-03-15",
        "/ui/spend.csv",
        budget_a.as_str(),
        "/ui/keys",
        "/ui/prices",
        "/ui/alerts",
        "/ui/login",
    ];
    for who in [&admin, &m, &v] {
        for p in pages {
            let page = c.get(p, Some(who)).await;
            assert!(page.status.is_success(), "{p}: {}", page.text);
            for s in &secrets {
                assert!(!page.text.contains(s.as_str()), "{p} shows a secret");
                assert!(!page.text.contains(&s[4..]), "{p} shows most of a secret");
            }
        }
    }
    // The answer to a revoke is a redirect: nothing in it.
    let revoked = c
        .post(&format!("/ui/keys/{}/revoke", a.spare_key), &m, &[])
        .await;
    assert_eq!(
        (revoked.status, revoked.location()),
        (StatusCode::SEE_OTHER, "/ui/keys")
    );
    let page = c.get("/ui/keys", Some(&m)).await;
    let row = rows(&page.text, "keys")
        .into_iter()
        .find(|r| r.get(1) == Some(&a.spare_key))
        .unwrap();
    assert!(row[8].starts_with("revoked"), "{row:?}");
}

/// The tokens page (an admin's): a token created through it shows its secret once and signs
/// in; revoked through it, its session ends at the next request. Only an admin's navigation
/// links to it.
#[tokio::test]
async fn tokens_page_creates_and_revokes_and_only_admins_see_it() {
    let c = console().await;
    c.objects("a", ["1", "2"]).await;
    let admin = c.sign_in(ADMIN).await.unwrap();
    let created = c
        .post(
            "/ui/tokens",
            &admin,
            &[("name", "ops"), ("role", "manager"), ("org_id", "a")],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = new_secret(&created.text);
    assert!(secret.starts_with("tgt-"), "{secret}");
    assert_eq!(created.text.matches(&secret).count(), 1);
    let listed = c.get("/ui/tokens", Some(&admin)).await.text;
    assert!(!listed.contains(&secret) && !listed.contains(&secret[4..]));
    let row = rows(&listed, "tokens")
        .into_iter()
        .find(|r| r[0] == "ops")
        .unwrap();
    assert_eq!(
        (&row[3][..], &row[4][..], &row[7][..]),
        ("manager", "a", "live")
    );
    assert!(secret.starts_with(row[2].trim_end_matches('…')), "{row:?}");
    // A role that needs an organisation without one, an unknown role: the API's errors.
    for form in [
        [("name", "x"), ("role", "viewer"), ("org_id", "")],
        [("name", "x"), ("role", "owner"), ("org_id", "a")],
    ] {
        let bad = c.post("/ui/tokens", &admin, &form).await;
        assert_eq!(bad.status, 422, "{form:?}: {}", bad.text);
    }

    // The new token signs in as a manager of a, whose navigation has no Tokens.
    let ops = c.sign_in(&secret).await.unwrap();
    let page = c.get("/ui", Some(&ops)).await;
    assert!(page.status.is_success() && page.text.contains("manager of a"));
    assert!(!page.text.contains("href=\"/ui/tokens\""));
    assert!(c
        .get("/ui", Some(&admin))
        .await
        .text
        .contains("href=\"/ui/tokens\""));
    assert_eq!(c.get("/ui/tokens", Some(&ops)).await.status, 403);

    let revoked = c
        .post(&format!("/ui/tokens/{}/revoke", row[1]), &admin, &[])
        .await;
    assert_eq!(
        (revoked.status, revoked.location()),
        (StatusCode::SEE_OTHER, "/ui/tokens")
    );
    let after = c.get("/ui", Some(&ops)).await;
    assert_eq!(
        (after.status, after.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    let row = rows(&c.get("/ui/tokens", Some(&admin)).await.text, "tokens")
        .into_iter()
        .find(|r| r[0] == "ops")
        .unwrap();
    assert!(row[7].starts_with("revoked"), "{row:?}");
}

/// The alerts page: a subscription created through it shows its signing secret once and then
/// never; a viewer sees no form and each URL cut to its host; the delivery log lists what a
/// crossing recorded, by status; pause and delete act on the store.
#[tokio::test]
async fn alerts_page_subscriptions_and_delivery_log() {
    let c = console().await;
    let a = c.objects("a", ["1", "2"]).await;
    let m = c
        .sign_in(&c.token(TokenRole::Manager, Some("a")).await.0)
        .await
        .unwrap();
    let v = c
        .sign_in(&c.token(TokenRole::Viewer, Some("a")).await.0)
        .await
        .unwrap();
    let created = c
        .post(
            "/ui/alerts",
            &m,
            &[
                ("name", "pager"),
                ("org_id", "a"),
                ("url", "https://hooks.example/a/T1/pager-path"),
                ("format", "slack"),
                ("events", "hard_limit"),
                ("events", "threshold"),
                ("thresholds", "50, 90"),
                ("budget_ids", &a.budget),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = new_secret(&created.text);
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.text.matches(&secret).count(), 1);
    let hooks = c.state.store.list_webhooks(Some("a")).await.unwrap();
    let pager = hooks.iter().find(|w| w.name == "pager").unwrap();
    assert_eq!(
        (pager.events.len(), pager.thresholds.len(), pager.format),
        (2, 2, ui_format("slack"))
    );
    assert_eq!(pager.budget_ids, std::slice::from_ref(&a.budget));
    // A bad field is the API's error, and nothing is created.
    let bad = c
        .post("/ui/alerts", &m, &[("url", "ftp://x/y"), ("org_id", "a")])
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(
        c.state.store.list_webhooks(Some("a")).await.unwrap().len(),
        2
    );

    // $3 spent of $10; $5 more crosses 50 % and the soft limit: deliveries for both
    // subscriptions, pending (nothing listens at hooks.example).
    let p = principal("a", None, None, Some(&a.key));
    let e = event("a-e3", "a", 3, NOW - 30, &p, "5");
    c.state
        .store
        .ingest(&[e], NOW, &c.state.budgets)
        .await
        .unwrap();
    let manager_page = c.get("/ui/alerts", Some(&m)).await.text;
    let viewer_page = c.get("/ui/alerts", Some(&v)).await.text;
    for page in [&manager_page, &viewer_page] {
        assert!(!page.contains(&secret) && !page.contains(&secret[6..]));
        let log = rows(page, "deliveries");
        let mut kinds: Vec<&str> = log.iter().map(|r| r[2].as_str()).collect();
        kinds.sort_unstable();
        // The page's own subscription: threshold_50 only (it asked for 50 and 90, not the soft
        // limit); the other: threshold_50, threshold_80 and soft_limit.
        assert_eq!(
            kinds,
            ["soft_limit", "threshold_50", "threshold_50", "threshold_80"],
            "{log:?}"
        );
        assert!(log.iter().all(|r| r[4] == "pending"), "{log:?}");
    }
    assert!(manager_page.contains("pager-path") && manager_page.contains("Create subscription"));
    assert!(!viewer_page.contains("pager-path") && !viewer_page.contains("secret-path"));
    assert!(viewer_page.contains("https://hooks.example/…"));
    assert!(!viewer_page.contains("Create subscription") && !viewer_page.contains("Delete"));
    let delivered = c.get("/ui/alerts?status=delivered", Some(&m)).await.text;
    assert!(delivered.contains("No deliveries."), "{delivered}");
    let odd = c.get("/ui/alerts?status=lost", Some(&m)).await;
    assert_eq!(odd.status, 422);

    // Pause, then delete, through the forms.
    let paused = c
        .post(
            &format!("/ui/alerts/{}/enabled", pager.id),
            &m,
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(
        (paused.status, paused.location()),
        (StatusCode::SEE_OTHER, "/ui/alerts")
    );
    assert!(!c.state.store.get_webhook(&pager.id).await.unwrap().enabled);
    let row = rows(&c.get("/ui/alerts", Some(&m)).await.text, "webhooks")
        .into_iter()
        .find(|r| r[1] == pager.id)
        .unwrap();
    assert_eq!(row[8], "paused", "{row:?}");
    let deleted = c
        .post(&format!("/ui/alerts/{}/delete", pager.id), &m, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.text);
    assert!(c.state.store.get_webhook(&pager.id).await.is_err());
    let log = rows(&c.get("/ui/alerts", Some(&m)).await.text, "deliveries");
    assert_eq!(log.len(), 3, "its deliveries went with it: {log:?}");
}

fn ui_format(name: &str) -> tollgate_control_plane::alerts::Format {
    serde_json::from_value(serde_json::json!(name)).unwrap()
}

#[tokio::test]
async fn spend_csv_equals_the_rows_shown_and_the_total_the_ledger() {
    let c = console().await;
    let a = c.objects("a", ["1.25", "0.5"]).await;
    c.objects("b", ["3", "4"]).await;
    let admin = c.sign_in(ADMIN).await.unwrap();
    let (viewer, _) = c.token(TokenRole::Viewer, Some("a")).await;
    let v = c.sign_in(&viewer).await.unwrap();
    for (who, total) in [(&admin, "8.75"), (&v, "1.75")] {
        for q in [
            "stack=key",
            "stack=org&bucket=hour&from=2024-03-15&to=2024-03-15",
            "stack=model&tz=Asia%2FTokyo",
        ] {
            let page = c.get(&format!("/ui/spend?{q}"), Some(who)).await;
            assert_eq!(page.status, 200, "{}", page.text);
            let shown = rows(&page.text, "rows");
            assert!(!shown.is_empty());
            let link_at = page.text.find("id=\"csv\" href=\"").unwrap() + 15;
            let link = page.text[link_at..]
                .split('"')
                .next()
                .unwrap()
                .replace("&amp;", "&");
            let csv = c.get(&link, Some(who)).await;
            assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
            let mut lines = csv.text.lines();
            let head = lines.next().unwrap();
            assert!(
                head.ends_with("requests,input_tokens,output_tokens,cost_usd"),
                "{head}"
            );
            let from_csv: Vec<Vec<String>> = lines
                .map(|l| l.split(',').map(str::to_string).collect())
                .collect();
            assert_eq!(shown, from_csv, "{q}");
            let at = page.text.find("data-total=\"").unwrap() + 12;
            let shown_total = page.text[at..].split('"').next().unwrap();
            assert_eq!(d(shown_total), d(total), "{q}");
            let sum: rust_decimal::Decimal = from_csv.iter().map(|r| d(r.last().unwrap())).sum();
            assert_eq!(sum, d(total));
        }
    }
    // The viewer's rows are its organisation's only.
    let page = c.get("/ui/spend?stack=key", Some(&v)).await;
    assert!(rows(&page.text, "rows").iter().all(|r| r[1] == a.key));
    // The chart is drawn (an SVG with a bar per non-empty segment) and the range checked.
    assert!(page.text.contains("<svg class=\"chart\""));
    let bad = c
        .get("/ui/spend?from=2024-03-16&to=2024-03-01", Some(&v))
        .await;
    assert_eq!(bad.status, 422);
    let bad = c
        .get(
            "/ui/spend?bucket=hour&from=2024-01-01&to=2024-03-15",
            Some(&v),
        )
        .await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn overview_bars_worst_first() {
    let c = console().await;
    // Three budgets at 20 %, 110 % and 85 % (soft limit $8 of $10).
    let low = c.objects("low", ["1", "1"]).await;
    let over = c.objects("over", ["6", "5"]).await;
    let soft = c.objects("soft", ["4", "4.5"]).await;
    let admin = c.sign_in(ADMIN).await.unwrap();
    let page = c.get("/ui", Some(&admin)).await;
    let order: Vec<String> = page
        .text
        .split("data-budget=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        [over.budget.clone(), soft.budget.clone(), low.budget.clone()]
    );
    let shown = rows(&page.text, "budgets");
    assert_eq!(shown[0][1].trim(), "110 %");
    assert_eq!(shown[1][1].trim(), "85 %");
    assert_eq!(shown[2][1].trim(), "20 %");
    assert_eq!(shown[0][2], "$11.00");
    assert!(page
        .text
        .contains("class=\"fill over\" x=\"0\" y=\"0\" width=\"100\""));
    assert!(page
        .text
        .contains("class=\"fill soft\" x=\"0\" y=\"0\" width=\"85\""));
    assert!(page
        .text
        .contains("class=\"fill ok\" x=\"0\" y=\"0\" width=\"20\""));
    // Ascending on request.
    let page = c.get("/ui?sort=utilization&dir=asc", Some(&admin)).await;
    let first = page.text.split("data-budget=\"").nth(1).unwrap();
    assert!(first.starts_with(&low.budget));
    // The budget page: this window's spend, the keys and models that spent it.
    let page = c
        .get(&format!("/ui/budgets/{}", soft.budget), Some(&admin))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(rows(&page.text, "by-key")[0][0], soft.key);
    assert_eq!(rows(&page.text, "by-key")[0][4], "$8.50");
    assert_eq!(rows(&page.text, "by-model")[0][0], "gpt-4o");
    assert!(page.text.contains("Previous window"));
    // Another organisation's budget is not a manager's to see.
    let (manager, _) = c.token(TokenRole::Manager, Some("low")).await;
    let m = c.sign_in(&manager).await.unwrap();
    assert_eq!(
        c.get(&format!("/ui/budgets/{}", soft.budget), Some(&m))
            .await
            .status,
        403
    );
    let page = c.get("/ui", Some(&m)).await;
    assert_eq!(page.text.matches("data-budget=").count(), 1);
}

/// The overview shows 200 budgets a page, in the order chosen, with links to the others; a
/// page that does not exist is refused.
#[tokio::test]
async fn overview_pages() {
    let c = console().await;
    let s = &c.state.store;
    s.create_org("p", "P", NOW).await.unwrap();
    let n = ui::OVERVIEW_PAGE_ROWS + 5;
    for i in 1..=n {
        let u = format!("u{i}");
        s.create_user(&u, "p", "U", None, NOW).await.unwrap();
        let budget = NewBudget {
            scope: Scope::User,
            scope_id: u,
            period: Period::Monthly,
            timezone: Zone::UTC,
            limit_usd: d(&i.to_string()),
            soft_limit_usd: None,
            mode: Mode::Enforce,
        };
        s.create_budget(&budget, NOW).await.unwrap();
    }
    let admin = c.sign_in(ADMIN).await.unwrap();
    let limits = |text: &str| -> Vec<String> {
        rows(text, "budgets")
            .into_iter()
            .map(|r| r[4].clone())
            .collect()
    };
    let first = c.get("/ui?sort=limit", Some(&admin)).await.text;
    let shown = limits(&first);
    assert_eq!(shown.len(), ui::OVERVIEW_PAGE_ROWS);
    assert_eq!(shown[0], format!("${n}.00"));
    assert!(first.contains(&format!("Budgets 1–{} of {n}.", ui::OVERVIEW_PAGE_ROWS)));
    assert!(first.contains("rel=\"next\"") && !first.contains("rel=\"prev\""));
    let second = c
        .get("/ui?sort=limit&dir=desc&page=2", Some(&admin))
        .await
        .text;
    assert_eq!(
        limits(&second),
        ["$5.00", "$4.00", "$3.00", "$2.00", "$1.00"]
    );
    assert!(second.contains("rel=\"prev\"") && !second.contains("rel=\"next\""));
    for bad in ["0", "3", "two"] {
        let page = c.get(&format!("/ui?page={bad}"), Some(&admin)).await;
        assert_eq!(page.status, 422, "page={bad}");
    }
}

store_test!(sessions_open_read_close, |store| {
    let id = ui::sessions::new_session_id().unwrap();
    assert!(id.starts_with("tgs-") && id.len() == 44);
    let stored = store
        .open_ui_session(&id, None, Some("tag"), NOW)
        .await
        .unwrap();
    assert_eq!(stored.admin_tag.as_deref(), Some("tag"));
    assert_eq!(
        store.ui_session(&id, NOW + 1).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.ui_session("tgs-other", NOW).await.unwrap(), None);
    assert_eq!(
        store
            .ui_session(&id, NOW + ui::sessions::SESSION_TTL)
            .await
            .unwrap(),
        None
    );
    // Opening another deletes the expired ones; closing is idempotent.
    let id2 = ui::sessions::new_session_id().unwrap();
    store
        .open_ui_session(&id2, None, None, NOW + ui::sessions::SESSION_TTL)
        .await
        .unwrap();
    assert!(!store.close_ui_session(&id).await.unwrap());
    assert!(store.close_ui_session(&id2).await.unwrap());
    assert_eq!(store.ui_session(&id2, NOW).await.unwrap(), None);
});

// The spend chart's hours are local hours of the zone asked for, on both backends: across
// Paris's spring-forward night, 01:30 CET and 03:30 CEST are one hour of time apart and in
// consecutive local hours (02:00 never happens there).
store_test!(spend_per_local_hour, |store| {
    store.create_org("acme", "Acme", NOW).await.unwrap();
    let p = principal("acme", None, None, None);
    let at = 1_711_845_000; // 2024-03-31 00:30 UTC = 01:30 CET
    let events = vec![
        event("h1", "r1", 1, at, &p, "0.25"),
        event("h2", "r1", 2, at + 3600, &p, "0.5"),
        event("h3", "r1", 3, at + 3660, &p, "1"),
    ];
    let cache = tollgate_control_plane::ingest::BudgetCache::default();
    store.ingest(&events, at + 7200, &cache).await.unwrap();
    let q = tollgate_control_plane::store::spend::SpendQuery {
        scope: None,
        model: None,
        from: at - 7200,
        to: at + 7200,
        group_by: vec![tollgate_control_plane::store::spend::GroupBy::Hour],
        zone: Zone::parse("Europe/Paris").unwrap(),
        org: None,
    };
    let report = store.spend(&q).await.unwrap();
    let hours: Vec<(String, u64, String)> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.group["hour"].clone().unwrap(),
                r.requests,
                r.cost_usd.to_string(),
            )
        })
        .collect();
    assert_eq!(
        hours,
        [
            ("2024-03-31 01:00".to_string(), 1, "0.25".to_string()),
            ("2024-03-31 03:00".to_string(), 2, "1.5".to_string()),
        ]
    );
});
