//! Prices: per-model USD-per-token rates, long-context tiers, range tables and model lookup.
//!
//! Rates are `Decimal` USD per token. The API accepts them per 1M tokens ([`per_million`]) and
//! refuses rates that look off by 10⁶ ([`check_per_million`]). A [`PriceBook`] is what the
//! control plane serves in the snapshot and what the LiteLLM importer ([`litellm`]) produces.
//!
//! Tier semantics follow LiteLLM's `generic_cost_per_token` so our costs equal its numbers:
//! a threshold tier applies when the prompt (cached tokens included) exceeds its threshold and
//! then every rate it defines applies to the whole request; the highest crossed tier wins.
//! A range table picks the row with `from < prompt <= to` (or the last row past the end) and
//! bills the whole request at that row.
//!
//! Beyond tokens of text: a [`ServiceTier`] other than standard replaces the rates its entry in
//! [`ModelPrice::service_tiers`] names ([`ModelPrice::rates_at`]); audio and image
//! tokens have [`ModalityRates`]; provider-run tools bill per call ([`ToolFees`]).
//!
//! A token kind the provider bills is never priced at zero because the book lacks its rate:
//! a missing cache-read or 5-minute cache-write rate falls back to the input rate, a missing
//! 1-hour write rate to the 5-minute one, a missing input audio rate to the input rate (the
//! resolutions LiteLLM's `calculate_prompt_caching_savings` uses; its cost path bills them
//! zero). [`crate::cost::priced`] says which fallbacks a usage leaned on.

pub mod litellm;
mod lookup;

pub use lookup::{strip_snapshot_date, Memoized, PriceMemo, Prices};

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What kind of endpoint a model is priced for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Chat Completions / Messages / generateContent.
    #[default]
    Chat,
    /// Legacy text completions.
    Completion,
    /// OpenAI Responses API.
    Responses,
    /// Embeddings: no output tokens.
    Embedding,
}

/// The base per-token rates of a model. Optional rates are absent when the book has none for
/// that kind of token; see the module doc for what an absent rate bills at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Uncached prompt tokens.
    pub input: Decimal,
    /// Completion tokens (reasoning too, unless `reasoning` is set).
    pub output: Decimal,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<Decimal>,
    /// Prompt tokens written to a 5-minute cache entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<Decimal>,
    /// Prompt tokens written to a 1-hour cache entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<Decimal>,
    /// Reasoning tokens, where they are priced apart from other output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Decimal>,
}

/// A long-context tier: above `above_prompt_tokens` prompt tokens the rates it names replace
/// the base rates for the whole request. Rates it leaves out keep their base value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ThresholdTier {
    /// The tier applies when the prompt has more tokens than this.
    pub above_prompt_tokens: u64,
    /// Also apply at exactly `above_prompt_tokens` (xAI bills that way).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inclusive: bool,
    /// Input rate in this tier.
    pub input: Decimal,
    /// Output rate in this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Decimal>,
    /// Cache read rate in this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<Decimal>,
    /// 5-minute cache write rate in this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<Decimal>,
    /// 1-hour cache write rate in this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<Decimal>,
}

impl ThresholdTier {
    fn applies(&self, prompt_tokens: u64) -> bool {
        prompt_tokens > self.above_prompt_tokens
            || (self.inclusive && prompt_tokens == self.above_prompt_tokens)
    }
}

/// One row of a range table: a request whose prompt has `from < tokens <= to` tokens is billed
/// entirely at `rates`. Rates are stored fully resolved (the importer fills the fallbacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RangeTier {
    /// Exclusive lower bound of prompt tokens.
    pub from: u64,
    /// Inclusive upper bound of prompt tokens.
    pub to: u64,
    /// The rates of this row.
    pub rates: EffectiveRates,
}

/// Everything Tollgate knows about one model's price.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Provider name as LiteLLM spells it (`openai`, `anthropic`, `gemini`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Endpoint kind.
    #[serde(default)]
    pub kind: ModelKind,
    /// Base rates.
    pub rates: Rates,
    /// Long-context tiers, any order; the highest crossed one applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<ThresholdTier>,
    /// Range table; when non-empty it takes precedence over `tiers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeTier>,
    /// Most output tokens one response can have: bounds the worst-case estimate when a
    /// request does not say `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Rates of the service tiers that bill differently from standard.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tiers: BTreeMap<ServiceTier, TierRates>,
    /// Audio and image token rates.
    #[serde(default, skip_serializing_if = "ModalityRates::is_empty")]
    pub modality: ModalityRates,
    /// Fees of provider-run tools.
    #[serde(default, skip_serializing_if = "ToolFees::is_empty")]
    pub tools: ToolFees,
}

