//! Model name lookup: exact key, then without (or with) a provider prefix, then a dated
//! snapshot name reduced to its base model — the last only when no exact entry exists.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::{EffectiveRates, ModelPrice, PriceBook, ServiceTier};

/// Where a request is priced from: a price book as it is, or through a worker's
/// [`PriceMemo`].
pub trait Prices {
    /// The book's version, recorded with what is priced from it.
    fn version(&self) -> u64;
    /// [`PriceBook::lookup`], handing `f` the key that matched and its price (the caller
    /// copies what it keeps).
    fn find<R>(
        &self,
        model: &str,
        provider_hint: Option<&'static str>,
        f: impl FnOnce(&str, &Arc<ModelPrice>) -> R,
    ) -> Option<R>;

    /// The dearest tier `price` (found through this book) may be served at and that tier's
    /// highest rates: what a request that lets the provider choose reserves at. Worked out
    /// once per price by a [`Memoized`] book, on every call by a plain one.
    fn dearest(&self, price: &Arc<ModelPrice>) -> (ServiceTier, EffectiveRates) {
        price.dearest_rates()
    }
}

impl Prices for PriceBook {
    fn version(&self) -> u64 {
        self.version
    }

    fn find<R>(
        &self,
        model: &str,
        provider_hint: Option<&'static str>,
        f: impl FnOnce(&str, &Arc<ModelPrice>) -> R,
    ) -> Option<R> {
        self.lookup(model, provider_hint)
            .map(|(key, price)| f(key, &Arc::new(price.clone())))
    }
}

/// Most lookups a [`PriceMemo`] keeps (a worker serves a handful of models; a caller naming
/// ever new ones empties it, costing each lookup what it costs without it).
const MEMO_MAX: usize = 16;

/// A worker's last lookups in its price book. A book holds every model LiteLLM prices
/// (3,190 in its map of 2026-12), and a lookup walks the ordered map comparing names, two or
/// three times for a dated name (`gpt-4o-mini-2024-07-18`, which OpenAI answers with): per
/// request, at admission and again at settlement. The memo answers a name it has seen in one
/// scan of a few entries. It holds the book it answers for and starts over when handed
/// another, so an answer never outlives the book it came from.
#[derive(Debug, Default)]
pub struct PriceMemo {
    book: RefCell<Option<Arc<PriceBook>>>,
    seen: RefCell<Vec<Looked>>,
}

/// One lookup and what it found.
#[derive(Debug)]
struct Looked {
    model: String,
    hint: Option<&'static str>,
    found: Option<(String, Arc<ModelPrice>)>,
    /// [`Prices::dearest`] of the price found, once asked.
    dearest: Cell<Option<(ServiceTier, EffectiveRates)>>,
}

impl PriceMemo {
    /// `book`, looked up through this memo.
    pub fn over<'a>(&'a self, book: &'a Arc<PriceBook>) -> Memoized<'a> {
        Memoized { memo: self, book }
    }
}

/// A price book looked up through a [`PriceMemo`].
#[derive(Debug)]
pub struct Memoized<'a> {
    memo: &'a PriceMemo,
    book: &'a Arc<PriceBook>,
}

impl Memoized<'_> {
    /// Where in the memo the lookup of `model` under `provider_hint` is, made now when it was
    /// not seen yet (one copy, whatever the callers do with the answer).
    #[inline(never)]
    fn looked(&self, model: &str, provider_hint: Option<&'static str>) -> usize {
        let mut held = self.memo.book.borrow_mut();
        let mut seen = self.memo.seen.borrow_mut();
        if !held.as_ref().is_some_and(|b| Arc::ptr_eq(b, self.book)) {
            *held = Some(Arc::clone(self.book));
            seen.clear();
        }
        if let Some(at) = seen
            .iter()
            .position(|l| l.model == model && l.hint == provider_hint)
        {
            return at;
        }
        if seen.len() >= MEMO_MAX {
            seen.clear();
        }
        seen.push(Looked {
            model: model.to_owned(),
            hint: provider_hint,
            found: self
                .book
                .lookup(model, provider_hint)
                .map(|(key, price)| (key.to_owned(), Arc::new(price.clone()))),
            dearest: Cell::new(None),
        });
        seen.len() - 1
    }
}

