//! Finding the usage object inside a JSON document without parsing the rest of it.
//!
//! A chat completion is mostly message text; the usage object is a few hundred bytes at the
//! end. Parsing the whole body into a `serde_json::Value` costs microseconds per request, so
//! this module walks the *structure* of the document instead: it steps over strings
//! (honouring `\"` and `\\` escapes, sixteen bytes at a time, with wasm SIMD in the module),
//! matches brackets with a bit stack, and reads the keys of the object it is asked about. For
//! each member the caller either takes the value's bytes ([`find_members`]) or reads the value
//! itself in the same pass ([`walk_object`], how `provider.rs` reads a usage object field by
//! field).
//!
//! Why this cannot be fooled by a message that *mentions* usage: a key is only recognised
//! where the walk expects a key of the top-level object, so `"usage"` inside a string (where
//! its quotes are escaped) or a `usage` member of a nested object (`metadata.usage`,
//! `choices[0].delta.usage`) is stepped over with the value that contains it. When a key
//! repeats, the last one wins, as it does for `serde_json::Value`. The tests check the walk
//! against a full `serde_json::Value` parse on generated documents.
//!
//! What it does not check: the syntax *inside* the values it steps over is only checked for
//! terminated strings and matched brackets (not commas, escapes or UTF-8). Metering needs the
//! usage; the body is the provider's to validate, and refusing to charge a response because
//! of a stray byte in its text would lose money, not protect anything. The usage object itself
//! is read strictly.

use std::borrow::Cow;

use super::UsageError;

/// Deepest nesting the walk follows (the same as serde_json's default recursion limit).
const MAX_DEPTH: u32 = 128;

/// Where and why a document's structure is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// Byte offset of the problem in the scanned slice.
    pub offset: usize,
    /// What was wrong, lowercase.
    pub what: &'static str,
}

impl From<ScanError> for UsageError {
    fn from(e: ScanError) -> Self {
        UsageError::MalformedJson(format!("{} at byte {}", e.what, e.offset))
    }
}

fn err<T>(offset: usize, what: &'static str) -> Result<T, ScanError> {
    Err(ScanError { offset, what })
}

/// `what` was expected at `s[i]`: says so, or that the input ended (a cut-short body).
fn fail_at<T, E: From<ScanError>>(s: &[u8], i: usize, what: &'static str) -> Result<T, E> {
    let what = if i >= s.len() {
        "unexpected end of input"
    } else {
        what
    };
    Err(ScanError { offset: i, what }.into())
}

/// Index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = s.get(i) {
        i += 1;
    }
    i
}

