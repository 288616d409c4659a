//! A wasmtime host of the proxy-wasm ABI 0.2.1, to test and measure Tollgate's filter
//! outside Envoy.
//!
//! It loads any proxy-wasm module (it never links the filter crate), gives it every import
//! with Envoy's semantics (spec: <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1>,
//! behaviour: Envoy's `source/extensions/common/wasm/context.cc`), replays requests through
//! it and reports what it did. A test reads as a transcript:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tollgate_harness::{HttpResponse, Plugin, Request, Upstream};
//!
//! let wasm = std::fs::read("tollgate_filter.wasm")?;
//! let mut host = Plugin::builder(wasm)
//!     .configuration(r#"{"control_plane_cluster":"tollgate","sync_interval_ms":1000}"#)
//!     .vm_id("tollgate")
//!     .upstream("tollgate", Upstream::by_path([
//!         ("/v1/snapshot", HttpResponse::json(200, r#"{"version":1,"budgets":[]}"#)),
//!     ]))
//!     .start()?;
//! host.advance(Duration::from_secs(1))?; // the first tick pulls the snapshot
//!
//! let outcome = host.send(
//!     &Request::post("/v1/chat/completions")
//!         .header("authorization", "Bearer tg-over-budget")
//!         .body(r#"{"model":"gpt-4o-mini","messages":[]}"#),
//! )?;
//! assert_eq!(outcome.status(), Some(429));
//! assert!(outcome.body_text().contains("budget"));
//! assert!(outcome.response_header("x-tollgate-budget-remaining").is_some());
//! assert!(host.queue_items("tollgate", "usage").is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Parts:
//! - [`Plugin`] / [`PluginBuilder`]: the module, compiled once, with its Envoy settings;
//! - [`Host`]: one Envoy process: VMs (workers), virtual clock and ticks, shared data and
//!   queues keyed by `vm_id`, metrics, clusters ([`Upstream`]) for `proxy_http_call`;
//! - [`Request`] in, [`Outcome`] out;
//! - [`bench`](mod@bench): the per-request overhead measurement behind `tollgate-harness bench`;
//! - [`scenario`]: JSON scenarios with expected decisions behind `tollgate-harness run`.
//!
//! Run the tests with `CARGO_TARGET_DIR=... cargo test -p tollgate-harness`; they build the
//! no-op filter and the probe guest for wasm32-wasip1 first if needed.

// Test tooling: `anyhow` carries errors, and the host indexes its own VM list with ids it
// handed out itself; a panic here fails a test, never a proxy. The guest-facing code
// (`host/`) still checks every guest-supplied pointer with `get`.
#![allow(clippy::indexing_slicing)]
// Unit tests unwrap freely: a failed unwrap is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod fuel;
mod headers;
mod host;
mod lifecycle;
mod outcome;
mod plugin;
mod proxy;
mod request;
pub mod scenario;
mod upstream;
mod vm;

use std::fmt;

pub use headers::Headers;
pub use host::abi;
pub use host::abi::{Action, LogLevel, Status};
pub use outcome::{
    DownstreamResponse, GuestTrap, LocalReply, LogLine, MetricValue, Outcome, Phase, PhaseAction,
    QueueItem, UpstreamRequest,
};
pub use plugin::{FailurePolicy, Plugin, PluginBuilder};
pub use proxy::{Host, StartError};
pub use request::{Request, UpstreamResponse};
pub use upstream::{send_http1, HttpCall, HttpResponse, Reply, Responder, Upstream};

/// A VM of a [`Host`], in the order VMs were added (`vm0` is the first worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(pub usize);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vm{}", self.0)
    }
}
