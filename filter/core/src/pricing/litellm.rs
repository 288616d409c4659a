//! Loader for LiteLLM's `model_prices_and_context_window.json`, the price map most teams keep.
//!
//! Takes every chat / completion / responses / embedding entry priced per token and reports
//! each entry it skipped and why. Rates are read from the JSON number's shortest round-trip
//! text, the same digits Python's `repr(float)` gives, so `Decimal` values equal LiteLLM's.
//! Key conventions follow LiteLLM 1.102 `litellm_core_utils/llm_cost_calc/utils.py`:
//! `input_cost_per_token_above_{N}[k]_tokens` threshold tiers, `tiered_pricing` range tables,
//! and `cache_creation_input_token_cost_above_1hr` for 1-hour cache writes. Service-tier
//! variants (`_priority`, `_flex`; `_fast` is LiteLLM's alias of priority) become
//! [`ModelPrice::service_tiers`], each key falling back to its standard key as LiteLLM's
//! `_get_cost_per_unit` does; `*_audio_token` and `*_image_token` rates the
//! [`super::ModalityRates`]; `search_context_cost_per_query` the web-search fees, with
//! LiteLLM's $0.035 per grounded prompt for Gemini models the map has no fee for.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{
    EffectiveRates, ModalityRates, ModelKind, ModelPrice, PriceBook, RangeTier, Rates, SearchFees,
    ServiceTier, ThresholdTier, TierOverride, TierRates, ToolFees,
};

/// The outcome of an import: the book and every entry left out, with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// The priced models.
    pub book: PriceBook,
    /// Entries not imported, by key.
    pub skipped: BTreeMap<String, SkipReason>,
}

/// Why an entry of the map was not imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// LiteLLM's documentation entry, not a model.
    #[error("documentation entry")]
    SampleSpec,
    /// Not a JSON object.
    #[error("entry is not an object")]
    NotAnObject,
    /// A mode Tollgate does not meter (images, audio, rerank, ...).
    #[error("mode {0:?} is not metered (chat, completion, responses, embedding are)")]
    Mode(String),
    /// No per-token input or output rate.
    #[error("no per-token price")]
    NoTokenPrice,
    /// A rate that is not a non-negative number.
    #[error("{field}: {reason}")]
    BadRate {
        /// The key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Rates that change with the time of day: not supported, so not guessed.
    #[error("off_peak_pricing (time-of-day rates) is not supported")]
    OffPeak,
    /// A malformed `tiered_pricing` table.
    #[error("tiered_pricing: {0}")]
    BadRangeTable(String),
}

/// Errors that stop the whole import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not JSON.
    #[error("price map is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The top level is not an object of entries.
    #[error("price map must be a JSON object of model entries")]
    NotAnObject,
}

const SERVICE_TIER_SUFFIXES: [&str; 5] = ["_ultrafast", "_priority", "_flex", "_fast", "_auto"];

/// Imports a LiteLLM price map.
pub fn import(json: &[u8]) -> Result<Import, ImportError> {
    let root: Value = serde_json::from_slice(json)?;
    let Value::Object(entries) = root else {
        return Err(ImportError::NotAnObject);
    };
    let mut out = Import::default();
    for (name, entry) in entries {
        match import_entry(&name, &entry) {
            Ok(price) => {
                out.book.models.insert(name, price);
            }
            Err(reason) => {
                out.skipped.insert(name, reason);
            }
        }
    }
    Ok(out)
}

