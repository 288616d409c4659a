//! Prometheus metrics with `prometheus-client`: typed counters, gauges and histograms in one
//! registry, labels as typed sets. Requests by route and status, API latency by method and
//! route, usage events ingested, duplicate and refused, the snapshot version, size and build
//! time. Served at `GET /metrics` in the Prometheus text format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), which also names each
//! counter's family with its `_total`.
//!
//! Route labels are route templates (`/v1/keys/{id}`, axum's `MatchedPath`), never the raw
//! path, whose ids would explode the label set; `unmatched` outside every route.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Labels of `tollgate_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// Labels of `tollgate_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: &'static str,
    route: String,
}

/// Labels of `tollgate_usage_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Labels of `tollgate_snapshot_sent_total` and `_sent_bytes_total`: `delta` (what changed
/// since the poller's version), `whole` (the whole snapshot, to a sync service whose version
/// this process did not build) or `document` (a plain `GET /v1/snapshot`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentLabels {
    shape: &'static str,
}

/// Why usage was refused before ingestion (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A batch posted with the data-plane token, without a reporter secret (counted per
    /// batch).
    NotEnrolled,
    /// Events of another reporter than the poster (counted per event).
    ForeignReporter,
}

impl Refused {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::NotEnrolled => "not_enrolled",
            Refused::ForeignReporter => "foreign_reporter",
        }
    }
}

/// API latency buckets, seconds: 0.5 ms to about 4 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// A seconds counter or gauge kept as `f64` bits.
type SecondsCounter = Counter<f64, AtomicU64>;
type SecondsGauge = Gauge<f64, AtomicU64>;

/// The process's metrics. Shared through the application state.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    refused: Family<RefusedLabels, Counter>,
    events_accepted: Counter,
    events_duplicate: Counter,
    events_conflict: Counter,
    events_cost_mismatch: Counter,
    reporters_enrolled: Counter,
    batches: Counter,
    snapshot_version: Gauge,
    snapshot_builds: Counter,
    snapshot_build_seconds: SecondsCounter,
    snapshot_build_seconds_last: SecondsGauge,
    snapshot_bytes: Gauge,
    snapshot_not_modified: Counter,
    snapshot_sent: Family<SentLabels, Counter>,
    snapshot_sent_bytes: Family<SentLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            refused: Family::default(),
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_conflict: Counter::default(),
            events_cost_mismatch: Counter::default(),
            reporters_enrolled: Counter::default(),
            batches: Counter::default(),
            snapshot_version: Gauge::default(),
            snapshot_builds: Counter::default(),
            snapshot_build_seconds: SecondsCounter::default(),
            snapshot_build_seconds_last: SecondsGauge::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_not_modified: Counter::default(),
            snapshot_sent: Family::default(),
            snapshot_sent_bytes: Family::default(),
        };
        for shape in ["delta", "whole", "document"] {
            let _ = m.snapshot_sent.get_or_create(&SentLabels { shape });
            let _ = m.snapshot_sent_bytes.get_or_create(&SentLabels { shape });
        }
        // Both reasons are shown from the start, at zero.
        for r in [Refused::NotEnrolled, Refused::ForeignReporter] {
            let _ = m
                .refused
                .get_or_create(&RefusedLabels { reason: r.as_str() });
        }
        m.registered()
    }
}

