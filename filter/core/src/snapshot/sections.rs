//! The snapshot by sections, for fleets: what travels from the control plane to an Envoy is
//! what changed, and what each worker holds is what every request needs, not every key.
//!
//! - **On the wire** the sync service asks for a delta (`Accept:` [`DELTA_MEDIA_TYPE`], its
//!   version in `If-None-Match`). The control plane answers with the sections that changed
//!   since that version (`base`): the price book if it changed, the budgets whose definition
//!   changed, one short row per budget whose spend moved, the budgets removed, and the key
//!   buckets (keys grouped by the first three hex digits of their hash, ~25 keys in a fleet of
//!   100,000) that gained or lost a key. Without a usable base it sends everything
//!   (`base` absent), in the same document shape; a plain `GET /v1/snapshot` document (a flat
//!   `keys` list) reads as such a full one.
//! - **In the sync service** [`Held`] applies each document, all or nothing, and says which
//!   sections moved ([`Changed`]): only those are written to Envoy shared data.
//! - **In the workers** the price book and the budget definitions are decoded when their stamp
//!   moves, the spend (a compact binary section, 24 bytes a budget) with every version
//!   ([`SnapshotIndex::from_sections`]); keys are never held whole: a request's key is looked up
//!   in its bucket's shared-data entry ([`principal_in_bucket`]), one Envoy-wide copy.
//!
//! The workers' decoders ([`SnapshotIndex::from_sections`], [`Manifest::decode`] and what they
//! call) are `#[inline]` or generic, so their code is generated in `tollgate-load`, the crate
//! built for size that calls them, not in the crates built for the request path's speed.

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    index_budgets, negative_money, KeyEntry, Snapshot, SnapshotBudget, SnapshotError,
    SnapshotIndex, Spent,
};
use crate::identity::Principal;
use crate::pricing::PriceBook;
use crate::shared_codec::{Reader, Writer};

/// The media type of the delta document (the sync service's `Accept`, the answer's
/// `Content-Type`).
pub const DELTA_MEDIA_TYPE: &str = "application/vnd.tollgate.snapshot-delta+json";

/// The bucket of a key hash: its first three characters (lowercase hex in practice), as the
/// control plane groups them (`substr(sha256, 1, 3)`).
pub fn key_bucket(sha256_hex: &str) -> &str {
    let end = sha256_hex
        .char_indices()
        .nth(3)
        .map_or(sha256_hex.len(), |(i, _)| i);
    sha256_hex.get(..end).unwrap_or(sha256_hex)
}

/// One budget's spend moved, nothing else: `[id, spent_usd]` when the spend belongs to the
/// budget's current window (the first of its bounds; none for a total budget: the common
/// case, a third shorter on the wire), else `[id, spent_window_start, spent_usd]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpendRow {
    Current(String, Decimal),
    Windowed(String, Option<i64>, Decimal),
}

impl SpendRow {
    fn id_and_amount(&self) -> (&str, Decimal) {
        match self {
            SpendRow::Current(id, spent) | SpendRow::Windowed(id, _, spent) => (id, *spent),
        }
    }
}

/// The window start a `[id, spent_usd]` row means: the budget's current window.
pub fn current_window_start(b: &SnapshotBudget) -> Option<i64> {
    match b.window.period() {
        crate::budget::Period::Total => None,
        _ => b.window.boundaries().first().copied(),
    }
}

/// The document as received (full or delta).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    version: u64,
    generated_at: i64,
    /// The version this delta applies to; absent: the whole state.
    #[serde(default)]
    base: Option<u64>,
    #[serde(default, borrow)]
    prices: Option<&'a RawValue>,
    /// Whole budgets: every one when full, the new or redefined ones in a delta.
    #[serde(default)]
    budgets: Vec<SnapshotBudget>,
    #[serde(default)]
    spend: Vec<SpendRow>,
    #[serde(default)]
    removed_budgets: Vec<String>,
    /// A flat key list (the plain snapshot document); only in a full document.
    #[serde(default)]
    keys: Vec<KeyEntry>,
    /// Buckets that changed (an empty list: the bucket lost its last key).
    #[serde(default, borrow)]
    key_buckets: BTreeMap<String, &'a RawValue>,
    #[serde(default)]
    reporters: BTreeMap<String, u64>,
}

/// The version at which each worker-visible section last changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    /// The price book.
    pub prices: u64,
    /// The budgets' definitions (limits, windows, which budgets there are).
    pub budgets: u64,
    /// The budgets' spend.
    pub spend: u64,
    /// Any key bucket.
    pub keys: u64,
}

