//! Usage events: what the filter reports to the control plane for every metered request,
//! and the batches the sync service posts to `POST /v1/usage`.
//!
//! An event is idempotent by `id`: the control plane ignores an id it already has, so the sync
//! service can retry a batch freely. `reporter` + `seq` let a snapshot say which of a reporter's
//! events its spend already includes (see [`crate::snapshot`]), so the filter stops counting
//! them locally at exactly the right moment.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::cost::CostBreakdown;
use crate::identity::Principal;
use crate::provider::ApiFormat;
use crate::usage::Usage;

/// Largest batch the control plane accepts.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// How the cost of an event was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Charge {
    /// From the usage the provider reported.
    Actual,
    /// No usage arrived; charged the request's worst-case estimate by policy.
    Estimate,
    /// No usage arrived; charged nothing by policy.
    Zero,
}

/// Why a request has no usage from the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnchargedReason {
    /// The downstream client went away before the response finished.
    ClientDisconnect,
    /// The upstream answered with a status that is neither success nor one of the classes
    /// below (1xx, 3xx): the provider did not serve the request.
    UpstreamError,
    /// The upstream reset or the stream ended early.
    Truncated,
    /// The response had no usage object or it could not be parsed.
    NoUsage,
    /// The model has no price (served under the `allow_unpriced` policy).
    Unpriced,
    /// The response body was larger than the filter buffers.
    TooLarge,
    /// The provider refused with `429` (rate limit, quota): providers do not bill it.
    #[serde(rename = "upstream_429")]
    RateLimited,
    /// The provider refused with another `4xx` (bad request, unknown model, auth).
    #[serde(rename = "upstream_4xx")]
    ClientError,
    /// The provider (or Envoy on its behalf: reset before headers, no healthy host) answered
    /// with a `5xx`.
    #[serde(rename = "upstream_5xx")]
    ServerError,
    /// The answer reached the filter with a `content-encoding` it cannot read (the filter asks
    /// for `identity` and Envoy's decompressors inflate gzip, br and zstd; anything else, or a
    /// deployment without the decompressors, leaves the usage unreadable).
    EncodedAnswer,
    /// The filter refused the request itself: a budget on its chain was exhausted, so
    /// nothing went upstream. Carried only by denial records ([`UsageEvent::denied`]).
    Denied,
}

impl UnchargedReason {
    /// Every reason, in a fixed order (metric names and the queue codec's tags follow it).
    /// New reasons go at the end: the queue codec's tags are positions in this list.
    pub const ALL: [UnchargedReason; 11] = [
        UnchargedReason::ClientDisconnect,
        UnchargedReason::UpstreamError,
        UnchargedReason::Truncated,
        UnchargedReason::NoUsage,
        UnchargedReason::Unpriced,
        UnchargedReason::TooLarge,
        UnchargedReason::RateLimited,
        UnchargedReason::ClientError,
        UnchargedReason::ServerError,
        UnchargedReason::EncodedAnswer,
        UnchargedReason::Denied,
    ];

    /// The snake_case name, as in JSON and metric names.
    pub const fn as_str(self) -> &'static str {
        match self {
            UnchargedReason::ClientDisconnect => "client_disconnect",
            UnchargedReason::UpstreamError => "upstream_error",
            UnchargedReason::Truncated => "truncated",
            UnchargedReason::NoUsage => "no_usage",
            UnchargedReason::Unpriced => "unpriced",
            UnchargedReason::TooLarge => "too_large",
            UnchargedReason::RateLimited => "upstream_429",
            UnchargedReason::ClientError => "upstream_4xx",
            UnchargedReason::ServerError => "upstream_5xx",
            UnchargedReason::EncodedAnswer => "encoded_answer",
            UnchargedReason::Denied => "denied",
        }
    }

    /// Why a response with HTTP `status` carries no billable usage: `None` for a success
    /// (`2xx`), else the reason of its status class.
    pub const fn for_status(status: u32) -> Option<UnchargedReason> {
        match status {
            200..=299 => None,
            429 => Some(UnchargedReason::RateLimited),
            400..=499 => Some(UnchargedReason::ClientError),
            500..=599 => Some(UnchargedReason::ServerError),
            _ => Some(UnchargedReason::UpstreamError),
        }
    }

    /// Whether the provider answered completely with a refusal. Providers bill only work
    /// they did: a complete error answer is never charged the estimate by default (see
    /// [`crate::config::Config::provider_errors`]).
    pub const fn is_provider_refusal(self) -> bool {
        matches!(
            self,
            UnchargedReason::UpstreamError
                | UnchargedReason::RateLimited
                | UnchargedReason::ClientError
                | UnchargedReason::ServerError
        )
    }
}

