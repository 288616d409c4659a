//! Settlement: what an admitted request is charged once its answer has passed (or the stream
//! ended without one). The answer is metered as it passes ([`Meter`]: never held back), the
//! usage it reports is priced at the model the provider says served it, and where there is no
//! usage the configured policy decides ([`settle`]; RELIABILITY.md has the table of every
//! case). The filter then moves the reservation to spend on every budget of the chain and
//! queues the usage event.

use std::sync::Arc;

use crate::admission::Priced;
use crate::config::{Config, MissingUsage};
use crate::cost::{priced, CostBreakdown};
use crate::event::{Charge, UnchargedReason};
use crate::pricing::{strip_snapshot_date, Fallbacks, ModelPrice, Prices};
use crate::provider::ApiFormat;
use crate::usage::scan::contains;
use crate::usage::{
    readable_encoding, served_json, EventStreamUsage, SseUsage, StreamOutcome, Usage,
};

/// How an answer's body is being metered, chosen from its headers.
#[derive(Debug)]
pub enum Meter {
    /// A whole JSON answer, kept until it ends (at most the configured bytes).
    Json {
        /// The bytes so far.
        body: Vec<u8>,
        /// It outgrew the bound: nothing is kept, the request is charged by policy.
        overflow: bool,
        /// The bound.
        max: usize,
    },
    /// A stream, read event by event as it passes.
    Sse(Box<SseUsage>),
    /// An AWS event stream (Bedrock), read message by message as it passes.
    EventStream(Box<EventStreamUsage>),
    /// A `content-encoding` the filter cannot read: nothing is kept, the request is charged
    /// by policy under its own reason.
    Encoded,
}

impl Meter {
    /// The meter for an answer in `format` with these `content-type` and `content-encoding`
    /// headers; `max` bounds what one JSON answer or one stream event may hold.
    pub fn start(
        format: ApiFormat,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        max: usize,
    ) -> Meter {
        if !readable_encoding(content_encoding) {
            Meter::Encoded
        } else if content_type.is_some_and(|c| contains(c.as_bytes(), b"text/event-stream")) {
            Meter::Sse(Box::new(SseUsage::new(format, max)))
        } else if content_type
            .is_some_and(|c| contains(c.as_bytes(), b"application/vnd.amazon.eventstream"))
        {
            Meter::EventStream(Box::new(EventStreamUsage::new(format, max)))
        } else {
            Meter::Json {
                body: Vec::new(),
                overflow: false,
                max,
            }
        }
    }

    /// [`Meter::push`] of a chunk the caller no longer needs: a JSON answer that arrives in
    /// one chunk (most do) is kept as it came instead of copied.
    pub fn push_owned(&mut self, chunk: Vec<u8>) {
        match self {
            Meter::Json {
                body,
                overflow: false,
                max,
            } if body.is_empty() && chunk.len() <= *max => *body = chunk,
            _ => self.push(&chunk),
        }
    }

    /// The next chunk of the answer's body.
    pub fn push(&mut self, chunk: &[u8]) {
        match self {
            Meter::Sse(p) => p.push(chunk),
            Meter::EventStream(p) => p.push(chunk),
            Meter::Json {
                body,
                overflow,
                max,
            } => {
                if body.len().saturating_add(chunk.len()) > *max {
                    *overflow = true;
                    body.clear();
                } else if !*overflow {
                    body.extend_from_slice(chunk);
                }
            }
            Meter::Encoded => {}
        }
    }
}

/// What the answer reported: its usage and the model it says served the request, or why
/// there is no usage to charge. `status` is the answer's (`None`: no answer reached the
/// filter), `meter` what read its body, `ended` whether the stream ended normally (its end
/// of stream or trailers; `false` when Envoy logs a stream cut short).
pub fn measure(
    format: ApiFormat,
    status: Option<u32>,
    meter: Option<Meter>,
    ended: bool,
) -> Result<(Usage, Option<String>), UnchargedReason> {
    let Some(status) = status else {
        return Err(UnchargedReason::ClientDisconnect);
    };
    if let Some(reason) = UnchargedReason::for_status(status) {
        return Err(reason);
    }
    match meter {
        Some(Meter::Json { overflow: true, .. }) => Err(UnchargedReason::TooLarge),
        Some(Meter::Encoded) => Err(UnchargedReason::EncodedAnswer),
        Some(Meter::Json { body, .. }) if ended => {
            served_json(format, &body).map_err(|_| UnchargedReason::NoUsage)
        }
        Some(Meter::Sse(p)) => stream_measured(p.finish(), ended),
        Some(Meter::EventStream(p)) => stream_measured(p.finish(), ended),
        _ => Err(UnchargedReason::Truncated),
    }
}