impl Prices for Memoized<'_> {
    fn version(&self) -> u64 {
        self.book.version
    }

    fn find<R>(
        &self,
        model: &str,
        provider_hint: Option<&'static str>,
        f: impl FnOnce(&str, &Arc<ModelPrice>) -> R,
    ) -> Option<R> {
        let at = self.looked(model, provider_hint);
        let seen = self.memo.seen.borrow();
        let (key, price) = seen.get(at)?.found.as_ref()?;
        Some(f(key, price))
    }

    /// Kept with the lookup that found `price` (the memo holds that `Arc`, so no other price
    /// can be at its address); worked out afresh for a price from elsewhere (a configured
    /// default price).
    fn dearest(&self, price: &Arc<ModelPrice>) -> (ServiceTier, EffectiveRates) {
        let seen = self.memo.seen.borrow();
        let Some(looked) = seen
            .iter()
            .find(|l| l.found.as_ref().is_some_and(|(_, p)| Arc::ptr_eq(p, price)))
        else {
            return price.dearest_rates();
        };
        if let Some(known) = looked.dearest.get() {
            return known;
        }
        let worked = price.dearest_rates();
        looked.dearest.set(Some(worked));
        worked
    }
}

impl PriceBook {
    /// Finds the price of `model`, returning the key that matched.
    ///
    /// Order: the exact key; the name without a provider prefix (`openai/gpt-4o` → `gpt-4o`);
    /// the name with the hinted provider's prefix (`gemini-2.5-pro` → `gemini/gemini-2.5-pro`);
    /// then the same three for the name with a trailing snapshot date removed
    /// (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-3-5-sonnet-20241022` → `claude-3-5-sonnet`).
    pub fn lookup<'a>(
        &'a self,
        model: &str,
        provider_hint: Option<&str>,
    ) -> Option<(&'a str, &'a ModelPrice)> {
        self.lookup_name(model, provider_hint).or_else(|| {
            let base = strip_snapshot_date(model)?;
            self.lookup_name(base, provider_hint)
        })
    }

    fn lookup_name<'a>(
        &'a self,
        model: &str,
        provider_hint: Option<&str>,
    ) -> Option<(&'a str, &'a ModelPrice)> {
        let get = |name: &str| {
            self.models
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v))
        };
        if let Some(hit) = get(model) {
            return Some(hit);
        }
        if let Some((_, rest)) = model.split_once('/') {
            if let Some(hit) = get(rest) {
                return Some(hit);
            }
        }
        let provider = provider_hint?;
        // `provider/model` made on the stack: this runs at every settlement whose answer
        // names a dated model (OpenAI always does), and a heap string there is measurable.
        let mut buf = [0u8; 128];
        let joined = [provider.as_bytes(), b"/", model.as_bytes()];
        let len = joined.iter().map(|p| p.len()).sum::<usize>();
        match buf.get_mut(..len) {
            Some(key) => {
                let mut at = 0;
                for part in joined {
                    if let Some(dst) = key.get_mut(at..at + part.len()) {
                        dst.copy_from_slice(part);
                    }
                    at += part.len();
                }
                get(std::str::from_utf8(key).ok()?)
            }
            None => get(&format!("{provider}/{model}")),
        }
    }
}

