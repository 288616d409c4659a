//! The snapshot the filter enforces from: built from the store, cached as bytes per version,
//! served from memory.
//!
//! - **Version**: `meta.version` from the database, bumped in the same transaction as every
//!   change, so replicas on one PostgreSQL agree on it. Time boundaries (a budget window
//!   ending, a price revision coming into effect) are turned into a version bump by whichever
//!   replica notices first ([`Store::advance_clock`]), and every build computes windows and
//!   prices at `max(now, meta.clock)`, so a version always means the same content.
//! - **Building**: incremental. Keys, budgets and prices are read again only when their own
//!   version changed; each build reads the counters of the current windows and the reporter
//!   acknowledgements (one consistent read transaction), computes the window bounds once per
//!   `(period, timezone)` and splices cached JSON fragments (the keys array of a large fleet
//!   is kept by the database as JSON text in buckets, each rewritten when one of its keys
//!   changes, see `store/key_buckets.rs`).
//! - **Deltas**: an Envoy's sync service asks for what changed since the version it holds
//!   ([`history`]): the sections that moved, stamped per budget and per key bucket by the
//!   builds in between; a version this process did not build gets the whole snapshot in the
//!   same shape. Steady-state traffic per Envoy is then the budgets whose spend moved (a short
//!   row each), not the fleet.
//! - **Serving**: `GET /v1/snapshot` takes the built bytes from memory. A request whose
//!   `If-None-Match` matches the current version gets `304` without touching the database.
//!   A write through this process's [`Store`] marks the snapshot dirty (the store counts each
//!   commit that bumps the version, [`crate::store::Changes`]), and the next poll rebuilds
//!   before answering; writes by other replicas are noticed by [`Snapshots::run_refresher`], which
//!   polls `meta.version`.
//!
//! Bench: `cargo bench -p tollgate-benches --bench snapshot`.

pub mod history;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rust_decimal::Decimal;
use tollgate_core::budget::{Period, WindowBounds};
use tollgate_core::pricing::PriceBook;
use tollgate_core::snapshot::SnapshotBudget;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::budgets::Budget;
use crate::store::prices::EffectivePrices;
use crate::store::snapshot::{Held, KeysJson};
use crate::store::{Store, StoreError};

/// Reporters not heard from for this long leave the snapshot (an Envoy that restarted reports
/// under a new id; the old entry would only grow the document).
pub const REPORTER_RETENTION_S: i64 = 7 * 86_400;

/// Windows precomputed after the current one.
pub const WINDOWS_AHEAD: usize = 2;

/// One built snapshot.
#[derive(Debug, Clone)]
pub struct Built {
    /// `Snapshot::version`.
    pub version: u64,
    /// The `ETag` header value: the version, quoted.
    pub etag: String,
    /// The JSON document, with an empty `reporters` map: what a caller that is not an
    /// enrolled reporter gets. [`Built::for_reporter`] adds one reporter's entry.
    pub bytes: Bytes,
    /// Acknowledged sequence per reporter, read in the same transaction as the spend (so an
    /// acknowledgement never runs ahead of the counters). Each reporter is shown only its own.
    pub reporters: Arc<BTreeMap<String, u64>>,
    /// `Snapshot::generated_at`.
    pub generated_at: i64,
    /// The earliest instant the content changes by itself (a window end, a price coming into
    /// effect): the refresher bumps the version then.
    pub next_boundary: Option<i64>,
    /// The local write counter this build has seen (see [`crate::store::Changes`]).
    pub writes_seen: u64,
    /// The price book in it, for `POST /v1/cost/quote`.
    pub prices: Arc<PriceBook>,
    /// How many budgets and keys it carries.
    pub counts: (usize, usize),
    /// When it was built (or last confirmed current).
    pub built_at: Instant,
    /// What changed when: the source of deltas.
    changes: Arc<history::Changes>,
    /// The key buckets and the price book's JSON, for deltas.
    keys: Arc<KeysJson>,
    prices_json: Bytes,
    /// Delta documents already written.
    deltas: DeltaCache,
}

/// Delta documents by base (`None`: the whole snapshot), shared by the clones of one build.
type DeltaCache = Arc<Mutex<Vec<(Option<u64>, Bytes)>>>;

/// Delta documents kept per build: the Envoys of a fleet hold one of a few versions.
const DELTAS_KEPT: usize = 8;

impl Built {
    /// Every budget in it, with its spend.
    pub fn budgets(&self) -> impl Iterator<Item = &SnapshotBudget> {
        self.changes.budgets.iter().map(|s| &s.budget)
    }