/// What a stream's outcome charges: its usage once it completed (or ended normally with
/// usage), else why not.
fn stream_measured(
    out: StreamOutcome,
    ended: bool,
) -> Result<(Usage, Option<String>), UnchargedReason> {
    match (out.usage, out.complete || ended && out.usage.is_some()) {
        (Some(u), true) => Ok((u, out.model)),
        (Some(_), false) | (None, _) if !ended => Err(UnchargedReason::Truncated),
        _ => Err(UnchargedReason::NoUsage),
    }
}

/// What a request is charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The usage recorded (what the answer reported; zero when it reported none).
    pub usage: Usage,
    /// The charge, by bucket.
    pub cost: CostBreakdown,
    /// How the charge was reached.
    pub charge: Charge,
    /// Why the actual usage was not charged, if it was not.
    pub uncharged: Option<UnchargedReason>,
    /// Rates the book lacked, each priced at its fallback.
    pub fallbacks: Fallbacks,
}

/// Charges a request: the usage `measured` at the price of the model the provider says served
/// it (when the book prices that one; `priced` is updated to name it), else by the policy the
/// configuration sets for the reason there is no usage.
pub fn settle(
    format: ApiFormat,
    priced_as: &mut Priced,
    measured: Result<(Usage, Option<String>), UnchargedReason>,
    book: &impl Prices,
    cfg: &Config,
) -> Settled {
    let usage = measured.map(|(usage, served)| {
        if let Some(served) = served.filter(|_| format.api().prices_answer_model()) {
            price_served(format, priced_as, book, &served);
        }
        usage
    });
    let by_policy = |usage: Usage, reason: UnchargedReason| {
        let policy = if reason.is_provider_refusal() {
            cfg.provider_errors
        } else {
            cfg.missing_usage
        };
        let (cost, charge) = match policy {
            MissingUsage::ChargeEstimate => (
                CostBreakdown {
                    total: priced_as.estimate,
                    ..CostBreakdown::default()
                },
                Charge::Estimate,
            ),
            MissingUsage::ChargeZero => (CostBreakdown::default(), Charge::Zero),
        };
        Settled {
            usage,
            cost,
            charge,
            uncharged: Some(reason),
            fallbacks: Fallbacks::default(),
        }
    };
    match (usage, &priced_as.price) {
        (Ok(mut u), Some(p)) => {
            u.search_context = priced_as.search_context;
            match priced(p, &u) {
                Ok((cost, fallbacks)) => Settled {
                    usage: u,
                    cost,
                    charge: Charge::Actual,
                    uncharged: None,
                    fallbacks,
                },
                Err(_) => by_policy(u, UnchargedReason::NoUsage),
            }
        }
        (Ok(u), None) => Settled {
            usage: u,
            cost: CostBreakdown::default(),
            charge: Charge::Zero,
            uncharged: Some(UnchargedReason::Unpriced),
            fallbacks: Fallbacks::default(),
        },
        (Err(reason), _) => by_policy(Usage::default(), reason),
    }
}

