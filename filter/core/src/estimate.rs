//! Request estimates: what a request body says about its cost before it goes upstream, and
//! the worst case that the budget decision reserves.
//!
//! [`summarize`] reads only what the decision needs from a request body, asking the API's
//! module ([`ProviderApi::request_field`]) what each member means: the model, the output caps
//! (`max_tokens` / `max_completion_tokens` for OpenAI chat, `max_output_tokens` for Responses,
//! `max_tokens` for Anthropic, `generationConfig.maxOutputTokens` for Gemini), the number of
//! choices (`n`, `best_of`, `candidateCount`), `stream`, `stream_options.include_usage`, the
//! service tier, the tools, and the size of the prompt-bearing fields. It is the only pass over
//! the body: one serde pass with borrowed strings and `IgnoredAny` for everything else (no
//! `serde_json::Value` of a possibly multi-megabyte body), which also records where
//! `stream_options` sits so the include_usage rewrite splices bytes without reading the body
//! again.
//!
//! ## The prompt estimate
//!
//! `prompt_tokens = ⌈prompt_bytes / 3⌉ + media_parts × media_part_tokens
//! (+ 1,000 when tools are declared)`, where `prompt_bytes` is the compact-JSON size of the
//! prompt-bearing fields (`messages`, `prompt`, `input`, `instructions`, `system`, `contents`,
//! `systemInstruction`, `tools`, `functions`, `response_format`, `text`): strings with their
//! quotes, keys, numbers and punctuation.
//!
//! Why it leans high: byte-pair tokenizers (OpenAI's `cl100k`/`o200k`, Anthropic's, Gemini's)
//! average about 4 characters per token on English prose (OpenAI's rule of thumb: a token is
//! ~4 characters), so 3 bytes per token is a third over before counting the JSON syntax and
//! keys, which the provider replaces by a few template tokens per message. Code and non-Latin
//! scripts tokenize denser: CJK text is 3 UTF-8 bytes per character and roughly one token per
//! character, so the estimate is close to exact there rather than high. Images, audio and
//! files are billed by pixels, duration or pages, not by the bytes of a URL or file id, so each
//! part adds a flat `media_part_tokens` on top of its bytes (2,000 by default: Claude bills
//! ~1,600 for its largest image, GPT-4o 1,105–1,445 for a high-detail one, Gemini 258 per
//! image). Providers render tool declarations into a system prompt with its own boilerplate
//! (Anthropic's tool-use prompt is up to ~700 tokens), hence the flat 1,000.
//!
//! ## The worst case
//!
//! [`worst_case`]: `prompt_tokens × max(input, cache_write_5m, cache_write_1h)
//! + output_tokens × max(output, reasoning)`, where `output_tokens` is the request's output cap
//! (never clamped to the book's `max_output_tokens`: a beta header or a newer model revision
//! lets the provider serve more than the book says, and the reservation must never be smaller
//! than what the provider may bill), or the model's
//! `max_output_tokens` when the request has none, or [`EstimateConfig::default_max_output_tokens`]
//! when the price book does not know it either; times the number of choices. Rates come from
//! the highest tier the model has ([`TierPolicy::Highest`], the default: a prompt estimate can
//! be wrong about which side of a 200k-token threshold it falls) or from the tier the
//! estimated prompt falls in ([`TierPolicy::AtEstimate`]).
//!
//! The service tier: a request reserves at the rates of the tier it asks for (`service_tier`),
//! and at the dearest tier the model has when it lets the provider choose (OpenAI's `auto`,
//! the default when absent; Anthropic's `auto`, also its default). A request that enables a
//! provider-run web search (OpenAI `web_search_options` or a `web_search*` tool, Anthropic's
//! `web_search_*` tool, Gemini's `googleSearch`) adds the dearest search fee times its
//! `max_uses` (Anthropic), else one search: the provider decides how many it runs, and
//! settlement charges what it reports.
//!
//! [`RequestSummary::usage_rewrite`] adds `stream_options.include_usage = true` to a streaming
//! request of an API that needs it (OpenAI chat) so usage always arrives, splicing bytes so
//! everything else is kept verbatim.
//!
//! Tests: `cargo test -p tollgate-core --lib estimate`; bench:
//! `cargo bench -p tollgate-core --bench decision`.

use std::borrow::Cow;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::pricing::{EffectiveRates, ModelKind, ModelPrice, SearchContext, ServiceTier};
use crate::provider::{ApiFormat, ProviderApi, RequestField};
use crate::usage::scan;

/// An output cap above this is refused as absurd: no model produces 10⁸ tokens in one
/// response (the largest caps are around 10⁶), so it is a typo or a hostile body.
pub const MAX_OUTPUT_TOKENS: u64 = 100_000_000;

/// A choice count (`n`, `best_of`, `candidateCount`) above this is refused: OpenAI allows at
/// most 128.
pub const MAX_CHOICES: u64 = 128;

/// Tokens added when a request declares tools: the provider's tool-use system prompt.
pub const TOOL_PROMPT_TOKENS: u64 = 1_000;

/// How to estimate requests. Built by the filter from its validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateConfig {
    /// Largest request body accepted; larger ones fail with [`EstimateError::BodyTooLarge`].
    pub max_body_bytes: usize,
    /// Output tokens assumed when neither the request nor the price book bounds them.
    pub default_max_output_tokens: u64,
    /// Tokens counted per image, audio or file part, on top of its bytes.
    pub media_part_tokens: u64,
    /// Which tier's rates price the estimate.
    pub tier_policy: TierPolicy,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            // Anthropic's request size limit; OpenAI's is larger but images past this are rare.
            max_body_bytes: 32 * 1024 * 1024,
            // Most current models cap output between 8k and 128k tokens.
            default_max_output_tokens: 32_768,
            media_part_tokens: 2_000,
            tier_policy: TierPolicy::Highest,
        }
    }
}

/// Which long-context tier prices a worst-case estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierPolicy {
    /// The highest rate of each kind across all tiers ([`ModelPrice::max_rates`]): never below
    /// the actual rate, whatever the real prompt size turns out to be.
    #[default]
    Highest,
    /// The tier the estimated prompt falls in ([`ModelPrice::rates_for`]): tighter, and still
    /// high as long as the prompt estimate is.
    AtEstimate,
}

/// Why a request body could not be estimated. The filter refuses such a request (a body the
/// provider would reject anyway) rather than letting unpriced traffic through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// The body is larger than [`EstimateConfig::max_body_bytes`].
    #[error("request body is {size} bytes, over the limit of {limit}")]
    BodyTooLarge {
        /// Body size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not valid JSON (or trailing bytes after it).
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// Valid JSON, but not an object.
    #[error("request body is not a json object")]
    NotAnObject,
    /// Neither the body nor the path names a model.
    #[error("missing field `model`")]
    MissingModel,
    /// A field read for the estimate appears twice: providers keep the last, and pricing the
    /// first would let `{"model":"cheap","model":"dear"}` through at the cheap price.
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// Field name.
        field: &'static str,
        /// What it must be (`a string`, `an integer`, ...).
        expected: &'static str,
    },
    /// A token or choice count is below zero.
    #[error("field `{0}` is negative")]
    Negative(&'static str),
    /// A token or choice count is beyond any real model's.
    #[error("field `{field}` is {value}, over the limit of {limit}")]
    TooLarge {
        /// Field name.
        field: &'static str,
        /// The value given (saturated at `u64::MAX`).
        value: u64,
        /// The largest accepted value.
        limit: u64,
    },
    /// The worst-case cost does not fit a `Decimal` (only absurd prices get there).
    #[error("worst-case cost overflows")]
    Overflow,
}