/// A u64 with 0x01 in every byte, for the word-at-a-time byte search below.
const LO: u64 = 0x0101_0101_0101_0101;
/// A u64 with 0x80 in every byte.
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `w` is zero (exact, "Bit Twiddling Hacks", `haszero`).
#[inline]
fn has_zero_byte(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// Position of the first `a` or `b` in `s`, sixteen bytes at a time ([`first_in_block`]),
/// the last 0..=15 eight at a time and then as one word, shifted in (a copy of a variable
/// length would be a `memory.copy`, which V8 runs out of line; the padding's marks are
/// cleared). Most strings in JSON are keys and short values, where a byte loop was most of
/// the cost; no `unsafe`, no `memchr` dependency.
#[inline]
pub(crate) fn find_either(s: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut blocks = s.chunks_exact(16);
    let mut at = 0;
    for block in blocks.by_ref() {
        let Ok(block) = <&[u8; 16]>::try_from(block) else {
            break;
        };
        if let Some(k) = first_in_block(block, a, b) {
            return Some(at + k);
        }
        at += 16;
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for word in words.by_ref() {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else {
            break;
        };
        if let Some(k) = first_in_word(u64::from_le_bytes(bytes), a, b) {
            return Some(at + k);
        }
        at += 8;
    }
    let rest = words.remainder();
    let mut w = 0u64;
    for (k, &c) in rest.iter().enumerate() {
        w |= u64::from(c) << (8 * k);
    }
    let k = first_in_word(w, a, b)?;
    (k < rest.len()).then_some(at + k)
}

/// Index of the first byte of `w` (little-endian) that is `a` or `b`: `has_zero_byte`'s
/// lowest set bit is exact (the borrow only marks bytes above a hit).
#[inline]
fn first_in_word(w: u64, a: u8, b: u8) -> Option<usize> {
    let (wa, wb) = (LO.wrapping_mul(u64::from(a)), LO.wrapping_mul(u64::from(b)));
    let mask = has_zero_byte(w ^ wa) | has_zero_byte(w ^ wb);
    (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize)
}

/// The two little-endian words of a block.
#[inline]
fn halves(block: &[u8; 16]) -> (u64, u64) {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = *block;
    (
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// Index of the first byte of `block` that is `a` or `b`. In the module, one wasm SIMD
/// comparison per byte value (the two words make one `v128.load`: a vector built byte by byte
/// would be sixteen lane loads); elsewhere (the native tests and tools) two words.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
fn first_in_block(block: &[u8; 16], a: u8, b: u8) -> Option<usize> {
    use core::arch::wasm32::{u64x2, u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    let (lo, hi) = halves(block);
    let v = u64x2(lo, hi);
    let hits = u8x16_bitmask(v128_or(
        u8x16_eq(v, u8x16_splat(a)),
        u8x16_eq(v, u8x16_splat(b)),
    ));
    (hits != 0).then(|| hits.trailing_zeros() as usize)
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline]
fn first_in_block(block: &[u8; 16], a: u8, b: u8) -> Option<usize> {
    let (lo, hi) = halves(block);
    first_in_word(lo, a, b).or_else(|| first_in_word(hi, a, b).map(|k| k + 8))
}

/// Position of the first `\n` or `\r` in `s`: where an SSE line ends.
#[inline]
pub(crate) fn find_line_end(s: &[u8]) -> Option<usize> {
    find_either(s, b'\n', b'\r')
}

/// `s[i]` is an opening quote; returns the index just past the closing quote.
#[inline]
fn skip_string(s: &[u8], i: usize) -> Result<usize, ScanError> {
    string_end(s, i).map(|(end, _)| end)
}

/// [`skip_string`], and whether the string holds an escape: found in the same search, so a
/// key is not searched again for one.
#[inline]
fn string_end(s: &[u8], i: usize) -> Result<(usize, bool), ScanError> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let Some(rest) = s.get(j..) else {
            return err(i, "unterminated string");
        };
        match find_either(rest, b'"', b'\\') {
            None => return err(i, "unterminated string"),
            Some(k) => {
                let at = j + k;
                if rest.get(k) == Some(&b'"') {
                    return Ok((at + 1, escaped));
                }
                // A backslash: whatever follows is escaped (`\"`, `\\`, `\u…`); step over it.
                escaped = true;
                j = at + 2;
            }
        }
    }
}

/// An object key as the walk found it: the bytes between its quotes, and whether they hold
/// an escape. Providers never escape their keys, so a key is compared as sent and decoded
/// only when it has an escape (valid JSON all the same: `"us\u0061ge"` is `usage`).
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> Key<'a> {
    /// Whether the key names `want`.
    #[inline]
    pub(crate) fn is(self, want: &str) -> bool {
        if self.escaped {
            self.text().is_some_and(|k| k.as_ref() == want.as_bytes())
        } else {
            self.raw == want.as_bytes()
        }
    }

    /// The key's text, decoded when it has escapes (`None`: an escape that is not valid).
    pub(crate) fn text(self) -> Option<Cow<'a, [u8]>> {
        if self.escaped {
            unquote_inner(self.raw).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(self.raw))
        }
    }
}

