//! `GET /ui`: every budget the signed-in principal may see, with its spend in the current
//! window as a utilization bar (the soft limit marked on it), the limits, the window and when
//! it resets; sorted worst first (highest utilization) unless a column header asks otherwise
//! (`?sort=utilization|spend|limit|resets|scope&dir=asc|desc`), [`PAGE_ROWS`] a page
//! (`&page=2`: a page of 10,000 rows was 6.8 MB of HTML, most of the overview's time with that
//! many budgets, and nobody reads past the worst few hundred). Spend is the counters' figure,
//! the one enforcement uses (`http::budgets::views`, as `GET /v1/budgets` answers it).

use std::cmp::Ordering;

use axum::extract::{Query, State};
use axum::Extension;
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::layout::{self, enc, percent, time, usd, Nav};
use super::sessions::Session;
use super::{UiError, UiResult};
use crate::http::budgets::{views, BudgetView};
use crate::http::error::ApiError;
use crate::http::AppState;

/// Budgets a page shows.
pub const PAGE_ROWS: usize = 200;

/// The overview's query.
#[derive(Debug, Default, Deserialize)]
pub struct Sort {
    sort: Option<String>,
    dir: Option<String>,
    page: Option<String>,
}

/// Spend over the hard limit as a ratio (a zero limit is full as soon as it exists).
pub fn utilization(spent: Decimal, limit: Decimal) -> Decimal {
    if limit.is_zero() {
        return Decimal::ONE;
    }
    spent.checked_div(limit).unwrap_or(Decimal::MAX)
}

/// The bar's state: under the soft limit, past it, or at the hard limit.
fn state(v: &BudgetView) -> &'static str {
    if v.spent_usd >= v.budget.limit_usd {
        "over"
    } else if v.budget.soft_limit_usd.is_some_and(|s| v.spent_usd >= s) {
        "soft"
    } else {
        "ok"
    }
}

/// The utilization bar: an inline SVG 100 units wide (no inline style, which the console's
/// content security policy refuses), filled to the utilization, the soft limit marked.
pub fn bar(v: &BudgetView) -> Markup {
    let ratio = utilization(v.spent_usd, v.budget.limit_usd);
    let fill = (ratio.min(Decimal::ONE) * Decimal::ONE_HUNDRED)
        .round_dp(2)
        .normalize();
    let soft = v.budget.soft_limit_usd.map(|s| {
        (utilization(s, v.budget.limit_usd).min(Decimal::ONE) * Decimal::ONE_HUNDRED)
            .round_dp(2)
            .normalize()
    });
    html! {
        svg.bar viewBox="0 0 100 10" preserveAspectRatio="none" role="img"
            aria-label=(percent(ratio)) data-utilization=(percent(ratio)) {
            rect.track x="0" y="0" width="100" height="10" {}
            rect class=(format!("fill {}", state(v))) x="0" y="0" width=(fill) height="10" {}
            @if let Some(s) = soft {
                line.soft-mark x1=(s) x2=(s) y1="0" y2="10" {}
            }
        }
    }
}

/// Compares two budgets, each with its utilization (computed once per budget: a decimal
/// division, which per comparison was a visible share of sorting 10,000 budgets).
fn compare(
    key: &str,
    (ua, a): (Decimal, &BudgetView),
    (ub, b): (Decimal, &BudgetView),
) -> Ordering {
    match key {
        "spend" => a.spent_usd.cmp(&b.spent_usd),
        "limit" => a.budget.limit_usd.cmp(&b.budget.limit_usd),
        // A budget that never resets sorts after every one that does.
        "resets" => a
            .window_end
            .unwrap_or(i64::MAX)
            .cmp(&b.window_end.unwrap_or(i64::MAX)),
        "scope" => (a.budget.scope.as_str(), &a.budget.scope_id)
            .cmp(&(b.budget.scope.as_str(), &b.budget.scope_id)),
        _ => ua.cmp(&ub),
    }
}

