//! What the filter answers a client with: virtual-key extraction from request headers and the
//! local replies (OpenAI-shaped JSON errors) for denied or refused requests.
//!
//! The 429 body follows OpenAI's error object (`error.message`, `error.type`, `error.code`) so
//! every OpenAI-compatible SDK raises its own rate-limit error carrying our message, plus a
//! `budget` object naming the budget that binds and when it resets.

use rust_decimal::Decimal;
use serde_json::json;

use crate::budget::{Deny, Scope};

/// Prefix of Tollgate virtual keys.
pub const KEY_PREFIX: &str = "tg-";

/// The virtual key a client sent: `Authorization: Bearer tg-…` (OpenAI SDKs), `x-api-key:
/// tg-…` (Anthropic SDKs) or `x-goog-api-key: tg-…` (Gemini). `None` when none is a Tollgate key.
pub fn virtual_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    x_goog_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    });
    [
        bearer,
        x_api_key.map(str::trim),
        x_goog_api_key.map(str::trim),
    ]
    .into_iter()
    .flatten()
    .find(|k| k.starts_with(KEY_PREFIX) && k.len() > KEY_PREFIX.len())
}

/// Headers clients put API keys in, in the order [`find_virtual_key`] reads them.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// Like [`virtual_key`], reading headers lazily through `get` and stopping at the first that
/// carries a Tollgate key (each header read is a host call in the filter).
pub fn find_virtual_key(mut get: impl FnMut(&'static str) -> Option<String>) -> Option<String> {
    let [auth, x_api, x_goog] = CREDENTIAL_HEADERS;
    if let Some(k) = get(auth)
        .as_deref()
        .and_then(|v| virtual_key(Some(v), None, None))
    {
        return Some(k.to_string());
    }
    if let Some(k) = get(x_api)
        .as_deref()
        .and_then(|v| virtual_key(None, Some(v), None))
    {
        return Some(k.to_string());
    }
    get(x_goog)
        .as_deref()
        .and_then(|v| virtual_key(None, None, Some(v)))
        .map(str::to_string)
}

/// A local reply: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Extra headers (content-type is always JSON).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: String,
}

/// An OpenAI-shaped error reply.
pub fn error(status: u32, kind: &str, message: &str) -> Reply {
    let body = json!({"error": {"message": message, "type": kind, "code": kind, "param": null}});
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string(),
    }
}

/// The 429 for a request a budget refuses, with `retry-after` until the budget's window
/// resets (absent for a `total` budget, which never resets).
pub fn budget_exceeded(deny: &Deny<'_>, now: i64) -> Reply {
    let b = &deny.binding;
    let scope = b.scope.as_str();
    let remaining = b
        .limit
        .checked_sub(b.spent)
        .unwrap_or(Decimal::ZERO)
        .max(Decimal::ZERO);
    let resets = match b.resets_at {
        Some(t) => format!(" It resets at {} (Unix time).", t),
        None => " It does not reset.".to_string(),
    };
    let message = format!(
        "Tollgate: budget {:?} for this {scope} is exhausted: {} of {} USD spent or reserved, \
         {} USD left, not enough for this request's worst-case cost.{resets}",
        b.id,
        b.spent.normalize(),
        b.limit.normalize(),
        remaining.normalize(),
    );
    let body = json!({
        "error": {
            "message": message,
            "type": "budget_exceeded",
            "code": "budget_exceeded",
            "param": null,
            "budget": {
                "id": b.id,
                "scope": scope,
                "limit_usd": b.limit.normalize().to_string(),
                "spent_usd": b.spent.normalize().to_string(),
                "resets_at": b.resets_at,
            }
        }
    });
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(t) = b.resets_at {
        headers.push(("retry-after", t.saturating_sub(now).max(1).to_string()));
    }
    headers.push(("x-tollgate-budget", format!("{scope}:{}", b.id)));
    // A budget refusal does not clear on retry; the OpenAI and Anthropic SDKs honour this and
    // raise at once instead of retrying twice with backoff.
    headers.push(("x-should-retry", "false".to_string()));
    Reply {
        status: 429,
        headers,
        body: body.to_string(),
    }
}

/// The value of `x-tollgate-budget-remaining`: USD left in the binding budget before this
/// request, as a plain decimal.
pub fn remaining_header(remaining: Decimal) -> String {
    remaining.normalize().to_string()
}

/// The value of `x-tollgate-budget` naming a budget: `scope:id`.
pub fn budget_header(scope: Scope, id: &str) -> String {
    format!("{}:{id}", scope.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{decide, BudgetState, Decision, Mode};

    #[test]
    fn virtual_keys() {
        assert_eq!(
            virtual_key(Some("Bearer tg-abc"), None, None),
            Some("tg-abc")
        );
        assert_eq!(
            virtual_key(Some("bearer  tg-abc "), None, None),
            Some("tg-abc")
        );
        assert_eq!(virtual_key(None, Some("tg-k"), None), Some("tg-k"));
        assert_eq!(
            virtual_key(Some("Bearer sk-real"), Some("tg-k"), None),
            Some("tg-k")
        );
        assert_eq!(virtual_key(None, None, Some("tg-g")), Some("tg-g"));
        assert_eq!(virtual_key(Some("Bearer sk-real"), None, None), None);
        assert_eq!(virtual_key(Some("Basic tg-x"), None, None), None);
        assert_eq!(virtual_key(Some("Bearer tg-"), None, None), None);
        let mut read = Vec::new();
        let found = find_virtual_key(|h| {
            read.push(h);
            (h == "authorization").then(|| "Bearer tg-first".to_string())
        });
        assert_eq!(found.as_deref(), Some("tg-first"));
        assert_eq!(read, ["authorization"], "stops at the first key");
        assert_eq!(
            find_virtual_key(|h| (h == "x-goog-api-key").then(|| "tg-g".into())).as_deref(),
            Some("tg-g")
        );
    }

    #[test]
    fn deny_reply_names_the_budget() {
        let budgets = [BudgetState {
            id: "b1",
            scope: Scope::Project,
            mode: Mode::Enforce,
            limit: Decimal::new(10, 0),
            soft_limit: None,
            spent: Decimal::new(995, 2),
            unsynced: Decimal::ZERO,
            reserved: Decimal::ZERO,
            resets_at: Some(1_000),
        }];
        let Decision::Deny(deny) = decide(&budgets, Decimal::ONE, Mode::Enforce) else {
            panic!("expected a deny")
        };
        let r = budget_exceeded(&deny, 400);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after", "600".into())));
        assert!(r.headers.contains(&("x-should-retry", "false".into())));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "budget_exceeded");
        assert_eq!(v["error"]["budget"]["id"], "b1");
        assert_eq!(v["error"]["budget"]["limit_usd"], "10");
        assert_eq!(v["error"]["budget"]["resets_at"], 1000);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0.05 USD left"));
    }
}
