//! `GET /ui/prices?q=`: the price book in effect now, searched by model name (case-insensitive
//! substring), rates in USD per 1M tokens as the API shows them (`prices::PriceView`).
//! `GET /ui/prices/{*model}`: one model's rates in effect and every revision, oldest first
//! (as `GET /v1/prices/{model}`); every field of the API's view listed, so a new kind of rate
//! shows up here without a template change.

use axum::extract::{Path, Query, State};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, enc, time, Nav};
use super::sessions::Session;
use super::UiResult;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::prices::PriceView;
use crate::timezone::Zone;

/// Most models listed at once (LiteLLM's map has thousands: search narrows it).
pub const MAX_LISTED: usize = 200;

/// The search box.
#[derive(Debug, Default, Deserialize)]
pub struct Search {
    q: Option<String>,
}

/// A view's fields as `path = value` rows (`rates.input_per_million = 2.5`), leaving out what
/// the revision table shows already.
fn fields(v: &PriceView) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", &serde_json::to_value(v).unwrap_or_default(), &mut out);
    out.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "model" | "revision" | "effective_from" | "source" | "created_at" | "deleted"
        )
    });
    out
}

fn rate(v: &PriceView, input: bool) -> String {
    v.rates
        .as_ref()
        .map(|r| {
            if input {
                r.input_per_million
            } else {
                r.output_per_million
            }
            .to_string()
        })
        .unwrap_or_else(|| "—".into())
}

/// `GET /ui/prices`.
pub async fn list(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Search>,
) -> UiResult<Markup> {
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let eff = s.store.effective_prices(s.clock.now()).await?;
    let matching: Vec<PriceView> = eff
        .revisions
        .iter()
        .filter(|r| needle.is_empty() || r.model.to_lowercase().contains(&needle))
        .map(PriceView::from)
        .collect();
    let body = html! {
        form.filters method="get" action="/ui/prices" {
            label { "Model" input type="search" name="q" value=(needle) placeholder="gpt-4o, claude, gemini…"; }
            button type="submit" { "Search" }
        }
        p.muted { (matching.len()) " of " (eff.revisions.len()) " models · price book version " (eff.book.version) " · USD per 1M tokens" }
        table #prices {
            thead { tr { th { "Model" } th { "Provider" } th.num { "Input" } th.num { "Output" } th { "Revision" } } }
            tbody {
                @for v in matching.iter().take(MAX_LISTED) {
                    tr {
                        td { a href=(format!("/ui/prices/{}", enc(&v.model))) { (v.model) } }
                        td { (v.provider.as_deref().unwrap_or("—")) }
                        td.num { (rate(v, true)) } td.num { (rate(v, false)) }
                        td { (v.revision) " · " (v.source) }
                    }
                }
            }
        }
        @if matching.len() > MAX_LISTED { p.muted { "First " (MAX_LISTED) " shown: narrow the search." } }
    };
    Ok(layout::page("Prices", &session, Nav::Prices, body))
}

/// `GET /ui/prices/{*model}`.
pub async fn model(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Path(model): Path<String>,
) -> UiResult<Markup> {
    let history = s.store.price_history(&model).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound {
            what: "price".into(),
            id: model,
        }
        .into());
    }
    let current = s.store.price_at(&model, s.clock.now()).await?;
    let zone = Zone::UTC;
    let body = html! {
        h2 { "In effect now" }
        @match current.as_ref().map(PriceView::from) {
            Some(v) => {
                p.muted { "Revision " (v.revision) ", from " (time(&zone, v.effective_from)) " (" (v.source) "); USD per 1M tokens" }
                table #rates { tbody { @for (k, val) in fields(&v) { tr { th { (k) } td.num { (val) } } } } }
            }
            None => p.muted { "No price in effect (deleted, or only future revisions)." },
        }
        h2 { "Revisions" }
        table #history {
            thead { tr { th { "Revision" } th { "Effective from" } th { "Source" } th { "Created" } th { "Rates" } } }
            tbody {
                @for r in history.iter().rev() {
                    @let v = PriceView::from(r);
                    tr {
                        td { (v.revision) } td { (time(&zone, v.effective_from)) } td { (v.source) } td { (time(&zone, v.created_at)) }
                        td { @if v.deleted { "deleted" } @else { "in " (rate(&v, true)) " · out " (rate(&v, false)) } }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Price: {model}"),
        &session,
        Nav::Prices,
        body,
    ))
}