impl Metrics {
    /// Registers every metric (clones share their values). Counter names leave out the
    /// `_total` the encoder adds; help texts leave out the full stop the registry adds.
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "tollgate_http_requests",
            "HTTP requests answered, by route and status",
            self.requests.clone(),
        );
        r.register(
            "tollgate_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), by method and route",
            self.latency.clone(),
        );
        r.register(
            "tollgate_usage_refused",
            "Usage refused before ingestion: batches posted without a reporter secret, events of another reporter",
            self.refused.clone(),
        );
        r.register(
            "tollgate_usage_events_accepted",
            "Usage events stored",
            self.events_accepted.clone(),
        );
        r.register(
            "tollgate_usage_events_duplicate",
            "Usage events ignored because their id was already stored",
            self.events_duplicate.clone(),
        );
        r.register(
            "tollgate_usage_events_conflict",
            "Usage events refused because their id was stored with different content",
            self.events_conflict.clone(),
        );
        r.register(
            "tollgate_usage_events_cost_mismatch",
            "Usage events stored whose cost differs from the control plane's own pricing of their usage at the same price version",
            self.events_cost_mismatch.clone(),
        );
        r.register(
            "tollgate_reporters_enrolled",
            "Reporters enrolled (POST /v1/reporters)",
            self.reporters_enrolled.clone(),
        );
        r.register(
            "tollgate_usage_batches",
            "Usage batches stored",
            self.batches.clone(),
        );
        r.register(
            "tollgate_snapshot_version",
            "Version of the snapshot being served",
            self.snapshot_version.clone(),
        );
        r.register(
            "tollgate_snapshot_builds",
            "Snapshots built",
            self.snapshot_builds.clone(),
        );
        r.register(
            "tollgate_snapshot_build_seconds",
            "Time spent building snapshots",
            self.snapshot_build_seconds.clone(),
        );
        r.register(
            "tollgate_snapshot_build_seconds_last",
            "Time the last snapshot build took",
            self.snapshot_build_seconds_last.clone(),
        );
        r.register(
            "tollgate_snapshot_bytes",
            "Size of the snapshot being served",
            self.snapshot_bytes.clone(),
        );
        r.register(
            "tollgate_snapshot_not_modified",
            "Snapshot polls answered 304 Not Modified",
            self.snapshot_not_modified.clone(),
        );
        r.register(
            "tollgate_snapshot_sent",
            "Snapshot answers with a body, by shape: delta, whole (a sync service's version unknown here), document (plain GET)",
            self.snapshot_sent.clone(),
        );
        r.register(
            "tollgate_snapshot_sent_bytes",
            "Bytes of snapshot answers, by shape",
            self.snapshot_sent_bytes.clone(),
        );
        self
    }

    /// Counts one answered request and its latency. `route` is the route template, or
    /// `unmatched`; a method outside the standard ones is labelled `other`, so a client
    /// cannot grow the label set.
    pub fn request(&self, method: &Method, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                method: method_label(method),
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one ingested batch: events stored, duplicates ignored, conflicts refused, and
    /// stored events whose cost the control plane computes differently.
    pub fn ingested(&self, accepted: u64, duplicate: u64, conflict: u64, cost_mismatch: u64) {
        self.batches.inc();
        self.events_accepted.inc_by(accepted);
        self.events_duplicate.inc_by(duplicate);
        self.events_conflict.inc_by(conflict);
        self.events_cost_mismatch.inc_by(cost_mismatch);
    }

    /// Counts usage refused before ingestion.
    pub fn usage_refused(&self, reason: Refused, n: u64) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Counts one enrollment.
    pub fn reporter_enrolled(&self) {
        self.reporters_enrolled.inc();
    }

    /// Records a snapshot build.
    pub fn snapshot_built(&self, version: u64, micros: u64, bytes: u64) {
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.snapshot_builds.inc();
        let secs = micros as f64 / 1e6;
        self.snapshot_build_seconds.inc_by(secs);
        self.snapshot_build_seconds_last.set(secs);
        self.snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a snapshot answer of `bytes` in `shape` (`delta`, `whole` or `document`).
    pub fn snapshot_sent(&self, shape: &'static str, bytes: usize) {
        let labels = SentLabels { shape };
        self.snapshot_sent.get_or_create(&labels).inc();
        self.snapshot_sent_bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Counts a `304 Not Modified` snapshot answer.
    pub fn snapshot_not_modified(&self) {
        self.snapshot_not_modified.inc();
    }

    /// The text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The method as a label value: the standard methods by name, anything else `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
