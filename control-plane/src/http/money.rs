//! The one parser of money the API accepts in request bodies: a JSON string matching the
//! published pattern `^-?[0-9]+(\.[0-9]+)?$` (no exponent, no `+`, no leading or trailing
//! `.`), at most 28 significant digits so that it is held exactly (a 31-digit amount used to
//! be rounded silently). Anything else is a 422 naming the field (serde's error, with the
//! field path added by `ApiJson`). Sign and range are checked by each field's own rules.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

/// Parses one money string, or says why not.
pub fn parse(s: &str) -> Result<Decimal, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(format!(
            "{s:?} is not a decimal string (digits, an optional `-` and `.` followed by digits)"
        ));
    }
    let significant = int.trim_start_matches('0').len() + frac.map_or(0, str::len);
    if significant > 28 {
        return Err(format!(
            "{s:?} has more than 28 significant digits and cannot be held exactly"
        ));
    }
    Decimal::from_str_exact(s).map_err(|e| format!("{s:?}: {e}"))
}

/// `deserialize_with` for a required money field.
pub fn strict<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional money field (`null` is absent).
pub fn strict_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_what_the_schema_allows() {
        for ok in [
            "0",
            "1",
            "-1",
            "0.5",
            "10.25",
            "000.10",
            "1234567890123456789012345678",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse("0.10").unwrap().to_string(), "0.10");
        for bad in [
            "1e5",
            "+1",
            ".5",
            "5.",
            "",
            "-",
            "1.2.3",
            " 1",
            "1 ",
            "0x10",
            "NaN",
            "1_000",
            "1234567890123456789012345678901",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