    /// The delta document from `base` for the sync service: what changed since, when this
    /// process built `base`; else (or with `None`) the whole snapshot in the same shape. Also
    /// returns the base it starts from (`None`: whole). Written once per base and build.
    pub fn delta(&self, base: Option<u64>) -> Result<(Bytes, Option<u64>), StoreError> {
        let base = base.filter(|b| *b < self.version && self.changes.knows(*b));
        let mut cache = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, bytes)) = cache.iter().find(|(b, _)| *b == base) {
            return Ok((bytes.clone(), base));
        }
        let bytes = Bytes::from(
            history::document(
                &self.changes,
                base,
                (self.version, self.generated_at),
                &self.prices_json,
                &self.keys,
            )
            .map_err(|e| StoreError::Corrupt(format!("snapshot delta json: {e}")))?,
        );
        if cache.len() >= DELTAS_KEPT {
            cache.remove(0);
        }
        cache.push((base, bytes.clone()));
        Ok((bytes, base))
    }

    /// A document (`bytes`, or a [`Built::delta`]) as `reporter` gets it: `reporters` holding
    /// that reporter's acknowledged sequence when it has one (and never another reporter's,
    /// which would tell a caller the next ids of a real Envoy). Returned as the shared bytes
    /// before the map and the short tail, so the large part is never copied.
    pub fn for_reporter(&self, doc: &Bytes, reporter: &str) -> (Bytes, Bytes) {
        const EMPTY_TAIL: &[u8] = b"{}}";
        let Some(acked) = self.reporters.get(reporter) else {
            return (doc.clone(), Bytes::new());
        };
        let head_len = doc.len().saturating_sub(EMPTY_TAIL.len());
        if !doc.ends_with(EMPTY_TAIL) {
            return (doc.clone(), Bytes::new());
        }
        let mut tail = Vec::with_capacity(reporter.len() + 32);
        tail.push(b'{');
        tail.extend_from_slice(&serde_json::to_vec(reporter).unwrap_or_default());
        tail.extend_from_slice(format!(":{acked}}}}}").as_bytes());
        (doc.slice(..head_len), Bytes::from(tail))
    }

    fn empty() -> Built {
        Built {
            version: 0,
            etag: "\"0\"".into(),
            bytes: Bytes::new(),
            reporters: Arc::new(BTreeMap::new()),
            generated_at: 0,
            next_boundary: None,
            writes_seen: 0,
            prices: Arc::new(PriceBook::default()),
            counts: (0, 0),
            built_at: Instant::now(),
            changes: Arc::default(),
            keys: Arc::default(),
            prices_json: Bytes::new(),
            deltas: Arc::default(),
        }
    }
}

/// Caches carried from one build to the next.
#[derive(Default)]
struct Builder {
    held: Held,
    keys: Arc<KeysJson>,
    history: history::History,
    budgets: Arc<Vec<Budget>>,
    prices: Arc<PriceBook>,
    prices_json: Bytes,
    next_price_change: Option<i64>,
    /// Window bounds per (period, timezone), valid while `at` stays in their first window.
    bounds: HashMap<(Period, String), WindowBounds>,
}

/// The bounds of `b`'s windows at `at`, from `cache` while `at` stays in the cached first
/// window (one tz computation per period and timezone, not per budget).
fn bounds_for(
    cache: &mut HashMap<(Period, String), WindowBounds>,
    b: &Budget,
    at: i64,
) -> WindowBounds {
    if b.period == Period::Total {
        return WindowBounds::total();
    }
    let key = (b.period, b.timezone.clone());
    if let Some(cached) = cache.get(&key) {
        if let [start, end, ..] = cached.boundaries() {
            if *start <= at && at < *end {
                return cached.clone();
            }
        }
    }
    let fresh = WindowBounds::compute(b.period, &b.zone(), at, WINDOWS_AHEAD);
    cache.insert(key, fresh.clone());
    fresh
}

/// The snapshot service: the current build and the builder (the dirty counter is the store's
/// [`crate::store::Changes`]).
pub struct Snapshots {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    current: RwLock<Arc<Built>>,
    builder: tokio::sync::Mutex<Builder>,
    min_interval_ms: AtomicU64,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("version", &self.current().version)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// A service with nothing built yet (call [`Snapshots::rebuild`] before serving).
    pub fn new(store: Store, clock: Clock, metrics: Arc<Metrics>) -> Snapshots {
        Snapshots {
            store,
            clock,
            metrics,
            current: RwLock::new(Arc::new(Built::empty())),
            builder: tokio::sync::Mutex::new(Builder::default()),
            min_interval_ms: AtomicU64::new(0),
        }
    }

    /// The current build, without touching the database.
    pub fn current(&self) -> Arc<Built> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The build to serve: the current one, or a fresh one when this process wrote since.
    ///
    /// At most one rebuild per [`Snapshots::set_min_interval`]: under a steady stream of usage
    /// batches the pollers get a snapshot at most that old instead of a rebuild per poll.
    pub async fn fresh(&self) -> Result<Arc<Built>, StoreError> {
        let want = self.store.changes().count();
        let cur = self.current();
        if cur.writes_seen >= want || cur.built_at.elapsed() < self.min_interval() {
            return Ok(cur);
        }
        self.build(Some(want)).await
    }

