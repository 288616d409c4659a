//! Prices at the API boundary: rates in and out per 1M tokens (converted with core's
//! `per_million`, which refuses rates off by 10⁶), and the LiteLLM import shared by
//! `POST /v1/prices/import` and `tollgate prices import`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::pricing::{
    self, litellm, EffectiveRates, ModalityRates, ModelKind, ModelPrice, RangeTier, Rates,
    SearchFees, ServiceTier, ThresholdTier, TierOverride, TierRates, ToolFees,
};

use crate::store::prices::{NewRevision, PriceRevision};
use crate::store::{Store, StoreError};

/// A price as the API accepts it: USD per 1M tokens.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    /// Model name (required by `POST /v1/prices`; `PUT` takes it from the path).
    #[serde(default)]
    pub model: Option<String>,
    /// Provider as LiteLLM spells it (`openai`, `anthropic`, ...): the lookup hint.
    #[serde(default)]
    pub provider: Option<String>,
    /// Endpoint kind.
    #[serde(default)]
    pub kind: ModelKind,
    /// Uncached prompt tokens.
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Rate)]
    pub input_per_million: Decimal,
    /// Output tokens.
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Rate)]
    pub output_per_million: Decimal,
    /// Cache reads.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_read_per_million: Option<Decimal>,
    /// 5-minute cache writes.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_write_5m_per_million: Option<Decimal>,
    /// 1-hour cache writes.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_write_1h_per_million: Option<Decimal>,
    /// Reasoning tokens, when priced apart.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub reasoning_per_million: Option<Decimal>,
    /// Long-context tiers.
    #[serde(default)]
    pub tiers: Vec<TierInput>,
    /// Output cap used by worst-case estimates.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// From when (Unix seconds); now when absent.
    #[serde(default)]
    pub effective_from: Option<i64>,
    /// Input audio tokens, when priced apart (else the input rate).
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub input_audio_per_million: Option<Decimal>,
    /// Output audio tokens, when priced apart (else the output rate).
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub output_audio_per_million: Option<Decimal>,
    /// Rates of the service tiers that bill differently (`priority`, `flex`); each rate given
    /// replaces the standard one.
    #[serde(default, deserialize_with = "objects")]
    pub service_tiers: BTreeMap<ServiceTier, TierRatesPerMillion>,
    /// The provider's fee per web search, USD per call, by context size (a provider's
    /// published rate where the LiteLLM map has none).
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<SearchFeesInput>)]
    pub web_search_per_call: Option<SearchFeesInput>,
}

/// Reads a JSON object (or `null`) as `T`. serde's derive would also take a struct written as
/// an array of its fields, which the published schema refuses.
fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v @ serde_json::Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("expected an object, got {other}"))),
    }
}

/// A map whose every value is read by [`object`].
fn objects<'de, D, K, T>(d: D) -> Result<BTreeMap<K, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: serde::de::DeserializeOwned + Ord,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let map = BTreeMap::<K, serde_json::Value>::deserialize(d)?;
    map.into_iter()
        .map(|(k, v)| match v {
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(|t| (k, t))
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!("expected an object, got {other}"))),
        })
        .collect()
}

/// A service tier's base rates, per 1M tokens, as the API takes and shows them (rates above
/// long-context thresholds come from LiteLLM imports and are not shown).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRatesPerMillion {
    /// Input rate.
    #[serde(
        default,
        deserialize_with = "crate::http::money::strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub input_per_million: Option<Decimal>,
    /// Output rate.
    #[serde(
        default,
        deserialize_with = "crate::http::money::strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub output_per_million: Option<Decimal>,
    /// Cache-read rate.
    #[serde(
        default,
        deserialize_with = "crate::http::money::strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_read_per_million: Option<Decimal>,
    /// 5-minute cache-write rate.
    #[serde(
        default,
        deserialize_with = "crate::http::money::strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_write_5m_per_million: Option<Decimal>,
}

/// Web-search fees, USD per call.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFeesInput {
    /// At `low` context.
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Fee)]
    pub low: Decimal,
    /// At `medium` context (Anthropic's and Gemini's searches bill at it).
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Fee)]
    pub medium: Decimal,
    /// At `high` context.
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Fee)]
    pub high: Decimal,
}

/// The dearest fee per web search accepted: providers charge cents ($0.01–$0.05); a fee in
/// dollars is a unit mistake (per 1,000 calls given per call).
const MAX_SEARCH_FEE: Decimal = Decimal::from_parts(1, 0, 0, false, 0);

