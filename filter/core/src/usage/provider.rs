//! Each provider's usage object, and how its fields map onto [`Usage`].
//!
//! One permissive struct, [`RawUsage`], holds the union of the fields every provider sends;
//! every count is read as a [`Count`] that records *what* was there (a number, a negative, a
//! string, `null`, nothing) instead of failing mid-parse, so the error can name the field.
//! The per-provider functions then apply each provider's documented meaning:
//!
//! - OpenAI Chat Completions, `usage`:
//!   <https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage>.
//!   `prompt_tokens` includes `prompt_tokens_details.cached_tokens`; `completion_tokens`
//!   includes `completion_tokens_details.reasoning_tokens`.
//! - OpenAI Responses, `usage`:
//!   <https://platform.openai.com/docs/api-reference/responses/object#responses/object-usage>.
//!   Same inclusions under `input_tokens` / `output_tokens`.
//! - OpenAI Embeddings, `usage`: `prompt_tokens` and `total_tokens`, no output.
//! - Anthropic Messages, `usage`:
//!   <https://docs.anthropic.com/en/api/messages#response-usage>. `input_tokens` is the
//!   *uncached* part; `cache_read_input_tokens` and `cache_creation_input_tokens` are separate,
//!   and `cache_creation.ephemeral_{5m,1h}_input_tokens` split the write by cache lifetime
//!   (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#1-hour-cache-duration>).
//!   When the split and the total disagree, the split decides the 1h part and the rest of the
//!   total is 5m (the default lifetime), so no written token goes uncharged. Extended-thinking
//!   tokens are inside `output_tokens` and not reported apart, so `reasoning` stays 0.
//! - Gemini `usageMetadata`:
//!   <https://ai.google.dev/api/generate-content#UsageMetadata>. `promptTokenCount`
//!   includes `cachedContentTokenCount`; `thoughtsTokenCount` is *not* inside
//!   `candidatesTokenCount`. `toolUsePromptTokenCount` (tool results fed back to the model,
//!   e.g. grounding) is outside `promptTokenCount` but inside `totalTokenCount` and billed as
//!   input, so it is added to `input_uncached`. Gemini's JSON omits zero-valued fields
//!   (proto3), so only `promptTokenCount` is required.
//!
//! Two choices, documented once here:
//! - `reasoning` larger than `output` is clamped to `output`: the billed output is right either
//!   way, and refusing the whole usage for an informational sub-count would leave the request
//!   uncharged.
//! - cached larger than prompt is an error ([`UsageError::Inconsistent`]): subtracting would
//!   wrap, and guessing which number is wrong would charge the wrong price.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::MAX_TOKENS;
use super::{scan, ApiFormat, Usage, UsageError};
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

    /// Whether the key was in the object at all (even as `null`): used to recognise formats.
    fn present(self) -> bool {
        self != Count::Absent
    }

    /// Classifies one JSON value token (as [`scan::members`] hands it over).
    fn from_token(token: &[u8]) -> Result<Count, UsageError> {
        match token.first() {
            Some(b'n') => Ok(Count::Null),
            Some(b'-' | b'0'..=b'9') => count_of_number(token)
                .ok_or_else(|| UsageError::MalformedJson("invalid number".to_string())),
            _ => Ok(Count::NotNumber),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

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

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
        Ok(count_of(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
        Ok(u64::try_from(v).map_or(Count::Negative, count_of))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Count, E> {
        // serde_json hands over integers past u64::MAX (and past i64::MIN) as f64.
        Ok(count_of_f64(v))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
        Ok(Count::NotNumber)
    }

    fn visit_str<E>(self, _: &str) -> Result<Count, E> {
        Ok(Count::NotNumber)
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<Count, E> {
        Ok(Count::NotNumber)
    }

    fn visit_unit<E>(self) -> Result<Count, E> {
        Ok(Count::Null)
    }

    fn visit_none<E>(self) -> Result<Count, E> {
        Ok(Count::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
        Count::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count::NotNumber)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count::NotNumber)
    }
}

/// A nested details object (`prompt_tokens_details`, `cache_creation`, …): absent, `null`,
/// present, or something that is not an object.
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

/// Reads one member (`key`, value at `s[i]`) of a nested object into `T`; returns the index
/// just past the value.
type ReadMember<T> = fn(&mut T, &[u8], &[u8], usize) -> Result<usize, UsageError>;

impl<T: Default> Nested<T> {
    /// Reads the value at `s[i]` as a nested object whose members `read_member` reads;
    /// returns it and the index just past it.
    fn read(s: &[u8], i: usize, read_member: ReadMember<T>) -> Result<(Self, usize), UsageError> {
        match s.get(i) {
            Some(b'{') => {
                let mut t = T::default();
                let end = scan::walk_object(s, i, |k, j| read_member(&mut t, s, k, j))?;
                Ok((Nested::Present(t), end))
            }
            Some(b'n') => Ok((Nested::Absent, scan::skip_value(s, i)?)),
            _ => Ok((Nested::NotObject, scan::skip_value(s, i)?)),
        }
    }
}

impl<T: Copy> Nested<T> {
    fn get(self, field: &'static str) -> Result<Option<T>, UsageError> {
        match self {
            Nested::Absent => Ok(None),
            Nested::Present(t) => Ok(Some(t)),
            Nested::NotObject => Err(UsageError::NotAnObject(field)),
        }
    }

    fn present(&self) -> bool {
        !matches!(self, Nested::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Nested<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Nested::Present)
            }
            fn visit_unit<E>(self) -> Result<Nested<T>, E> {
                Ok(Nested::Absent)
            }
            fn visit_none<E>(self) -> Result<Nested<T>, E> {
                Ok(Nested::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Nested<T>, D::Error> {
                Nested::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Nested::NotObject)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `*_tokens_details` holding the cached part of the prompt (OpenAI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct CachedDetails {
    cached_tokens: Count,
    audio_tokens: Count,
}

/// `*_tokens_details` holding the reasoning part of the output (OpenAI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct ReasoningDetails {
    reasoning_tokens: Count,
    audio_tokens: Count,
}

/// Gemini's per-modality token counts (`promptTokensDetails`, `candidatesTokensDetails`: a
/// list of `{"modality": "AUDIO", "tokenCount": N}`): the audio and image parts. Anything
/// else in the list (other modalities, entries that are not objects, a value that is not a
/// list) is not a count of these and is skipped, by both readers alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Modalities {
    audio: Count,
    image: Count,
}

impl Modalities {
    fn set(&mut self, modality: &[u8], count: Count) {
        match modality {
            b"AUDIO" => self.audio = count,
            b"IMAGE" => self.image = count,
            _ => {}
        }
    }

    /// Reads the value at `s[i]`; returns the index just past it.
    fn read(&mut self, s: &[u8], i: usize) -> Result<usize, UsageError> {
        if s.get(i) != Some(&b'[') {
            return skip(s, i);
        }
        scan::walk_array(s, i, |j| {
            if s.get(j) != Some(&b'{') {
                return skip(s, j);
            }
            let (mut modality, mut count) = (None, Count::default());
            let end = scan::walk_object(s, j, |key, v| {
                let end = skip(s, v)?;
                let token = s.get(v..end).unwrap_or_default();
                if scan::key_is(key, "modality") {
                    modality = scan::unquote(token).map(|m| m.into_owned());
                } else if scan::key_is(key, "tokenCount") {
                    count = Count::from_token(token)?;
                }
                Ok::<_, UsageError>(end)
            })?;
            if let Some(m) = modality {
                self.set(&m, count);
            }
            Ok(end)
        })
    }
}

impl<'de> Deserialize<'de> for Modalities {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let mut m = Modalities::default();
        for entry in v.as_array().into_iter().flatten() {
            let Some(obj) = entry.as_object() else {
                continue;
            };
            if let Some(modality) = obj.get("modality").and_then(serde_json::Value::as_str) {
                let count = match obj.get("tokenCount") {
                    Some(c) => Count::deserialize(c).map_err(serde::de::Error::custom)?,
                    None => Count::default(),
                };
                m.set(modality.as_bytes(), count);
            }
        }
        Ok(m)
    }
}

/// Anthropic's `usage.server_tool_use`: calls of tools Anthropic runs and bills per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct ServerToolUse {
    web_search_requests: Count,
}

/// A service tier named by a string member (Anthropic's `usage.service_tier`); anything
/// else there (absent, not a string) names none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TierName(pub(crate) Option<ServiceTier>);

impl TierName {
    /// The tier a JSON value token names.
    pub(crate) fn from_token(token: &[u8]) -> TierName {
        TierName(scan::unquote_str(token).map(|name| ServiceTier::named(&name)))
    }
}

impl<'de> Deserialize<'de> for TierName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Whatever the value, it is read: a string names a tier, anything else none.
        let v = serde_json::Value::deserialize(d)?;
        Ok(TierName(v.as_str().map(ServiceTier::named)))
    }
}

/// Anthropic's `usage.cache_creation`: the cache write split by lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct CacheCreation {
    ephemeral_5m_input_tokens: Count,
    ephemeral_1h_input_tokens: Count,
}

