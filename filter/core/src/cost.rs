//! Exact cost of one request: token counts by kind × the rates of the tier the request falls
//! in, as a per-bucket `Decimal` breakdown.
//!
//! Follows LiteLLM's `generic_cost_per_token` conventions so both give the same numbers for the
//! same price-map entry and usage: the tier is chosen by all prompt tokens (cached included);
//! reasoning tokens are part of `output` and billed at the reasoning rate, the rest of the
//! output at the output rate; audio and image tokens are parts of the uncached prompt and of the
//! output, billed at their own rates; web searches at a fee per search. The service tier that
//! served the request picks the rates ([`ModelPrice::rates_at`]).
//! `tests/litellm_differential.rs` holds us to LiteLLM's numbers.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::pricing::{Fallbacks, ModelPrice};
use crate::usage::Usage;

/// USD cost of one request, per bucket. `total` is the sum of the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CostBreakdown {
    /// Uncached prompt tokens.
    pub input: Decimal,
    /// Cache reads.
    pub cache_read: Decimal,
    /// 5-minute cache writes.
    pub cache_write_5m: Decimal,
    /// 1-hour cache writes.
    pub cache_write_1h: Decimal,
    /// Output tokens other than reasoning.
    pub output: Decimal,
    /// Reasoning tokens.
    pub reasoning: Decimal,
    // Absent when zero, so events without them encode as before they existed.
    /// Input audio tokens.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub input_audio: Decimal,
    /// Input image tokens.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub input_image: Decimal,
    /// Output audio tokens.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub output_audio: Decimal,
    /// Output image tokens.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub output_image: Decimal,
    /// Web-search fees.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub web_search: Decimal,
    /// Sum of all buckets.
    pub total: Decimal,
}

impl CostBreakdown {
    /// The prompt side, as LiteLLM's first return value: input, cache reads and writes,
    /// input audio and images.
    pub fn prompt(&self) -> Decimal {
        self.input
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
            + self.input_audio
            + self.input_image
    }

    /// The buckets, `total` excluded, in the order of [`CostBreakdown::named_buckets`].
    pub fn buckets(&self) -> [Decimal; 11] {
        self.named_buckets().map(|(_, v)| v)
    }

    /// The buckets by their serialized names, `total` excluded.
    pub fn named_buckets(&self) -> [(&'static str, Decimal); 11] {
        [
            ("input", self.input),
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("output", self.output),
            ("reasoning", self.reasoning),
            ("input_audio", self.input_audio),
            ("input_image", self.input_image),
            ("output_audio", self.output_audio),
            ("output_image", self.output_image),
            ("web_search", self.web_search),
        ]
    }

    /// The completion side, as LiteLLM's second return value: output, reasoning, output
    /// audio and images.
    pub fn completion(&self) -> Decimal {
        self.output + self.reasoning + self.output_audio + self.output_image
    }

    /// Provider-run tool fees, which LiteLLM adds beside `cost_per_token`'s two values.
    pub fn tools(&self) -> Decimal {
        self.web_search
    }
}

/// Why a cost could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// Tokens × rate does not fit a `Decimal` (about 7.9 × 10²⁸): absurd usage or rates.
    #[error("cost of {bucket} overflows: usage or rate out of range")]
    Overflow {
        /// The bucket that overflowed.
        bucket: &'static str,
    },
}

/// Prices `usage` with `price`, at the service tier that served it.
pub fn cost(price: &ModelPrice, usage: &Usage) -> Result<CostBreakdown, CostError> {
    priced(price, usage).map(|(c, _)| c)
}

