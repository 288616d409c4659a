//! The request's or the response's headers as the host hands them over, looked into in place.
//!
//! `proxy_get_header_map_pairs` (proxy-wasm ABI 0.2.1) returns one buffer, allocated in the
//! module through `proxy_on_memory_allocate`: a little-endian u32 count, then a u32 name
//! length and a u32 value length per pair, then each name and each value followed by a NUL.
//! The SDK's `get_map_bytes` turns it into a `String` and a `Vec` per header (two allocations
//! and two frees each, plus a UTF-8 check of every name): on every metered request that was
//! most of the request-header phase's guest work. Here the buffer is kept and searched.
//!
//! The host call is [`crate::abi::header_map_pairs`]; reading the buffer is safe,
//! bounds-checked code that treats a malformed buffer as ending where it stops making sense.

use proxy_wasm::types::MapType;

use crate::abi;

/// Every header of a request or response, read in one host call (each host call crosses the
/// VM boundary and each returned value costs a guest allocation callback, so one read beats
/// several lookups) and kept as the host serialized it.
pub struct Headers(Vec<u8>);

impl Headers {
    /// The request headers (empty if the host refuses).
    pub fn request() -> Headers {
        Headers::read(MapType::HttpRequestHeaders)
    }

    /// The response headers (empty if the host refuses).
    pub fn response() -> Headers {
        Headers::read(MapType::HttpResponseHeaders)
    }

    /// A header as text (`None` when absent or not UTF-8); names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        Headers::text(find(&self.0, name.as_bytes()))
    }

    /// The values of the headers named in `names`, in one walk over the pairs (a phase that
    /// reads several walked them once per name, most of them absent). Each is the first pair
    /// so named, as [`Headers::get`] finds it, as bytes: present is present, UTF-8 or not.
    pub fn pick<const N: usize>(&self, names: [&str; N]) -> [Option<&[u8]>; N] {
        pick(&self.0, names.map(str::as_bytes))
    }

    /// A picked value as text (`None` when absent or not UTF-8, as [`Headers::get`]).
    pub fn text(value: Option<&[u8]>) -> Option<&str> {
        value.and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Reads `map` in one host call (empty when the host refuses or has none).
    fn read(map: MapType) -> Headers {
        Headers(abi::header_map_pairs(map).unwrap_or_default())
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    let word = <[u8; 4]>::try_from(word).ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// The value of the first pair named `name` in a serialized map; `None` when absent or when
/// the buffer ends or lies before it is found.
fn find<'a>(bytes: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let [value] = pick(bytes, [name]);
    value
}

/// [`find`] for each of `names`, in one walk that stops once all are found.
fn pick<'a, const N: usize>(bytes: &'a [u8], names: [&[u8]; N]) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    pick_into(bytes, &names, &mut found);
    found
}

/// [`pick`]'s walk, one copy for every `N` (the module's size is budgeted).
fn pick_into<'a>(bytes: &'a [u8], names: &[&[u8]], found: &mut [Option<&'a [u8]>]) {
    let mut missing = names.len();
    let _ = walk(bytes, |name, value| {
        // Most names differ in length from every wanted one: that test comes first.
        for (want, slot) in names.iter().zip(found.iter_mut()) {
            if want.len() == name.len() && slot.is_none() && name.eq_ignore_ascii_case(want) {
                *slot = Some(value);
                missing -= 1;
            }
        }
        missing > 0
    });
}

