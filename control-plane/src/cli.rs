//! The `tollgate` command line: `serve`, `migrate`, `prices import`, the offline `cost`, and
//! the admin verbs over the REST API (`budgets set|list`, `keys create|revoke`, `bulk`,
//! `spend`, `tokens create|list|revoke`, `audit`).
//! Every option also reads an environment variable (shown by `--help`). The API tokens are
//! read from the environment only for `serve`, never from the command line, where `ps` would
//! show them.
//!
//! Tested by `tests/cli.rs`, which runs the built binary.
#![allow(clippy::print_stdout)] // the CLI's output is what it is for

mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tollgate_core::budget::{Mode, Period, Scope};
use tollgate_core::pricing::{litellm, PriceBook};
use tracing_subscriber::EnvFilter;

use crate::client::{encode, Client};
use crate::clock::Clock;
use crate::http::auth::Tokens;
use crate::http::{app, AppState};
use crate::store::{unix_now, Store};

/// Tollgate control plane: budgets, prices, virtual keys and the usage ledger.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (migrates the database first). Needs TOLLGATE_ADMIN_TOKEN and
    /// TOLLGATE_DATAPLANE_TOKEN in the environment (at least 16 characters, different).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(DbArgs),
    /// Manage prices in the database directly.
    Prices {
        /// The price verb.
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Price a usage offline (no database): prints one JSON object.
    Cost(CostArgs),
    /// Budgets, through the REST API.
    Budgets {
        /// The budget verb.
        #[command(subcommand)]
        command: BudgetsCommand,
    },
    /// Virtual keys, through the REST API.
    Keys {
        /// The key verb.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Users, keys and budgets created, and keys revoked, in one call and one transaction
    /// through the REST API (`POST /v1/bulk`): all or nothing. Prints the answer (each new
    /// key's secret, shown this once) or every item that cannot be applied.
    Bulk(BulkArgs),
    /// Spend report, through the REST API.
    Spend(SpendArgs),
    /// API tokens with a role and scope, through the REST API.
    Tokens {
        /// The token verb.
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// The audit log of changes made through the API: one page, as JSON.
    Audit(tokens::AuditArgs),
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database: a SQLite file path or `sqlite://PATH` (created if missing), or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "TOLLGATE_DATABASE_URL", default_value = "./tollgate.db")]
    pub database_url: String,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How often to check the database for changes made by other replicas or processes and
    /// for passed budget-window boundaries, milliseconds.
    #[arg(long, env = "TOLLGATE_SNAPSHOT_POLL_MS", default_value_t = 1000)]
    pub snapshot_poll_ms: u64,
    /// Shortest time between two snapshot rebuilds caused by writes, milliseconds: under a
    /// stream of usage batches, pollers get a snapshot at most this old.
    #[arg(long, env = "TOLLGATE_SNAPSHOT_MIN_INTERVAL_MS", default_value_t = 200)]
    pub snapshot_min_interval_ms: u64,
    /// Most budgets `GET /v1/metrics/budgets` exports (the most used first; the series count
    /// is about five per budget).
    #[arg(long, env = "TOLLGATE_BUDGET_METRICS_MAX", default_value_t = crate::budget_metrics::DEFAULT_MAX)]
    pub budget_metrics_max: usize,
    /// Alert webhooks: delivery, retries and the stale-reporter check.
    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// Alert webhook options (`serve`).
#[derive(Debug, Args)]
pub struct AlertArgs {
    /// The alert dispatcher's slow poll, milliseconds: retries due, deliveries recorded by
    /// other replicas, window resets, stale reporters, price-book changes. (Alerts fired by a
    /// usage batch leave at once, without waiting for it.)
    #[arg(long, env = "TOLLGATE_ALERT_POLL_MS", default_value_t = 2000)]
    pub alert_poll_ms: u64,
    /// First retry of a failed delivery after this long, milliseconds; each next one waits
    /// twice as long.
    #[arg(long, env = "TOLLGATE_ALERT_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub alert_backoff_base_ms: u64,
    /// Longest wait between two attempts of a delivery, milliseconds.
    #[arg(long, env = "TOLLGATE_ALERT_BACKOFF_MAX_MS", default_value_t = 600_000)]
    pub alert_backoff_max_ms: u64,
    /// A delivery still failing this long after its event is marked failed, seconds.
    #[arg(long, env = "TOLLGATE_ALERT_GIVE_UP_S", default_value_t = 86_400)]
    pub alert_give_up_s: u64,
    /// Whole-request timeout of one delivery attempt, milliseconds.
    #[arg(long, env = "TOLLGATE_ALERT_TIMEOUT_MS", default_value_t = 10_000)]
    pub alert_timeout_ms: u64,
    /// A reporter (an Envoy) that sent no usage for this long fires `fleet_stale`, seconds.
    #[arg(long, env = "TOLLGATE_ALERT_STALE_AFTER_S", default_value_t = 300)]
    pub alert_stale_after_s: u64,
    /// A non-public address range deliveries may reach (CIDR; repeat, or comma-separate in the
    /// variable). By default a delivery connects to public addresses only: a subscription's
    /// URL is a tenant's choice, and must not reach the operator's loopback, private network
    /// or cloud metadata service.
    #[arg(
        long = "alert-allow-target",
        env = "TOLLGATE_ALERT_ALLOW_TARGETS",
        value_delimiter = ','
    )]
    pub alert_allow_targets: Vec<ipnet::IpNet>,
}

