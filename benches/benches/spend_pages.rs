//! The console's pages over a large ledger (issue 16): `GET /ui` (the overview, 10,000 budgets)
//! and `GET /ui/spend` (30 days per day stacked by model, in UTC and in Asia/Kathmandu, 7 days
//! per hour, as a manager of one organisation, and stacked by key, which reads the ledger),
//! through the whole router (`app(state)` and tower's `oneshot`, a signed-in console session),
//! on SQLite with 10,000,000 ledger rows over 30 days. Goal: the overview and the 30-day chart
//! ≤ 200 ms p95. A small program, not criterion: it prints p50/p95/p99 per page.
//!
//! The database is generated once and kept (generation takes minutes): at
//! `TOLLGATE_SPEND_DB`, default `spend-10m.db` in cargo's target tmp dir
//! (`target/tmp/`, three files with the WAL, about 5 GB). Delete it to generate again. How it is
//! made, so that it is what a long-running control plane would hold:
//! 1. migrations 0001–0010 only (copied to a temporary directory: the schema before the rollup);
//! 2. the fleet in bulk SQL: 10 organisations, 100 projects, 2,000 users, 7,890 keys (chains
//!    key → user → project → organisation) and one budget on each of them (10,000 budgets:
//!    organisations and projects monthly, users weekly, keys daily; five time zones);
//! 3. 9,500,000 ledger rows in bulk SQL (`INSERT … SELECT` over a recursive counter), in time
//!    order over the 30 days before the bench's fixed "now", each with a key of the fleet and
//!    its chain, one of 6 models (40/20/15/10/10/5 %), 200–4,199 prompt and 20–819 output
//!    tokens, and the exact cost of its model's per-token prices (decimal scales 6 to 9), with
//!    a `detail` JSON like ingestion's;
//! 4. `Store::migrate`: migration 0011 and the rollup built from those rows by the same code
//!    that builds it for a database upgraded with its ledger (`Store::rebuild_spend_rollup`);
//!    its time is printed;
//! 5. 500,000 more events (1 % denial records) through `Store::ingest` in 1,000-event batches,
//!    over the last 12 hours: the real ingestion path, rollup kept in its transaction.
//!
//! The spend counters of the bulk rows are not filled (the overview shows the budgets' own
//! counters; only the ingested share moves them), which changes no query's cost.
//!
//! Run: `cargo bench -p tollgate-benches --bench spend_pages` (thin LTO builds faster:
//! `CARGO_PROFILE_BENCH_LTO=off CARGO_PROFILE_BENCH_CODEGEN_UNITS=16`). Knobs:
//! `TOLLGATE_SPEND_DB`, `TOLLGATE_SPEND_ITERS` (timed requests per page, 50; 5 untimed
//! first), `TOLLGATE_SPEND_LEDGER_ITERS` (for the ledger path, 3; one untimed first; 0 skips it),
//! `TOLLGATE_SPEND_ONLY` (only the pages whose name contains it, e.g. `overview`).
//! Not in `scripts/test.sh`: generating takes minutes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use tollgate_benches::{runtime, ADMIN, DATAPLANE};
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::http::auth::Tokens;
use tollgate_control_plane::http::{app, AppState};
use tollgate_control_plane::ingest::BudgetCache;
use tollgate_control_plane::store::tokens::{NewToken, TokenRole};
use tollgate_control_plane::store::{sqlite_options, Store};
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::{Charge, Denied, UnchargedReason, UsageEvent};
use tollgate_core::identity::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::Usage;
use tower::ServiceExt;

/// The bench's "now": 2025-11-30 12:00 UTC (fixed, so a kept database stays in range).
const NOW: i64 = 1_764_504_000;
const DAY: i64 = 86_400;
const SPAN: i64 = 30 * DAY;
const BULK_ROWS: i64 = 9_500_000;
const INGESTED: i64 = 500_000;
const BATCH: i64 = 1_000;
const ORGS: i64 = 10;
const PROJECTS: i64 = 100;
const USERS: i64 = 2_000;
const KEYS: i64 = 7_890;
const HOST: &str = "console.bench";

