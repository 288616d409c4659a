//! A whole Tollgate on one machine: the control plane on SQLite (or on a throwaway
//! PostgreSQL database, [`Database::Postgres`]), the mock LLM upstream and Envoy with
//! `envoy/tollgate.yaml` (filter + sync service), on free 127.0.0.1 ports, in a scratch
//! directory. More Envoys can join the same control plane and upstream
//! ([`Stack::start_envoy`]), as a fleet would. Every wait is bounded; dropping the [`Stack`]
//! kills its processes and removes the directory.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tollgate_tests::{Binaries, Stack, StackOptions};
//! // In an integration test of this crate: env!("CARGO_BIN_EXE_tollgate-e2e-control-plane").
//! let bins = Binaries::for_tests(
//!     "target/debug/tollgate-e2e-control-plane",
//!     "target/debug/tollgate-e2e-upstream",
//! )?;
//! let stack = Stack::start(&bins, StackOptions::default())?;
//! let api = stack.api()?;
//! api.import_litellm(std::fs::read(tollgate_tests::pricing::litellm_map_path()?)?)?;
//! let chain = api.create_chain("t1")?;
//! stack.wait_for_sync()?; // Envoy now enforces what the control plane holds
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::binaries::Binaries;
use crate::control_plane::{Api, ControlPlane};
use crate::envoy::{
    plugin_config, render_tollgate, replace_plugin_config, write_secrets, Envoy, ProviderKeys,
    RealProvider, TollgateVars,
};
use crate::process::{line_starting_with, Echo, Proc, Secrets};
use crate::{eventually, random_token};

/// Where the control plane keeps its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Database {
    /// `tollgate.db` in the stack's directory.
    #[default]
    Sqlite,
    /// A fresh migrated database on the test PostgreSQL server of this process
    /// (`tollgate_testkit::postgres`: started on first use, stopped when the process
    /// exits; `TOLLGATE_TEST_PG_URL` names an existing one instead).
    Postgres,
    /// This database URL (`postgres://…` or `sqlite://…`), e.g. on a server a test started
    /// for itself.
    Url(String),
}

/// How a stack is started.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The control plane's database.
    pub database: Database,
    /// Keys merged into the filter role's plugin config of every Envoy (e.g.
    /// `{"missing_usage": "charge_zero"}`); `None` keeps the template's.
    pub filter_config: Option<Value>,
    /// Both plugin roles' `sync_interval_ms` (the template's 1000 is replaced).
    pub sync_interval_ms: u64,
    /// The control plane's `--snapshot-min-interval-ms`.
    pub snapshot_min_interval_ms: u64,
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// The LLM listener's port (0: any free port).
    pub listen_port: u16,
    /// Extra Envoy arguments (`--log-level warning`).
    pub envoy_args: Vec<String>,
    /// The mock upstream's worker threads (default: one per core).
    pub upstream_threads: Option<usize>,
    /// One provider on a real endpoint instead of the mock.
    pub real_provider: Option<RealProvider>,
    /// Copy every process's output to our stderr, prefixed with its name.
    pub echo: bool,
    /// Where Envoy's access log goes (default `access.log` in the scratch directory).
    pub access_log: Option<PathBuf>,
    /// Textual edits of the rendered Envoy config, `(from, to)`, each applied once (a test
    /// of what the filter does when a deployment's routes are wrong); a `from` not found is
    /// an error.
    pub envoy_yaml_edits: Vec<(String, String)>,
    /// The directory for the database, configs and logs (default: a new one under the system
    /// temp dir, removed on drop; a given one is left in place).
    pub dir: Option<PathBuf>,
    /// More control-plane replicas on the same database, each Envoy's fallback in this order
    /// (the control-plane cluster's next priorities, taken when the ones before fail their
    /// health check).
    pub control_plane_standbys: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            database: Database::Sqlite,
            filter_config: None,
            sync_interval_ms: 250,
            snapshot_min_interval_ms: 20,
            envoy_concurrency: 1,
            listen_port: 0,
            envoy_args: Vec::new(),
            upstream_threads: None,
            real_provider: None,
            echo: false,
            access_log: None,
            envoy_yaml_edits: Vec::new(),
            dir: None,
            control_plane_standbys: 0,
        }
    }
}

