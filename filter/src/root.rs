//! The filter role's root context on each worker: the validated config, the snapshot's prices
//! and budgets decoded when their sections change (the bytes live in shared data, one copy per
//! Envoy), the virtual keys looked up in their bucket's shared-data entry with a small
//! per-worker cache, and the usage queue id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use rust_decimal::Decimal;
use tollgate_core::config::Config;
use tollgate_core::denials::{Denials, Refusal};
use tollgate_core::estimate::EstimateConfig;
use tollgate_core::identity::{key_hash, Principal};
use tollgate_core::local_spend::{LocalBudget, Owed};
use tollgate_core::pricing::PriceMemo;
use tollgate_core::shared_codec::Writer;
use tollgate_core::snapshot::sections::{key_bucket, principal_in_bucket, Manifest};
use tollgate_core::snapshot::{KeyLookup, SnapshotIndex};
use tollgate_core::sync_protocol::{
    QueuedUsage, BUDGETS_KEY, FRESH_KEY, KEYS_PREFIX, PRICES_KEY, PUBLISHED_KEY, QUEUE_NAME,
    SPEND_KEY, VERSION_KEY,
};

use crate::host::{self, BudgetSlot};
use crate::metrics::Metrics;

/// Usage records a worker collects before putting them on the queue as one item. Every
/// enqueue wakes Envoy's main thread (an eventfd write and a futex wake, then the sync
/// service's callback), which under load cost more than metering the request itself. The
/// worker tick flushes a partial batch, so an event waits at most one tick.
const OUTBOX_MAX_EVENTS: usize = 64;

/// Budgets a worker owes settlements to before it writes them all: bounds the search an
/// admission and a settlement make (a worker serving many budgets writes every this many).
const OWED_MAX_BUDGETS: usize = 32;

/// Where the entry of the budget at `key` is in a worker's owed settlements: found by the
/// key's allocation, not its text ([`Shared`]'s `owed` says why that is sound).
fn owed_at(owed: &[(Arc<str>, Owed)], key: &Arc<str>) -> Option<usize> {
    owed.iter().position(|(k, _)| Arc::ptr_eq(k, key))
}

/// Keys a worker remembers (found or not) until the key buckets change; past this many it
/// starts over, so a caller spraying random keys cannot grow it.
const KEY_CACHE_MAX: usize = 4096;

/// Usage records not yet on the shared queue.
#[derive(Default)]
struct Outbox {
    records: Writer,
    events: usize,
}

/// What every HTTP stream of this worker shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Estimate settings derived from it.
    pub estimate: EstimateConfig,
    /// The current snapshot, if any arrived.
    pub snapshot: RefCell<Option<Rc<SnapshotIndex>>>,
    version: Cell<Option<u64>>,
    /// The CAS of [`PUBLISHED_KEY`] when this worker last read the manifest.
    published_cas: Cell<Option<u32>>,
    /// Presented virtual key → principal (`None`: not an active key), valid for the keys
    /// stamp held. Keyed by the key itself so a known key costs no SHA-256 (the key is in
    /// this worker's memory while its request is anyway; a cache of at most
    /// [`KEY_CACHE_MAX`] keys, emptied whenever any key changes).
    keys: RefCell<HashMap<String, Option<Arc<Principal>>>>,
    fresh_at: Cell<Option<i64>>,
    queue: Cell<Option<u32>>,
    outbox: RefCell<Outbox>,
    /// What this worker's settled requests owe budgets' local state, by the snapshot's
    /// shared-data key of the budget, written with the next admission on the budget or on the
    /// tick ([`Owed`]). Found by the key's allocation, not its text (a pointer comparison, no
    /// hashing): the entry holds the key, so its address names that budget while the entry
    /// lives. A budget redefined since (a new snapshot's key) misses its older entry and
    /// decides with the reservation still held, stricter until the tick writes it.
    owed: RefCell<Vec<(Arc<str>, Owed)>>,
    /// The worker's last price lookups in the snapshot's book.
    pub prices: PriceMemo,
    /// The last principal's access-log label (`org/project/user/key`), kept with the
    /// principal it names (`Stream::principal_label`).
    pub last_label: RefCell<Option<(Arc<Principal>, Rc<str>)>>,
    /// Refusals not yet reported (one record per budget, principal and model per second).
    denials: RefCell<Denials>,
    /// Metric ids.
    pub metrics: Metrics,
}