/// One metered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// Globally unique id: the idempotency key.
    pub id: String,
    /// The Envoy (sync service instance) that reported it.
    pub reporter: String,
    /// Per-reporter sequence number, increasing by one per event.
    pub seq: u64,
    /// When the response finished, Unix seconds.
    pub ts: i64,
    /// Who is charged (shared with the request that made it).
    pub principal: Arc<Principal>,
    /// Model as priced (the price book key that matched), or as requested when unpriced.
    pub model: String,
    /// API the request spoke.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "open_ai_chat"))]
    pub api: ApiFormat,
    /// Token counts (zero when no usage arrived).
    #[serde(default)]
    pub usage: Usage,
    /// Cost per bucket; `cost.total` is what budgets are charged.
    pub cost: CostBreakdown,
    /// Version of the price book the cost was computed with.
    pub price_version: u64,
    /// How the cost was determined.
    pub charge: Charge,
    /// Set when `charge` is not `actual`, and for unpriced requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncharged: Option<UnchargedReason>,
    /// Upstream HTTP status (0 when none arrived).
    #[serde(default)]
    pub status: u16,
    /// Whether the response was streamed.
    #[serde(default)]
    pub stream: bool,
    /// The model the request named when the provider served another; `model` is the one
    /// priced. Absent when they are the same (or the filter could not tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_model: Option<String>,
    /// The enforce budgets whose soft limit this request crossed (the ids of the
    /// `x-tollgate-soft-limit` header), for the control plane's soft-warned counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft_warned: Vec<String>,
    /// Set on a denial record: requests the filter refused, not a metered request (its cost
    /// is zero, `charge` is `zero` and `uncharged` is `denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<Denied>,
}

/// Requests one worker refused with the same binding budget, principal and model, reported
/// as one record (a client hammering an exhausted budget must not turn every refusal into a
/// ledger row; see the filter's `Denials`). The record's `ts` is the last refusal's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Denied {
    /// The budget that refused them (the one the `429` named).
    pub budget: String,
    /// How many requests.
    pub requests: u64,
    /// When the first of them was refused, Unix seconds.
    pub first_ts: i64,
}

/// The body of `POST /v1/usage`. Its `Debug` never prints the reporter secret.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// Events in reporting order.
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub events: Vec<UsageEvent>,
    /// The posting reporter's secret. It travels in the body, not in a header: Envoy's router
    /// prints every header of the sync service's calls in its debug log, never a body, and
    /// the data-plane token on the call is added by the control-plane cluster after routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter_secret: Option<String>,
}

/// The answer to `POST /v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageAck {
    /// Events stored now.
    pub accepted: u64,
    /// Events already stored earlier (same id, same content), ignored.
    pub duplicate: u64,
    /// Events whose id is stored with different content: refused (not stored), counted by the
    /// control plane. A sender that sees this has a bug or an impostor.
    #[serde(default)]
    pub conflict: u64,
}