/// The provider names the model that served the request: when it differs from the one priced
/// at admission and the book prices it, settle on it (OpenAI answers `gpt-4o` with
/// `gpt-4o-2024-08-06`, a router or an alias may serve another model altogether).
///
/// A deployment (Azure) is priced by the model its map names, which carries what the answer
/// cannot (a regional or data-zone rate): the answer's model only checks it, and an answer naming
/// another model altogether (a deployment moved to a new model, a stale map) is priced as that
/// model at the provider's rate.
fn price_served(format: ApiFormat, priced_as: &mut Priced, book: &impl Prices, served: &str) {
    if served == priced_as.model {
        return;
    }
    let provider = format.provider();
    // The price is copied only when it names another key than the one priced at admission.
    let other = |key: &str, price: &Arc<ModelPrice>| {
        (key != priced_as.model).then(|| (key.to_owned(), Arc::clone(price)))
    };
    let found = if format.api().model_is_deployment() {
        if same_model(&priced_as.model, served) {
            return;
        }
        book.find(&format!("{provider}/{served}"), None, other)
            .or_else(|| book.find(served, Some(provider), other))
    } else {
        book.find(served, Some(provider), other)
    };
    let Some(Some((key, price))) = found else {
        return;
    };
    priced_as.requested_model = Some(std::mem::replace(&mut priced_as.model, key));
    priced_as.price = Some(price);
}