/// [`cost`], and the rates the book lacked that pricing `usage` fell back on (the filter
/// counts them), found in the same pass that picks the rates.
pub fn priced(price: &ModelPrice, usage: &Usage) -> Result<(CostBreakdown, Fallbacks), CostError> {
    let tier = usage.service_tier;
    let (rates, missing) = price.rates_and_fallbacks_at(usage.prompt_total(), tier);
    // Each token is billed once: audio and images are parts of the uncached prompt and of the
    // output (after reasoning), clamped to what is left of them.
    let input_audio = usage.input_audio.min(usage.input_uncached);
    let input_image = usage.input_image.min(usage.input_uncached - input_audio);
    let reasoning = usage.reasoning.min(usage.output);
    let output_audio = usage.output_audio.min(usage.output - reasoning);
    let output_image = usage
        .output_image
        .min(usage.output - reasoning - output_audio);
    // Alibaba's calculator (range tables) bills every prompt and output token at its row's
    // rates whatever the modality; LiteLLM's generic one has modality rates untiered.
    let ranged = !price.ranges.is_empty();
    let none = crate::pricing::ModalityRates::default();
    let m = if ranged { &none } else { &price.modality };
    let (base_input, input_audio_rate) = if ranged {
        (rates.input, None)
    } else {
        (price.base_input_at(tier), price.input_audio_at(tier))
    };
    let fallbacks = Fallbacks {
        cache_read: missing.cache_read && usage.cache_read > 0,
        cache_write_5m: missing.cache_write_5m && usage.cache_write_5m > 0,
        cache_write_1h: missing.cache_write_1h && usage.cache_write_1h > 0,
        input_audio: price.input_audio_at(tier).is_none() && usage.input_audio > 0,
    };
    let searches = price.tools.web_searches_billed(usage.web_searches);
    let search_fee = price
        .tools
        .web_search
        .map_or(Decimal::ZERO, |f| f.at(usage.search_context));
    let mut c = CostBreakdown {
        input: bill(
            "input",
            usage.input_uncached - input_audio - input_image,
            rates.input,
        )?,
        cache_read: bill("cache_read", usage.cache_read, rates.cache_read)?,
        cache_write_5m: bill("cache_write_5m", usage.cache_write_5m, rates.cache_write_5m)?,
        cache_write_1h: bill("cache_write_1h", usage.cache_write_1h, rates.cache_write_1h)?,
        output: bill(
            "output",
            usage.output - reasoning - output_audio - output_image,
            rates.output,
        )?,
        reasoning: bill("reasoning", reasoning, rates.reasoning)?,
        // Without a rate of their own, input audio (a fallback, counted in `fallbacks`) and images bill at the base input rate, output audio and
        // images at the output rate (LiteLLM's resolutions; its cost path bills input audio
        // without a rate at zero).
        input_audio: bill(
            "input_audio",
            input_audio,
            input_audio_rate.unwrap_or(base_input),
        )?,
        input_image: bill(
            "input_image",
            input_image,
            m.input_image.unwrap_or(base_input),
        )?,
        output_audio: bill(
            "output_audio",
            output_audio,
            m.output_audio.unwrap_or(rates.output),
        )?,
        output_image: bill(
            "output_image",
            output_image,
            m.output_image.unwrap_or(rates.output),
        )?,
        web_search: bill("web_search", searches, search_fee)?,
        total: Decimal::ZERO,
    };
    c.total = c
        .buckets()
        .into_iter()
        .try_fold(Decimal::ZERO, Decimal::checked_add)
        .ok_or(CostError::Overflow { bucket: "total" })?
        .normalize();
    Ok((c, fallbacks))
}

