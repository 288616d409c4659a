//! `tollgate-benches`: shared set-up for the control-plane benches in `benches/benches/`:
//! stores on both backends (`tollgate-testkit`), a seeded fleet ([`fleet`]), usage batches,
//! and the app to drive.
//!
//! Run them with `cargo bench -p tollgate-benches` (see `README.md` beside this crate).
#![allow(clippy::print_stdout)] // benches report on stdout

pub mod fleet;

pub use fleet::seed_fleet;

use std::sync::Arc;

use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::http::auth::Tokens;
use tollgate_control_plane::http::AppState;
pub use tollgate_control_plane::store::Backend;
use tollgate_control_plane::store::Store;
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::{Charge, UsageBatch, UsageEvent};
use tollgate_core::identity::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::Usage;
use tollgate_testkit::TestDb;

/// The fleet the ingestion benches post to (`ingest`, `ingest_floor`, `replicas`): events
/// per batch, keys, organisations and budgets.
pub const BATCH: u64 = 1_000;
/// Keys of the ingestion fleet.
pub const KEYS: u64 = 10_000;
/// Organisations of the ingestion fleet.
pub const ORGS: u64 = 100;
/// Budgets of the ingestion fleet.
pub const BUDGETS: usize = 10_000;

/// Admin token of the bench apps.
pub const ADMIN: &str = "bench-admin-token-0123456789";
/// Data-plane token of the bench apps.
pub const DATAPLANE: &str = "bench-dataplane-token-0123456789";

/// The databases to bench: both, or only those named in `TOLLGATE_BENCH_BACKENDS`
/// (`sqlite,postgres`). SQLite is a file in the temp directory (WAL, synchronous=FULL);
/// PostgreSQL `TOLLGATE_TEST_PG_URL`, else a throwaway server with default durability.
pub fn selected_backends() -> Vec<Backend> {
    let want =
        std::env::var("TOLLGATE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    [Backend::Sqlite, Backend::Postgres]
        .into_iter()
        .filter(|b| want.contains(b.as_str()))
        .collect()
}

/// A migrated empty database (a SQLite file is removed when it drops).
pub async fn store(backend: Backend) -> TestDb {
    if backend == Backend::Postgres {
        // Honest numbers: the bench server keeps PostgreSQL's default durability.
        std::env::set_var("TOLLGATE_PG_DURABLE", "1");
    }
    match tollgate_testkit::test_db(backend).await {
        Some(db) => db,
        None => panic!("PostgreSQL unavailable (set TOLLGATE_BENCH_BACKENDS=sqlite to skip)"),
    }
}

/// A migrated database on `backend` with a fleet seeded by [`seed_fleet`] (`orgs`
/// organisations, `budgets` budgets, `keys` keys).
pub async fn seeded_store(backend: Backend, orgs: usize, budgets: usize, keys: usize) -> TestDb {
    let db = store(backend).await;
    if let Err(e) = seed_fleet(&db.url, orgs, budgets, keys, now()).await {
        panic!("seeding {}: {e}", backend.as_str());
    }
    db
}

/// The runtime a bench serves from: two workers, as every bench here had.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a runtime: {e}"),
    }
}

/// App state over `store`, system clock, first snapshot built.
pub async fn state(store: Store) -> AppState {
    let tokens = match Tokens::new(ADMIN, DATAPLANE) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let state = AppState::new(store, tokens, Clock::system());
    if let Err(e) = state.snapshots.rebuild().await {
        panic!("first snapshot: {e}");
    }
    state
}

/// `POST /v1/usage` of `batch` as the enrolled reporter whose secret is `secret`, the body
/// encoded here so that a bench times only the call. (A secret that is no header value gives
/// an empty request, which the benches' status check refuses.)
pub fn usage_post(secret: &str, batch: &UsageBatch) -> axum::http::Request<axum::body::Body> {
    let body = serde_json::to_vec(batch).unwrap_or_default();
    axum::http::Request::post("/v1/usage")
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {secret}"),
        )
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
        .unwrap_or_default()
}

/// The sum over `iters` runs of `run`, each returning how long its measured part took: what
/// criterion's `iter_custom` asks of async work whose set-up stays untimed.
pub async fn total_of<F, Fut>(iters: u64, mut run: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::time::Duration>,
{
    let mut total = std::time::Duration::ZERO;
    for _ in 0..iters {
        total += run().await;
    }
    total
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    tollgate_control_plane::store::unix_now()
}

/// Batch number `n` of `size` events from reporter `reporter`, charged to keys of a fleet
/// seeded with [`seed_fleet`] (`keys` keys, `orgs` orgs): each event's chain has
/// key, user, project and org, so it hits every budget on those four links.
pub fn batch(reporter: &str, n: u64, size: u64, keys: u64, orgs: u64, ts: i64) -> UsageBatch {
    let events = (0..size)
        .map(|i| {
            let seq = n * size + i + 1;
            let k = (seq * 7919) % keys.max(1);
            let g = k / 10;
            let cost = rust_decimal::Decimal::new(i64::try_from(seq % 997 + 1).unwrap_or(1), 6);
            UsageEvent {
                id: format!("{reporter}-{seq}"),
                reporter: reporter.to_string(),
                seq,
                ts,
                principal: Arc::new(Principal {
                    key: Some(format!("key-{k}")),
                    user: Some(format!("usr-{g}")),
                    project: Some(format!("prj-{g}")),
                    org: format!("org-{}", g % orgs.max(1)),
                }),
                model: "gpt-4o".into(),
                api: ApiFormat::OpenAiChat,
                usage: Usage {
                    input_uncached: 1200,
                    output: 300,
                    ..Usage::default()
                },
                cost: CostBreakdown {
                    input: cost,
                    total: cost,
                    ..CostBreakdown::default()
                },
                price_version: 1,
                charge: Charge::Actual,
                uncharged: None,
                status: 200,
                stream: true,
                requested_model: None,
                soft_warned: Vec::new(),
                denied: None,
            }
        })
        .collect();
    UsageBatch {
        events,
        reporter_secret: None,
    }
}

/// The `tollgate` binary's allocator (see `control-plane/src/main.rs`), so that the benches
/// measure what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
