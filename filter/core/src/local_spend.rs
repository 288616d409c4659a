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

/// One budget's local state, held in its encoded form: a request reads it, changes a number or
/// two and writes it back, so the bytes the host handed over are checked once, edited in place
/// and handed back as they are (decoding into values and encoding again cost more than the
/// rest of the budget's work). Layout: `reserved` (a 16-byte `Decimal`), the number of
/// windows (one byte), then per window its start (i64, little-endian) and its unsynced amount
/// (16 bytes), oldest window first. Empty bytes are the zero state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalBudget {
    bytes: Vec<u8>,
}

/// Why stored local state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local budget state is corrupt: {0}")]
pub struct LocalError(pub String);

/// Most windows kept: the current one and a few before it whose acks may still come.
const MAX_WINDOWS: usize = 4;
/// An encoded `Decimal`.
const DEC: usize = 16;
/// `reserved` and the window count.
const HEAD: usize = DEC + 1;
/// One window: its start and its amount.
const ENTRY: usize = 8 + DEC;

/// `a + b`, `Decimal::MAX` past it (`+` panics). One copy of `Decimal`'s addition, which is
/// large in wasm, for every sum of local spend.
#[inline(never)]
fn saturating_add(a: Decimal, b: Decimal) -> Decimal {
    a.checked_add(b).unwrap_or(Decimal::MAX)
}

/// The decimal at `at` (checked on decode, so only a bug could make it fail; zero then).
fn dec_at(bytes: &[u8], at: usize) -> Decimal {
    bytes
        .get(at..at + DEC)
        .and_then(|b| <[u8; DEC]>::try_from(b).ok())
        .map_or(Decimal::ZERO, Decimal::deserialize)
}

impl LocalBudget {
    /// Takes the encoded form, checking it; empty input is the zero state.
    pub fn decode(bytes: Vec<u8>) -> Result<LocalBudget, LocalError> {
        if bytes.is_empty() {
            return Ok(LocalBudget::default());
        }
        let bad = |e: CodecError| LocalError(e.to_string());
        let mut r = Reader::new(&bytes);
        r.dec().map_err(bad)?;
        let n = r.u8().map_err(bad)?;
        if usize::from(n) > MAX_WINDOWS {
            return Err(LocalError(format!(
                "{n} windows; at most {MAX_WINDOWS} are kept"
            )));
        }
        for _ in 0..n {
            r.i64().map_err(bad)?;
            r.dec().map_err(bad)?;
        }
        r.finish().map_err(bad)?;
        Ok(LocalBudget { bytes })
    }

    /// A state from its parts (tests, and a window added or removed).
    pub fn from_parts(reserved: Decimal, unsynced: &[(i64, Decimal)]) -> LocalBudget {
        let mut w = Writer::with_capacity(HEAD + ENTRY * unsynced.len());
        w.dec(reserved);
        // At most MAX_WINDOWS entries are ever kept.
        w.u8(u8::try_from(unsynced.len()).unwrap_or(u8::MAX));
        for (window, amount) in unsynced.iter().take(usize::from(u8::MAX)) {
            w.i64(*window);
            w.dec(*amount);
        }
        LocalBudget { bytes: w.0 }
    }

    /// The encoded form (empty for the zero state).
    pub fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// Worst-case estimates of requests in flight.
    pub fn reserved(&self) -> Decimal {
        dec_at(&self.bytes, 0)
    }