/// Why an event or batch is refused; each names the field, indexed within the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// More than [`MAX_BATCH_EVENTS`].
    #[error("events: {0} events in one batch, at most {MAX_BATCH_EVENTS} allowed")]
    TooMany(usize),
    /// A field is empty or too long.
    #[error("events[{index}].{field}: must be 1 to 256 characters")]
    BadText {
        /// Index in the batch.
        index: usize,
        /// Field name.
        field: &'static str,
    },
    /// Negative money.
    #[error("events[{index}].cost.{field}: must not be negative")]
    NegativeCost {
        /// Index in the batch.
        index: usize,
        /// Bucket name.
        field: &'static str,
    },
    /// Buckets don't add up to the total.
    #[error("events[{index}].cost.total: {total} is not the sum of the buckets ({sum})")]
    TotalMismatch {
        /// Index in the batch.
        index: usize,
        /// Reported total.
        total: Decimal,
        /// Sum of the buckets.
        sum: Decimal,
    },
    /// A denial record that does not hold together, or a soft-warned list that is too long.
    #[error("events[{index}].{field}: {why}")]
    BadRecord {
        /// Index in the batch.
        index: usize,
        /// Field name.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// Reasoning tokens exceed output tokens.
    #[error("events[{index}].usage.reasoning: more than usage.output")]
    ReasoningOverOutput {
        /// Index in the batch.
        index: usize,
    },
}