/// The running stack. Fields drop in order: Envoy, then the control plane, then the upstream.
#[derive(Debug)]
pub struct Stack {
    /// Envoy with the Tollgate filter.
    pub envoy: Envoy,
    /// The control plane (the control-plane cluster's first priority).
    pub cp: ControlPlane,
    /// Its standby replicas ([`StackOptions::control_plane_standbys`]).
    pub standbys: Vec<ControlPlane>,
    /// The mock upstream.
    pub upstream: Proc,
    /// The mock upstream's address.
    pub upstream_addr: SocketAddr,
    /// Every secret of the stack; output and errors are redacted with it.
    pub secrets: Secrets,
    /// The stack's directory.
    pub dir: PathBuf,
    /// Whether the directory is ours to remove.
    remove_dir: bool,
    /// The provider keys the mock demands, each in its own provider's header (proves each
    /// cluster injected its own key and no virtual key got through).
    provider_keys: ProviderKeys,
    sync_interval: Duration,
    /// What [`Stack::start_envoy`] starts more Envoys with.
    bins: Binaries,
    opts: StackOptions,
}

/// Envoys started so far by stacks of this process (names their directories).
static ENVOYS: AtomicU32 = AtomicU32::new(0);

/// A new, empty scratch directory under the system temp dir (the caller removes it).
pub fn scratch_dir() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn echo(on: bool, name: &str) -> Echo {
    if on {
        Echo::Stderr(format!("[{name}] "))
    } else {
        Echo::Quiet
    }
}

/// Starts the mock upstream binary on a free port, demanding each of `expect_keys` (`KEY`:
/// in any credential header; `PROVIDER=KEY`: in that provider's header for its API).
pub fn start_upstream(
    bin: &std::path::Path,
    expect_keys: &[String],
    threads: Option<usize>,
    secrets: &Secrets,
    echo: Echo,
) -> Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"]);
    for k in expect_keys {
        cmd.args(["--expect-key", k]);
    }
    if let Some(n) = threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    let (mut proc, lines) = Proc::spawn("upstream", cmd, secrets, echo)?;
    let addr = line_starting_with(&mut proc, &lines, "listening on ", Duration::from_secs(15))?;
    let addr = addr
        .parse()
        .with_context(|| format!("upstream printed a bad address {addr:?}"))?;
    Ok((proc, addr))
}

