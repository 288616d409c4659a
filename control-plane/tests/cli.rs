//! CLI tests: the built `tollgate` binary, as a person runs it — `cost` offline,
//! `migrate` and `prices import` on a SQLite file, `serve` and the admin verbs against it.
//!
//! Run: `cargo test -p tollgate-control-plane --test cli`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{announced_url, scratch, Killed};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const ADMIN: &str = "cli-admin-token-0123456789";
const DATAPLANE: &str = "cli-dataplane-token-0123456789";

/// A scratch directory for one test, removed on drop.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new(name: &str) -> TempDir {
        TempDir(scratch(&format!("tollgate-cli-{name}-")))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

/// A clean environment: nothing from the caller's TOLLGATE_* leaks into a test.
fn tollgate(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn price_map() -> String {
    json!({
        "sample_spec": {"mode": "chat"},
        "gpt-4o": {"litellm_provider": "openai", "mode": "chat",
                   "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                   "cache_read_input_token_cost": 1.25e-06},
        "claude-sonnet-4-5": {"litellm_provider": "anthropic", "mode": "chat",
                              "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                              "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06},
        "dall-e-3": {"mode": "image_generation", "output_cost_per_image": 0.04}
    })
    .to_string()
}

#[test]
fn cost_prices_a_provider_usage_object_offline() {
    let dir = TempDir::new("cost");
    let prices = dir.file("prices.json", &price_map());
    let usage = r#"{"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
                    "prompt_tokens_details": {"cached_tokens": 1000}}"#;
    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--model",
        "gpt-4o-2024-08-06",
        "--usage",
        usage,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    // 1000 uncached × 2.5/M + 1000 cached × 1.25/M + 300 out × 10/M
    assert_eq!(v["total_usd"], "0.00675");
    assert_eq!(v["cost"]["input"], "0.0025");
    assert_eq!(v["cost"]["cache_read"], "0.00125");
    assert_eq!(v["cost"]["output"], "0.003");
    assert_eq!(v["priced_as"], "gpt-4o");
    assert_eq!(v["usage_format"], "open_ai_chat");

    // Anthropic's shape, recognised from its keys.
    let usage = r#"{"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 0}"#;
    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--model",
        "claude-sonnet-4-5",
        "--usage",
        usage,
    ]));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["usage_format"], "anthropic_messages");
    assert_eq!(v["total_usd"], "0.00075");

    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--model",
        "nope",
        "--usage",
        usage,
    ]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("model: no price for \"nope\""),
        "{}",
        stderr(&o)
    );
    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--model",
        "gpt-4o",
        "--usage",
        "{",
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--usage is not JSON"), "{}", stderr(&o));
}