    /// Unacknowledged actual spend by window start, oldest first.
    pub fn unsynced(&self) -> impl Iterator<Item = (i64, Decimal)> + '_ {
        self.entries().map(|(window, e)| (window, dec_at(e, 8)))
    }

    /// Each window's start and its encoded entry (its amount decoded only where wanted: a
    /// request touches one window of the few kept).
    fn entries(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        self.bytes
            .get(HEAD..)
            .unwrap_or_default()
            .chunks_exact(ENTRY)
            .map(|e| {
                let window = e
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, i64::from_le_bytes);
                (window, e)
            })
    }

    /// Unsynced spend in the window starting at `window_start`, saturating at `Decimal::MAX`
    /// like [`LocalBudget::add_unsynced`]: `add_unsynced` keeps one entry per window, but a
    /// decoded state may repeat one, and `Decimal`'s `+` panics on overflow (found by
    /// `fuzz/fuzz_targets/codec.rs`).
    pub fn unsynced_in(&self, window_start: i64) -> Decimal {
        self.entries()
            .filter(|(w, _)| *w == window_start)
            .try_fold(Decimal::ZERO, |sum, (_, e)| sum.checked_add(dec_at(e, 8)))
            .unwrap_or(Decimal::MAX)
    }

    /// Overwrites the decimal at `at`, making room for the head first in the zero state.
    fn put_dec(&mut self, at: usize, value: Decimal) {
        if self.bytes.is_empty() {
            self.bytes = LocalBudget::from_parts(Decimal::ZERO, &[]).bytes;
        }
        if let Some(slot) = self.bytes.get_mut(at..at + DEC) {
            slot.copy_from_slice(&value.serialize());
        }
    }

    /// Adds a reservation; `None` on overflow.
    pub fn reserve(&mut self, amount: Decimal) -> Option<()> {
        let reserved = self.reserved().checked_add(amount)?;
        self.put_dec(0, reserved);
        Some(())
    }

    /// Releases a reservation (never below zero).
    pub fn release(&mut self, amount: Decimal) {
        // Below zero is zero: a sign test, not a comparison of decimals.
        let reserved = self
            .reserved()
            .checked_sub(amount)
            .filter(|r| !r.is_sign_negative())
            .unwrap_or(Decimal::ZERO);
        self.put_dec(0, reserved);
    }

    /// Records settled spend in a window, dropping the oldest windows beyond a few.
    pub fn add_unsynced(&mut self, window_start: i64, amount: Decimal) {
        // The common case, a window already kept: its amount changes in place.
        let kept = self.entries().position(|(w, _)| w == window_start);
        if let Some(i) = kept {
            let at = HEAD + i * ENTRY + 8;
            self.put_dec(at, saturating_add(dec_at(&self.bytes, at), amount));
            return;
        }
        let mut unsynced: Vec<(i64, Decimal)> = self.unsynced().collect();
        unsynced.push((window_start, amount));
        unsynced.sort_by_key(|(w, _)| *w);
        let drop = unsynced.len().saturating_sub(MAX_WINDOWS);
        *self = LocalBudget::from_parts(self.reserved(), unsynced.get(drop..).unwrap_or_default());
    }

    /// Removes spend the control plane has acknowledged (never below zero; a window whose
    /// entry reaches zero is dropped).
    pub fn ack(&mut self, window_start: i64, amount: Decimal) {
        let unsynced: Vec<(i64, Decimal)> = self
            .unsynced()
            .map(|(w, a)| match w == window_start {
                true => (
                    w,
                    a.checked_sub(amount)
                        .unwrap_or(Decimal::ZERO)
                        .max(Decimal::ZERO),
                ),
                false => (w, a),
            })
            .filter(|(_, a)| !a.is_zero())
            .collect();
        *self = LocalBudget::from_parts(self.reserved(), &unsynced);
    }
}

/// What a worker's settled requests owe one budget's local state and have not written yet:
/// the estimates their reservations held, to release, and their actual costs by window.
///
/// Settling a request needs no host call of its own: the worker keeps what it owes and writes
/// it in the compare-and-set of its next admission on the budget (which decides with it
/// applied), or on its tick before its usage batch is queued, so a charge is in the local state
/// before the sync service can post it and have it acknowledged. Until then the state holds the
/// reservation, never less than the request was allowed to cost: other workers' decisions may
/// be stricter for up to a tick, never looser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owed {
    release: Decimal,
    /// The window the first settlement fell in, where nearly all do. Not in `more`: every
    /// settlement owes each budget of its chain, and allocating there per budget per request
    /// was a tenth of the budget's work.
    first: Option<(i64, Decimal)>,
    /// Other windows (a window boundary passed between writes).
    more: Vec<(i64, Decimal)>,
}

