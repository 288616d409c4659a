//! The filter role's root context on each worker: the validated config, the snapshot decoded
//! once per version (L1 cache; the bytes live in shared data, L2), and the usage queue id.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use tollgate_core::config::Config;
use tollgate_core::estimate::EstimateConfig;
use tollgate_core::snapshot::SnapshotIndex;

use crate::host;
use crate::metrics::Metrics;

/// Shared-data key of the snapshot bytes, written by the sync service.
pub const SNAPSHOT_KEY: &str = "tollgate.snapshot";
/// Shared-data key of the snapshot version: small, so workers poll it instead of the bytes.
pub const VERSION_KEY: &str = "tollgate.snapshot.version";
/// Shared-data key of when the control plane last answered a snapshot poll (200 or 304), Unix
/// seconds: staleness is measured from here, since a 304 keeps an old `generated_at`.
pub const FRESH_KEY: &str = "tollgate.snapshot.fresh_at";
/// Name of the usage queue the sync service registers.
pub const QUEUE_NAME: &str = "tollgate.usage";

/// What every HTTP stream of this worker shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Estimate settings derived from it.
    pub estimate: EstimateConfig,
    /// The current snapshot, if any arrived.
    pub snapshot: RefCell<Option<Rc<SnapshotIndex>>>,
    version: Cell<Option<u64>>,
    fresh_at: Cell<Option<i64>>,
    queue: Cell<Option<u32>>,
    /// Metric ids.
    pub metrics: Metrics,
}

impl Shared {
    /// The snapshot version the sync service last published.
    pub fn published_version() -> Option<u64> {
        let (bytes, _) = host::shared(VERSION_KEY);
        bytes
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
    }

    /// When the control plane last confirmed the snapshot (falls back to its build time).
    pub fn fresh_at(&self, snapshot: &SnapshotIndex) -> i64 {
        self.fresh_at
            .get()
            .unwrap_or(snapshot.snapshot.generated_at)
    }

    /// Reads when the sync service last heard from the control plane (on ticks: staleness is
    /// measured in seconds, so per-request reads would buy nothing).
    pub fn refresh_fresh_at(&self) {
        let (fresh, _) = host::shared(FRESH_KEY);
        if let Some(t) = fresh
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
        {
            self.fresh_at.set(Some(t));
        }
    }

    /// Loads a newer snapshot from shared data, if the sync service published one; returns
    /// the published version it saw.
    pub fn refresh_snapshot(&self) -> Option<u64> {
        let version = Shared::published_version();
        if version.is_none() || version == self.version.get() {
            return version;
        }
        let (Some(bytes), _) = host::shared(SNAPSHOT_KEY) else {
            return version;
        };
        match SnapshotIndex::decode(&bytes) {
            Ok(index) => {
                self.version.set(Some(index.snapshot.version));
                *self.snapshot.borrow_mut() = Some(Rc::new(index));
            }
            Err(e) => host::log(
                LogLevel::Error,
                &format!("tollgate: shared snapshot unreadable: {e}"),
            ),
        }
        version
    }

    /// The usage queue, resolved lazily: the sync service may register it after this VM starts.
    pub fn queue(&self) -> Option<u32> {
        if self.queue.get().is_none() {
            let id = hostcalls::resolve_shared_queue(&self.config.vm_id, QUEUE_NAME)
                .ok()
                .flatten();
            self.queue.set(id);
        }
        self.queue.get()
    }
}

/// The filter role's root context.
pub struct FilterRoot {
    shared: Rc<Shared>,
}

impl FilterRoot {
    /// Sets up the worker: metrics, the first snapshot if one is published, the refresh tick.
    pub fn new(config: Config) -> FilterRoot {
        let estimate = EstimateConfig {
            max_body_bytes: config.limits.max_request_body_bytes,
            default_max_output_tokens: config.limits.default_max_output_tokens,
            ..EstimateConfig::default()
        };
        // Workers look for a new snapshot twice per sync interval, at most every 500 ms: a
        // new budget or revoked key then applies within one sync interval of the sync service.
        let tick = (config.control_plane.sync_interval_ms / 2).clamp(50, 500);
        let shared = Rc::new(Shared {
            config,
            estimate,
            snapshot: RefCell::new(None),
            version: Cell::new(None),
            fresh_at: Cell::new(None),
            queue: Cell::new(None),
            metrics: Metrics::define(),
        });
        let _ = shared.refresh_snapshot();
        shared.refresh_fresh_at();
        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
        FilterRoot { shared }
    }

    /// The state streams share.
    pub fn shared(&self) -> Rc<Shared> {
        Rc::clone(&self.shared)
    }

    /// Timer: pick up a new snapshot.
    pub fn on_tick(&mut self) {
        let _ = self.shared.refresh_snapshot();
        self.shared.refresh_fresh_at();
    }
}