/// Reads the count at `s[i]` into `slot`; returns the index just past it.
fn read_count(s: &[u8], i: usize, slot: &mut Count) -> Result<usize, UsageError> {
    let end = scan::skip_value(s, i)?;
    *slot = Count::from_token(s.get(i..end).unwrap_or_default())?;
    Ok(end)
}

/// Skips the value at `s[i]` (a key no field uses).
fn skip(s: &[u8], i: usize) -> Result<usize, UsageError> {
    Ok(scan::skip_value(s, i)?)
}

/// Reads the member `key` (a key token, quotes included; value at `s[i]`) into `t` with
/// `named`, which returns `None` for a name it does not use; such values are skipped. Names
/// are matched as sent first; a key with escapes (valid JSON, though no provider sends one) is
/// decoded and matched again.
fn read_member<T>(
    t: &mut T,
    s: &[u8],
    key: &[u8],
    i: usize,
    named: ReadNamed<T>,
) -> Result<usize, UsageError> {
    let raw = key.get(1..key.len().saturating_sub(1)).unwrap_or_default();
    if let Some(end) = named(t, raw, s, i)? {
        return Ok(end);
    }
    if raw.contains(&b'\\') {
        if let Some(name) = scan::unquote(key) {
            if let Some(end) = named(t, &name, s, i)? {
                return Ok(end);
            }
        }
    }
    skip(s, i)
}