/// `s[i]` opens an object or array; returns the index just past its matching close.
/// Brackets are matched with a bit stack (1 = object) so `{]` is caught without allocating.
fn skip_nested(s: &[u8], i: usize) -> Result<usize, ScanError> {
    let mut stack: u128 = 0;
    let mut depth: u32 = 0;
    let mut j = i;
    loop {
        // Step over numbers, literals, punctuation and indentation in a tight loop: only
        // quotes and brackets change what follows.
        let rest = s.get(j..).unwrap_or_default();
        j += rest
            .iter()
            .position(|c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']'))
            .unwrap_or(rest.len());
        let Some(&b) = s.get(j) else {
            return err(i, "unterminated object or array");
        };
        match b {
            b'"' => {
                j = skip_string(s, j)?;
                continue;
            }
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return err(j, "nesting too deep");
                }
                stack = (stack << 1) | u128::from(b == b'{');
                depth += 1;
            }
            b'}' | b']' => {
                if (stack & 1 == 1) != (b == b'}') {
                    return err(j, "mismatched bracket");
                }
                stack >>= 1;
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
}

/// `s[i]` starts a value (whitespace already skipped); returns the index just past it.
pub(crate) fn skip_value(s: &[u8], i: usize) -> Result<usize, ScanError> {
    match s.get(i) {
        Some(b'"') => skip_string(s, i),
        Some(b'{' | b'[') => skip_nested(s, i),
        Some(b't') => skip_literal(s, i, b"true"),
        Some(b'f') => skip_literal(s, i, b"false"),
        Some(b'n') => skip_literal(s, i, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let len = s
                .get(i..)
                .unwrap_or_default()
                .iter()
                .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .unwrap_or(s.len().saturating_sub(i));
            Ok(i + len)
        }
        Some(_) => err(i, "expected value"),
        None => err(i, "unexpected end of input"),
    }
}

fn skip_literal(s: &[u8], i: usize, lit: &[u8]) -> Result<usize, ScanError> {
    if s.get(i..).is_some_and(|r| r.starts_with(lit)) {
        Ok(i + lit.len())
    } else {
        err(i, "invalid literal")
    }
}

/// Walks the members of the object opening at `s[open]`: for each, calls
/// `f(key, value_start)`, which reads or skips the value and returns the index just past it.
/// Stops at the first error. Returns the index just past the closing brace. Readers that
/// understand a value consume it in the same pass.
pub(crate) fn walk_object<'a, E: From<ScanError>>(
    s: &'a [u8],
    open: usize,
    mut f: impl FnMut(Key<'a>, usize) -> Result<usize, E>,
) -> Result<usize, E> {
    let mut i = skip_ws(s, open + 1);
    if s.get(i) == Some(&b'}') {
        return Ok(i + 1);
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return fail_at(s, i, "expected object key");
        }
        let (key_end, escaped) = string_end(s, i)?;
        let key = Key {
            raw: s.get(i + 1..key_end - 1).unwrap_or_default(),
            escaped,
        };
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return fail_at(s, i, "expected ':'");
        }
        i = skip_ws(s, i + 1);
        let value_end = f(key, i)?;
        i = skip_ws(s, value_end);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b'}') => return Ok(i + 1),
            _ => return fail_at(s, i, "expected ',' or '}'"),
        }
    }
}

/// [`walk_object`] handing `f` each value's bytes, skipped for it.
fn members<'a>(
    s: &'a [u8],
    open: usize,
    mut f: impl FnMut(Key<'a>, &'a [u8]),
) -> Result<usize, ScanError> {
    walk_object(s, open, |key, i| {
        let end = skip_value(s, i)?;
        f(key, s.get(i..end).unwrap_or_default());
        Ok(end)
    })
}

/// Walks the elements of the array opening at `s[open]`: `f(value_start)` reads or skips each
/// and returns the index just past it. Returns the index just past the closing bracket.
pub(crate) fn walk_array<E: From<ScanError>>(
    s: &[u8],
    open: usize,
    mut f: impl FnMut(usize) -> Result<usize, E>,
) -> Result<usize, E> {
    let mut i = skip_ws(s, open + 1);
    if s.get(i) == Some(&b']') {
        return Ok(i + 1);
    }
    loop {
        let end = f(i)?;
        i = skip_ws(s, end);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b']') => return Ok(i + 1),
            _ => return fail_at(s, i, "expected ',' or ']'"),
        }
    }
}

