//! `tollgate-core`: the pure logic of Tollgate, shared by the Envoy filter and the control plane.
//!
//! Prices ([`pricing`]), usage extraction from provider responses ([`usage`]), exact cost
//! ([`cost`]), budget windows and decisions ([`budget`]), request estimates ([`estimate`]) and
//! the wire formats between filter and control plane ([`snapshot`], [`event`], [`config`]).
//!
//! No I/O and no clock: callers pass `now` as Unix seconds. Builds for native and
//! `wasm32-wasip1`; run its tests with `cargo test -p tollgate-core`.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod budget;
pub mod codec;
pub mod config;
pub mod cost;
pub mod endpoint;
pub mod estimate;
pub mod event;
pub mod gate;
pub mod local;
pub mod pricing;
pub mod principal;
pub mod provider;
pub mod snapshot;
pub mod sync;
pub mod usage;

pub use rust_decimal::Decimal;