/// Imports one entry of the map.
pub fn import_entry(name: &str, entry: &Value) -> Result<ModelPrice, SkipReason> {
    if name == "sample_spec" {
        return Err(SkipReason::SampleSpec);
    }
    let e = entry.as_object().ok_or(SkipReason::NotAnObject)?;
    let kind = match e.get("mode").and_then(Value::as_str).unwrap_or("chat") {
        "chat" => ModelKind::Chat,
        "completion" => ModelKind::Completion,
        "responses" => ModelKind::Responses,
        "embedding" => ModelKind::Embedding,
        other => return Err(SkipReason::Mode(other.to_string())),
    };
    if e.contains_key("off_peak_pricing") {
        return Err(SkipReason::OffPeak);
    }
    let input = rate(e, "input_cost_per_token")?;
    let mut output = rate(e, "output_cost_per_token")?;
    let ranges = range_table(e)?;
    if input.is_none() && output.is_none() && ranges.is_empty() {
        return Err(SkipReason::NoTokenPrice);
    }
    // LiteLLM bills image-output models' tokens at their image-token rate when they have no
    // plain output rate.
    if output.unwrap_or_default().is_zero() {
        if let Some(image) = rate(e, "output_cost_per_image_token")? {
            output = Some(image);
        }
    }
    let rates = Rates {
        input: input.unwrap_or_default(),
        output: output.unwrap_or_default(),
        cache_read: rate(e, "cache_read_input_token_cost")?,
        cache_write_5m: rate(e, "cache_creation_input_token_cost")?,
        cache_write_1h: rate(e, "cache_creation_input_token_cost_above_1hr")?,
        reasoning: rate(e, "output_cost_per_reasoning_token")?,
    };
    let provider = e.get("litellm_provider").and_then(Value::as_str);
    let mut ranges = resolve_ranges(ranges, &rates);
    let mut rates = rates;
    if provider.is_some_and(|p| ALIBABA_PROVIDERS.contains(&p)) {
        alibaba_conventions(&mut rates, &mut ranges);
    }
    let tiers = threshold_tiers(e, provider == Some("xai"))?;
    Ok(ModelPrice {
        provider: provider.map(str::to_string),
        kind,
        service_tiers: service_tiers(e, &tiers)?,
        modality: ModalityRates {
            input_audio: rate(e, "input_cost_per_audio_token")?,
            output_audio: rate(e, "output_cost_per_audio_token")?,
            input_image: rate(e, "input_cost_per_image_token")?,
            output_image: rate(e, "output_cost_per_image_token")?,
        },
        tools: tool_fees(e, provider, name)?,
        tiers,
        ranges,
        max_output_tokens: e
            .get("max_output_tokens")
            .or_else(|| e.get("max_tokens"))
            .and_then(Value::as_u64),
        rates,
    })
}

/// The service tiers whose keys the entry has (`input_cost_per_token_priority`, ...): each
/// key of a tier that is there replaces the standard rate, base and per threshold.
fn service_tiers(
    e: &Map<String, Value>,
    thresholds: &[ThresholdTier],
) -> Result<BTreeMap<ServiceTier, TierRates>, SkipReason> {
    let mut out = BTreeMap::new();
    // `_fast` bills as priority in LiteLLM; the map's own `_priority` keys come first.
    for (tier, suffixes) in [
        (ServiceTier::Priority, &["priority", "fast"][..]),
        (ServiceTier::Flex, &["flex"][..]),
    ] {
        for suffix in suffixes {
            let at = |key: &str| rate(e, &format!("{key}_{suffix}"));
            let overrides = |above: &str| -> Result<TierOverride, SkipReason> {
                Ok(TierOverride {
                    input: at(&format!("input_cost_per_token{above}"))?,
                    output: at(&format!("output_cost_per_token{above}"))?,
                    cache_read: at(&format!("cache_read_input_token_cost{above}"))?,
                    cache_write_5m: at(&format!("cache_creation_input_token_cost{above}"))?,
                })
            };
            let base = overrides("")?;
            let mut above = BTreeMap::new();
            for t in thresholds {
                let o = overrides(&format!("_above_{}_tokens", threshold_name(e, t)))?;
                if o != TierOverride::default() {
                    above.insert(t.above_prompt_tokens, o);
                }
            }
            let rates = TierRates {
                base,
                input_audio: at("input_cost_per_audio_token")?,
                above,
            };
            if rates != TierRates::default() {
                out.entry(tier).or_insert(rates);
            }
        }
    }
    Ok(out)
}

/// How the entry spells a threshold in its keys (`200k` or `200000`).
fn threshold_name(e: &Map<String, Value>, t: &ThresholdTier) -> String {
    let n = t.above_prompt_tokens;
    let k = format!("{}k", n / 1000);
    if n.is_multiple_of(1000) && e.contains_key(&format!("input_cost_per_token_above_{k}_tokens")) {
        k
    } else {
        n.to_string()
    }
}

/// Gemini's grounding fee where the map has none (LiteLLM's `cost_per_web_search_request`).
const GEMINI_DEFAULT_SEARCH_FEE: Decimal = Decimal::from_parts(35, 0, 0, false, 3);