/// The service tier a provider served (or may serve) a request at. Providers name more tiers
/// than bill differently; each name maps onto the rates that bill it ([`ServiceTier::named`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    /// The standard rates (OpenAI `default`/`scale`, Anthropic `standard`).
    #[default]
    Standard,
    /// Priority processing (OpenAI and Gemini `priority`, Anthropic `priority`): dearer.
    Priority,
    /// Flex processing (OpenAI `flex`): cheaper, slower.
    Flex,
}

impl ServiceTier {
    /// The tier a provider's tier name bills at. `fast` is LiteLLM's alias of priority; any
    /// other name (`default`, `standard`, `scale`, ...) bills standard rates.
    pub fn named(name: &str) -> ServiceTier {
        match name {
            "priority" | "fast" => ServiceTier::Priority,
            "flex" => ServiceTier::Flex,
            _ => ServiceTier::Standard,
        }
    }

    /// The serialized name.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Priority => "priority",
            ServiceTier::Flex => "flex",
        }
    }

    /// Whether this is the standard tier (skipped when serializing).
    pub fn is_standard(&self) -> bool {
        *self == ServiceTier::Standard
    }
}

/// Rates a service tier bills instead of the standard ones; `None` keeps the standard rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TierOverride {
    /// Input rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Decimal>,
    /// Output rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Decimal>,
    /// Cache-read rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<Decimal>,
    /// 5-minute cache-write rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<Decimal>,
}

impl TierOverride {
    /// Replaces nothing.
    pub fn is_empty(&self) -> bool {
        *self == TierOverride::default()
    }

    fn rates(&self) -> impl Iterator<Item = Decimal> {
        [
            self.input,
            self.output,
            self.cache_read,
            self.cache_write_5m,
        ]
        .into_iter()
        .flatten()
    }
}

/// A service tier's rates: its base rates, and per long-context threshold (the
/// `above_prompt_tokens` of a [`ThresholdTier`] of the model) the rates of that tier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TierRates {
    /// Replaces the standard base rates it names.
    #[serde(default, skip_serializing_if = "TierOverride::is_empty")]
    pub base: TierOverride,
    /// Input audio rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio: Option<Decimal>,
    /// Replaces the rates of the threshold tier with this `above_prompt_tokens`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, TierOverride>))]
    pub above: BTreeMap<u64, TierOverride>,
}

/// Per-token rates of audio and image tokens. Absent rates: input audio bills at the input
/// rate (a fallback, counted), input images at the base input rate, output audio and images
/// at the output rate (LiteLLM's resolutions).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModalityRates {
    /// Input audio tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio: Option<Decimal>,
    /// Output audio tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_audio: Option<Decimal>,
    /// Input image tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_image: Option<Decimal>,
    /// Output image tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_image: Option<Decimal>,
}

impl ModalityRates {
    /// No rate set.
    pub fn is_empty(&self) -> bool {
        *self == ModalityRates::default()
    }

    fn rates(&self) -> impl Iterator<Item = Decimal> {
        [
            self.input_audio,
            self.output_audio,
            self.input_image,
            self.output_image,
        ]
        .into_iter()
        .flatten()
    }
}

/// How much context a web search gathers (OpenAI's `search_context_size`); the fee depends
/// on it. Anthropic and Gemini searches bill at the `medium` fee, as LiteLLM prices them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SearchContext {
    /// `low`.
    Low,
    /// `medium`, the default.
    #[default]
    Medium,
    /// `high`.
    High,
}

impl SearchContext {
    /// The size a request names; anything else is the default, `medium`.
    pub fn named(name: &str) -> SearchContext {
        match name {
            "low" => SearchContext::Low,
            "high" => SearchContext::High,
            _ => SearchContext::Medium,
        }
    }