/// Calls `f` with the bytes of each element of `array` (a value token); a token that is not an
/// array has no elements.
pub(crate) fn for_each_element<E: From<ScanError>>(
    array: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    if array.first() != Some(&b'[') {
        return Ok(());
    }
    walk_array(array, 0, |i| {
        let end = skip_value(array, i)?;
        f(array.get(i..end).unwrap_or_default())?;
        Ok(end)
    })
    .map(|_| ())
}

/// Whether `haystack` holds `needle` (a non-empty constant), compared as bytes: for a header
/// value or a path, `str::contains`'s two-way search costs more to set up than the search.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether string bytes hold an escape (a backslash): keys are short, and `memchr`'s setup
/// costs more than the word-at-a-time search over them.
#[inline]
pub(crate) fn has_escape(s: &[u8]) -> bool {
    find_either(s, b'\\', b'\\').is_some()
}

/// The text of a JSON string token (quotes included), unescaped only when it has escapes.
pub(crate) fn unquote(token: &[u8]) -> Option<Cow<'_, [u8]>> {
    let inner = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !has_escape(inner) {
        return Some(Cow::Borrowed(inner));
    }
    unquote_inner(inner).map(Cow::Owned)
}

/// The decoded text of the bytes between a JSON string's quotes, escapes and all.
fn unquote_inner(inner: &[u8]) -> Option<Vec<u8>> {
    let mut token = Vec::with_capacity(inner.len() + 2);
    token.push(b'"');
    token.extend_from_slice(inner);
    token.push(b'"');
    serde_json::from_slice::<String>(&token)
        .ok()
        .map(String::into_bytes)
}

/// [`unquote`] as UTF-8 text.
pub(crate) fn unquote_str(token: &[u8]) -> Option<Cow<'_, str>> {
    match unquote(token)? {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
    }
}

/// The values of the members named in `keys` of the object that is the whole of `doc`
/// (surrounding whitespace allowed), the last one winning when a key repeats. A document that
/// is valid but not an object has no members: every slot is `None`.
pub(crate) fn find_members<'a, const N: usize>(
    doc: &'a [u8],
    keys: [&str; N],
) -> Result<[Option<&'a [u8]>; N], ScanError> {
    let mut found = [None; N];
    let start = skip_ws(doc, 0);
    let end = if doc.get(start) == Some(&b'{') {
        members(doc, start, |key, value| {
            for (want, slot) in keys.iter().zip(found.iter_mut()) {
                if key.is(want) {
                    *slot = Some(value);
                }
            }
        })?
    } else {
        skip_value(doc, start)?
    };
    expect_end(doc, end)?;
    Ok(found)
}

/// Whether any object of the array `candidates` (Gemini's candidate list) has a string
/// `finishReason`: the mark of the last chunk of a generation.
pub(crate) fn any_has_string_member(array: &[u8], key: &str) -> Result<bool, ScanError> {
    if array.first() != Some(&b'[') {
        return Ok(false);
    }
    let mut hit = false;
    walk_array(array, 0, |i| {
        if !hit && array.get(i) == Some(&b'{') {
            return walk_object(array, i, |k, j| {
                let end = skip_value(array, j)?;
                if array.get(j) == Some(&b'"') && k.is(key) {
                    hit = true;
                }
                Ok::<usize, ScanError>(end)
            });
        }
        skip_value(array, i)
    })?;
    Ok(hit)
}

