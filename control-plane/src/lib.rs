//! `tollgate-control-plane`: the `tollgate` service and CLI. It owns budgets, prices, virtual
//! keys and the usage ledger in SQL (SQLite by default, PostgreSQL for several replicas), and
//! serves the Envoy filter a versioned snapshot of what it enforces.
//!
//! - [`store`]: the SQL store on both backends (migrations in `../migrations/`).
//! - [`ingest`]: usage batches → ledger + per-budget per-window spend counters.
//! - [`snapshot`]: building, caching and serving the snapshot by version.
//! - [`http`]: the REST API v1 ([`http::app`]), its auth, errors and OpenAPI document.
//! - [`alerts`]: webhook subscriptions, the alert outbox and its delivery.
//! - [`ui`]: the budget owners' web console at `/ui`, served by the same router.
//! - [`cli`]: the command line; `main.rs` only parses and calls [`cli::run`].
//!
//! Tests: `cargo test -p tollgate-control-plane` (they start their own PostgreSQL; see the
//! `tollgate-testkit` crate, `tests/testkit/`). Benches: `cargo bench -p tollgate-benches`.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

/// A statement whose text is built at run time, for sqlx 0.9's injection guard. Only our own
/// constants (column lists, table names, placeholders) are formatted in: every value a caller
/// gives is bound as a parameter. Defined before the modules so that all of them see it.
macro_rules! sql {
    ($($fmt:tt)*) => {
        ::sqlx::AssertSqlSafe(::std::format!($($fmt)*))
    };
}

pub mod alerts;
pub mod budget_metrics;
pub mod cli;
pub mod client;
pub mod clock;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod prices;
pub mod quote;
pub mod snapshot;
pub mod store;
pub mod timezone;
pub mod ui;