/// What a request body says, as far as the budget decision cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary<'a> {
    /// The API the body was read as.
    pub format: ApiFormat,
    /// The model: from the body, else from the path (Gemini). Borrowed unless escaped.
    pub model: Cow<'a, str>,
    /// The output cap the request sets for its format, if any (per choice).
    pub max_output_tokens: Option<u64>,
    /// How many choices the provider generates and bills (`n`, `best_of`, `candidateCount`);
    /// at least 1.
    pub choices: u64,
    /// `stream: true` in the body (Gemini streams by path instead).
    pub stream: bool,
    /// `stream_options.include_usage: true` in the body.
    pub include_usage: bool,
    /// Compact-JSON bytes of the prompt-bearing fields.
    pub prompt_bytes: u64,
    /// Image, audio and file parts in the prompt.
    pub media_parts: u64,
    /// Whether the request declares tools or functions.
    pub has_tools: bool,
    /// The prompt estimate (see the module docs for the formula).
    pub prompt_tokens: u64,
    /// The service tier the request asks for.
    pub service_tier: TierAsk,
    /// The provider-run web search the request enables, if any.
    pub web_search: Option<WebSearchAsk>,
    /// The splice that asks for usage, when the API needs one and the request lacks it
    /// (applied by [`RequestSummary::usage_rewrite`]).
    pub usage_splice: Option<Splice>,
}

/// `body[start..end]` replaced by `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// First byte replaced.
    pub start: usize,
    /// First byte kept after the replaced ones (`start` for an insertion).
    pub end: usize,
    /// What goes in their place.
    pub text: &'static [u8],
}

impl RequestSummary<'_> {
    /// The body rewritten to ask for usage in its stream (`stream_options.include_usage =
    /// true`, OpenAI chat), or `None` when nothing changes: the API reports usage anyway, the
    /// request does not stream (OpenAI refuses `stream_options` on a non-streaming request),
    /// or it already asks. `body` is the one [`summarize`] read. Only the inserted or replaced
    /// bytes differ: key order, whitespace, number spellings and escapes stay exactly as the
    /// client sent them.
    pub fn usage_rewrite(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Splice { start, end, text } = self.usage_splice?;
        let mut out = Vec::with_capacity(body.len().saturating_add(text.len()));
        out.extend_from_slice(body.get(..start)?);
        out.extend_from_slice(text);
        out.extend_from_slice(body.get(end..)?);
        Some(out)
    }
}

/// The service tier a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierAsk {
    /// The provider chooses (OpenAI and Anthropic `auto`, their default): it may serve any
    /// tier the account has, so the reservation takes the dearest.
    #[default]
    Auto,
    /// This tier and no other (`default`, `flex`, `priority`, Anthropic `standard_only`).
    Only(ServiceTier),
}

/// A provider-run web search a request enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebSearchAsk {
    /// The context size asked for (OpenAI's `search_context_size`; `medium` when unsaid):
    /// the fee per search depends on it, and the answer does not repeat it.
    pub context: SearchContext,
    /// Most searches the request allows (Anthropic's `max_uses`).
    pub max_uses: Option<u64>,
}

/// A worst-case cost and how it was reached (for logs and the reservation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Output tokens assumed: the cap times the number of choices.
    pub output_tokens: u64,
    /// The per-token rate applied to the prompt.
    pub prompt_rate: Decimal,
    /// The per-token rate applied to the output.
    pub output_rate: Decimal,
    /// `prompt_tokens × prompt_rate + output_tokens × output_rate`, in USD.
    pub cost: Decimal,
}

/// Reads what the decision needs from a request body of `format`. `path_model` is the model
/// named by the URL (Gemini): it is the model the provider runs, so it wins over any `model`
/// in the body (which Gemini ignores; a body naming a cheaper model must not price the request).
pub fn summarize<'a>(
    body: &'a [u8],
    format: ApiFormat,
    path_model: Option<&'a str>,
    cfg: &EstimateConfig,
) -> Result<RequestSummary<'a>, EstimateError> {
    if body.len() > cfg.max_body_bytes {
        return Err(EstimateError::BodyTooLarge {
            size: body.len(),
            limit: cfg.max_body_bytes,
        });
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            // Distinguish "not JSON" from "JSON, but not an object".
            return Err(match serde_json::from_slice::<IgnoredAny>(body) {
                Ok(_) => EstimateError::NotAnObject,
                Err(e) => EstimateError::MalformedJson(e.to_string()),
            });
        }
        None => return Err(EstimateError::MalformedJson("empty body".into())),
    }
    let api = format.api();
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = (&mut de)
        .deserialize_map(TopVisitor { api, body })
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| EstimateError::MalformedJson(e.to_string()))?;
    if let Some(field) = raw.duplicate {
        return Err(EstimateError::DuplicateField(field));
    }

    let model = match (path_model, raw.model) {
        (Some(m), _) => Some(crate::provider::path_model_name(m)),
        (None, Field::Absent | Field::Null) => None,
        (None, Field::Value(m)) => Some(m),
        (None, Field::WrongType) => return Err(wrong_type("model", "a string")),
    }
    .filter(|m| !m.is_empty())
    .ok_or(EstimateError::MissingModel)?;
    if let Some(e) = raw.invalid {
        return Err(e);
    }

    let prompt_tokens = raw
        .prompt
        .bytes
        .div_ceil(3)
        .saturating_add(raw.prompt.media.saturating_mul(cfg.media_part_tokens))
        .saturating_add(if raw.has_tools { TOOL_PROMPT_TOKENS } else { 0 });

    let usage_splice = if api.needs_include_usage() && raw.stream && !raw.options.include_usage {
        Some(raw.options.splice(body))
    } else {
        None
    };

    Ok(RequestSummary {
        format,
        model,
        max_output_tokens: raw.output_cap,
        choices: raw.choices.unwrap_or(1).max(1),
        stream: raw.stream,
        include_usage: raw.options.include_usage,
        prompt_bytes: raw.prompt.bytes,
        media_parts: raw.prompt.media,
        has_tools: raw.has_tools,
        prompt_tokens,
        service_tier: raw.service_tier.unwrap_or_else(|| api.default_tier()),
        web_search: raw.web_search,
        usage_splice,
    })
}

/// The worst-case cost of a summarized request at `price` (see the module docs).
pub fn worst_case(
    req: &RequestSummary<'_>,
    price: &ModelPrice,
    cfg: &EstimateConfig,
) -> Result<Estimate, EstimateError> {
    worst_case_from(req, price, cfg, || price.dearest_rates())
}

