//! The pieces every provider's usage reader is built from: a token count that records what
//! was there ([`Count`]), nested detail objects ([`Nested`]), and [`Fields`], a usage object
//! read member by member straight from the bytes, in the same pass that found it.
//!
//! Every count is read as a [`Count`] that records *what* was there (a number, a negative, a
//! string, `null`, nothing) instead of failing mid-parse, so the provider's mapping can name
//! the field in its error. Each provider module (`crate::provider::*`) declares its own usage
//! struct and maps it onto [`super::Usage`] with its documented meaning.
//!
//! Two choices, documented once here and kept by every provider:
//! - `reasoning` larger than `output` is clamped to `output`: the billed output is right either
//!   way, and refusing the whole usage for an informational sub-count would leave the request
//!   uncharged.
//! - cached larger than prompt is an error ([`UsageError::Inconsistent`]): subtracting would
//!   wrap, and guessing which number is wrong would charge the wrong price.

use super::error::MAX_TOKENS;
use super::{scan, Usage, UsageError};
use crate::pricing::ServiceTier;

/// What a token-count field held, recorded without failing so the error can name the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Count {
    /// The key was not there.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A whole number from 0 to [`MAX_TOKENS`].
    Value(u64),
    /// Below zero.
    Negative,
    /// A number with a fractional part.
    Fraction,
    /// Above [`MAX_TOKENS`] (including anything past `u64`).
    TooLarge,
    /// A string, boolean, array or object.
    NotNumber,
}

impl Count {
    /// `None` when absent or `null`; an error when present but not a valid count.
    pub(crate) fn optional(self, field: &'static str) -> Result<Option<u64>, UsageError> {
        match self {
            Count::Absent | Count::Null => Ok(None),
            Count::Value(v) => Ok(Some(v)),
            Count::Negative => Err(UsageError::Negative(field)),
            Count::Fraction => Err(UsageError::NotAnInteger(field)),
            Count::TooLarge => Err(UsageError::TooLarge(field)),
            Count::NotNumber => Err(UsageError::NotANumber(field)),
        }
    }

    /// The count, or [`UsageError::MissingField`] when absent or `null`.
    pub(crate) fn required(self, field: &'static str) -> Result<u64, UsageError> {
        self.optional(field)?.ok_or(UsageError::MissingField(field))
    }

    /// The count, 0 when absent or `null`.
    pub(crate) fn or_zero(self, field: &'static str) -> Result<u64, UsageError> {
        Ok(self.optional(field)?.unwrap_or(0))
    }

    /// Classifies one JSON value token (as [`scan::walk_object`] hands it over).
    pub(crate) fn from_token(token: &[u8]) -> Result<Count, UsageError> {
        match token.first() {
            Some(b'n') => Ok(Count::Null),
            Some(b'-' | b'0'..=b'9') => count_of_number(token)
                .ok_or_else(|| UsageError::MalformedJson("invalid number".to_string())),
            _ => Ok(Count::NotNumber),
        }
    }
}
fn count_of(v: u64) -> Count {
    if v > MAX_TOKENS {
        Count::TooLarge
    } else {
        Count::Value(v)
    }
}

fn count_of_f64(v: f64) -> Count {
    if v.is_nan() {
        Count::NotNumber
    } else if v < 0.0 {
        Count::Negative
    } else if v > MAX_TOKENS as f64 {
        Count::TooLarge
    } else if v.fract() != 0.0 {
        Count::Fraction
    } else {
        // Exact: a whole f64 in 0..=10^12 converts without loss.
        Count::Value(v as u64)
    }
}

/// Reads a JSON number token strictly (RFC 8259 grammar): integers digit by digit with
/// overflow checked, anything with a fraction or exponent through `f64`.
fn count_of_number(token: &[u8]) -> Option<Count> {
    let (negative, unsigned) = match token.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let int_len = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = unsigned.split_at_checked(int_len)?;
    if int.is_empty() || (int.len() > 1 && int.first() == Some(&b'0')) {
        return None;
    }
    if rest.is_empty() {
        if negative {
            return Some(if int.iter().all(|&d| d == b'0') {
                Count::Value(0)
            } else {
                Count::Negative
            });
        }
        let mut v: u64 = 0;
        for &d in int {
            match v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
            {
                Some(next) => v = next,
                None => return Some(Count::TooLarge),
            }
        }
        return Some(count_of(v));
    }
    let mut rest = rest;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = frac.get(n..)?;
    }
    if let Some(exp) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exp = exp
            .strip_prefix(b"+")
            .or_else(|| exp.strip_prefix(b"-"))
            .unwrap_or(exp);
        if exp.is_empty() || !exp.iter().all(u8::is_ascii_digit) {
            return None;
        }
        rest = &[];
    }
    if !rest.is_empty() {
        return None;
    }
    // serde_json's own float reader, as on the serde path (and not `str::parse`, whose
    // correctly-rounded tables would add ~14 KB to the filter for the same whole numbers).
    // The grammar is checked above, so its only refusal is a magnitude past f64's range.
    Some(match serde_json::from_slice::<f64>(token) {
        Ok(v) => count_of_f64(v),
        Err(_) if negative => Count::Negative,
        Err(_) => Count::TooLarge,
    })
}

