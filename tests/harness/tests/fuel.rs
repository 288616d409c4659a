//! The fuel gate (issue 17): Tollgate's wasm work per metered request, in wasmtime fuel, may
//! not grow past the committed figures' margin (`tests/harness/bench/fuel.json`). Fuel is
//! deterministic, so this gate cannot flake; see `tollgate_harness::fuel`.

// Tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use tollgate_harness::fuel;

#[test]
fn fuel_per_request_stays_within_the_committed_margin() {
    let read = |path: &Path| {
        std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let modules = fuel::Modules {
        filter: common::tollgate_wasm(),
        sync: common::sync_wasm(),
        noop: common::noop_wasm(),
        floor: read(common::floor_wasm_path()),
    };
    let measured = fuel::measure(&modules).expect("measuring fuel");
    let table: Vec<String> = measured
        .iter()
        .map(|(k, m)| format!("{k} {} fuel, {} host calls", m.total, m.host_calls))
        .collect();
    eprintln!("per request:\n{}", table.join("\n"));

    // The figures order as the work does, so a case that stopped doing its work shows.
    let f = |name: &str| measured[name].total;
    assert!(
        f("noop/json") < f("floor/json"),
        "the floor reads the bodies"
    );
    assert!(f("floor/json") < f("tollgate/json-0-budgets"));
    assert!(f("tollgate/json-0-budgets") < f("tollgate/json-1-budget"));
    assert!(f("tollgate/json-1-budget") < f("tollgate/json-4-budgets"));
    assert!(f("tollgate/deny-1-budget") < f("tollgate/json-1-budget"));
    assert!(f("tollgate/json-1-budget") < f("tollgate/sse-1-budget"));

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fuel.json");
    let committed = fuel::read_committed(&path).expect("the committed figures");
    let problems = fuel::check(&committed, &measured);
    assert!(
        problems.is_empty(),
        "fuel per request moved past the committed figures ({}):\n{}\n\
         update them deliberately with `tollgate-harness fuel --write {} --reason WHY` \
         (command in tests/harness/bench/README.md)",
        path.display(),
        problems.join("\n"),
        path.display()
    );
}