/// Models: name, share (percent, cumulative), price scale, input and output price per token
/// in units of 10^-scale USD.
const MODELS: [(&str, i64, u32, i64, i64); 6] = [
    ("gpt-4o-mini", 40, 8, 15, 60),
    ("gpt-4o", 60, 7, 25, 100),
    ("claude-sonnet-4", 75, 6, 3, 15),
    ("claude-haiku-4", 85, 7, 8, 40),
    ("gemini-2.0-flash-lite", 95, 9, 75, 300),
    ("o3", 100, 6, 2, 8),
];

fn db_path() -> PathBuf {
    std::env::var_os("TOLLGATE_SPEND_DB").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("spend-10m.db"),
        PathBuf::from,
    )
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Key `k`'s chain: user `k % USERS`, its project `user % PROJECTS`, its org `project % ORGS`.
fn chain(k: i64) -> (i64, i64, i64) {
    let u = k % USERS;
    let p = u % PROJECTS;
    (u, p, p % ORGS)
}

async fn exec(conn: &mut sqlx::SqliteConnection, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// Steps 1–3 of the module doc, on a connection of its own.
async fn load_before_rollup(path: &Path) {
    use sqlx::Connection;
    // 1. The schema before migration 0011.
    let old = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.as_str() < "0011" {
            std::fs::copy(entry.path(), old.path().join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    let url = path.to_string_lossy().into_owned();
    let mut conn = sqlx::SqliteConnection::connect_with(&sqlite_options(&url).unwrap())
        .await
        .unwrap();
    migrator.run(&mut conn).await.unwrap();

    // 2. The fleet.
    let t = Instant::now();
    exec(&mut conn, "BEGIN IMMEDIATE").await;
    let counter = |n: i64| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {n}) "
        )
    };
    exec(
        &mut conn,
        &format!(
            "{} INSERT INTO orgs (id, name, created_at) SELECT 'org-' || i, 'Org ' || i, {NOW} FROM n",
            counter(ORGS)
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "{} INSERT INTO projects (id, org_id, name, created_at) \
             SELECT 'prj-' || i, 'org-' || (i % {ORGS}), 'Project ' || i, {NOW} FROM n",
            counter(PROJECTS)
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "{} INSERT INTO users (id, org_id, name, email, created_at) \
             SELECT 'usr-' || i, 'org-' || (i % {PROJECTS} % {ORGS}), 'User ' || i, NULL, {NOW} FROM n",
            counter(USERS)
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "{} INSERT INTO virtual_keys (id, sha256, prefix, name, org_id, project_id, user_id, created_at) \
             SELECT 'key-' || i, printf('%064d', i), 'tg-bench', 'Key ' || i, \
             'org-' || (i % {USERS} % {PROJECTS} % {ORGS}), 'prj-' || (i % {USERS} % {PROJECTS}), \
             'usr-' || (i % {USERS}), {NOW} FROM n",
            counter(KEYS)
        ),
    )
    .await;
    // One budget on each organisation, project, user and key: 10,000.
    for (scope, prefix, n, period) in [
        ("org", "org", ORGS, "monthly"),
        ("project", "prj", PROJECTS, "monthly"),
        ("user", "usr", USERS, "weekly"),
        ("key", "key", KEYS, "daily"),
    ] {
        exec(
            &mut conn,
            &format!(
                "{} INSERT INTO budgets (id, scope, scope_id, period, timezone, limit_usd, \
                 soft_limit_usd, mode, created_at, updated_at) \
                 SELECT 'bud-{prefix}-' || i, '{scope}', '{prefix}-' || i, '{period}', \
                 CASE i % 5 WHEN 0 THEN 'UTC' WHEN 1 THEN 'Europe/Paris' \
                   WHEN 2 THEN 'America/New_York' WHEN 3 THEN 'Asia/Kathmandu' \
                   ELSE 'Australia/Sydney' END, \
                 '1000', '800', 'enforce', {NOW}, {NOW} FROM n",
                counter(n)
            ),
        )
        .await;
    }
    exec(
        &mut conn,
        "UPDATE meta SET version = version + 1, keys_version = keys_version + 1, \
         budgets_version = budgets_version + 1 WHERE id = 1",
    )
    .await;
    exec(&mut conn, "DELETE FROM key_buckets").await;
    exec(
        &mut conn,
        &tollgate_control_plane::store::key_buckets::refresh_all_sql(false),
    )
    .await;
    exec(&mut conn, "COMMIT").await;
    println!("fleet loaded in {:.1?}", t.elapsed());

    // 3. The bulk of the ledger.
    let t = Instant::now();
    let models: String = MODELS
        .iter()
        .enumerate()
        .map(|(m, (name, upto, scale, pin, pout))| {
            let from = if m == 0 { 0 } else { MODELS[m - 1].1 };
            format!(
                "({from}, {upto}, '{name}', {scale}, {}, {pin}, {pout})",
                10_i64.pow(*scale)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let start = NOW - SPAN;
    const CHUNK: i64 = 500_000;
    let mut lo = 0;
    while lo < BULK_ROWS {
        let hi = (lo + CHUNK).min(BULK_ROWS);
        exec(&mut conn, "BEGIN IMMEDIATE").await;
        exec(
            &mut conn,
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {hi}), \
                 models(lo, hi, name, scale, unit, pin, pout) AS (VALUES {models}), \
                 r AS (SELECT i, {start} + (i * {SPAN_BULK}) / {BULK_ROWS} AS ts, \
                   (i * 7919) % {KEYS} AS k, (i * 2654435761) % 100 AS pick, \
                   200 + (i * 37) % 4000 AS inp, 20 + (i * 53) % 800 AS outp FROM n), \
                 c AS (SELECT r.*, m.name, m.scale, m.unit, inp * m.pin + outp * m.pout AS units \
                   FROM r JOIN models m ON r.pick >= m.lo AND r.pick < m.hi), \
                 t AS (SELECT c.*, printf('%d.%0' || scale || 'd', units / unit, units % unit) AS cost \
                   FROM c) \
                 INSERT INTO usage_events (id, reporter, seq, ts, org_id, project_id, user_id, \
                   key_id, model, api, charge, uncharged, status, stream, price_version, \
                   input_tokens, output_tokens, cost_usd, detail, received_at) \
                 SELECT printf('bulk-%010d', i), 'bench-bulk', i + 1, ts, \
                   'org-' || (k % {USERS} % {PROJECTS} % {ORGS}), 'prj-' || (k % {USERS} % {PROJECTS}), \
                   'usr-' || (k % {USERS}), 'key-' || k, name, 'open_ai_chat', 'actual', NULL, 200, 1, 1, \
                   inp, outp, cost, \
                   '{{\"usage\":{{\"input_uncached\":' || inp || ',\"output\":' || outp || \
                   '}},\"cost\":{{\"input\":\"' || cost || '\",\"total\":\"' || cost || '\"}}}}', \
                   ts + 2 FROM t",
                SPAN_BULK = SPAN - DAY / 2,
            ),
        )
        .await;
        exec(&mut conn, "COMMIT").await;
        lo = hi;
        println!("  ledger rows: {hi} ({:.0?})", t.elapsed());
    }
    println!("{BULK_ROWS} ledger rows loaded in {:.1?}", t.elapsed());
    conn.close().await.unwrap();
}

/// The exact cost of `inp` and `outp` tokens of model `m`.
fn cost_of(m: usize, inp: i64, outp: i64) -> Decimal {
    let (_, _, scale, pin, pout) = MODELS[m];
    Decimal::new(inp * pin + outp * pout, scale)
}

/// Step 5: the last 12 hours through `Store::ingest`.
async fn ingest_recent(store: &Store) {
    let t = Instant::now();
    let cache = BudgetCache::default();
    let first = NOW - DAY / 2;
    for b in 0..INGESTED / BATCH {
        let events: Vec<UsageEvent> = (0..BATCH)
            .map(|j| {
                let i = b * BATCH + j;
                let k = (i * 7919) % KEYS;
                let (u, p, o) = chain(k);
                let pick = (i * 2_654_435_761) % 100;
                let m = MODELS.iter().position(|x| pick < x.1).unwrap_or(0);
                let (inp, outp) = (200 + (i * 37) % 4000, 20 + (i * 53) % 800);
                let denied = i % 100 == 99;
                let cost = if denied {
                    Decimal::ZERO
                } else {
                    cost_of(m, inp, outp)
                };
                let ts = first + (i * (DAY / 2)) / INGESTED;
                UsageEvent {
                    id: format!("live-{i}"),
                    reporter: "bench-live".into(),
                    seq: u64::try_from(i + 1).unwrap(),
                    ts,
                    principal: std::sync::Arc::new(Principal {
                        key: Some(format!("key-{k}")),
                        user: Some(format!("usr-{u}")),
                        project: Some(format!("prj-{p}")),
                        org: format!("org-{o}"),
                    }),
                    model: MODELS[m].0.into(),
                    api: ApiFormat::OpenAiChat,
                    usage: if denied {
                        Usage::default()
                    } else {
                        Usage {
                            input_uncached: u64::try_from(inp).unwrap(),
                            output: u64::try_from(outp).unwrap(),
                            ..Usage::default()
                        }
                    },
                    cost: CostBreakdown {
                        input: cost,
                        total: cost,
                        ..CostBreakdown::default()
                    },
                    price_version: 1,
                    charge: if denied { Charge::Zero } else { Charge::Actual },
                    uncharged: denied.then_some(UnchargedReason::Denied),
                    status: if denied { 429 } else { 200 },
                    stream: true,
                    requested_model: None,
                    soft_warned: Vec::new(),
                    denied: denied.then(|| Denied {
                        budget: format!("bud-key-{k}"),
                        requests: 1,
                        first_ts: ts,
                    }),
                }
            })
            .collect();
        let out = store.ingest(&events, NOW, &cache).await.unwrap();
        assert_eq!(out.accepted, u64::try_from(BATCH).unwrap());
    }
    println!(
        "{INGESTED} events ingested through Store::ingest in {:.1?}",
        t.elapsed()
    );
}

/// The store over the kept database, generating it first when it is not complete.
async fn prepared_store() -> Store {
    let path = db_path();
    let url = path.to_string_lossy().into_owned();
    if path.exists() {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let rows: i64 = tollgate_testkit::with_connection!(&url, |conn, pg| {
            sqlx::query_scalar("SELECT count(*) FROM usage_events WHERE reporter = 'bench-live'")
                .fetch_one(&mut conn)
                .await
        })
        .unwrap_or(0);
        if rows == INGESTED {
            println!("using the kept database {}", path.display());
            return store;
        }
        println!("{} is incomplete: generating again", path.display());
        store.close().await;
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{url}{ext}"));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    println!("generating {} (minutes)", path.display());
    load_before_rollup(&path).await;
    let store = Store::connect(&url).await.unwrap();
    let t = Instant::now();
    store.migrate().await.unwrap();
    println!(
        "migration 0011 and the rollup of {BULK_ROWS} rows (Store::migrate) in {:.1?}",
        t.elapsed()
    );
    ingest_recent(&store).await;
    store
}

/// A signed-in console: the router and a session cookie.
struct Console {
    app: axum::Router,
}

impl Console {
    async fn sign_in(&self, token: &str) -> String {
        let body = format!("token={token}");
        let req = Request::post("/ui/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, format!("http://{HOST}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let c = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        c.split(';').next().unwrap().to_string()
    }

    /// One GET: its time and its body's length.
    async fn get(&self, uri: &str, cookie: &str) -> (Duration, usize) {
        let t = Instant::now();
        let req = Request::get(uri)
            .header(header::HOST, HOST)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let took = t.elapsed();
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
        (took, bytes.len())
    }
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn main() {
    runtime().block_on(async {
        let store = prepared_store().await;
        let tokens = Tokens::new(ADMIN, DATAPLANE).unwrap();
        let manager = store
            .create_token(
                &NewToken {
                    name: "bench manager".into(),
                    role: TokenRole::Manager,
                    org_id: Some("org-3".into()),
                },
                NOW,
            )
            .await
            .unwrap();
        // Where the overview's time goes: the store calls behind it (`http::budgets::views`).
        let (mut list, mut spend, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..10 {
            let t = Instant::now();
            let budgets = store.list_budgets_in(None, None, None).await.unwrap();
            list.push(t.elapsed());
            let t = Instant::now();
            store.spend_now(&budgets, NOW).await.unwrap();
            spend.push(t.elapsed());
            let t = Instant::now();
            store.window_counts(&budgets, NOW).await.unwrap();
            counts.push(t.elapsed());
        }
        for v in [&mut list, &mut spend, &mut counts] {
            v.sort();
        }
        println!(
            "overview's store calls, median of 10: list_budgets_in {:.1?}, spend_now {:.1?}, \
             window_counts {:.1?}",
            list[5], spend[5], counts[5]
        );
        let state = AppState::new(store, tokens, Clock::fixed(NOW));
        state.snapshots.rebuild().await.unwrap();
        let console = Console { app: app(state) };
        let admin = console.sign_in(ADMIN).await;
        let manager = console.sign_in(&manager.secret).await;
        let iters = env_u64("TOLLGATE_SPEND_ITERS", 50);
        let ledger_iters = env_u64("TOLLGATE_SPEND_LEDGER_ITERS", 3);
        let pages: [(&str, &str, &String, bool); 6] = [
            ("overview (10,000 budgets)", "/ui", &admin, false),
            ("spend, 30 days per day by model, UTC", "/ui/spend", &admin, false),
            (
                "spend, 30 days per day by model, Asia/Kathmandu",
                "/ui/spend?tz=Asia%2FKathmandu",
                &admin,
                false,
            ),
            (
                "spend, 7 days per hour by model, UTC",
                "/ui/spend?bucket=hour&from=2025-11-24&to=2025-11-30",
                &admin,
                false,
            ),
            ("spend, 30 days, manager of org-3", "/ui/spend", &manager, false),
            (
                "spend, 30 days stacked by key (ledger path)",
                "/ui/spend?stack=key",
                &admin,
                true,
            ),
        ];
        println!(
            "\n| page | requests | p50 ms | p95 ms | p99 ms | body bytes |\n|---|---:|---:|---:|---:|---:|"
        );
        let only = std::env::var("TOLLGATE_SPEND_ONLY").ok();
        for (name, uri, cookie, ledger) in pages {
            if only.as_deref().is_some_and(|o| !name.contains(o)) {
                continue;
            }
            let (warm, n) = if ledger {
                (ledger_iters.min(1), ledger_iters)
            } else {
                (5, iters)
            };
            if n == 0 {
                continue;
            }
            let mut size = 0;
            for _ in 0..warm {
                size = console.get(uri, cookie).await.1;
            }
            let mut times = Vec::new();
            for _ in 0..n {
                times.push(console.get(uri, cookie).await.0);
            }
            times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {name} (`GET {uri}`) | {n} | {:.1} | {:.1} | {:.1} | {size} |",
                ms(pct(&times, 50.0)),
                ms(pct(&times, 95.0)),
                ms(pct(&times, 99.0)),
            );
        }
    });
}