    /// Sets the shortest time between two rebuilds caused by local writes (default zero:
    /// every poll after a write sees it, which tests rely on; `serve` uses 200 ms).
    pub fn set_min_interval(&self, every: Duration) {
        self.min_interval_ms.store(
            u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn min_interval(&self) -> Duration {
        Duration::from_millis(self.min_interval_ms.load(Ordering::Relaxed))
    }

    /// Builds a new snapshot if the database moved on (single flight: concurrent callers wait
    /// for one build and share it).
    pub async fn rebuild(&self) -> Result<Arc<Built>, StoreError> {
        self.build(None).await
    }

    /// Builds, unless a build that saw the local write counter at `seen` or later finished
    /// while this call waited for the builder.
    async fn build(&self, seen: Option<u64>) -> Result<Arc<Built>, StoreError> {
        let writes_seen = self.store.changes().count();
        let mut builder = self.builder.lock().await;
        let cur = self.current();
        if seen.is_some_and(|w| cur.writes_seen >= w) {
            return Ok(cur);
        }
        let started = Instant::now();
        let now = self.clock.now();
        let budgets_held = builder.budgets.clone();
        let budgets_arg = builder
            .held
            .budgets_version
            .map(|_| budgets_held.as_slice());
        let read = {
            let b = &mut *builder;
            let mut bounds = std::mem::take(&mut b.bounds);
            let read = self
                .store
                .read_snapshot(
                    b.held,
                    budgets_arg,
                    now,
                    now.saturating_sub(REPORTER_RETENTION_S),
                    |budgets, at| {
                        budgets
                            .iter()
                            .map(|bd| {
                                bounds_for(&mut bounds, bd, at)
                                    .boundaries()
                                    .first()
                                    .copied()
                                    .unwrap_or(i64::MIN)
                            })
                            .collect()
                    },
                )
                .await;
            b.bounds = bounds;
            read?
        };
        let at = read.at;
        let version = u64::try_from(read.meta.version).unwrap_or(0);
        if cur.version == version && cur.version != 0 && read.keys.is_none() {
            // Nothing new committed: keep the bytes (one version, one content).
            let mut same = (*cur).clone();
            same.writes_seen = writes_seen;
            same.built_at = Instant::now();
            let same = Arc::new(same);
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = same.clone();
            return Ok(same);
        }
        let old_keys = match read.keys {
            Some(keys) => {
                builder.held.keys_version = Some(read.meta.keys_version);
                Some(std::mem::replace(&mut builder.keys, Arc::new(keys)))
            }
            None => None,
        };
        let prices_changed = read.prices.is_some();
        if let Some(budgets) = read.budgets {
            builder.budgets = Arc::new(budgets);
            builder.held.budgets_version = Some(read.meta.budgets_version);
        }
        if let Some(EffectivePrices {
            book, next_change, ..
        }) = read.prices
        {
            builder.prices_json = Bytes::from(json_bytes(&book)?);
            builder.prices = Arc::new(book);
            builder.next_price_change = next_change;
            builder.held.prices = Some((read.meta.prices_version, next_change));
        }
        let budgets = builder.budgets.clone();
        let mut next_boundary = builder.next_price_change;
        let mut snapshot_budgets = Vec::with_capacity(budgets.len());
        for b in budgets.iter() {
            let window = bounds_for(&mut builder.bounds, b, at);
            let start = match b.period {
                Period::Total => i64::MIN,
                _ => window.boundaries().first().copied().unwrap_or(i64::MIN),
            };
            if let Some(&end) = window.boundaries().get(1) {
                next_boundary = Some(next_boundary.map_or(end, |n| n.min(end)));
            }
            let spent = read
                .counters
                .get(&(b.id.clone(), start))
                .copied()
                .unwrap_or(Decimal::ZERO);
            snapshot_budgets.push(SnapshotBudget {
                id: b.id.clone(),
                scope: b.scope,
                scope_id: b.scope_id.clone(),
                limit_usd: b.limit_usd,
                soft_limit_usd: b.soft_limit_usd,
                mode: b.mode,
                window,
                spent_window_start: (b.period != Period::Total).then_some(start),
                spent_usd: spent,
            });
        }
        let bytes = assemble(
            version,
            now,
            &builder.prices_json,
            &json_bytes(&snapshot_budgets)?,
            &builder.keys,
            b"{}",
        );
        let counts = (snapshot_budgets.len(), builder.keys.count);
        let keys = Arc::clone(&builder.keys);
        let changes = builder.history.record(
            version,
            snapshot_budgets,
            prices_changed,
            old_keys.as_deref().map(|old| (old, &*keys)),
        );
        let built = Arc::new(Built {
            version,
            etag: format!("\"{version}\""),
            generated_at: now,
            next_boundary,
            writes_seen,
            prices: builder.prices.clone(),
            counts,
            bytes,
            reporters: Arc::new(read.reporters),
            built_at: Instant::now(),
            changes: Arc::new(changes),
            keys,
            prices_json: builder.prices_json.clone(),
            deltas: Arc::default(),
        });
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics
            .snapshot_built(version, micros, built.bytes.len() as u64);
        tracing::debug!(
            version,
            budgets = built.counts.0,
            keys = built.counts.1,
            micros,
            "snapshot built"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = built.clone();
        Ok(built)
    }

    /// One refresher step: turn a passed time boundary into a version bump, then rebuild if
    /// the database moved on (another replica wrote, or this one did).
    pub async fn refresh(&self) -> Result<Arc<Built>, StoreError> {
        let cur = self.current();
        let now = self.clock.now();
        if let Some(boundary) = cur.next_boundary.filter(|b| now >= *b) {
            self.store.advance_clock(boundary).await?;
        }
        let meta = self.store.meta().await?;
        if u64::try_from(meta.version).unwrap_or(0) != cur.version
            || cur.writes_seen < self.store.changes().count()
        {
            return self.rebuild().await;
        }
        Ok(cur)
    }

    /// Runs [`Snapshots::refresh`] every `every`, and at once after a local write, until the
    /// task is dropped. Errors are logged and retried at the next tick (the last good
    /// snapshot keeps being served meanwhile).
    pub async fn run_refresher(self: Arc<Self>, every: Duration) {
        loop {
            tokio::select! {
                () = self.store.changes().notified() => {}
                () = tokio::time::sleep(every) => {}
            }
            // Coalesce a burst of writes into one build per minimum interval.
            let since = self.current().built_at.elapsed();
            if let Some(rest) = self.min_interval().checked_sub(since) {
                tokio::time::sleep(rest).await;
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "snapshot refresh failed; serving the previous one");
            }
        }
    }
}

fn json_bytes<T: serde::Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(format!("snapshot json: {e}")))
}

