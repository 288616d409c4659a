//! `GET /ui/spend`: spend over time from the ledger, per day or per hour of a time zone,
//! stacked by model (or by key, user, project or org), for a date range; the chart, the total,
//! and the table of exactly the rows the chart was drawn from. `GET /ui/spend.csv` with the
//! same query answers those rows as CSV, in `GET /v1/spend`'s format (`http::spend::to_csv`),
//! from the same store query (`Store::spend`), so the export is what the page shows.
//!
//! Query: `from`, `to` (local dates, both included; default the last 30 days, or 2 per hour), `tz` (IANA,
//! default UTC), `bucket` (`day` or `hour`), `stack` (`model`, `key`, `user`, `project`,
//! `org`). A manager or viewer sees its organisation's rows only, as on the API.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{Days, NaiveDate, TimeZone};
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::charts::{colour, stacked_bars, Stacked};
use super::layout::{self, enc, trusted, usd, Nav};
use super::sessions::Session;
use super::{UiError, UiResult};
use crate::http::error::ApiError;
use crate::http::spend::to_csv;
use crate::http::AppState;
use crate::store::spend::{local_hour, GroupBy, SpendQuery, SpendReport};
use crate::timezone::Zone;

/// Days shown per day when the query names none.
pub const DEFAULT_DAYS: u64 = 30;
/// Days shown per hour when the query names none (today and yesterday: 48 bars).
pub const DEFAULT_HOURLY_DAYS: u64 = 2;
/// Longest range per day, days.
pub const MAX_DAYS: u64 = 366;
/// Longest range per hour, days.
pub const MAX_HOURLY_DAYS: u64 = 31;
/// Series drawn before the rest are drawn as one `other` (the table keeps every row).
pub const MAX_SERIES: usize = 9;

/// The page's query, as the form sends it.
#[derive(Debug, Default, Deserialize)]
pub struct SpendForm {
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    bucket: Option<String>,
    stack: Option<String>,
}

/// The query checked: what the form shows and the store is asked.
#[derive(Debug, Clone)]
pub struct Resolved {
    from: NaiveDate,
    to: NaiveDate,
    zone: Zone,
    bucket: GroupBy,
    stack: GroupBy,
}

fn invalid(field: &str, detail: impl Into<String>) -> UiError {
    UiError(ApiError::invalid(field, detail))
}

fn date(field: &str, v: Option<&str>, default: NaiveDate) -> UiResult<NaiveDate> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| invalid(field, format!("{v:?} is not a date (YYYY-MM-DD)"))),
    }
}

/// Local midnight starting `d` in `zone`, Unix seconds (the first instant of that day where a
/// zone skips midnight).
fn midnight(zone: &Zone, d: NaiveDate) -> i64 {
    let local = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match zone.0.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.timestamp(),
        chrono::LocalResult::None => zone
            .0
            .from_local_datetime(&(local + chrono::Duration::hours(1)))
            .earliest()
            .map_or_else(|| local.and_utc().timestamp(), |t| t.timestamp()),
    }
}

