//! `tollgate`: parse the command line, set up logging, run. See `cli.rs` for the verbs and
//! `tollgate --help` for the options.

use std::io::IsTerminal;

/// mimalloc rather than glibc's malloc: ingestion allocates and frees thousands of small
/// strings per batch (the decoded events, ledger rows, bound values), and glibc's malloc and
/// free were a quarter of the CPU time in `cargo bench -p tollgate-benches --bench ingest`.
/// With mimalloc a 1,000-event batch took 15–20 % less time on SQLite and 7–12 % less on
/// PostgreSQL in back-to-back runs (benches/README.md). SQLite's own allocations stay on
/// the C library's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tollgate_control_plane::cli::main(std::io::stderr().is_terminal()).await
}
