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

/// The sqlx [`with_connection!`] opens connections with.
#[cfg(feature = "db")]
pub use sqlx;
#[cfg(feature = "db")]
pub use store::{postgres_store, postgres_url, sqlite_store, test_db, TempSqlite, TestDb};