impl Owed {
    /// One settled request: its reservation of `estimate` ends, `amount` was spent in the
    /// window starting at `window`.
    pub fn settle(&mut self, estimate: Decimal, window: i64, amount: Decimal) {
        self.release = saturating_add(self.release, estimate);
        let mut kept = self.first.iter_mut().chain(self.more.iter_mut());
        if let Some((_, a)) = kept.find(|(w, _)| *w == window) {
            *a = saturating_add(*a, amount);
        } else if self.first.is_none() {
            self.first = Some((window, amount));
        } else {
            self.more.push((window, amount));
        }
    }

    /// The state as if each settlement had been applied to it when it happened.
    pub fn apply_to(&self, state: &mut LocalBudget) {
        state.release(self.release);
        for (window, amount) in self.first.iter().chain(&self.more) {
            state.add_unsynced(*window, *amount);
        }
    }
}

/// Spend charged to one budget by one request: what the sync service acknowledges later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCharge {
    /// Budget id.
    pub budget: std::sync::Arc<str>,
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

    fn windows(b: &LocalBudget) -> Vec<(i64, Decimal)> {
        b.unsynced().collect()
    }

    #[test]
    fn lifecycle() {
        let mut b = LocalBudget::default();
        assert_eq!((b.reserved(), windows(&b)), (Decimal::ZERO, vec![]));
        b.reserve(d("0.5")).unwrap();
        assert_eq!(b.reserved(), d("0.5"));
        b.release(d("0.5"));
        b.add_unsynced(100, d("0.25"));
        b.add_unsynced(100, d("0.25"));
        b.add_unsynced(ALL_TIME, d("1"));
        assert_eq!(b.unsynced_in(100), d("0.5"));
        b.ack(100, d("0.5"));
        assert_eq!(b.unsynced_in(100), Decimal::ZERO);
        assert_eq!(windows(&b), [(ALL_TIME, d("1"))]);
        b.release(d("3"));
        assert_eq!(b.reserved(), Decimal::ZERO, "never negative");
        // What is written is what reads back.
        let back = LocalBudget::decode(b.encoded().to_vec()).unwrap();
        assert_eq!(
            (back.reserved(), windows(&back)),
            (Decimal::ZERO, windows(&b))
        );
    }

    #[test]
    fn keeps_few_windows() {
        let mut b = LocalBudget::default();
        for w in 0..10 {
            b.add_unsynced(w, Decimal::ONE);
        }
        let kept: Vec<i64> = b.unsynced().map(|e| e.0).collect();
        assert_eq!(kept, [6, 7, 8, 9]);
        // Older windows arriving last never push out newer ones.
        for w in (0..6).rev() {
            b.add_unsynced(w, Decimal::ONE);
        }
        let kept: Vec<i64> = b.unsynced().map(|e| e.0).collect();
        assert_eq!(kept, [6, 7, 8, 9]);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let good = LocalBudget::from_parts(Decimal::ONE, &[(5, Decimal::TWO)]);
        let good = good.encoded();
        let five = LocalBudget::from_parts(Decimal::ONE, &[(5, Decimal::TWO); 5]);
        for bad in [
            &b"r"[..],
            &good[..good.len() - 1],
            &[good, b"x"].concat(),
            five.encoded(),
        ] {
            assert!(LocalBudget::decode(bad.to_vec()).is_err(), "{bad:?}");
        }
        assert_eq!(LocalBudget::decode(vec![]).unwrap(), LocalBudget::default());
    }

    #[test]
    fn repeated_window_near_max_saturates() {
        // A decoded state holding one window twice near Decimal::MAX (the fuzz reproducer
        // fuzz/seeds/codec/regression-local-unsynced-overflow): summing must not panic.
        let b = LocalBudget::from_parts(
            Decimal::ZERO,
            &[(7, Decimal::MAX), (7, Decimal::MAX), (8, Decimal::ONE)],
        );
        let b = LocalBudget::decode(b.encoded().to_vec()).unwrap();
        assert_eq!(b.unsynced_in(7), Decimal::MAX);
        assert_eq!(b.unsynced_in(8), Decimal::ONE);
    }

    /// What the state holds, as values: the model the edits in place must agree with.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Model {
        reserved: Decimal,
        unsynced: Vec<(i64, Decimal)>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(Decimal),
        Release(Decimal),
        Add(i64, Decimal),
        Ack(i64, Decimal),
    }

    fn op() -> impl Strategy<Value = Op> {
        let amount = (1i64..1_000_000).prop_map(|a| Decimal::new(a, 6));
        prop_oneof![
            amount.clone().prop_map(Op::Reserve),
            amount.clone().prop_map(Op::Release),
            (0i64..8, amount.clone()).prop_map(|(w, a)| Op::Add(w, a)),
            (0i64..8, amount).prop_map(|(w, a)| Op::Ack(w, a)),
        ]
    }

    fn settlement() -> impl Strategy<Value = (Decimal, i64, Decimal)> {
        let amount = (0i64..1_000_000).prop_map(|a| Decimal::new(a, 6));
        (amount.clone(), 0i64..8, amount)
    }

    proptest! {
        /// Settlements written later, summed, leave the state each written at once would
        /// (reservations saturate at zero, old windows drop out the same way).
        #[test]
        fn owed_settlements_agree_with_settling_each(
            reserved in 0i64..4_000_000,
            start in proptest::collection::vec((0i64..8, 1i64..1_000_000), 0..5),
            settled in proptest::collection::vec(settlement(), 0..20),
        ) {
            let start: Vec<(i64, Decimal)> =
                start.into_iter().map(|(w, a)| (w, Decimal::new(a, 6))).collect();
            let mut each = LocalBudget::default();
            each.reserve(Decimal::new(reserved, 6)).unwrap();
            for (w, a) in start {
                each.add_unsynced(w, a);
            }
            let mut later = each.clone();
            let mut owed = Owed::default();
            for (estimate, window, amount) in settled {
                each.release(estimate);
                each.add_unsynced(window, amount);
                owed.settle(estimate, window, amount);
            }
            owed.apply_to(&mut later);
            prop_assert_eq!(later.reserved(), each.reserved());
            prop_assert_eq!(windows(&later), windows(&each));
        }

        /// Any sequence of what requests and acks do leaves the state the model says, and
        /// every state written reads back as itself.
        #[test]
        fn edits_in_place_agree_with_the_model(ops in proptest::collection::vec(op(), 0..40)) {
            let mut b = LocalBudget::default();
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Reserve(a) => {
                        b.reserve(a).unwrap();
                        m.reserved += a;
                    }
                    Op::Release(a) => {
                        b.release(a);
                        m.reserved = (m.reserved - a).max(Decimal::ZERO);
                    }
                    Op::Add(w, a) => {
                        b.add_unsynced(w, a);
                        match m.unsynced.iter_mut().find(|(mw, _)| *mw == w) {
                            Some((_, ma)) => *ma += a,
                            None => m.unsynced.push((w, a)),
                        }
                        m.unsynced.sort_by_key(|(mw, _)| *mw);
                        while m.unsynced.len() > MAX_WINDOWS {
                            m.unsynced.remove(0);
                        }
                    }
                    Op::Ack(w, a) => {
                        b.ack(w, a);
                        for (mw, ma) in &mut m.unsynced {
                            if *mw == w {
                                *ma = (*ma - a).max(Decimal::ZERO);
                            }
                        }
                        m.unsynced.retain(|(_, ma)| !ma.is_zero());
                    }
                }
                prop_assert_eq!(b.reserved(), m.reserved);
                prop_assert_eq!(windows(&b), m.unsynced.clone());
                let back = LocalBudget::decode(b.encoded().to_vec()).unwrap();
                prop_assert_eq!(&back, &b);
            }
        }
    }
}