/// Sorts in place: `sort` names the column (utilization by default), `dir` the order
/// (utilization, spend and limit descending by default: worst first; the others ascending).
pub fn sort(list: &mut Vec<BudgetView>, sort: &str, dir: Option<&str>) {
    let descending = match dir {
        Some("asc") => false,
        Some("desc") => true,
        _ => !matches!(sort, "resets" | "scope"),
    };
    let mut keyed: Vec<(Decimal, BudgetView)> = list
        .drain(..)
        .map(|v| (utilization(v.spent_usd, v.budget.limit_usd), v))
        .collect();
    keyed.sort_by(|(ua, a), (ub, b)| {
        let o = compare(sort, (*ua, a), (*ub, b)).then_with(|| a.budget.id.cmp(&b.budget.id));
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    list.extend(keyed.into_iter().map(|(_, v)| v));
}

fn header(label: &str, key: &str, current: &str, dir: &str) -> Markup {
    let next = if key == current && dir == "desc" {
        "asc"
    } else {
        "desc"
    };
    html! {
        th { a href=(format!("/ui?sort={key}&dir={next}")) { (label) @if key == current { (if dir == "desc" { " ↓" } else { " ↑" }) } } }
    }
}

/// `GET /ui`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Sort>,
) -> UiResult<Markup> {
    let budgets = s
        .store
        .list_budgets_in(None, None, session.principal.org())
        .await?;
    let mut list = views(&s, budgets).await?;
    let key = q
        .sort
        .as_deref()
        .filter(|k| ["spend", "limit", "resets", "scope"].contains(k))
        .unwrap_or("utilization");
    sort(&mut list, key, q.dir.as_deref());
    let dir = match q.dir.as_deref() {
        Some("asc") => "asc",
        Some("desc") => "desc",
        _ if matches!(key, "resets" | "scope") => "asc",
        _ => "desc",
    };
    let pages = list.len().div_ceil(PAGE_ROWS).max(1);
    let page = match q.page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=pages).contains(p))
            .ok_or_else(|| {
                UiError(ApiError::invalid(
                    "page",
                    format!("{p:?} is not a page from 1 to {pages}"),
                ))
            })?,
    };
    let total = list.len();
    let first = (page - 1) * PAGE_ROWS;
    let list: Vec<BudgetView> = list.into_iter().skip(first).take(PAGE_ROWS).collect();
    let link = |p: usize| format!("/ui?sort={key}&dir={dir}&page={p}");
    let body = html! {
        @if list.is_empty() {
            p.muted { "No budgets yet. Create one with " code { "tollgate budgets create" } " or " code { "POST /v1/budgets" } "." }
        } @else {
            table #budgets {
                thead { tr {
                    (header("Budget", "scope", key, dir))
                    (header("Utilization", "utilization", key, dir))
                    (header("Spend", "spend", key, dir))
                    th.num { "Soft limit" }
                    (header("Hard limit", "limit", key, dir))
                    th { "Window" }
                    (header("Resets", "resets", key, dir))
                    th.num { "Denied" }
                    th.num { "Soft-warned" }
                } }
                tbody {
                    @for v in list.iter() {
                        @let b = &v.budget;
                        @let zone = b.zone();
                        tr data-budget=(b.id) {
                            td { a href=(format!("/ui/budgets/{}", enc(&b.id))) { (b.scope.as_str()) " " (b.scope_id) } }
                            td.util { (bar(v)) " " span.pct { (percent(utilization(v.spent_usd, b.limit_usd))) } }
                            td.num.spend { (usd(v.spent_usd)) }
                            td.num { @if let Some(s) = b.soft_limit_usd { (usd(s)) } @else { span.muted { "—" } } }
                            td.num { (usd(b.limit_usd)) }
                            td { (b.period.as_str()) " · " (b.timezone) @if b.mode.as_str() == "shadow" { " · shadow" } }
                            td { @match v.window_end { Some(end) => (time(&zone, end)), None => span.muted { "never" } } }
                            td.num.denied { (v.counts.denied) }
                            td.num.soft-warned { (v.counts.soft_warned) }
                        }
                    }
                }
            }
            p.pager #pager {
                "Budgets " (first + 1) "–" (first + list.len()) " of " (total) "."
                @if page > 1 { " " a rel="prev" href=(link(page - 1)) { "← previous" } }
                @if page < pages { " " a rel="next" href=(link(page + 1)) { "next →" } }
            }
        }
    };
    Ok(layout::page("Budgets", &session, Nav::Overview, body))
}