/// Fails unless only whitespace follows `end`.
pub(crate) fn expect_end(doc: &[u8], end: usize) -> Result<(), ScanError> {
    let after = skip_ws(doc, end);
    if after < doc.len() {
        return err(after, "trailing characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn usage_of(doc: &str) -> Result<Option<Value>, ScanError> {
        let [u] = find_members(doc.as_bytes(), ["usage"])?;
        Ok(u.map(|v| serde_json::from_slice(v).unwrap()))
    }

    #[test]
    fn finds_only_the_top_level_key() {
        let cases = [
            (r#"{"usage":{"a":1}}"#, Some(json!({"a":1}))),
            (r#" { "x" : "usage", "usage" : 3 } "#, Some(json!(3))),
            (r#"{"m":{"usage":{"a":1}}}"#, None),
            (r#"{"m":[{"usage":1}],"usage":null}"#, Some(Value::Null)),
            (r#"{"c":"say \"usage\": {\"a\":1}","n":1}"#, None),
            (r#"{"c":"\\","usage":2}"#, Some(json!(2))),
            (r#"{"usage":1,"usage":2}"#, Some(json!(2))),
            (r#"{"us\u0061ge":5}"#, Some(json!(5))),
            (r#"[{"usage":1}]"#, None),
            (r#""usage""#, None),
            (r#"{}"#, None),
        ];
        for (doc, want) in cases {
            assert_eq!(usage_of(doc).unwrap(), want, "{doc}");
        }
    }

    #[test]
    fn rejects_broken_structure() {
        for doc in [
            "",
            "{",
            r#"{"usage":{"a":1}"#,
            r#"{"usage":{"a":1]}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{a:1}"#,
            "{\"a\":\"\\",
        ] {
            assert!(usage_of(doc).is_err(), "{doc:?} should fail");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(usage_of(&deep).is_err());
    }

    #[test]
    fn find_line_end_matches_naive_search() {
        // Every byte value, line ends and the false-positive range 0x08..=0x0F among them.
        let hay: Vec<u8> = (0..=255u8)
            .chain(b"abc\tdef\x0bgh\ri\n".iter().copied())
            .collect();
        for start in 0..hay.len() {
            for end in start..=hay.len().min(start + 40) {
                let s = &hay[start..end];
                let naive = s.iter().position(|&c| c == b'\n' || c == b'\r');
                assert_eq!(find_line_end(s), naive, "{start}..{end}");
            }
        }
    }

    #[test]
    fn find_either_matches_naive_search() {
        let hay = b"0123456789abcdef\"ghij\\klmnopqrstuvwxyz0123456789".to_vec();
        for start in 0..hay.len() {
            let s = &hay[start..];
            let naive = s.iter().position(|&c| c == b'"' || c == b'\\');
            assert_eq!(find_either(s, b'"', b'\\'), naive);
        }
        assert_eq!(find_either(b"", b'"', b'\\'), None);
    }

    proptest! {
        /// Any bytes (hits dense, zero and high bytes among them), any length and offset.
        #[test]
        fn find_either_is_the_first_hit(
            s in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0u8), Just(0x80u8), any::<u8>()],
                0..40,
            ),
            a in prop_oneof![Just(b'"'), Just(0u8), any::<u8>()],
            b in prop_oneof![Just(b'\\'), Just(0x80u8), any::<u8>()],
        ) {
            let naive = s.iter().position(|&c| c == a || c == b);
            prop_assert_eq!(find_either(&s, a, b), naive);
        }
    }

    /// Arbitrary JSON with plenty of `usage` keys and strings at every depth.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Quarters are exact in binary, so text and value round-trip in both parses.
            (-4000i32..4000).prop_map(|q| Value::from(f64::from(q) / 4.0)),
            prop_oneof![
                Just("usage".to_string()),
                Just("\"usage\":{}".to_string()),
                Just("\\\"usage\\\"".to_string()),
                ".*"
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![Just("usage".to_string()), "[a-z\"\\\\ ]{0,6}"],
                        inner
                    ),
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse(v in arb_json(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let got = usage_of(&text).unwrap();
            prop_assert_eq!(got, v.get("usage").cloned());
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = find_members(&bytes, ["usage", "type"]);
            let _ = any_has_string_member(&bytes, "finishReason");
        }

        #[test]
        fn accepts_what_serde_accepts(v in arb_json()) {
            let text = serde_json::to_string(&v).unwrap();
            prop_assert!(find_members(text.as_bytes(), ["x"]).is_ok());
        }
    }
}
