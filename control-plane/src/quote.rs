//! Pricing one usage: shared by `POST /v1/cost/quote` (prices from the snapshot) and the
//! offline `tollgate cost` CLI (prices from a file). The usage is Tollgate's normalised
//! [`Usage`] or a provider's own usage object (OpenAI Chat / Responses, Anthropic Messages,
//! Gemini), recognised from its keys by core's `from_usage_object`, the code the filter runs.
//! [`quote_answer`] prices a whole provider answer (JSON or a recorded stream) as the filter
//! settles it, for `tollgate cost --response`.

use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::cost::{cost, CostBreakdown};
use tollgate_core::pricing::PriceBook;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::{from_sse, from_usage_object, served_json, Usage};

/// A priced usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Quote {
    /// The model as asked.
    pub model: String,
    /// The price-book entry that priced it.
    pub priced_as: String,
    /// Price book version.
    pub price_version: u64,
    /// The provider format the usage was recognised as (absent for normalised usage).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "open_ai_chat")]
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

/// A whole answer priced as the filter settles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerQuote {
    /// The priced usage (`model` is the model priced: the served one when the book has it).
    #[serde(flatten)]
    pub quote: Quote,
    /// The model the answer says served the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// For a stream: whether it ended with the provider's end-of-stream mark (a cut stream is
    /// charged by policy in the filter, not by the usage seen so far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// With `--request`: the worst case the filter reserved for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_usd: Option<Decimal>,
}

/// Largest SSE event read from a recorded stream (the filter's default is 1 MiB).
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Prices `answer` (a JSON body, or an SSE stream) of `api` as the filter does: the usage
/// and served model from the answer, the web-search context from `request` (when given),
/// the served model's price when the book has one, else the request's (or `model`'s).
pub fn quote_answer(
    book: &PriceBook,
    api: ApiFormat,
    answer: &[u8],
    request: Option<&[u8]>,
    model: Option<&str>,
) -> Result<AnswerQuote, QuoteError> {
    let bad = |field: &'static str, detail: String| QuoteError { field, detail };
    let json = matches!(answer.trim_ascii_start().first(), Some(b'{' | b'['));
    let (mut usage, served, complete) = if json {
        let (u, m) = served_json(api, answer).map_err(|e| bad("response", e.to_string()))?;
        (u, m, None)
    } else {
        let out = from_sse(api, answer, MAX_EVENT_BYTES);
        let complete = out.complete;
        let model = out.model.clone();
        let u = out
            .into_result()
            .map_err(|e| bad("response", e.to_string()))?;
        (u, model, Some(complete))
    };
    let cfg = tollgate_core::estimate::EstimateConfig::default();
    let summary = request
        .map(|r| tollgate_core::estimate::summarize(r, api, model, &cfg))
        .transpose()
        .map_err(|e| bad("request", e.to_string()))?;
    if let Some(ask) = summary.as_ref().and_then(|s| s.web_search) {
        usage.search_context = ask.context;
    }
    let requested = model
        .map(str::to_string)
        .or_else(|| summary.as_ref().map(|s| s.model.to_string()));
    let hint = Some(api.provider());
    let priced = served
        .as_deref()
        .and_then(|m| book.lookup(m, hint))
        .or_else(|| requested.as_deref().and_then(|m| book.lookup(m, hint)));
    let Some((key, price)) = priced else {
        let named = served.or(requested).unwrap_or_default();
        return Err(bad("model", format!("no price for {named:?}")));
    };
    let c = cost(price, &usage).map_err(|e| bad("response", e.to_string()))?;
    let reserved_usd = match (&summary, request) {
        (Some(s), Some(_)) => {
            let (_, asked_price) = book.lookup(&s.model, hint).unwrap_or((key, price));
            tollgate_core::estimate::worst_case(s, asked_price, &cfg)
                .ok()
                .map(|e| e.cost)
        }
        _ => None,
    };
    Ok(AnswerQuote {
        quote: Quote {
            model: requested.unwrap_or_else(|| key.to_string()),
            priced_as: key.to_string(),
            price_version: book.version,
            usage_format: Some(api),
            usage,
            total_usd: c.total,
            cost: c,
        },
        served_model: served,
        complete,
        reserved_usd,
    })
}