/// Reads the value at `s[i]` of the member called `name` into `T`, returning the index just
/// past it, or `None` when `T` has no such field.
type ReadNamed<T> = fn(&mut T, &[u8], &[u8], usize) -> Result<Option<usize>, UsageError>;

impl CachedDetails {
    fn read(&mut self, s: &[u8], key: &[u8], i: usize) -> Result<usize, UsageError> {
        read_member(self, s, key, i, |t, name, s, i| match name {
            b"cached_tokens" => read_count(s, i, &mut t.cached_tokens).map(Some),
            b"audio_tokens" => read_count(s, i, &mut t.audio_tokens).map(Some),
            _ => Ok(None),
        })
    }
}

impl ReasoningDetails {
    fn read(&mut self, s: &[u8], key: &[u8], i: usize) -> Result<usize, UsageError> {
        read_member(self, s, key, i, |t, name, s, i| match name {
            b"reasoning_tokens" => read_count(s, i, &mut t.reasoning_tokens).map(Some),
            b"audio_tokens" => read_count(s, i, &mut t.audio_tokens).map(Some),
            _ => Ok(None),
        })
    }
}

impl ServerToolUse {
    fn read(&mut self, s: &[u8], key: &[u8], i: usize) -> Result<usize, UsageError> {
        read_member(self, s, key, i, |t, name, s, i| match name {
            b"web_search_requests" => read_count(s, i, &mut t.web_search_requests).map(Some),
            _ => Ok(None),
        })
    }
}

impl CacheCreation {
    fn read(&mut self, s: &[u8], key: &[u8], i: usize) -> Result<usize, UsageError> {
        read_member(self, s, key, i, |t, name, s, i| {
            let slot = match name {
                b"ephemeral_5m_input_tokens" => &mut t.ephemeral_5m_input_tokens,
                b"ephemeral_1h_input_tokens" => &mut t.ephemeral_1h_input_tokens,
                _ => return Ok(None),
            };
            read_count(s, i, slot).map(Some)
        })
    }
}