/// `tokens × rate` in its shortest spelling (`0.00005`, not `0.000050`, in events and logs).
// Not inlined: eleven inlined copies of Decimal's multiply cost the module ~15 KB.
#[inline(never)]
fn bill(bucket: &'static str, tokens: u64, rate: Decimal) -> Result<Decimal, CostError> {
    if tokens == 0 {
        return Ok(Decimal::ZERO);
    }
    Decimal::from(tokens)
        .checked_mul(rate)
        .map(|v| v.normalize())
        .ok_or(CostError::Overflow { bucket })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::ThresholdTier;
    use proptest::prelude::*;
    use std::str::FromStr;

    /// The names the control plane writes to its ledger and error messages are the serialized
    /// field names, for the cost buckets and the token counts alike.
    #[test]
    fn named_buckets_and_counts_are_the_serialized_fields() {
        let c = CostBreakdown {
            input: Decimal::new(1, 0),
            cache_read: Decimal::new(2, 0),
            cache_write_5m: Decimal::new(3, 0),
            cache_write_1h: Decimal::new(4, 0),
            output: Decimal::new(5, 0),
            reasoning: Decimal::new(6, 0),
            input_audio: Decimal::new(7, 0),
            input_image: Decimal::new(8, 0),
            output_audio: Decimal::new(9, 0),
            output_image: Decimal::new(10, 0),
            web_search: Decimal::new(11, 0),
            total: Decimal::new(66, 0),
        };
        let json = serde_json::to_value(c).unwrap_or_default();
        for (name, v) in c.named_buckets() {
            assert_eq!(json[name], serde_json::json!(v.to_string()), "{name}");
        }
        assert_eq!(c.named_buckets().map(|(_, v)| v), c.buckets());
        let u = Usage {
            input_uncached: 1,
            cache_read: 2,
            cache_write_5m: 3,
            cache_write_1h: 4,
            output: 5,
            reasoning: 6,
            input_audio: 7,
            input_image: 8,
            output_audio: 9,
            output_image: 10,
            web_searches: 11,
            ..Usage::default()
        };
        let json = serde_json::to_value(u).unwrap_or_default();
        let named = u.named_counts();
        for (name, v) in named {
            assert_eq!(json[name], serde_json::json!(v), "{name}");
        }
        // The tier and search context are not counts; at their defaults they are left out.
        assert_eq!(json.as_object().map(|o| o.len()), Some(named.len()));
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Claude-like rates (USD per token): input 3/M, output 15/M, cache read 0.3/M, cache write
    /// 3.75/M (5 min) and 6/M (1 h), with a 200k long-context tier at double input.
    fn claude() -> ModelPrice {
        ModelPrice {
            rates: crate::test_support::claude_rates(),
            tiers: vec![ThresholdTier {
                above_prompt_tokens: 200_000,
                inclusive: false,
                input: d("0.000006"),
                output: Some(d("0.0000225")),
                cache_read: None,
                cache_write_5m: None,
                cache_write_1h: None,
            }],
            ..ModelPrice::default()
        }
    }

    /// Audio and images are parts of the prompt and output they are counted in, each token
    /// billed once; web searches at the fee of the context the request asked for; the tier
    /// that served picks the rates.
    #[test]
    fn modalities_searches_and_tiers() {
        use crate::pricing::{ModalityRates, SearchContext, SearchFees, ServiceTier, ToolFees};
        let mut p = ModelPrice::flat(d("0.000001"), d("0.000004"));
        p.modality = ModalityRates {
            input_audio: Some(d("0.00004")),
            output_audio: Some(d("0.00008")),
            ..ModalityRates::default()
        };
        p.tools = ToolFees {
            web_search: Some(SearchFees {
                low: d("0.025"),
                medium: d("0.0275"),
                high: d("0.03"),
            }),
            web_search_per_prompt: false,
        };
        p.service_tiers.insert(
            ServiceTier::Priority,
            crate::test_support::tier("0.000002", None),
        );
        let u = Usage {
            input_uncached: 1000,
            input_audio: 300,
            input_image: 100,
            output: 500,
            reasoning: 100,
            output_audio: 200,
            output_image: 50,
            web_searches: 2,
            search_context: SearchContext::High,
            ..Usage::default()
        };
        let c = cost(&p, &u).unwrap();
        assert_eq!(c.input, d("0.0006"), "600 text tokens");
        assert_eq!(c.input_audio, d("0.012"));
        assert_eq!(c.input_image, d("0.0001"), "image: the base input rate");
        assert_eq!(c.output, d("0.0006"), "150 text tokens");
        assert_eq!(c.reasoning, d("0.0004"));
        assert_eq!(c.output_audio, d("0.016"));
        assert_eq!(c.output_image, d("0.0002"), "image: the output rate");
        assert_eq!(c.web_search, d("0.06"));
        assert_eq!(c.total, c.prompt() + c.completion() + c.tools());
        let pri = cost(
            &p,
            &Usage {
                service_tier: ServiceTier::Priority,
                ..u
            },
        )
        .unwrap();
        assert_eq!(pri.input, d("0.0012"));
        assert_eq!(pri.output, c.output, "no priority output rate: standard");
        // more audio than prompt is clamped, never billed twice
        let over = Usage {
            input_uncached: 10,
            input_audio: 50,
            input_image: 50,
            ..Usage::default()
        };
        let c = cost(&p, &over).unwrap();
        assert_eq!((c.input, c.input_image), (Decimal::ZERO, Decimal::ZERO));
        assert_eq!(c.input_audio, d("0.0004"));
    }

    #[test]
    fn buckets_and_total() {
        let u = Usage {
            input_uncached: 1000,
            cache_read: 2000,
            cache_write_5m: 300,
            cache_write_1h: 400,
            output: 500,
            reasoning: 100,
            ..Usage::default()
        };
        let c = cost(&claude(), &u).unwrap();
        assert_eq!(c.input, d("0.003"));
        assert_eq!(c.cache_read, d("0.0006"));
        assert_eq!(c.cache_write_5m, d("0.001125"));
        assert_eq!(c.cache_write_1h, d("0.0024"));
        assert_eq!(c.output, d("0.006"), "400 non-reasoning output tokens");
        assert_eq!(
            c.reasoning,
            d("0.0015"),
            "no reasoning rate: billed as output"
        );
        assert_eq!(c.total, d("0.014625"));
        assert_eq!(c.prompt() + c.completion(), c.total);
    }

    #[test]
    fn tier_applies_to_whole_request_when_cached_tokens_cross_it() {
        let below = Usage {
            input_uncached: 100_000,
            cache_read: 100_000,
            output: 10,
            ..Usage::default()
        };
        let above = Usage {
            cache_read: 100_001,
            ..below
        };
        let c_below = cost(&claude(), &below).unwrap();
        let c_above = cost(&claude(), &above).unwrap();
        assert_eq!(c_below.input, d("0.3"));
        assert_eq!(
            c_above.input,
            d("0.6"),
            "tier input rate on every uncached token"
        );
        assert_eq!(c_above.output, d("0.000225"), "tier output rate");
        assert_eq!(
            c_above.cache_read,
            d("0.0300003"),
            "tier without cache rate keeps base"
        );
    }

    #[test]
    fn zero_usage_costs_nothing_and_overflow_is_an_error() {
        assert_eq!(
            cost(&claude(), &Usage::default()).unwrap().total,
            Decimal::ZERO
        );
        let huge = ModelPrice::flat(Decimal::MAX, Decimal::ZERO);
        let u = Usage {
            input_uncached: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(
            cost(&huge, &u),
            Err(CostError::Overflow { bucket: "input" })
        );
    }

    proptest! {
        /// Money arithmetic: the total is exactly the sum of its buckets, and adding tokens
        /// never lowers the cost (below a tier boundary).
        #[test]
        fn total_is_sum_and_monotone(
            input in 0u64..50_000, read in 0u64..50_000, w5 in 0u64..50_000,
            w1 in 0u64..50_000, out in 0u64..1_000_000, reasoning in 0u64..1_000_000, extra in 1u64..1000,
        ) {
            let u = Usage { input_uncached: input, cache_read: read, cache_write_5m: w5,
                            cache_write_1h: w1, output: out.max(reasoning), reasoning,
                            ..Usage::default() };
            let c = cost(&claude(), &u).unwrap();
            prop_assert_eq!(c.total, c.prompt() + c.completion() + c.tools());
            let more = Usage { output: u.output + extra, ..u };
            prop_assert!(cost(&claude(), &more).unwrap().total > c.total);
        }
    }
}
