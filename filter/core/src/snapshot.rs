//! The versioned snapshot the control plane serves at `GET /v1/snapshot` and the filter
//! enforces from: prices, budgets with their window bounds and spend, virtual-key hashes with
//! their principal chains, and per-reporter acknowledgements of usage already included.
//!
//! [`SnapshotIndex`] is what a request looks things up in. The filter's sync service pulls the
//! snapshot by sections and deltas and each worker holds only the prices and budgets
//! ([`sections`]); a whole document decodes with [`SnapshotIndex::decode`] (tests, tools).

pub mod sections;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::budget::{window_at, Mode, Scope, WindowBounds};
use crate::identity::Principal;
use crate::pricing::PriceBook;

/// One budget as the filter needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotBudget {
    /// Budget id.
    pub id: String,
    /// Scope it applies to.
    pub scope: Scope,
    /// Id of the org / project / user / key it applies to.
    pub scope_id: String,
    /// Hard limit for one window, USD.
    pub limit_usd: Decimal,
    /// Soft limit: crossing it warns, never denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit_usd: Option<Decimal>,
    /// Enforce or shadow.
    pub mode: Mode,
    /// The current window and the next boundaries, precomputed in the budget's timezone.
    pub window: WindowBounds,
    /// Start of the window `spent_usd` belongs to (`None` for a total budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_window_start: Option<i64>,
    /// Spend recorded by the control plane in that window.
    pub spent_usd: Decimal,
}

/// A budget's spend as of a snapshot: the window it belongs to (`None` for a total budget) and
/// the amount.
pub type Spent = (Option<i64>, Decimal);

/// A budget of a request's chain, with its spend in the snapshot decided with (a worker keeps
/// the definitions across versions and the spend per version, see [`sections`]).
#[derive(Debug, Clone, Copy)]
pub struct BudgetRef<'a> {
    /// The budget's definition.
    pub budget: &'a SnapshotBudget,
    /// Its spend.
    pub spent: Spent,
}

impl std::ops::Deref for BudgetRef<'_> {
    type Target = SnapshotBudget;
    fn deref(&self) -> &SnapshotBudget {
        self.budget
    }
}

impl BudgetRef<'_> {
    /// The snapshot's spend that still counts at `now`: zero once a window boundary has
    /// passed since the snapshot was built. `None` when `now` is beyond the precomputed
    /// bounds (the snapshot is too stale to know the window).
    pub fn spent_at(&self, now: i64) -> Option<(Decimal, Option<i64>)> {
        self.window_spend(now).map(|w| (w.spent, w.resets_at))
    }

    /// [`BudgetRef::spent_at`] with the key its local spend is kept under at `now`, from one
    /// window lookup.
    pub fn window_spend(&self, now: i64) -> Option<WindowSpend> {
        let w = window_at(&self.budget.window, now)?;
        let spent = match self.spent.0 {
            Some(start) if start < w.start => Decimal::ZERO,
            _ => self.spent.1,
        };
        Some(WindowSpend {
            spent,
            resets_at: w.end,
            local_key: w.start,
        })
    }
}

/// A budget's spend in the window that holds a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpend {
    /// The snapshot's spend that still counts.
    pub spent: Decimal,
    /// When the window ends (`None`: never).
    pub resets_at: Option<i64>,
    /// The key the filter's local spend is kept under: the window's start
    /// ([`crate::local_spend::ALL_TIME`] for a `total` budget, whose window is all of time).
    pub local_key: i64,
}

/// A virtual key: SHA-256 of the secret (lowercase hex) and who it charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Lowercase hex SHA-256 of the full secret.
    pub sha256: String,
    /// The principal chain the key charges.
    pub principal: Principal,
}

