//! Local spend: what one Envoy knows beyond its snapshot, kept in Envoy shared data so every
//! worker sees it.
//!
//! Per budget: `reserved` (worst-case estimates of requests in flight) and `unsynced` (actual
//! cost of finished requests the control plane has not acknowledged yet, per window). A
//! decision counts `snapshot spend + unsynced + reserved + estimate`. Workers change these
//! with get-modify-set loops on the shared-data CAS; the sync service removes unsynced spend
//! once a snapshot acknowledges the batch that carried it ([`crate::sync_protocol`]).
//!
//! The encoding is binary ([`crate::shared_codec`]: reserved, then `(window, amount)` pairs) because
//! it is read and written twice per budget on every metered request.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::shared_codec::{CodecError, Reader, Writer};

/// Window key of a `total` budget (it has one window over all time: the start of
/// [`crate::budget::Window::ALL_TIME`], which `window_at` gives such a budget).
pub const ALL_TIME: i64 = crate::budget::Window::ALL_TIME.start;

/// Shared-data key of one budget's local state.
pub fn budget_key(budget_id: &str) -> String {
    // Twice per budget per request: `format!`'s machinery costs more than the copy.
    [BUDGET_KEY_PREFIX, budget_id].concat()
}

/// What every budget's shared-data key starts with.
const BUDGET_KEY_PREFIX: &str = "tollgate.budget.";

/// One budget's local state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalBudget {
    /// Worst-case estimates of requests in flight.
    pub reserved: Decimal,
    /// Unacknowledged actual spend by window start (a handful of entries at most).
    pub unsynced: Vec<(i64, Decimal)>,
}

/// Why stored local state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local budget state is corrupt: {0}")]
pub struct LocalError(pub String);

/// Most windows kept: the current one and a few before it whose acks may still come.
const MAX_WINDOWS: usize = 4;

impl LocalBudget {
    /// Reads the encoded form; empty input is the zero state.
    pub fn decode(bytes: &[u8]) -> Result<LocalBudget, LocalError> {
        if bytes.is_empty() {
            return Ok(LocalBudget::default());
        }
        let bad = |e: CodecError| LocalError(e.to_string());
        let mut r = Reader::new(bytes);
        let reserved = r.dec().map_err(bad)?;
        let n = r.u8().map_err(bad)?;
        let mut unsynced = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            unsynced.push((r.i64().map_err(bad)?, r.dec().map_err(bad)?));
        }
        r.finish().map_err(bad)?;
        Ok(LocalBudget { reserved, unsynced })
    }

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(17 + 24 * self.unsynced.len());
        w.dec(self.reserved);
        // At most MAX_WINDOWS entries are ever kept.
        w.u8(u8::try_from(self.unsynced.len()).unwrap_or(u8::MAX));
        for (window, amount) in self.unsynced.iter().take(usize::from(u8::MAX)) {
            w.i64(*window);
            w.dec(*amount);
        }
        w.0
    }

    /// Unsynced spend in the window starting at `window_start`, saturating at `Decimal::MAX`
    /// like [`LocalBudget::add_unsynced`]: `add_unsynced` keeps one entry per window, but a
    /// decoded state may repeat one, and `Decimal`'s `+` panics on overflow (found by
    /// `fuzz/fuzz_targets/codec.rs`).
    pub fn unsynced_in(&self, window_start: i64) -> Decimal {
        self.unsynced
            .iter()
            .filter(|(w, _)| *w == window_start)
            .try_fold(Decimal::ZERO, |sum, (_, a)| sum.checked_add(*a))
            .unwrap_or(Decimal::MAX)
    }

    /// Adds a reservation; `None` on overflow.
    pub fn reserve(&mut self, amount: Decimal) -> Option<()> {
        self.reserved = self.reserved.checked_add(amount)?;
        Some(())
    }

    /// Releases a reservation (never below zero).
    pub fn release(&mut self, amount: Decimal) {
        self.reserved = self
            .reserved
            .checked_sub(amount)
            .unwrap_or(Decimal::ZERO)
            .max(Decimal::ZERO);
    }

    /// Records settled spend in a window, dropping the oldest windows beyond a few.
    pub fn add_unsynced(&mut self, window_start: i64, amount: Decimal) {
        match self.unsynced.iter_mut().find(|(w, _)| *w == window_start) {
            Some((_, a)) => *a = a.checked_add(amount).unwrap_or(Decimal::MAX),
            None => self.unsynced.push((window_start, amount)),
        }
        self.unsynced.sort_by_key(|(w, _)| *w);
        while self.unsynced.len() > MAX_WINDOWS {
            self.unsynced.remove(0);
        }
    }

    /// Removes spend the control plane has acknowledged (never below zero; a window whose
    /// entry reaches zero is dropped).
    pub fn ack(&mut self, window_start: i64, amount: Decimal) {
        for (w, a) in &mut self.unsynced {
            if *w == window_start {
                *a = a
                    .checked_sub(amount)
                    .unwrap_or(Decimal::ZERO)
                    .max(Decimal::ZERO);
            }
        }
        self.unsynced.retain(|(_, a)| !a.is_zero());
    }
}

