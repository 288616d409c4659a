//! Filter metrics, defined once per VM in `on_configure`; Envoy aggregates them by name across
//! workers and exposes them on its admin `/stats` (Prometheus) endpoint.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use tollgate_core::budget::Scope;
use tollgate_core::event::UnchargedReason;
use tollgate_core::pricing::Fallbacks;

/// Metric ids of one VM.
///
/// The two counters every admitted request moves (`allowed`, `cost_micro_usd`) are added up
/// in the worker and handed to Envoy on its tick (at most every 100 ms): each increment is a
/// host call, and host calls are most of what the filter costs Envoy. Prometheus scrapes
/// every few seconds; the rarer counters go to Envoy at once.
#[derive(Debug, Default)]
pub struct Metrics {
    pending_allowed: Cell<i64>,
    pending_cost: Cell<i64>,
    allowed: Option<u32>,
    denied: Option<u32>,
    shadow_denied: Option<u32>,
    unmetered: Option<u32>,
    refused: Option<u32>,
    soft_limit: Option<u32>,
    denied_by_scope: [Option<u32>; 4],
    cost_micro_usd: Option<u32>,
    uncharged: [Option<u32>; UnchargedReason::ALL.len()],
    queue_overflow: Option<u32>,
    queue_failures: Option<u32>,
    contention: Option<u32>,
    denials_unreported: Option<u32>,
    rate_fallbacks: [Option<u32>; 4],
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn add(pending: &Cell<i64>, by: i64) {
    pending.set(pending.get().saturating_add(by));
}

fn inc(id: Option<u32>, by: i64) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, by);
    }
}

impl Metrics {
    /// Defines the worker metrics.
    pub fn define() -> Metrics {
        let scope = |s: Scope| counter(&format!("tollgate_denied_scope_{}", s.as_str()));
        Metrics {
            pending_allowed: Cell::new(0),
            pending_cost: Cell::new(0),
            allowed: counter("tollgate_requests_allowed"),
            denied: counter("tollgate_requests_denied"),
            shadow_denied: counter("tollgate_requests_shadow_denied"),
            unmetered: counter("tollgate_requests_unmetered"),
            refused: counter("tollgate_requests_refused"),
            soft_limit: counter("tollgate_soft_limit_warnings"),
            denied_by_scope: [
                scope(Scope::Key),
                scope(Scope::User),
                scope(Scope::Project),
                scope(Scope::Org),
            ],
            cost_micro_usd: counter("tollgate_cost_micro_usd"),
            uncharged: UnchargedReason::ALL
                .map(|r| counter(&format!("tollgate_uncharged_{}", r.as_str()))),
            queue_overflow: counter("tollgate_queue_enqueue_failures"),
            queue_failures: counter("tollgate_queue_unavailable"),
            contention: counter("tollgate_reservation_contention"),
            denials_unreported: counter("tollgate_denials_unreported"),
            rate_fallbacks: Fallbacks::default()
                .named()
                .map(|(name, _)| counter(&format!("tollgate_rate_fallback_{name}"))),
        }
    }

    /// A request priced with rates the book lacked, resolved to their fallbacks.
    pub fn fallbacks(&self, used: Fallbacks) {
        for ((_, on), id) in used.named().into_iter().zip(self.rate_fallbacks) {
            if on {
                inc(id, 1);
            }
        }
    }

    /// A request allowed (with `shadow_denies` budgets that would have denied it).
    pub fn allowed(&self, shadow_denies: u32, soft: u32) {
        add(&self.pending_allowed, 1);
        if shadow_denies > 0 {
            inc(self.shadow_denied, 1);
        }
        if soft > 0 {
            inc(self.soft_limit, 1);
        }
    }

    /// A request denied by a budget of `scope`.
    pub fn denied(&self, scope: Scope) {
        inc(self.denied, 1);
        inc(
            self.denied_by_scope
                .get(usize::from(scope.chain_rank()))
                .copied()
                .flatten(),
            1,
        );
    }

    /// A refusal the worker could not keep for the control plane (too many open denial
    /// records, see `tollgate_core::denials`).
    pub fn denial_unreported(&self) {
        inc(self.denials_unreported, 1);
    }

    /// A request outside any metered route.
    pub fn unmetered(&self) {
        inc(self.unmetered, 1);
    }

    /// A request refused before any budget (bad key, bad body, unknown model, stale).
    pub fn refused(&self) {
        inc(self.refused, 1);
    }

    /// Cost charged, in micro-USD (rounded).
    pub fn cost(&self, micro_usd: i64) {
        add(&self.pending_cost, micro_usd);
    }

    /// Hands the counters added up since the last flush to Envoy (the worker's tick, and when
    /// the VM stops).
    pub fn flush(&self) {
        for (pending, id) in [
            (&self.pending_allowed, self.allowed),
            (&self.pending_cost, self.cost_micro_usd),
        ] {
            let by = pending.replace(0);
            if by != 0 {
                inc(id, by);
            }
        }
    }

    /// A request charged without usage.
    pub fn uncharged(&self, reason: UnchargedReason) {
        let i = UnchargedReason::ALL.iter().position(|r| *r == reason);
        inc(i.and_then(|i| self.uncharged.get(i).copied().flatten()), 1);
    }

    /// `events` usage events could not be queued.
    pub fn enqueue_failed(&self, queue_known: bool, events: usize) {
        inc(
            if queue_known {
                self.queue_overflow
            } else {
                self.queue_failures
            },
            i64::try_from(events).unwrap_or(i64::MAX),
        );
    }

    /// A reservation lost every CAS attempt.
    pub fn contention(&self) {
        inc(self.contention, 1);
    }
}
