//! The fuel gate (issue 17): Tollgate's wasm work per metered request, in wasmtime fuel, may
//! not grow past the committed figures' margin (`tests/harness/bench/fuel.json`). Fuel is
//! deterministic, so this gate cannot flake; see `tollgate_harness::fuel`.

// Tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use tollgate_harness::fuel;

/// The modules the gate measures.
fn modules() -> fuel::Modules {
    let path = common::floor_wasm_path();
    fuel::Modules {
        filter: common::tollgate_wasm(),
        sync: common::sync_wasm(),
        noop: common::noop_wasm(),
        floor: std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    }
}

/// The committed figures.
fn committed() -> (std::path::PathBuf, fuel::Committed) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fuel.json");
    let committed = fuel::read_committed(&path).expect("the committed figures");
    (path, committed)
}

#[test]
fn fuel_per_request_stays_within_the_committed_margin() {
    let modules = modules();
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

    let (path, committed) = committed();
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

/// `tollgate-harness fuel --time`: every case the gate holds is timed in the same run, each
/// answered as it must be (the run stops otherwise), and the time inside host calls is
/// measured for the modules that make them and nothing for the no-op module, which makes none.
#[test]
fn every_case_of_the_gate_is_timed_with_its_host_calls() {
    let timed = fuel::time(&modules(), 20).expect("timing the cases");
    let (_, committed) = committed();
    let timed_names: Vec<&String> = timed.keys().collect();
    let gated: Vec<&String> = committed.fuel.keys().collect();
    assert_eq!(timed_names, gated, "the same cases as the gate");
    for (name, t) in &timed {
        assert_eq!(t.stats.samples, 20, "{name}");
        assert!(t.stats.p50_us > 0.0, "{name}");
        if name.starts_with("noop/") {
            assert_eq!(t.host_us, 0.0, "{name} makes no host call");
        } else {
            assert!(
                t.host_us > 0.0,
                "{name} reads its request through host calls"
            );
        }
    }
}
