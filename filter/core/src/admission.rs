//! Admission: everything the filter decides about a metered request before its budgets —
//! which cluster may carry it, whether the snapshot can judge it, what it asks for, what it is
//! priced at and its worst case, and the body rewrite it needs. The budgets are then decided
//! with [`crate::budget::decide`] against the local spend the filter reads from shared data.
//!
//! Every refusal here is a [`Reply`] the filter sends as it is: nothing of a refused request
//! reaches a provider.

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::config::{Config, ProviderRoute, StalePolicy, UnknownModel};
use crate::estimate::{summarize, worst_case_from, EstimateConfig, EstimateError};
use crate::pricing::{ModelPrice, Prices, SearchContext};
use crate::provider::Route;
use crate::reply::{self, Reply};

/// A metered request must go to its own provider's cluster: the cluster injects the provider
/// key, so another provider's key would carry it. `cluster` is the name of the cluster Envoy
/// routed the request to (`xds.cluster_name`). No check when no provider is configured (the
/// harness and tests without clusters).
pub fn check_cluster(
    route: &Route<'_>,
    providers: &BTreeMap<String, ProviderRoute>,
    cluster: Option<&[u8]>,
    method: &str,
    path: &str,
) -> Result<(), Reply> {
    if providers.is_empty() {
        return Ok(());
    }
    let name = route.format.provider();
    let want = providers.get(name).map(|p| p.cluster.as_bytes());
    if want.is_some() && want == cluster {
        return Ok(());
    }
    Err(reply::error(
        404,
        "provider_route_mismatch",
        &format!(
            "Tollgate: {method} {} speaks the {name} API but is not routed to the {name} \
             cluster; refused",
            path.split_once('?').map_or(path, |(p, _)| p)
        ),
    ))
}

/// The snapshot to judge requests by: the one loaded (`None`: none yet), unless it is older
/// (`age_s` of it, in seconds) than the configuration lets a stale snapshot judge.
pub fn usable_snapshot<S>(
    snapshot: Option<S>,
    age_s: impl FnOnce(&S) -> i64,
    cfg: &Config,
) -> Result<S, Reply> {
    let Some(snapshot) = snapshot else {
        return Err(reply::error(
            503,
            "budget_snapshot_unavailable",
            "Tollgate has no budget snapshot yet; retry shortly",
        ));
    };
    let max = i64::try_from(cfg.max_staleness_s).unwrap_or(i64::MAX);
    if age_s(&snapshot) > max && cfg.stale_policy == StalePolicy::Deny {
        return Err(reply::error(
            503,
            "budget_snapshot_stale",
            "Tollgate's budget snapshot is stale and policy denies; retry later",
        ));
    }
    Ok(snapshot)
}

/// The price side of an admitted request: what settlement needs to charge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The price book key the request is charged under (the model name when unpriced).
    pub model: String,
    /// The model the request named, when the provider said another one served it.
    pub requested_model: Option<String>,
    /// Its price; `None` when unpriced by policy. Shared with the worker's [`crate::pricing::PriceMemo`]:
    /// a price with tiers and tools is a dozen allocations to copy, twice per request.
    pub price: Option<Arc<ModelPrice>>,
    /// The price book version it was priced with.
    pub price_version: u64,
    /// The worst-case cost reserved on every budget of the chain.
    pub estimate: Decimal,
    /// The answer streams.
    pub stream: bool,
    /// The web-search context size the request asked for: the answer does not repeat it.
    pub search_context: SearchContext,
}

/// A request body judged: its price and worst case, and the body to send instead of the
/// client's, if it needs rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The price side.
    pub priced: Priced,
    /// The rewritten body (`stream_options.include_usage`), when the request needs one.
    pub new_body: Option<Vec<u8>>,
}