    /// The serialized name.
    pub fn name(&self) -> &'static str {
        match self {
            SearchContext::Low => "low",
            SearchContext::Medium => "medium",
            SearchContext::High => "high",
        }
    }

    /// Whether this is the default (skipped when serializing).
    pub fn is_medium(&self) -> bool {
        *self == SearchContext::Medium
    }
}

/// USD per web search, by context size (LiteLLM's `search_context_cost_per_query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SearchFees {
    /// Fee at `low` context.
    pub low: Decimal,
    /// Fee at `medium` context.
    pub medium: Decimal,
    /// Fee at `high` context.
    pub high: Decimal,
}

impl SearchFees {
    /// The fee of one search at `size`.
    pub fn at(&self, size: SearchContext) -> Decimal {
        match size {
            SearchContext::Low => self.low,
            SearchContext::Medium => self.medium,
            SearchContext::High => self.high,
        }
    }

    /// The dearest fee, for reservations.
    pub fn max(&self) -> Decimal {
        self.low.max(self.medium).max(self.high)
    }
}

/// Fees of tools the provider runs on its side and bills per call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolFees {
    /// Web search (OpenAI `web_search`, Anthropic `web_search`, Gemini grounding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search: Option<SearchFees>,
    /// Gemini 2.x bills grounding once per grounded prompt, however many queries it ran
    /// (LiteLLM's `web_search_billing_unit: per_prompt`); others bill every search.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web_search_per_prompt: bool,
}

impl ToolFees {
    /// No fee set.
    pub fn is_empty(&self) -> bool {
        *self == ToolFees::default()
    }

    /// Web searches billed for `reported` searches: one per grounded prompt or one each.
    pub fn web_searches_billed(&self, reported: u64) -> u64 {
        if self.web_search_per_prompt {
            reported.min(1)
        } else {
            reported
        }
    }
}

/// Rates a usage was priced at that the book lacked, each resolved to a fallback rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fallbacks {
    /// Cache reads priced at the input rate.
    pub cache_read: bool,
    /// 5-minute cache writes priced at the input rate.
    pub cache_write_5m: bool,
    /// 1-hour cache writes priced at the 5-minute write rate.
    pub cache_write_1h: bool,
    /// Input audio priced at the input rate.
    pub input_audio: bool,
}

impl Fallbacks {
    /// The fallbacks by name (the metric's label), set or not.
    pub fn named(&self) -> [(&'static str, bool); 4] {
        [
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("input_audio", self.input_audio),
        ]
    }

    /// Whether any fallback was used.
    pub fn any(&self) -> bool {
        self.named().iter().any(|(_, used)| *used)
    }
}

/// The rates that bill one request, after tier selection. All zero-defaulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EffectiveRates {
    /// Uncached prompt tokens.
    pub input: Decimal,
    /// Non-reasoning output tokens.
    pub output: Decimal,
    /// Cache reads.
    pub cache_read: Decimal,
    /// 5-minute cache writes.
    pub cache_write_5m: Decimal,
    /// 1-hour cache writes.
    pub cache_write_1h: Decimal,
    /// Reasoning tokens.
    pub reasoning: Decimal,
}

impl EffectiveRates {
    /// The six rates: input, output, cache read, 5m and 1h cache writes, reasoning.
    pub fn all(&self) -> [Decimal; 6] {
        [
            self.input,
            self.output,
            self.cache_read,
            self.cache_write_5m,
            self.cache_write_1h,
            self.reasoning,
        ]
    }
}

impl ModelPrice {
    /// A model with only input and output rates.
    pub fn flat(input: Decimal, output: Decimal) -> Self {
        ModelPrice {
            rates: Rates {
                input,
                output,
                ..Rates::default()
            },
            ..ModelPrice::default()
        }
    }

    /// The rates that bill a request whose prompt (cached tokens included) has
    /// `prompt_tokens` tokens, missing cache rates resolved to their fallbacks.
    pub fn rates_for(&self, prompt_tokens: u64) -> EffectiveRates {
        self.resolve(prompt_tokens, None).0
    }

    /// [`ModelPrice::rates_for`] as `tier` bills it.
    pub fn rates_at(&self, prompt_tokens: u64, tier: ServiceTier) -> EffectiveRates {
        self.rates_and_fallbacks_at(prompt_tokens, tier).0
    }

