//! `tollgate-core`: the pure logic of Tollgate, shared by the Envoy filter and the control plane.
//!
//! The modules in the order a request meets them:
//! - [`endpoint`]: metered, free (model lists) or refused, from the method and path;
//! - [`provider`]: one module per provider API (paths, request fields, usage, stream events);
//! - [`identity`]: the virtual key or trusted principal header → the chain key → user →
//!   project → org;
//! - [`admission`]: the cluster and snapshot checks, the request read once ([`estimate`]),
//!   its price and worst case; then [`budget`] decides every budget of the chain against
//!   [`local_spend`] (what this Envoy reserved and spent beyond its snapshot);
//! - [`reply`]: what the filter answers itself (denials, refusals) and the budget headers;
//! - [`settlement`]: the answer metered as it passes ([`usage`]), priced ([`cost`] at
//!   [`pricing`]'s rates) or charged by policy;
//! - [`sync_protocol`]: the usage queue record and the sync service's decisions; [`event`] the
//!   usage events it posts, [`snapshot`] what it pulls, [`shared_codec`] the binary encoding of
//!   what Envoy shared data and the shared queue carry; [`config`] the plugin configuration.
//!
//! No I/O and no clock: callers pass `now` as Unix seconds. Builds for native and
//! `wasm32-wasip1`; run its tests with `cargo test -p tollgate-core`.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod admission;
pub mod budget;
pub mod config;
pub mod cost;
pub mod denials;
pub mod endpoint;
pub mod estimate;
pub mod event;
pub mod identity;
pub mod local_spend;
pub mod pricing;
pub mod provider;
pub mod reply;
pub mod settlement;
pub mod shared_codec;
pub mod snapshot;
pub mod sync_protocol;
#[cfg(test)]
mod test_support;
pub mod usage;

pub use rust_decimal::Decimal;