/// Reads the body of a request on `route` once and prices it: the model from the body (or
/// the path), its price in `book` (or the `unknown_model` policy), the worst case, and the
/// include_usage rewrite when the configuration asks for it.
pub fn judge(
    body: &[u8],
    route: &Route<'_>,
    book: &impl Prices,
    cfg: &Config,
    estimate: &EstimateConfig,
) -> Result<Judged, Reply> {
    let invalid = |e: EstimateError| {
        let status = if matches!(e, EstimateError::BodyTooLarge { .. }) {
            413
        } else {
            400
        };
        reply::error(status, "invalid_request_error", &format!("Tollgate: {e}"))
    };
    let summary = summarize(body, route.format, route.path_model, estimate).map_err(invalid)?;
    let provider = route.format.provider();
    let asked: &str = if route.format.api().model_is_deployment() {
        let deployments = cfg.identity.providers.get(provider).map(|p| &p.deployments);
        match deployments.and_then(|d| d.get(summary.model.as_ref())) {
            Some(model) => model,
            None => {
                return Err(reply::error(
                    400,
                    "unknown_deployment",
                    &format!(
                    "Tollgate: deployment {:?} is not in identity.providers.{provider}.deployments",
                    summary.model
                ),
                ))
            }
        }
    } else {
        &summary.model
    };
    let found = book.find(asked, Some(provider), |key, p| {
        (key.to_owned(), Arc::clone(p))
    });
    let (model, price) = match (found, &cfg.unknown_model) {
        (Some((key, p)), _) => (key, Some(p)),
        (None, UnknownModel::Deny) => {
            return Err(reply::error(
                400,
                "model_not_priced",
                &format!("Tollgate has no price for model {asked:?}"),
            ))
        }
        (None, UnknownModel::AllowUnpriced) => (asked.to_string(), None),
        (None, UnknownModel::DefaultPrice(p)) => (asked.to_string(), Some(Arc::clone(p))),
    };
    let estimate = match &price {
        Some(p) => {
            worst_case_from(&summary, p, estimate, || book.dearest(p))
                .map_err(invalid)?
                .cost
        }
        None => Decimal::ZERO,
    };
    let new_body = if cfg.inject_include_usage {
        summary.usage_rewrite(body)
    } else {
        None
    };
    Ok(Judged {
        priced: Priced {
            model,
            requested_model: None,
            price,
            price_version: book.version(),
            estimate,
            stream: summary.stream || route.path_stream,
            search_context: summary.web_search.map(|w| w.context).unwrap_or_default(),
        },
        new_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceBook;
    use crate::provider::ApiFormat;
    use crate::test_support::{config, d};

    fn book() -> PriceBook {
        let mut book = PriceBook {
            version: 7,
            ..PriceBook::default()
        };
        book.models.insert(
            "gpt-4o-mini".into(),
            ModelPrice {
                max_output_tokens: Some(100),
                ..ModelPrice::flat(d("0.000001"), d("0.000002"))
            },
        );
        book
    }

    fn chat() -> Route<'static> {
        Route::plain(ApiFormat::OpenAiChat)
    }

    #[test]
    fn a_priced_request_reserves_its_worst_case_and_asks_for_usage() {
        let body = br#"{"model":"gpt-4o-mini","stream":true,"max_tokens":10,"messages":[]}"#;
        let j = judge(
            body,
            &chat(),
            &book(),
            &config(""),
            &EstimateConfig::default(),
        )
        .unwrap();
        assert_eq!(j.priced.model, "gpt-4o-mini");
        assert_eq!(j.priced.price_version, 7);
        assert!(j.priced.stream);
        // `[]` is 2 prompt bytes → 1 token × 0.000001, + 10 output tokens × 0.000002.
        assert_eq!(j.priced.estimate, d("0.000021"));
        let new_body = j.new_body.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&new_body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        // Turned off by configuration, the body goes as sent.
        let off = config(r#", "inject_include_usage": false"#);
        let j = judge(body, &chat(), &book(), &off, &EstimateConfig::default()).unwrap();
        assert_eq!(j.new_body, None);
    }

    #[test]
    fn unknown_models_follow_the_policy() {
        let body = br#"{"model":"mystery","messages":[]}"#;
        let est = EstimateConfig::default();
        let deny = judge(body, &chat(), &book(), &config(""), &est).unwrap_err();
        assert_eq!(
            (deny.status, deny.body.contains("model_not_priced")),
            (400, true)
        );
        let allow = config(r#", "unknown_model": "allow_unpriced""#);
        let j = judge(body, &chat(), &book(), &allow, &est).unwrap();
        assert_eq!((j.priced.price, j.priced.estimate), (None, Decimal::ZERO));
        let default = config(
            r#", "unknown_model": {"default_price": {"input_per_million": "1", "output_per_million": "2"}}"#,
        );
        let j = judge(body, &chat(), &book(), &default, &est).unwrap();
        assert!(j.priced.price.is_some() && j.priced.estimate > Decimal::ZERO);
    }

    #[test]
    fn bad_bodies_are_refused_with_their_status() {
        let est = EstimateConfig {
            max_body_bytes: 64,
            ..EstimateConfig::default()
        };
        let big = format!(
            r#"{{"model":"gpt-4o-mini","messages":["{}"]}}"#,
            "x".repeat(100)
        );
        let r = judge(big.as_bytes(), &chat(), &book(), &config(""), &est).unwrap_err();
        assert_eq!(r.status, 413);
        let r = judge(b"{not json", &chat(), &book(), &config(""), &est).unwrap_err();
        assert_eq!(r.status, 400);
    }

    #[test]
    fn the_path_model_prices_gemini() {
        let route = Route {
            format: ApiFormat::GeminiGenerateContent,
            path_model: Some("gpt-4o-mini"),
            path_stream: true,
        };
        let body = br#"{"model":"cheap","contents":[]}"#;
        let j = judge(
            body,
            &route,
            &book(),
            &config(""),
            &EstimateConfig::default(),
        )
        .unwrap();
        assert_eq!(j.priced.model, "gpt-4o-mini");
        assert!(j.priced.stream, "streaming chosen by the path");
    }

    #[test]
    fn azure_deployments_are_priced_by_their_map() {
        let mut book = book();
        book.models.insert(
            "azure/eu/gpt-4o-mini".into(),
            ModelPrice::flat(d("0.0000011"), d("0.0000022")),
        );
        let cfg = config(
            r#", "identity": {"providers": {"azure": {"cluster": "azure",
                "deployments": {"prod-mini": "azure/eu/gpt-4o-mini"}}}}"#,
        );
        let est = EstimateConfig::default();
        let on_path = Route {
            format: ApiFormat::AzureOpenAiChat,
            path_model: Some("prod-mini"),
            path_stream: false,
        };
        let j = judge(br#"{"messages":[]}"#, &on_path, &book, &cfg, &est).unwrap();
        assert_eq!(j.priced.model, "azure/eu/gpt-4o-mini");
        // The v1 surface names the deployment in the body.
        let v1 = Route::plain(ApiFormat::AzureOpenAiChat);
        let j = judge(
            br#"{"model":"prod-mini","messages":[]}"#,
            &v1,
            &book,
            &cfg,
            &est,
        )
        .unwrap();
        assert_eq!(j.priced.model, "azure/eu/gpt-4o-mini");
        // A deployment nobody mapped never reaches Azure, whatever the body says.
        let r = judge(
            br#"{"model":"gpt-4o-mini","messages":[]}"#,
            &v1,
            &book,
            &cfg,
            &est,
        )
        .unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.body.contains("unknown_deployment"), "{}", r.body);
    }

    #[test]
    fn cluster_and_snapshot_checks() {
        let cfg = config(r#", "identity": {"providers": {"openai": {"cluster": "openai"}}}"#);
        let providers = &cfg.identity.providers;
        assert!(check_cluster(&chat(), providers, Some(b"openai"), "POST", "/v1/x").is_ok());
        let r =
            check_cluster(&chat(), providers, Some(b"anthropic"), "POST", "/v1/x?k=1").unwrap_err();
        assert_eq!(r.status, 404);
        assert!(!r.body.contains("k=1"));
        let anthropic = Route::plain(ApiFormat::AnthropicMessages);
        assert!(check_cluster(&anthropic, providers, Some(b"openai"), "POST", "/").is_err());
        assert!(check_cluster(&anthropic, &BTreeMap::new(), None, "POST", "/").is_ok());

        let aged = |age: i64| move |_: &()| age;
        let none: Option<()> = None;
        assert_eq!(
            usable_snapshot(none, aged(0), &cfg).unwrap_err().status,
            503
        );
        assert!(
            usable_snapshot(Some(()), aged(1_000_000), &cfg).is_ok(),
            "stale allowed by default"
        );
        let strict = config(r#", "stale_policy": "deny", "max_staleness_s": 10"#);
        assert!(usable_snapshot(Some(()), aged(10), &strict).is_ok());
        assert_eq!(
            usable_snapshot(Some(()), aged(11), &strict)
                .unwrap_err()
                .status,
            503
        );
    }
}