/// The snapshot document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Increases whenever anything in it changes; also the `ETag`.
    pub version: u64,
    /// Control-plane clock when built, Unix seconds. The filter measures staleness from the
    /// last poll the control plane answered (a 304 keeps this old value), falling back to this.
    pub generated_at: i64,
    /// Prices.
    pub prices: Arc<PriceBook>,
    /// Budgets.
    #[serde(default)]
    pub budgets: Arc<Vec<SnapshotBudget>>,
    /// Active virtual keys (revoked keys are absent).
    #[serde(default)]
    pub keys: Arc<Vec<KeyEntry>>,
    /// For each reporter, the highest `seq` such that all its events up to it are included in
    /// the spend above: the filter drops its local unsynced spend up to there.
    #[serde(default)]
    pub reporters: BTreeMap<String, u64>,
}

/// Why a snapshot was refused by the filter (it keeps the previous one).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not the expected JSON.
    #[error("snapshot is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// A budget with a negative limit or spend.
    #[error("budgets[{0}]: limit_usd, soft_limit_usd and spent_usd must not be negative")]
    NegativeMoney(usize),
    /// A model priced with a negative rate: it would bill negative money.
    #[error("prices.models[{0:?}]: rates must not be negative")]
    NegativeRate(String),
    /// A delta for another version than the one held.
    #[error("delta applies to version {base}, held is {held}")]
    Base {
        /// The delta's base.
        base: u64,
        /// The version held.
        held: u64,
    },
    /// A whole document older than the one held (a control plane lagging behind).
    #[error("snapshot version {version} is older than the held {held}")]
    Older {
        /// Its version.
        version: u64,
        /// The version held.
        held: u64,
    },
    /// A key bucket holding a key of another bucket, or flat keys in a delta.
    #[error("key bucket {0:?} is not valid")]
    Bucket(String),
    /// A spend row for a budget not held, or negative.
    #[error("spend row for budget {0:?} is not valid")]
    Spend(String),
}

/// Whether a budget carries negative money (a limit, soft limit or spend below zero).
pub(crate) fn negative_money(b: &SnapshotBudget) -> bool {
    let negative = |d: &Decimal| d.is_sign_negative() && !d.is_zero();
    negative(&b.limit_usd)
        || negative(&b.spent_usd)
        || b.soft_limit_usd.as_ref().is_some_and(negative)
}

/// Finds a virtual key's principal by the lowercase hex SHA-256 of its secret: a whole
/// snapshot's key index, or a worker's lookup in Envoy shared data.
pub trait KeyLookup {
    /// The principal of the key, if active.
    fn principal_for_key(&self, sha256_hex: &str) -> Option<Principal>;

    /// The principal of a presented virtual key (hashed here; a lookup may cache by the key
    /// itself and hash only on a miss). Shared: a request holds it from its headers to its
    /// usage event, and a cache hands it out without copying its four names.
    fn principal_for_virtual_key(&self, key: &str) -> Option<Arc<Principal>> {
        self.principal_for_key(&crate::identity::key_hash(key))
            .map(Arc::new)
    }
}

/// A decoded snapshot with lookup tables, built once per version.
#[derive(Debug, Default)]
pub struct SnapshotIndex {
    /// The snapshot. Built from sections, its budgets carry the spend of the version they
    /// were last defined at: [`SnapshotIndex::budgets_for`] gives the current spend.
    pub snapshot: Snapshot,
    keys: HashMap<String, usize>,
    /// Budget indexes by scope (indexed by `Scope::chain_rank`) then scope id.
    budgets: Arc<BudgetIndex>,
    /// The spend of each budget, in `snapshot.budgets`' order, when it comes from a section of
    /// its own (`None`: the budgets' own).
    spend: Option<Arc<Vec<Spent>>>,
    /// The section stamps it was built from ([`sections::Manifest`]).
    stamps: sections::Stamps,
}

/// Budget positions by the chain link they apply to, and each budget's names.
#[derive(Debug, Default)]
struct BudgetIndex {
    /// Positions by scope (indexed by `Scope::chain_rank`), then scope id.
    by_link: [FxHashMap<String, Vec<usize>>; 4],
    /// Each budget's names, in `snapshot.budgets`' order.
    names: Vec<BudgetNames>,
}

