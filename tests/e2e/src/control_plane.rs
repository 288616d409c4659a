//! The control plane as a process (`tollgate serve` on SQLite in the stack's directory, or on
//! a throwaway PostgreSQL database) and [`Api`], a blocking client of its REST API with the
//! seeding helpers tests and the demo use.
//!
//! The process can be stopped (SIGKILL: a crash, the harshest case for the ledger) and
//! started again on the same port and database, which is what Envoy's static cluster and
//! the outage and fault tests need.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use reqwest::blocking::Client;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::process::{line_starting_with, Echo, Proc, Secrets};
use crate::random_token;

/// How long `tollgate serve` may take to migrate and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `tollgate serve` process and what it needs to start again the same way.
#[derive(Debug)]
pub struct ControlPlane {
    bin: PathBuf,
    database_url: String,
    port: u16,
    admin_token: String,
    dataplane_token: String,
    snapshot_min_interval_ms: u64,
    secrets: Secrets,
    echo: Echo,
    proc: Option<Proc>,
    /// `RUST_LOG` for the next start (default: ours, else `info`).
    rust_log: Option<String>,
}

impl ControlPlane {
    /// Starts `bin serve` on `database_url` (`sqlite://PATH` or `postgres://…`; migrated at
    /// start), on a free port, with new random tokens (registered as secrets).
    /// `snapshot_min_interval_ms` bounds how often writes rebuild the snapshot (tests use a
    /// small value so changes propagate quickly).
    pub fn start(
        bin: &Path,
        database_url: &str,
        snapshot_min_interval_ms: u64,
        secrets: &Secrets,
        echo: Echo,
    ) -> Result<ControlPlane> {
        let admin_token = random_token("tg-admin-")?;
        let dataplane_token = random_token("tg-dataplane-")?;
        secrets.add(&admin_token);
        secrets.add(&dataplane_token);
        let mut cp = ControlPlane {
            bin: bin.to_path_buf(),
            database_url: database_url.to_string(),
            port: 0,
            admin_token,
            dataplane_token,
            snapshot_min_interval_ms,
            secrets: secrets.clone(),
            echo,
            proc: None,
            rust_log: None,
        };
        cp.restart()?;
        Ok(cp)
    }

    /// Another replica: a second `serve` process on the same database with the same tokens,
    /// on a free port of its own.
    pub fn replica(&self) -> Result<ControlPlane> {
        let mut cp = ControlPlane {
            bin: self.bin.clone(),
            database_url: self.database_url.clone(),
            port: 0,
            admin_token: self.admin_token.clone(),
            dataplane_token: self.dataplane_token.clone(),
            snapshot_min_interval_ms: self.snapshot_min_interval_ms,
            secrets: self.secrets.clone(),
            echo: self.echo.clone(),
            proc: None,
            rust_log: self.rust_log.clone(),
        };
        cp.restart()?;
        Ok(cp)
    }

