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
        get(&format!("{provider}/{model}"))
    }
}

/// `name` without a trailing snapshot date: `-YYYY-MM-DD`, `-YYYYMMDD` or `@YYYYMMDD`.
/// `None` when there is no date to strip.
pub fn strip_snapshot_date(name: &str) -> Option<&str> {
    let is_date = |s: &str| {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        let shaped = match s.len() {
            8 => s.bytes().all(|b| b.is_ascii_digit()),
            10 => s.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            }),
            _ => false,
        };
        // A plausible calendar date, so `model-12345678` version suffixes are left alone.
        shaped
            && digits.get(0..2).is_some_and(|c| c == "19" || c == "20")
            && digits.get(4..6).is_some_and(|m| ("01"..="12").contains(&m))
            && digits.get(6..8).is_some_and(|d| ("01"..="31").contains(&d))
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
