//! `GET /ui/alerts`: the webhook subscriptions the principal may see (a viewer sees each URL
//! cut to its scheme and host, as on the API) and the delivery log, newest first, optionally
//! one status only (`?status=pending|delivered|failed`). A manager or admin also gets a create
//! form and, per subscription, a pause / resume and a delete button.
//!
//! `POST /ui/alerts` creates through the API's own checks (`NewWebhookBody::check`) and answers
//! the page with the signing secret in it, once, like a new key (no redirect: the secret is in
//! no URL). `POST /ui/alerts/{id}/enabled` (`enabled=true|false`) and
//! `POST /ui/alerts/{id}/delete` change one the principal may see (`http::alerts::visible`).
//!
//! The form posts each chosen event as its own `events` field, so it is read as pairs
//! (`Form<Vec<(String, String)>>`) rather than a struct.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, csrf_field, enc, post_button, shown_once, time, Nav};
use super::sessions::Session;
use super::{can_write, page as respond, see_other, UiError, UiResult};
use crate::alerts::deliveries::DeliveryQuery;
use crate::alerts::webhooks::{CreatedWebhook, WebhookPatch};
use crate::alerts::{EventClass, Format, DEFAULT_THRESHOLDS};
use crate::http::alerts::{shown, visible, NewWebhookBody};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::timezone::Zone;

/// Deliveries the page lists.
pub const LOG_ROWS: u32 = 100;

/// The page's query.
#[derive(Debug, Default, Deserialize)]
pub struct LogFilter {
    status: Option<String>,
}

/// The pause / resume form.
#[derive(Debug, Deserialize)]
pub struct EnabledForm {
    enabled: bool,
}

fn invalid(field: &str, detail: impl Into<String>) -> UiError {
    UiError(ApiError::invalid(field, detail))
}

/// A comma- or space-separated list, empty entries dropped.
fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The create form as the API's body. Unknown fields are refused, as the API refuses them.
fn new_webhook_body(fields: &[(String, String)]) -> UiResult<NewWebhookBody> {
    let mut body = NewWebhookBody {
        org_id: None,
        name: None,
        url: String::new(),
        format: Format::Tollgate,
        budget_ids: Vec::new(),
        scope_ids: Vec::new(),
        events: BTreeSet::new(),
        thresholds: BTreeSet::new(),
        enabled: true,
    };
    for (k, v) in fields {
        let v = v.trim();
        match k.as_str() {
            "csrf" => {}
            "org_id" => body.org_id = (!v.is_empty()).then(|| v.to_string()),
            "name" => body.name = (!v.is_empty()).then(|| v.to_string()),
            "url" => body.url = v.to_string(),
            "format" => {
                body.format = match v {
                    "tollgate" => Format::Tollgate,
                    "slack" => Format::Slack,
                    other => return Err(invalid("format", format!("{other:?} is not a format"))),
                }
            }
            "budget_ids" => body.budget_ids = list(v),
            "scope_ids" => body.scope_ids = list(v),
            "events" => {
                let class = EventClass::ALL
                    .into_iter()
                    .find(|c| c.as_str() == v)
                    .ok_or_else(|| invalid("events", format!("{v:?} is not an event")))?;
                body.events.insert(class);
            }
            "thresholds" => {
                for t in list(v) {
                    let p = t.trim_end_matches('%').parse::<u32>().map_err(|_| {
                        invalid("thresholds", format!("{t:?} is not a whole percentage"))
                    })?;
                    body.thresholds.insert(p);
                }
            }
            other => return Err(invalid(other, "unknown field")),
        }
    }
    Ok(body)
}

fn events_text(events: &BTreeSet<EventClass>) -> String {
    if events.is_empty() || events.len() == EventClass::ALL.len() {
        return "all".into();
    }
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    names.join(", ")
}

/// Which budgets a subscription watches, in words.
fn watches(budgets: &[String], scopes: &[String]) -> String {
    match (budgets.is_empty(), scopes.is_empty()) {
        (true, true) => "every budget".into(),
        (false, true) => budgets.join(", "),
        (true, false) => format!("budgets on {}", scopes.join(", ")),
        (false, false) => format!("{}; budgets on {}", budgets.join(", "), scopes.join(", ")),
    }
}

