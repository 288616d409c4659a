//! `tollgate-demo`: Tollgate on one machine, what `scripts/run.sh` starts.
//!
//! Starts the control plane (`tollgate serve`) on a fresh SQLite database, the mock LLM
//! upstream (`tollgate-upstream`) and Envoy with `envoy/tollgate.yaml` and the filter, all on
//! 127.0.0.1; seeds a demo organisation, project, user, virtual key and a daily budget, and
//! imports LiteLLM's price map; then prints a `curl` and a Python `openai` example that work as
//! printed, and Envoy's access log (decision, principal, cost per request) as traffic passes.
//! Ctrl-C (or SIGTERM) stops everything and removes the state directory.
//!
//! ```text
//! tollgate-demo [--port 0] [--sync-interval-ms 1000] [--budget-usd 1]
//!               [--provider openai --provider-url https://api.openai.com --provider-key-env OPENAI_API_KEY]
//! ```
//! Secrets (tokens, the virtual key) are written to files readable only by you in the state
//! directory and never printed; the examples read them with `$(cat FILE)`.
#![allow(clippy::print_stdout)] // printing the examples is this binary's job

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tollgate_tests::envoy::RealProvider;
use tollgate_tests::stack::write_private;
use tollgate_tests::{pricing, Binaries, Stack, StackOptions};
use tollgate_upstream::envoy::venv_python;

/// Run Tollgate locally: control plane + Envoy with the filter + a mock LLM provider.
#[derive(Parser, Debug)]
#[command(name = "tollgate-demo", version, about)]
struct Args {
    /// Port of the LLM listener on 127.0.0.1 (0: any free port; the examples name it).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How often Envoy pulls the snapshot and pushes usage, milliseconds.
    #[arg(long, default_value_t = 1000)]
    sync_interval_ms: u64,
    /// The demo user's daily budget, USD.
    #[arg(long, default_value = "1")]
    budget_usd: String,
    /// Which provider --provider-url replaces: openai, anthropic or gemini.
    #[arg(long, default_value = "openai")]
    provider: String,
    /// Send that provider's traffic to this real endpoint (`https://api.openai.com`)
    /// instead of the local mock. Needs --provider-key-env.
    #[arg(long, requires = "provider_key_env")]
    provider_url: Option<String>,
    /// Environment variable holding the real provider key (written to the demo's secrets
    /// directory, from where that provider's Envoy cluster injects it; it is never printed).
    #[arg(long, requires = "provider_url")]
    provider_key_env: Option<String>,
    /// LiteLLM price map to import (default: the copy bundled with litellm in .venv).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// An empty directory for the database, the rendered Envoy config, the logs and the
    /// secret files, kept on exit (default: a new temporary directory, removed on exit).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory with `tollgate` and `tollgate-upstream` (default: this program's own).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The control-plane binary (overrides --bin-dir).
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
    /// The mock upstream binary (overrides --bin-dir).
    #[arg(long)]
    upstream_bin: Option<PathBuf>,
    /// The filter module (default: TARGET/wasm32-wasip1/release/tollgate_filter.wasm).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The sync service's module (default: tollgate_sync.wasm beside the filter module).
    #[arg(long)]
    sync_wasm: Option<PathBuf>,
    /// Do not copy the processes' logs and the access log to stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn binaries(args: &Args) -> Result<Binaries> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program has no directory")?
            .to_path_buf(),
    };
    let mut b = Binaries::layout(&dir)?;
    if let Some(p) = &args.control_plane_bin {
        b.control_plane = p.clone();
    }
    if let Some(p) = &args.upstream_bin {
        b.upstream = p.clone();
    }
    if let Some(p) = &args.wasm {
        b.filter_wasm = p.clone();
        b.sync_wasm = p.with_file_name("tollgate_sync.wasm");
    }
    if let Some(p) = &args.sync_wasm {
        b.sync_wasm = p.clone();
    }
    b.check()?;
    Ok(b)
}

fn real_provider(args: &Args) -> Result<Option<RealProvider>> {
    let (Some(url), Some(var)) = (&args.provider_url, &args.provider_key_env) else {
        return Ok(None);
    };
    if !["openai", "anthropic", "gemini"].contains(&args.provider.as_str()) {
        bail!(
            "--provider {:?}: expected openai, anthropic or gemini",
            args.provider
        );
    }
    let key = std::env::var(var)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .with_context(|| format!("--provider-key-env {var}: that variable is not set"))?;
    Ok(Some(RealProvider {
        provider: args.provider.clone(),
        url: url.clone(),
        key: key.trim().to_string(),
    }))
}

fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Installed first: from here on Ctrl-C reaches us (and, through the terminal's process
    // group, our children) instead of killing this process before it can clean up.
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let bins = binaries(&args)?;
    let real = real_provider(&args)?;
    let prices = match &args.prices {
        Some(p) => p.clone(),
        None => pricing::litellm_map_path()?,
    };
    let keep = args.state_dir.is_some();
    let dir = match &args.state_dir {
        Some(d) => {
            // A fresh database is seeded; refuse to mix it with anything already there.
            if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
                bail!("--state-dir {}: not empty", d.display());
            }
            d.clone()
        }
        None => std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    say(&format!("starting in {}", dir.display()));
    let mut opts = StackOptions {
        sync_interval_ms: args.sync_interval_ms,
        snapshot_min_interval_ms: 200,
        listen_port: args.port,
        envoy_args: vec!["--log-level".into(), "warning".into()],
        real_provider: real,
        echo: !args.quiet,
        dir: Some(dir.clone()),
        ..StackOptions::default()
    };
    if !args.quiet {
        // Envoy's stdout is echoed: the access log shows each request's decision and cost.
        opts.access_log = Some(PathBuf::from("/dev/stdout"));
    }
    let started = Stack::start(&bins, opts);
    let result = match started {
        Ok(mut stack) => {
            let r = demo(&args, &mut stack, &prices, &mut int, &mut term, &rt);
            drop(stack);
            r
        }
        Err(e) => Err(e),
    };
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    say("stopped");
    result
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tollgate: {line}");
    let _ = out.flush();
}

fn demo(
    args: &Args,
    stack: &mut Stack,
    prices: &std::path::Path,
    int: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let api = stack.api()?;
    let map = std::fs::read(prices).with_context(|| format!("reading {}", prices.display()))?;
    let report = api.import_litellm(map)?;
    let imported = report.get("imported").and_then(|v| v.as_u64()).unwrap_or(0);
    api.post(
        "/v1/orgs",
        &serde_json::json!({"id": "demo", "name": "Demo organisation"}),
    )?;
    api.post(
        "/v1/projects",
        &serde_json::json!({"id": "demo-app", "org_id": "demo", "name": "Demo app"}),
    )?;
    api.post(
        "/v1/users",
        &serde_json::json!({"id": "demo-user", "org_id": "demo", "name": "Demo user"}),
    )?;
    let (key_id, secret) = api.create_key("demo", Some("demo-app"), Some("demo-user"), "demo")?;
    api.create_budget("user", "demo-user", "daily", &args.budget_usd)?;
    let key_file = stack.dir.join("virtual-key");
    write_private(&key_file, secret.as_bytes())?;
    let admin_file = stack.dir.join("admin-token");
    write_private(&admin_file, stack.cp.admin_token().as_bytes())?;
    stack.wait_for_sync()?;

    let url = stack.url();
    let python = venv_python().map_or_else(|| "python3".into(), |p| p.display().to_string());
    let key = key_file.display();
    let upstream = match &args.provider_url {
        Some(u) => format!("{} → {u}", args.provider),
        None => format!("mock LLM provider on {}", stack.upstream_addr),
    };
    say(&format!(
        "control plane {} (database {}), {upstream}, Envoy admin http://{}",
        stack.cp.url(),
        stack.cp.database(),
        stack.envoy.admin
    ));
    say(&format!(
        "seeded org demo / project demo-app / user demo-user, virtual key {key_id} (secret in {key}), \
         daily budget {} USD on demo-user, {imported} LiteLLM prices",
        args.budget_usd
    ));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        r#"tollgate: ready on {url}. Try it (from any directory):

# curl
curl -sS -i {url}/v1/chat/completions \
  -H "Authorization: Bearer $(cat {key})" \
  -H "Content-Type: application/json" \
  -d '{{"model": "gpt-4o-mini", "max_tokens": 32, "messages": [{{"role": "user", "content": "Hello through Tollgate"}}]}}'

# python (official openai SDK)
{python} - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key=open("{key}").read().strip())
reply = client.chat.completions.create(model="gpt-4o-mini", max_tokens=32, messages=[{{"role": "user", "content": "Hello through Tollgate"}}])
print(reply.choices[0].message.content)
print(reply.usage)
EOF

# spend so far (control-plane admin API)
curl -sS "{cp}/v1/spend?group_by=model" -H "Authorization: Bearer $(cat {admin})"

# web console: open {cp}/ui in a browser and sign in with the admin token, which
# `cat {admin}` prints (or with a tgt- API token: POST {cp}/v1/tokens)

tollgate: Ctrl-C stops everything."#,
        cp = stack.cp.url(),
        admin = admin_file.display(),
    )?;
    out.flush()?;
    drop(out);

    rt.block_on(async {
        loop {
            tokio::select! {
                biased;
                _ = int.recv() => return Ok(()),
                _ = term.recv() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if let Err(e) = stack.check_running() {
                        // A Ctrl-C in the terminal reaches our children too; give its signal
                        // a moment to arrive before calling this a failure.
                        tokio::select! {
                            _ = int.recv() => return Ok(()),
                            _ = term.recv() => return Ok(()),
                            () = tokio::time::sleep(Duration::from_secs(1)) => return Err(e),
                        }
                    }
                }
            }
        }
    })
}