    /// Starts the process again (after [`ControlPlane::stop`]) on the same port and database.
    /// A port taken meanwhile is retried for a few seconds.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut last = None;
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if self.port != 0 && format!("{e:#}").contains("cannot listen") => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("control plane did not start")))
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--snapshot-min-interval-ms")
            .arg(self.snapshot_min_interval_ms.to_string())
            // The tests' webhook receivers listen on loopback, which deliveries refuse by
            // default.
            .arg("--alert-allow-target")
            .arg("127.0.0.0/8")
            .env("TOLLGATE_ADMIN_TOKEN", &self.admin_token)
            .env("TOLLGATE_DATAPLANE_TOKEN", &self.dataplane_token)
            .env(
                "RUST_LOG",
                self.rust_log
                    .clone()
                    .or_else(|| std::env::var("RUST_LOG").ok())
                    .unwrap_or_else(|| "info".into()),
            );
        let (mut proc, lines) =
            Proc::spawn("control plane", cmd, &self.secrets, self.echo.clone())?;
        let addr = line_starting_with(&mut proc, &lines, "listening on http://", START_TIMEOUT)?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("control plane printed a bad address {addr:?}"))?;
        self.port = addr.port();
        self.proc = Some(proc);
        Ok(())
    }

    /// Sets `RUST_LOG` for the next [`ControlPlane::restart`] (tests that read every log line
    /// run it at `debug`).
    pub fn set_rust_log(&mut self, filter: &str) {
        self.rust_log = Some(filter.to_string());
    }

    /// Kills the process (if running). The database stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// `tollgate prices import FILE` on this control plane's database, as an operator runs it
    /// on the database directly (here: while the server is down). Returns what it printed.
    pub fn import_prices(&self, file: &Path) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["prices", "import", "--database-url", &self.database_url])
            .arg(file)
            .output()
            .context("cannot run tollgate prices import")?;
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "tollgate prices import failed ({}): {printed}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(printed)
    }

    /// Whether the process is running; an exit is an error with its output.
    pub fn check_running(&mut self) -> Result<()> {
        match &mut self.proc {
            None => bail!("the control plane is stopped"),
            Some(p) => match p.exited() {
                Some(status) => bail!("the control plane exited ({status}):\n{}", p.output()),
                None => Ok(()),
            },
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Its port (fixed after the first start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The database URL (`sqlite://PATH` or `postgres://…`).
    pub fn database(&self) -> &str {
        &self.database_url
    }

    /// The data-plane token (Envoy's sync service sends it).
    pub fn dataplane_token(&self) -> &str {
        &self.dataplane_token
    }

    /// The admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Output so far (secrets hidden), for failure messages.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// Output lines that held a secret (see [`Proc::secret_leaks`]).
    pub fn secret_leaks(&self) -> usize {
        self.proc.as_ref().map_or(0, Proc::secret_leaks)
    }

    /// An admin client.
    pub fn api(&self) -> Result<Api> {
        Api::new(&self.url(), &self.admin_token, &self.secrets)
    }
}

/// A principal chain created for a test: organisation, project, user and a virtual key.
#[derive(Clone)]
pub struct Chain {
    /// Organisation id.
    pub org: String,
    /// Project id.
    pub project: String,
    /// User id.
    pub user: String,
    /// Key id (`key_…`).
    pub key_id: String,
    /// The key's secret (`tg-…`), registered as a secret.
    pub secret: String,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("org", &self.org)
            .field("project", &self.project)
            .field("user", &self.user)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Spend of one scope from `GET /v1/spend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// Events in the ledger.
    pub requests: u64,
    /// Their total cost, USD.
    pub total_usd: Decimal,
}

/// A blocking client of the admin API. Errors carry the status and the problem document,
/// never the token.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
    http: Client,
    secrets: Secrets,
}

/// A decimal from a JSON string or number.
pub fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

impl Api {
    /// A client of the API at `base` with the admin `token`.
    pub fn new(base: &str, token: &str, secrets: &Secrets) -> Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: Client::builder().timeout(Duration::from_secs(60)).build()?,
            secrets: secrets.clone(),
        })
    }

    /// Sends a request with a JSON body (or raw bytes as JSON) and returns the JSON answer
    /// (`null` for an empty one). A non-2xx answer is an error naming the status and body.
    pub fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("accept", "application/json");
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req
            .send()
            .with_context(|| format!("{method} {path}: control plane unreachable"))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", self.secrets.redact(&text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: answer is not JSON"))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(Method::GET, path, None)
    }

    /// [`Api::create_chain`] with a `total` budget of `limit_usd` on its key.
    pub fn create_capped_chain(&self, prefix: &str, limit_usd: &str) -> Result<Chain> {
        let chain = self.create_chain(prefix)?;
        self.create_budget("key", &chain.key_id, "total", limit_usd)?;
        Ok(chain)
    }

    /// Creates an organisation, a project, a user in it and a key charging all three. Ids are
    /// `PREFIX-org`, `PREFIX-project`, `PREFIX-user`.
    pub fn create_chain(&self, prefix: &str) -> Result<Chain> {
        let org = format!("{prefix}-org");
        let project = format!("{prefix}-project");
        let user = format!("{prefix}-user");
        self.post(
            "/v1/orgs",
            &json!({"id": org, "name": format!("{prefix} org")}),
        )?;
        self.post(
            "/v1/projects",
            &json!({"id": project, "org_id": org, "name": format!("{prefix} project")}),
        )?;
        self.post(
            "/v1/users",
            &json!({"id": user, "org_id": org, "name": format!("{prefix} user")}),
        )?;
        let (key_id, secret) = self.create_key(&org, Some(&project), Some(&user), prefix)?;
        Ok(Chain {
            org,
            project,
            user,
            key_id,
            secret,
        })
    }

    /// Creates a virtual key; returns its id and secret (registered as a secret).
    pub fn create_key(
        &self,
        org: &str,
        project: Option<&str>,
        user: Option<&str>,
        name: &str,
    ) -> Result<(String, String)> {
        let k = self.post(
            "/v1/keys",
            &json!({"name": name, "org_id": org, "project_id": project, "user_id": user}),
        )?;
        let secret = k
            .get("secret")
            .and_then(Value::as_str)
            .context("POST /v1/keys: no secret in the answer")?
            .to_string();
        self.secrets.add(&secret);
        let id = k
            .get("id")
            .and_then(Value::as_str)
            .context("POST /v1/keys: no id in the answer")?
            .to_string();
        Ok((id, secret))
    }

    /// Revokes a key.
    pub fn revoke_key(&self, id: &str) -> Result<()> {
        self.post(&format!("/v1/keys/{id}/revoke"), &json!({}))?;
        Ok(())
    }

    /// Creates a budget (UTC, enforce) and returns its id.
    pub fn create_budget(
        &self,
        scope: &str,
        scope_id: &str,
        period: &str,
        limit_usd: &str,
    ) -> Result<String> {
        let b = self.post(
            "/v1/budgets",
            &json!({"scope": scope, "scope_id": scope_id, "period": period, "limit_usd": limit_usd}),
        )?;
        b.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("POST /v1/budgets: no id in the answer")
    }

    /// Imports a LiteLLM price map (`model_prices_and_context_window.json`); returns the
    /// report (`imported`, `unchanged`, `skipped`).
    pub fn import_litellm(&self, map: Vec<u8>) -> Result<Value> {
        self.send(Method::POST, "/v1/prices/import?format=litellm", Some(map))
    }

    /// Spend of one scope over all time.
    pub fn spend(&self, scope: &str, scope_id: &str) -> Result<Spend> {
        let v = self.get(&format!("/v1/spend?scope={scope}&scope_id={scope_id}"))?;
        Ok(Spend {
            requests: v
                .get("requests")
                .and_then(Value::as_u64)
                .context("GET /v1/spend: no requests")?,
            total_usd: v
                .get("total_usd")
                .and_then(decimal)
                .context("GET /v1/spend: no total_usd")?,
        })
    }
}
