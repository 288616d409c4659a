//! `tollgate-upstream`, built in this package for the end-to-end tests (Cargo gives a test
//! `CARGO_BIN_EXE_*` only for its own package's binaries): the same command line as
//! `tests/upstream/src/main.rs`.
//!
//! ```text
//! tollgate-e2e-upstream --listen 127.0.0.1:0 [--expect-key KEY] [--threads N]
//! ```
//! The first stdout line is `listening on ADDR`; SIGINT or SIGTERM stops it.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tollgate_upstream::{serve, Options};

/// A mock OpenAI / Anthropic / Gemini upstream with deterministic usage.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Refuse (401) requests that do not present this provider key.
    #[arg(long)]
    expect_key: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        let options = Options {
            expect_key: args.expect_key,
        };
        tokio::select! {
            r = serve(listener, options) => r.context("serving"),
            _ = shutdown() => Ok(()),
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