async fn render(
    s: &AppState,
    session: &Session,
    filter: &LogFilter,
    created: Option<&CreatedWebhook>,
) -> UiResult<Markup> {
    let who = &session.principal;
    let status = match filter.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(st @ ("pending" | "delivered" | "failed")) => Some(st.to_string()),
        Some(other) => {
            return Err(invalid(
                "status",
                format!("{other:?} is not pending, delivered or failed"),
            ))
        }
    };
    let org = who.org().map(str::to_string);
    let hooks = s.store.list_webhooks(org.as_deref()).await?;
    let deliveries = s
        .store
        .list_deliveries(&DeliveryQuery {
            org_id: org.clone(),
            status: status.clone(),
            limit: LOG_ROWS,
            ..DeliveryQuery::default()
        })
        .await?;
    let names: std::collections::HashMap<&str, &str> = hooks
        .iter()
        .map(|w| (w.id.as_str(), w.name.as_str()))
        .collect();
    let orgs: Vec<String> = match &org {
        Some(o) => vec![o.clone()],
        None => s
            .store
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect(),
    };
    let write = can_write(who);
    let zone = Zone::UTC;
    let defaults: Vec<String> = DEFAULT_THRESHOLDS.iter().map(u32::to_string).collect();
    let body = html! {
        @if let Some(c) = created {
            (shown_once("webhook", &c.webhook.name, &c.webhook.id, &c.secret))
        }
        @if write {
            h2 { "New subscription" }
            form.create method="post" action="/ui/alerts" {
                (csrf_field(session))
                label { "Name" input type="text" name="name" maxlength="200" placeholder="webhook"; }
                label { "URL" input type="url" name="url" required placeholder="https://hooks.example.com/…"; }
                label { "Organisation" select name="org_id" {
                    @if org.is_none() { option value="" { "every organisation and the fleet" } }
                    @for o in &orgs { option value=(o) { (o) } }
                } }
                label { "Format" select name="format" {
                    option value="tollgate" { "Tollgate JSON" }
                    option value="slack" { "Slack message" }
                } }
                fieldset.events {
                    legend { "Events (none ticked: all)" }
                    @for class in EventClass::ALL {
                        label.check { input type="checkbox" name="events" value=(class.as_str()); (class.as_str()) }
                    }
                }
                label { "Thresholds, % of the limit" input type="text" name="thresholds" placeholder=(defaults.join(", ")); }
                label { "Only budgets (ids, optional)" input type="text" name="budget_ids"; }
                label { "Only principals (ids, optional)" input type="text" name="scope_ids"; }
                button type="submit" #create-webhook { "Create subscription" }
            }
        }
        h2 { "Subscriptions" }
        @if hooks.is_empty() {
            p.muted { "No subscriptions yet." }
        } @else {
            table #webhooks {
                thead { tr {
                    th { "Name" } th { "Id" } th { "Org" } th { "URL" } th { "Format" } th { "Events" }
                    th { "Thresholds" } th { "Watches" } th { "Status" }
                    @if write { th {} th {} }
                } }
                tbody {
                    @for w in hooks.iter().map(|w| shown(who, w)) {
                        tr data-webhook=(w.id) {
                            td { (w.name) } td { code { (w.id) } } td { (w.org_id.as_deref().unwrap_or("all")) }
                            td { code { (w.url) } } td { (w.format.as_str()) } td { (events_text(&w.events)) }
                            td { (w.thresholds.iter().map(|t| format!("{t} %")).collect::<Vec<_>>().join(", ")) }
                            td { (watches(&w.budget_ids, &w.scope_ids)) }
                            td.status { @if w.enabled { "on" } @else { "paused" } }
                            @if write {
                                td { (post_button(
                                    session,
                                    &format!("/ui/alerts/{}/enabled", enc(&w.id)),
                                    if w.enabled { "Pause" } else { "Resume" },
                                    false,
                                    &[("enabled", if w.enabled { "false" } else { "true" })],
                                )) }
                                td { (post_button(session, &format!("/ui/alerts/{}/delete", enc(&w.id)), "Delete", true, &[])) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Deliveries" }
        form.filters method="get" action="/ui/alerts" {
            label { "Status" select name="status" {
                @for (v, label) in [("", "any"), ("pending", "pending"), ("delivered", "delivered"), ("failed", "failed")] {
                    option value=(v) selected[status.as_deref().unwrap_or("") == v] { (label) }
                }
            } }
            button type="submit" { "Show" }
        }
        @if deliveries.is_empty() {
            p.muted { "No deliveries." }
        } @else {
            table #deliveries {
                thead { tr {
                    th { "Id" } th { "Recorded" } th { "Event" } th { "Subscription" } th { "Status" }
                    th.num { "Attempts" } th { "Last answer" } th { "Next attempt" }
                } }
                tbody {
                    @for d in &deliveries {
                        tr data-delivery=(d.id) {
                            td { (d.id) } td { (time(&zone, d.created_ms / 1000)) } td { (d.kind) }
                            td { (names.get(d.webhook_id.as_str()).copied().unwrap_or("")) " " code { (d.webhook_id) } }
                            td.status { (d.status) } td.num { (d.attempts) }
                            td { @match (d.last_status, &d.last_error) {
                                (Some(st), _) => (format!("HTTP {st}")),
                                (None, Some(e)) => (e),
                                (None, None) => span.muted { "—" },
                            } }
                            td { @if d.status == "pending" { (time(&zone, d.next_attempt_ms / 1000)) } @else { span.muted { "—" } } }
                        }
                    }
                }
            }
            @if deliveries.len() == LOG_ROWS as usize {
                p.muted { "The newest " (LOG_ROWS) " shown; GET /v1/alerts/deliveries pages through the rest." }
            }
        }
    };
    Ok(layout::page("Alerts", session, Nav::Alerts, body))
}

/// `GET /ui/alerts`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Query(filter): Query<LogFilter>,
) -> UiResult<Markup> {
    render(&s, &session, &filter, None).await
}

/// `POST /ui/alerts`: creates the subscription; the answer shows its secret once.
pub async fn create(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult<Response> {
    let new = new_webhook_body(&fields)?.check(&session.principal)?;
    let created = s.store.create_webhook(&new, s.clock.now()).await?;
    Ok(respond(
        StatusCode::CREATED,
        render(&s, &session, &LogFilter::default(), Some(&created)).await?,
    ))
}

/// `POST /ui/alerts/{id}/enabled`: pauses or resumes.
pub async fn set_enabled(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<EnabledForm>,
) -> UiResult<Response> {
    visible(&s, &session.principal, &id).await?;
    let patch = WebhookPatch {
        enabled: Some(f.enabled),
        ..WebhookPatch::default()
    };
    s.store.update_webhook(&id, &patch, s.clock.now()).await?;
    Ok(see_other("/ui/alerts"))
}

/// `POST /ui/alerts/{id}/delete`: removes it with its deliveries.
pub async fn delete(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    visible(&s, &session.principal, &id).await?;
    s.store.delete_webhook(&id).await?;
    Ok(see_other("/ui/alerts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_form_reads_as_the_api_body() {
        let b = new_webhook_body(&pairs(&[
            ("csrf", "x"),
            ("name", " ops "),
            ("url", "https://h.example/x"),
            ("org_id", ""),
            ("format", "slack"),
            ("events", "threshold"),
            ("events", "hard_limit"),
            ("thresholds", "50, 80%  95"),
            ("budget_ids", "bud_1,bud_2"),
            ("scope_ids", ""),
        ]))
        .unwrap();
        assert_eq!(b.name.as_deref(), Some("ops"));
        assert_eq!(b.org_id, None);
        assert_eq!(b.format, Format::Slack);
        assert_eq!(
            b.events,
            BTreeSet::from([EventClass::Threshold, EventClass::HardLimit])
        );
        assert_eq!(b.thresholds, BTreeSet::from([50, 80, 95]));
        assert_eq!(b.budget_ids, ["bud_1", "bud_2"]);
        assert!(b.scope_ids.is_empty());
        for bad in [
            ("events", "everything"),
            ("thresholds", "half"),
            ("format", "xml"),
            ("secret", "x"),
        ] {
            assert!(new_webhook_body(&pairs(&[bad])).is_err(), "{bad:?}");
        }
    }
}