/// What workers read first: the version, its build time and the section stamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `Snapshot::version`.
    pub version: u64,
    /// `Snapshot::generated_at`.
    pub generated_at: i64,
    /// Where each section stands.
    pub stamps: Stamps,
}

impl Manifest {
    /// Six decimal numbers separated by spaces (a few dozen bytes, read on every worker tick).
    pub fn encode(&self) -> String {
        let s = &self.stamps;
        format!(
            "{} {} {} {} {} {}",
            self.version, self.generated_at, s.prices, s.budgets, s.spend, s.keys
        )
    }

    /// The manifest [`Manifest::encode`] wrote; `None` for anything else.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split(' ');
        let version = it.next()?.parse().ok()?;
        let generated_at = it.next()?.parse().ok()?;
        let mut next = || it.next()?.parse::<u64>().ok();
        let stamps = Stamps {
            prices: next()?,
            budgets: next()?,
            spend: next()?,
            keys: next()?,
        };
        Some(Manifest {
            version,
            generated_at,
            stamps,
        })
    }
}

/// Which sections one applied document changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The price book.
    pub prices: bool,
    /// Budget definitions (which budgets, their limits and windows).
    pub budgets: bool,
    /// Budget spend (always with the definitions).
    pub spend: bool,
    /// Key buckets to write again (with [`Held::bucket`]: `[]` when it lost its last key).
    pub buckets: Vec<String>,
}

/// The sync service's copy of the snapshot, kept by sections.
#[derive(Debug, Default)]
pub struct Held {
    /// Version and build time of what is held, and each section's stamp.
    pub manifest: Manifest,
    /// The price book, decoded (checked) and as received.
    pub prices: Arc<PriceBook>,
    prices_json: String,
    /// Budgets by id.
    pub budgets: BTreeMap<String, SnapshotBudget>,
    /// Non-empty key buckets, each the JSON array of its `KeyEntry`s.
    buckets: BTreeMap<String, String>,
    /// Acknowledged sequence per reporter (the control plane shows each reporter its own).
    pub reporters: BTreeMap<String, u64>,
}