impl AlertArgs {
    /// The dispatcher's configuration.
    pub fn config(&self) -> crate::alerts::Config {
        let ms = Duration::from_millis;
        let timeout = ms(self.alert_timeout_ms.max(1));
        crate::alerts::Config {
            poll: ms(self.alert_poll_ms.max(10)),
            backoff_base: ms(self.alert_backoff_base_ms.max(1)),
            backoff_max: ms(self.alert_backoff_max_ms.max(1)),
            give_up_after: Duration::from_secs(self.alert_give_up_s),
            // Longer than an attempt can take, so a live sender always records first.
            lease: timeout.saturating_mul(2).max(Duration::from_secs(30)),
            timeout,
            stale_after: Duration::from_secs(self.alert_stale_after_s.max(1)),
            allow_targets: self.alert_allow_targets.clone(),
            ..crate::alerts::Config::default()
        }
    }
}

/// `prices` verbs.
#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Import a price map; prints the imported count and every skipped entry with its reason.
    Import(ImportArgs),
}

/// `prices import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Format of the file (only `litellm`: model_prices_and_context_window.json).
    #[arg(long, env = "TOLLGATE_PRICES_FORMAT", default_value = "litellm")]
    pub format: String,
    /// From when the prices apply, Unix seconds (default: now).
    #[arg(long, env = "TOLLGATE_PRICES_EFFECTIVE_FROM")]
    pub effective_from: Option<i64>,
    /// The price map file.
    pub file: PathBuf,
}

/// `cost` options.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// A LiteLLM price map or a Tollgate price book (`{"version":…,"models":{…}}`).
    #[arg(long, env = "TOLLGATE_PRICES_FILE")]
    pub prices_file: PathBuf,
    /// The model, as the request named it (with `--response`: only when neither the answer
    /// nor `--request` names one).
    #[arg(long, env = "TOLLGATE_MODEL", required_unless_present = "response")]
    pub model: Option<String>,
    /// The provider's usage object as JSON (OpenAI Chat / Responses, Anthropic Messages,
    /// Gemini), or Tollgate's normalised usage.
    #[arg(
        long,
        env = "TOLLGATE_USAGE",
        conflicts_with = "response",
        required_unless_present = "response"
    )]
    pub usage: Option<String>,
    /// A whole provider answer: a JSON body or a recorded stream (SSE), priced as the filter
    /// settles it (the served model when the book prices it, the tier that served, searches).
    #[arg(long, env = "TOLLGATE_RESPONSE", requires = "api")]
    pub response: Option<PathBuf>,
    /// The provider API the answer speaks.
    #[arg(long, value_enum)]
    pub api: Option<ApiArg>,
    /// The request the answer is for (JSON): its model, and the web-search context size it
    /// asked for (the answer does not repeat it); also prints what the filter reserved.
    #[arg(long, requires = "response")]
    pub request: Option<PathBuf>,
    /// Provider hint for the price lookup (`gemini`, `anthropic`, ...).
    #[arg(long, env = "TOLLGATE_PROVIDER")]
    pub provider: Option<String>,
}