/// Calls `f(name, value)` for each pair in order while it returns true; `None` where the
/// buffer ends or lies (the pairs before that were seen).
fn walk<'a>(bytes: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool) -> Option<()> {
    let count = u32_at(bytes, 0)?;
    // Each pair's lengths take 8 bytes: a count the buffer cannot hold is a lie.
    let data_start = count.checked_mul(8)?.checked_add(4)?;
    if data_start > bytes.len() {
        return None;
    }
    let mut at = data_start;
    for i in 0..count {
        let name_len = u32_at(bytes, 4 + i * 8)?;
        let value_len = u32_at(bytes, 8 + i * 8)?;
        let value_at = at.checked_add(name_len)?.checked_add(1)?;
        let next = value_at.checked_add(value_len)?.checked_add(1)?;
        if next > bytes.len() {
            return None;
        }
        let name = bytes.get(at..at + name_len)?;
        let value = bytes.get(value_at..value_at + value_len)?;
        if !f(name, value) {
            break;
        }
        at = next;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::{find, pick};

    /// The ABI's serialization, written out independently of the reader.
    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_each_header_by_name_case_insensitively() {
        let map = serialize(&[
            (":method", b"POST"),
            (":path", b"/v1/chat/completions"),
            ("authorization", b"Bearer tg-123"),
            ("x-empty", b""),
            ("content-type", b"application/json"),
        ]);
        assert_eq!(find(&map, b":method"), Some(&b"POST"[..]));
        assert_eq!(find(&map, b":path"), Some(&b"/v1/chat/completions"[..]));
        assert_eq!(find(&map, b"Authorization"), Some(&b"Bearer tg-123"[..]));
        assert_eq!(find(&map, b"x-empty"), Some(&b""[..]));
        assert_eq!(find(&map, b"content-type"), Some(&b"application/json"[..]));
        assert_eq!(find(&map, b"content-length"), None);
        // A prefix of a name is not the name.
        assert_eq!(find(&map, b":pat"), None);
    }

    proptest::proptest! {
        /// Any map the host can serialize: every name is found with its first value, by any
        /// case of its name.
        #[test]
        fn every_serialized_header_is_found(
            pairs in proptest::collection::vec(("[a-z:-]{1,12}", proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 0..12)
        ) {
            let refs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let map = serialize(&refs);
            for (k, _) in &pairs {
                let first = pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_slice());
                proptest::prop_assert_eq!(find(&map, k.as_bytes()), first);
                proptest::prop_assert_eq!(find(&map, k.to_ascii_uppercase().as_bytes()), first);
            }
        }

        /// Picking several names at once finds the first pair of each name, and in a buffer cut
        /// short what finding each name alone finds.
        #[test]
        fn picking_agrees_with_finding_each(
            pairs in proptest::collection::vec(("[a-c:-]{1,3}", proptest::collection::vec(proptest::num::u8::ANY, 0..8)), 0..12),
            names in proptest::collection::vec("[a-cA-C:-]{1,3}", 0..6)
        ) {
            let refs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let map = serialize(&refs);
            let mut want = [&b""[..]; 6];
            for (slot, n) in want.iter_mut().zip(&names) {
                *slot = n.as_bytes();
            }
            let picked = pick(&map, want);
            for (n, got) in want.iter().zip(picked) {
                let first = pairs.iter().find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(n));
                proptest::prop_assert_eq!(got, first.map(|(_, v)| v.as_slice()));
            }
            // And a cut-off buffer: the pairs before the cut are still found alike.
            let cut = &map[..map.len() / 2];
            for (n, got) in want.iter().zip(pick(cut, want)) {
                proptest::prop_assert_eq!(got, find(cut, n));
            }
        }

        /// Arbitrary bytes never panic, and what is found lies inside the buffer.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), name in "[a-z:]{0,6}") {
            let _ = find(&bytes, name.as_bytes());
        }
    }

    #[test]
    fn the_first_of_repeated_headers_is_found() {
        let map = serialize(&[("x-a", b"1"), ("x-a", b"2")]);
        assert_eq!(find(&map, b"x-a"), Some(&b"1"[..]));
    }

    #[test]
    fn empty_and_malformed_buffers_find_nothing_and_never_panic() {
        assert_eq!(find(&[], b":path"), None);
        assert_eq!(find(&serialize(&[]), b":path"), None);
        let map = serialize(&[(":method", b"GET"), (":path", b"/v1/models")]);
        // Every truncation: what lies wholly inside what is left is still found, nothing else.
        for cut in 0..map.len() {
            let found = find(&map[..cut], b":path");
            assert!(
                found.is_none() || cut == map.len(),
                "cut at {cut}: {found:?}"
            );
        }
        // A count larger than the buffer can hold.
        let mut lying = map.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find(&lying, b":method"), None);
        // A length running past the end.
        let mut long = map;
        long[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(find(&long, b":method"), None);
    }
}
