//! Prometheus metrics in the text exposition format, written by hand (a few counters do not
//! need a registry crate): requests by route and status, usage events ingested and duplicate,
//! the snapshot version and build time. Served at `GET /metrics`; see
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The process's metrics. Shared through the application state.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Route → status → count (nested so a lookup by `&str` allocates nothing).
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    events_accepted: AtomicU64,
    events_duplicate: AtomicU64,
    events_conflict: AtomicU64,
    events_cost_mismatch: AtomicU64,
    refused_not_enrolled: AtomicU64,
    refused_foreign_reporter: AtomicU64,
    reporters_enrolled: AtomicU64,
    batches: AtomicU64,
    snapshot_version: AtomicU64,
    snapshot_builds: AtomicU64,
    snapshot_build_micros_total: AtomicU64,
    snapshot_build_micros_last: AtomicU64,
    snapshot_bytes: AtomicU64,
    snapshot_not_modified: AtomicU64,
}

impl Metrics {
    /// Counts one answered request; `route` is the route template (never the raw path, whose
    /// ids would explode the label set), `unmatched` for 404s outside every route.
    pub fn request(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_default() += 1,
            None => {
                map.insert(route.to_string(), BTreeMap::from([(status, 1)]));
            }
        }
    }

    /// Counts one ingested batch: events stored, duplicates ignored, conflicts refused, and
    /// stored events whose cost the control plane computes differently.
    pub fn ingested(&self, accepted: u64, duplicate: u64, conflict: u64, cost_mismatch: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events_accepted.fetch_add(accepted, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicate, Ordering::Relaxed);
        self.events_conflict.fetch_add(conflict, Ordering::Relaxed);
        self.events_cost_mismatch
            .fetch_add(cost_mismatch, Ordering::Relaxed);
    }

    /// Counts usage refused before ingestion: `not_enrolled` (a post with the data-plane
    /// token, counted per batch) or `foreign_reporter` (events of another reporter).
    pub fn usage_refused(&self, reason: &str, n: u64) {
        let counter = match reason {
            "not_enrolled" => &self.refused_not_enrolled,
            _ => &self.refused_foreign_reporter,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one enrollment.
    pub fn reporter_enrolled(&self) {
        self.reporters_enrolled.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a snapshot build.
    pub fn snapshot_built(&self, version: u64, micros: u64, bytes: u64) {
        self.snapshot_version.store(version, Ordering::Relaxed);
        self.snapshot_builds.fetch_add(1, Ordering::Relaxed);
        self.snapshot_build_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.snapshot_build_micros_last
            .store(micros, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Counts a `304 Not Modified` snapshot answer.
    pub fn snapshot_not_modified(&self) {
        self.snapshot_not_modified.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |micros: u64| micros as f64 / 1e6;
        out.push_str(
            "# HELP tollgate_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE tollgate_http_requests_total counter\n",
        );
        {
            let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for (route, by_status) in map.iter() {
                for (status, n) in by_status {
                    let _ = writeln!(
                        out,
                        "tollgate_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                        escape(route)
                    );
                }
            }
        }
        {
            let _ = write!(
                out,
                "# HELP tollgate_usage_refused_total Usage refused before ingestion: batches posted without a reporter secret, events of another reporter.\n\
                 # TYPE tollgate_usage_refused_total counter\n\
                 tollgate_usage_refused_total{{reason=\"not_enrolled\"}} {}\n\
                 tollgate_usage_refused_total{{reason=\"foreign_reporter\"}} {}\n",
                load(&self.refused_not_enrolled),
                load(&self.refused_foreign_reporter)
            );
        }
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "tollgate_usage_events_accepted_total",
            "counter",
            "Usage events stored.",
            load(&self.events_accepted).to_string(),
        );
        metric(
            "tollgate_usage_events_duplicate_total",
            "counter",
            "Usage events ignored because their id was already stored.",
            load(&self.events_duplicate).to_string(),
        );
        metric(
            "tollgate_usage_events_conflict_total",
            "counter",
            "Usage events refused because their id was stored with different content.",
            load(&self.events_conflict).to_string(),
        );
        metric(
            "tollgate_usage_events_cost_mismatch_total",
            "counter",
            "Usage events stored whose cost differs from the control plane's own pricing of their usage at the same price version.",
            load(&self.events_cost_mismatch).to_string(),
        );
        metric(
            "tollgate_reporters_enrolled_total",
            "counter",
            "Reporters enrolled (POST /v1/reporters).",
            load(&self.reporters_enrolled).to_string(),
        );
        metric(
            "tollgate_usage_batches_total",
            "counter",
            "Usage batches stored.",
            load(&self.batches).to_string(),
        );
        metric(
            "tollgate_snapshot_version",
            "gauge",
            "Version of the snapshot being served.",
            load(&self.snapshot_version).to_string(),
        );
        metric(
            "tollgate_snapshot_builds_total",
            "counter",
            "Snapshots built.",
            load(&self.snapshot_builds).to_string(),
        );
        metric(
            "tollgate_snapshot_build_seconds_total",
            "counter",
            "Time spent building snapshots.",
            secs(load(&self.snapshot_build_micros_total)).to_string(),
        );
        metric(
            "tollgate_snapshot_build_seconds_last",
            "gauge",
            "Time the last snapshot build took.",
            secs(load(&self.snapshot_build_micros_last)).to_string(),
        );
        metric(
            "tollgate_snapshot_bytes",
            "gauge",
            "Size of the snapshot being served.",
            load(&self.snapshot_bytes).to_string(),
        );
        metric(
            "tollgate_snapshot_not_modified_total",
            "counter",
            "Snapshot polls answered 304 Not Modified.",
            load(&self.snapshot_not_modified).to_string(),
        );
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