/// The union of every provider's usage fields; unknown keys are skipped unread.
///
/// Two readers fill it: [`read_usage_at`] from bytes on the hot path, in the same pass that
/// finds the usage key, and serde's derive from a `serde_json::Value` for
/// [`super::from_usage_object`]. A property test holds them equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct RawUsage {
    // OpenAI Chat Completions and Embeddings.
    prompt_tokens: Count,
    completion_tokens: Count,
    total_tokens: Count,
    prompt_tokens_details: Nested<CachedDetails>,
    completion_tokens_details: Nested<ReasoningDetails>,
    // OpenAI Responses; `input_tokens` / `output_tokens` are shared with Anthropic.
    input_tokens: Count,
    output_tokens: Count,
    input_tokens_details: Nested<CachedDetails>,
    output_tokens_details: Nested<ReasoningDetails>,
    // Anthropic.
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
    cache_creation: Nested<CacheCreation>,
    service_tier: TierName,
    server_tool_use: Nested<ServerToolUse>,
    // Gemini.
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Count,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Count,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: Count,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Count,
    #[serde(rename = "toolUsePromptTokenCount")]
    tool_use_prompt_token_count: Count,
    #[serde(rename = "totalTokenCount")]
    total_token_count: Count,
    #[serde(rename = "promptTokensDetails")]
    prompt_tokens_details_by_modality: Modalities,
    #[serde(rename = "candidatesTokensDetails")]
    candidates_tokens_details: Modalities,
}

impl RawUsage {
    /// Reads one member of a usage object (value at `s[i]`); returns the index just past the
    /// value. A repeated key overwrites, as in serde_json's `Value`.
    fn read(&mut self, s: &[u8], key: &[u8], i: usize) -> Result<usize, UsageError> {
        read_member(self, s, key, i, RawUsage::read_named)
    }

    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"prompt_tokens" => &mut self.prompt_tokens,
            b"completion_tokens" => &mut self.completion_tokens,
            b"total_tokens" => &mut self.total_tokens,
            b"input_tokens" => &mut self.input_tokens,
            b"output_tokens" => &mut self.output_tokens,
            b"cache_creation_input_tokens" => &mut self.cache_creation_input_tokens,
            b"cache_read_input_tokens" => &mut self.cache_read_input_tokens,
            b"promptTokenCount" => &mut self.prompt_token_count,
            b"candidatesTokenCount" => &mut self.candidates_token_count,
            b"cachedContentTokenCount" => &mut self.cached_content_token_count,
            b"thoughtsTokenCount" => &mut self.thoughts_token_count,
            b"toolUsePromptTokenCount" => &mut self.tool_use_prompt_token_count,
            b"totalTokenCount" => &mut self.total_token_count,
            b"prompt_tokens_details" => {
                let (details, end) = Nested::read(s, i, CachedDetails::read)?;
                self.prompt_tokens_details = details;
                return Ok(Some(end));
            }
            b"input_tokens_details" => {
                let (details, end) = Nested::read(s, i, CachedDetails::read)?;
                self.input_tokens_details = details;
                return Ok(Some(end));
            }
            b"completion_tokens_details" => {
                let (details, end) = Nested::read(s, i, ReasoningDetails::read)?;
                self.completion_tokens_details = details;
                return Ok(Some(end));
            }
            b"output_tokens_details" => {
                let (details, end) = Nested::read(s, i, ReasoningDetails::read)?;
                self.output_tokens_details = details;
                return Ok(Some(end));
            }
            b"cache_creation" => {
                let (split, end) = Nested::read(s, i, CacheCreation::read)?;
                self.cache_creation = split;
                return Ok(Some(end));
            }
            b"promptTokensDetails" => {
                return self.prompt_tokens_details_by_modality.read(s, i).map(Some);
            }
            b"candidatesTokensDetails" => {
                return self.candidates_tokens_details.read(s, i).map(Some);
            }
            b"server_tool_use" => {
                let (tools, end) = Nested::read(s, i, ServerToolUse::read)?;
                self.server_tool_use = tools;
                return Ok(Some(end));
            }
            b"service_tier" => {
                let end = skip(s, i)?;
                self.service_tier = TierName::from_token(s.get(i..end).unwrap_or_default());
                return Ok(Some(end));
            }
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

/// What the usage key of a body or event held.
// Built once per body on the stack; boxing the object would allocate on every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsageValue {
    /// An object, read.
    Object(RawUsage),
    /// `null`.
    Null,
    /// A string, number, boolean or array.
    NotObject,
}

impl UsageValue {
    /// The object, or the error for what was there instead (`field` names the key).
    pub(crate) fn into_raw(self, field: &'static str) -> Result<RawUsage, UsageError> {
        match self {
            UsageValue::Object(raw) => Ok(raw),
            UsageValue::Null => Err(UsageError::NoUsage),
            UsageValue::NotObject => Err(UsageError::NotAnObject(field)),
        }
    }
}