/// Spend charged to one budget by one request: what the sync service acknowledges later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCharge {
    /// Budget id.
    pub budget: String,
    /// Window start the spend belongs to ([`ALL_TIME`] for total budgets).
    pub window: i64,
    /// Amount.
    pub amount: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn lifecycle() {
        let mut b = LocalBudget::default();
        b.reserve(d("0.5")).unwrap();
        b.release(d("0.5"));
        b.add_unsynced(100, d("0.25"));
        b.add_unsynced(100, d("0.25"));
        b.add_unsynced(ALL_TIME, d("1"));
        assert_eq!(b.unsynced_in(100), d("0.5"));
        b.ack(100, d("0.5"));
        assert_eq!(b.unsynced_in(100), Decimal::ZERO);
        assert_eq!(b.unsynced, vec![(ALL_TIME, d("1"))]);
        b.release(d("3"));
        assert_eq!(b.reserved, Decimal::ZERO, "never negative");
    }

    #[test]
    fn keeps_few_windows() {
        let mut b = LocalBudget::default();
        for w in 0..10 {
            b.add_unsynced(w, Decimal::ONE);
        }
        assert_eq!(b.unsynced.len(), MAX_WINDOWS);
        assert_eq!(b.unsynced.first().map(|e| e.0), Some(6));
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let good = LocalBudget {
            reserved: Decimal::ONE,
            unsynced: vec![(5, Decimal::TWO)],
        }
        .encode();
        for bad in [
            &b"r"[..],
            &good[..good.len() - 1],
            &[good.as_slice(), b"x"].concat(),
        ] {
            assert!(LocalBudget::decode(bad).is_err());
        }
        assert_eq!(LocalBudget::decode(b"").unwrap(), LocalBudget::default());
    }

    #[test]
    fn repeated_window_near_max_saturates() {
        // A decoded state holding one window twice near Decimal::MAX (the fuzz reproducer
        // fuzz/seeds/codec/regression-local-unsynced-overflow): summing must not panic.
        let b = LocalBudget {
            reserved: Decimal::ZERO,
            unsynced: vec![(7, Decimal::MAX), (7, Decimal::MAX), (8, Decimal::ONE)],
        };
        let b = LocalBudget::decode(&b.encode()).unwrap();
        assert_eq!(b.unsynced_in(7), Decimal::MAX);
        assert_eq!(b.unsynced_in(8), Decimal::ONE);
    }

    proptest! {
        #[test]
        fn round_trips(r in 0i64..1_000_000_000, entries in proptest::collection::vec((any::<i64>(), 1i64..1_000_000_000), 0..4)) {
            let mut b = LocalBudget { reserved: Decimal::new(r, 9), unsynced: vec![] };
            for (w, a) in entries {
                b.add_unsynced(w, Decimal::new(a, 9));
            }
            prop_assert_eq!(LocalBudget::decode(&b.encode()).unwrap(), b);
        }
    }
}
