//! `tollgate-testkit`: what the tests and benches share and the product never ships (a
//! dev-dependency only; linkerd keeps the same in `linkerd/app/test`).
//!
//! - [`wasm`]: the workspace's proxy-wasm modules, built for `wasm32-wasip1` once per test
//!   process (the harness's tests, the end-to-end tests);
//! - `postgres` (feature `db`): a throwaway PostgreSQL server the test binary starts by itself,
//!   and fresh databases on it;
//! - `store` (feature `db`): migrated control-plane stores on SQLite and PostgreSQL,
//!   [`store_test!`] (one body, both backends) and [`with_connection!`] (a connection of its
//!   own, behind the store's back).
//! - `webhook` (feature `receiver`): a webhook receiver on 127.0.0.1 for the alert tests.
//!
//! The `db` feature brings in the control plane; the crate depends on it and the control plane
//! dev-depends on this crate, which Cargo allows: its integration tests (`control-plane/tests/`)
//! then see one copy of its types. Its unit tests (`control-plane/src`) use nothing from here.
#![allow(clippy::print_stdout)]

#[cfg(feature = "db")]
pub mod postgres;
#[cfg(feature = "db")]
pub mod store;
pub mod wasm;
#[cfg(feature = "receiver")]
pub mod webhook;

use std::time::{Duration, Instant};

/// The sqlx [`with_connection!`] opens connections with.
#[cfg(feature = "db")]
pub use sqlx;
#[cfg(feature = "db")]
pub use store::{postgres_store, postgres_url, sqlite_store, test_db, TempSqlite, TestDb};

/// Calls `check` every 20 ms until it returns `Some`, for at most `timeout`; `None` if it never
/// did. The last call happens at or after the deadline, so a check that passes just in time
/// is seen. (The end-to-end tests and the mock upstream's Envoy tests wait with it.)
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