/// Reads the usage value starting at `s[i]` in one pass; returns it and the index just past
/// it. The object's members, and the numbers and nested objects it reads, are checked
/// strictly; values of keys it ignores only for structure (see [`scan`]).
pub(crate) fn read_usage_at(s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
    match s.get(i) {
        Some(b'{') => {
            let mut raw = RawUsage::default();
            let end = scan::walk_object(s, i, |k, j| raw.read(s, k, j))?;
            Ok((UsageValue::Object(raw), end))
        }
        Some(b'n') => Ok((UsageValue::Null, skip(s, i)?)),
        _ => Ok((UsageValue::NotObject, skip(s, i)?)),
    }
}

/// Reads `bytes`, exactly one JSON value, as a usage object; `field` names it in errors.
pub(crate) fn parse_raw(bytes: &[u8], field: &'static str) -> Result<RawUsage, UsageError> {
    let (value, end) = read_usage_at(bytes, scan::skip_ws(bytes, 0))?;
    scan::expect_end(bytes, end)?;
    value.into_raw(field)
}

/// Which provider a usage object comes from, judged by its keys (each provider has a key no
/// other sends): camelCase counts are Gemini; `cache_*` keys are Anthropic; `input_tokens` with
/// `total_tokens` or `*_details` is OpenAI Responses, without them Anthropic; `prompt_tokens`
/// with `completion_tokens` is OpenAI Chat, without it OpenAI Embeddings.
pub(crate) fn detect(raw: &RawUsage) -> Option<ApiFormat> {
    if raw.prompt_token_count.present()
        || raw.candidates_token_count.present()
        || raw.total_token_count.present()
        || raw.cached_content_token_count.present()
        || raw.thoughts_token_count.present()
    {
        Some(ApiFormat::GeminiGenerateContent)
    } else if raw.cache_creation_input_tokens.present()
        || raw.cache_read_input_tokens.present()
        || raw.cache_creation.present()
    {
        Some(ApiFormat::AnthropicMessages)
    } else if raw.input_tokens.present() || raw.output_tokens.present() {
        if raw.total_tokens.present()
            || raw.input_tokens_details.present()
            || raw.output_tokens_details.present()
        {
            Some(ApiFormat::OpenAiResponses)
        } else {
            Some(ApiFormat::AnthropicMessages)
        }
    } else if raw.prompt_tokens.present() {
        if raw.completion_tokens.present() || raw.completion_tokens_details.present() {
            Some(ApiFormat::OpenAiChat)
        } else {
            Some(ApiFormat::OpenAiEmbeddings)
        }
    } else {
        None
    }
}

/// Applies `format`'s field meanings to a raw usage object.
pub(crate) fn to_usage(format: ApiFormat, raw: &RawUsage) -> Result<Usage, UsageError> {
    match format {
        ApiFormat::OpenAiChat => openai_chat(raw),
        ApiFormat::OpenAiResponses => openai_responses(raw),
        ApiFormat::OpenAiEmbeddings => openai_embeddings(raw),
        ApiFormat::AnthropicMessages => AnthropicParts::from_raw(raw)?.to_usage(),
        ApiFormat::GeminiGenerateContent => gemini(raw),
    }
}