/// A usage object, or a detail object inside one, read member by member from the bytes.
pub(crate) trait Fields: Default {
    /// Reads the value at `s[i]` of the member called `name` (quotes removed), returning the
    /// index just past it, or `None` when the struct has no such field.
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError>;
}

/// A nested object (`prompt_tokens_details`, `cache_creation`, a whole usage object):
/// absent, `null`, present, or something that is not an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Nested<T> {
    /// Absent or `null`.
    #[default]
    Absent,
    /// An object.
    Present(T),
    /// A string, number, boolean or array.
    NotObject,
}

impl<T: Fields> Nested<T> {
    /// Reads the value at `s[i]`; returns it and the index just past it. A repeated key
    /// overwrites, as in serde_json's `Value`.
    pub(crate) fn read(s: &[u8], i: usize) -> Result<(Self, usize), UsageError> {
        match s.get(i) {
            Some(b'{') => {
                let mut t = T::default();
                let end = scan::walk_object(s, i, |k, j| read_member(&mut t, s, k, j))?;
                Ok((Nested::Present(t), end))
            }
            Some(b'n') => Ok((Nested::Absent, skip(s, i)?)),
            _ => Ok((Nested::NotObject, skip(s, i)?)),
        }
    }
}

impl<T: Copy> Nested<T> {
    /// The object, `None` when absent, an error naming `field` when not an object.
    pub(crate) fn get(self, field: &'static str) -> Result<Option<T>, UsageError> {
        match self {
            Nested::Absent => Ok(None),
            Nested::Present(t) => Ok(Some(t)),
            Nested::NotObject => Err(UsageError::NotAnObject(field)),
        }
    }
}

/// Reads the count at `s[i]` into `slot`; returns the index just past it.
pub(crate) fn read_count(s: &[u8], i: usize, slot: &mut Count) -> Result<usize, UsageError> {
    // What providers send: a plain integer. Read in the pass that finds its end; anything
    // else (a sign, a fraction, an exponent, a leading zero, 16 digits or more, a non-number)
    // goes the strict way below.
    let mut v: u64 = 0;
    let mut j = i;
    while let Some(&d @ b'0'..=b'9') = s.get(j) {
        v = v * 10 + u64::from(d - b'0');
        j += 1;
        if j - i == 15 {
            break;
        }
    }
    let plain = j > i
        && (j == i + 1 || s.get(i) != Some(&b'0'))
        && !matches!(
            s.get(j),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'-' | b'+')
        );
    if plain {
        *slot = count_of(v);
        return Ok(j);
    }
    let end = scan::skip_value(s, i)?;
    *slot = Count::from_token(s.get(i..end).unwrap_or_default())?;
    Ok(end)
}

/// Reads the nested object at `s[i]` into `slot`; returns the index just past it.
pub(crate) fn read_nested<T: Fields>(
    s: &[u8],
    i: usize,
    slot: &mut Nested<T>,
) -> Result<usize, UsageError> {
    let (value, end) = Nested::read(s, i)?;
    *slot = value;
    Ok(end)
}

/// Skips the value at `s[i]` (a key no field uses).
pub(crate) fn skip(s: &[u8], i: usize) -> Result<usize, UsageError> {
    Ok(scan::skip_value(s, i)?)
}

/// Reads the member `key` (value at `s[i]`) into `t`; a key with escapes (valid JSON, though
/// no provider sends one) is matched decoded.
fn read_member<T: Fields>(
    t: &mut T,
    s: &[u8],
    key: scan::Key<'_>,
    i: usize,
) -> Result<usize, UsageError> {
    if let Some(name) = key.text() {
        if let Some(end) = t.read_named(&name, s, i)? {
            return Ok(end);
        }
    }
    skip(s, i)
}

/// The tier a JSON value token names: a string names one, anything else none.
pub(crate) fn tier_of(token: &[u8]) -> Option<ServiceTier> {
    scan::unquote_str(token).map(|name| ServiceTier::named(&name))
}

/// What the usage key of a body or event held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageValue {
    /// An object, read with the provider's meaning (or why it means nothing billable).
    Object(Result<Usage, UsageError>),
    /// `null`.
    Null,
    /// A string, number, boolean or array.
    NotObject,
}

impl UsageValue {
    /// Reads the usage object at `s[i]` into the provider's struct `F` and maps it with
    /// `meaning`; returns the value and the index just past it.
    pub(crate) fn read<F: Fields>(
        s: &[u8],
        i: usize,
        meaning: impl FnOnce(&F) -> Result<Usage, UsageError>,
    ) -> Result<(UsageValue, usize), UsageError> {
        let (value, end) = Nested::<F>::read(s, i)?;
        let value = match value {
            Nested::Present(f) => UsageValue::Object(meaning(&f)),
            Nested::Absent => UsageValue::Null,
            Nested::NotObject => UsageValue::NotObject,
        };
        Ok((value, end))
    }

