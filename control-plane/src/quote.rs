//! Pricing one usage: shared by `POST /v1/cost/quote` (prices from the snapshot) and the
//! offline `tollgate cost` CLI (prices from a file). The usage is Tollgate's normalised
//! [`Usage`] or a provider's own usage object (OpenAI Chat / Responses, Anthropic Messages,
//! Gemini), recognised from its keys by core's `from_usage_object`, the code the filter runs.

use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::cost::{cost, CostBreakdown};
use tollgate_core::pricing::PriceBook;
use tollgate_core::usage::{from_usage_object, ApiFormat, Usage};

/// A priced usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// The model as asked.
    pub model: String,
    /// The price-book entry that priced it.
    pub priced_as: String,
    /// Price book version.
    pub price_version: u64,
    /// The provider format the usage was recognised as (absent for normalised usage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_format: Option<ApiFormat>,
    /// Normalised usage.
    pub usage: Usage,
    /// Cost per bucket, USD.
    pub cost: CostBreakdown,
    /// Total, USD.
    pub total_usd: Decimal,
}

/// Why a quote failed: the input field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct QuoteError {
    /// `model` or `usage`.
    pub field: &'static str,
    /// What is wrong.
    pub detail: String,
}

/// Reads `usage` as Tollgate's normalised usage, else as a provider usage object.
pub fn read_usage(v: &serde_json::Value) -> Result<(Option<ApiFormat>, Usage), QuoteError> {
    let bad = |detail: String| QuoteError {
        field: "usage",
        detail,
    };
    if let Ok(u) = serde_json::from_value::<Usage>(v.clone()) {
        if u.reasoning > u.output {
            return Err(bad("reasoning is more than output".into()));
        }
        return Ok((None, u));
    }
    from_usage_object(v)
        .map(|(f, u)| (Some(f), u))
        .map_err(|e| bad(e.to_string()))
}

/// Prices `usage` for `model` (looked up as the filter does, with the provider hint).
pub fn quote(
    book: &PriceBook,
    model: &str,
    provider: Option<&str>,
    usage: &serde_json::Value,
) -> Result<Quote, QuoteError> {
    let (format, usage) = read_usage(usage)?;
    let (key, price) = book.lookup(model, provider).ok_or_else(|| QuoteError {
        field: "model",
        detail: format!("no price for {model:?}"),
    })?;
    // `cost` already spells each amount in its shortest form (`0.0035`, not `0.0035000`).
    let c = cost(price, &usage).map_err(|e| QuoteError {
        field: "usage",
        detail: e.to_string(),
    })?;
    Ok(Quote {
        model: model.to_string(),
        priced_as: key.to_string(),
        price_version: book.version,
        usage_format: format,
        usage,
        total_usd: c.total,
        cost: c,
    })
}