/// `prompt - cached`, or [`UsageError::Inconsistent`] naming both fields.
fn uncached(
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

fn openai_chat(raw: &RawUsage) -> Result<Usage, UsageError> {
    const PROMPT: &str = "usage.prompt_tokens";
    const CACHED: &str = "usage.prompt_tokens_details.cached_tokens";
    let prompt = raw.prompt_tokens.required(PROMPT)?;
    let output = raw.completion_tokens.required("usage.completion_tokens")?;
    let (cached, input_audio) = match raw
        .prompt_tokens_details
        .get("usage.prompt_tokens_details")?
    {
        Some(d) => (
            d.cached_tokens.or_zero(CACHED)?,
            d.audio_tokens
                .or_zero("usage.prompt_tokens_details.audio_tokens")?,
        ),
        None => (0, 0),
    };
    let (reasoning, output_audio) = match raw
        .completion_tokens_details
        .get("usage.completion_tokens_details")?
    {
        Some(d) => (
            d.reasoning_tokens
                .or_zero("usage.completion_tokens_details.reasoning_tokens")?,
            d.audio_tokens
                .or_zero("usage.completion_tokens_details.audio_tokens")?,
        ),
        None => (0, 0),
    };
    let input_uncached = uncached(prompt, cached, PROMPT, CACHED)?;
    let reasoning = reasoning.min(output);
    Ok(Usage {
        input_uncached,
        cache_read: cached,
        output,
        reasoning,
        // Parts of the prompt and the output: never more than what is left of them.
        input_audio: input_audio.min(input_uncached),
        output_audio: output_audio.min(output - reasoning),
        ..Usage::default()
    })
}

fn openai_responses(raw: &RawUsage) -> Result<Usage, UsageError> {
    const INPUT: &str = "usage.input_tokens";
    const CACHED: &str = "usage.input_tokens_details.cached_tokens";
    let input = raw.input_tokens.required(INPUT)?;
    let output = raw.output_tokens.required("usage.output_tokens")?;
    let cached = match raw.input_tokens_details.get("usage.input_tokens_details")? {
        Some(d) => d.cached_tokens.or_zero(CACHED)?,
        None => 0,
    };
    let reasoning = match raw
        .output_tokens_details
        .get("usage.output_tokens_details")?
    {
        Some(d) => d
            .reasoning_tokens
            .or_zero("usage.output_tokens_details.reasoning_tokens")?,
        None => 0,
    };
    Ok(Usage {
        input_uncached: uncached(input, cached, INPUT, CACHED)?,
        cache_read: cached,
        output,
        reasoning: reasoning.min(output),
        ..Usage::default()
    })
}

fn openai_embeddings(raw: &RawUsage) -> Result<Usage, UsageError> {
    // `prompt_tokens` is the documented field; some OpenAI-compatible servers send only
    // `total_tokens`, which for embeddings is the same number.
    let prompt = match raw.prompt_tokens.optional("usage.prompt_tokens")? {
        Some(p) => p,
        None => raw
            .total_tokens
            .optional("usage.total_tokens")?
            .ok_or(UsageError::MissingField("usage.prompt_tokens"))?,
    };
    Ok(Usage {
        input_uncached: prompt,
        ..Usage::default()
    })
}

fn gemini(raw: &RawUsage) -> Result<Usage, UsageError> {
    const PROMPT: &str = "usageMetadata.promptTokenCount";
    const CACHED: &str = "usageMetadata.cachedContentTokenCount";
    let prompt = raw.prompt_token_count.required(PROMPT)?;
    let cached = raw.cached_content_token_count.or_zero(CACHED)?;
    let candidates = raw
        .candidates_token_count
        .or_zero("usageMetadata.candidatesTokenCount")?;
    let thoughts = raw
        .thoughts_token_count
        .or_zero("usageMetadata.thoughtsTokenCount")?;
    // Tokens of tool results fed back to the model (grounding, code execution): part of
    // `totalTokenCount` and billed as input, though outside `promptTokenCount`.
    let tool_use = raw
        .tool_use_prompt_token_count
        .or_zero("usageMetadata.toolUsePromptTokenCount")?;
    let by_modality = |m: &Modalities, part: &'static str| -> Result<(u64, u64), UsageError> {
        Ok((m.audio.or_zero(part)?, m.image.or_zero(part)?))
    };
    let (audio_in, image_in) = by_modality(
        &raw.prompt_tokens_details_by_modality,
        "usageMetadata.promptTokensDetails",
    )?;
    let (audio_out, image_out) = by_modality(
        &raw.candidates_tokens_details,
        "usageMetadata.candidatesTokensDetails",
    )?;
    let input_uncached = uncached(prompt, cached, PROMPT, CACHED)?.saturating_add(tool_use);
    // The per-modality counts are parts of the prompt (cached tokens included) and of the
    // candidates: each token is billed once, so they are clamped to what is uncached.
    let input_audio = audio_in.min(input_uncached);
    Ok(Usage {
        input_uncached,
        cache_read: cached,
        output: candidates.saturating_add(thoughts),
        reasoning: thoughts,
        input_audio,
        input_image: image_in.min(input_uncached - input_audio),
        output_audio: audio_out.min(candidates),
        output_image: image_out.min(candidates - audio_out.min(candidates)),
        ..Usage::default()
    })
}