/// A provider API, for `tollgate cost --api`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ApiArg {
    /// `POST /v1/chat/completions`.
    OpenaiChat,
    /// `POST /v1/responses`.
    OpenaiResponses,
    /// `POST /v1/embeddings`.
    OpenaiEmbeddings,
    /// `POST /v1/messages`.
    AnthropicMessages,
    /// `models/*:generateContent` and `:streamGenerateContent`.
    Gemini,
}

impl From<ApiArg> for tollgate_core::provider::ApiFormat {
    fn from(a: ApiArg) -> Self {
        use tollgate_core::provider::ApiFormat;
        match a {
            ApiArg::OpenaiChat => ApiFormat::OpenAiChat,
            ApiArg::OpenaiResponses => ApiFormat::OpenAiResponses,
            ApiArg::OpenaiEmbeddings => ApiFormat::OpenAiEmbeddings,
            ApiArg::AnthropicMessages => ApiFormat::AnthropicMessages,
            ApiArg::Gemini => ApiFormat::GeminiGenerateContent,
        }
    }
}

/// Where the API is and the token to call it with.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Control plane base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token, or an API token (`tgt-…`) whose role allows the command.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// `budgets` verbs.
#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    /// Create the budget of (scope, scope id, period), or change it if it exists.
    Set(BudgetSetArgs),
    /// List budgets with their current spend.
    List(BudgetListArgs),
}

/// `budgets set` options.
#[derive(Debug, Args)]
pub struct BudgetSetArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Scope: org, project, user or key.
    #[arg(long, env = "TOLLGATE_SCOPE")]
    pub scope: String,
    /// Id of the org / project / user / key.
    #[arg(long, env = "TOLLGATE_SCOPE_ID")]
    pub scope_id: String,
    /// Period: daily, weekly, monthly or total.
    #[arg(long, env = "TOLLGATE_PERIOD")]
    pub period: String,
    /// Hard limit per window, USD.
    #[arg(long, env = "TOLLGATE_LIMIT_USD")]
    pub limit_usd: Decimal,
    /// Soft limit (warns), USD; below the hard limit.
    #[arg(long, env = "TOLLGATE_SOFT_LIMIT_USD")]
    pub soft_limit_usd: Option<Decimal>,
    /// IANA timezone of the calendar periods.
    #[arg(long, env = "TOLLGATE_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// enforce or shadow.
    #[arg(long, env = "TOLLGATE_MODE", default_value = "enforce")]
    pub mode: String,
}

/// `--scope` and `--scope-id`, the filter `budgets list` and `spend` share.
#[derive(Debug, Args)]
pub struct ScopeFilter {
    /// Only this scope.
    #[arg(long, env = "TOLLGATE_SCOPE")]
    pub scope: Option<String>,
    /// Only this scope id.
    #[arg(long, env = "TOLLGATE_SCOPE_ID")]
    pub scope_id: Option<String>,
}

/// `budgets list` options.
#[derive(Debug, Args)]
pub struct BudgetListArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only these budgets.
    #[command(flatten)]
    pub only: ScopeFilter,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `keys` verbs.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints its secret once.
    Create(KeyCreateArgs),
    /// Revoke a key.
    Revoke(tokens::RevokeArgs),
}

/// `keys create` options.
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Organisation charged.
    #[arg(long, env = "TOLLGATE_ORG")]
    pub org: String,
    /// Project charged.
    #[arg(long, env = "TOLLGATE_PROJECT")]
    pub project: Option<String>,
    /// User charged.
    #[arg(long, env = "TOLLGATE_USER")]
    pub user: Option<String>,
    /// Display name.
    #[arg(long, env = "TOLLGATE_KEY_NAME", default_value = "cli")]
    pub name: String,
}