/// Whether the price-book key `mapped` (`azure/eu/gpt-4o`) and the model an answer names
/// (`gpt-4o-2024-08-06`) are the same model: the key's last segment and the name agree once a
/// snapshot date is dropped from either.
fn same_model(mapped: &str, served: &str) -> bool {
    fn base(m: &str) -> &str {
        strip_snapshot_date(m).unwrap_or(m)
    }
    let name = mapped.rsplit('/').next().unwrap_or(mapped);
    name == served || base(name) == base(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceBook;
    use crate::test_support::{config, d};
    use rust_decimal::Decimal;

    fn book() -> PriceBook {
        let mut book = PriceBook::default();
        book.models.insert(
            "gpt-4o".into(),
            ModelPrice::flat(d("0.000002"), d("0.000008")),
        );
        book.models.insert(
            "gpt-4o-2024-08-06".into(),
            ModelPrice::flat(d("0.000003"), d("0.00001")),
        );
        book
    }

    fn priced() -> Priced {
        Priced {
            model: "gpt-4o".into(),
            requested_model: None,
            price: Some(Arc::new(ModelPrice::flat(d("0.000002"), d("0.000008")))),
            price_version: 1,
            estimate: d("0.5"),
            stream: false,
            search_context: Default::default(),
        }
    }

    const CHAT: ApiFormat = ApiFormat::OpenAiChat;

    fn json_meter(body: &[u8]) -> Option<Meter> {
        let mut m = Meter::start(CHAT, Some("application/json"), None, 1024);
        m.push(body);
        Some(m)
    }

    #[test]
    fn meters_follow_the_headers() {
        assert!(matches!(
            Meter::start(CHAT, Some("text/event-stream; charset=utf-8"), None, 9),
            Meter::Sse(_)
        ));
        assert!(matches!(
            Meter::start(CHAT, None, Some("gzip"), 9),
            Meter::Encoded
        ));
        let mut m = Meter::start(CHAT, None, Some("identity"), 4);
        m.push(b"abc");
        m.push(b"de");
        assert!(matches!(m, Meter::Json { overflow: true, .. }));
    }

    #[test]
    fn every_way_an_answer_ends() {
        use UnchargedReason as R;
        let body = br#"{"model":"gpt-4o","usage":{"prompt_tokens":10,"completion_tokens":5}}"#;
        let ok = measure(CHAT, Some(200), json_meter(body), true).unwrap();
        assert_eq!((ok.0.input_uncached, ok.0.output), (10, 5));
        assert_eq!(measure(CHAT, None, None, false), Err(R::ClientDisconnect));
        assert_eq!(
            measure(CHAT, Some(200), json_meter(body), false),
            Err(R::Truncated)
        );
        assert_eq!(
            measure(CHAT, Some(200), json_meter(b"{}"), true),
            Err(R::NoUsage)
        );
        assert_eq!(
            measure(CHAT, Some(200), Some(Meter::Encoded), true),
            Err(R::EncodedAnswer)
        );
        let status = measure(CHAT, Some(429), json_meter(body), true).unwrap_err();
        assert!(status.is_provider_refusal());
        let mut sse = Meter::start(CHAT, Some("text/event-stream"), None, 1024);
        sse.push(b"data: {\"choices\":[{}],\"usage\":null}\n\n");
        assert_eq!(
            measure(CHAT, Some(200), Some(sse), false),
            Err(R::Truncated)
        );
    }

    #[test]
    fn usage_is_priced_at_the_model_that_served() {
        let mut p = priced();
        let body = br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":1000,"completion_tokens":100}}"#;
        let measured = measure(CHAT, Some(200), json_meter(body), true);
        let s = settle(CHAT, &mut p, measured, &book(), &config(""));
        assert_eq!(s.charge, Charge::Actual);
        assert_eq!(s.cost.total, d("0.004"));
        assert_eq!(p.model, "gpt-4o-2024-08-06");
        assert_eq!(p.requested_model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn a_deployment_keeps_its_mapped_price_unless_another_model_served() {
        let azure = ApiFormat::AzureOpenAiChat;
        let mut book = book();
        book.models.insert(
            "azure/gpt-4o-mini".into(),
            ModelPrice::flat(d("0.0000002"), d("0.0000008")),
        );
        let mapped = || Priced {
            model: "azure/eu/gpt-4o".into(),
            ..priced()
        };
        let answer = |model: &str| -> Result<(Usage, Option<String>), UnchargedReason> {
            Ok((
                Usage {
                    input_uncached: 1000,
                    ..Usage::default()
                },
                Some(model.to_string()),
            ))
        };
        // The dated name of the mapped model: the map's (regional) price stands.
        let mut p = mapped();
        let s = settle(
            azure,
            &mut p,
            answer("gpt-4o-2024-08-06"),
            &book,
            &config(""),
        );
        assert_eq!(
            (p.model.as_str(), s.cost.total),
            ("azure/eu/gpt-4o", d("0.002"))
        );
        assert_eq!(p.requested_model, None);
        // Another model served: priced as that model at Azure's rate.
        let mut p = mapped();
        let s = settle(azure, &mut p, answer("gpt-4o-mini"), &book, &config(""));
        assert_eq!(p.model, "azure/gpt-4o-mini");
        assert_eq!(p.requested_model.as_deref(), Some("azure/eu/gpt-4o"));
        assert_eq!(s.cost.total, d("0.0002"));
        assert!(same_model("azure/gpt-4o-2024-08-06", "gpt-4o"));
        assert!(!same_model("azure/gpt-4o", "gpt-4o-mini"));
    }

    #[test]
    fn no_usage_is_charged_by_policy() {
        let cfg = config("");
        // A success cut short: the estimate (the provider may have billed it).
        let s = settle(
            CHAT,
            &mut priced(),
            Err(UnchargedReason::Truncated),
            &book(),
            &cfg,
        );
        assert_eq!((s.charge, s.cost.total), (Charge::Estimate, d("0.5")));
        // A provider's refusal: nothing (providers do not bill what they refuse).
        let refusal = UnchargedReason::for_status(429).unwrap();
        let s = settle(CHAT, &mut priced(), Err(refusal), &book(), &cfg);
        assert_eq!((s.charge, s.cost.total), (Charge::Zero, Decimal::ZERO));
        assert_eq!(s.uncharged, Some(refusal));
        // Both policies configurable.
        let flipped =
            config(r#", "missing_usage": "charge_zero", "provider_errors": "charge_estimate""#);
        let s = settle(
            CHAT,
            &mut priced(),
            Err(UnchargedReason::Truncated),
            &book(),
            &flipped,
        );
        assert_eq!(s.charge, Charge::Zero);
        let s = settle(CHAT, &mut priced(), Err(refusal), &book(), &flipped);
        assert_eq!(s.charge, Charge::Estimate);
        // Unpriced by policy: recorded, charged zero.
        let mut unpriced = Priced {
            price: None,
            ..priced()
        };
        let s = settle(
            CHAT,
            &mut unpriced,
            Ok((Usage::default(), None)),
            &book(),
            &cfg,
        );
        assert_eq!(
            (s.charge, s.uncharged),
            (Charge::Zero, Some(UnchargedReason::Unpriced))
        );
    }
}