impl Held {
    /// Applies a full or delta document, all or nothing: on error nothing held changed.
    /// A delta must apply to the version held; a full document older than the one held is
    /// refused (a replica lagging behind) unless it was built later (a new database).
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Changed, SnapshotError> {
        let w: Wire<'_> = serde_json::from_slice(bytes)?;
        let held = self.manifest;
        match w.base {
            Some(base) if base != held.version || w.version < base => {
                return Err(SnapshotError::Base {
                    base,
                    held: held.version,
                })
            }
            None if w.version < held.version && w.generated_at <= held.generated_at => {
                return Err(SnapshotError::Older {
                    version: w.version,
                    held: held.version,
                })
            }
            _ => {}
        }
        let full = w.base.is_none();
        // Everything decoded and checked before anything held changes.
        let prices = match w.prices {
            Some(raw) => Some((decode_prices(raw.get().as_bytes())?, raw.get().to_owned())),
            None if full => Some((Arc::new(PriceBook::default()), String::new())),
            None => None,
        };
        if let Some(i) = w.budgets.iter().position(negative_money) {
            return Err(SnapshotError::NegativeMoney(i));
        }
        let mut buckets = BTreeMap::new();
        for (name, raw) in &w.key_buckets {
            let entries: Vec<KeyEntry> = serde_json::from_str(raw.get())?;
            if entries
                .iter()
                .any(|k| !k.sha256.to_ascii_lowercase().starts_with(name.as_str()))
            {
                return Err(SnapshotError::Bucket(name.clone()));
            }
            buckets.insert(
                name.clone(),
                (!entries.is_empty()).then(|| raw.get().to_owned()),
            );
        }
        if !w.keys.is_empty() {
            if !full {
                return Err(SnapshotError::Bucket("keys".into()));
            }
            let mut grouped: BTreeMap<String, Vec<KeyEntry>> = BTreeMap::new();
            for mut k in w.keys {
                k.sha256.make_ascii_lowercase();
                grouped
                    .entry(key_bucket(&k.sha256).to_owned())
                    .or_default()
                    .push(k);
            }
            for (name, entries) in grouped {
                buckets.insert(name, Some(serde_json::to_string(&entries)?));
            }
        }
        // Spend rows land on a budget of this document or one held and not removed; checked
        // before anything changes, so the held budgets are changed in place (a delta every
        // sync interval need not copy 10,000 of them).
        let upserted: std::collections::HashSet<&str> =
            w.budgets.iter().map(|b| b.id.as_str()).collect();
        for row in &w.spend {
            let (id, spent) = row.id_and_amount();
            let held_still = !full
                && self.budgets.contains_key(id)
                && !w.removed_budgets.iter().any(|r| r == id);
            if !(upserted.contains(id) || held_still)
                || (spent.is_sign_negative() && !spent.is_zero())
            {
                return Err(SnapshotError::Spend(id.to_owned()));
            }
        }

        // Apply.
        let mut changed = Changed::default();
        if let Some((book, json)) = prices {
            changed.prices = json != self.prices_json || held.version == 0;
            self.prices = book;
            self.prices_json = json;
        }
        let before = full.then(|| std::mem::take(&mut self.budgets));
        for id in &w.removed_budgets {
            self.budgets.remove(id);
        }
        let upserts = !w.budgets.is_empty();
        for b in w.budgets {
            self.budgets.insert(b.id.clone(), b);
        }
        let mut spend_moved = false;
        for row in w.spend {
            let (id, start, spent) = match row {
                SpendRow::Current(id, spent) => (id, None, spent),
                SpendRow::Windowed(id, start, spent) => (id, Some(start), spent),
            };
            if let Some(b) = self.budgets.get_mut(&id) {
                let start = start.unwrap_or_else(|| current_window_start(b));
                spend_moved |= (b.spent_window_start, b.spent_usd) != (start, spent);
                b.spent_window_start = start;
                b.spent_usd = spent;
            }
        }
        (changed.budgets, changed.spend) = match &before {
            Some(old) => {
                let defined = old.len() != self.budgets.len()
                    || old
                        .values()
                        .zip(self.budgets.values())
                        .any(|(a, b)| redefined(a, b));
                (defined, defined || *old != self.budgets)
            }
            None => {
                let defined = upserts || !w.removed_budgets.is_empty();
                (defined, defined || spend_moved)
            }
        };
        if full {
            // Buckets held but absent now lost their keys.
            for name in self.buckets.keys() {
                buckets.entry(name.clone()).or_insert(None);
            }
        }
        for (name, entries) in buckets {
            let before = match &entries {
                Some(e) => self.buckets.insert(name.clone(), e.clone()),
                None => self.buckets.remove(&name),
            };
            if before != entries {
                changed.buckets.push(name);
            }
        }
        self.reporters = w.reporters;
        let stamps = &mut self.manifest.stamps;
        for (moved, stamp) in [
            (changed.prices, &mut stamps.prices),
            (changed.budgets, &mut stamps.budgets),
            (changed.spend, &mut stamps.spend),
            (!changed.buckets.is_empty(), &mut stamps.keys),
        ] {
            if moved {
                *stamp = w.version;
            }
        }
        self.manifest.version = w.version;
        self.manifest.generated_at = w.generated_at;
        Ok(changed)
    }

    /// The price book as received (empty: none).
    pub fn prices_json(&self) -> &str {
        &self.prices_json
    }

    /// The budget definitions as the workers read them: a JSON array of `SnapshotBudget`,
    /// in id order.
    pub fn budgets_json(&self) -> Vec<u8> {
        let all: Vec<&SnapshotBudget> = self.budgets.values().collect();
        serde_json::to_vec(&all).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// The budgets' spend as the workers read it: the definitions' stamp and count, then each
    /// budget's window start (`i64::MIN` for none) and amount, in the definitions' order.
    pub fn spend_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.budgets.len() * 24);
        w.u64(self.manifest.stamps.budgets);
        w.u64(self.budgets.len() as u64);
        for b in self.budgets.values() {
            w.i64(b.spent_window_start.unwrap_or(i64::MIN));
            w.dec(b.spent_usd);
        }
        w.0
    }

    /// A bucket's JSON array (`[]` when it has no key).
    pub fn bucket(&self, name: &str) -> &str {
        self.buckets.get(name).map_or("[]", String::as_str)
    }

    /// How many key buckets are held.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Whether both hold the same snapshot (the same version and content; the stamps, which
    /// depend on the documents that led there, may differ).
    pub fn same_snapshot(&self, other: &Held) -> bool {
        (self.manifest.version, self.manifest.generated_at)
            == (other.manifest.version, other.manifest.generated_at)
            && self.prices == other.prices
            && self.budgets == other.budgets
            && self.buckets == other.buckets
            && self.reporters == other.reporters
    }
}