/// `bulk` options.
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Write the answer to this file (created readable by its owner only: it holds the new
    /// keys' secrets) instead of standard output.
    #[arg(long, env = "TOLLGATE_BULK_OUT")]
    pub out: Option<PathBuf>,
    /// The request: a JSON object with any of `users`, `keys`, `budgets` (each item as
    /// `POST /v1/users`, `/v1/keys`, `/v1/budgets` take it) and `revoke_keys` (key ids);
    /// `-` reads standard input.
    pub file: PathBuf,
}

/// `spend` options.
#[derive(Debug, Args)]
pub struct SpendArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this spend.
    #[command(flatten)]
    pub only: ScopeFilter,
    /// Only this model.
    #[arg(long, env = "TOLLGATE_MODEL")]
    pub model: Option<String>,
    /// From (Unix seconds, RFC 3339 or YYYY-MM-DD).
    #[arg(long, env = "TOLLGATE_FROM")]
    pub from: Option<String>,
    /// To, exclusive.
    #[arg(long, env = "TOLLGATE_TO")]
    pub to: Option<String>,
    /// Grouping: comma-separated day, model, org, project, user, key, scope.
    #[arg(long, env = "TOLLGATE_GROUP_BY")]
    pub group_by: Option<String>,
    /// Zone days are counted in.
    #[arg(long, env = "TOLLGATE_TZ")]
    pub tz: Option<String>,
    /// CSV instead of JSON.
    #[arg(long)]
    pub csv: bool,
}

/// The `tollgate` command from start to exit code: logging to stderr so stdout stays the
/// command's output (`RUST_LOG` filters, default `info`; colours when `ansi`), the command
/// line, [`run`]; an error is printed as `tollgate: …`. `main.rs` and the end-to-end tests'
/// build of the same binary both call it.
pub async fn main(ansi: bool) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(db) => {
            let store = open(&db).await?;
            store.close().await;
            println!("migrated {}", store.backend().as_str());
            Ok(())
        }
        Command::Prices {
            command: PricesCommand::Import(args),
        } => prices_import(args).await,
        Command::Cost(args) => cost(args),
        Command::Budgets { command } => match command {
            BudgetsCommand::Set(a) => budgets_set(a).await,
            BudgetsCommand::List(a) => budgets_list(a).await,
        },
        Command::Keys { command } => match command {
            KeysCommand::Create(a) => keys_create(a).await,
            KeysCommand::Revoke(a) => tokens::revoke("keys", a).await,
        },
        Command::Bulk(a) => bulk(a).await,
        Command::Spend(a) => spend(a).await,
        Command::Tokens { command } => tokens::run(command).await,
        Command::Audit(a) => tokens::audit(a).await,
    }
}

async fn open(db: &DbArgs) -> anyhow::Result<Store> {
    // Never print the URL: a PostgreSQL URL may carry a password.
    let store = Store::connect(&db.database_url)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let admin = std::env::var("TOLLGATE_ADMIN_TOKEN").unwrap_or_default();
    let dataplane = std::env::var("TOLLGATE_DATAPLANE_TOKEN").unwrap_or_default();
    let tokens = Tokens::new(&admin, &dataplane).context("refusing to start")?;
    let store = open(&args.db).await?;
    let backend = store.backend().as_str();
    let state = AppState::new(store, tokens, Clock::system());
    state
        .snapshots
        .set_min_interval(Duration::from_millis(args.snapshot_min_interval_ms));
    state.budget_metrics_max.store(
        args.budget_metrics_max,
        std::sync::atomic::Ordering::Relaxed,
    );
    state
        .snapshots
        .rebuild()
        .await
        .context("cannot build the first snapshot")?;
    let refresher = tokio::spawn(
        state
            .snapshots
            .clone()
            .run_refresher(Duration::from_millis(args.snapshot_poll_ms.max(10))),
    );
    let dispatcher = crate::alerts::dispatch::Dispatcher::new(
        state.store.clone(),
        state.clock.clone(),
        args.alerts.config(),
    )
    .context("cannot build the alert webhook client")?;
    let alerts = tokio::spawn(dispatcher.run());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = backend, "tollgate control plane serving");
    println!("listening on http://{addr}");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await?;
    refresher.abort();
    alerts.abort();
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

