//! `GET /v1/spend`: spend from the ledger. Query parameters: `scope` + `scope_id` (both or
//! neither), `model`, `from` / `to` (Unix seconds, RFC 3339, or a `YYYY-MM-DD` date in UTC;
//! default: all time), `group_by` (comma-separated `day`, `hour`, `model`, `org`, `project`, `user`,
//! `key`, or `scope` for the link named by `scope`), `tz` (the zone days are counted in,
//! default UTC). JSON by default, CSV with `Accept: text/csv`. A manager or viewer token sees
//! its organisation's ledger rows only.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tollgate_core::budget::Scope;

use super::auth::Principal;
use super::error::{ApiError, Params};
use super::AppState;
use crate::store::spend::{GroupBy, SpendQuery, SpendReport};
use crate::timezone::Zone;

/// The time query parameter `name`, if given; a 422 naming it when it does not parse.
pub fn time_param(q: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    q.get(name)
        .map(|v| {
            parse_time(v).ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!("{v:?} is not Unix seconds, RFC 3339 or a date"),
                )
            })
        })
        .transpose()
}

/// Parses a time parameter: Unix seconds, RFC 3339, or a UTC date.
pub fn parse_time(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(dt.timestamp());
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp())
}

fn parse_scope(v: &str) -> Result<Scope, ApiError> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| ApiError::invalid("scope", "must be org, project, user or key"))
}

fn query(q: &Params) -> Result<SpendQuery, ApiError> {
    q.only(&["scope", "scope_id", "model", "from", "to", "group_by", "tz"])?;
    let scope = match (q.get("scope"), q.get("scope_id")) {
        (Some(s), Some(id)) => Some((parse_scope(s)?, id.to_string())),
        (None, None) => None,
        (Some(_), None) => return Err(ApiError::invalid("scope_id", "is required with scope")),
        (None, Some(_)) => return Err(ApiError::invalid("scope", "is required with scope_id")),
    };
    let time = |name: &str| time_param(q, name);
    let from = time("from")?.unwrap_or(i64::MIN);
    let to = time("to")?.unwrap_or(i64::MAX);
    if from >= to {
        return Err(ApiError::invalid("to", "must be after from"));
    }
    let mut group_by = Vec::new();
    for g in q.get("group_by").unwrap_or("").split(',').map(str::trim) {
        let g = match g {
            "" => continue,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            "model" => GroupBy::Model,
            "org" => GroupBy::Org,
            "project" => GroupBy::Project,
            "user" => GroupBy::User,
            "key" => GroupBy::Key,
            "scope" => match &scope {
                Some((s, _)) => GroupBy::of_scope(*s),
                None => {
                    return Err(ApiError::invalid(
                        "group_by",
                        "scope needs the scope parameter",
                    ))
                }
            },
            other => {
                return Err(ApiError::invalid(
                    "group_by",
                    format!(
                        "{other:?} is not one of day, hour, model, org, project, user, key, scope"
                    ),
                ))
            }
        };
        if !group_by.contains(&g) {
            group_by.push(g);
        }
    }
    let zone = match q.get("tz") {
        Some(tz) => Zone::parse(tz).map_err(|e| ApiError::invalid("tz", e))?,
        None => Zone::UTC,
    };
    Ok(SpendQuery {
        scope,
        model: q.get("model").map(str::to_string),
        from,
        to,
        group_by,
        zone,
        org: None,
    })
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|m| m.trim().starts_with("text/csv")))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as CSV: one column per grouping, then the sums.
pub fn to_csv(group_by: &[GroupBy], report: &SpendReport) -> String {
    let mut out = String::new();
    for g in group_by {
        out.push_str(g.name());
        out.push(',');
    }
    out.push_str("requests,input_tokens,output_tokens,cost_usd\n");
    for row in &report.rows {
        for g in group_by {
            let v = row
                .group
                .get(g.name())
                .cloned()
                .flatten()
                .unwrap_or_default();
            out.push_str(&csv_field(&v));
            out.push(',');
        }
        out.push_str(&format!(
            "{},{},{},{}\n",
            row.requests, row.input_tokens, row.output_tokens, row.cost_usd
        ));
    }
    out
}

/// Spend from the ledger; CSV with Accept: text/csv.
#[utoipa::path(get, path = "/v1/spend", params(
    ("scope" = Option<String>, Query, nullable = false, description = "org, project, user or key"),
    ("scope_id" = Option<String>, Query, nullable = false, description = "Id of the scope"),
    ("model" = Option<String>, Query, nullable = false, description = "Only this model"),
    ("from" = Option<String>, Query, nullable = false, description = "Start (Unix seconds, RFC 3339 or date)"),
    ("to" = Option<String>, Query, nullable = false, description = "End, exclusive"),
    ("group_by" = Option<String>, Query, nullable = false, description = "Comma-separated: day, hour, model, org, project, user, key, scope"),
    ("tz" = Option<String>, Query, nullable = false, description = "IANA zone days are counted in; default UTC"),
), responses(
    (status = 200, description = "OK", content((SpendReport = "application/json"), (String = "text/csv"))),
    (status = 422, description = "A parameter is not valid"),
))]
pub async fn get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let mut query = query(&q)?;
    // A scoped token names only its organisation's principals, and sees its organisation's
    // rows only, whatever else it filters on.
    if let Some((scope, id)) = &query.scope {
        who.require_scope(&s, *scope, id).await?;
    }
    query.org = who.org().map(str::to_string);
    let report = s.store.spend(&query).await?;
    if wants_csv(&headers) {
        let mut resp = to_csv(&query.group_by, &report).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(resp);
    }
    Ok(Json(report).into_response())
}