impl Resolved {
    /// Checks the form against today (`now` in the zone asked for).
    pub fn from_form(f: &SpendForm, now: i64) -> UiResult<Resolved> {
        let zone = match f.tz.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => Zone::UTC,
            Some(tz) => Zone::parse(tz).map_err(|e| invalid("tz", e))?,
        };
        let today = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .with_timezone(&zone.0)
            .date_naive();
        let bucket = match f.bucket.as_deref() {
            None | Some("" | "day") => GroupBy::Day,
            Some("hour") => GroupBy::Hour,
            Some(other) => return Err(invalid("bucket", format!("{other:?} is not day or hour"))),
        };
        let default_days = if bucket == GroupBy::Hour {
            DEFAULT_HOURLY_DAYS
        } else {
            DEFAULT_DAYS
        };
        let to = date("to", f.to.as_deref(), today)?;
        let from = date(
            "from",
            f.from.as_deref(),
            to.checked_sub_days(Days::new(default_days - 1))
                .unwrap_or(to),
        )?;
        if from > to {
            return Err(invalid("to", "must not be before from"));
        }
        let stack = match f.stack.as_deref() {
            None | Some("" | "model") => GroupBy::Model,
            Some("key") => GroupBy::Key,
            Some("user") => GroupBy::User,
            Some("project") => GroupBy::Project,
            Some("org") => GroupBy::Org,
            Some(other) => {
                return Err(invalid(
                    "stack",
                    format!("{other:?} is not model, key, user, project or org"),
                ))
            }
        };
        let days = u64::try_from((to - from).num_days()).unwrap_or(0) + 1;
        let max = if bucket == GroupBy::Hour {
            MAX_HOURLY_DAYS
        } else {
            MAX_DAYS
        };
        if days > max {
            return Err(invalid(
                "from",
                format!("at most {max} days per {}", bucket.name()),
            ));
        }
        Ok(Resolved {
            from,
            to,
            zone,
            bucket,
            stack,
        })
    }

    /// The store query: from local midnight of `from` to local midnight after `to`.
    pub fn query(&self, org: Option<&str>) -> SpendQuery {
        let end = self.to.checked_add_days(Days::new(1)).unwrap_or(self.to);
        SpendQuery {
            scope: None,
            model: None,
            from: midnight(&self.zone, self.from),
            to: midnight(&self.zone, end),
            group_by: vec![self.bucket, self.stack],
            zone: self.zone,
            org: org.map(str::to_string),
        }
    }

    /// The query string that asks for this again (the CSV link).
    pub fn query_string(&self) -> String {
        format!(
            "from={}&to={}&tz={}&bucket={}&stack={}",
            self.from,
            self.to,
            enc(self.zone.name()),
            self.bucket.name(),
            self.stack.name()
        )
    }

    /// Every bucket of the range, in order (empty ones too, so the axis is time).
    fn buckets(&self, q: &SpendQuery) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        match self.bucket {
            GroupBy::Hour => {
                let mut t = q.from;
                while t < q.to {
                    let h = local_hour(&self.zone, t);
                    if out.last() != Some(&h) {
                        out.push(h);
                    }
                    t += 3600;
                }
            }
            _ => {
                let mut d = self.from;
                while d <= self.to {
                    out.push(d.to_string());
                    match d.succ_opt() {
                        Some(next) => d = next,
                        None => break,
                    }
                }
            }
        }
        out
    }
}

/// The chart's series from the report: one per value of the stacked column, largest first,
/// the smallest merged into `other` past [`MAX_SERIES`].
fn chart(r: &Resolved, q: &SpendQuery, report: &SpendReport) -> Stacked {
    let buckets = r.buckets(q);
    let index: BTreeMap<&str, usize> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let mut totals: BTreeMap<String, (Decimal, Vec<Decimal>)> = BTreeMap::new();
    for row in &report.rows {
        let at = row
            .group
            .get(r.bucket.name())
            .cloned()
            .flatten()
            .and_then(|b| index.get(b.as_str()).copied());
        let name = row
            .group
            .get(r.stack.name())
            .cloned()
            .flatten()
            .unwrap_or_else(|| "(none)".to_string());
        let entry = totals
            .entry(name)
            .or_insert_with(|| (Decimal::ZERO, vec![Decimal::ZERO; buckets.len()]));
        entry.0 += row.cost_usd;
        if let Some(v) = at.and_then(|i| entry.1.get_mut(i)) {
            *v += row.cost_usd;
        }
    }
    let mut series: Vec<(String, Decimal, Vec<Decimal>)> = totals
        .into_iter()
        .map(|(name, (total, values))| (name, total, values))
        .collect();
    series.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if series.len() > MAX_SERIES {
        let rest = series.split_off(MAX_SERIES - 1);
        let mut other = vec![Decimal::ZERO; buckets.len()];
        for (_, _, values) in &rest {
            for (o, v) in other.iter_mut().zip(values) {
                *o += *v;
            }
        }
        let total = other.iter().copied().sum();
        series.push((format!("other ({})", rest.len()), total, other));
    }
    Stacked {
        buckets,
        series: series.into_iter().map(|(n, _, v)| (n, v)).collect(),
    }
}

fn options(name: &str, current: &str, choices: &[(&str, &str)]) -> Markup {
    html! {
        select name=(name) {
            @for (value, label) in choices {
                option value=(value) selected[*value == current] { (label) }
            }
        }
    }
}

