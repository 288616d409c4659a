//! `tollgate`, built in this package for the end-to-end tests: the same entry point as
//! `control-plane/src/main.rs` (logging to stderr, then `tollgate_control_plane::cli::run`),
//! so `cargo test -p tollgate-tests` builds it and the tests find it through
//! `CARGO_BIN_EXE_tollgate-e2e-control-plane` (Cargo names only a package's own binaries
//! there). Same command line as `tollgate`: `tollgate-e2e-control-plane serve --help`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
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
