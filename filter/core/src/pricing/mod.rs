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

pub mod litellm;
mod lookup;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What kind of endpoint a model is priced for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// The base per-token rates of a model. Optional rates are absent when the provider does not
/// offer that kind of token; an absent rate bills as zero, as LiteLLM does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
}

/// The rates that bill one request, after tier selection. All zero-defaulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// `prompt_tokens` tokens.
    pub fn rates_for(&self, prompt_tokens: u64) -> EffectiveRates {
        if let Some(row) = self.range_for(prompt_tokens) {
            return row.rates;
        }
        let base = &self.rates;
        let tier = self
            .tiers
            .iter()
            .filter(|t| t.applies(prompt_tokens))
            .max_by_key(|t| t.above_prompt_tokens);
        let zero = Decimal::ZERO;
        let mut r = EffectiveRates {
            input: base.input,
            output: base.output,
            cache_read: base.cache_read.unwrap_or(zero),
            cache_write_5m: base.cache_write_5m.unwrap_or(zero),
            cache_write_1h: base.cache_write_1h.unwrap_or(zero),
            reasoning: zero,
        };
        if let Some(t) = tier {
            r.input = t.input;
            r.output = t.output.unwrap_or(r.output);
            r.cache_read = t.cache_read.unwrap_or(r.cache_read);
            r.cache_write_5m = t.cache_write_5m.unwrap_or(r.cache_write_5m);
            r.cache_write_1h = t.cache_write_1h.unwrap_or(r.cache_write_1h);
        }
        // A reasoning rate is not tiered: LiteLLM bills reasoning at the model's own reasoning
        // rate when it has one and at the (tiered) output rate otherwise.
        r.reasoning = base.reasoning.unwrap_or(r.output);
        r
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
        base.chain(tiers)
            .chain(ranges)
            .any(|d| d.is_sign_negative() && !d.is_zero())
    }

    /// The highest rate of any kind this model can bill at: the rate a worst-case estimate
    /// uses for tokens whose kind is not known in advance.
    pub fn max_rates(&self) -> EffectiveRates {
        let tiered = self
            .tiers
            .iter()
            .map(|t| self.rates_for(t.above_prompt_tokens.saturating_add(1)));
        let ranged = self.ranges.iter().map(|r| r.rates);
        std::iter::once(self.rates_for(0))
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