/// `GET /ui/spend`.
pub async fn page(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Query(f): Query<SpendForm>,
) -> UiResult<Markup> {
    let r = Resolved::from_form(&f, s.clock.now())?;
    let q = r.query(session.principal.org());
    let report = s.store.spend(&q).await?;
    let stacked = chart(&r, &q, &report);
    let svg = stacked_bars(&stacked).map_err(|e| ApiError::Internal(e.to_string()))?;
    let columns: Vec<&str> = q.group_by.iter().map(|g| g.name()).collect();
    let body = html! {
        form.filters method="get" action="/ui/spend" {
            label { "From" input type="date" name="from" value=(r.from); }
            label { "To" input type="date" name="to" value=(r.to); }
            label { "Time zone" input type="text" name="tz" value=(r.zone.name()) list="zones" size="18"; }
            datalist #zones {
                @for tz in chrono_tz::TZ_VARIANTS { option value=(tz.name()) {} }
            }
            label { "Per" (options("bucket", r.bucket.name(), &[("day", "day"), ("hour", "hour")])) }
            label { "Stacked by" (options("stack", r.stack.name(), &[("model", "model"), ("key", "key"), ("user", "user"), ("project", "project"), ("org", "org")])) }
            button type="submit" { "Show" }
            a #csv href=(format!("/ui/spend.csv?{}", r.query_string())) { "Export CSV" }
        }
        p.totals #total data-total=(report.total_usd) data-requests=(report.requests) {
            "Total " strong { (usd(report.total_usd)) } " over " (report.requests) " requests, "
            (r.from) " to " (r.to) " (" (r.zone.name()) ")"
        }
        figure {
            (trusted(svg.replacen("<svg ", "<svg class=\"chart\" role=\"img\" aria-label=\"Spend per bucket, stacked\" ", 1)))
            ul.legend {
                @for (i, (name, _)) in stacked.series.iter().enumerate() {
                    li { svg viewBox="0 0 10 10" { rect width="10" height="10" fill=(colour(i)) {} } (name) }
                }
            }
        }
        h2 { "Rows" }
        table #rows {
            thead { tr {
                @for c in &columns { th { (c) } }
                th.num { "requests" } th.num { "input_tokens" } th.num { "output_tokens" } th.num { "cost_usd" }
            } }
            tbody {
                @for row in &report.rows {
                    tr {
                        @for c in &columns { td { (row.group.get(c).cloned().flatten().unwrap_or_default()) } }
                        td.num { (row.requests) } td.num { (row.input_tokens) } td.num { (row.output_tokens) } td.num { (row.cost_usd) }
                    }
                }
            }
        }
    };
    Ok(layout::page("Spend", &session, Nav::Spend, body))
}

/// `GET /ui/spend.csv`: the rows of the same query as CSV.
pub async fn csv(
    State(s): State<AppState>,
    Extension(session): Extension<Session>,
    Query(f): Query<SpendForm>,
) -> UiResult<Response> {
    let r = Resolved::from_form(&f, s.clock.now())?;
    let q = r.query(session.principal.org());
    let report = s.store.spend(&q).await?;
    let mut resp = to_csv(&q.group_by, &report).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"spend-{}-{}.csv\"", r.from, r.to);
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every local midnight the page can ask from, in every zone, is a quarter hour: the page's
    /// queries are answered from the spend rollup (`store/rollup.rs`), never the whole ledger.
    /// Zones' offsets have been whole quarter hours since 1972 (Monrovia's -0:44:30 was the
    /// last); days are checked from 2024 to 2026, DST changes at midnight included.
    #[test]
    fn local_midnights_are_quarter_hours_in_every_zone() {
        let first = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        for tz in chrono_tz::TZ_VARIANTS {
            let zone = Zone(tz);
            let mut d = first;
            while d < end {
                let t = midnight(&zone, d);
                assert_eq!(t.rem_euclid(900), 0, "{} {d}", tz.name());
                d = d.succ_opt().unwrap();
            }
        }
        let form = SpendForm {
            tz: Some("Asia/Kathmandu".into()),
            bucket: Some("hour".into()),
            ..SpendForm::default()
        };
        let r = Resolved::from_form(&form, 1_764_504_000).unwrap();
        assert!(r.query(Some("acme")).rollup_shaped());
        let by_key = SpendForm {
            stack: Some("key".into()),
            ..SpendForm::default()
        };
        let r = Resolved::from_form(&by_key, 1_764_504_000).unwrap();
        assert!(!r.query(None).rollup_shaped());
    }
}