/// Anthropic's usage fields, each `None` when not sent. A stream reports them in pieces —
/// `message_start` then cumulative `message_delta`s, where a later value replaces an earlier
/// one — so they are kept apart until the end ([`AnthropicParts::merge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnthropicParts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    write_5m: Option<u64>,
    write_1h: Option<u64>,
    web_searches: Option<u64>,
    service_tier: Option<ServiceTier>,
}

impl AnthropicParts {
    /// Reads Anthropic's fields, checking each one that is present.
    pub(crate) fn from_raw(raw: &RawUsage) -> Result<Self, UsageError> {
        let split = raw.cache_creation.get("usage.cache_creation")?;
        Ok(AnthropicParts {
            input: raw.input_tokens.optional("usage.input_tokens")?,
            output: raw.output_tokens.optional("usage.output_tokens")?,
            cache_read: raw
                .cache_read_input_tokens
                .optional("usage.cache_read_input_tokens")?,
            cache_creation: raw
                .cache_creation_input_tokens
                .optional("usage.cache_creation_input_tokens")?,
            write_5m: match split {
                Some(s) => s
                    .ephemeral_5m_input_tokens
                    .optional("usage.cache_creation.ephemeral_5m_input_tokens")?,
                None => None,
            },
            write_1h: match split {
                Some(s) => s
                    .ephemeral_1h_input_tokens
                    .optional("usage.cache_creation.ephemeral_1h_input_tokens")?,
                None => None,
            },
            web_searches: match raw.server_tool_use.get("usage.server_tool_use")? {
                Some(t) => t
                    .web_search_requests
                    .optional("usage.server_tool_use.web_search_requests")?,
                None => None,
            },
            service_tier: raw.service_tier.0,
        })
    }

    /// Lays a later event's fields over these: every field the later one sent wins.
    pub(crate) fn merge(&mut self, later: AnthropicParts) {
        let AnthropicParts {
            input,
            output,
            cache_read,
            cache_creation,
            write_5m,
            write_1h,
            web_searches,
            service_tier,
        } = later;
        self.input = input.or(self.input);
        self.output = output.or(self.output);
        self.cache_read = cache_read.or(self.cache_read);
        self.cache_creation = cache_creation.or(self.cache_creation);
        self.write_5m = write_5m.or(self.write_5m);
        self.write_1h = write_1h.or(self.write_1h);
        self.web_searches = web_searches.or(self.web_searches);
        self.service_tier = service_tier.or(self.service_tier);
    }

    /// The usage, counting absent fields as 0, plus the first required field that was absent.
    pub(crate) fn to_usage_partial(self) -> (Usage, Option<UsageError>) {
        let missing = if self.input.is_none() {
            Some(UsageError::MissingField("usage.input_tokens"))
        } else if self.output.is_none() {
            Some(UsageError::MissingField("usage.output_tokens"))
        } else {
            None
        };
        // The split, when sent, is authoritative for the 1h part; whatever of the total it does
        // not account for is a 5m write (the default lifetime), so no written token is lost.
        let total = self.cache_creation.unwrap_or_else(|| {
            self.write_5m
                .unwrap_or(0)
                .saturating_add(self.write_1h.unwrap_or(0))
        });
        let write_1h = self.write_1h.unwrap_or(0);
        let write_5m = self
            .write_5m
            .unwrap_or(0)
            .max(total.saturating_sub(write_1h));
        let usage = Usage {
            input_uncached: self.input.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write_5m: write_5m,
            cache_write_1h: write_1h,
            output: self.output.unwrap_or(0),
            web_searches: self.web_searches.unwrap_or(0),
            service_tier: self.service_tier.unwrap_or_default(),
            ..Usage::default()
        };
        (usage, missing)
    }