/// What a request holds of a budget from admission to settlement, made once per definition
/// (not per request: a request then copies no string): its id, for the usage record, and the
/// shared-data key of its local spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetNames {
    /// The budget id.
    pub id: Arc<str>,
    /// [`crate::local_spend::budget_key`] of the id.
    pub local_key: Arc<str>,
}

/// Indexes budgets by the chain link they apply to, refusing negative money.
#[inline]
fn index_budgets(budgets: &[SnapshotBudget]) -> Result<BudgetIndex, SnapshotError> {
    if let Some(i) = budgets.iter().position(negative_money) {
        return Err(SnapshotError::NegativeMoney(i));
    }
    let mut index = BudgetIndex::default();
    for (i, b) in budgets.iter().enumerate() {
        if let Some(by_id) = index.by_link.get_mut(usize::from(b.scope.chain_rank())) {
            by_id.entry(b.scope_id.clone()).or_default().push(i);
        }
        index.names.push(BudgetNames {
            id: Arc::from(b.id.as_str()),
            local_key: Arc::from(crate::local_spend::budget_key(&b.id)),
        });
    }
    Ok(index)
}

impl SnapshotIndex {
    /// Decodes and indexes a whole snapshot document.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotIndex, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        // Found by `fuzz/fuzz_targets/snapshot.rs`: budgets were checked, prices were not.
        if let Some((model, _)) = snapshot
            .prices
            .models
            .iter()
            .find(|(_, p)| p.has_negative_rate())
        {
            return Err(SnapshotError::NegativeRate(model.clone()));
        }
        SnapshotIndex::new(snapshot)
    }

    /// Indexes a snapshot, refusing negative money in its budgets.
    pub fn new(snapshot: Snapshot) -> Result<SnapshotIndex, SnapshotError> {
        let budgets = Arc::new(index_budgets(&snapshot.budgets)?);
        let keys = snapshot
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.sha256.to_ascii_lowercase(), i))
            .collect();
        Ok(SnapshotIndex {
            snapshot,
            keys,
            budgets,
            spend: None,
            stamps: sections::Stamps::default(),
        })
    }

    /// Every budget on `principal`'s chain with its spend and its names, most specific scope
    /// first.
    pub fn budgets_for<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = (BudgetRef<'a>, &'a BudgetNames)> + 'a {
        principal.chain().flat_map(move |(scope, id)| {
            self.budgets
                .by_link
                .get(usize::from(scope.chain_rank()))
                .and_then(|by_id| by_id.get(id))
                .into_iter()
                .flatten()
                .filter_map(|&i| {
                    let budget = self.snapshot.budgets.get(i)?;
                    let spent = match &self.spend {
                        Some(spend) => *spend.get(i)?,
                        None => (budget.spent_window_start, budget.spent_usd),
                    };
                    Some((BudgetRef { budget, spent }, self.budgets.names.get(i)?))
                })
        })
    }
}

