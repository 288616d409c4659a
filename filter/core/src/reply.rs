//! What the filter answers a client with when it answers itself: the local replies
//! (OpenAI-shaped JSON errors) for denied or refused requests, and the budget headers of an
//! admitted one.
//!
//! The 429 body follows OpenAI's error object (`error.message`, `error.type`, `error.code`) so
//! every OpenAI-compatible SDK raises its own rate-limit error carrying our message, plus a
//! `budget` object naming the budget that binds and when it resets.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::budget::{Deny, Scope};

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

/// The body of every local reply: `{"error": {...}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// OpenAI's error object, plus the budget that binds on a 429. Members are declared in the
/// order the body has always had them (alphabetical, as a `serde_json::Value` wrote them):
/// serialized from borrowed fields, a refusal allocates no JSON tree (a client retrying after
/// 429s makes denials as frequent as requests).
#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<BudgetObject<'a>>,
    code: &'a str,
    message: &'a str,
    param: Option<()>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct BudgetObject<'a> {
    id: &'a str,
    limit_usd: String,
    resets_at: Option<i64>,
    scope: &'a str,
    spent_usd: String,
}

fn error_json(kind: &str, message: &str, budget: Option<BudgetObject<'_>>) -> String {
    let body = ErrorBody {
        error: ErrorObject {
            budget,
            code: kind,
            message,
            param: None,
            kind,
        },
    };
    // Strings and numbers only: serializing cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// An OpenAI-shaped error reply.
pub fn error(status: u32, kind: &str, message: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: error_json(kind, message, None),
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
    let resets_at = b.resets_at.map(|t| t.to_string());
    let (resets, at, unix) = match &resets_at {
        Some(t) => (" It resets at ", t.as_str(), " (Unix time)."),
        None => (" It does not reset.", "", ""),
    };
    let (spent, limit) = (plain(b.spent), plain(b.limit));
    // Concatenated, not formatted: 1.7k fuel less per refusal (the body's serialization, 9.3k,
    // is the larger part of what a refusal costs; BENCHMARKS.md, issue 17).
    let message = [
        "Tollgate: budget ",
        &debug_quoted(b.id),
        " for this ",
        scope,
        " is exhausted: ",
        &spent,
        " of ",
        &limit,
        " USD spent or reserved, ",
        &plain(remaining),
        " USD left, not enough for this request's worst-case cost.",
        resets,
        at,
        unix,
    ]
    .concat();
    let budget = BudgetObject {
        id: b.id,
        limit_usd: limit,
        resets_at: b.resets_at,
        scope,
        spent_usd: spent,
    };
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(t) = b.resets_at {
        headers.push(("retry-after", t.saturating_sub(now).max(1).to_string()));
    }
    headers.push(("x-tollgate-budget", budget_header(b.scope, b.id)));
    // A budget refusal does not clear on retry; the OpenAI and Anthropic SDKs honour this and
    // raise at once instead of retrying twice with backoff.
    headers.push(("x-should-retry", "false".to_string()));
    Reply {
        status: 429,
        headers,
        body: error_json("budget_exceeded", &message, Some(budget)),
    }
}

/// `s` as `format!("{s:?}")` writes it, quoted and escaped. Budget ids are plain ASCII,
/// written as they are; anything else goes through `Debug` (its per-character escape and
/// printability checks are the slow path).
fn debug_quoted(s: &str) -> String {
    let plain_ascii = s
        .bytes()
        .all(|c| (c.is_ascii_graphic() || c == b' ') && c != b'"' && c != b'\\');
    if plain_ascii {
        ["\"", s, "\""].concat()
    } else {
        format!("{s:?}")
    }
}

/// The value of `x-tollgate-budget-remaining`: USD left in the binding budget before this
/// request, as a plain decimal.
pub fn remaining_header(remaining: Decimal) -> String {
    plain(remaining)
}

/// `d` normalized, as plain text: the same text as `d.normalize().to_string()`, written
/// digit by digit (per request, for headers and the access log: `Display` goes through the
/// formatting machinery, several times the work).
///
/// The digits come from the 96-bit mantissa as three 32-bit limbs, nine at a time by long
/// division in `u64` (wasm has no 128-bit division: a `u128` digit loop or `normalize`'s
/// divisions are library calls), and the fraction's trailing zeros are dropped from the text
/// rather than divided out of the value.
pub fn plain(d: Decimal) -> String {
    const NINE_DIGITS: u64 = 1_000_000_000;
    let m = d.mantissa().unsigned_abs();
    if m == 0 {
        return "0".to_string();
    }
    let mut limbs = [(m >> 64) as u32, (m >> 32) as u32, m as u32];
    // At most 29 digits, least significant last.
    let mut digits = [b'0'; 36];
    let mut start = digits.len();
    loop {
        let mut rem = 0u64;
        for limb in &mut limbs {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / NINE_DIGITS) as u32;
            rem = cur % NINE_DIGITS;
        }
        let last = limbs == [0; 3];
        for _ in 0..9 {
            start -= 1;
            if let Some(slot) = digits.get_mut(start) {
                *slot = b'0' + (rem % 10) as u8;
            }
            rem /= 10;
            if last && rem == 0 {
                break;
            }
        }
        if last {
            break;
        }
    }
    let digits = digits.get(start..).unwrap_or_default();
    // Normalized: the fraction without its trailing zeros (never every digit: `m` is not 0).
    let zeros = digits.iter().rev().take_while(|&&c| c == b'0').count();
    let dropped = zeros.min(d.scale() as usize);
    let scale = d.scale() as usize - dropped;
    let digits = digits.get(..digits.len() - dropped).unwrap_or_default();
    let text = std::str::from_utf8(digits).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + scale + 3);
    if d.is_sign_negative() && !d.is_zero() {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(text);
    } else if text.len() > scale {
        let (int, frac) = text.split_at(text.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - text.len()));
        out.push_str(text);
    }
    out
}