/// Whether two budgets differ in anything but their spend.
pub fn redefined(a: &SnapshotBudget, b: &SnapshotBudget) -> bool {
    a.id != b.id
        || a.scope != b.scope
        || a.scope_id != b.scope_id
        || a.limit_usd != b.limit_usd
        || a.soft_limit_usd != b.soft_limit_usd
        || a.mode != b.mode
        || a.window != b.window
}

/// Decodes a spend section for `count` budgets defined at stamp `defined`.
#[inline]
fn decode_spend(bytes: &[u8], defined: u64, count: usize) -> Result<Vec<Spent>, SnapshotError> {
    let bad = || SnapshotError::Spend("spend section".into());
    let mut r = Reader::new(bytes);
    if r.u64().map_err(|_| bad())? != defined || r.u64().map_err(|_| bad())? != count as u64 {
        return Err(SnapshotError::Spend(
            "spend section of other definitions".into(),
        ));
    }
    let mut spend = Vec::with_capacity(count);
    for _ in 0..count {
        let start = r.i64().map_err(|_| bad())?;
        let amount = r.dec().map_err(|_| bad())?;
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(bad());
        }
        spend.push(((start != i64::MIN).then_some(start), amount));
    }
    Ok(spend)
}

/// Decodes a price book section, refusing negative rates (they would bill negative money).
#[inline]
pub fn decode_prices(bytes: &[u8]) -> Result<Arc<PriceBook>, SnapshotError> {
    if bytes.is_empty() {
        return Ok(Arc::new(PriceBook::default()));
    }
    let book: PriceBook = serde_json::from_slice(bytes)?;
    // Found by `fuzz/fuzz_targets/snapshot.rs`: budgets were checked, prices were not.
    if let Some((model, _)) = book.models.iter().find(|(_, p)| p.has_negative_rate()) {
        return Err(SnapshotError::NegativeRate(model.clone()));
    }
    Ok(Arc::new(book))
}

/// The principal of the key whose hash is `sha256_hex`, in the bucket's JSON array (`None`:
/// not there, or the bucket is unreadable).
pub fn principal_in_bucket(bucket: &[u8], sha256_hex: &str) -> Option<Principal> {
    let entries: Vec<KeyEntry> = serde_json::from_slice(bucket).ok()?;
    entries
        .into_iter()
        .find(|k| k.sha256.eq_ignore_ascii_case(sha256_hex))
        .map(|k| k.principal)
}

impl SnapshotIndex {
    /// A worker's index from the published sections: the price book and the budget definitions
    /// are decoded only when their stamp moved since `previous`, the spend when its own did
    /// (`read` gives a section's bytes: `"prices"`, `"budgets"` or `"spend"`). Keys are not held
    /// (see [`principal_in_bucket`]).
    pub fn from_sections(
        manifest: Manifest,
        previous: Option<&SnapshotIndex>,
        mut read: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<SnapshotIndex, SnapshotError> {
        let same = |f: fn(&Stamps) -> u64| previous.filter(|p| f(&p.stamps) == f(&manifest.stamps));
        let prices = match same(|s| s.prices) {
            Some(p) => Arc::clone(&p.snapshot.prices),
            None => decode_prices(&read("prices").unwrap_or_default())?,
        };
        let (budgets, index) = match same(|s| s.budgets) {
            Some(p) => (Arc::clone(&p.snapshot.budgets), Arc::clone(&p.budgets)),
            None => {
                let budgets: Vec<SnapshotBudget> = match read("budgets") {
                    Some(bytes) if !bytes.is_empty() => serde_json::from_slice(&bytes)?,
                    _ => Vec::new(),
                };
                let index = index_budgets(&budgets)?;
                (Arc::new(budgets), Arc::new(index))
            }
        };
        let spend = match same(|s| s.spend).filter(|p| p.stamps.budgets == manifest.stamps.budgets)
        {
            Some(p) => p.spend.clone(),
            None => match read("spend") {
                Some(bytes) if !bytes.is_empty() => Some(Arc::new(decode_spend(
                    &bytes,
                    manifest.stamps.budgets,
                    budgets.len(),
                )?)),
                _ => None,
            },
        };
        Ok(SnapshotIndex {
            snapshot: Snapshot {
                version: manifest.version,
                generated_at: manifest.generated_at,
                prices,
                budgets,
                ..Snapshot::default()
            },
            keys: std::collections::HashMap::new(),
            budgets: index,
            spend,
            stamps: manifest.stamps,
        })
    }

    /// The section stamps it was built from (zero when built from a whole document).
    pub fn stamps(&self) -> Stamps {
        self.stamps
    }
}

#[cfg(test)]
mod tests;
