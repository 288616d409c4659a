//! The `tollgate-harness` binary end to end: `bench` and `run`.
//!
//! Run with `CARGO_TARGET_DIR=... cargo test -p tollgate-harness --test cli`.

// Tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the binary.
fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-harness"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary, which must succeed; its standard output.
fn harness_ok(args: &[&str]) -> String {
    let output = harness(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A file under `tests/scenarios`.
fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn bench_noop_against_noop_ends_with_the_ratio() {
    let noop = common::noop_wasm_path().display().to_string();
    let stdout = harness_ok(&[
        "bench",
        "--wasm",
        &noop,
        "--baseline",
        &noop,
        "--requests",
        "300",
    ]);
    assert!(stdout.contains("p50_us"), "{stdout}");
    let last = stdout.lines().last().unwrap();
    let ratio: f64 = last.strip_prefix("ratio=").unwrap().parse().unwrap();
    assert_eq!(last.len(), "ratio=".len() + 4, "two decimals: {last}");
    assert!(ratio > 0.0);
}

/// The bench as `tests/harness/bench/README.md` runs it: Tollgate with its sync service and
/// the bench snapshot. Every measured request must be metered and answered 200 (the bench
/// fails otherwise, e.g. if the worker had no snapshot yet and answered 503).
#[test]
fn bench_tollgate_as_documented_meters_every_request() {
    let fixture = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("bench")
            .join(name)
            .display()
            .to_string()
    };
    let filter = common::tollgate_wasm_path().display().to_string();
    let sync = common::sync_wasm_path().display().to_string();
    let noop = common::noop_wasm_path().display().to_string();
    let floor = common::floor_wasm_path().display().to_string();
    let upstream = format!(
        "tollgate_control_plane:/v1/snapshot={}",
        fixture("snapshot.json")
    );
    let stdout = harness_ok(&[
        "bench",
        "--wasm",
        &filter,
        "--config",
        &fixture("filter.json"),
        "--service-wasm",
        &sync,
        "--service-config",
        &fixture("sync.json"),
        "--vm-id",
        "tollgate",
        "--upstream",
        &upstream,
        "--baseline",
        &noop,
        "--floor",
        &floor,
        "--requests",
        "200",
    ]);
    assert!(stdout.contains("ratio_to_floor="), "{stdout}");
}

#[test]
fn a_baseline_service_module_needs_a_baseline_filter() {
    let noop = common::noop_wasm_path().display().to_string();
    let args = [
        "--wasm",
        &noop,
        "--baseline",
        &noop,
        "--baseline-service-wasm",
        &noop,
    ];
    let output = harness(&[&["bench"], &args[..]].concat());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("goes with --baseline-is-filter"),
        "{stderr}"
    );
}

#[test]
fn run_passes_a_scenario_whose_expectations_hold() {
    let probe = common::probe_wasm_path().display().to_string();
    let stdout = harness_ok(&[
        "run",
        "--wasm",
        &probe,
        "--config",
        &scenario("probe.config"),
        &scenario("probe.json"),
    ]);
    assert!(stdout.contains("all 3 steps as expected"), "{stdout}");
}

#[test]
fn run_fails_naming_each_mismatch() {
    let probe = common::probe_wasm_path().display().to_string();
    let output = harness(&["run", "--wasm", &probe, &scenario("probe-mismatch.json")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "MISMATCH step 1 (deny expected to pass): status: expected 200, got Some(429)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"MISMATCH step 1 (deny expected to pass): response header x-probe-denied: expected None, got Some("1")"#),
        "{stdout}"
    );
    assert!(stdout.contains("2 mismatches"), "{stdout}");
}

#[test]
fn a_rejected_configuration_is_a_clear_error() {
    let probe = common::probe_wasm_path().display().to_string();
    let config = std::env::temp_dir().join(format!("probe-reject-{}.config", std::process::id()));
    std::fs::write(&config, "reject").unwrap();
    let output = harness(&[
        "run",
        "--wasm",
        &probe,
        "--config",
        &config.display().to_string(),
        &scenario("probe-mismatch.json"),
    ]);
    std::fs::remove_file(&config).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rejected its configuration"), "{stderr}");
    assert!(
        stderr.contains("configuration rejected on purpose"),
        "{stderr}"
    );
}
