//! An ordered, multi-valued HTTP header map with Envoy's key handling.
//!
//! Envoy lower-cases header names on every insert (`Http::LowerCaseString`) and keeps
//! insertion order, repeated names included; `proxy_get_header_map_value` answers with
//! the first value. [`Headers`] does the same so what a test reads is what the filter
//! would have seen. Pseudo-headers (`:method`, `:path`, `:authority`, `:status`) are
//! ordinary entries, as they are on the proxy-wasm wire.

use std::fmt;

/// An ordered list of `(name, value)` pairs; names are stored lower-cased.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Headers {
    /// A response's headers as Envoy hands them to the filter: `:status` first, then these.
    pub(crate) fn with_status_first(&self, status: u16) -> Headers {
        let mut headers = Headers::new();
        headers.add(":status", status.to_string());
        for (name, value) in self.iter() {
            headers.add(name, value);
        }
        headers
    }

    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from pairs, lower-casing each name.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut headers = Self::new();
        for (name, value) in pairs {
            headers.add(name.as_ref(), value);
        }
        headers
    }

    /// The first value of `name` (case-insensitive), as `proxy_get_header_map_value` returns it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a value (Envoy's `addCopy`): an existing value of the same name is kept.
    /// Pseudo-headers go after the existing pseudo-headers and before the rest, as in
    /// Envoy's `HeaderList`.
    pub fn add(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        if name.starts_with(':') {
            let end = self
                .pairs
                .iter()
                .take_while(|(key, _)| key.starts_with(':'))
                .count();
            self.pairs.insert(end, (name, value));
        } else {
            self.pairs.push((name, value));
        }
    }

    /// Sets the only value of `name` (Envoy's `setCopy`, which with its default runtime
    /// flag removes every value and adds the new one).
    pub fn replace(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.add(name, value);
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.pairs
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    /// Number of entries, repeated names counted each time (the `num_headers` Envoy passes).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sum of name and value lengths, as Envoy's `HeaderMap::byteSize` (for
    /// `proxy_get_header_map_size`).
    pub fn byte_size(&self) -> usize {
        self.pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The entries as owned pairs.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.pairs.clone()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pairs.iter()).finish()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_and_first_value_wins() {
        let mut headers = Headers::new();
        headers.add("X-Tag", "a");
        headers.add("x-tag", "b");
        assert_eq!(headers.get("x-TAG"), Some("a"));
        assert_eq!(headers.get_all("x-tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn replace_leaves_one_value_and_pseudo_headers_stay_first() {
        let mut headers = Headers::from_pairs([(":path", "/"), ("a", "1"), ("b", "2"), ("a", "3")]);
        headers.replace("A", "9");
        headers.add(":method", "GET");
        headers.replace(":path", "/new");
        assert_eq!(
            headers.to_vec(),
            [
                (":method", "GET"),
                (":path", "/new"),
                ("b", "2"),
                ("a", "9")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        headers.remove("B");
        assert!(!headers.contains("b"));
    }
}