async fn prices_import(args: ImportArgs) -> anyhow::Result<()> {
    if args.format != "litellm" {
        bail!("--format {:?} is not supported (litellm is)", args.format);
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let store = open(&args.db).await?;
    let now = unix_now();
    let report =
        crate::prices::import_litellm(&store, &bytes, args.effective_from.unwrap_or(now), now)
            .await?;
    store.close().await;
    println!(
        "imported {} models ({} unchanged, {} skipped)",
        report.imported,
        report.unchanged,
        report.skipped.len()
    );
    for s in &report.skipped {
        println!("skipped {}: {}", s.model, s.reason);
    }
    Ok(())
}

/// Reads a price file: a Tollgate price book, else a LiteLLM map.
pub fn read_price_file(bytes: &[u8]) -> anyhow::Result<PriceBook> {
    if let Ok(book) = serde_json::from_slice::<PriceBook>(bytes) {
        return Ok(book);
    }
    Ok(litellm::import(bytes)?.book)
}

fn cost(args: CostArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.prices_file)
        .with_context(|| format!("cannot read {}", args.prices_file.display()))?;
    let book = read_price_file(&bytes)?;
    if let (Some(path), Some(api)) = (&args.response, args.api) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let answer = read(path)?;
        let request = args.request.as_ref().map(read).transpose()?;
        let q = crate::quote::quote_answer(
            &book,
            api.into(),
            &answer,
            request.as_deref(),
            args.model.as_deref(),
        )?;
        println!("{}", serde_json::to_string(&q)?);
        return Ok(());
    }
    let (Some(model), Some(usage)) = (&args.model, &args.usage) else {
        anyhow::bail!("give --model and --usage, or --response with --api");
    };
    let usage: Value = serde_json::from_str(usage).context("--usage is not JSON")?;
    let q = crate::quote::quote(&book, model, args.provider.as_deref(), &usage)?;
    println!("{}", serde_json::to_string(&q)?);
    Ok(())
}

/// A field of a JSON answer as text (strings as they are, other values as JSON, absent as "").
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn check_enum<T: serde::de::DeserializeOwned>(flag: &str, v: &str) -> anyhow::Result<()> {
    serde_json::from_value::<T>(Value::String(v.to_string()))
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("--{flag} {v:?} is not valid"))
}

async fn budgets_set(a: BudgetSetArgs) -> anyhow::Result<()> {
    check_enum::<Scope>("scope", &a.scope)?;
    check_enum::<Period>("period", &a.period)?;
    check_enum::<Mode>("mode", &a.mode)?;
    let client = Client::new(&a.api.url, &a.api.token);
    let existing = client
        .json(
            Method::GET,
            &format!(
                "/v1/budgets?scope={}&scope_id={}",
                encode(&a.scope),
                encode(&a.scope_id)
            ),
            None,
        )
        .await?;
    let found = existing
        .as_array()
        .and_then(|l| l.iter().find(|b| text(b, "period") == a.period))
        .map(|b| text(b, "id"));
    let mut body = Map::new();
    body.insert("limit_usd".into(), json!(a.limit_usd.to_string()));
    body.insert("timezone".into(), json!(a.timezone));
    body.insert("mode".into(), json!(a.mode));
    let b = match found {
        Some(id) => {
            // `set` means "exactly this": no --soft-limit-usd removes an existing one.
            body.insert(
                "soft_limit_usd".into(),
                json!(a.soft_limit_usd.map(|d| d.to_string())),
            );
            client
                .json(
                    Method::PATCH,
                    &format!("/v1/budgets/{}", encode(&id)),
                    Some(&Value::Object(body)),
                )
                .await?
        }
        None => {
            body.insert("scope".into(), json!(a.scope));
            body.insert("scope_id".into(), json!(a.scope_id));
            body.insert("period".into(), json!(a.period));
            if let Some(soft) = a.soft_limit_usd {
                body.insert("soft_limit_usd".into(), json!(soft.to_string()));
            }
            client
                .json(Method::POST, "/v1/budgets", Some(&Value::Object(body)))
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&b)?);
    Ok(())
}

