//! Webhook subscriptions (migration 0009): create, list, get, update, delete, each audited in
//! its transaction as object type `webhook`. The signing secret (`whsec_` and 40 base62
//! characters) is made here and returned once, in [`CreatedWebhook`]; it is stored in clear
//! because every delivery is signed with it, and no other answer, log line, `Debug` output or
//! audit row carries it ([`Webhook`] has no field for it). The URL's path and query may be a
//! credential too (a Slack hook's path is): the audit log and viewers get it redacted to its
//! scheme and host ([`redacted_url`]); managers and admins, who may change it, see it whole.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{EventClass, Format, DEFAULT_THRESHOLDS};
use crate::keys::{generate_id, random_base62};
use crate::store::audit::{audit, Change, NONE};
use crate::store::tenants::{invalid_ref_if_missing, not_found};
use crate::store::{begin_write, with_pool, Store, StoreError};

/// What every signing secret starts with (recognisable in a scan).
pub const SECRET_PREFIX: &str = "whsec_";
/// Most thresholds one subscription may ask for.
pub const MAX_THRESHOLDS: usize = 20;
/// Most budget or scope ids one subscription may name.
pub const MAX_IDS: usize = 1_000;

/// A subscription as the API shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// Id (`whk_…`).
    pub id: String,
    /// The organisation whose budgets it watches; absent: every organisation and the fleet
    /// (an admin's).
    pub org_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Where deliveries are POSTed (`http` or `https`).
    pub url: String,
    /// The body sent.
    pub format: Format,
    /// Only these budgets (with `scope_ids`: either). Both empty: every budget it may see.
    pub budget_ids: Vec<String>,
    /// Only budgets on these principals (org, project, user or key ids; an org id also
    /// selects every budget of that organisation).
    pub scope_ids: Vec<String>,
    /// Which events.
    pub events: BTreeSet<EventClass>,
    /// Utilization thresholds, percent of the hard limit.
    pub thresholds: BTreeSet<u32>,
    /// Whether it receives anything.
    pub enabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A subscription just created, with its signing secret: the only answer that carries it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_…`): verify `Tollgate-Signature` with it. Shown once.
    pub secret: String,
}

impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("webhook", &self.webhook)
            .finish_non_exhaustive()
    }
}

/// A new subscription (lists empty: the defaults).
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// Organisation (none: an admin's, every organisation).
    pub org_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Target URL.
    pub url: String,
    /// Body format.
    pub format: Format,
    /// Budgets.
    pub budget_ids: Vec<String>,
    /// Scopes.
    pub scope_ids: Vec<String>,
    /// Events (empty: all).
    pub events: BTreeSet<EventClass>,
    /// Thresholds (empty: 50, 80, 95, 100).
    pub thresholds: BTreeSet<u32>,
    /// Enabled.
    pub enabled: bool,
}

/// A change of a subscription: each field given replaces it.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// Display name.
    pub name: Option<String>,
    /// Target URL.
    pub url: Option<String>,
    /// Body format.
    pub format: Option<Format>,
    /// Budgets.
    pub budget_ids: Option<Vec<String>>,
    /// Scopes.
    pub scope_ids: Option<Vec<String>>,
    /// Events (empty: all).
    pub events: Option<BTreeSet<EventClass>>,
    /// Thresholds (empty: the defaults).
    pub thresholds: Option<BTreeSet<u32>>,
    /// Enabled.
    pub enabled: Option<bool>,
}

/// A stored row, with the secret (crate-internal: the dispatcher signs with it).
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    id: String,
    org_id: Option<String>,
    name: String,
    url: String,
    pub(crate) secret: String,
    format: String,
    budget_ids: String,
    scope_ids: String,
    events: String,
    thresholds: String,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const WEBHOOK_COLUMNS: &str = "id, org_id, name, url, secret, format, budget_ids, \
     scope_ids, events, thresholds, enabled, created_at, updated_at";

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("alert_webhooks.{what}: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl WebhookRow {
    pub(crate) fn view(&self) -> Result<Webhook, StoreError> {
        Ok(Webhook {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            format: match self.format.as_str() {
                "slack" => Format::Slack,
                "tollgate" => Format::Tollgate,
                other => return Err(StoreError::Corrupt(format!("webhook format {other:?}"))),
            },
            budget_ids: serde_json::from_str(&self.budget_ids).map_err(corrupt("budget_ids"))?,
            scope_ids: serde_json::from_str(&self.scope_ids).map_err(corrupt("scope_ids"))?,
            events: serde_json::from_str(&self.events).map_err(corrupt("events"))?,
            thresholds: serde_json::from_str(&self.thresholds).map_err(corrupt("thresholds"))?,
            enabled: self.enabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// `url` without its path and query (`https://hooks.slack.com/…`): a Slack or Teams hook's