#[test]
fn migrate_and_import_prices_into_sqlite() {
    let dir = TempDir::new("import");
    let db = dir.join("t.db");
    let db = db.to_str().unwrap();
    let o = run(&mut tollgate(&["migrate", "--database-url", db]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "migrated sqlite");
    let prices = dir.file("prices.json", &price_map());
    let o = run(&mut tollgate(&[
        "prices",
        "import",
        "--format",
        "litellm",
        "--database-url",
        db,
        prices.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("imported 2 models (0 unchanged, 2 skipped)"),
        "{out}"
    );
    assert!(
        out.contains("skipped dall-e-3: mode \"image_generation\" is not metered"),
        "{out}"
    );
    assert!(
        out.contains("skipped sample_spec: documentation entry"),
        "{out}"
    );
    let again = run(&mut tollgate(&[
        "prices",
        "import",
        "--format",
        "litellm",
        "--database-url",
        db,
        prices.to_str().unwrap(),
    ]));
    assert!(
        stdout(&again).starts_with("imported 0 models (2 unchanged"),
        "{}",
        stdout(&again)
    );
    let o = run(&mut tollgate(&[
        "prices",
        "import",
        "--format",
        "csv",
        "--database-url",
        db,
        prices.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
}

#[test]
fn serve_refuses_to_start_without_tokens() {
    let dir = TempDir::new("notoken");
    let db = dir.join("t.db");
    let o = run(&mut tollgate(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("TOLLGATE_ADMIN_TOKEN must be set"),
        "{}",
        stderr(&o)
    );
    let o = run(tollgate(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db.to_str().unwrap(),
    ])
    .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
    .env("TOLLGATE_DATAPLANE_TOKEN", ADMIN));
    assert!(stderr(&o).contains("must differ"), "{}", stderr(&o));
}

#[test]
fn serve_and_admin_verbs() {
    let dir = TempDir::new("serve");
    let db = dir.join("t.db");
    let mut child = tollgate(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db.to_str().unwrap(),
    ])
    .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
    .env("TOLLGATE_DATAPLANE_TOKEN", DATAPLANE)
    .env("RUST_LOG", "tollgate_control_plane=debug,info")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let err = child.stderr.take().unwrap();
    let url = announced_url(&mut child);
    let server = Killed(child);
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(err).lines() {
            all.push_str(&l.unwrap());
            all.push('\n');
        }
        all
    });
    let admin = |args: &[&str]| {
        let mut c = tollgate(args);
        c.env("TOLLGATE_URL", &url)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN);
        run(&mut c)
    };

    // Tenants through the API (no CLI verb for them), then the verbs.
    let client = reqwest::blocking::Client::new();
    for (path, body) in [
        ("/v1/orgs", json!({"id": "acme", "name": "Acme"})),
        (
            "/v1/users",
            json!({"id": "alice", "org_id": "acme", "name": "Alice"}),
        ),
    ] {
        let r = client
            .post(format!("{url}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    let o = admin(&[
        "budgets",
        "set",
        "--scope",
        "org",
        "--scope-id",
        "acme",
        "--period",
        "monthly",
        "--limit-usd",
        "100",
        "--soft-limit-usd",
        "80",
        "--timezone",
        "Europe/Paris",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (b["limit_usd"].as_str(), b["soft_limit_usd"].as_str()),
        (Some("100"), Some("80"))
    );
    // Setting again changes the same budget.
    let o = admin(&[
        "budgets",
        "set",
        "--scope",
        "org",
        "--scope-id",
        "acme",
        "--period",
        "monthly",
        "--limit-usd",
        "150",
    ]);
    let b2: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(b2["id"], b["id"]);
    assert_eq!(b2["limit_usd"], "150");
    assert!(b2["soft_limit_usd"].is_null());
    let o = admin(&[
        "budgets",
        "set",
        "--scope",
        "org",
        "--scope-id",
        "acme",
        "--period",
        "monthly",
        "--limit-usd=-5",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("422"), "{}", stderr(&o));
    let o = admin(&[
        "budgets",
        "set",
        "--scope",
        "team",
        "--scope-id",
        "x",
        "--period",
        "monthly",
        "--limit-usd",
        "5",
    ]);
    assert!(
        stderr(&o).contains("--scope \"team\" is not valid"),
        "{}",
        stderr(&o)
    );

    let o = admin(&["budgets", "list"]);
    let table = stdout(&o);
    assert!(table.starts_with("ID\tSCOPE"), "{table}");
    assert!(
        table.contains("\torg\tacme\tmonthly\tUTC\tenforce\t150\t-\t0\t"),
        "{table}"
    );

    let o = admin(&[
        "keys", "create", "--org", "acme", "--user", "alice", "--name", "laptop",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_string();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    assert!(secret.starts_with("tg-"));

    // Some usage from an enrolled reporter, then the spend verb.
    let enrolled: Value = client
        .post(format!("{url}/v1/reporters"))
        .bearer_auth(DATAPLANE)
        .json(&json!({"node": "envoy-1"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let reporter = enrolled["reporter"].as_str().unwrap().to_string();
    let reporter_secret = enrolled["secret"].as_str().unwrap().to_string();
    let p = json!({"key": id, "user": "alice", "org": "acme"});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let events: Vec<Value> = (1..=3)
        .map(|i| json!({"id": format!("{reporter}-{i}"), "reporter": reporter, "seq": i, "ts": now, "principal": p,
                        "model": "gpt-4o", "api": "open_ai_chat", "usage": {"input_uncached": 100, "output": 10},
                        "cost": {"input": "0.00025", "cache_read": "0", "cache_write_5m": "0", "cache_write_1h": "0",
                                 "output": "0.0001", "reasoning": "0", "total": "0.00035"},
                        "price_version": 1, "charge": "actual", "status": 200}))
        .collect();
    let r = client
        .post(format!("{url}/v1/usage"))
        .bearer_auth(&reporter_secret)
        .json(&json!({"events": events}))
        .send()
        .unwrap();
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"accepted": 3, "duplicate": 0, "conflict": 0})
    );

    let o = admin(&[
        "spend",
        "--scope",
        "user",
        "--scope-id",
        "alice",
        "--group-by",
        "model,key",
        "--csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("model,key,requests,input_tokens,output_tokens,cost_usd\ngpt-4o,{id},3,300,30,0.00105\n"));
    let o = admin(&["spend", "--group-by", "day"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["total_usd"], "0.00105");

    let o = admin(&["keys", "revoke", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("revoked {id} at ")));
    let o = admin(&["keys", "revoke", "key_nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));

    // Bulk: every bad item on stderr and nothing written, then the corrected file, whose
    // answer (with the secrets) goes to a file only its owner can read.
    let bad = dir.file(
        "bad.json",
        &json!({"users": [{"id": "bob", "org_id": "acme", "name": "Bob"}],
                "keys": [{"name": "a", "org_id": "acme", "user_id": "bob"},
                         {"name": "b", "org_id": "nope"}],
                "budgets": [{"scope": "user", "scope_id": "ghost", "period": "daily", "limit_usd": "5"}]})
        .to_string(),
    );
    let o = admin(&["bulk", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("2 of 4 items cannot be applied; nothing was written"),
        "{err}"
    );
    assert!(
        err.contains("keys[1].org_id (422): no organisation \"nope\""),
        "{err}"
    );
    assert!(err.contains("budgets[0].scope_id (422)"), "{err}");
    let good = dir.file(
        "good.json",
        &json!({"users": [{"id": "bob", "org_id": "acme", "name": "Bob"}],
                "keys": [{"name": "a", "org_id": "acme", "user_id": "bob"},
                         {"name": "b", "org_id": "acme"}],
                "budgets": [{"scope": "user", "scope_id": "bob", "period": "daily", "limit_usd": "5"}]})
        .to_string(),
    );
    let answer = dir.0.path().join("answer.json");
    let o = admin(&[
        "bulk",
        "--out",
        answer.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("created 1 users, 2 keys, 1 budgets; revoked 0 keys"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("tg-"), "secrets only in the file");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&answer).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let done: Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    let bulk_secrets = common::each_str(&done["keys"], "secret");
    assert_eq!(bulk_secrets.len(), 2);
    let o = admin(&[
        "bulk",
        "--out",
        answer.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("must not exist"), "{}", stderr(&o));

    // API tokens: a viewer of acme, created, used, listed (never its secret), revoked, and
    // the whole story in the audit log.
    let o = admin(&[
        "tokens", "create", "--role", "viewer", "--org", "acme", "--name", "ro",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let created = stdout(&o);
    let line = |prefix: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .to_string()
    };
    let (viewer, viewer_id) = (line("secret: "), line("id: "));
    assert!(viewer.starts_with("tgt-"), "{created}");
    let as_viewer = |args: &[&str]| {
        let mut c = tollgate(args);
        c.env("TOLLGATE_URL", &url)
            .env("TOLLGATE_ADMIN_TOKEN", &viewer);
        run(&mut c)
    };
    let o = as_viewer(&["budgets", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("	org	acme	monthly	"), "{}", stdout(&o));
    let o = as_viewer(&["keys", "create", "--org", "acme"]);
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    let o = admin(&["tokens", "list", "--org", "acme"]);
    let table = stdout(&o);
    assert!(table.starts_with("ID	ROLE	ORG	NAME	PREFIX"), "{table}");
    assert!(
        table.contains(&format!("{viewer_id}	viewer	acme	ro	{}", &viewer[..11])),
        "{table}"
    );
    assert!(!table.contains(&viewer[11..]), "{table}");
    let o = admin(&["tokens", "revoke", &viewer_id]);
    assert!(
        stdout(&o).starts_with(&format!("revoked {viewer_id} at ")),
        "{}",
        stderr(&o)
    );
    let o = as_viewer(&["budgets", "list"]);
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    let o = admin(&["tokens", "list", "--include-revoked"]);
    assert!(stdout(&o).contains(&viewer_id), "{}", stdout(&o));
    let o = admin(&["audit", "--object-type", "token", "--limit", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let actions: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["POST /v1/tokens/{id}/revoke", "POST /v1/tokens"]);
    let o = admin(&["audit", "--actor", "admin-env", "--object-type", "key"]);
    let page: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["object_id"] == id.as_str() && e["after"]["revoked_at"].is_i64()));

    // The wrong token is refused, and the verbs say so.
    let mut c = tollgate(&["budgets", "list"]);
    c.env("TOLLGATE_URL", &url)
        .env("TOLLGATE_ADMIN_TOKEN", DATAPLANE);
    let o = run(&mut c);
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));

    drop(server);
    let logs = logs.join().unwrap();
    assert!(logs.contains("tollgate control plane serving"), "{logs}");
    // Debug logs name routes and statuses, never a token or a key secret.
    assert!(logs.contains("route=\"/v1/usage\" status=200"), "{logs}");
    assert!(logs.contains("route=\"/v1/bulk\" status=200"), "{logs}");
    for secret in [
        ADMIN,
        DATAPLANE,
        secret.as_str(),
        reporter_secret.as_str(),
        viewer.as_str(),
    ]
    .into_iter()
    .chain(bulk_secrets.iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// `tollgate cost --response` prices a whole provider answer as the filter settles it: the
/// served model, the tier that served, the searches it ran at the context the request asked
/// for; JSON bodies and recorded streams (the golden fixtures of core's usage tests).
#[test]
fn cost_prices_a_whole_answer_as_the_filter_settles_it() {
    let dir = TempDir::new("cost-answer");
    let prices = dir.file(
        "prices.json",
        &json!({
            "gpt-5": {"litellm_provider": "openai", "mode": "chat",
                      "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                      "input_cost_per_token_flex": 6.25e-07, "output_cost_per_token_flex": 5e-06,
                      "search_context_cost_per_query": {"search_context_size_low": 0.025,
                          "search_context_size_medium": 0.0275, "search_context_size_high": 0.03}},
            "gpt-4o": {"litellm_provider": "openai", "mode": "chat",
                       "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                       "cache_read_input_token_cost": 1.25e-06,
                       "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
                       "cache_read_input_token_cost_priority": 2.125e-06},
            "claude-sonnet-4-5": {"litellm_provider": "anthropic", "mode": "chat",
                                  "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}
        })
        .to_string(),
    );
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../filter/core/tests/fixtures/usage");
    let request = dir.file(
        "request.json",
        r#"{"model": "gpt-5", "input": "q",
            "tools": [{"type": "web_search", "search_context_size": "low"}]}"#,
    );
    let answer = |file: &str, api: &str, extra: &[&str]| -> Value {
        let path = fixtures.join(file);
        let mut args = vec![
            "cost",
            "--prices-file",
            prices.to_str().unwrap(),
            "--api",
            api,
            "--response",
            path.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = run(&mut tollgate(&args));
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        serde_json::from_str(stdout(&o).trim()).unwrap()
    };
    // Flex (input 8412 × 0.625/M, output 486 × 5/M, reasoning 448 × 5/M) and two searches at
    // the low context the request asked for (2 × 0.025).
    let v = answer(
        "openai_responses_web_search.json",
        "openai-responses",
        &["--request", request.to_str().unwrap()],
    );
    assert_eq!(v["priced_as"], "gpt-5", "{v}");
    assert_eq!(v["served_model"], "gpt-5-2025-08-07");
    assert_eq!(v["usage"]["service_tier"], "flex");
    assert_eq!(v["usage"]["web_searches"], 2);
    assert_eq!(v["cost"]["web_search"], "0.05");
    assert_eq!(v["total_usd"], "0.0599275", "{v}");
    assert!(v["reserved_usd"].is_string(), "{v}");
    // Without the request the context is the default, medium.
    let v = answer("openai_responses_web_search.json", "openai-responses", &[]);
    assert_eq!(v["cost"]["web_search"], "0.055");
    // A recorded stream served at priority: 141 × 4.25/M + 1792 cached × 2.125/M + 12 × 17/M.
    let v = answer("openai_chat_priority.sse", "openai-chat", &[]);
    assert_eq!(v["complete"], true);
    assert_eq!(v["usage"]["service_tier"], "priority");
    assert_eq!(v["total_usd"], "0.00461125", "{v}");
    // A stream cut short (no `message_stop`) says so: the filter charges it by policy.
    let recorded = std::fs::read_to_string(fixtures.join("anthropic_messages.sse")).unwrap();
    let stop = recorded.find("event: message_stop").unwrap();
    let cut = dir.file("cut.sse", &recorded[..stop]);
    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--api",
        "anthropic-messages",
        "--response",
        cut.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["complete"], false, "{v}");
    assert_eq!(v["priced_as"], "claude-sonnet-4-5", "{v}");
    // No answer at all is an error naming it.
    let empty = dir.file("empty.json", "{}");
    let o = run(&mut tollgate(&[
        "cost",
        "--prices-file",
        prices.to_str().unwrap(),
        "--api",
        "openai-chat",
        "--response",
        empty.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("response"), "{}", stderr(&o));
}