async fn budgets_list(a: BudgetListArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let q = query(&[("scope", &a.only.scope), ("scope_id", &a.only.scope_id)]);
    let path = if q.is_empty() {
        "/v1/budgets".to_string()
    } else {
        format!("/v1/budgets?{}", q.join("&"))
    };
    let list = client.json(Method::GET, &path, None).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("ID\tSCOPE\tSCOPE_ID\tPERIOD\tTIMEZONE\tMODE\tLIMIT_USD\tSOFT_LIMIT_USD\tSPENT_USD\tRESETS_AT");
    for b in list.as_array().into_iter().flatten() {
        let s = |k: &str| {
            let t = text(b, k);
            if t.is_empty() {
                "-".to_string()
            } else {
                t
            }
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s("id"),
            s("scope"),
            s("scope_id"),
            s("period"),
            s("timezone"),
            s("mode"),
            s("limit_usd"),
            s("soft_limit_usd"),
            s("spent_usd"),
            b.get("window_end")
                .and_then(Value::as_i64)
                .map_or_else(|| "-".to_string(), |t| t.to_string())
        );
    }
    Ok(())
}

async fn keys_create(a: KeyCreateArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let mut body = Map::new();
    body.insert("name".into(), json!(a.name));
    body.insert("org_id".into(), json!(a.org));
    if let Some(p) = a.project {
        body.insert("project_id".into(), json!(p));
    }
    if let Some(u) = a.user {
        body.insert("user_id".into(), json!(u));
    }
    let k = client
        .json(Method::POST, "/v1/keys", Some(&Value::Object(body)))
        .await?;
    print_created(&k);
    Ok(())
}

/// Prints a new key's or token's secret and id, with the warning that it is shown once.
fn print_created(v: &Value) {
    println!("secret: {}", text(v, "secret"));
    println!("id: {}", text(v, "id"));
    println!("(the secret is shown once; only its SHA-256 is stored)");
}

async fn bulk(a: BulkArgs) -> anyhow::Result<()> {
    let text = if a.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(&a.file)
            .with_context(|| format!("cannot read {}", a.file.display()))?
    };
    let body: Value = serde_json::from_str(&text).context("the request is not JSON")?;
    // Where the secrets go is settled before they exist.
    let out = match &a.out {
        Some(path) => Some(private_file(path)?),
        None => None,
    };
    let client = Client::new(&a.api.url, &a.api.token);
    let done = client.json(Method::POST, "/v1/bulk", Some(&body)).await?;
    let count = |k: &str| done.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    let answer = serde_json::to_string_pretty(&done)?;
    match out {
        Some(mut f) => {
            use std::io::Write;
            f.write_all(answer.as_bytes())?;
            f.write_all(b"\n")?;
            println!(
                "created {} users, {} keys, {} budgets; revoked {} keys (answer in {}; the \
                 secrets are shown this once)",
                count("users"),
                count("keys"),
                count("budgets"),
                count("revoked_keys"),
                a.out
                    .as_deref()
                    .unwrap_or(std::path::Path::new("-"))
                    .display()
            );
        }
        None => println!("{answer}"),
    }
    Ok(())
}

/// A new file for secrets: refuses to overwrite one, readable by its owner only.
fn private_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))
}

/// `name=value` query parameters, percent-encoded, for the options given.
fn query(params: &[(&str, &Option<String>)]) -> Vec<String> {
    params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect()
}

async fn spend(a: SpendArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let q = query(&[
        ("scope", &a.only.scope),
        ("scope_id", &a.only.scope_id),
        ("model", &a.model),
        ("from", &a.from),
        ("to", &a.to),
        ("group_by", &a.group_by),
        ("tz", &a.tz),
    ]);
    let path = format!("/v1/spend?{}", q.join("&"));
    if a.csv {
        let text = client
            .send(Method::GET, &path, None, Some("text/csv"))
            .await?;
        print!("{text}");
    } else {
        let v = client.json(Method::GET, &path, None).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
