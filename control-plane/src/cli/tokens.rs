//! `tollgate tokens create|list|revoke` and `tollgate audit`, over the REST API
//! (`/v1/tokens`, `/v1/audit`): API tokens with a role and scope, and the log of who changed
//! what. Tested by `tests/cli.rs`.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::{print_created, query, text, ApiArgs};
use crate::client::{encode, Client};

/// `tokens` verbs.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token; prints its secret once.
    Create(TokenCreateArgs),
    /// List API tokens (never their secrets).
    List(TokenListArgs),
    /// Revoke an API token: refused from the next request on.
    Revoke(RevokeArgs),
}

/// `tokens create` options.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// admin (everything), manager (read and change one organisation) or viewer (read one
    /// organisation).
    #[arg(long, env = "TOLLGATE_TOKEN_ROLE")]
    pub role: String,
    /// The organisation of a manager or viewer.
    #[arg(long, env = "TOLLGATE_ORG")]
    pub org: Option<String>,
    /// Display name.
    #[arg(long, env = "TOLLGATE_TOKEN_NAME", default_value = "cli")]
    pub name: String,
}

/// `tokens list` options.
#[derive(Debug, Args)]
pub struct TokenListArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this organisation's.
    #[arg(long, env = "TOLLGATE_ORG")]
    pub org: Option<String>,
    /// Also revoked tokens.
    #[arg(long)]
    pub include_revoked: bool,
}

/// `tokens revoke` (and `keys revoke`) options.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// The id (`tok_…`, `key_…`).
    pub id: String,
}

/// `audit` options: the filters of `GET /v1/audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this organisation's changes.
    #[arg(long, env = "TOLLGATE_ORG")]
    pub org: Option<String>,
    /// Only this token's changes (`tok_…`, or `admin-env`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this kind of object: org, project, user, key, budget, price, bulk, token or webhook.
    #[arg(long)]
    pub object_type: Option<String>,
    /// Only this object.
    #[arg(long)]
    pub object_id: Option<String>,
    /// From (Unix seconds, RFC 3339 or YYYY-MM-DD).
    #[arg(long, env = "TOLLGATE_FROM")]
    pub from: Option<String>,
    /// To, exclusive.
    #[arg(long, env = "TOLLGATE_TO")]
    pub to: Option<String>,
    /// Only rows older than this id (`next_before` of the previous page).
    #[arg(long)]
    pub before: Option<String>,
    /// At most this many rows (1 to 1000, default 100).
    #[arg(long)]
    pub limit: Option<String>,
}

/// Runs a `tokens` verb.
pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create(a) => create(a).await,
        TokensCommand::List(a) => list(a).await,
        TokensCommand::Revoke(a) => revoke("tokens", a).await,
    }
}

async fn create(a: TokenCreateArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let body = json!({"name": a.name, "role": a.role, "org_id": a.org});
    let t = client.json(Method::POST, "/v1/tokens", Some(&body)).await?;
    print_created(&t);
    Ok(())
}

async fn list(a: TokenListArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let revoked = a.include_revoked.then(|| "true".to_string());
    let q = query(&[("org_id", &a.org), ("include_revoked", &revoked)]);
    let list = client
        .json(Method::GET, &format!("/v1/tokens?{}", q.join("&")), None)
        .await?;
    println!("ID\tROLE\tORG\tNAME\tPREFIX\tCREATED_BY\tREVOKED_AT");
    for t in list.as_array().into_iter().flatten() {
        let cell = |k: &str| Some(text(t, k)).filter(|s| !s.is_empty());
        let row: Vec<String> = [
            "id",
            "role",
            "org_id",
            "name",
            "prefix",
            "created_by",
            "revoked_at",
        ]
        .iter()
        .map(|k| cell(k).unwrap_or_else(|| "-".into()))
        .collect();
        println!("{}", row.join("\t"));
    }
    Ok(())
}

/// `POST /v1/{kind}/{id}/revoke`, printing the id and when it was revoked.
pub async fn revoke(kind: &str, a: RevokeArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let path = format!("/v1/{kind}/{}/revoke", encode(&a.id));
    let v = client.json(Method::POST, &path, None).await?;
    println!(
        "revoked {} at {}",
        text(&v, "id"),
        v.get("revoked_at").and_then(Value::as_i64).unwrap_or(0)
    );
    Ok(())
}

/// Prints one page of the audit log as JSON.
pub async fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.api.url, &a.api.token);
    let q = query(&[
        ("org_id", &a.org),
        ("actor", &a.actor),
        ("object_type", &a.object_type),
        ("object_id", &a.object_id),
        ("from", &a.from),
        ("to", &a.to),
        ("before", &a.before),
        ("limit", &a.limit),
    ]);
    let page = client
        .json(Method::GET, &format!("/v1/audit?{}", q.join("&")), None)
        .await?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}