    /// [`ModelPrice::rates_at`], and which cache rates the book lacked at that size and tier
    /// (resolved to their fallbacks: reads and 5-minute writes to the input rate, 1-hour
    /// writes to 5-minute).
    pub(crate) fn rates_and_fallbacks_at(
        &self,
        prompt_tokens: u64,
        tier: ServiceTier,
    ) -> (EffectiveRates, Fallbacks) {
        self.resolve(prompt_tokens, self.service_tiers.get(&tier))
    }

    /// The base (untiered) input rate as `tier` bills it: what images and unpriced input
    /// audio bill at.
    pub fn base_input_at(&self, tier: ServiceTier) -> Decimal {
        let overlay = self.service_tiers.get(&tier);
        overlay
            .and_then(|t| t.base.input)
            .unwrap_or(self.rates.input)
    }

    /// The input audio rate as `tier` bills it, if the book has one.
    pub fn input_audio_at(&self, tier: ServiceTier) -> Option<Decimal> {
        let overlay = self.service_tiers.get(&tier);
        overlay
            .and_then(|t| t.input_audio)
            .or(self.modality.input_audio)
    }

    /// The rates for `prompt_tokens`, and which cache rates were missing. With `service`, the
    /// service tier's rates over the standard ones: its base rates over the base, its
    /// per-threshold rates over that threshold's (no clone of the price: this runs for every
    /// request).
    fn resolve(
        &self,
        prompt_tokens: u64,
        service: Option<&TierRates>,
    ) -> (EffectiveRates, Fallbacks) {
        if let Some(row) = self.range_for(prompt_tokens) {
            // Range rows are stored resolved (the importer fills them as LiteLLM does), and
            // LiteLLM prices range tables the same in every service tier.
            return (row.rates, Fallbacks::default());
        }
        let base = &self.rates;
        let tier = self
            .tiers
            .iter()
            .filter(|t| t.applies(prompt_tokens))
            .max_by_key(|t| t.above_prompt_tokens);
        let (mut input, mut output) = (base.input, base.output);
        let (mut read, mut w5, mut w1) =
            (base.cache_read, base.cache_write_5m, base.cache_write_1h);
        let mut reasoning = base.reasoning;
        if let Some(s) = service {
            input = s.base.input.unwrap_or(input);
            output = s.base.output.unwrap_or(output);
            read = s.base.cache_read.or(read);
            w5 = s.base.cache_write_5m.or(w5);
            // A tier with its own output rate bills reasoning at it (LiteLLM's
            // `_resolve_reasoning_token_cost`; no tier in the map has a reasoning rate).
            if s.base.output.is_some() {
                reasoning = None;
            }
        }
        if let Some(t) = tier {
            let over = service.and_then(|s| s.above.get(&t.above_prompt_tokens));
            let over = over.copied().unwrap_or_default();
            input = over.input.unwrap_or(t.input);
            output = over.output.or(t.output).unwrap_or(output);
            read = over.cache_read.or(t.cache_read).or(read);
            w5 = over.cache_write_5m.or(t.cache_write_5m).or(w5);
            w1 = t.cache_write_1h.or(w1);
        }
        let fallbacks = Fallbacks {
            cache_read: read.is_none(),
            cache_write_5m: w5.is_none(),
            cache_write_1h: w1.is_none(),
            input_audio: false,
        };
        let cache_write_5m = w5.unwrap_or(input);
        let rates = EffectiveRates {
            input,
            output,
            cache_read: read.unwrap_or(input),
            cache_write_5m,
            cache_write_1h: w1.unwrap_or(cache_write_5m),
            // A reasoning rate is not tiered: LiteLLM bills reasoning at the model's own
            // reasoning rate when it has one and at the (tiered) output rate otherwise.
            reasoning: reasoning.unwrap_or(output),
        };
        (rates, fallbacks)
    }

    /// The dearest tier a request may be served at when it lets the provider choose: the
    /// one whose input and output rates sum highest (standard when no tier is dearer).
    pub fn dearest_service_tier(&self) -> ServiceTier {
        let cost = |tier: ServiceTier| {
            let r = self.max_rates_at(tier);
            r.input.saturating_add(r.output)
        };
        // Every admission with the tier left to the provider asks: each tier costed once.
        let standard = (ServiceTier::Standard, cost(ServiceTier::Standard));
        self.service_tiers
            .keys()
            .map(|&t| (t, cost(t)))
            .fold(standard, |best, t| if t.1 > best.1 { t } else { best })
            .0
    }

