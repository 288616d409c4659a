//! `tollgate`, built in this package for the end-to-end tests: the same entry point as
//! `control-plane/src/main.rs` (`tollgate_control_plane::cli::main`, without colours),
//! so `cargo test -p tollgate-tests` builds it and the tests find it through
//! `CARGO_BIN_EXE_tollgate-e2e-control-plane` (Cargo names only a package's own binaries
//! there). Same command line as `tollgate`: `tollgate-e2e-control-plane serve --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tollgate_control_plane::cli::main(false).await
}
