//! Shared by the end-to-end tests: the binaries, a started and seeded stack, and checks on the
//! ledger with the timing the design promises (within two sync intervals).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tollgate_tests::control_plane::Spend;
use tollgate_tests::{eventually, pricing, Binaries, Stack, StackOptions};

/// The sync interval the tests run Envoy with.
pub const SYNC_INTERVAL_MS: u64 = 250;

/// Slack on top of "within 2 sync intervals" for process scheduling on a loaded 2-core CI
/// machine (Envoy, the control plane, the test and Python share two cores, and the tests of
/// one file run in parallel). Observed propagation is 25–260 ms; the slack only keeps a busy
/// machine from failing a correct run.
pub const SCHEDULING_SLACK: Duration = Duration::from_millis(750);

/// The test binaries (this package's control plane and upstream, the venv's Envoy, freshly
/// built wasm modules). `None` when `TOLLGATE_SKIP_ENVOY=1`.
pub fn bins() -> Option<Binaries> {
    if tollgate_tests::skip_envoy() {
        return None;
    }
    Some(
        Binaries::for_tests(
            env!("CARGO_BIN_EXE_tollgate-e2e-control-plane"),
            env!("CARGO_BIN_EXE_tollgate-e2e-upstream"),
        )
        .unwrap_or_else(|e| panic!("{e:#}")),
    )
}

/// A stack with the LiteLLM price map imported. `None` when Envoy tests are skipped.
pub fn stack() -> Option<Stack> {
    stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        ..StackOptions::default()
    })
}

/// [`stack`] with options.
pub fn stack_with(opts: StackOptions) -> Option<Stack> {
    let bins = bins()?;
    let stack = Stack::start(&bins, opts).unwrap_or_else(|e| panic!("{e:#}"));
    let map = std::fs::read(pricing::litellm_map_path().unwrap()).unwrap();
    stack.api().unwrap().import_litellm(map).unwrap();
    Some(stack)
}

/// The venv's Python, `None` when `TOLLGATE_SKIP_PYTHON=1` and there is none.
pub fn python() -> Option<PathBuf> {
    tollgate_tests::python::python().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Two sync intervals plus scheduling slack: the bound on propagation the tests assert.
pub fn two_intervals(stack: &Stack) -> Duration {
    stack.sync_interval() * 2 + SCHEDULING_SLACK
}

/// Waits until the ledger holds exactly `want` for a scope and returns how long it took;
/// fails (with what it last saw and every process's log) after 30 s.
pub fn ledger_reaches(stack: &Stack, scope: &str, id: &str, want: Spend) -> Duration {
    let api = stack.api().unwrap();
    let started = Instant::now();
    let mut last = None;
    let got = eventually(Duration::from_secs(30), || {
        let s = api.spend(scope, id).unwrap();
        last = Some(s);
        (s == want).then_some(())
    });
    assert!(
        got.is_some(),
        "ledger for {scope} {id}: expected {want:?}, last saw {last:?}\n{}",
        stack.logs()
    );
    started.elapsed()
}

/// A decimal from a header or JSON string.
pub fn dec(s: &str) -> Decimal {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not a decimal: {e}"))
}
