//! Shared helpers of the harness tests: the guest modules they drive.
//!
//! Each module is built once per test binary with
//! `cargo build -p <package> --target wasm32-wasip1 --release` (a no-op when fresh), in the
//! same `CARGO_TARGET_DIR` the tests run under, and read from
//! `$CARGO_TARGET_DIR/wasm32-wasip1/release/<file>.wasm`. Set `TOLLGATE_NOOP_WASM` or
//! `TOLLGATE_PROBE_WASM` to use a prebuilt module instead.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use std::process::Command;
use std::sync::OnceLock;
use tollgate_harness::Plugin;

/// The target directory cargo builds into.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// Builds `package` for wasm32-wasip1 (release) and returns the module's path.
fn build(package: &str, file: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--target",
            "wasm32-wasip1",
            "--release",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --target wasm32-wasip1 --release failed"
    );
    target_dir().join("wasm32-wasip1/release").join(file)
}

/// Reads a module.
fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Where the no-op filter module is (built on first use).
pub fn noop_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("tollgate-noop", "tollgate_noop.wasm", "TOLLGATE_NOOP_WASM"))
}

/// Where the probe module is (built on first use).
pub fn probe_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "tollgate-harness-probe",
            "tollgate_harness_probe.wasm",
            "TOLLGATE_PROBE_WASM",
        )
    })
}

/// The no-op filter (`tests/noop-filter`).
pub fn noop_wasm() -> Vec<u8> {
    read(noop_wasm_path())
}

/// The probe guest (`tests/harness/guests/probe`).
pub fn probe_wasm() -> Vec<u8> {
    read(probe_wasm_path())
}

/// The no-op filter, compiled once per test binary (compiling takes seconds in a debug
/// build; every test derives its case from this with `Plugin::with_*`).
pub fn noop_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        Plugin::builder(noop_wasm())
            .build()
            .expect("compiling the no-op filter")
    })
}

/// The probe guest under `vm_id` `tollgate`, compiled once per test binary.
pub fn probe_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        Plugin::builder(probe_wasm())
            .vm_id("tollgate")
            .build()
            .expect("compiling the probe")
    })
}

/// Where Tollgate's filter module is (built on first use).
pub fn tollgate_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "tollgate-filter",
            "tollgate_filter.wasm",
            "TOLLGATE_FILTER_WASM",
        )
    })
}

/// Tollgate's filter module.
pub fn tollgate_wasm() -> Vec<u8> {
    read(tollgate_wasm_path())
}