    /// [`Self::dearest_service_tier`] and that tier's [`Self::max_rates_at`]: what a request
    /// that lets the provider choose its tier reserves at.
    pub fn dearest_rates(&self) -> (ServiceTier, EffectiveRates) {
        let tier = self.dearest_service_tier();
        (tier, self.max_rates_at(tier))
    }

    fn range_for(&self, prompt_tokens: u64) -> Option<&RangeTier> {
        if prompt_tokens == 0 {
            return None;
        }
        self.ranges
            .iter()
            .filter(|r| r.from < prompt_tokens && prompt_tokens <= r.to)
            .min_by_key(|r| r.from)
            .or_else(|| self.ranges.iter().max_by_key(|r| r.from))
    }

    /// Whether any rate — base, threshold tier or range row — is below zero. Nothing that
    /// produces prices writes one (the API and the LiteLLM importer refuse them), and a
    /// negative rate would bill negative money, so a snapshot carrying one is refused.
    pub fn has_negative_rate(&self) -> bool {
        let r = &self.rates;
        let base = [r.input, r.output].into_iter().chain(
            [
                r.cache_read,
                r.cache_write_5m,
                r.cache_write_1h,
                r.reasoning,
            ]
            .into_iter()
            .flatten(),
        );
        let tiers = self.tiers.iter().flat_map(|t| {
            std::iter::once(t.input).chain(
                [t.output, t.cache_read, t.cache_write_5m, t.cache_write_1h]
                    .into_iter()
                    .flatten(),
            )
        });
        let ranges = self.ranges.iter().flat_map(|row| row.rates.all());
        let service = self.service_tiers.values().flat_map(|t| {
            t.base
                .rates()
                .chain(t.input_audio)
                .chain(t.above.values().flat_map(TierOverride::rates))
        });
        let fees = self
            .tools
            .web_search
            .iter()
            .flat_map(|f| [f.low, f.medium, f.high]);
        base.chain(tiers)
            .chain(ranges)
            .chain(service)
            .chain(self.modality.rates())
            .chain(fees)
            .any(|d| d.is_sign_negative() && !d.is_zero())
    }

    /// The highest rate of any kind this model can bill at: the rate a worst-case estimate
    /// uses for tokens whose kind is not known in advance.
    pub fn max_rates(&self) -> EffectiveRates {
        self.max_rates_at(ServiceTier::Standard)
    }

    /// [`ModelPrice::max_rates`] as `tier` bills it.
    pub fn max_rates_at(&self, tier: ServiceTier) -> EffectiveRates {
        // Most models have one row of rates: it is the highest of each kind (no fold against
        // zero: rates are never negative, `has_negative_rate`).
        if self.tiers.is_empty() && self.ranges.is_empty() {
            return self.rates_at(0, tier);
        }
        let tiered = self
            .tiers
            .iter()
            .map(|t| self.rates_at(t.above_prompt_tokens.saturating_add(1), tier));
        let ranged = self.ranges.iter().map(|r| r.rates);
        std::iter::once(self.rates_at(0, tier))
            .chain(tiered)
            .chain(ranged)
            .fold(EffectiveRates::default(), |m, r| EffectiveRates {
                input: m.input.max(r.input),
                output: m.output.max(r.output),
                cache_read: m.cache_read.max(r.cache_read),
                cache_write_5m: m.cache_write_5m.max(r.cache_write_5m),
                cache_write_1h: m.cache_write_1h.max(r.cache_write_1h),
                reasoning: m.reasoning.max(r.reasoning),
            })
    }
}

/// Per-model prices under a version number. Model names are looked up with [`PriceBook::lookup`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PriceBook {
    /// Monotonic version, recorded with every usage event priced from this book.
    #[serde(default)]
    pub version: u64,
    /// Prices by model name as the provider or LiteLLM spells it.
    pub models: BTreeMap<String, ModelPrice>,
}

