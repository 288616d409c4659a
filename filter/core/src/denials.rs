//! Refused requests, reported to the control plane as denial records: budget owners see how
//! many requests each budget refused and when it first did (the console's counts, the
//! "hard limit reached" alert), without a client that hammers an exhausted budget turning each
//! refusal into a ledger row and a queue slot that real usage needs.
//!
//! A worker adds each refusal to an open record keyed by (binding budget, principal, model,
//! API) and hands the open records over at most once per second ([`Denials::due`]), so one
//! hammering client costs one record per second per worker, however fast it retries. At most
//! [`MAX_OPEN`] records are open; refusals beyond that are counted as dropped (the filter's
//! metric), never queued.

use std::sync::Arc;

use crate::cost::CostBreakdown;
use crate::event::{Charge, Denied, UnchargedReason, UsageEvent};
use crate::identity::Principal;
use crate::provider::ApiFormat;
use crate::usage::Usage;

/// Open records a worker keeps between hand-overs.
pub const MAX_OPEN: usize = 256;

/// Seconds a record stays open before it is handed over.
pub const HOLD_S: i64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    budget: String,
    principal: Arc<Principal>,
    model: String,
    api: ApiFormat,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    requests: u64,
    first_ts: i64,
    last_ts: i64,
    price_version: u64,
    stream: bool,
}

/// One worker's open denial records.
#[derive(Debug, Default)]
pub struct Denials {
    /// Scanned by borrowed fields (a repeated refusal allocates nothing); at most
    /// [`MAX_OPEN`] long.
    open: Vec<(Key, Open)>,
    /// When the oldest open record was opened.
    since: Option<i64>,
}

/// One refusal.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// The budget the `429` named.
    pub budget: &'a str,
    /// Who was refused.
    pub principal: &'a Arc<Principal>,
    /// The model as priced.
    pub model: &'a str,
    /// The API spoken.
    pub api: ApiFormat,
    /// The price book version the request was judged with.
    pub price_version: u64,
    /// Whether the request asked to stream.
    pub stream: bool,
    /// When, Unix seconds.
    pub now: i64,
}

impl Denials {
    /// Counts a refusal. `false` when it could not be kept (all [`MAX_OPEN`] records are
    /// open for other keys): the caller counts it as dropped.
    pub fn add(&mut self, r: Refusal<'_>) -> bool {
        let found = self.open.iter_mut().find(|(k, _)| {
            k.budget == r.budget
                && k.model == r.model
                && k.api == r.api
                && &k.principal == r.principal
        });
        if let Some((_, o)) = found {
            o.requests = o.requests.saturating_add(1);
            o.last_ts = o.last_ts.max(r.now);
            return true;
        }
        if self.open.len() >= MAX_OPEN {
            return false;
        }
        self.open.push((
            Key {
                budget: r.budget.to_string(),
                principal: Arc::clone(r.principal),
                model: r.model.to_string(),
                api: r.api,
            },
            Open {
                requests: 1,
                first_ts: r.now,
                last_ts: r.now,
                price_version: r.price_version,
                stream: r.stream,
            },
        ));
        self.since.get_or_insert(r.now);
        true
    }

    /// Whether the open records are to be handed over at `now`.
    pub fn due(&self, now: i64) -> bool {
        self.since.is_some_and(|s| now >= s.saturating_add(HOLD_S))
    }

    /// Hands over every open record as a denial record (`id`, `reporter` and `seq` are the
    /// sync service's to fill, as for usage events).
    pub fn take(&mut self) -> Vec<UsageEvent> {
        self.since = None;
        self.open
            .drain(..)
            .map(|(k, o)| UsageEvent {
                id: String::new(),
                reporter: String::new(),
                seq: 0,
                ts: o.last_ts,
                principal: k.principal,
                model: k.model,
                api: k.api,
                usage: Usage::default(),
                cost: CostBreakdown::default(),
                price_version: o.price_version,
                charge: Charge::Zero,
                uncharged: Some(UnchargedReason::Denied),
                status: 429,
                stream: o.stream,
                requested_model: None,
                soft_warned: Vec::new(),
                denied: Some(Denied {
                    budget: k.budget,
                    requests: o.requests,
                    first_ts: o.first_ts,
                }),
            })
            .collect()
    }

    /// Whether no record is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(key: &str) -> Arc<Principal> {
        Arc::new(Principal {
            key: Some(key.into()),
            org: "acme".into(),
            ..Principal::default()
        })
    }

    fn refusal<'a>(budget: &'a str, p: &'a Arc<Principal>, now: i64) -> Refusal<'a> {
        Refusal {
            budget,
            principal: p,
            model: "gpt-4o",
            api: ApiFormat::OpenAiChat,
            price_version: 7,
            stream: false,
            now,
        }
    }

    #[test]
    fn a_hammering_client_is_one_valid_record_per_hold() {
        let mut d = Denials::default();
        let p = principal("k1");
        for i in 0..1000 {
            assert!(d.add(refusal("b1", &p, 100 + i / 500)));
        }
        assert!(!d.due(100));
        assert!(d.due(101));
        let records = d.take();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        let denied = r.denied.as_ref().expect("a denial record");
        assert_eq!(
            (denied.budget.as_str(), denied.requests, denied.first_ts),
            ("b1", 1000, 100)
        );
        assert_eq!((r.ts, r.status, r.price_version), (101, 429, 7));
        let mut valid = r.clone();
        valid.id = "e".into();
        valid.reporter = "r".into();
        assert_eq!(valid.validate(0), Ok(()));
        assert!(d.is_empty() && !d.due(200));
    }

    #[test]
    fn records_split_by_budget_and_principal_and_stop_at_the_cap() {
        let mut d = Denials::default();
        let (p1, p2) = (principal("k1"), principal("k2"));
        assert!(d.add(refusal("b1", &p1, 5)));
        assert!(d.add(refusal("b2", &p1, 5)));
        assert!(d.add(refusal("b1", &p2, 5)));
        assert_eq!(d.take().len(), 3);
        let keys: Vec<Arc<Principal>> =
            (0..MAX_OPEN).map(|i| principal(&format!("k{i}"))).collect();
        for p in &keys {
            assert!(d.add(refusal("b1", p, 9)));
        }
        let extra = principal("one-too-many");
        assert!(!d.add(refusal("b1", &extra, 9)), "beyond the cap: dropped");
        assert!(
            d.add(refusal("b1", &keys[0], 9)),
            "an open record still counts"
        );
        assert_eq!(d.take().len(), MAX_OPEN);
    }
}
