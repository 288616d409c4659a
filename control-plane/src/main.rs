//! `tollgate`: parse the command line, set up logging, run. See `cli.rs` for the verbs and
//! `tollgate --help` for the options.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

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
    // Logs go to stderr so stdout stays the command's output. RUST_LOG filters (default info).
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = tollgate_control_plane::cli::Cli::parse();
    match tollgate_control_plane::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