impl std::fmt::Debug for UsageBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageBatch")
            .field("events", &self.events)
            .field(
                "reporter_secret",
                &self.reporter_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl UsageBatch {
    /// Checks every event; the control plane refuses the whole batch on the first problem
    /// (the sender is our own filter, so a bad event is a bug to surface, not data to skip).
    pub fn validate(&self) -> Result<(), EventError> {
        if self.events.len() > MAX_BATCH_EVENTS {
            return Err(EventError::TooMany(self.events.len()));
        }
        self.events
            .iter()
            .enumerate()
            .try_for_each(|(i, e)| e.validate(i))
    }
}

impl UsageEvent {
    /// Checks one event; `index` is its place in the batch, for the error message.
    pub fn validate(&self, index: usize) -> Result<(), EventError> {
        let text = |field, s: &str| {
            if s.is_empty() || s.len() > 256 {
                Err(EventError::BadText { index, field })
            } else {
                Ok(())
            }
        };
        text("id", &self.id)?;
        text("reporter", &self.reporter)?;
        text("model", &self.model)?;
        text("principal.org", &self.principal.org)?;
        if let Some(m) = &self.requested_model {
            text("requested_model", m)?;
        }
        let c = &self.cost;
        let buckets = c.named_buckets();
        if let Some((field, _)) = buckets
            .iter()
            .chain([("total", c.total)].iter())
            .find(|(_, v)| v.is_sign_negative() && !v.is_zero())
        {
            return Err(EventError::NegativeCost { index, field });
        }
        // Estimated and zero charges put the whole amount in `total` only.
        if self.charge == Charge::Actual {
            let sum = buckets
                .iter()
                .try_fold(Decimal::ZERO, |acc, (_, v)| acc.checked_add(*v))
                .unwrap_or(Decimal::MAX);
            if sum != c.total {
                return Err(EventError::TotalMismatch {
                    index,
                    total: c.total,
                    sum,
                });
            }
        }
        if self.usage.reasoning > self.usage.output {
            return Err(EventError::ReasoningOverOutput { index });
        }
        let bad = |field, why| Err(EventError::BadRecord { index, field, why });
        if self.soft_warned.len() > MAX_SOFT_WARNED {
            return bad("soft_warned", "more budgets than a chain holds");
        }
        for id in &self.soft_warned {
            text("soft_warned[]", id)?;
        }
        let denial = self.uncharged == Some(UnchargedReason::Denied);
        match &self.denied {
            None if denial => return bad("denied", "required when uncharged is denied"),
            None => {}
            Some(_) if !denial => return bad("uncharged", "must be denied on a denial record"),
            Some(d) => {
                text("denied.budget", &d.budget)?;
                if d.requests == 0 {
                    return bad("denied.requests", "must be at least 1");
                }
                if d.first_ts > self.ts {
                    return bad("denied.first_ts", "after the record's ts");
                }
                if !c.total.is_zero() || self.charge != Charge::Zero {
                    return bad("cost.total", "a denial record charges nothing");
                }
            }
        }
        Ok(())
    }
}

/// Most budget ids one event's `soft_warned` may name: four scopes with a budget of each
/// period (daily, weekly, monthly, total), with room.
pub const MAX_SOFT_WARNED: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event() -> UsageEvent {
        UsageEvent {
            id: "r1-7".into(),
            reporter: "r1".into(),
            seq: 7,
            ts: 1_700_000_000,
            principal: Arc::new(Principal {
                key: Some("k1".into()),
                user: None,
                project: Some("p".into()),
                org: "acme".into(),
            }),
            model: "gpt-4o".into(),
            api: ApiFormat::OpenAiChat,
            usage: Usage {
                input_uncached: 10,
                output: 5,
                ..Usage::default()
            },
            cost: CostBreakdown {
                input: Decimal::new(25, 6),
                output: Decimal::new(50, 6),
                total: Decimal::new(75, 6),
                ..CostBreakdown::default()
            },
            price_version: 3,
            charge: Charge::Actual,
            uncharged: None,
            status: 200,
            stream: false,
            requested_model: None,
            soft_warned: Vec::new(),
            denied: None,
        }
    }

    #[test]
    fn round_trips_with_money_as_strings() {
        let e = event();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""total":"0.000075""#), "{json}");
        assert!(json.contains(r#""api":"open_ai_chat""#), "{json}");
        assert_eq!(serde_json::from_str::<UsageEvent>(&json).unwrap(), e);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = UsageBatch {
            events: vec![event()],
            reporter_secret: None,
        };
        assert_eq!(ok.validate(), Ok(()));
        let mut e = event();
        e.cost.total = Decimal::ONE;
        let err = UsageBatch {
            events: vec![event(), e],
            reporter_secret: None,
        }
        .validate()
        .unwrap_err();
        assert!(
            err.to_string().starts_with("events[1].cost.total:"),
            "{err}"
        );
        let mut e = event();
        e.id.clear();
        assert_eq!(
            e.validate(0),
            Err(EventError::BadText {
                index: 0,
                field: "id"
            })
        );
        let mut e = event();
        e.cost.output = Decimal::NEGATIVE_ONE;
        assert_eq!(
            e.validate(0),
            Err(EventError::NegativeCost {
                index: 0,
                field: "output"
            })
        );
        let mut e = event();
        e.charge = Charge::Estimate;
        e.cost = CostBreakdown {
            total: Decimal::ONE,
            ..CostBreakdown::default()
        };
        assert_eq!(e.validate(0), Ok(()), "an estimate carries only a total");
    }

    #[test]
    fn reason_names_match_json() {
        for r in UnchargedReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn a_complete_error_answer_has_the_reason_of_its_status_class() {
        use UnchargedReason as R;
        let cases = [
            (200, None),
            (204, None),
            (429, Some(R::RateLimited)),
            (400, Some(R::ClientError)),
            (404, Some(R::ClientError)),
            (405, Some(R::ClientError)),
            (500, Some(R::ServerError)),
            (503, Some(R::ServerError)),
            (304, Some(R::UpstreamError)),
        ];
        for (status, want) in cases {
            assert_eq!(UnchargedReason::for_status(status), want, "{status}");
            assert!(want.is_none_or(R::is_provider_refusal), "{status}");
        }
        for r in [
            R::ClientDisconnect,
            R::Truncated,
            R::NoUsage,
            R::TooLarge,
            R::Unpriced,
            R::EncodedAnswer,
        ] {
            assert!(!r.is_provider_refusal(), "{r:?} may hide billed work");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(event()).unwrap();
        v["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<UsageEvent>(v).is_err());
    }
}