/// The value of `x-tollgate-budget` naming a budget: `scope:id`.
pub fn budget_header(scope: Scope, id: &str) -> String {
    [scope.as_str(), ":", id].concat()
}

/// The same reply as AWS's JSON APIs answer (Bedrock, for its SDKs: boto3 names the error
/// by `x-amzn-errortype` and reads its text from a top-level `message`): `ThrottlingException`
/// for a 429, so boto3 raises its own throttling error carrying our message.
pub fn for_aws(mut r: Reply) -> Reply {
    let kind = match r.status {
        429 => "ThrottlingException",
        400 | 413 => "ValidationException",
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_str(&r.body) {
        let message = body
            .get("error")
            .and_then(|e| e.get("message"))
            .cloned()
            .unwrap_or_default();
        body.insert("message".into(), message);
        r.body = serde_json::Value::Object(body).to_string();
    }
    r.headers.push(("x-amzn-errortype", kind.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// `plain` writes what `Display` writes for every normalized decimal.
        #[test]
        fn plain_is_display_of_the_normalized_value(
            lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(),
            negative in any::<bool>(), scale in 0u32..=28,
        ) {
            let d = Decimal::from_parts(lo, mid, hi, negative, scale);
            prop_assert_eq!(plain(d), d.normalize().to_string());
        }

        /// The same with trailing zeros in the mantissa (what sums of prices have), on either
        /// side of the point.
        #[test]
        fn plain_drops_only_the_fractions_trailing_zeros(
            m in 0u64..1_000_000_000_000, zeros in 0u32..12, negative in any::<bool>(),
            scale in 0u32..=28,
        ) {
            let m = i128::from(m) * 10i128.pow(zeros) * if negative { -1 } else { 1 };
            let d = Decimal::from_i128_with_scale(m, scale);
            prop_assert_eq!(plain(d), d.normalize().to_string());
        }

        /// The 429's message quotes the budget id as `{:?}` always did, for any id: plain
        /// ASCII ids, and ids with quotes, backslashes, control or non-ASCII characters.
        #[test]
        fn debug_quoted_is_debug(id in "[ -~]{0,24}|\\PC{0,12}|[a-z\"\\\\\t\n\u{7f}\u{301}é]{0,8}") {
            prop_assert_eq!(debug_quoted(&id), format!("{id:?}"));
        }
    }

    #[test]
    fn plain_small_cases() {
        for (text, want) in [
            ("0", "0"),
            ("0.50", "0.5"),
            ("100", "100"),
            ("0.000013", "0.000013"),
            ("-2.5000", "-2.5"),
            ("1000000", "1000000"),
            ("-0.0", "0"),
        ] {
            let d: Decimal = text.parse().unwrap();
            assert_eq!(plain(d), want, "{text}");
            assert_eq!(plain(d), d.normalize().to_string(), "{text}");
        }
    }
    #[test]
    fn aws_replies_name_the_error_and_carry_the_message() {
        let r = super::for_aws(super::error(429, "budget_exceeded", "no money"));
        assert!(r
            .headers
            .contains(&("x-amzn-errortype", "ThrottlingException".into())));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["message"], "no money");
        assert_eq!(v["error"]["code"], "budget_exceeded");
        let r = super::for_aws(super::error(404, "unknown_endpoint", "x"));
        assert!(r
            .headers
            .contains(&("x-amzn-errortype", "ResourceNotFoundException".into())));
    }

    use super::*;
    use crate::budget::{decide, BudgetState, Decision, Mode};

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
        // Byte for byte the body clients have always had (members in alphabetical order, as
        // the `serde_json::Value` it was built as wrote them).
        assert_eq!(
            r.body,
            r#"{"error":{"budget":{"id":"b1","limit_usd":"10","resets_at":1000,"scope":"project","spent_usd":"9.95"},"code":"budget_exceeded","message":"Tollgate: budget \"b1\" for this project is exhausted: 9.95 of 10 USD spent or reserved, 0.05 USD left, not enough for this request's worst-case cost. It resets at 1000 (Unix time).","param":null,"type":"budget_exceeded"}}"#
        );
        assert_eq!(
            error(400, "model_not_priced", "no \"x\"").body,
            r#"{"error":{"code":"model_not_priced","message":"no \"x\"","param":null,"type":"model_not_priced"}}"#
        );
    }
}
