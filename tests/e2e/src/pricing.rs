//! What a request through the mock upstream must cost, computed without Envoy or the control
//! plane: the mock's deterministic usage (`tollgate_upstream::usage_for`) priced with the
//! LiteLLM price map the stack imports (`litellm`'s bundled copy in `.venv`) by
//! `tollgate_core::cost::cost`. A ledger entry must equal this to the last decimal.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_core::pricing::{litellm, PriceBook, SearchContext, ServiceTier};
use tollgate_upstream::envoy::workspace_root;
use tollgate_upstream::{usage_for, Api, Controls, Tier, Usage};

/// litellm's bundled price map in the workspace's `.venv`.
pub fn litellm_map_path() -> Result<PathBuf> {
    let lib = workspace_root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .with_context(|| format!("no {} (run bash scripts/setup.sh)", lib.display()))?
        .filter_map(std::result::Result::ok)
        .map(|d| {
            d.path()
                .join("site-packages/litellm/model_prices_and_context_window_backup.json")
        })
        .find(|p| p.is_file())
        .context("litellm's model_prices_and_context_window_backup.json is not in .venv (run bash scripts/setup.sh)")
}

/// The LiteLLM map as imported by `tollgate_core` (the same importer the control plane uses),
/// loaded once per process.
pub fn litellm_book() -> Result<&'static PriceBook> {
    static BOOK: OnceLock<std::result::Result<PriceBook, String>> = OnceLock::new();
    BOOK.get_or_init(|| {
        let bytes = litellm_map_path()
            .and_then(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
            .map_err(|e| format!("{e:#}"))?;
        litellm::import(&bytes)
            .map(|i| i.book)
            .map_err(|e| format!("importing the LiteLLM map: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The provider hint of an API (the filter's `ApiFormat::provider`).
pub fn provider(api: Api) -> &'static str {
    match api {
        Api::AnthropicMessages => "anthropic",
        Api::Gemini => "gemini",
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAiEmbeddings => "openai",
        Api::BedrockConverse | Api::BedrockInvoke => "bedrock",
    }
}

/// The same token counts in `tollgate_core`'s buckets.
pub fn core_usage(u: &Usage) -> tollgate_core::usage::Usage {
    tollgate_core::usage::Usage {
        input_uncached: u.input_uncached,
        cache_read: u.cache_read,
        cache_write_5m: u.cache_write_5m,
        cache_write_1h: u.cache_write_1h,
        output: u.output,
        reasoning: u.reasoning,
        input_audio: u.input_audio,
        output_audio: u.output_audio,
        web_searches: u.web_searches,
        service_tier: match u.tier {
            Tier::Default => ServiceTier::Standard,
            Tier::Priority => ServiceTier::Priority,
            Tier::Flex => ServiceTier::Flex,
        },
        ..Default::default()
    }
}

/// The web-search context size `request` asks for, as the filter reads it.
fn search_context(api: Api, request: &Value) -> Result<SearchContext> {
    let body = serde_json::to_vec(request)?;
    let summary = tollgate_core::estimate::summarize(
        &body,
        format(api),
        Some("model"),
        &tollgate_core::estimate::EstimateConfig::default(),
    )
    .map_err(|e| anyhow::anyhow!("the filter would refuse this request: {e}"))?;
    Ok(summary.web_search.map(|w| w.context).unwrap_or_default())
}

fn format(api: Api) -> tollgate_core::provider::ApiFormat {
    use tollgate_core::provider::ApiFormat;
    match api {
        Api::OpenAiChat => ApiFormat::OpenAiChat,
        Api::OpenAiResponses => ApiFormat::OpenAiResponses,
        Api::OpenAiEmbeddings => ApiFormat::OpenAiEmbeddings,
        Api::AnthropicMessages => ApiFormat::AnthropicMessages,
        Api::Gemini => ApiFormat::GeminiGenerateContent,
        Api::BedrockConverse => ApiFormat::BedrockConverse,
        Api::BedrockInvoke => ApiFormat::BedrockInvoke,
    }
}

/// The usage the mock reports for `request` and its exact cost at `book`'s price for the
/// request's model.
pub fn expected(
    book: &PriceBook,
    api: Api,
    request: &Value,
    controls: &Controls,
) -> Result<(Usage, Decimal)> {
    expected_with_prefix(book, api, request, controls, "")
}

/// [`expected`], priced at the book's entry `{prefix}{model}` (`azure/` for an Azure
/// deployment the shipped config maps to the Azure entry of the model of its name).
pub fn expected_with_prefix(
    book: &PriceBook,
    api: Api,
    request: &Value,
    controls: &Controls,
    prefix: &str,
) -> Result<(Usage, Decimal)> {
    let usage = usage_for(api, request, controls)
        .map_err(|e| anyhow::anyhow!("the mock would refuse this request: {e}"))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .context("request has no model")?;
    let (_, price) = if prefix.is_empty() {
        book.lookup(model, Some(provider(api)))
    } else {
        book.models
            .get_key_value(&format!("{prefix}{model}"))
            .map(|(k, v)| (k.as_str(), v))
    }
    .with_context(|| format!("no price for {prefix}{model}"))?;
    let mut priced = core_usage(&usage);
    priced.search_context = search_context(api, request)?;
    let cost = tollgate_core::cost::cost(price, &priced)
        .map_err(|e| anyhow::anyhow!("pricing {model}: {e}"))?;
    Ok((usage, cost.total))
}

/// The worst-case cost the filter reserves for `request` (sent to `api`'s route) at `book`'s
/// price: `tollgate_core::estimate`, the code the filter runs, with the filter's default
/// limits. What a request charged by the `charge_estimate` policy costs.
pub fn worst_case(book: &PriceBook, api: Api, request: &Value) -> Result<Decimal> {
    use tollgate_core::estimate::{summarize, worst_case, EstimateConfig};
    let body = serde_json::to_vec(request)?;
    let cfg = EstimateConfig::default();
    // Bedrock's model is the path's: the request's `model` stands for it.
    let path_model = matches!(api, Api::BedrockConverse | Api::BedrockInvoke)
        .then(|| request.get("model").and_then(Value::as_str))
        .flatten();
    let summary = summarize(&body, format(api), path_model, &cfg)
        .map_err(|e| anyhow::anyhow!("the filter would refuse this request: {e}"))?;
    let (_, price) = book
        .lookup(&summary.model, Some(provider(api)))
        .with_context(|| format!("no price for {:?}", summary.model))?;
    Ok(worst_case(&summary, price, &cfg)
        .map_err(|e| anyhow::anyhow!("estimating: {e}"))?
        .cost)
}