/// [`worst_case`], with `dearest` giving [`ModelPrice::dearest_rates`] (which
/// [`crate::pricing::Prices::dearest`] keeps per price), asked only when the request lets the
/// provider choose its tier.
pub fn worst_case_from(
    req: &RequestSummary<'_>,
    price: &ModelPrice,
    cfg: &EstimateConfig,
    dearest: impl FnOnce() -> (ServiceTier, EffectiveRates),
) -> Result<Estimate, EstimateError> {
    let (tier, highest) = match req.service_tier {
        TierAsk::Auto => {
            let (tier, rates) = dearest();
            (tier, Some(rates))
        }
        TierAsk::Only(tier) => (tier, None),
    };
    let rates: EffectiveRates = match cfg.tier_policy {
        TierPolicy::Highest => highest.unwrap_or_else(|| price.max_rates_at(tier)),
        TierPolicy::AtEstimate => price.rates_at(req.prompt_tokens, tier),
    };
    // The prompt may be written to the cache, which bills above the input rate.
    let prompt_rate = rates
        .input
        .max(rates.cache_write_5m)
        .max(rates.cache_write_1h);
    let output_rate = rates.output.max(rates.reasoning);

    let embeds = !req.format.api().generates() || price.kind == ModelKind::Embedding;
    let per_choice = if embeds {
        0
    } else {
        // The request's own cap, whatever the book says: providers serve caps above a model's
        // usual limit (Anthropic's `output-128k` beta doubles claude-3-7-sonnet's 64k), so a
        // book value may only fill in when the request has none.
        match (req.max_output_tokens, price.max_output_tokens) {
            (Some(asked), _) => asked,
            (None, Some(model_max)) => model_max,
            (None, None) => cfg.default_max_output_tokens,
        }
    };
    let output_tokens = per_choice.saturating_mul(req.choices);

    let prompt_cost = Decimal::from(req.prompt_tokens).checked_mul(prompt_rate);
    let output_cost = Decimal::from(output_tokens).checked_mul(output_rate);
    let searches = match (req.web_search, price.tools.web_search) {
        (Some(ask), Some(fees)) => {
            let n = price
                .tools
                .web_searches_billed(ask.max_uses.unwrap_or(1).max(1));
            Decimal::from(n).checked_mul(fees.max())
        }
        _ => Some(Decimal::ZERO),
    };
    let cost = prompt_cost
        .zip(output_cost)
        .and_then(|(p, o)| p.checked_add(o))
        .zip(searches)
        .and_then(|(c, s)| c.checked_add(s))
        .ok_or(EstimateError::Overflow)?;
    Ok(Estimate {
        prompt_tokens: req.prompt_tokens,
        output_tokens,
        prompt_rate,
        output_rate,
        cost,
    })
}

fn wrong_type(field: &'static str, expected: &'static str) -> EstimateError {
    EstimateError::WrongType { field, expected }
}

// ---------------------------------------------------------------------------------------------
// The one-pass reader.

/// Generates `visit_*` methods that consume a JSON shape a field must not have and report it
/// as [`Field::WrongType`], so the caller can name the field in a typed error instead of
/// aborting the parse with a serde message.
macro_rules! wrong_type_for {
    ($($kind:ident),*) => { $( wrong_type_for!(@ $kind); )* };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Field::WrongType)
        }
    };
    (@ u64) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Field::WrongType)
        }
    };
    (@ i64) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Field::WrongType)
        }
    };
    (@ f64) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Field::WrongType)
        }
    };
    (@ str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Field::WrongType)
        }
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Field::WrongType)
        }
    };
    (@ map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Field::WrongType)
        }
    };
}

/// A value as read, before validation: validation happens after the pass so a wrong type
/// becomes a typed error naming the field.
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Value(T),
    WrongType,
}

/// A JSON number as read for a count.
#[derive(Debug, Clone, Copy)]
enum Count {
    Int(u64),
    Negative,
    Fraction,
}

impl Field<Count> {
    fn check(&self, field: &'static str, limit: u64) -> Result<Option<u64>, EstimateError> {
        match *self {
            Field::Absent | Field::Null => Ok(None),
            Field::Value(Count::Int(v)) if v > limit => Err(EstimateError::TooLarge {
                field,
                value: v,
                limit,
            }),
            Field::Value(Count::Int(v)) => Ok(Some(v)),
            Field::Value(Count::Negative) => Err(EstimateError::Negative(field)),
            Field::Value(Count::Fraction) | Field::WrongType => {
                Err(wrong_type(field, "an integer"))
            }
        }
    }
}

impl Field<bool> {
    fn check_bool(&self, field: &'static str) -> Result<bool, EstimateError> {
        match *self {
            Field::Absent | Field::Null => Ok(false),
            Field::Value(b) => Ok(b),
            Field::WrongType => Err(wrong_type(field, "a boolean")),
        }
    }
}

/// Everything one pass over the top-level object collects.
#[derive(Default)]
struct Raw<'a> {
    model: Field<Cow<'a, str>>,
    /// The largest output cap named.
    output_cap: Option<u64>,
    /// The largest choice count named.
    choices: Option<u64>,
    stream: bool,
    options: StreamOptions,
    prompt: PromptSize,
    has_tools: bool,
    service_tier: Option<TierAsk>,
    web_search: Option<WebSearchAsk>,
    /// Members that may appear once, already read (no API has more than a few).
    seen: [&'static str; 16],
    seen_len: usize,
    duplicate: Option<&'static str>,
    /// The first member with a value the estimate refuses.
    invalid: Option<EstimateError>,
}

impl Raw<'_> {
    fn refuse(&mut self, e: EstimateError) {
        self.invalid.get_or_insert(e);
    }

    /// Records a checked output cap or choice count: the largest stands.
    fn take_max(&mut self, count: &Field<Count>, name: &'static str, limit: u64, cap: bool) {
        match count.check(name, limit) {
            Ok(None) => {}
            Ok(Some(v)) => {
                let slot = if cap {
                    &mut self.output_cap
                } else {
                    &mut self.choices
                };
                *slot = Some(slot.map_or(v, |old| old.max(v)));
            }
            Err(e) => self.refuse(e),
        }
    }
}

/// Where `stream_options` sits in the body, for the include_usage rewrite.
#[derive(Default)]
struct StreamOptions {
    /// `include_usage: true` is set.
    include_usage: bool,
    /// The value's bytes (`null` or an object), when the member is there.
    value: Option<Span>,
    /// The last `include_usage` value inside it.
    flag: Option<Span>,
    /// The object has members.
    has_members: bool,
}

/// A byte range `[start, end)` of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// Where `part`, a slice of `whole` handed over by serde, sits in it.
    fn of(whole: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= whole.len()).then_some(Span { start, end })
    }
}

impl StreamOptions {
    /// The splice that sets `include_usage` to `true` in `body` (valid JSON, an object with at
    /// least the `stream` member).
    fn splice(&self, body: &[u8]) -> Splice {
        let insert = |at: usize, text| Splice {
            start: at,
            end: at,
            text,
        };
        match (self.value, self.flag) {
            // Absent: a first member, before the others.
            (None, _) => insert(
                body.iter().position(|&b| b == b'{').unwrap_or(0) + 1,
                br#""stream_options":{"include_usage":true},"#,
            ),
            (Some(_), Some(flag)) => Splice {
                start: flag.start,
                end: flag.end,
                text: b"true",
            },
            (Some(v), None) if body.get(v.start) == Some(&b'{') => insert(
                v.start + 1,
                if self.has_members {
                    br#""include_usage":true,"#
                } else {
                    br#""include_usage":true"#
                },
            ),
            // `null`.
            (Some(v), None) => Splice {
                start: v.start,
                end: v.end,
                text: br#"{"include_usage":true}"#,
            },
        }
    }
}

/// Deserializes an object key through `f`, without allocating when the key has no escapes.
struct KeySeed<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeySeed<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(KeyVisitor(self.0))
    }
}

struct KeyVisitor<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for KeyVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

struct TopVisitor<'a> {
    api: &'static dyn ProviderApi,
    body: &'a [u8],
}