/// Splices the document from its fragments, in `Snapshot`'s field order.
fn assemble(
    version: u64,
    generated_at: i64,
    prices: &[u8],
    budgets: &[u8],
    keys: &KeysJson,
    reporters: &[u8],
) -> Bytes {
    let mut out =
        Vec::with_capacity(prices.len() + budgets.len() + keys.len() + reporters.len() + 128);
    out.extend_from_slice(
        format!("{{\"version\":{version},\"generated_at\":{generated_at},\"prices\":").as_bytes(),
    );
    out.extend_from_slice(prices);
    out.extend_from_slice(b",\"budgets\":");
    out.extend_from_slice(budgets);
    out.extend_from_slice(b",\"keys\":");
    keys.write(&mut out);
    out.extend_from_slice(b",\"reporters\":");
    out.extend_from_slice(reporters);
    out.push(b'}');
    Bytes::from(out)
}

/// Whether an `If-None-Match` header value matches `etag` (`*`, a list, weak validators:
/// RFC 9110 §13.1.2 uses the weak comparison for `If-None-Match`). A bare version number is
/// accepted too, for clients that strip the quotes.
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    header.split(',').map(str::trim).any(|t| {
        t == "*" || {
            let t = t.strip_prefix("W/").unwrap_or(t);
            t == etag || t.trim_matches('"') == bare
        }
    })
}

/// The version an `If-None-Match` value names (the first entry, quoted or not): the base of a
/// delta.
pub fn quoted_version(header: &str) -> Option<u64> {
    let first = header.split(',').next()?.trim();
    first
        .strip_prefix("W/")
        .unwrap_or(first)
        .trim_matches('"')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_if_none_match() {
        assert_eq!(quoted_version("\"7\""), Some(7));
        assert_eq!(quoted_version("W/\"7\", \"9\""), Some(7));
        assert_eq!(quoted_version("7"), Some(7));
        assert_eq!(quoted_version("*"), None);
        assert_eq!(quoted_version("\"x\""), None);
    }

    #[test]
    fn etag_matching() {
        assert!(if_none_match("\"7\"", "\"7\""));
        assert!(if_none_match("W/\"7\"", "\"7\""));
        assert!(if_none_match("\"1\", \"7\"", "\"7\""));
        assert!(if_none_match("*", "\"7\""));
        assert!(if_none_match("7", "\"7\""));
        assert!(!if_none_match("\"70\"", "\"7\""));
        assert!(!if_none_match("", "\"7\""));
    }
}