    /// The usage, or the error for what was there instead (`field` names the key).
    pub(crate) fn into_usage(self, field: &'static str) -> Result<Usage, UsageError> {
        match self {
            UsageValue::Object(usage) => usage,
            UsageValue::Null => Err(UsageError::NoUsage),
            UsageValue::NotObject => Err(UsageError::NotAnObject(field)),
        }
    }
}

/// `prompt - cached`, or [`UsageError::Inconsistent`] naming both fields.
pub(crate) fn uncached(
    prompt: u64,
    cached: u64,
    prompt_field: &'static str,
    cached_field: &'static str,
) -> Result<u64, UsageError> {
    prompt.checked_sub(cached).ok_or(UsageError::Inconsistent {
        part: cached_field,
        part_value: cached,
        whole: prompt_field,
        whole_value: prompt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiFormat;
    use crate::usage::usage_of;
    use proptest::prelude::*;

    #[test]
    fn counts_record_what_was_there() {
        let cases: [(&str, Count); 13] = [
            ("0", Count::Value(0)),
            ("1000000000000", Count::Value(MAX_TOKENS)),
            ("1000000000001", Count::TooLarge),
            ("18446744073709551616", Count::TooLarge),
            ("1e400", Count::TooLarge),
            ("-1e400", Count::Negative),
            ("-1", Count::Negative),
            ("-1e30", Count::Negative),
            ("12.5", Count::Fraction),
            ("12.0", Count::Value(12)),
            ("\"12\"", Count::NotNumber),
            ("[1]", Count::NotNumber),
            ("null", Count::Null),
        ];
        for (text, want) in cases {
            assert_eq!(Count::from_token(text.as_bytes()), Ok(want), "{text}");
        }
        for bad in [
            "01", "-", "1.", ".5", "1e", "1e+", "--1", "1.2.3", "0x10", "1f", "+1",
        ] {
            let object = format!(r#"{{"prompt_tokens":{bad},"completion_tokens":1}}"#);
            assert!(
                matches!(
                    usage_of(ApiFormat::OpenAiChat.api(), object.as_bytes()),
                    Err(UsageError::MalformedJson(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(Count::from_token(b"-0"), Ok(Count::Value(0)));
        assert_eq!(Count::from_token(b"2.5e3"), Ok(Count::Value(2500)));
        assert_eq!(Count::from_token(b"true"), Ok(Count::NotNumber));
    }

    proptest! {
        /// A count read in the pass that finds its end reads what the strict way reads (the
        /// number's end by the scanner, then its grammar): the same count or error, the same
        /// end, for any number-like text and whatever follows it.
        #[test]
        fn a_count_reads_as_the_strict_way_reads(
            text in "-?[0-9]{0,22}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
            after in prop::sample::select(vec!["", ",", "}", " ", "x", "0", ".", "e", "-"]),
        ) {
            let s = format!("{text}{after}");
            let mut fast = Count::Absent;
            let got = read_count(s.as_bytes(), 0, &mut fast).map(|end| (end, fast));
            let strict = scan::skip_value(s.as_bytes(), 0)
                .map_err(UsageError::from)
                .and_then(|end| {
                    let token = s.as_bytes().get(..end).unwrap_or_default();
                    Ok((end, Count::from_token(token)?))
                });
            prop_assert_eq!(got, strict);
        }
    }

    /// Every field name some reader knows, plus noise.
    const KEYS: &[&str] = &[
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "output_tokens_details",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "promptTokenCount",
        "candidatesTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
        "toolUsePromptTokenCount",
        "totalTokenCount",
        "cached_tokens",
        "reasoning_tokens",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "service_tier",
        "audio_tokens",
        "server_tool_use",
        "web_search_requests",
        "promptTokensDetails",
        "candidatesTokensDetails",
        "modality",
        "tokenCount",
        "AUDIO",
    ];

    fn arb_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{json, Value};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            (0u64..2_000_000_000_000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-40i32..40).prop_map(|q| json!(f64::from(q) / 4.0)),
            "[a-z0-9\"]{0,4}".prop_map(Value::String),
            prop::sample::select(vec!["AUDIO", "IMAGE", "TEXT"]).prop_map(|m| json!(m)),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        /// Any value under a usage key, compact or pretty, reads the same way and never
        /// panics: `null` is no usage, a non-object is named, an object is the API's meaning.
        #[test]
        fn usage_values_read_alike_however_spaced(v in arb_value()) {
            for api in crate::provider::APIS {
                let compact = usage_of(api, &serde_json::to_vec(&v).unwrap());
                let pretty = usage_of(api, &serde_json::to_vec_pretty(&v).unwrap());
                prop_assert_eq!(&compact, &pretty);
                match &v {
                    serde_json::Value::Null => prop_assert_eq!(compact, Err(UsageError::NoUsage)),
                    serde_json::Value::Object(_) => {}
                    _ => prop_assert_eq!(compact, Err(UsageError::NotAnObject(api.usage_key()))),
                }
            }
        }
    }
}