fn tool_fees(
    e: &Map<String, Value>,
    provider: Option<&str>,
    name: &str,
) -> Result<ToolFees, SkipReason> {
    // Claude on Vertex bills searches as Anthropic does.
    let gemini = provider.is_some_and(|p| p == "gemini" || p.starts_with("vertex_ai"))
        && !name.contains("claude");
    let fees = match e.get("search_context_cost_per_query") {
        Some(Value::Object(sizes)) => {
            let size = |key: &str| rate(sizes, key).map(Option::unwrap_or_default);
            Some(SearchFees {
                low: size("search_context_size_low")?,
                medium: size("search_context_size_medium")?,
                high: size("search_context_size_high")?,
            })
        }
        _ if gemini => Some(SearchFees {
            low: GEMINI_DEFAULT_SEARCH_FEE,
            medium: GEMINI_DEFAULT_SEARCH_FEE,
            high: GEMINI_DEFAULT_SEARCH_FEE,
        }),
        _ => None,
    };
    let per_query = e.get("web_search_billing_unit").and_then(Value::as_str) == Some("per_query");
    Ok(ToolFees {
        web_search: fees,
        web_search_per_prompt: gemini && !per_query,
    })
}

/// Reads an optional rate: a JSON number (or numeric string, as LiteLLM also accepts).
fn rate(e: &Map<String, Value>, key: &str) -> Result<Option<Decimal>, SkipReason> {
    match e.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => decimal(v).map(Some).map_err(|reason| SkipReason::BadRate {
            field: key.to_string(),
            reason,
        }),
    }
}

/// A JSON number or numeric string as an exact `Decimal`, from its shortest round-trip text.
fn decimal(v: &Value) -> Result<Decimal, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(format!("expected a number, got {other}")),
    };
    let d = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text)
    } else {
        text.parse::<Decimal>()
    }
    .map_err(|err| format!("{text:?} is not a decimal: {err}"))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{text} is negative"));
    }
    Ok(d.normalize())
}

/// `200k` → 200000, `256000` → 256000, as LiteLLM's `_parse_above_token_threshold`.
fn parse_threshold(text: &str) -> Option<u64> {
    let (digits, scale) = match text.strip_suffix('k') {
        Some(d) => (d, 1000),
        None => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn threshold_tiers(
    e: &Map<String, Value>,
    inclusive: bool,
) -> Result<Vec<ThresholdTier>, SkipReason> {
    let mut tiers = Vec::new();
    for (key, value) in e {
        let Some(rest) = key.strip_prefix("input_cost_per_token_above_") else {
            continue;
        };
        if value.is_null() || SERVICE_TIER_SUFFIXES.iter().any(|s| key.ends_with(s)) {
            continue;
        }
        let Some(n) = rest.strip_suffix("_tokens") else {
            continue;
        };
        let Some(above) = parse_threshold(n) else {
            continue;
        };
        let input = decimal(value).map_err(|reason| SkipReason::BadRate {
            field: key.clone(),
            reason,
        })?;
        tiers.push(ThresholdTier {
            above_prompt_tokens: above,
            inclusive,
            input,
            output: rate(e, &format!("output_cost_per_token_above_{n}_tokens"))?,
            cache_read: rate(e, &format!("cache_read_input_token_cost_above_{n}_tokens"))?,
            cache_write_5m: rate(
                e,
                &format!("cache_creation_input_token_cost_above_{n}_tokens"),
            )?,
            cache_write_1h: rate(
                e,
                &format!("cache_creation_input_token_cost_above_1hr_above_{n}_tokens"),
            )?,
        });
    }
    tiers.sort_by_key(|t| t.above_prompt_tokens);
    Ok(tiers)
}

/// One raw `tiered_pricing` row before fallbacks are resolved.
struct RawRange {
    from: u64,
    to: u64,
    input: Decimal,
    output: Option<Decimal>,
    cache_read: Option<Decimal>,
    cache_write_5m: Option<Decimal>,
    cache_write_1h: Option<Decimal>,
    reasoning: Option<Decimal>,
}

fn range_table(e: &Map<String, Value>) -> Result<Vec<RawRange>, SkipReason> {
    let rows = match e.get("tiered_pricing") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err(SkipReason::BadRangeTable("expected a list".into())),
    };
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let row = row
            .as_object()
            .ok_or_else(|| SkipReason::BadRangeTable(format!("row {i} is not an object")))?;
        // LiteLLM ignores rows whose range is not a pair.
        let Some([from, to]) = row
            .get("range")
            .and_then(Value::as_array)
            .and_then(|r| <&[Value; 2]>::try_from(r.as_slice()).ok())
        else {
            continue;
        };
        let bound = |v: &Value| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e15)
                .map(|f| f as u64)
                .ok_or_else(|| SkipReason::BadRangeTable(format!("row {i}: range bound {v}")))
        };
        // A row without an input rate makes LiteLLM fall back to the flat rates for the
        // requests that land in it; rather than guess, refuse the entry.
        let input = rate(row, "input_cost_per_token")?.ok_or_else(|| {
            SkipReason::BadRangeTable(format!("row {i} has no input_cost_per_token"))
        })?;
        out.push(RawRange {
            from: bound(from)?,
            to: bound(to)?,
            input,
            output: rate(row, "output_cost_per_token")?,
            cache_read: rate(row, "cache_read_input_token_cost")?,
            cache_write_5m: rate(row, "cache_creation_input_token_cost")?,
            cache_write_1h: rate(row, "cache_creation_input_token_cost_above_1hr")?,
            reasoning: rate(row, "output_cost_per_reasoning_token")?,
        });
    }
    out.sort_by_key(|r| r.from);
    Ok(out)
}

