//! Model name lookup: exact key, then without (or with) a provider prefix, then a dated
//! snapshot name reduced to its base model — the last only when no exact entry exists.

use super::{ModelPrice, PriceBook};

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

    fn book(names: &[&str]) -> PriceBook {
        let mut b = PriceBook::default();
        for (i, n) in names.iter().enumerate() {
            b.models.insert(
                (*n).to_string(),
                ModelPrice::flat(Decimal::from(i as u32 + 1), Decimal::ONE),
            );
        }
        b
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