impl Stack {
    /// Starts everything and waits until Envoy is ready (it may not hold a snapshot yet:
    /// see [`Stack::wait_for_sync`]).
    pub fn start(bins: &Binaries, opts: StackOptions) -> Result<Stack> {
        let (dir, remove_dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                (d.clone(), false)
            }
            None => (scratch_dir()?, true),
        };
        let started = Stack::start_in(bins, &opts, &dir, remove_dir);
        if started.is_err() && remove_dir {
            // The processes started so far were killed when their guards dropped.
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(
        bins: &Binaries,
        opts: &StackOptions,
        dir: &std::path::Path,
        remove_dir: bool,
    ) -> Result<Stack> {
        let dir = dir.to_path_buf();
        let secrets = Secrets::default();
        let provider_keys = ProviderKeys {
            openai: random_token("sk-mock-openai-")?,
            anthropic: random_token("sk-mock-anthropic-")?,
            gemini: random_token("sk-mock-gemini-")?,
            azure: random_token("sk-mock-azure-")?,
            vertex_ai: random_token("ya29.mock-vertex-")?,
            bedrock: random_token("AKIAMOCK")?,
            bedrock_secret: random_token("mock-aws-secret-")?,
        };
        secrets.add(&provider_keys.bedrock_secret);
        for (_, k) in provider_keys.all() {
            secrets.add(k);
        }
        if let Some(r) = &opts.real_provider {
            secrets.add(&r.key);
        }
        let database_url = match &opts.database {
            Database::Sqlite => format!("sqlite://{}", dir.join("tollgate.db").display()),
            Database::Postgres => postgres_database()?,
            Database::Url(url) => url.clone(),
        };
        let cp = ControlPlane::start(
            &bins.control_plane,
            &database_url,
            opts.snapshot_min_interval_ms,
            &secrets,
            echo(opts.echo, "control-plane"),
        )?;
        let standbys = (0..opts.control_plane_standbys)
            .map(|_| cp.replica())
            .collect::<Result<Vec<_>>>()?;
        let (upstream, upstream_addr) = start_upstream(
            &bins.upstream,
            &provider_keys.expect_args(),
            opts.upstream_threads,
            &secrets,
            echo(opts.echo, "upstream"),
        )?;
        let config = dir.join("tollgate.yaml");
        let access_log = opts
            .access_log
            .clone()
            .unwrap_or_else(|| dir.join("access.log"));
        let mut vars = envoy_vars(
            bins,
            opts,
            &cp,
            upstream_addr,
            &provider_keys,
            access_log,
            dir.join("secrets"),
        );
        vars.cp_standby_ports = standbys.iter().map(ControlPlane::port).collect();
        let envoy = start_envoy_in(
            bins,
            opts,
            &vars,
            &config,
            &dir,
            &secrets,
            echo(opts.echo, "envoy"),
        )?;
        Ok(Stack {
            envoy,
            cp,
            standbys,
            upstream,
            upstream_addr,
            secrets,
            dir,
            remove_dir,
            provider_keys,
            sync_interval: Duration::from_millis(opts.sync_interval_ms),
            bins: bins.clone(),
            opts: opts.clone(),
        })
    }

    /// Starts one more Envoy on the same control plane and upstream (its own directory under
    /// the stack's, its own access log there, its own sync service and so its own reporter),
    /// listening on `listen_port` (0: any free port; an Envoy's old port to replace it).
    /// `filter_config` keys are merged into its filter plugin config on top of the stack's.
    /// The caller owns it: dropping it kills it.
    pub fn start_envoy(&self, listen_port: u16, filter_config: Option<&Value>) -> Result<Envoy> {
        let n = ENVOYS.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("envoy-{n}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut opts = self.opts.clone();
        opts.listen_port = listen_port;
        if let Some(extra) = filter_config {
            let mut merged = opts.filter_config.take().unwrap_or(Value::Null);
            merge(&mut merged, extra);
            opts.filter_config = Some(merged);
        }
        let mut vars = envoy_vars(
            &self.bins,
            &opts,
            &self.cp,
            self.upstream_addr,
            &self.provider_keys,
            dir.join("access.log"),
            dir.join("secrets"),
        );
        vars.cp_standby_ports = self.standbys.iter().map(ControlPlane::port).collect();
        start_envoy_in(
            &self.bins,
            &opts,
            &vars,
            &dir.join("tollgate.yaml"),
            &dir,
            &self.secrets,
            echo(opts.echo, &format!("envoy-{n}")),
        )
    }

    /// Sets the worker threads (`--concurrency`) of the Envoys [`Stack::start_envoy`] starts
    /// from now on (the fleet bench compares Envoys that differ only in that).
    pub fn set_envoy_concurrency(&mut self, workers: u32) {
        self.opts.envoy_concurrency = workers;
    }

    /// `http://127.0.0.1:PORT`: where clients send LLM traffic.
    pub fn url(&self) -> String {
        format!("http://{}", self.envoy.listener)
    }

    /// An admin client of the control plane.
    pub fn api(&self) -> Result<Api> {
        self.cp.api()
    }

    /// The configured sync interval.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// OpenAI's key, which the mock upstream demands on OpenAI requests.
    pub fn provider_key(&self) -> &str {
        &self.provider_keys.openai
    }

    /// Every provider key the mock upstream demands, each on its own provider's requests.
    pub fn provider_keys(&self) -> &ProviderKeys {
        &self.provider_keys
    }

    /// The control plane's current snapshot version (its ETag).
    pub fn snapshot_version(&self) -> Result<u64> {
        let resp = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?
            .get(format!("{}/v1/snapshot", self.cp.url()))
            .bearer_auth(self.cp.dataplane_token())
            .send()
            .context("GET /v1/snapshot")?;
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .context("GET /v1/snapshot: no ETag")?;
        etag.trim_matches(|c| c == '"' || c == 'W' || c == '/')
            .parse()
            .with_context(|| format!("ETag {etag:?} is not a version"))
    }

    /// Waits (at most 30 s) until Envoy's sync service holds the control plane's current
    /// snapshot, then for the workers to pick it up (they look twice per interval).
    pub fn wait_for_sync(&self) -> Result<()> {
        self.wait_for_sync_of(&self.envoy)
    }

    /// [`Stack::wait_for_sync`] for any Envoy of this stack.
    pub fn wait_for_sync_of(&self, envoy: &Envoy) -> Result<()> {
        let want = self.snapshot_version()?;
        let got = eventually(Duration::from_secs(30), || {
            let v = envoy.stat("tollgate_snapshot_version").ok()?;
            (v >= want).then_some(v)
        });
        if got.is_none() {
            bail!(
                "Envoy did not load snapshot version {want} within 30 s:\n{}",
                self.logs()
            );
        }
        std::thread::sleep(self.sync_interval / 2 + Duration::from_millis(100));
        Ok(())
    }

    /// An error naming the first process that is no longer running.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.envoy.proc.exited() {
            bail!("envoy exited ({status}):\n{}", self.envoy.proc.output());
        }
        if let Some(status) = self.upstream.exited() {
            bail!(
                "the upstream exited ({status}):\n{}",
                self.upstream.output()
            );
        }
        self.cp.check_running()
    }

