//! Shared helpers of the harness tests: the guest modules they drive.
//!
//! Each module is built once per test binary by `tollgate_testkit::wasm` (`cargo build -p
//! <package> --target wasm32-wasip1 --release`, a no-op when fresh, into the target directory
//! the tests run from), as the end-to-end tests build theirs. Set `TOLLGATE_NOOP_WASM`,
//! `TOLLGATE_PROBE_WASM`, `TOLLGATE_FILTER_WASM`, `TOLLGATE_SYNC_WASM` or `TOLLGATE_FLOOR_WASM` to use a prebuilt
//! module instead.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use std::sync::OnceLock;
use tollgate_harness::Plugin;

/// The module `$override_var` names, else `package` built for wasm32-wasip1 (release).
fn build(package: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    tollgate_testkit::wasm::module(package).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads a module.
fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Where the no-op filter module is (built on first use).
pub fn noop_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("tollgate-noop", "TOLLGATE_NOOP_WASM"))
}

/// Where the probe module is (built on first use).
pub fn probe_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("tollgate-harness-probe", "TOLLGATE_PROBE_WASM"))
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
    PATH.get_or_init(|| build("tollgate-filter", "TOLLGATE_FILTER_WASM"))
}

/// Tollgate's filter module.
pub fn tollgate_wasm() -> Vec<u8> {
    read(tollgate_wasm_path())
}

/// Where Tollgate's sync-service module is (built on first use).
pub fn sync_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("tollgate-sync", "TOLLGATE_SYNC_WASM"))
}

/// Tollgate's sync-service module.
pub fn sync_wasm() -> Vec<u8> {
    read(sync_wasm_path())
}

/// Where the body-reading floor module is (built on first use).
pub fn floor_wasm_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build("tollgate-floor", "TOLLGATE_FLOOR_WASM"))
}