impl SearchFeesInput {
    fn to_fees(&self) -> Result<SearchFees, PriceInputError> {
        for (size, fee) in [
            ("low", self.low),
            ("medium", self.medium),
            ("high", self.high),
        ] {
            if fee.is_sign_negative() && !fee.is_zero() || fee > MAX_SEARCH_FEE {
                return Err(PriceInputError {
                    field: format!("web_search_per_call.{size}"),
                    detail: format!(
                        "{fee} USD per search is outside [0, {MAX_SEARCH_FEE}]: is it per 1,000 searches?"
                    ),
                });
            }
        }
        Ok(SearchFees {
            low: self.low,
            medium: self.medium,
            high: self.high,
        })
    }
}

impl TierRatesPerMillion {
    fn to_rates(&self, tier: ServiceTier) -> Result<TierRates, PriceInputError> {
        if tier.is_standard() {
            return Err(PriceInputError {
                field: "service_tiers.standard".into(),
                detail: "the standard tier's rates are the price's own".into(),
            });
        }
        let p = format!("service_tiers.{}.", tier.name());
        Ok(TierRates {
            base: TierOverride {
                input: opt_rate(&p, "input_per_million", self.input_per_million)?,
                output: opt_rate(&p, "output_per_million", self.output_per_million)?,
                cache_read: opt_rate(&p, "cache_read_per_million", self.cache_read_per_million)?,
                cache_write_5m: opt_rate(
                    &p,
                    "cache_write_5m_per_million",
                    self.cache_write_5m_per_million,
                )?,
            },
            ..TierRates::default()
        })
    }
}

/// A long-context tier, per 1M tokens.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    /// Applies above this many prompt tokens.
    pub above_prompt_tokens: u64,
    /// Also at exactly that many.
    #[serde(default)]
    pub inclusive: bool,
    /// Input rate.
    #[serde(deserialize_with = "crate::http::money::strict")]
    #[schema(value_type = crate::http::formats::Rate)]
    pub input_per_million: Decimal,
    /// Output rate.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub output_per_million: Option<Decimal>,
    /// Cache read rate.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_read_per_million: Option<Decimal>,
    /// 5-minute cache write rate.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_write_5m_per_million: Option<Decimal>,
    /// 1-hour cache write rate.
    #[serde(default, deserialize_with = "crate::http::money::strict_opt")]
    #[schema(value_type = Option<crate::http::formats::Rate>)]
    pub cache_write_1h_per_million: Option<Decimal>,
}

/// A refused rate: the field path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct PriceInputError {
    /// Field path (`tiers[0].input_per_million`).
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

fn rate(prefix: &str, field: &'static str, v: Decimal) -> Result<Decimal, PriceInputError> {
    pricing::per_million(field, v).map_err(|e| {
        let text = e.to_string();
        PriceInputError {
            field: format!("{prefix}{field}"),
            detail: text
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&text)
                .to_string(),
        }
    })
}

fn opt_rate(
    prefix: &str,
    field: &'static str,
    v: Option<Decimal>,
) -> Result<Option<Decimal>, PriceInputError> {
    v.map(|v| rate(prefix, field, v)).transpose()
}

impl PriceInput {
    /// The per-token price, every rate through core's unit sanity check.
    pub fn to_price(&self) -> Result<ModelPrice, PriceInputError> {
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for (i, t) in self.tiers.iter().enumerate() {
            let p = format!("tiers[{i}].");
            tiers.push(ThresholdTier {
                above_prompt_tokens: t.above_prompt_tokens,
                inclusive: t.inclusive,
                input: rate(&p, "input_per_million", t.input_per_million)?,
                output: opt_rate(&p, "output_per_million", t.output_per_million)?,
                cache_read: opt_rate(&p, "cache_read_per_million", t.cache_read_per_million)?,
                cache_write_5m: opt_rate(
                    &p,
                    "cache_write_5m_per_million",
                    t.cache_write_5m_per_million,
                )?,
                cache_write_1h: opt_rate(
                    &p,
                    "cache_write_1h_per_million",
                    t.cache_write_1h_per_million,
                )?,
            });
        }
        if let Some(p) = &self.provider {
            if p.is_empty() || p.len() > 64 {
                return Err(PriceInputError {
                    field: "provider".into(),
                    detail: "must be 1 to 64 characters".into(),
                });
            }
        }
        let price = ModelPrice {
            provider: self.provider.clone(),
            kind: self.kind,
            rates: Rates {
                input: rate("", "input_per_million", self.input_per_million)?,
                output: rate("", "output_per_million", self.output_per_million)?,
                cache_read: opt_rate("", "cache_read_per_million", self.cache_read_per_million)?,
                cache_write_5m: opt_rate(
                    "",
                    "cache_write_5m_per_million",
                    self.cache_write_5m_per_million,
                )?,
                cache_write_1h: opt_rate(
                    "",
                    "cache_write_1h_per_million",
                    self.cache_write_1h_per_million,
                )?,
                reasoning: opt_rate("", "reasoning_per_million", self.reasoning_per_million)?,
            },
            tiers,
            ranges: Vec::new(),
            max_output_tokens: self.max_output_tokens,
            service_tiers: self
                .service_tiers
                .iter()
                .map(|(tier, r)| Ok((*tier, r.to_rates(*tier)?)))
                .collect::<Result<_, PriceInputError>>()?,
            modality: ModalityRates {
                input_audio: opt_rate("", "input_audio_per_million", self.input_audio_per_million)?,
                output_audio: opt_rate(
                    "",
                    "output_audio_per_million",
                    self.output_audio_per_million,
                )?,
                ..ModalityRates::default()
            },
            tools: ToolFees {
                web_search: self
                    .web_search_per_call
                    .as_ref()
                    .map(SearchFeesInput::to_fees)
                    .transpose()?,
                web_search_per_prompt: false,
            },
        };
        check_price(&price)?;
        Ok(price)
    }
}

