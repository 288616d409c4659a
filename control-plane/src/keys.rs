//! Virtual-key secrets and generated ids.
//!
//! A secret is `tg-` followed by 40 base62 characters (≈238 bits) from the OS random source.
//! It is shown once, at creation; the store keeps only its SHA-256 (lowercase hex, what the
//! filter hashes an incoming key to) and a short prefix for listings.

use sha2::{Digest, Sha256};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "tg-";
/// Characters of the secret shown in listings (`tg-` and the first 8 random characters).
pub const LISTED_PREFIX_LEN: usize = 11;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why randomness could not be had.
#[derive(Debug, thiserror::Error)]
#[error("the OS random source failed: {0}")]
pub struct RandomError(String);

/// `n` uniformly random base62 characters (rejection sampling: no modulo bias).
pub fn random_base62(n: usize) -> Result<String, RandomError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
        for b in buf {
            // 248 = 4 × 62: bytes at or above it would favour the first characters.
            if b < 248 {
                if let Some(&c) = BASE62.get(usize::from(b % 62)) {
                    out.push(char::from(c));
                }
                if out.len() == n {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// A fresh secret.
pub fn generate_secret() -> Result<String, RandomError> {
    Ok(format!("{SECRET_PREFIX}{}", random_base62(40)?))
}

/// A fresh id with a readable kind prefix (`key_…`, `bud_…`).
pub fn generate_id(kind: &str) -> Result<String, RandomError> {
    Ok(format!("{kind}_{}", random_base62(16)?))
}

/// Lowercase hex SHA-256 of API tokens, reporter secrets and ledger rows (a virtual key's
/// hash is core's `identity::key_hash`, shared with the filter).
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0x0f));
    }
    s
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// The part of a secret listings show.
pub fn listed_prefix(secret: &str) -> String {
    secret.chars().take(LISTED_PREFIX_LEN).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed_as_hex() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tg-") && a.len() == 43, "{a}");
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(listed_prefix(&a).len(), 11);
        assert!(generate_id("key").unwrap().starts_with("key_"));
    }
}