/// Why a rate given per 1M tokens was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Negative money.
    #[error("{field}: rate must not be negative, got {value}")]
    Negative {
        /// Field name.
        field: &'static str,
        /// Given value.
        value: Decimal,
    },
    /// Looks like a per-token rate given where per 1M tokens was expected.
    #[error("{field}: {value} USD per 1M tokens is below {min}: was a per-token rate given where per-1M was expected?")]
    TooSmall {
        /// Field name.
        field: &'static str,
        /// Given value.
        value: Decimal,
        /// Smallest accepted non-zero value.
        min: Decimal,
    },
    /// Looks like a per-1K or per-token rate multiplied one time too many.
    #[error("{field}: {value} USD per 1M tokens is above {max}: is the unit right?")]
    TooLarge {
        /// Field name.
        field: &'static str,
        /// Given value.
        value: Decimal,
        /// Largest accepted value.
        max: Decimal,
    },
}

/// Smallest non-zero rate per 1M tokens we accept: $0.0001 per 1M. Real prices start around
/// $0.01 per 1M; a per-token rate typed into a per-1M field lands near 10⁻⁶ and is refused.
pub const MIN_PER_MILLION: Decimal = Decimal::from_parts(1, 0, 0, false, 4);
/// Largest rate per 1M tokens we accept: $10,000 per 1M. The dearest models cost a few hundred.
pub const MAX_PER_MILLION: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// Checks a rate given in USD per 1M tokens against the unit sanity bounds.
pub fn check_per_million(field: &'static str, value: Decimal) -> Result<Decimal, RateError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(RateError::Negative { field, value });
    }
    if !value.is_zero() && value < MIN_PER_MILLION {
        return Err(RateError::TooSmall {
            field,
            value,
            min: MIN_PER_MILLION,
        });
    }
    if value > MAX_PER_MILLION {
        return Err(RateError::TooLarge {
            field,
            value,
            max: MAX_PER_MILLION,
        });
    }
    Ok(value)
}

/// Converts a checked rate per 1M tokens to the per-token rate used internally (exact).
pub fn per_million(field: &'static str, value: Decimal) -> Result<Decimal, RateError> {
    let v = check_per_million(field, value)?;
    Ok(v / Decimal::from(1_000_000u32))
}

