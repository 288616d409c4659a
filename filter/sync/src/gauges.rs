//! The sync service's gauges (one writer per Envoy); Envoy exposes them on its admin `/stats`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Gauges the sync service owns (one writer per Envoy).
#[derive(Debug, Default)]
pub struct SyncGauges {
    snapshot_version: Option<u32>,
    snapshot_age_s: Option<u32>,
    queue_depth: Option<u32>,
    queue_overflow: Option<u32>,
    sync_failures: Option<u32>,
    rejected: Option<u32>,
    reenrolled: Option<u32>,
    enrolled: Option<u32>,
}

fn gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

fn set(id: Option<u32>, v: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, v);
    }
}

impl SyncGauges {
    /// Defines the sync gauges.
    pub fn define() -> SyncGauges {
        SyncGauges {
            snapshot_version: gauge("tollgate_snapshot_version"),
            snapshot_age_s: gauge("tollgate_snapshot_age_seconds"),
            queue_depth: gauge("tollgate_queue_depth"),
            queue_overflow: gauge("tollgate_queue_overflow"),
            sync_failures: gauge("tollgate_sync_failures"),
            rejected: gauge("tollgate_usage_rejected"),
            reenrolled: gauge("tollgate_sync_reenrolled"),
            enrolled: gauge("tollgate_sync_enrolled"),
        }
    }

    /// Records the sync state.
    /// `enrolled`: whether the sync service holds a reporter identity (1) or not yet (0).
    pub fn record(
        &self,
        version: u64,
        age_s: u64,
        enrolled: bool,
        stats: tollgate_core::sync_protocol::SyncStats,
    ) {
        set(self.enrolled, u64::from(enrolled));
        set(self.reenrolled, stats.reenrolled);
        set(self.snapshot_version, version);
        set(self.snapshot_age_s, age_s);
        set(self.queue_depth, stats.pending as u64);
        set(self.queue_overflow, stats.overflow);
        set(self.sync_failures, stats.failures);
        set(self.rejected, stats.rejected);
    }
}
