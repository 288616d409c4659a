//! What changed at which version, so that an Envoy holding a version this process built gets
//! only what changed since (`GET /v1/snapshot` with `Accept:` the delta media type, see
//! `tollgate_core::snapshot::sections`).
//!
//! Each build compares its sections with the previous build's and stamps what moved with its
//! own version: the price book, each budget's definition and its spend, each key bucket; a
//! budget or bucket that went away leaves a tombstone. A delta from a version `base` this
//! process built holds everything stamped after `base`, which is exactly what differs: every
//! change between `base` and now was seen by one of the builds in between (a value that
//! changed and changed back is sent again, never missed). A base this process did not build
//! (another replica's, one older than the history kept, any before a restart) gets the whole
//! snapshot in the same shape, so an Envoy that missed deltas, restarted or switched replicas
//! converges in one poll.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tollgate_core::snapshot::sections::{current_window_start, redefined};
use tollgate_core::snapshot::SnapshotBudget;

use crate::store::snapshot::KeysJson;

/// Builds remembered: a delta starts from any of the last this many (with the serving default
/// of at most one build per 200 ms, at least the last 3.4 minutes).
pub const HISTORY_BUILDS: usize = 1024;

/// A budget as built, with the versions its definition and its spend last changed at.
#[derive(Debug, Clone)]
pub struct StampedBudget {
    /// The budget, spend included.
    pub budget: SnapshotBudget,
    /// Version its definition (limits, mode, scope, window bounds) last changed at.
    pub defined: u64,
    /// Version its spend last changed at.
    pub spent: u64,
}

/// What one build changed, relative to every version before it that this process built.
#[derive(Debug, Default)]
pub struct Changes {
    /// The versions built, oldest first: the bases a delta can start from.
    builds: Arc<VecDeque<u64>>,
    /// Version the price book last changed at.
    pub prices: u64,
    /// Every budget, in id order.
    pub budgets: Vec<StampedBudget>,
    /// Budgets gone, with the version they went at.
    pub removed: Vec<(String, u64)>,
    /// Version each key bucket last changed at (buckets without keys too).
    pub buckets: Arc<HashMap<String, u64>>,
}

impl Changes {
    /// Whether a delta can start from `base`.
    pub fn knows(&self, base: u64) -> bool {
        self.builds.contains(&base)
    }
}

/// The builder's running record.
#[derive(Debug, Default)]
pub struct History {
    builds: Arc<VecDeque<u64>>,
    prices: u64,
    budgets: HashMap<String, StampedBudget>,
    removed: HashMap<String, u64>,
    buckets: Arc<HashMap<String, u64>>,
}

impl History {
    /// Records the build of `version`: its budgets, whether the price book changed, and the
    /// key buckets when they were read again (`new_keys`, compared with `old_keys`).
    pub fn record(
        &mut self,
        version: u64,
        budgets: Vec<SnapshotBudget>,
        prices_changed: bool,
        keys: Option<(&KeysJson, &KeysJson)>,
    ) -> Changes {
        if prices_changed {
            self.prices = version;
        }
        let mut seen = HashMap::with_capacity(budgets.len());
        let mut stamped = Vec::with_capacity(budgets.len());
        for b in budgets {
            let s = match self.budgets.remove(&b.id) {
                Some(old) => StampedBudget {
                    defined: if redefined(&old.budget, &b) {
                        version
                    } else {
                        old.defined
                    },
                    spent: if old.budget.spent_usd != b.spent_usd
                        || old.budget.spent_window_start != b.spent_window_start
                    {
                        version
                    } else {
                        old.spent
                    },
                    budget: b,
                },
                None => StampedBudget {
                    budget: b,
                    defined: version,
                    spent: version,
                },
            };
            self.removed.remove(&s.budget.id);
            seen.insert(s.budget.id.clone(), s.clone());
            stamped.push(s);
        }
        for gone in std::mem::replace(&mut self.budgets, seen).into_keys() {
            self.removed.insert(gone, version);
        }
        if let Some((old, new)) = keys {
            let before: HashMap<&str, &str> = old
                .parts
                .iter()
                .map(|p| (p.bucket.as_str(), p.entries.as_str()))
                .collect();
            let mut stamps = (*self.buckets).clone();
            let mut present = std::collections::HashSet::new();
            for p in &new.parts {
                present.insert(p.bucket.as_str());
                if before.get(p.bucket.as_str()) != Some(&p.entries.as_str()) {
                    stamps.insert(p.bucket.clone(), version);
                }
            }
            for (name, _) in before.iter().filter(|(n, _)| !present.contains(*n)) {
                stamps.insert((*name).to_owned(), version);
            }
            self.buckets = Arc::new(stamps);
        }
        let builds = Arc::make_mut(&mut self.builds);
        builds.push_back(version);
        while builds.len() > HISTORY_BUILDS {
            builds.pop_front();
        }
        // Tombstones older than every base a delta may start from are never needed again.
        let floor = builds.front().copied().unwrap_or(0);
        self.removed.retain(|_, at| *at > floor);
        let mut removed: Vec<(String, u64)> =
            self.removed.iter().map(|(k, v)| (k.clone(), *v)).collect();
        removed.sort();
        Changes {
            builds: Arc::clone(&self.builds),
            prices: self.prices,
            budgets: stamped,
            removed,
            buckets: Arc::clone(&self.buckets),
        }
    }
}

