//! The proxy-wasm wire format of header maps (spec, "Serialization" section:
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#serialization>).
//!
//! ```text
//! u32 count | count × (u32 key_len, u32 value_len) | count × (key 0x00 value 0x00)
//! ```
//!
//! little-endian; an empty map may be zero bytes or a single `0x00`.

use crate::headers::Headers;

use super::abi::Status;

/// Serializes `headers` (an empty map is 4 zero bytes, as the Rust SDK also writes).
pub(crate) fn serialize(headers: &Headers) -> Vec<u8> {
    let mut size = 4;
    for (name, value) in headers.iter() {
        size += 8 + name.len() + value.len() + 2;
    }
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&len_u32(headers.len()).to_le_bytes());
    for (name, value) in headers.iter() {
        bytes.extend_from_slice(&len_u32(name.len()).to_le_bytes());
        bytes.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (name, value) in headers.iter() {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A length as the wire's `u32` (header maps never approach 4 GiB).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Reads a little-endian `u32` at `at`.
fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// Parses a serialized map; a malformed one is `BAD_ARGUMENT`.
pub(crate) fn deserialize(bytes: &[u8]) -> Result<Headers, Status> {
    let mut headers = Headers::new();
    if bytes.is_empty() || bytes == [0] {
        return Ok(headers);
    }
    let count = u32_at(bytes, 0).ok_or(Status::BadArgument)?;
    let sizes_end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .ok_or(Status::BadArgument)?;
    if sizes_end > bytes.len() {
        return Err(Status::BadArgument);
    }
    let mut cursor = sizes_end;
    for index in 0..count {
        let at = 4 + index * 8;
        let key_len = u32_at(bytes, at).ok_or(Status::BadArgument)?;
        let value_len = u32_at(bytes, at + 4).ok_or(Status::BadArgument)?;
        let key = take(bytes, &mut cursor, key_len)?;
        let value = take(bytes, &mut cursor, value_len)?;
        headers.add(
            &String::from_utf8_lossy(key),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(headers)
}

/// Takes `len` bytes and the NUL after them.
fn take<'a>(bytes: &'a [u8], cursor: &mut usize, len: usize) -> Result<&'a [u8], Status> {
    let end = cursor.checked_add(len).ok_or(Status::BadArgument)?;
    let field = bytes.get(*cursor..end).ok_or(Status::BadArgument)?;
    if bytes.get(end) != Some(&0) {
        return Err(Status::BadArgument);
    }
    *cursor = end + 1;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example, field by field: `{{"a": "1"}, {"b": "22"}}`.
    const SPEC_EXAMPLE: &[u8] = &[
        2, 0, 0, 0, // two pairs
        1, 0, 0, 0, // len("a")
        1, 0, 0, 0, // len("1")
        1, 0, 0, 0, // len("b")
        2, 0, 0, 0, // len("22")
        b'a', 0, b'1', 0, // "a" NUL "1" NUL
        b'b', 0, b'2', b'2', 0, // "b" NUL "22" NUL
    ];

    #[test]
    fn spec_example_round_trips() {
        let headers = deserialize(SPEC_EXAMPLE).unwrap();
        assert_eq!(headers.get("a"), Some("1"));
        assert_eq!(headers.get("b"), Some("22"));
        assert_eq!(serialize(&headers), SPEC_EXAMPLE);
    }

    #[test]
    fn empty_maps_in_every_spelling() {
        assert!(deserialize(&[]).unwrap().is_empty());
        assert!(deserialize(&[0]).unwrap().is_empty());
        assert!(deserialize(&serialize(&Headers::new())).unwrap().is_empty());
    }

    #[test]
    fn truncated_maps_are_bad_arguments() {
        for cut in 1..SPEC_EXAMPLE.len() {
            let truncated = SPEC_EXAMPLE.get(..cut).unwrap();
            assert_eq!(
                deserialize(truncated),
                Err(Status::BadArgument),
                "cut at {cut}"
            );
        }
        assert_eq!(deserialize(&[255, 255, 255, 255]), Err(Status::BadArgument));
    }
}