impl<'de> Visitor<'de> for TopVisitor<'de> {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let api = self.api;
        let mut raw = Raw::default();
        while let Some(field) = map.next_key_seed(KeySeed(|k: &str| api.request_field(k)))? {
            if let Some(name) = field.once() {
                let seen = raw.seen.get(..raw.seen_len).unwrap_or_default();
                if seen.contains(&name) {
                    raw.duplicate.get_or_insert(name);
                } else if let Some(slot) = raw.seen.get_mut(raw.seen_len) {
                    *slot = name;
                    raw.seen_len += 1;
                }
            }
            match field {
                RequestField::Model => raw.model = map.next_value_seed(ModelSeed)?,
                RequestField::OutputCap(name) => {
                    let count = map.next_value_seed(CountSeed)?;
                    raw.take_max(&count, name, MAX_OUTPUT_TOKENS, true);
                }
                RequestField::Choices(name) => {
                    let count = map.next_value_seed(CountSeed)?;
                    raw.take_max(&count, name, MAX_CHOICES, false);
                }
                RequestField::Stream => match map.next_value_seed(BoolSeed)?.check_bool("stream") {
                    Ok(v) => raw.stream = v,
                    Err(e) => raw.refuse(e),
                },
                RequestField::StreamOptions => {
                    let value: &'de serde_json::value::RawValue = map.next_value()?;
                    read_stream_options(&mut raw, self.body, value.get().as_bytes())
                        .map_err(de::Error::custom)?;
                }
                RequestField::Config(name) => {
                    map.next_value_seed(ConfigSeed {
                        api,
                        name,
                        raw: &mut raw,
                    })?;
                }
                RequestField::Prompt => map.next_value_seed(SizeSeed(&mut raw.prompt))?,
                RequestField::Tools => {
                    // Kept as its bytes: sized like the prompt, and searched for web search.
                    let tools: &'de serde_json::value::RawValue = map.next_value()?;
                    let before = raw.prompt.bytes;
                    let mut sub = serde_json::Deserializer::from_slice(tools.get().as_bytes());
                    SizeSeed(&mut raw.prompt)
                        .deserialize(&mut sub)
                        .map_err(de::Error::custom)?;
                    // `[]`, `{}` and `null` declare nothing.
                    raw.has_tools |= raw.prompt.bytes.saturating_sub(before) > 4;
                    if let Some(ask) = web_search_tool(tools.get().as_bytes()) {
                        raw.web_search = Some(ask);
                    }
                }
                RequestField::ServiceTier => match map.next_value_seed(ModelSeed)? {
                    Field::Absent | Field::Null => {}
                    Field::Value(name) if name == "auto" => raw.service_tier = Some(TierAsk::Auto),
                    Field::Value(name) => {
                        raw.service_tier = Some(TierAsk::Only(ServiceTier::named(&name)));
                    }
                    Field::WrongType => raw.refuse(wrong_type("service_tier", "a string")),
                },
                RequestField::WebSearchOptions => {
                    let options: &'de serde_json::value::RawValue = map.next_value()?;
                    let o = options.get().as_bytes();
                    if o.first() == Some(&b'{') {
                        // Valid JSON (a RawValue): the scan cannot fail.
                        let [size] =
                            scan::find_members(o, ["search_context_size"]).unwrap_or_default();
                        raw.web_search = Some(WebSearchAsk {
                            context: search_context(size),
                            max_uses: None,
                        });
                    }
                }
                RequestField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// Reads `stream_options` (the bytes `value`, a slice of `body`): its `include_usage` flag
/// and where both sit, for the rewrite.
fn read_stream_options(raw: &mut Raw<'_>, body: &[u8], value: &[u8]) -> serde_json::Result<()> {
    let options = &mut raw.options;
    *options = StreamOptions {
        value: Span::of(body, value),
        ..StreamOptions::default()
    };
    match value.first() {
        Some(b'n') => return Ok(()),
        Some(b'{') => {}
        _ => {
            raw.refuse(wrong_type("stream_options", "an object"));
            return Ok(());
        }
    }
    let mut members = serde_json::Deserializer::from_slice(value);
    let (count, flag) = members.deserialize_map(OptionsVisitor)?;
    options.has_members = count > 0;
    if let Some(text) = flag {
        options.flag = Span::of(body, text);
        match serde_json::from_slice::<Option<bool>>(text) {
            Ok(v) => options.include_usage = v.unwrap_or(false),
            Err(_) => raw.refuse(wrong_type("stream_options.include_usage", "a boolean")),
        }
    }
    Ok(())
}

/// The search context size a `search_context_size` value token names.
fn search_context(token: Option<&[u8]>) -> SearchContext {
    token
        .and_then(scan::unquote_str)
        .map(|name| SearchContext::named(&name))
        .unwrap_or_default()
}

/// The web search a `tools` array enables: an entry whose `type` starts with `web_search`
/// (OpenAI `web_search`, `web_search_preview`; Anthropic `web_search_20250305`), or a Gemini
/// entry with `googleSearch` / `google_search` / `googleSearchRetrieval`. Malformed entries
/// enable nothing (the body was already checked to be JSON).
fn web_search_tool(tools: &[u8]) -> Option<WebSearchAsk> {
    let mut found = None;
    let walked = scan::for_each_element(tools, |entry| {
        let [ty, size, max_uses, g1, g2, g3] = scan::find_members(
            entry,
            [
                "type",
                "search_context_size",
                "max_uses",
                "googleSearch",
                "google_search",
                "googleSearchRetrieval",
            ],
        )?;
        let searches = ty
            .and_then(scan::unquote)
            .is_some_and(|t| t.starts_with(b"web_search"));
        if searches || g1.or(g2).or(g3).is_some() {
            found = Some(WebSearchAsk {
                context: search_context(size),
                max_uses: max_uses.and_then(|m| std::str::from_utf8(m).ok()?.parse().ok()),
            });
        }
        Ok::<_, scan::ScanError>(())
    });
    walked.ok().and(found)
}

/// Reads `model`: a string, borrowed when it has no escapes.
struct ModelSeed;

impl<'de> DeserializeSeed<'de> for ModelSeed {
    type Value = Field<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ModelVisitor)
    }
}

