//! The mock provider's command line, shared by the `tollgate-upstream` binary and the e2e
//! crate's copy of it (Cargo hands a test only its own package's binaries).
//!
//! ```text
//! tollgate-upstream --listen 127.0.0.1:0 [--expect-key sk-mock] [--azure-deployment prod=gpt-4o] [--threads 2]
//! ```
//! The first stdout line is `listening on 127.0.0.1:NNNN` (the bound address, so port 0
//! works). SIGINT or SIGTERM stops it.

use std::io::Write;
use std::net::SocketAddr;

use crate::{serve, Options};
use anyhow::Context;
use clap::Parser;

/// A mock OpenAI / Anthropic / Gemini upstream with deterministic usage.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Refuse (401) requests that do not present this provider key: `KEY` (any provider, any
    /// credential header) or `PROVIDER=KEY` (that provider's API, in its own header);
    /// repeatable.
    #[arg(long)]
    expect_key: Vec<String>,
    /// An Azure deployment and the model it serves, `NAME=MODEL`; repeatable.
    #[arg(long)]
    azure_deployment: Vec<String>,
    /// Worker threads (default: one per core). Benches pin the mock to fewer cores than Envoy.
    #[arg(long)]
    threads: Option<usize>,
}

/// Parses the command line and serves until SIGINT or SIGTERM.
pub fn main() -> anyhow::Result<()> {
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
        // Tests read this line to learn the port: write and flush it before serving.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        let mut options = Options::default();
        for k in args.expect_key {
            match k.split_once('=') {
                Some((p, key))
                    if matches!(
                        p,
                        "openai" | "anthropic" | "gemini" | "azure" | "vertex_ai" | "bedrock"
                    ) =>
                {
                    options.provider_keys.push((p.to_owned(), key.to_owned()));
                }
                _ => options.expect_key = Some(k),
            }
        }
        for d in args.azure_deployment {
            let (name, model) = d
                .split_once('=')
                .with_context(|| format!("--azure-deployment {d:?}: expected NAME=MODEL"))?;
            options
                .azure_deployments
                .push((name.to_owned(), model.to_owned()));
        }
        tokio::select! {
            r = serve(listener, options) => r.context("serving"),
            _ = shutdown() => Ok(()),
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