/// The delta document from `base` (the whole snapshot when `None`), in
/// `tollgate_core::snapshot::sections`' shape, its `reporters` left empty: it ends with
/// `"reporters":{}}` for [`super::Built::for_reporter`] to fill in.
pub fn document(
    c: &Changes,
    base: Option<u64>,
    (version, generated_at): (u64, i64),
    prices: &[u8],
    keys: &KeysJson,
) -> Result<Vec<u8>, serde_json::Error> {
    let after = |stamp: u64| base.is_none_or(|b| stamp > b);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        format!("{{\"version\":{version},\"generated_at\":{generated_at}").as_bytes(),
    );
    if let Some(b) = base {
        out.extend_from_slice(format!(",\"base\":{b}").as_bytes());
    }
    if after(c.prices) {
        out.extend_from_slice(b",\"prices\":");
        out.extend_from_slice(prices);
    }
    let mut list = List::new(&mut out, ",\"budgets\":[");
    for s in c.budgets.iter().filter(|s| after(s.defined)) {
        serde_json::to_writer(list.item(), &s.budget)?;
    }
    let mut list = List::new(list.end(b"]"), ",\"spend\":[");
    for s in c
        .budgets
        .iter()
        .filter(|s| !after(s.defined) && after(s.spent))
    {
        let b = &s.budget;
        // The usual case, the spend of the current window, without its start.
        if b.spent_window_start == current_window_start(b) {
            serde_json::to_writer(list.item(), &(&b.id, b.spent_usd))?;
        } else {
            serde_json::to_writer(list.item(), &(&b.id, b.spent_window_start, b.spent_usd))?;
        }
    }
    let mut list = List::new(list.end(b"]"), ",\"removed_budgets\":[");
    for (id, _) in c
        .removed
        .iter()
        .filter(|(_, at)| base.is_some() && after(*at))
    {
        serde_json::to_writer(list.item(), id)?;
    }
    let mut list = List::new(list.end(b"]"), ",\"key_buckets\":{");
    let stamp = |name: &str| c.buckets.get(name).copied().unwrap_or(0);
    for p in keys.parts.iter().filter(|p| after(stamp(&p.bucket))) {
        let out = list.item();
        serde_json::to_writer(&mut *out, &p.bucket)?;
        out.extend_from_slice(b":[");
        out.extend_from_slice(p.entries.as_bytes());
        out.push(b']');
    }
    if base.is_some() {
        let emptied = c.buckets.iter().filter(|(name, at)| {
            after(**at)
                && keys
                    .parts
                    .binary_search_by(|p| p.bucket.as_str().cmp(name.as_str()))
                    .is_err()
        });
        for (name, _) in emptied {
            let out = list.item();
            serde_json::to_writer(&mut *out, name)?;
            out.extend_from_slice(b":[]");
        }
    }
    list.end(b"},\"reporters\":{}}");
    Ok(out)
}

/// A JSON list being written: a comma before every item but the first.
struct List<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> List<'a> {
    fn new(out: &'a mut Vec<u8>, open: &str) -> List<'a> {
        out.extend_from_slice(open.as_bytes());
        List { out, first: true }
    }

    fn item(&mut self) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out
    }

    fn end(self, close: &[u8]) -> &'a mut Vec<u8> {
        self.out.extend_from_slice(close);
        self.out
    }
}

#[cfg(test)]
mod tests;
