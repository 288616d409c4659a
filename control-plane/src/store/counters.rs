//! SQLite only: the spend counters' values as ingestion last wrote them, kept in memory between
//! batches, so that the next batch adds its deltas to them instead of reading ~2,000 counters
//! back first (SQLite has no exact decimal type: money is added in Rust, see `ledger.rs`).
//! PostgreSQL adds in SQL and keeps nothing here.
//!
//! The values are used only while nothing but that ingestion can have written to the database
//! since it committed, checked inside the next write transaction (which holds SQLite's one
//! write lock, so nothing can change in between): the same writer connection, the same
//! `PRAGMA data_version` (changes when any other connection commits: a second control plane on
//! the file, the CLI, a `sqlite3` shell), the same `total_changes()` (rows this connection
//! changed: any other store method writing through it, such as a budget's back-fill) and the
//! same `meta.version` (bumped by every change the snapshot shows, whichever process makes it).
//! Anything else, or a transaction that failed, and the next batch reads the counters again.
//!
//! Tests: `cargo test -p tollgate-control-plane --lib counters` and, through other connections
//! and a second store on the same file, `--test store cached_counters`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rust_decimal::Decimal;

/// Windows kept per budget: the current one and the one before (late events around a window's
/// end). The cache then holds at most twice as many entries as there are budgets, as the
/// budget index does.
const WINDOWS_PER_BUDGET: usize = 2;

/// What the writer connection saw of the database when the cached values were written: they
/// hold only while all of it is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Which writer connection ([`CounterCache::connected`] counts them): `data_version` and
    /// `total_changes()` are per connection.
    pub connection: u64,
    /// `PRAGMA data_version`.
    pub data_version: i64,
    /// `total_changes()`.
    pub total_changes: i64,
    /// `meta.version`.
    pub version: i64,
}

/// Known counter values: budget id → `(window start, spent)`, newest window last.
#[derive(Debug, Default)]
pub(crate) struct Counters(HashMap<String, Vec<(i64, Decimal)>>);

impl Counters {
    /// The value of budget `id`'s counter of the window starting at `start`, if known.
    pub fn get(&self, id: &str, start: i64) -> Option<Decimal> {
        self.0
            .get(id)?
            .iter()
            .find(|(s, _)| *s == start)
            .map(|(_, v)| *v)
    }

    /// Records a counter's value (as stored), forgetting the budget's oldest window beyond
    /// [`WINDOWS_PER_BUDGET`].
    pub fn set(&mut self, id: &str, start: i64, value: Decimal) {
        let windows = match self.0.get_mut(id) {
            Some(w) => w,
            None => self.0.entry(id.to_string()).or_default(),
        };
        match windows.iter_mut().find(|(s, _)| *s == start) {
            Some(slot) => slot.1 = value,
            None => {
                windows.push((start, value));
                windows.sort_unstable_by_key(|(s, _)| *s);
                if windows.len() > WINDOWS_PER_BUDGET {
                    windows.remove(0);
                }
            }
        }
    }
}

/// The cached counters of one [`crate::store::Store`] on SQLite (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct CounterCache {
    /// Writer connections opened so far (the writer pool holds one at a time).
    connections: AtomicU64,
    held: Mutex<Option<(Stamp, Counters)>>,
}

impl CounterCache {
    /// Counts a new writer connection (the pool's `after_connect`).
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// The writer connection in use (the latest opened: the pool holds one at a time).
    pub fn connection(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Takes the cached values if they were stamped `now`, else nothing. Either way the cache
    /// is left empty until [`CounterCache::put`]: a batch that fails leaves nothing behind.
    pub fn take(&self, now: Stamp) -> Counters {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.take() {
            Some((stamp, counters)) if stamp == now => counters,
            _ => Counters::default(),
        }
    }

    /// Keeps `counters` as the database holds them after a commit that left it `stamp`.
    pub fn put(&self, stamp: Stamp, counters: Counters) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        *held = Some((stamp, counters));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stamp(data_version: i64, total_changes: i64, version: i64) -> Stamp {
        Stamp {
            connection: 1,
            data_version,
            total_changes,
            version,
        }
    }

    #[test]
    fn values_come_back_only_under_the_same_stamp_and_once() {
        let cache = CounterCache::default();
        let mut c = Counters::default();
        c.set("b1", 0, Decimal::ONE);
        cache.put(stamp(1, 10, 5), c);
        assert_eq!(cache.take(stamp(1, 10, 5)).get("b1", 0), Some(Decimal::ONE));
        assert_eq!(cache.take(stamp(1, 10, 5)).get("b1", 0), None, "taken");
        for other in [stamp(2, 10, 5), stamp(1, 11, 5), stamp(1, 10, 6)] {
            let mut c = Counters::default();
            c.set("b1", 0, Decimal::ONE);
            cache.put(stamp(1, 10, 5), c);
            assert_eq!(cache.take(other).get("b1", 0), None, "{other:?}");
        }
        let mut c = Counters::default();
        c.set("b1", 0, Decimal::ONE);
        cache.put(stamp(1, 10, 5), c);
        cache.connected();
        let moved = Stamp {
            connection: 2,
            ..stamp(1, 10, 5)
        };
        assert_eq!(cache.take(moved).get("b1", 0), None, "another connection");
    }

    #[test]
    fn a_budget_keeps_its_newest_windows() {
        let mut c = Counters::default();
        c.set("b", 100, Decimal::ONE);
        c.set("b", 200, Decimal::TWO);
        c.set("b", 100, Decimal::TEN);
        assert_eq!(c.get("b", 100), Some(Decimal::TEN));
        c.set("b", 300, Decimal::ONE);
        assert_eq!(c.get("b", 100), None, "the oldest window goes");
        assert_eq!(
            (c.get("b", 200), c.get("b", 300)),
            (Some(Decimal::TWO), Some(Decimal::ONE))
        );
        c.set("b", 50, Decimal::ONE);
        assert_eq!(
            c.get("b", 50),
            None,
            "an older window than those kept is not kept"
        );
        assert_eq!(c.get("b", 200), Some(Decimal::TWO));
    }
}