impl Shared {
    /// What the sync service last published.
    pub fn published() -> Option<Manifest> {
        host::shared(VERSION_KEY)
            .0
            .and_then(|b| tollgate_load::manifest(&b))
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

    /// Loads a newer snapshot from shared data, if the sync service published one (only the
    /// sections whose stamp moved are read); whether it did.
    pub fn load_newer_snapshot(&self) -> bool {
        // Every admission asks (see `Stream::reserve`): the empty marker's CAS answers "nothing
        // new" without the manifest's bytes. Read before the manifest, so a publish in between
        // only makes the next call read the manifest again.
        let (_, cas) = host::shared(PUBLISHED_KEY);
        if cas.is_some() && cas == self.published_cas.get() {
            return false;
        }
        let Some(manifest) = Shared::published() else {
            return false;
        };
        self.published_cas.set(cas);
        if Some(manifest.version) == self.version.get() {
            return false;
        }
        // Remembered even if a section turns out unreadable, so a bad snapshot is decoded (and
        // logged) once, not on every request; the next version replaces it.
        self.version.set(Some(manifest.version));
        let previous = self.snapshot.borrow().clone();
        if previous.as_ref().map(|p| p.stamps().keys) != Some(manifest.stamps.keys) {
            self.keys.borrow_mut().clear();
        }
        let decoded = tollgate_load::snapshot(manifest, previous.as_deref(), &mut |section| {
            let key = match section {
                "prices" => PRICES_KEY,
                "budgets" => BUDGETS_KEY,
                _ => SPEND_KEY,
            };
            host::shared(key).0
        });
        match decoded {
            Ok(index) => *self.snapshot.borrow_mut() = Some(Rc::new(index)),
            Err(e) => host::log(
                LogLevel::Error,
                &format!("tollgate: shared snapshot unreadable: {e}"),
            ),
        }
        true
    }

    /// A settled request's reservation of `estimate` on the budget at `key` ends and `amount`
    /// was spent in `window`: owed to the budget's local state, not yet written.
    pub fn owe(&self, key: &Arc<str>, estimate: Decimal, window: i64, amount: Decimal) {
        let full = {
            let mut owed = self.owed.borrow_mut();
            match owed_at(&owed, key).and_then(|i| owed.get_mut(i)) {
                Some((_, o)) => o.settle(estimate, window, amount),
                None => {
                    let mut o = Owed::default();
                    o.settle(estimate, window, amount);
                    owed.push((Arc::clone(key), o));
                }
            }
            owed.len() >= OWED_MAX_BUDGETS
        };
        if full {
            self.write_owed();
        }
    }

    /// The budget's local state `state` (just read at `key`) with what this worker owes it
    /// applied, as an admission decides with it and writes it.
    pub fn with_owed(&self, key: &Arc<str>, state: &mut LocalBudget) {
        let owed = self.owed.borrow();
        if let Some((_, o)) = owed_at(&owed, key).and_then(|i| owed.get(i)) {
            o.apply_to(state);
        }
    }

    /// The state holding what this worker owed the budget at `key` was written.
    pub fn owed_written(&self, key: &Arc<str>) {
        let mut owed = self.owed.borrow_mut();
        if let Some(i) = owed_at(&owed, key) {
            owed.swap_remove(i);
        }
    }

    /// Writes everything owed (one compare-and-set per budget), before the usage it comes
    /// from is queued.
    fn write_owed(&self) {
        let owed = std::mem::take(&mut *self.owed.borrow_mut());
        for (key, o) in owed {
            BudgetSlot::at(key).update(|state| o.apply_to(state));
        }
    }

    /// Collects one request's usage for the sync service (queued with the next batch).
    pub fn send_usage(&self, item: &QueuedUsage) {
        let full = {
            let mut out = self.outbox.borrow_mut();
            item.encode_into(&mut out.records);
            out.events = out.events.saturating_add(1);
            out.events >= OUTBOX_MAX_EVENTS
        };
        if full {
            self.flush_usage();
        }
    }

    /// Counts a refusal for the control plane.
    pub fn refused(&self, r: Refusal<'_>) {
        if !self.denials.borrow_mut().add(r) {
            self.metrics.denial_unreported();
        }
    }

    /// Collects the denial records that are due (all of them when `all`) with the usage.
    fn collect_denials(&self, all: bool) {
        let records = {
            let mut d = self.denials.borrow_mut();
            if d.is_empty() || !(all || d.due(host::now_s())) {
                return;
            }
            d.take()
        };
        for event in records {
            self.send_usage(&QueuedUsage {
                event,
                charges: Vec::new(),
            });
        }
    }

    /// Puts the collected usage on the shared queue as one item.
    pub fn flush_usage(&self) {
        // Its charges reach the budgets' local state first: the sync service removes them
        // from there once the control plane acknowledges the batch.
        self.write_owed();
        let Outbox { records, events } = std::mem::take(&mut *self.outbox.borrow_mut());
        if events == 0 {
            return;
        }
        let queue = self.queue();
        let sent = queue.is_some_and(|q| host::enqueue(q, &records.0).is_ok());
        if !sent {
            self.metrics.enqueue_failed(queue.is_some(), events);
            host::log(
                LogLevel::Warn,
                &format!(
                    "tollgate: {events} usage events could not be queued (is the sync service running?)"
                ),
            );
        }
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

/// A request's key is looked up in its bucket, the Envoy-wide copy the sync service keeps in
/// shared data (about 25 keys in a fleet of 100,000): a worker never holds the whole fleet.
impl KeyLookup for Shared {
    fn principal_for_key(&self, sha256_hex: &str) -> Option<Principal> {
        let bucket = host::shared(&format!("{KEYS_PREFIX}{}", key_bucket(sha256_hex))).0;
        bucket.and_then(|b| principal_in_bucket(&b, sha256_hex))
    }

    fn principal_for_virtual_key(&self, key: &str) -> Option<Arc<Principal>> {
        if let Some(known) = self.keys.borrow().get(key) {
            return known.clone();
        }
        let found = self.principal_for_key(&key_hash(key)).map(Arc::new);
        let mut keys = self.keys.borrow_mut();
        if keys.len() >= KEY_CACHE_MAX {
            keys.clear();
        }
        keys.insert(key.to_owned(), found.clone());
        found
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
        // Workers look for a new snapshot (and flush their usage batch) twice per sync
        // interval, at least every 100 ms: a new budget or revoked key then applies within one
        // sync interval of the sync service, and a usage event waits at most 100 ms here.
        let tick = (config.control_plane.sync_interval_ms / 2).clamp(20, 100);
        let shared = Rc::new(Shared {
            config,
            estimate,
            snapshot: RefCell::new(None),
            version: Cell::new(None),
            published_cas: Cell::new(None),
            keys: RefCell::new(HashMap::new()),
            fresh_at: Cell::new(None),
            queue: Cell::new(None),
            outbox: RefCell::new(Outbox::default()),
            owed: RefCell::new(Vec::new()),
            prices: PriceMemo::default(),
            last_label: RefCell::new(None),
            denials: RefCell::new(Denials::default()),
            metrics: Metrics::define(),
        });
        shared.load_newer_snapshot();
        shared.refresh_fresh_at();
        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
        FilterRoot { shared }
    }

    /// The state streams share.
    pub fn shared(&self) -> Rc<Shared> {
        Rc::clone(&self.shared)
    }

    /// Timer: queue the collected usage, hand Envoy the counters, pick up a new snapshot.
    pub fn on_tick(&mut self) {
        self.shared.collect_denials(false);
        self.shared.flush_usage();
        self.shared.metrics.flush();
        self.shared.load_newer_snapshot();
        self.shared.refresh_fresh_at();
    }

    /// The VM is shutting down: queue what was collected (the sync service may still post it).
    pub fn on_done(&mut self) {
        self.shared.collect_denials(true);
        self.shared.flush_usage();
        self.shared.metrics.flush();
    }
}