/// Rates per 1M tokens, for display.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RatesView {
    /// Uncached prompt tokens.
    pub input_per_million: Decimal,
    /// Output tokens.
    pub output_per_million: Decimal,
    /// Cache reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<Decimal>,
    /// 5-minute cache writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_5m_per_million: Option<Decimal>,
    /// 1-hour cache writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_million: Option<Decimal>,
    /// Reasoning tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_per_million: Option<Decimal>,
    /// Input audio tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_audio_per_million: Option<Decimal>,
    /// Output audio tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_audio_per_million: Option<Decimal>,
    /// Input image tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_image_per_million: Option<Decimal>,
    /// Output image tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_image_per_million: Option<Decimal>,
}

/// A tier per 1M tokens.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierView {
    /// Applies above this many prompt tokens.
    pub above_prompt_tokens: u64,
    /// Also at exactly that many.
    pub inclusive: bool,
    /// Input rate.
    pub input_per_million: Decimal,
    /// Output rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_per_million: Option<Decimal>,
    /// Cache read rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<Decimal>,
    /// 5-minute cache write rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_5m_per_million: Option<Decimal>,
    /// 1-hour cache write rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_million: Option<Decimal>,
}

/// A range-table row per 1M tokens (range tables come from LiteLLM imports).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RangeView {
    /// Exclusive lower bound of prompt tokens.
    pub from: u64,
    /// Inclusive upper bound.
    pub to: u64,
    /// Rates of the row.
    pub rates: BTreeMap<&'static str, Decimal>,
}

/// A revision as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceView {
    /// Model.
    pub model: String,
    /// Revision id.
    pub revision: i64,
    /// From when.
    pub effective_from: i64,
    /// Where it came from.
    pub source: String,
    /// When stored.
    pub created_at: i64,
    /// `true` for a revision that deletes the model.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Endpoint kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModelKind>,
    /// Base rates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<RatesView>,
    /// Tiers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierView>,
    /// Range table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeView>,
    /// Output cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Service tiers that bill differently.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tiers: BTreeMap<ServiceTier, TierRatesPerMillion>,
    /// Fee per web search, USD, by context size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_search_per_call: Option<SearchFees>,
}

fn pm(d: Decimal) -> Decimal {
    pricing::to_per_million(d)
}

fn range_rates(r: &EffectiveRates) -> BTreeMap<&'static str, Decimal> {
    [
        ("input_per_million", r.input),
        ("output_per_million", r.output),
        ("cache_read_per_million", r.cache_read),
        ("cache_write_5m_per_million", r.cache_write_5m),
        ("cache_write_1h_per_million", r.cache_write_1h),
        ("reasoning_per_million", r.reasoning),
    ]
    .into_iter()
    .map(|(k, v)| (k, pm(v)))
    .collect()
}