    /// Every process's output so far (secrets hidden), for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- envoy\n{}\n--- control plane\n{}\n--- upstream\n{}",
            self.envoy.proc.output(),
            self.cp.output(),
            self.upstream.output()
        )
    }

    /// The access log lines so far, parsed (when it goes to the default file).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.envoy.proc.kill();
        self.cp.stop();
        self.upstream.kill();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The values `envoy/tollgate.yaml` is rendered with for this stack.
fn envoy_vars(
    bins: &Binaries,
    opts: &StackOptions,
    cp: &ControlPlane,
    upstream: SocketAddr,
    provider_keys: &ProviderKeys,
    access_log: PathBuf,
    secrets_dir: PathBuf,
) -> TollgateVars {
    TollgateVars {
        listen_port: opts.listen_port,
        cp_port: cp.port(),
        upstream_port: upstream.port(),
        wasm: bins.filter_wasm.clone(),
        sync_wasm: bins.sync_wasm.clone(),
        dataplane_token: cp.dataplane_token().to_string(),
        provider_keys: provider_keys.clone(),
        secrets_dir,
        access_log,
        sync_interval_ms: opts.sync_interval_ms,
        real_provider: opts.real_provider.clone(),
        cp_standby_ports: Vec::new(),
    }
}

/// Renders the config (with `opts.filter_config` merged into the filter role's), writes it
/// to `config` and starts Envoy with its files in `dir`.
fn start_envoy_in(
    bins: &Binaries,
    opts: &StackOptions,
    vars: &TollgateVars,
    config: &std::path::Path,
    dir: &std::path::Path,
    secrets: &Secrets,
    echo: Echo,
) -> Result<Envoy> {
    write_secrets(vars)?;
    let mut yaml = render_tollgate(vars)?;
    if let Some(extra) = &opts.filter_config {
        let mut filter = plugin_config(&yaml, "filter")?;
        merge(&mut filter, extra);
        yaml = replace_plugin_config(&yaml, "filter", &filter)?;
    }
    for (from, to) in &opts.envoy_yaml_edits {
        if !yaml.contains(from.as_str()) {
            bail!("envoy config edit: {from:?} not found");
        }
        yaml = yaml.replacen(from.as_str(), to, 1);
    }
    write_private(config, yaml.as_bytes())?;
    Envoy::start_with_args(
        &bins.envoy,
        config,
        dir,
        opts.envoy_concurrency,
        &opts.envoy_args,
        secrets,
        echo,
    )
}

/// Merges `extra` into `base`: objects key by key (recursively), anything else replaced.
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// A fresh migrated database on this process's test PostgreSQL server.
fn postgres_database() -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the PostgreSQL setup")?;
    rt.block_on(tollgate_testkit::postgres_url())
        .map_err(|e| anyhow::anyhow!("PostgreSQL test server unavailable: {e}"))
}

/// Writes a file only its owner can read (it holds tokens and provider keys).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_config_merges_key_by_key() {
        let mut base = json!({"role": "filter", "limits": {"a": 1, "b": 2}, "shadow": false});
        merge(
            &mut base,
            &json!({"limits": {"b": 3}, "missing_usage": "charge_zero"}),
        );
        assert_eq!(
            base,
            json!({"role": "filter", "limits": {"a": 1, "b": 3}, "shadow": false,
                   "missing_usage": "charge_zero"})
        );
    }
}