impl KeyLookup for SnapshotIndex {
    fn principal_for_key(&self, sha256_hex: &str) -> Option<Principal> {
        let i = *self.keys.get(sha256_hex)?;
        self.snapshot.keys.get(i).map(|k| k.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Period;

    use serde_json::json;

    /// Shared with `sections`' tests.
    pub(super) fn doc() -> serde_json::Value {
        // A monthly org budget whose spend belongs to the window starting 1000, a total key
        // budget, one virtual key, and reporter r1 acknowledged up to seq 41.
        json!({
            "version": 7,
            "generated_at": 1500,
            "prices": {"version": 2, "models": {"gpt-4o": {"rates": {"input": "0.0000025", "output": "0.00001"}}}},
            "budgets": [
                {"id": "b-org", "scope": "org", "scope_id": "acme", "limit_usd": "100", "mode": "enforce",
                 "window": {"period": "monthly", "boundaries": [1000, 2000, 3000]},
                 "spent_window_start": 1000, "spent_usd": "12.5"},
                {"id": "b-key", "scope": "key", "scope_id": "k1", "limit_usd": "5", "soft_limit_usd": "4",
                 "mode": "shadow", "window": {"period": "total"}, "spent_usd": "1"}
            ],
            "keys": [{"sha256": "ab12", "principal": {"key": "k1", "user": "u1", "org": "acme"}}],
            "reporters": {"r1": 41}
        })
    }

    #[test]
    fn decodes_and_indexes() {
        let idx = SnapshotIndex::decode(doc().to_string().as_bytes()).unwrap();
        let p = idx.principal_for_key("ab12").unwrap();
        assert_eq!(p.user.as_deref(), Some("u1"));
        assert!(idx.principal_for_key("ffff").is_none());
        let ids: Vec<&str> = idx
            .budgets_for(&p)
            .map(|b| b.0.budget.id.as_str())
            .collect();
        assert_eq!(ids, ["b-key", "b-org"], "most specific first");
        let names: Vec<(&str, &str)> = idx
            .budgets_for(&p)
            .map(|(_, n)| (&*n.id, &*n.local_key))
            .collect();
        assert_eq!(
            names,
            [
                ("b-key", "tollgate.budget.b-key"),
                ("b-org", "tollgate.budget.b-org")
            ]
        );
        assert_eq!(idx.snapshot.reporters["r1"], 41);
        assert_eq!(idx.snapshot.budgets[0].window.period(), Period::Monthly);
    }

    #[test]
    fn spend_resets_when_a_boundary_passes() {
        let idx = SnapshotIndex::decode(doc().to_string().as_bytes()).unwrap();
        let p = idx.principal_for_key("ab12").unwrap();
        let chain: Vec<BudgetRef<'_>> = idx.budgets_for(&p).map(|b| b.0).collect();
        let org = &chain[1];
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(org.spent_at(1999), Some((d("12.5"), Some(2000))));
        assert_eq!(
            org.spent_at(2000),
            Some((Decimal::ZERO, Some(3000))),
            "new window"
        );
        assert_eq!(org.spent_at(3000), None, "past the known bounds");
        let key = &chain[0];
        assert_eq!(key.spent_at(i64::MAX), Some((Decimal::ONE, None)));
    }

    #[test]
    fn bad_snapshots_are_refused() {
        let mut v = doc();
        v["budgets"][0]["limit_usd"] = json!("-1");
        assert!(matches!(
            SnapshotIndex::decode(v.to_string().as_bytes()),
            Err(SnapshotError::NegativeMoney(0))
        ));
        let mut v = doc();
        v["budgets"][0]["window"]["boundaries"] = json!([2000, 1000]);
        assert!(SnapshotIndex::decode(v.to_string().as_bytes()).is_err());
        // Fuzz reproducer: fuzz/seeds/snapshot/regression-negative-rate. Every place a rate
        // can sit: base, threshold tier, range row.
        let price = json!({"rates": {"input": "0.000001", "output": "0.000004"},
            "tiers": [{"above_prompt_tokens": 10, "input": "0.000002"}],
            "ranges": [{"from": 0, "to": 100, "rates": {"input": "0.000001", "output": "0.000001",
                "cache_read": "0", "cache_write_5m": "0", "cache_write_1h": "0", "reasoning": "0"}}]});
        for pointer in [
            "/rates/output",
            "/tiers/0/input",
            "/ranges/0/rates/reasoning",
        ] {
            let mut v = doc();
            let mut p = price.clone();
            *p.pointer_mut(pointer).unwrap() = json!("-0.000005");
            v["prices"]["models"]["m"] = p;
            assert!(
                matches!(
                    SnapshotIndex::decode(v.to_string().as_bytes()),
                    Err(SnapshotError::NegativeRate(m)) if m == "m"
                ),
                "{pointer}"
            );
        }
        let mut v = doc();
        v["prices"]["models"]["m"] = price;
        assert!(SnapshotIndex::decode(v.to_string().as_bytes()).is_ok());
        let mut v = doc();
        v["extra"] = json!(1);
        assert!(SnapshotIndex::decode(v.to_string().as_bytes()).is_err());
        assert!(SnapshotIndex::decode(b"not json").is_err());
    }
}