/// `name` without a trailing snapshot date: `-YYYY-MM-DD`, `-YYYYMMDD` or `@YYYYMMDD`.
/// `None` when there is no date to strip.
pub fn strip_snapshot_date(name: &str) -> Option<&str> {
    let is_date = |s: &str| {
        let b = s.as_bytes();
        let shaped = match b.len() {
            8 => b.iter().all(u8::is_ascii_digit),
            10 => b.iter().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            }),
            _ => false,
        };
        // The eight digits, dashes skipped (no allocation: this runs at every settlement
        // whose answer names a dated model).
        let mut digits = [0u8; 8];
        for (slot, c) in digits.iter_mut().zip(b.iter().filter(|c| **c != b'-')) {
            *slot = *c;
        }
        let [c0, c1, _, _, m0, m1, d0, d1] = digits;
        // A plausible calendar date, so `model-12345678` version suffixes are left alone.
        shaped
            && matches!([c0, c1], [b'1', b'9'] | [b'2', b'0'])
            && (b"01".as_slice()..=b"12".as_slice()).contains(&[m0, m1].as_slice())
            && (b"01".as_slice()..=b"31".as_slice()).contains(&[d0, d1].as_slice())
    };
    for sep in ['-', '@'] {
        // Try the 10-char form (YYYY-MM-DD) before the 8-char one.
        for len in [10usize, 8] {
            let Some(cut) = name.len().checked_sub(len + 1) else {
                continue;
            };
            let (Some(head), Some(tail)) = (name.get(..cut), name.get(cut..)) else {
                continue;
            };
            if tail.starts_with(sep) && tail.get(1..).is_some_and(is_date) && !head.is_empty() {
                return Some(head);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// Models priced by their place in the book; every other one with a priority tier that
    /// is dearer or cheaper than standard by turns, so the dearest tier differs by model.
    fn book(names: &[&str]) -> PriceBook {
        let mut b = PriceBook::default();
        for (i, n) in names.iter().enumerate() {
            let mut price = ModelPrice::flat(Decimal::from(i as u32 + 1), Decimal::ONE);
            if i % 2 == 1 {
                let input = Decimal::from(if i % 4 == 1 { 100 } else { 0 });
                price.service_tiers.insert(
                    super::ServiceTier::Priority,
                    super::super::TierRates {
                        base: super::super::TierOverride {
                            input: Some(input),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                );
            }
            b.models.insert((*n).to_string(), price);
        }
        b
    }

    proptest::proptest! {
        /// Through the memo, any sequence of lookups in any of three books answers what the
        /// book itself answers, however often the book changes or the memo fills.
        #[test]
        fn the_memo_answers_what_the_book_answers(
            steps in proptest::collection::vec((0usize..3, "(openai/)?(gpt-4o|gpt-5|m[0-9]{1,2})(-2024-08-06)?", proptest::option::of(proptest::sample::select(vec!["openai", "gemini"]))), 1..80)
        ) {
            let books = [
                Arc::new(book(&["gpt-4o", "gpt-4o-2024-08-06"])),
                Arc::new(book(&["gpt-5", "openai/gpt-4o", "m1", "m2"])),
                Arc::new(book(&["gpt-4o", "m1", "m3", "m5"])),
            ];
            let memo = PriceMemo::default();
            for (b, model, hint) in steps {
                let book = &books[b];
                let owned = |k: &str, p: &Arc<ModelPrice>| (k.to_owned(), ModelPrice::clone(p));
                proptest::prop_assert_eq!(
                    memo.over(book).find(&model, hint, owned),
                    book.find(&model, hint, owned)
                );
                // The dearest tier the memo keeps with a price is the price's own.
                let memoized = memo.over(book);
                proptest::prop_assert_eq!(
                    memoized.find(&model, hint, |_, p| memoized.dearest(p)),
                    book.find(&model, hint, |_, p| p.dearest_rates())
                );
            }
        }
    }

    #[test]
    fn a_changed_book_is_looked_up_afresh() {
        // The same model, priced differently in the next book (a price change).
        let memo = PriceMemo::default();
        let first = Arc::new(book(&["gpt-4o"]));
        let mut changed = book(&["gpt-4o"]);
        changed.models.insert(
            "gpt-4o".into(),
            ModelPrice::flat(Decimal::TEN, Decimal::ONE),
        );
        let second = Arc::new(changed);
        let price = |b: &Arc<PriceBook>| memo.over(b).find("gpt-4o", None, |_, p| p.clone());
        assert_eq!(price(&first), first.find("gpt-4o", None, |_, p| p.clone()));
        assert_eq!(
            price(&second),
            second.find("gpt-4o", None, |_, p| p.clone())
        );
        assert_ne!(price(&first), price(&second));
    }

    #[test]
    fn lookup_order() {
        let b = book(&[
            "gpt-4o",
            "gpt-4o-2024-08-06",
            "gemini/gemini-2.5-pro",
            "claude-3-5-sonnet",
        ]);
        let key = |m: &str, hint: Option<&str>| b.lookup(m, hint).map(|(k, _)| k.to_string());
        // exact wins over a dated fallback
        assert_eq!(
            key("gpt-4o-2024-08-06", None).as_deref(),
            Some("gpt-4o-2024-08-06")
        );
        // dated snapshot without its own entry falls back to the base model
        assert_eq!(key("gpt-4o-2024-11-20", None).as_deref(), Some("gpt-4o"));
        assert_eq!(
            key("claude-3-5-sonnet-20241022", None).as_deref(),
            Some("claude-3-5-sonnet")
        );
        // provider prefix stripped, or added from the hint
        assert_eq!(key("openai/gpt-4o", None).as_deref(), Some("gpt-4o"));
        assert_eq!(
            key("gemini-2.5-pro", Some("gemini")).as_deref(),
            Some("gemini/gemini-2.5-pro")
        );
        assert_eq!(key("gemini-2.5-pro", None), None);
        // unknown stays unknown; non-date suffixes are not stripped
        assert_eq!(key("gpt-5", None), None);
        assert_eq!(key("gpt-4o-12345678", None), None);
    }

    #[test]
    fn snapshot_dates() {
        assert_eq!(strip_snapshot_date("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            strip_snapshot_date("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            strip_snapshot_date("claude-3-5-sonnet-v2@20241022"),
            Some("claude-3-5-sonnet-v2")
        );
        assert_eq!(strip_snapshot_date("gpt-4o"), None);
        assert_eq!(strip_snapshot_date("-20241022"), None);
        assert_eq!(strip_snapshot_date("x-20241322"), None);
        assert_eq!(strip_snapshot_date("é"), None);
    }
}