impl From<&PriceRevision> for PriceView {
    fn from(r: &PriceRevision) -> Self {
        let p = r.price.as_ref();
        PriceView {
            model: r.model.clone(),
            revision: r.revision,
            effective_from: r.effective_from,
            source: r.source.clone(),
            created_at: r.created_at,
            deleted: p.is_none(),
            provider: p.and_then(|p| p.provider.clone()),
            kind: p.map(|p| p.kind),
            rates: p.map(|p| RatesView {
                input_per_million: pm(p.rates.input),
                output_per_million: pm(p.rates.output),
                cache_read_per_million: p.rates.cache_read.map(pm),
                cache_write_5m_per_million: p.rates.cache_write_5m.map(pm),
                cache_write_1h_per_million: p.rates.cache_write_1h.map(pm),
                reasoning_per_million: p.rates.reasoning.map(pm),
                input_audio_per_million: p.modality.input_audio.map(pm),
                output_audio_per_million: p.modality.output_audio.map(pm),
                input_image_per_million: p.modality.input_image.map(pm),
                output_image_per_million: p.modality.output_image.map(pm),
            }),
            service_tiers: p
                .map(|p| {
                    p.service_tiers
                        .iter()
                        .map(|(tier, t)| {
                            let view = TierRatesPerMillion {
                                input_per_million: t.base.input.map(pm),
                                output_per_million: t.base.output.map(pm),
                                cache_read_per_million: t.base.cache_read.map(pm),
                                cache_write_5m_per_million: t.base.cache_write_5m.map(pm),
                            };
                            (*tier, view)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            web_search_per_call: p.and_then(|p| p.tools.web_search),
            tiers: p
                .map(|p| {
                    p.tiers
                        .iter()
                        .map(|t| TierView {
                            above_prompt_tokens: t.above_prompt_tokens,
                            inclusive: t.inclusive,
                            input_per_million: pm(t.input),
                            output_per_million: t.output.map(pm),
                            cache_read_per_million: t.cache_read.map(pm),
                            cache_write_5m_per_million: t.cache_write_5m.map(pm),
                            cache_write_1h_per_million: t.cache_write_1h.map(pm),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ranges: p
                .map(|p| {
                    p.ranges
                        .iter()
                        .map(|r: &RangeTier| RangeView {
                            from: r.from,
                            to: r.to,
                            rates: range_rates(&r.rates),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            max_output_tokens: p.and_then(|p| p.max_output_tokens),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Models whose price changed or is new: a revision was added for each.
    pub imported: usize,
    /// Models whose price is already the one in effect.
    pub unchanged: usize,
    /// Entries left out, with the reason.
    pub skipped: Vec<Skipped>,
}

/// One entry left out of an import.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    /// The entry's key.
    pub model: String,
    /// Why.
    pub reason: String,
}

/// Why an import failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a LiteLLM price map.
    #[error("{0}")]
    Format(#[from] litellm::ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Largest `max_output_tokens` accepted: 10,000,000. The largest output cap of any model
/// today is in the hundreds of thousands; ten million leaves room for a decade of growth while
/// keeping every worst-case estimate (`tokens × rate`) far from `Decimal`'s range and refusing
/// the 2⁶³ of a typo or an attack.
pub const MAX_OUTPUT_TOKENS: u64 = 10_000_000;

/// The one unit check every price passes, however it enters (`PUT`/`POST /v1/prices`, the
/// LiteLLM import): each rate, the highest of its tiers and ranges included, within
/// [`tollgate_core::pricing::check_per_million`]'s bounds once expressed per 1M tokens, and
/// `max_output_tokens` at most [`MAX_OUTPUT_TOKENS`]. The error names the field.
pub fn check_price(price: &ModelPrice) -> Result<(), PriceInputError> {
    // In `EffectiveRates::all`'s order.
    const NAMES: [&str; 6] = [
        "input_per_million",
        "output_per_million",
        "cache_read_per_million",
        "cache_write_5m_per_million",
        "cache_write_1h_per_million",
        "reasoning_per_million",
    ];
    for (field, rate) in NAMES.iter().zip(price.max_rates().all()) {
        pricing::check_per_million(field, pricing::to_per_million(rate)).map_err(|e| {
            PriceInputError {
                field: (*field).to_string(),
                detail: e.to_string(),
            }
        })?;
    }
    if let Some(m) = price.max_output_tokens.filter(|&m| m > MAX_OUTPUT_TOKENS) {
        return Err(PriceInputError {
            field: "max_output_tokens".into(),
            detail: format!("{m} is above {MAX_OUTPUT_TOKENS}"),
        });
    }
    Ok(())
}

/// Imports a LiteLLM price map effective from `effective_from`: one revision per model whose
/// price differs from the one in effect then; every skipped entry reported with its reason.
pub async fn import_litellm(
    store: &Store,
    json: &[u8],
    effective_from: i64,
    now: i64,
) -> Result<ImportReport, ImportError> {
    let import = litellm::import(json)?;
    let current = store.effective_prices(effective_from).await?;
    let mut report = ImportReport {
        skipped: import
            .skipped
            .iter()
            .map(|(model, reason)| Skipped {
                model: model.clone(),
                reason: reason.to_string(),
            })
            .collect(),
        ..ImportReport::default()
    };
    let mut revisions = Vec::new();
    for (model, price) in import.book.models {
        if let Err(e) = check_price(&price) {
            report.skipped.push(Skipped {
                model,
                reason: e.to_string(),
            });
            continue;
        }
        if current.book.models.get(&model) == Some(&price) {
            report.unchanged += 1;
        } else {
            revisions.push(NewRevision {
                model,
                effective_from,
                price: Some(price),
                source: "litellm".into(),
            });
        }
    }
    report.imported = revisions.len();
    store.add_price_revisions(&revisions, now).await?;
    Ok(report)
}
