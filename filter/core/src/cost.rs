//! Exact cost of one request: token counts by kind × the rates of the tier the request falls
//! in, as a per-bucket `Decimal` breakdown.
//!
//! Follows LiteLLM's `generic_cost_per_token` conventions so both give the same numbers for the
//! same price-map entry and usage: the tier is chosen by all prompt tokens (cached included);
//! reasoning tokens are part of `output` and billed at the reasoning rate, the rest of the
//! output at the output rate. `tests/litellm_differential.rs` holds us to that.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::pricing::{EffectiveRates, ModelPrice};
use crate::usage::Usage;

/// USD cost of one request, per bucket. `total` is the sum of the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// Sum of all buckets.
    pub total: Decimal,
}

impl CostBreakdown {
    /// The prompt side, as LiteLLM's first return value: input plus cache reads and writes.
    pub fn prompt(&self) -> Decimal {
        self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h
    }

    /// The six buckets, `total` excluded: input, cache read, 5m and 1h cache writes, output,
    /// reasoning.
    pub fn buckets(&self) -> [Decimal; 6] {
        self.named_buckets().map(|(_, v)| v)
    }

    /// The six buckets by their serialized names, in the order of [`CostBreakdown::buckets`].
    pub fn named_buckets(&self) -> [(&'static str, Decimal); 6] {
        [
            ("input", self.input),
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("output", self.output),
            ("reasoning", self.reasoning),
        ]
    }

    /// The completion side, as LiteLLM's second return value: output plus reasoning.
    pub fn completion(&self) -> Decimal {
        self.output + self.reasoning
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

/// Prices `usage` with `price`.
pub fn cost(price: &ModelPrice, usage: &Usage) -> Result<CostBreakdown, CostError> {
    cost_at(&price.rates_for(usage.prompt_total()), usage)
}

/// Prices `usage` at already-selected rates.
pub fn cost_at(rates: &EffectiveRates, usage: &Usage) -> Result<CostBreakdown, CostError> {
    let times = |bucket: &'static str, tokens: u64, rate: Decimal| {
        Decimal::from(tokens)
            .checked_mul(rate)
            .ok_or(CostError::Overflow { bucket })
    };
    let mut c = CostBreakdown {
        input: times("input", usage.input_uncached, rates.input)?,
        cache_read: times("cache_read", usage.cache_read, rates.cache_read)?,
        cache_write_5m: times("cache_write_5m", usage.cache_write_5m, rates.cache_write_5m)?,
        cache_write_1h: times("cache_write_1h", usage.cache_write_1h, rates.cache_write_1h)?,
        output: times(
            "output",
            usage.output.saturating_sub(usage.reasoning),
            rates.output,
        )?,
        reasoning: times("reasoning", usage.reasoning, rates.reasoning)?,
        total: Decimal::ZERO,
    };
    c.total = c
        .buckets()
        .into_iter()
        .try_fold(Decimal::ZERO, Decimal::checked_add)
        .ok_or(CostError::Overflow { bucket: "total" })?;
    // Same value, shortest spelling: `0.00005`, not `0.000050`, in events and logs.
    for v in [
        &mut c.input,
        &mut c.cache_read,
        &mut c.cache_write_5m,
        &mut c.cache_write_1h,
        &mut c.output,
        &mut c.reasoning,
        &mut c.total,
    ] {
        *v = v.normalize();
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{Rates, ThresholdTier};
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
            total: Decimal::new(21, 0),
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
        };
        let json = serde_json::to_value(u).unwrap_or_default();
        let named = u.named_counts();
        for (name, v) in named {
            assert_eq!(json[name], serde_json::json!(v), "{name}");
        }
        assert_eq!(json.as_object().map(|o| o.len()), Some(named.len()));
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Claude-like rates (USD per token): input 3/M, output 15/M, cache read 0.3/M, cache write
    /// 3.75/M (5 min) and 6/M (1 h), with a 200k long-context tier at double input.
    fn claude() -> ModelPrice {
        ModelPrice {
            rates: Rates {
                input: d("0.000003"),
                output: d("0.000015"),
                cache_read: Some(d("0.0000003")),
                cache_write_5m: Some(d("0.00000375")),
                cache_write_1h: Some(d("0.000006")),
                reasoning: None,
            },
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

    #[test]
    fn buckets_and_total() {
        let u = Usage {
            input_uncached: 1000,
            cache_read: 2000,
            cache_write_5m: 300,
            cache_write_1h: 400,
            output: 500,
            reasoning: 100,
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
                            cache_write_1h: w1, output: out.max(reasoning), reasoning };
            let c = cost(&claude(), &u).unwrap();
            prop_assert_eq!(c.total, c.prompt() + c.completion());
            let more = Usage { output: u.output + extra, ..u };
            prop_assert!(cost(&claude(), &more).unwrap().total > c.total);
        }
    }
}