struct ModelVisitor;

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = Field<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a model name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Value(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Value(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    wrong_type_for!(bool, u64, i64, f64, seq, map);
}

/// Reads a token or choice count.
struct CountSeed;

impl<'de> DeserializeSeed<'de> for CountSeed {
    type Value = Field<Count>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Field<Count>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Value(Count::Int(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Value(match u64::try_from(v) {
            Ok(v) => Count::Int(v),
            Err(_) => Count::Negative,
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // `100.0` is an integer written as a float, which some clients send.
        Ok(Field::Value(if v < 0.0 {
            Count::Negative
        } else if !v.is_finite() || v.fract() != 0.0 {
            Count::Fraction
        } else {
            // Saturating cast: anything past u64 is refused as too large anyway.
            Count::Int(v as u64)
        }))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    wrong_type_for!(bool, str, seq, map);
}

/// Reads a boolean flag.
struct BoolSeed;

impl<'de> DeserializeSeed<'de> for BoolSeed {
    type Value = Field<bool>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Field<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Value(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    wrong_type_for!(u64, i64, f64, str, seq, map);
}

/// Counts the members of `stream_options` and keeps the bytes of its last `include_usage`
/// (the one a provider keeps).
struct OptionsVisitor;

impl<'de> Visitor<'de> for OptionsVisitor {
    type Value = (usize, Option<&'de [u8]>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream options")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut count, mut flag) = (0, None);
        while let Some(is_flag) = map.next_key_seed(KeySeed(|k: &str| k == "include_usage"))? {
            count += 1;
            if is_flag {
                let v: &'de serde_json::value::RawValue = map.next_value()?;
                flag = Some(v.get().as_bytes());
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((count, flag))
    }
}

/// Reads a config object (Gemini's `generationConfig`), whose members the API names.
struct ConfigSeed<'r, 'a> {
    api: &'static dyn ProviderApi,
    name: &'static str,
    raw: &'r mut Raw<'a>,
}

impl<'de> DeserializeSeed<'de> for ConfigSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ConfigSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a config object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let api = self.api;
        while let Some(field) = map.next_key_seed(KeySeed(|k: &str| api.config_field(k)))? {
            match field {
                RequestField::OutputCap(name) => {
                    let count = map.next_value_seed(CountSeed)?;
                    self.raw.take_max(&count, name, MAX_OUTPUT_TOKENS, true);
                }
                RequestField::Choices(name) => {
                    let count = map.next_value_seed(CountSeed)?;
                    self.raw.take_max(&count, name, MAX_CHOICES, false);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.wrong();
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.wrong();
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.wrong();
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.wrong();
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.wrong();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.wrong();
        Ok(())
    }
}

impl ConfigSeed<'_, '_> {
    fn wrong(self) {
        self.raw.refuse(wrong_type(self.name, "an object"));
    }
}

/// The size of the prompt-bearing fields, summed over every such field of the body.
#[derive(Debug, Default, Clone, Copy)]
struct PromptSize {
    /// Compact-JSON bytes: strings (decoded) with their quotes, keys with quotes and colon,
    /// numbers, literals, brackets and commas.
    bytes: u64,
    /// Objects that carry an image, audio or file.
    media: u64,
}

/// Walks one JSON value of any shape and adds its size to the counter; allocates nothing.
/// Depth is bounded by serde_json's recursion limit (128).
struct SizeSeed<'c>(&'c mut PromptSize);

impl<'de> DeserializeSeed<'de> for SizeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(SizeVisitor(self.0))
    }
}

struct SizeVisitor<'c>(&'c mut PromptSize);

impl SizeVisitor<'_> {
    fn add(&mut self, n: u64) {
        self.0.bytes = self.0.bytes.saturating_add(n);
    }
}

/// Keys whose object is an image, audio or file part: OpenAI chat `image_url`,
/// `input_audio`, `file`; Responses `input_image` / `input_file` (`image_url`, `file_id`,
/// `file_data`, `file_url`); Anthropic `image` / `document` (`source`); Gemini `inline_data`
/// and `file_data` in either casing. A false positive (a tool parameter named `source`)
/// only raises the estimate.
fn is_media_key(k: &str) -> bool {
    matches!(
        k,
        "image_url"
            | "input_audio"
            | "file"
            | "file_id"
            | "file_data"
            | "file_url"
            | "source"
            | "inline_data"
            | "inlineData"
            | "fileData"
    )
}

/// Decimal digits of `v` (at least 1).
fn digits(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Counts the bytes `Display` writes, without allocating.
struct ByteCount(u64);

impl fmt::Write for ByteCount {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len() as u64);
        Ok(())
    }
}

impl<'de> Visitor<'de> for SizeVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.add(if v { 4 } else { 5 });
        Ok(())
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.add(digits(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.add(digits(v.unsigned_abs()).saturating_add(u64::from(v < 0)));
        Ok(())
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        let mut c = ByteCount(0);
        // Writing to a counter cannot fail.
        let _ = fmt::write(&mut c, format_args!("{v}"));
        self.add(c.0);
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.add((v.len() as u64).saturating_add(2));
        Ok(())
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.add(4);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.add(2);
        let mut first = true;
        while seq.next_element_seed(SizeSeed(&mut *self.0))?.is_some() {
            if !first {
                self.add(1);
            }
            first = false;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.add(2);
        let mut media = false;
        let mut first = true;
        while let Some((len, is_media)) =
            map.next_key_seed(KeySeed(|k: &str| (k.len() as u64, is_media_key(k))))?
        {
            // `"key":`, plus a comma before every entry but the first.
            self.add(len.saturating_add(if first { 3 } else { 4 }));
            first = false;
            media |= is_media;
            map.next_value_seed(SizeSeed(&mut *self.0))?;
        }
        if media {
            self.0.media = self.0.media.saturating_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::ThresholdTier;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn cfg() -> EstimateConfig {
        EstimateConfig::default()
    }

    fn sum(body: &str, format: ApiFormat) -> Result<RequestSummary<'_>, EstimateError> {
        summarize(body.as_bytes(), format, None, &cfg())
    }

    /// The compact-JSON size of a value, which `prompt_bytes` must equal for ASCII text
    /// without escapes.
    fn compact_len(json: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        serde_json::to_string(&v).unwrap().len() as u64
    }

    #[test]
    fn openai_chat() {
        let messages = r#"[{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "What is 2+2? Answer 1.5e3 or -7."}]"#;
        let body = format!(
            r#"{{"model": "gpt-4o", "messages": {messages}, "max_tokens": 256,
                 "temperature": 0.2, "stream": true, "stream_options": {{"include_usage": true}},
                 "metadata": {{"a": [1, 2, {{"b": null}}]}}}}"#
        );
        let s = sum(&body, ApiFormat::OpenAiChat).unwrap();
        assert_eq!(s.model, "gpt-4o");
        assert!(matches!(s.model, Cow::Borrowed(_)));
        assert_eq!(s.max_output_tokens, Some(256));
        assert_eq!(s.choices, 1);
        assert!(s.stream && s.include_usage);
        assert_eq!(s.prompt_bytes, compact_len(messages));
        assert_eq!(s.prompt_tokens, s.prompt_bytes.div_ceil(3));
        assert_eq!((s.media_parts, s.has_tools), (0, false));
    }

    #[test]
    fn openai_chat_caps_and_choices() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<u64>, u64)] = &[
            (r#"{"model":"o3","max_completion_tokens":1000}"#, Some(1000), 1),
            (r#"{"model":"o3","max_tokens":10,"max_completion_tokens":1000}"#, Some(1000), 1),
            (r#"{"model":"o3","max_tokens":2000,"max_completion_tokens":1000}"#, Some(2000), 1),
            (r#"{"model":"o3","max_tokens":null,"n":3}"#, None, 3),
            (r#"{"model":"davinci-002","prompt":"hi","max_tokens":16,"n":2,"best_of":5}"#, Some(16), 5),
            (r#"{"model":"o3","n":0}"#, None, 1),
            (r#"{"model":"o3","max_tokens":100.0}"#, Some(100), 1),
            // Fields of other formats are ignored.
            (r#"{"model":"o3","max_output_tokens":"x","generationConfig":5}"#, None, 1),
        ];
        for &(body, cap, choices) in cases {
            let s = sum(body, ApiFormat::OpenAiChat).unwrap();
            assert_eq!((s.max_output_tokens, s.choices), (cap, choices), "{body}");
        }
    }

    #[test]
    fn openai_responses() {
        let body = r#"{"model":"gpt-5","instructions":"Answer in French.",
            "input":[{"role":"user","content":[{"type":"input_text","text":"Bonjour"},
                {"type":"input_image","image_url":"https://example.com/cat.png"}]}],
            "max_output_tokens":4096,"stream":true,"max_tokens":"ignored here"}"#;
        let s = sum(body, ApiFormat::OpenAiResponses).unwrap();
        assert_eq!(s.max_output_tokens, Some(4096));
        assert!(s.stream && !s.include_usage);
        assert_eq!(s.media_parts, 1);
        assert_eq!(
            s.prompt_bytes,
            compact_len(r#""Answer in French.""#)
                + compact_len(
                    r#"[{"role":"user","content":[{"type":"input_text","text":"Bonjour"},
                    {"type":"input_image","image_url":"https://example.com/cat.png"}]}]"#
                )
        );
        assert_eq!(s.prompt_tokens, s.prompt_bytes.div_ceil(3) + 2_000);
    }

    #[test]
    fn anthropic_messages() {
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are terse.",
            "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object",
                "properties":{"city":{"type":"string"}}}}],
            "messages":[{"role":"user","content":[
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
                {"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}},
                {"type":"text","text":"Describe both."}]}],
            "thinking":{"type":"enabled","budget_tokens":512}}"#;
        let s = sum(body, ApiFormat::AnthropicMessages).unwrap();
        assert_eq!(s.max_output_tokens, Some(1024));
        assert!(!s.stream);
        assert_eq!(s.media_parts, 2);
        assert!(s.has_tools);
        assert_eq!(
            s.prompt_tokens,
            s.prompt_bytes.div_ceil(3) + 2 * 2_000 + TOOL_PROMPT_TOKENS
        );
    }

    #[test]
    fn gemini_takes_the_model_from_the_path() {
        let body = r#"{"contents":[{"role":"user","parts":[{"text":"Hi"},
                {"inlineData":{"mimeType":"image/jpeg","data":"/9j/4AAQ"}}]}],
            "systemInstruction":{"parts":[{"text":"Be nice"}]},
            "generationConfig":{"temperature":0.5,"maxOutputTokens":512,"candidateCount":2}}"#;
        let s = summarize(
            body.as_bytes(),
            ApiFormat::GeminiGenerateContent,
            Some("gemini-2.5-pro"),
            &cfg(),
        )
        .unwrap();
        assert_eq!(s.model, "gemini-2.5-pro");
        assert_eq!((s.max_output_tokens, s.choices), (Some(512), 2));
        assert_eq!(s.media_parts, 1);
        // The proto's snake_case names work too.
        let body = r#"{"contents":[],"generation_config":{"max_output_tokens":64}}"#;
        let s = summarize(
            body.as_bytes(),
            ApiFormat::GeminiGenerateContent,
            Some("gemini-2.5-flash"),
            &cfg(),
        )
        .unwrap();
        assert_eq!(s.max_output_tokens, Some(64));
        // The path names the model Google runs; a `model` in the body (which Gemini ignores)
        // must not price the request as a cheaper one.
        let cheaper = r#"{"model":"gemini-2.0-flash-lite","contents":[]}"#;
        let s = summarize(
            cheaper.as_bytes(),
            ApiFormat::GeminiGenerateContent,
            Some("gemini-2.5-pro"),
            &cfg(),
        )
        .unwrap();
        assert_eq!(s.model, "gemini-2.5-pro");
        // Without a path model there is no model.
        assert_eq!(
            sum(body, ApiFormat::GeminiGenerateContent),
            Err(EstimateError::MissingModel)
        );
    }

    #[test]
    fn embeddings_token_arrays_count() {
        let s = sum(
            r#"{"model":"text-embedding-3-small","input":[[1234,5678,9],"plain text"]}"#,
            ApiFormat::OpenAiEmbeddings,
        )
        .unwrap();
        assert_eq!(s.max_output_tokens, None);
        assert_eq!(
            s.prompt_bytes,
            compact_len(r#"[[1234,5678,9],"plain text"]"#)
        );
    }

    #[test]
    fn escaped_model_is_decoded() {
        let s = sum(r#"{"model":"gpt\u002d4o"}"#, ApiFormat::OpenAiChat).unwrap();
        assert_eq!(s.model, "gpt-4o");
        assert!(matches!(s.model, Cow::Owned(_)));
    }

    #[test]
    fn bad_input() {
        use EstimateError as E;
        let chat = ApiFormat::OpenAiChat;
        let int = |field| E::WrongType {
            field,
            expected: "an integer",
        };
        let big = |field, value, limit| E::TooLarge {
            field,
            value,
            limit,
        };
        let malformed = E::MalformedJson(String::new());
        #[rustfmt::skip]
        let cases: &[(&str, ApiFormat, E)] = &[
            (r#"{"model":"x","#, chat, malformed.clone()),
            (r#"{"model":"x"} trailing"#, chat, malformed.clone()),
            ("", chat, malformed.clone()),
            ("   ", chat, malformed.clone()),
            ("nope", chat, malformed.clone()),
            (r#"["model","x"]"#, chat, E::NotAnObject),
            ("42", chat, E::NotAnObject),
            (r#"{"messages":[]}"#, chat, E::MissingModel),
            (r#"{"model":""}"#, chat, E::MissingModel),
            (r#"{"model":null}"#, chat, E::MissingModel),
            (r#"{"model":5}"#, chat, E::WrongType { field: "model", expected: "a string" }),
            (r#"{"model":["a"]}"#, chat, E::WrongType { field: "model", expected: "a string" }),
            (r#"{"model":"x","max_tokens":-1}"#, chat, E::Negative("max_tokens")),
            (r#"{"model":"x","max_tokens":-1.5}"#, chat, E::Negative("max_tokens")),
            (r#"{"model":"x","max_tokens":10.5}"#, chat, int("max_tokens")),
            (r#"{"model":"x","max_tokens":"100"}"#, chat, int("max_tokens")),
            (r#"{"model":"x","max_tokens":{"a":1}}"#, chat, int("max_tokens")),
            (r#"{"model":"x","max_tokens":100000001}"#, chat, big("max_tokens", 100_000_001, MAX_OUTPUT_TOKENS)),
            (r#"{"model":"x","max_tokens":1e30}"#, chat, big("max_tokens", u64::MAX, MAX_OUTPUT_TOKENS)),
            (r#"{"model":"x","max_tokens":99999999999999999999999}"#, chat, big("max_tokens", u64::MAX, MAX_OUTPUT_TOKENS)),
            (r#"{"model":"x","max_completion_tokens":-5}"#, chat, E::Negative("max_completion_tokens")),
            (r#"{"model":"x","n":129}"#, chat, big("n", 129, MAX_CHOICES)),
            (r#"{"model":"x","stream":"yes"}"#, chat, E::WrongType { field: "stream", expected: "a boolean" }),
            (r#"{"model":"x","stream_options":true}"#, chat, E::WrongType { field: "stream_options", expected: "an object" }),
            (r#"{"model":"x","stream_options":{"include_usage":1}}"#, chat, E::WrongType { field: "stream_options.include_usage", expected: "a boolean" }),
            (r#"{"model":"a","model":"b"}"#, chat, E::DuplicateField("model")),
            (r#"{"model":"a","max_tokens":1,"max_tokens":99}"#, chat, E::DuplicateField("max_tokens")),
            (r#"{"model":"a","stream_options":null,"stream_options":{}}"#, chat, E::DuplicateField("stream_options")),
            (r#"{"model":"x","max_output_tokens":-1}"#, ApiFormat::OpenAiResponses, E::Negative("max_output_tokens")),
            (r#"{"model":"x","max_tokens":1.0e9}"#, ApiFormat::AnthropicMessages, big("max_tokens", 1_000_000_000, MAX_OUTPUT_TOKENS)),
            (r#"{"model":"x","generationConfig":[]}"#, ApiFormat::GeminiGenerateContent, E::WrongType { field: "generationConfig", expected: "an object" }),
            (r#"{"model":"x","generationConfig":{"maxOutputTokens":-3}}"#, ApiFormat::GeminiGenerateContent, E::Negative("generationConfig.maxOutputTokens")),
        ];
        for (body, format, want) in cases {
            let got = sum(body, *format).unwrap_err();
            match (want, &got) {
                (E::MalformedJson(_), E::MalformedJson(msg)) => assert!(!msg.is_empty()),
                _ => assert_eq!(&got, want, "{body}"),
            }
            // Every error has a message naming what is wrong.
            assert!(!got.to_string().is_empty());
        }
        let e = sum(r#"{"model":5}"#, chat).unwrap_err();
        assert_eq!(e.to_string(), "field `model` must be a string");
    }

    #[test]
    fn body_too_large() {
        let small = EstimateConfig {
            max_body_bytes: 16,
            ..cfg()
        };
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        assert_eq!(
            summarize(body, ApiFormat::OpenAiChat, None, &small),
            Err(EstimateError::BodyTooLarge {
                size: body.len(),
                limit: 16
            })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = format!(
            r#"{{"model":"x","messages":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            sum(&body, ApiFormat::OpenAiChat),
            Err(EstimateError::MalformedJson(_))
        ));
        assert!(matches!(
            include_usage_rewrite(body.as_bytes()),
            Err(EstimateError::MalformedJson(_))
        ));
    }

    #[test]
    fn bytes_over_three_is_above_four_chars_per_token_for_english() {
        // OpenAI's rule of thumb is ~4 characters per English token; the estimate must sit
        // above chars/4 by a margin even before counting JSON syntax.
        let text =
            "The quick brown fox jumps over the lazy dog near the riverbank at dawn. ".repeat(20);
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        let s = sum(&body, ApiFormat::OpenAiChat).unwrap();
        let rule_of_thumb = (text.len() as u64).div_ceil(4);
        assert!(
            s.prompt_tokens * 3 >= rule_of_thumb * 4,
            "{} vs {}",
            s.prompt_tokens,
            rule_of_thumb
        );
    }

    fn price(input: &str, output: &str, max_out: Option<u64>) -> ModelPrice {
        ModelPrice {
            max_output_tokens: max_out,
            ..ModelPrice::flat(d(input), d(output))
        }
    }

    fn summary(
        prompt_tokens: u64,
        cap: Option<u64>,
        choices: u64,
        format: ApiFormat,
    ) -> RequestSummary<'static> {
        RequestSummary {
            format,
            model: Cow::Borrowed("m"),
            max_output_tokens: cap,
            choices,
            stream: false,
            include_usage: false,
            prompt_bytes: prompt_tokens * 3,
            media_parts: 0,
            has_tools: false,
            prompt_tokens,
            service_tier: TierAsk::Auto,
            web_search: None,
            usage_splice: None,
        }
    }

    /// The reservation takes the tier the request asks for, the dearest one when it lets the
    /// provider choose, and the dearest search fee for every search it allows.
    #[test]
    fn tiers_and_web_search_in_the_reservation() {
        use crate::pricing::{SearchFees, ToolFees};
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let mut price = ModelPrice::flat(d("0.000001"), d("0.000002"));
        use crate::test_support::tier;
        price
            .service_tiers
            .insert(ServiceTier::Priority, tier("0.000002", Some("0.000004")));
        price
            .service_tiers
            .insert(ServiceTier::Flex, tier("0.0000005", None));
        price.tools = ToolFees {
            web_search: Some(SearchFees {
                low: d("0.025"),
                medium: d("0.0275"),
                high: d("0.03"),
            }),
            web_search_per_prompt: false,
        };
        let cfg = cfg();
        let read = |body: &str, format| {
            let s = summarize(body.as_bytes(), format, None, &cfg).unwrap();
            (s.service_tier, s.web_search)
        };
        let chat = ApiFormat::OpenAiChat;
        let base = r#""model":"m","messages":[],"max_tokens":1000"#;
        let cost = |body: &str, format| {
            let s = summarize(body.as_bytes(), format, None, &cfg).unwrap();
            worst_case(&s, &price, &cfg).unwrap().cost
        };

        assert_eq!(
            read(&format!("{{{base}}}"), chat).0,
            TierAsk::Auto,
            "absent is auto"
        );
        let priority = cost(&format!("{{{base},\"service_tier\":\"priority\"}}"), chat);
        assert_eq!(
            cost(&format!("{{{base}}}"), chat),
            priority,
            "auto: the dearest"
        );
        let default = cost(&format!("{{{base},\"service_tier\":\"default\"}}"), chat);
        let flex = cost(&format!("{{{base},\"service_tier\":\"flex\"}}"), chat);
        assert!(
            flex < default && default < priority,
            "{flex} {default} {priority}"
        );
        let anthropic = ApiFormat::AnthropicMessages;
        let only = read(
            &format!("{{{base},\"service_tier\":\"standard_only\"}}"),
            anthropic,
        );
        assert_eq!(only.0, TierAsk::Only(ServiceTier::Standard));
        assert!(summarize(br#"{"model":"m","service_tier":5}"#, chat, None, &cfg).is_err());

        // web search: chat options, Responses and Anthropic tools, Gemini grounding
        let with = format!(
            "{{{base},\"service_tier\":\"default\",\"web_search_options\":{{\"search_context_size\":\"low\"}}}}"
        );
        let ask = read(&with, chat).1.unwrap();
        assert_eq!((ask.context, ask.max_uses), (SearchContext::Low, None));
        assert_eq!(
            cost(&with, chat),
            default + d("0.03"),
            "one search at the dearest fee"
        );
        let tools = r#"{"model":"m","input":"q","tools":[{"type":"function","name":"f"},
            {"type":"web_search_preview","search_context_size":"high"}]}"#;
        let ask = read(tools, ApiFormat::OpenAiResponses).1.unwrap();
        assert_eq!(ask.context, SearchContext::High);
        let claude = r#"{"model":"m","max_tokens":10,"messages":[],
            "tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]}"#;
        let ask = read(claude, anthropic).1.unwrap();
        assert_eq!(ask.max_uses, Some(5));
        let gemini = r#"{"contents":[],"tools":[{"googleSearch":{}}]}"#;
        let s = summarize(
            gemini.as_bytes(),
            ApiFormat::GeminiGenerateContent,
            Some("g"),
            &cfg,
        );
        assert!(s.unwrap().web_search.is_some());
        let plain =
            r#"{"model":"m","input":"q","tools":[{"type":"function","name":"web_search"}]}"#;
        assert_eq!(read(plain, ApiFormat::OpenAiResponses).1, None);
    }

    #[test]
    fn worst_case_table() {
        let chat = ApiFormat::OpenAiChat;
        // $2.50 / $10 per 1M tokens.
        let p = price("0.0000025", "0.00001", Some(16_384));
        let cases: &[(RequestSummary<'_>, &ModelPrice, u64, &str)] = &[
            // 1000 × 2.5e-6 + 256 × 1e-5
            (summary(1000, Some(256), 1, chat), &p, 256, "0.00506"),
            // A cap above the book's is the request's own: the provider may serve it (a beta
            // header, a newer revision), so the reservation must cover it.
            // 1000 × 2.5e-6 + 1,000,000 × 1e-5
            (
                summary(1000, Some(1_000_000), 1, chat),
                &p,
                1_000_000,
                "10.0025",
            ),
            // No cap: the model's maximum.
            (summary(1000, None, 1, chat), &p, 16_384, "0.16634"),
            // Three choices.
            (summary(1000, Some(256), 3, chat), &p, 768, "0.01018"),
            // Embeddings have no output.
            (
                summary(1000, Some(256), 1, ApiFormat::OpenAiEmbeddings),
                &p,
                0,
                "0.0025",
            ),
        ];
        for (req, price, out, cost) in cases {
            let e = worst_case(req, price, &cfg()).unwrap();
            assert_eq!(e.output_tokens, *out);
            assert_eq!(e.cost, d(cost), "{req:?}");
        }
        // Neither request nor price book bounds output: the configured default.
        let unknown = price_no_max();
        let e = worst_case(&summary(0, None, 1, chat), &unknown, &cfg()).unwrap();
        assert_eq!(e.output_tokens, 32_768);
        let c = EstimateConfig {
            default_max_output_tokens: 100,
            ..cfg()
        };
        assert_eq!(
            worst_case(&summary(0, None, 1, chat), &unknown, &c)
                .unwrap()
                .output_tokens,
            100
        );
    }

    fn price_no_max() -> ModelPrice {
        price("0.000001", "0.000002", None)
    }

    #[test]
    fn worst_case_uses_the_dearest_prompt_and_output_rates() {
        let mut p = ModelPrice {
            rates: crate::test_support::claude_rates(),
            ..ModelPrice::default()
        };
        let req = summary(100, Some(10), 1, ApiFormat::AnthropicMessages);
        let e = worst_case(&req, &p, &cfg()).unwrap();
        assert_eq!(e.prompt_rate, d("0.000006"));
        assert_eq!(e.output_rate, d("0.000015"));
        p.rates.reasoning = Some(d("0.00006"));
        let e = worst_case(&req, &p, &cfg()).unwrap();
        assert_eq!(e.output_rate, d("0.00006"));
        assert_eq!(e.cost, d("0.0012"));
    }

    #[test]
    fn tier_policy() {
        // Gemini-2.5-Pro-like: doubled rates above 200k prompt tokens.
        let p = ModelPrice {
            tiers: vec![ThresholdTier {
                above_prompt_tokens: 200_000,
                inclusive: false,
                input: d("0.0000025"),
                output: Some(d("0.000015")),
                cache_read: None,
                cache_write_5m: None,
                cache_write_1h: None,
            }],
            ..price("0.00000125", "0.00001", Some(65_536))
        };
        let small = summary(1_000, Some(100), 1, ApiFormat::GeminiGenerateContent);
        let highest = worst_case(&small, &p, &cfg()).unwrap();
        assert_eq!(
            (highest.prompt_rate, highest.output_rate),
            (d("0.0000025"), d("0.000015"))
        );
        let at = EstimateConfig {
            tier_policy: TierPolicy::AtEstimate,
            ..cfg()
        };
        let tight = worst_case(&small, &p, &at).unwrap();
        assert_eq!(
            (tight.prompt_rate, tight.output_rate),
            (d("0.00000125"), d("0.00001"))
        );
        let big = summary(250_000, Some(100), 1, ApiFormat::GeminiGenerateContent);
        assert_eq!(
            worst_case(&big, &p, &at).unwrap().prompt_rate,
            d("0.0000025")
        );
    }

    #[test]
    fn worst_case_overflow_is_an_error() {
        let p = price("1", "79228162514264337593543950335", None);
        let req = summary(
            1,
            Some(MAX_OUTPUT_TOKENS),
            MAX_CHOICES,
            ApiFormat::OpenAiChat,
        );
        assert_eq!(worst_case(&req, &p, &cfg()), Err(EstimateError::Overflow));
    }

    /// The rewrite of a chat body, read once as the filter does.
    fn include_usage_rewrite(body: &[u8]) -> Result<Option<Vec<u8>>, EstimateError> {
        Ok(summarize(body, ApiFormat::OpenAiChat, Some("m"), &cfg())?.usage_rewrite(body))
    }

    fn rewrite(body: &str) -> Option<String> {
        include_usage_rewrite(body.as_bytes())
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn include_usage_rewrites() {
        let cases: &[(&str, Option<&str>)] = &[
            // Not streaming: untouched (OpenAI refuses stream_options then).
            (r#"{"model":"m","messages":[]}"#, None),
            (r#"{"model":"m","stream":false}"#, None),
            (r#"{"model":"m","stream":null}"#, None),
            // Already asked for.
            (r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#, None),
            // Inserted as the first member, whitespace kept.
            (
                " {\"model\": \"m\", \"stream\": true }\n",
                Some(" {\"stream_options\":{\"include_usage\":true},\"model\": \"m\", \"stream\": true }\n"),
            ),
            (
                r#"{"stream":true,"model":"m","seed":123456789012345678901234,"t":1.50}"#,
                Some(r#"{"stream_options":{"include_usage":true},"stream":true,"model":"m","seed":123456789012345678901234,"t":1.50}"#),
            ),
            // null options replaced.
            (
                r#"{"stream":true,"stream_options":null,"model":"m"}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true},"model":"m"}"#),
            ),
            // Empty and non-empty options objects.
            (
                r#"{"stream":true,"stream_options":{ }}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true }}"#),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#),
            ),
            // false replaced in place.
            (
                r#"{"stream":true,"stream_options":{"include_usage": false, "x":1}}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage": true, "x":1}}"#),
            ),
            // Escaped keys are recognised; strings containing braces and quotes are skipped.
            (
                r#"{"messages":[{"content":"a \"}\" {"}],"str\u0065am":true}"#,
                Some(r#"{"stream_options":{"include_usage":true},"messages":[{"content":"a \"}\" {"}],"str\u0065am":true}"#),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(rewrite(body).as_deref(), *want, "{body}");
            if let Some(out) = want {
                let s = sum(out, ApiFormat::OpenAiChat);
                assert!(s.is_err() || s.unwrap().include_usage, "{out}");
            }
        }
    }

    #[test]
    fn include_usage_rewrite_errors() {
        use EstimateError as E;
        assert!(matches!(
            include_usage_rewrite(b"{"),
            Err(E::MalformedJson(_))
        ));
        assert_eq!(include_usage_rewrite(b"[1]"), Err(E::NotAnObject));
        assert_eq!(
            include_usage_rewrite(br#"{"stream":true,"stream_options":"yes"}"#),
            Err(wrong_type("stream_options", "an object"))
        );
        assert_eq!(
            include_usage_rewrite(br#"{"stream":true,"stream":false}"#),
            Err(E::DuplicateField("stream"))
        );
    }

    proptest! {
        /// No input makes the reader or the rewrite panic.
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            for format in [ApiFormat::OpenAiChat, ApiFormat::OpenAiResponses,
                ApiFormat::OpenAiEmbeddings, ApiFormat::AnthropicMessages,
                ApiFormat::GeminiGenerateContent] {
                let _ = summarize(&body, format, Some("m"), &cfg());
            }
            let _ = include_usage_rewrite(&body);
        }

        /// On JSON-shaped text built from the fields the reader looks at, it never panics, and
        /// the rewrite keeps every other member while turning usage on.
        #[test]
        fn rewrite_keeps_everything_else(
            members in proptest::collection::vec((
                prop::sample::select(&["model", "stream", "stream_options", "messages", "n",
                    "max_tokens", "x", "str\\u0065am"][..]),
                prop::sample::select(&["true", "false", "null", "1", "-2.5", "\"s\"", "[]",
                    "{}", "{\"include_usage\":false}", "{\"include_usage\":true,\"a\":[1]}",
                    "[{\"a\":\"}\"}]"][..]),
            ), 0..6),
            spaces in prop::sample::select(&["", " ", "\n  "][..]),
        ) {
            let body = format!("{{{}}}", members
                .iter()
                .map(|(k, v)| format!("{spaces}\"{k}\"{spaces}:{spaces}{v}{spaces}"))
                .collect::<Vec<_>>()
                .join(","));
            let _ = summarize(body.as_bytes(), ApiFormat::OpenAiChat, None, &cfg());
            if let Ok(Some(out)) = include_usage_rewrite(body.as_bytes()) {
                let before: serde_json::Value = serde_json::from_str(&body).unwrap();
                let mut after: serde_json::Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(&after["stream_options"]["include_usage"], &serde_json::json!(true));
                // Everything but stream_options.include_usage is unchanged.
                let mut before = before;
                for v in [&mut before, &mut after] {
                    let obj = v.as_object_mut().unwrap();
                    if let Some(o) = obj.get_mut("stream_options").and_then(|o| o.as_object_mut()) {
                        o.remove("include_usage");
                        if o.is_empty() {
                            obj.remove("stream_options");
                        }
                    } else if obj.get("stream_options").is_some_and(|o| o.is_null()) {
                        obj.remove("stream_options");
                    }
                }
                prop_assert_eq!(before, after);
            }
        }
    }
}