/// path is its credential. What viewers and the audit log see.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            }
        }
        Err(_) => "…".into(),
    }
}

impl Webhook {
    /// This subscription with its URL redacted ([`redacted_url`]).
    pub fn redacted(&self) -> Webhook {
        Webhook {
            url: redacted_url(&self.url),
            ..self.clone()
        }
    }
}

/// Checks a target URL: `http` or `https`, a host, no user or password (they would end up in
/// listings), at most 2,048 characters.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    if url.len() > 2048 {
        return Err(invalid("url", "longer than 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url", "must not carry a user or password"));
    }
    Ok(())
}

/// Checks and completes what a subscription selects: defaults for empty events and
/// thresholds, thresholds 1 to 1,000 %, bounded lists, fleet events only without an
/// organisation.
fn normalize(w: &mut Webhook) -> Result<(), StoreError> {
    check_url(&w.url)?;
    if w.events.is_empty() {
        w.events = EventClass::ALL.into_iter().collect();
        if w.org_id.is_some() {
            w.events.remove(&EventClass::FleetStale);
        }
    }
    if w.org_id.is_some() && w.events.contains(&EventClass::FleetStale) {
        return Err(invalid(
            "events",
            "fleet_stale is about every organisation's Envoys: only a subscription without org_id gets it",
        ));
    }
    if w.thresholds.is_empty() {
        w.thresholds = DEFAULT_THRESHOLDS.into_iter().collect();
    }
    if w.thresholds.len() > MAX_THRESHOLDS {
        return Err(invalid("thresholds", format!("at most {MAX_THRESHOLDS}")));
    }
    if let Some(bad) = w.thresholds.iter().find(|&&t| t == 0 || t > 1000) {
        return Err(invalid(
            "thresholds",
            format!("{bad} is not a percentage from 1 to 1000"),
        ));
    }
    for (field, ids) in [("budget_ids", &w.budget_ids), ("scope_ids", &w.scope_ids)] {
        if ids.len() > MAX_IDS {
            return Err(invalid(field, format!("at most {MAX_IDS} ids")));
        }
        if ids.iter().any(|id| id.is_empty() || id.len() > 256) {
            return Err(invalid(field, "ids are 1 to 256 characters"));
        }
    }
    Ok(())
}