/// Converts a per-token rate back to USD per 1M tokens, for display and the API.
pub fn to_per_million(per_token: Decimal) -> Decimal {
    // Checked: a rate read from a snapshot is data, and Decimal's `*` panics on overflow.
    per_token
        .checked_mul(Decimal::from(1_000_000u32))
        .unwrap_or(Decimal::MAX)
        .normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIERS: [ServiceTier; 3] = [
        ServiceTier::Standard,
        ServiceTier::Priority,
        ServiceTier::Flex,
    ];

    fn rate() -> impl Strategy<Value = Decimal> {
        (0i64..5_000).prop_map(|m| Decimal::new(m, 8))
    }

    fn some_rate() -> impl Strategy<Value = Option<Decimal>> {
        proptest::option::of(rate())
    }

    fn overlay() -> impl Strategy<Value = TierOverride> {
        (some_rate(), some_rate(), some_rate(), some_rate()).prop_map(
            |(input, output, cache_read, cache_write_5m)| TierOverride {
                input,
                output,
                cache_read,
                cache_write_5m,
            },
        )
    }

    /// Any price with non-negative rates (a snapshot refuses others): base rates, up to three
    /// thresholds, a range table or none, and service tiers overlaying base and threshold rates.
    fn price() -> impl Strategy<Value = ModelPrice> {
        let rates = (
            rate(),
            rate(),
            some_rate(),
            some_rate(),
            some_rate(),
            some_rate(),
        )
            .prop_map(
                |(input, output, cache_read, cache_write_5m, cache_write_1h, reasoning)| Rates {
                    input,
                    output,
                    cache_read,
                    cache_write_5m,
                    cache_write_1h,
                    reasoning,
                },
            );
        let threshold = (
            any::<bool>(),
            rate(),
            some_rate(),
            some_rate(),
            some_rate(),
            some_rate(),
        );
        // Thresholds and the sizes service tiers override at share a few values, so overrides
        // meet their thresholds.
        let size = || (1u64..6).prop_map(|k| k * 50_000);
        let thresholds = proptest::collection::btree_map(size(), threshold, 0..3);
        let row = (rate(), rate(), rate(), rate(), rate(), rate()).prop_map(|r| EffectiveRates {
            input: r.0,
            output: r.1,
            cache_read: r.2,
            cache_write_5m: r.3,
            cache_write_1h: r.4,
            reasoning: r.5,
        });
        let ranges = proptest::collection::vec(row, 0..3);
        let service = (
            overlay(),
            some_rate(),
            proptest::collection::btree_map(size(), overlay(), 0..2),
        )
            .prop_map(|(base, input_audio, above)| TierRates {
                base,
                input_audio,
                above,
            });
        let services = proptest::collection::btree_map(
            prop_oneof![Just(ServiceTier::Priority), Just(ServiceTier::Flex)],
            service,
            0..3,
        );
        (rates, thresholds, ranges, services).prop_map(
            |(rates, thresholds, rows, service_tiers)| {
                ModelPrice {
                    rates,
                    tiers: thresholds
                        .into_iter()
                        .map(|(above, (inclusive, input, output, cache_read, w5, w1))| {
                            ThresholdTier {
                                above_prompt_tokens: above,
                                inclusive,
                                input,
                                output,
                                cache_read,
                                cache_write_5m: w5,
                                cache_write_1h: w1,
                            }
                        })
                        .collect(),
                    // Consecutive rows of 100,000 tokens each, as range tables are.
                    ranges: (0u64..)
                        .zip(rows)
                        .map(|(i, rates)| RangeTier {
                            from: i * 100_000,
                            to: (i + 1) * 100_000,
                            rates,
                        })
                        .collect(),
                    service_tiers,
                    ..ModelPrice::default()
                }
            },
        )
    }

    /// Every prompt size where the rates can change, and either side of it.
    fn sizes(p: &ModelPrice) -> Vec<u64> {
        let edges = p
            .tiers
            .iter()
            .map(|t| t.above_prompt_tokens)
            .chain(p.ranges.iter().flat_map(|r| [r.from, r.to]))
            .chain(
                p.service_tiers
                    .values()
                    .flat_map(|t| t.above.keys().copied()),
            );
        [0, 1, u64::MAX]
            .into_iter()
            .chain(edges.flat_map(|e| [e.saturating_sub(1), e, e.saturating_add(1)]))
            .collect()
    }

    proptest! {
        /// The highest rates of a tier are, kind by kind, at least the rates at any prompt size,
        /// and each is the rate at some size (or of some range row): what a one-row model's
        /// shortcut and the fold over rows must both give.
        #[test]
        fn the_highest_rates_are_the_highest_reachable(p in price()) {
            for tier in TIERS {
                let max = p.max_rates_at(tier).all();
                let reachable: Vec<[Decimal; 6]> = sizes(&p)
                    .into_iter()
                    .map(|n| p.rates_at(n, tier).all())
                    .chain(p.ranges.iter().map(|r| r.rates.all()))
                    .collect();
                for (kind, highest) in max.iter().enumerate() {
                    let at = |r: &[Decimal; 6]| r.get(kind).copied();
                    prop_assert!(reachable.iter().all(|r| at(r) <= Some(*highest)), "{tier:?} kind {kind}");
                    prop_assert!(reachable.iter().any(|r| at(r) == Some(*highest)), "{tier:?} kind {kind}");
                }
            }
        }

        /// The dearest tier costs the most (input plus output at its highest rates), and no
        /// tier before it (standard first, then in the book's order) costs as much.
        #[test]
        fn the_dearest_tier_is_the_first_that_costs_the_most(p in price()) {
            let cost = |t: ServiceTier| {
                let r = p.max_rates_at(t);
                r.input + r.output
            };
            let order: Vec<ServiceTier> = std::iter::once(ServiceTier::Standard)
                .chain(p.service_tiers.keys().copied())
                .collect();
            let most = order.iter().map(|t| cost(*t)).max().unwrap_or_default();
            let dearest = p.dearest_service_tier();
            prop_assert_eq!(cost(dearest), most);
            let first = order.iter().position(|t| cost(*t) == most);
            prop_assert_eq!(first, order.iter().position(|t| *t == dearest));
        }
    }
}
