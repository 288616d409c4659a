//! The console at `/ui` in a real browser (Debian's headless Chromium driven by selenium,
//! `tests/e2e/python/console_e2e.py`) after real traffic through real Envoy to the mock
//! provider: a manager of the organisation signs in with its API token and sees the budget's
//! bar at the share of its limit the ledger says, the spend chart's total and rows equal to
//! `GET /v1/spend`'s (and the CSV export equal to the rows), the budget's keys and models, the
//! price book; it creates a key through the page, which Envoy then admits, and revokes it
//! through the page, after which Envoy refuses it. Screenshots of every page are written to
//! `$CARGO_TARGET_DIR/console-screenshots/` (not committed; `docs/console.png` is one).
//!
//! Fails (never skips) when Chromium or its driver cannot start: `bash scripts/setup.sh`
//! installs both. Run with `cargo test -p tollgate-tests --test console`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;
use tollgate_tests::control_plane::decimal;
use tollgate_tests::{eventually, python};

use common::{
    chat, client, cost_of, key_spend_reaches, synced_chain, two_intervals, wait_key_known,
};

/// Chat completions sent before the browser looks.
const REQUESTS: usize = 5;

#[test]
fn a_manager_sees_the_ledger_in_the_console_and_a_key_it_revokes_is_refused() {
    let Some(stack) = common::stack() else { return };
    let Some(py) = common::python() else { return };
    let (api, chain) = synced_chain(&stack, "console");
    wait_key_known(&stack.url(), &chain.secret);

    // Real traffic through Envoy, until the ledger holds all of it.
    let http = client();
    let mut served = Vec::new();
    for i in 0..REQUESTS {
        let (req, status, body) = chat(&http, &stack.url(), &chain.secret, &format!("console {i}"));
        assert_eq!(status, 200, "{body}\n{}", stack.logs());
        served.push(req);
    }
    let total = cost_of(&served);
    assert!(total > Decimal::ZERO);
    key_spend_reaches(&stack, &chain.key_id, REQUESTS, total);
    // A daily budget of four times what was spent (back-filled from the ledger): 25 %.
    let limit = total * Decimal::from(4);
    let budget = api
        .create_budget(
            "key",
            &chain.key_id,
            "daily",
            &limit.normalize().to_string(),
        )
        .unwrap();
    let listed = api.get(&format!("/v1/budgets/{budget}")).unwrap();
    assert_eq!(decimal(&listed["spent_usd"]), Some(total), "{listed}");
    // Two more, in shadow mode (they warn and count, never deny, so the traffic below goes
    // through): the project's at 80 % past its soft limit, the organisation's at 200 %.
    let shadow = |scope: &str, id: &str, limit: Decimal, soft: Option<Decimal>| {
        let mut body = json!({"scope": scope, "scope_id": id, "period": "monthly",
                              "limit_usd": limit.normalize().to_string(), "mode": "shadow"});
        if let Some(soft) = soft {
            body["soft_limit_usd"] = json!(soft.normalize().to_string());
        }
        api.post("/v1/budgets", &body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let project = shadow(
        "project",
        &chain.project,
        total * Decimal::new(125, 2),
        Some(total),
    );
    let org = shadow("org", &chain.org, total / Decimal::from(2), None);
    let ledger = api.get("/v1/spend").unwrap();
    let ledger_total = decimal(&ledger["total_usd"]).unwrap();
    assert_eq!(ledger_total, total);

    // The person signing in: a manager of the chain's organisation.
    let token = api
        .post(
            "/v1/tokens",
            &json!({"name": "console e2e", "role": "manager", "org_id": chain.org}),
        )
        .unwrap();
    let token = token["secret"].as_str().unwrap().to_string();
    stack.secrets.add(&token);

    let shots = tollgate_testkit::wasm::target_dir().join("console-screenshots");
    let secret_file = stack.dir.join("console-key.secret");
    let hook_secret_file = stack.dir.join("console-webhook.secret");
    // A receiver the page subscribes to the budget's 27 % (it is at 25 %: one more request,
    // 5 % of the limit, crosses it).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (hook_url, inbox, receiver) = rt.block_on(tollgate_testkit::webhook::receiver(0));
    let spec = json!({
        "org": chain.org,
        "budget_id": budget,
        "key_id": chain.key_id,
        "percent": "25 %",
        // The overview, worst first.
        "overview": [[org, "200 %"], [project, "80 %"], [budget, "25 %"]],
        "ledger_total": ledger_total.to_string(),
        "requests": REQUESTS,
        "model": "gpt-4o-mini",
        "key_id_to_revoke": "",
        "secret_file": secret_file,
        "webhook_url": hook_url,
        "threshold": 27,
        "webhook_secret_file": hook_secret_file,
        "alert_kind": "threshold_27",
        "shots": shots,
    });
    let env = [("TOLLGATE_CONSOLE_TOKEN", token.as_str())];
    let run = |phase: &str, spec: &serde_json::Value| {
        python::run(
            &py,
            "console_e2e.py",
            &[phase, &stack.cp.url(), &spec.to_string()],
            &env,
            &stack.secrets,
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()))
    };
    let lines = run("create", &spec);
    let created = lines
        .iter()
        .find(|l| l["check"] == "key created")
        .unwrap_or_else(|| panic!("no key created: {lines:?}"));
    let new_key = created["key_id"].as_str().unwrap().to_string();
    let new_secret = std::fs::read_to_string(&secret_file).unwrap();
    stack.secrets.add(&new_secret);
    std::fs::remove_file(&secret_file).unwrap();
    let hook_secret = std::fs::read_to_string(&hook_secret_file).unwrap();
    stack.secrets.add(&hook_secret);
    std::fs::remove_file(&hook_secret_file).unwrap();
    assert!(lines.iter().filter(|l| l["check"] == "screenshot").count() >= 7);

    // The key made in the page reaches Envoy and is admitted.
    stack.wait_for_sync().unwrap();
    wait_key_known(&stack.url(), &new_secret);
    let (_, status, body) = chat(&http, &stack.url(), &new_secret, "made in the console");
    assert_eq!(status, 200, "{body}");

    // Revoked through the page: Envoy refuses it once the snapshot has moved.
    let mut spec = spec;
    spec["key_id_to_revoke"] = json!(new_key);
    run("revoke", &spec);
    let revoked = Instant::now();
    let refused = eventually(Duration::from_secs(15), || {
        let (_, status, body) = chat(&http, &stack.url(), &new_secret, "after revocation");
        (status == 401).then_some(body)
    });
    let body =
        refused.unwrap_or_else(|| panic!("Envoy still admits the revoked key\n{}", stack.logs()));
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    eprintln!(
        "revoked in the console; refused by Envoy {:?} later (two sync intervals: {:?})",
        revoked.elapsed(),
        two_intervals(&stack)
    );
    let key = api.get(&format!("/v1/keys/{new_key}")).unwrap();
    assert!(key["revoked_at"].is_i64(), "{key}");
    // The first key still works: only the revoked one is refused. Its spend crosses the
    // threshold the page subscribed to: the receiver gets it, signed with the secret the page
    // showed, and the page's delivery log shows it delivered.
    assert_eq!(
        chat(&http, &stack.url(), &chain.secret, "still fine").1,
        200
    );
    let got = inbox
        .wait_for(1, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no alert within 15 s\n{}", stack.logs()));
    assert_eq!(got[0].event, "threshold_27");
    let now = tollgate_control_plane::store::unix_now();
    tollgate_control_plane::alerts::signature::verify(
        &hook_secret,
        &got[0].signature,
        &got[0].body,
        now,
        300,
    )
    .unwrap();
    let lines = run("alerts", &spec);
    assert!(
        lines.iter().any(|l| l["check"] == "delivery shown"),
        "{lines:?}"
    );
    receiver.abort();
}
