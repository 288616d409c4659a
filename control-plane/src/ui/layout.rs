//! The console's page shell (header, navigation, who is signed in, sign-out form), its error
//! page, the embedded stylesheet and the small formatting helpers every page shares (money,
//! times, links). Templates are maud: every interpolated value is HTML-escaped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rust_decimal::Decimal;

use super::sessions::Session;
use crate::http::auth::Principal;
use crate::http::Access;
use crate::store::tokens::TokenRole;
use crate::timezone::Zone;

/// The stylesheet, compiled into the binary.
const CSS: &str = include_str!("assets/console.css");

/// `GET /ui/assets/console.css`.
pub async fn stylesheet() -> Response {
    let mut resp = CSS.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// The pages of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Overview of every budget.
    Overview,
    /// Spend over time.
    Spend,
    /// Virtual keys.
    Keys,
    /// The price book.
    Prices,
    /// Alert subscriptions and deliveries.
    Alerts,
    /// API tokens (an admin's).
    Tokens,
}

/// The navigation: each page with the access level that shows it (as its route requires).
const NAV: [(Nav, &str, &str, Access); 6] = [
    (Nav::Overview, "/ui", "Budgets", Access::OrgRead),
    (Nav::Spend, "/ui/spend", "Spend", Access::OrgRead),
    (Nav::Keys, "/ui/keys", "Keys", Access::OrgRead),
    (Nav::Prices, "/ui/prices", "Prices", Access::Read),
    (Nav::Alerts, "/ui/alerts", "Alerts", Access::OrgRead),
    (Nav::Tokens, "/ui/tokens", "Tokens", Access::Admin),
];

/// Who is signed in, in words (never a secret: a token's id and role).
pub fn who(p: &Principal) -> String {
    match p {
        Principal::AdminEnv => "admin (environment token)".to_string(),
        Principal::Token(t) => match (t.role, &t.org_id) {
            (TokenRole::Admin, _) | (_, None) => format!("{} ({})", t.role.as_str(), t.id),
            (role, Some(org)) => format!("{} of {org} ({})", role.as_str(), t.id),
        },
    }
}

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="color-scheme" content="light dark";
        title { (title) " · Tollgate" }
        link rel="stylesheet" href="/ui/assets/console.css";
    }
}

/// A page of a signed-in session.
pub fn page(title: &str, session: &Session, active: Nav, body: Markup) -> Markup {
    html! {
        html lang="en" {
            head { (head(title)) }
            body {
                header {
                    span.brand { "Tollgate" }
                    nav {
                        @for (nav, href, label, access) in NAV {
                            @if session.principal.allows(access) {
                                a.active[nav == active] href=(href) { (label) }
                            }
                        }
                    }
                    span.who #who { (who(&session.principal)) }
                    form.inline method="post" action="/ui/logout" {
                        (csrf_field(session))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page without a session (the sign-in form).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        html lang="en" {
            head { (head(title)) }
            body { main.signin { h1 { (title) } (body) } }
        }
    }
}

/// The error page.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    bare(
        title,
        html! {
            p.error #error { (message) }
            p { a href="/ui" { "Back to the console" } " · " a href="/ui/login" { "Sign in" } }
        },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A one-button form posting to `action` (revoke, delete, pause) with the session's CSRF
/// token and `fields` as hidden inputs.
pub fn post_button(
    session: &Session,
    action: &str,
    label: &str,
    danger: bool,
    fields: &[(&str, &str)],
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(session))
            @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
            button.danger[danger] type="submit" { (label) }
        }
    }
}

/// A revocable object's state cell: `live`, or `revoked` and when.
pub fn revocation(zone: &Zone, revoked_at: Option<i64>) -> Markup {
    html! {
        td.status { @match revoked_at { Some(at) => { "revoked " (time(zone, at)) }, None => "live" } }
    }
}

/// The answer to a create form: the new object's secret, shown this once (`#new-secret`; the
/// block is `#new-{what}` with the object's id in `data-id`).
pub fn shown_once(what: &str, name: &str, id: &str, secret: &str) -> Markup {
    html! {
        div.secret id=(format!("new-{what}")) data-id=(id) {
            p { "Created " (what) " " strong { (name) } " (" (id) "). Copy its secret now: it is shown this once and never again." }
            code #new-secret { (secret) }
        }
    }
}

/// USD as a person reads it: `$12.50`, `$0.000125` (exact: at least two decimals, then as many
/// as the amount has, up to six; rounded half away from zero beyond).
pub fn usd(v: Decimal) -> String {
    let v = v
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .normalize();
    let text = if v.scale() < 2 {
        format!("{:.2}", v)
    } else {
        v.to_string()
    };
    match text.strip_prefix('-') {
        Some(rest) => format!("-${rest}"),
        None => format!("${text}"),
    }
}

/// A percentage with one decimal (`62.5 %`), from a ratio computed in decimals.
pub fn percent(ratio: Decimal) -> String {
    format!(
        "{} %",
        (ratio * Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(1, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    )
}

/// A Unix time as local date and time in `zone` (`2026-12-04 14:00 UTC`).
pub fn time(zone: &Zone, ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|dt| {
            dt.with_timezone(&zone.0)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_else(|| "—".to_string())
}

/// What [`enc`] escapes: everything but RFC 3986's unreserved characters.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` percent-encoded for a URL path segment or query value (`/` too, so a model name
/// with one stays one segment).
pub fn enc(text: &str) -> String {
    utf8_percent_encode(text, ESCAPED).to_string()
}

/// Text that is already HTML (an SVG drawn by `charts.rs`).
pub fn trusted(svg: String) -> Markup {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_percent() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(usd(d("12.5")), "$12.50");
        assert_eq!(usd(d("0")), "$0.00");
        assert_eq!(usd(d("0.000125")), "$0.000125");
        assert_eq!(usd(d("0.0000005")), "$0.000001");
        assert_eq!(usd(d("-3")), "-$3.00");
        assert_eq!(percent(d("0.625")), "62.5 %");
        assert_eq!(percent(d("1.2")), "120 %");
        assert_eq!(enc("gemini/x y"), "gemini%2Fx%20y");
        assert_eq!(enc("bud_a-b.c~"), "bud_a-b.c~");
    }
}