impl Store {
    /// Creates a subscription and returns it with its secret.
    pub async fn create_webhook(
        &self,
        new: &NewWebhook,
        now: i64,
    ) -> Result<CreatedWebhook, StoreError> {
        if let Some(org) = &new.org_id {
            self.get_org(org)
                .await
                .map_err(|e| invalid_ref_if_missing(e, "org_id"))?;
        }
        let random = |e: crate::keys::RandomError| StoreError::Corrupt(e.to_string());
        let mut w = Webhook {
            id: generate_id("whk").map_err(random)?,
            org_id: new.org_id.clone(),
            name: new.name.clone(),
            url: new.url.clone(),
            format: new.format,
            budget_ids: new.budget_ids.clone(),
            scope_ids: new.scope_ids.clone(),
            events: new.events.clone(),
            thresholds: new.thresholds.clone(),
            enabled: new.enabled,
            created_at: now,
            updated_at: now,
        };
        normalize(&mut w)?;
        let secret = format!("{SECRET_PREFIX}{}", random_base62(40).map_err(random)?);
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query(sql!(
                "INSERT INTO alert_webhooks ({WEBHOOK_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(&w.id)
            .bind(&w.org_id)
            .bind(&w.name)
            .bind(&w.url)
            .bind(&secret)
            .bind(w.format.as_str())
            .bind(to_json(&w.budget_ids)?)
            .bind(to_json(&w.scope_ids)?)
            .bind(to_json(&w.events)?)
            .bind(to_json(&w.thresholds)?)
            .bind(w.enabled)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_constraint(e, "id", "webhook id collides".into()))?;
            audit!(
                tx,
                Change::new(
                    "webhook",
                    &w.id,
                    w.org_id.as_deref(),
                    NONE,
                    Some(&w.redacted())
                )
            );
            tx.commit().await?;
        });
        Ok(CreatedWebhook { webhook: w, secret })
    }

    /// One subscription.
    pub async fn get_webhook(&self, id: &str) -> Result<Webhook, StoreError> {
        self.webhook_row(id).await?.view()
    }

    /// One subscription's row, with its secret.
    pub(crate) async fn webhook_row(&self, id: &str) -> Result<WebhookRow, StoreError> {
        let row: Option<WebhookRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(sql!(
                "SELECT {WEBHOOK_COLUMNS} FROM alert_webhooks WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| not_found("webhook", id))
    }

    /// Subscriptions, of one organisation when given (an admin's, of none, only unfiltered),
    /// by id.
    pub async fn list_webhooks(&self, org_id: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let rows: Vec<WebhookRow> = with_pool!(self, read, |pool, pg| {
            sqlx::query_as(sql!(
                "SELECT {WEBHOOK_COLUMNS} FROM alert_webhooks \
                 WHERE ($1 IS NULL OR org_id = $1) ORDER BY id"
            ))
            .bind(org_id)
            .fetch_all(pool)
            .await?
        });
        rows.iter().map(WebhookRow::view).collect()
    }

    /// Changes a subscription (its organisation and secret stay).
    pub async fn update_webhook(
        &self,
        id: &str,
        patch: &WebhookPatch,
        now: i64,
    ) -> Result<Webhook, StoreError> {
        let before = self.get_webhook(id).await?;
        let mut w = before.clone();
        if let Some(v) = &patch.name {
            w.name = v.clone();
        }
        if let Some(v) = &patch.url {
            w.url = v.clone();
        }
        if let Some(v) = patch.format {
            w.format = v;
        }
        if let Some(v) = &patch.budget_ids {
            w.budget_ids = v.clone();
        }
        if let Some(v) = &patch.scope_ids {
            w.scope_ids = v.clone();
        }
        if let Some(v) = &patch.events {
            w.events = v.clone();
        }
        if let Some(v) = &patch.thresholds {
            w.thresholds = v.clone();
        }
        if let Some(v) = patch.enabled {
            w.enabled = v;
        }
        w.updated_at = now;
        normalize(&mut w)?;
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let n = sqlx::query(
                "UPDATE alert_webhooks SET name = $1, url = $2, format = $3, budget_ids = $4, \
                 scope_ids = $5, events = $6, thresholds = $7, enabled = $8, updated_at = $9 \
                 WHERE id = $10",
            )
            .bind(&w.name)
            .bind(&w.url)
            .bind(w.format.as_str())
            .bind(to_json(&w.budget_ids)?)
            .bind(to_json(&w.scope_ids)?)
            .bind(to_json(&w.events)?)
            .bind(to_json(&w.thresholds)?)
            .bind(w.enabled)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(not_found("webhook", id));
            }
            audit!(
                tx,
                Change::new(
                    "webhook",
                    id,
                    w.org_id.as_deref(),
                    Some(&before.redacted()),
                    Some(&w.redacted())
                )
            );
            tx.commit().await?;
        });
        Ok(w)
    }

    /// Deletes a subscription and its deliveries.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        let before = self.get_webhook(id).await?;
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let n = sqlx::query("DELETE FROM alert_webhooks WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(not_found("webhook", id));
            }
            audit!(
                tx,
                Change::new("webhook", id, before.org_id.as_deref(), Some(&before), NONE)
            );
            tx.commit().await?;
        });
        Ok(())
    }
}