/// Alibaba Model Studio (LiteLLM providers `dashscope`, `qwencloud`, `qwen_ai_platform`) has
/// its own calculator in LiteLLM: an unpriced cache read or write bills at the input rate,
/// and there is one cache-write rate whatever the entry's lifetime.
const ALIBABA_PROVIDERS: [&str; 3] = ["dashscope", "qwencloud", "qwen_ai_platform"];

fn alibaba_conventions(rates: &mut Rates, ranges: &mut [RangeTier]) {
    rates.cache_read = Some(rates.cache_read.unwrap_or(rates.input));
    let write = rates.cache_write_5m.unwrap_or(rates.input);
    rates.cache_write_5m = Some(write);
    rates.cache_write_1h = Some(write);
    for row in ranges {
        row.rates.cache_write_1h = row.rates.cache_write_5m;
    }
}

/// Fills each row's missing rates the way LiteLLM's `_get_tiered_base_costs` does: cache
/// rates fall back to the row's input rate, output to the model's output rate, and reasoning
/// to the row's output rate if the row names one, else the model's reasoning or output rate.
fn resolve_ranges(rows: Vec<RawRange>, base: &Rates) -> Vec<RangeTier> {
    rows.into_iter()
        .map(|r| {
            let output = r.output.unwrap_or(base.output);
            let cache_write_5m = r.cache_write_5m.unwrap_or(r.input);
            let cache_write_1h = r
                .cache_write_1h
                .filter(|v| !v.is_zero())
                .unwrap_or(cache_write_5m);
            let reasoning = match (r.reasoning, r.output) {
                (Some(x), _) | (None, Some(x)) => x,
                (None, None) => base.reasoning.unwrap_or(output),
            };
            RangeTier {
                from: r.from,
                to: r.to,
                rates: EffectiveRates {
                    input: r.input,
                    output,
                    cache_read: r.cache_read.unwrap_or(r.input),
                    cache_write_5m,
                    cache_write_1h,
                    reasoning,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::SearchContext;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn imports_and_reports_skips() {
        let map = br#"{
            "sample_spec": {"mode": "one of: chat, embedding"},
            "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "max_output_tokens": 16384,
                       "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                       "cache_read_input_token_cost": 1.25e-06},
            "dall-e-3": {"mode": "image_generation", "input_cost_per_pixel": 1e-08},
            "free": {"mode": "chat"},
            "neg": {"mode": "chat", "input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06},
            "str": {"mode": "embedding", "input_cost_per_token": "2e-08"},
            "gemini/gemini-2.5-pro": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                "input_cost_per_token_above_200k_tokens": 2.5e-06,
                "output_cost_per_token_above_200k_tokens": 1.5e-05,
                "input_cost_per_token_above_200k_tokens_priority": 9e-06},
            "q": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
                {"input_cost_per_token": 2.5e-07, "output_cost_per_token": 2e-06, "range": [256000.0, 1000000.0]},
                {"input_cost_per_token": 5e-08, "output_cost_per_token": 4e-07, "range": [0, 256000.0]},
                {"input_cost_per_token": 1e-03, "range": [5]}]}
        }"#;
        let imp = import(map).unwrap();
        assert_eq!(
            imp.book.models.keys().collect::<Vec<_>>(),
            ["gemini/gemini-2.5-pro", "gpt-4o", "q", "str"]
        );
        assert_eq!(imp.skipped["sample_spec"], SkipReason::SampleSpec);
        assert!(
            matches!(imp.skipped["dall-e-3"], SkipReason::Mode(ref m) if m == "image_generation")
        );
        assert_eq!(imp.skipped["free"], SkipReason::NoTokenPrice);
        assert!(imp.skipped["neg"]
            .to_string()
            .starts_with("input_cost_per_token: "));

        let gpt = &imp.book.models["gpt-4o"];
        assert_eq!(gpt.rates.input, d("0.0000025"));
        assert_eq!(gpt.rates.cache_read, Some(d("0.00000125")));
        assert_eq!(gpt.max_output_tokens, Some(16384));
        assert_eq!(imp.book.models["str"].rates.input, d("0.00000002"));

        let gem = &imp.book.models["gemini/gemini-2.5-pro"];
        assert_eq!(gem.tiers.len(), 1, "priority variant ignored");
        assert_eq!(gem.rates_for(200_000).input, d("0.00000125"));
        assert_eq!(gem.rates_for(200_001).input, d("0.0000025"));
        assert_eq!(gem.rates_for(200_001).output, d("0.000015"));

        let q = &imp.book.models["q"];
        assert_eq!(q.ranges.len(), 2, "row without a pair range ignored");
        assert_eq!(q.rates_for(256_000).input, d("0.00000005"));
        assert_eq!(q.rates_for(256_001).input, d("0.00000025"));
        assert_eq!(
            q.rates_for(256_001).cache_read,
            d("0.00000025"),
            "falls back to row input"
        );
        assert_eq!(
            q.rates_for(5_000_000).input,
            d("0.00000025"),
            "past the end: last row"
        );
        assert_eq!(q.rates_for(0).input, Decimal::ZERO, "no prompt: flat rates");
    }

    #[test]
    fn bad_maps() {
        assert!(matches!(import(b"[1]"), Err(ImportError::NotAnObject)));
        assert!(matches!(import(b"{"), Err(ImportError::Json(_))));
        let imp = import(br#"{"a": 5, "b": {"tiered_pricing": {}}}"#).unwrap();
        assert_eq!(imp.skipped["a"], SkipReason::NotAnObject);
        assert!(matches!(imp.skipped["b"], SkipReason::BadRangeTable(_)));
    }

    #[test]
    fn provider_conventions() {
        let imp = import(
            br#"{
            "dashscope/qwen": {"litellm_provider": "dashscope", "mode": "chat",
                "input_cost_per_token": 4e-07, "output_cost_per_token": 1.2e-06},
            "openai-like": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 4e-07, "output_cost_per_token": 1.2e-06},
            "peaky": {"mode": "chat", "input_cost_per_token": 1e-06, "off_peak_pricing": {}},
            "grok": {"litellm_provider": "xai", "mode": "chat", "input_cost_per_token": 1e-06,
                "output_cost_per_token": 1e-06, "input_cost_per_token_above_128k_tokens": 2e-06}
        }"#,
        )
        .unwrap();
        // Alibaba: unpriced cache tokens bill at the input rate, one write rate for both lifetimes.
        let q = imp.book.models["dashscope/qwen"].rates_for(10);
        assert_eq!(
            (q.cache_read, q.cache_write_5m, q.cache_write_1h),
            (d("4e-7"), d("4e-7"), d("4e-7"))
        );
        // Everyone else: an unpriced cache read or write falls back to the input rate too
        // (LiteLLM's cost path bills them zero; the provider does not), and says so.
        let openai = &imp.book.models["openai-like"];
        let o = openai.rates_for(10);
        assert_eq!(
            (o.cache_read, o.cache_write_5m, o.cache_write_1h),
            (d("4e-7"), d("4e-7"), d("4e-7"))
        );
        let u = crate::usage::Usage {
            input_uncached: 5,
            cache_read: 7,
            ..Default::default()
        };
        let f = crate::cost::priced(openai, &u).unwrap().1;
        assert!(f.cache_read && !f.cache_write_5m && !f.input_audio, "{f:?}");
        let qwen = &imp.book.models["dashscope/qwen"];
        assert!(!crate::cost::priced(qwen, &u).unwrap().1.any());
        assert_eq!(imp.skipped["peaky"], SkipReason::OffPeak);
        // xAI bills the long-context tier from exactly the threshold on.
        assert_eq!(imp.book.models["grok"].rates_for(128_000).input, d("2e-6"));
    }

    #[test]
    fn service_tiers_modalities_and_tool_fees() {
        let imp = import(
            br#"{
            "gpt-5": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                "output_cost_per_reasoning_token": 1.2e-05,
                "cache_read_input_token_cost": 1.25e-07,
                "input_cost_per_token_priority": 2.5e-06, "output_cost_per_token_priority": 2e-05,
                "input_cost_per_token_flex": 6.25e-07,
                "input_cost_per_token_above_272k_tokens": 2.5e-06,
                "input_cost_per_token_above_272k_tokens_priority": 5e-06,
                "input_cost_per_audio_token": 4e-05, "output_cost_per_audio_token": 8e-05,
                "search_context_cost_per_query": {"search_context_size_low": 0.025,
                    "search_context_size_medium": 0.0275, "search_context_size_high": 0.03}},
            "gemini/gemini-2.0-flash": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 1e-07, "output_cost_per_token": 4e-07},
            "gemini/gemini-3-pro": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 2e-06, "output_cost_per_token": 1.2e-05,
                "web_search_billing_unit": "per_query",
                "search_context_cost_per_query": {"search_context_size_medium": 0.014}}
        }"#,
        )
        .unwrap();
        let gpt = &imp.book.models["gpt-5"];
        let pri = |prompt| gpt.rates_at(prompt, ServiceTier::Priority);
        assert_eq!(pri(10).input, d("2.5e-6"));
        assert_eq!(pri(10).output, d("2e-5"));
        // a tier with its own output rate bills reasoning at it
        assert_eq!(pri(10).reasoning, d("2e-5"));
        assert_eq!(pri(10).cache_read, d("1.25e-7"), "no tier key: standard");
        assert_eq!(pri(272_001).input, d("5e-6"));
        let flex = |prompt| gpt.rates_at(prompt, ServiceTier::Flex);
        assert_eq!(flex(10).input, d("6.25e-7"));
        assert_eq!(flex(10).output, d("1e-5"), "no flex output: standard");
        assert_eq!(flex(10).reasoning, d("1.2e-5"));
        assert_eq!(flex(272_001).input, d("2.5e-6"));
        assert_eq!(gpt.dearest_service_tier(), ServiceTier::Priority);
        assert_eq!(gpt.modality.input_audio, Some(d("4e-5")));
        assert_eq!(gpt.modality.output_audio, Some(d("8e-5")));
        let fees = gpt.tools.web_search.unwrap();
        assert_eq!(fees.at(SearchContext::High), d("0.03"));
        assert!(!gpt.tools.web_search_per_prompt);
        assert!(!gpt.has_negative_rate());

        let flash = &imp.book.models["gemini/gemini-2.0-flash"];
        assert_eq!(flash.tools.web_search.unwrap().medium, d("0.035"));
        assert!(flash.tools.web_search_per_prompt);
        assert_eq!(flash.tools.web_searches_billed(4), 1);
        assert_eq!(flash.dearest_service_tier(), ServiceTier::Standard);
        let g3 = &imp.book.models["gemini/gemini-3-pro"];
        assert_eq!(g3.tools.web_searches_billed(4), 4);
        assert_eq!(g3.tools.web_search.unwrap().low, Decimal::ZERO);
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("200k"), Some(200_000));
        assert_eq!(parse_threshold("128"), Some(128));
        assert_eq!(parse_threshold("x"), None);
        assert_eq!(parse_threshold("99999999999999999999k"), None);
    }
}