    /// The usage, or [`UsageError::MissingField`] when `input_tokens` or `output_tokens` was
    /// never sent.
    pub(crate) fn to_usage(self) -> Result<Usage, UsageError> {
        match self.to_usage_partial() {
            (usage, None) => Ok(usage),
            (_, Some(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(json: &str) -> RawUsage {
        parse_raw(json.as_bytes(), "usage").unwrap()
    }

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
            let got: Result<Count, _> = serde_json::from_str(text);
            match got {
                Ok(c) => assert_eq!(c, want, "{text}"),
                // serde_json refuses ±1e400 outright (number out of range).
                Err(_) => assert!(text.ends_with("1e400"), "{text}"),
            }
        }
        for bad in [
            "01", "-", "1.", ".5", "1e", "1e+", "--1", "1.2.3", "0x10", "1f", "+1",
        ] {
            let object = format!(r#"{{"prompt_tokens":{bad}}}"#);
            assert!(
                matches!(
                    parse_raw(object.as_bytes(), "usage"),
                    Err(UsageError::MalformedJson(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(Count::from_token(b"-0"), Ok(Count::Value(0)));
        assert_eq!(Count::from_token(b"2.5e3"), Ok(Count::Value(2500)));
        assert_eq!(Count::from_token(b"true"), Ok(Count::NotNumber));
    }

    #[test]
    fn detects_every_provider() {
        let cases = [
            (
                r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#,
                ApiFormat::OpenAiChat,
            ),
            (
                r#"{"prompt_tokens":1,"total_tokens":1}"#,
                ApiFormat::OpenAiEmbeddings,
            ),
            (
                r#"{"input_tokens":1,"output_tokens":2,"total_tokens":3,"input_tokens_details":{"cached_tokens":0}}"#,
                ApiFormat::OpenAiResponses,
            ),
            (
                r#"{"input_tokens":1,"output_tokens":2}"#,
                ApiFormat::AnthropicMessages,
            ),
            (
                r#"{"input_tokens":1,"cache_read_input_tokens":0,"output_tokens":2}"#,
                ApiFormat::AnthropicMessages,
            ),
            (
                r#"{"promptTokenCount":1,"totalTokenCount":1}"#,
                ApiFormat::GeminiGenerateContent,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(detect(&raw(json)), Some(want), "{json}");
        }
        assert_eq!(detect(&raw(r#"{"foo":1}"#)), None);
    }

    #[test]
    fn anthropic_cache_write_split() {
        let u = |json| to_usage(ApiFormat::AnthropicMessages, &raw(json)).unwrap();
        // No split: the whole write is 5m.
        let a = u(r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100}"#);
        assert_eq!((a.cache_write_5m, a.cache_write_1h), (100, 0));
        // Split sent: it decides.
        let b = u(
            r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100,
                     "cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":70}}"#,
        );
        assert_eq!((b.cache_write_5m, b.cache_write_1h), (30, 70));
        // Split short of the total: the rest is 5m, nothing lost.
        let c = u(
            r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100,
                     "cache_creation":{"ephemeral_1h_input_tokens":70}}"#,
        );
        assert_eq!((c.cache_write_5m, c.cache_write_1h), (30, 70));
        // Split without the total.
        let d = u(r#"{"input_tokens":1,"output_tokens":2,
                     "cache_creation":{"ephemeral_5m_input_tokens":5,"ephemeral_1h_input_tokens":7}}"#);
        assert_eq!((d.cache_write_5m, d.cache_write_1h), (5, 7));
    }

    #[test]
    fn reasoning_is_clamped_to_output() {
        let u = to_usage(
            ApiFormat::OpenAiChat,
            &raw(r#"{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":9}}"#),
        )
        .unwrap();
        assert_eq!((u.output, u.reasoning), (5, 5));
    }

    /// Every field name either reader knows, plus noise.
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
        /// The byte reader (hot path) and serde's derive (`from_usage_object`) agree.
        #[test]
        fn byte_reader_agrees_with_serde(v in arb_value(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
            let fast = parse_raw(&text, "usage");
            match &v {
                serde_json::Value::Object(_) => {
                    let slow = RawUsage::deserialize(&v).map_err(|e| UsageError::json(&e));
                    prop_assert_eq!(fast, slow);
                }
                serde_json::Value::Null => prop_assert_eq!(fast, Err(UsageError::NoUsage)),
                _ => prop_assert_eq!(fast, Err(UsageError::NotAnObject("usage"))),
            }
        }
    }

    #[test]
    fn merge_lets_later_fields_win() {
        let mut a = AnthropicParts::from_raw(&raw(
            r#"{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}"#,
        ))
        .unwrap();
        a.merge(AnthropicParts::from_raw(&raw(r#"{"output_tokens":50}"#)).unwrap());
        let u = a.to_usage().unwrap();
        assert_eq!((u.input_uncached, u.cache_read, u.output), (10, 4, 50));
        a.merge(
            AnthropicParts::from_raw(&raw(r#"{"input_tokens":12,"output_tokens":60}"#)).unwrap(),
        );
        let u = a.to_usage().unwrap();
        assert_eq!((u.input_uncached, u.cache_read, u.output), (12, 4, 60));
    }
}
