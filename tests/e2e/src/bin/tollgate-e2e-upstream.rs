//! `tollgate-upstream`, built in this package for the end-to-end tests (Cargo gives a test
//! `CARGO_BIN_EXE_*` only for its own package's binaries): the same command line as
//! `tests/upstream/src/main.rs`.
//!
//! ```text
//! tollgate-e2e-upstream --listen 127.0.0.1:0 [--expect-key KEY] [--threads N]
//! ```
//! The first stdout line is `listening on ADDR`; SIGINT or SIGTERM stops it.

fn main() -> anyhow::Result<()> {
    tollgate_upstream::cli::main()
}
