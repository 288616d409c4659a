//! `GET /ui/budgets/{id}`: one budget: its bar and limits, the spend of its current window
//! (the counters' figure enforcement uses) and of the previous one, and which keys and models
//! spent it, from the ledger (`Store::spend` filtered to the budget's principal and window).
//! A manager or viewer sees only budgets on its organisation's principals
//! (`http::budgets::budget_for`, as `GET /v1/budgets/{id}`).

use axum::extract::{Path, State};
use axum::Extension;
use maud::{html, Markup};
use tollgate_core::budget::{Period, Window};

use super::layout::{self, time, usd, Nav};
use super::overview::{bar, utilization};
use super::sessions::Session;
use super::UiResult;
use crate::http::budgets::{budget_for, views};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::budgets::Budget;
use crate::store::spend::{GroupBy, SpendQuery, SpendReport};

/// The ledger's spend of budget `b` in `w`, grouped by `g`.
async fn spend_in(
    s: &AppState,
    b: &Budget,
    w: Window,
    now: i64,
    g: GroupBy,
) -> UiResult<SpendReport> {
    let q = SpendQuery {
        scope: Some((b.scope, b.scope_id.clone())),
        model: None,
        from: w.start,
        to: w.end.unwrap_or(now.saturating_add(1)),
        group_by: vec![g],
        zone: b.zone(),
        org: None,
    };
    Ok(s.store.spend(&q).await?)
}

fn breakdown(id: &str, title: &str, column: GroupBy, report: &SpendReport) -> Markup {
    html! {
        h2 { (title) }
        @if report.rows.is_empty() {
            p.muted { "No spend in this window." }
        } @else {
            table id=(id) {
                thead { tr { th { (column.name()) } th.num { "requests" } th.num { "input tokens" } th.num { "output tokens" } th.num { "cost" } } }
                tbody {
                    @for row in &report.rows {
                        tr {
                            td { (row.group.get(column.name()).cloned().flatten().unwrap_or_else(|| "(none)".into())) }
                            td.num { (row.requests) } td.num { (row.input_tokens) } td.num { (row.output_tokens) }
                            td.num { (usd(row.cost_usd)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/budgets/{id}`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Markup> {
    let b = budget_for(&s, &session.principal, &id).await?;
    let now = s.clock.now();
    let current = b.window_at(now);
    let previous =
        (b.period != Period::Total).then(|| b.window_at(current.start.saturating_sub(1)));
    let by_key = spend_in(&s, &b, current, now, GroupBy::Key).await?;
    let denials = s.store.denials(&b.id, 20).await?;
    let by_model = spend_in(&s, &b, current, now, GroupBy::Model).await?;
    let before = match previous {
        Some(w) => Some((w, spend_in(&s, &b, w, now, GroupBy::Model).await?)),
        None => None,
    };
    let v = views(&s, vec![b])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("budget view vanished".into()))?;
    let b = &v.budget;
    let zone = b.zone();
    let title = format!("Budget: {} {}", b.scope.as_str(), b.scope_id);
    let body = html! {
        div.cards {
            div.card #current {
                div.muted { "This window" }
                div.big { (usd(v.spent_usd)) " of " (usd(b.limit_usd)) }
                div { (bar(&v)) " " (layout::percent(utilization(v.spent_usd, b.limit_usd))) }
                div.muted {
                    @match (v.window_start, v.window_end) {
                        (Some(start), Some(end)) => { (time(&zone, start)) " to " (time(&zone, end)) }
                        (Some(start), None) => { "since " (time(&zone, start)) }
                        _ => { "all time (never resets)" }
                    }
                }
            }
            @if let Some((w, report)) = &before {
                div.card #previous {
                    div.muted { "Previous window" }
                    div.big { (usd(report.total_usd)) }
                    div.muted { (time(&zone, w.start)) " to " (w.end.map(|e| time(&zone, e)).unwrap_or_default()) }
                }
            }
            div.card {
                div.muted { "Limits" }
                div { "Hard " (usd(b.limit_usd)) }
                div { "Soft " @if let Some(soft) = b.soft_limit_usd { (usd(soft)) } @else { "—" } }
                div.muted { (b.period.as_str()) " · " (b.timezone) " · " (b.mode.as_str()) }
            }
        }
        p.muted { "The window's spend is what enforcement counts; the tables below are the ledger's rows of this window (events still in an Envoy's queue arrive within seconds)." }
        (breakdown("by-key", "Keys that spent it", GroupBy::Key, &by_key))
        (breakdown("by-model", "Models", GroupBy::Model, &by_model))
        h2 { "Recent refusals" }
        @if denials.is_empty() {
            p.muted { "This budget has refused nothing." }
        } @else {
            table #denials {
                thead { tr { th { "from" } th { "to" } th.num { "requests" } th { "key" } th { "user" } th { "model" } } }
                tbody {
                    @for d in &denials {
                        tr {
                            td { (time(&zone, d.first_ts)) } td { (time(&zone, d.last_ts)) } td.num { (d.requests) }
                            td { (d.key_id.as_deref().unwrap_or("—")) } td { (d.user_id.as_deref().unwrap_or("—")) } td { (d.model) }
                        }
                    }
                }
            }
        }
        p { a href="/ui/spend?stack=key" { "Spend over time" } }
    };
    Ok(layout::page(&title, &session, Nav::Overview, body))
}
