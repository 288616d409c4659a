//! The `Tollgate-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`, the HMAC keyed
//! with the subscription's secret over `"<t>.<body>"` (the body's exact bytes), as Stripe and
//! Slack sign theirs. A receiver verifies it so:
//!
//! 1. split the header at `,` into `t=…` and `v1=…`;
//! 2. compute HMAC-SHA256 with the secret (`whsec_…`, the whole string as the key) over the
//!    bytes of `t`, a `.`, and the raw request body;
//! 3. compare with `v1` in constant time, and refuse a `t` too far from now (say 5 minutes)
//!    so a captured delivery cannot be replayed later.
//!
//! A retry is signed again with a new `t`; the body (with its `delivery_id`) stays the same,
//! which is what a receiver deduplicates on.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header's name.
pub const HEADER: &str = "tollgate-signature";

/// The HMAC of `t` and `body` under `secret`, lowercase hex.
fn mac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header value for `body` sent at `t` (Unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac_hex(secret, t, body))
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not `t=…,v1=…`.
    #[error("signature header: not t=<unix>,v1=<hex>")]
    Malformed,
    /// `t` is further than the tolerance from now.
    #[error("signature header: t is {0} s away from now")]
    Stale(i64),
    /// The HMAC differs.
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies `header` for `body` with `secret`, at `now` (Unix seconds) within `tolerance_s`.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(VerifyError::Malformed);
    };
    let skew = now.saturating_sub(t).saturating_abs();
    if skew > tolerance_s {
        return Err(VerifyError::Stale(skew));
    }
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return Err(VerifyError::Mismatch);
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&v1).map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let h = sign("whsec_abc", 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(
            verify("whsec_abc", &h, b"{\"a\":1}", 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify("whsec_abd", &h, b"{\"a\":1}", 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_abc", &h, b"{\"a\":2}", 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_abc", &h, b"{\"a\":1}", 1_700_001_000, 300),
            Err(VerifyError::Stale(1000))
        );
        assert_eq!(
            verify("whsec_abc", "v1=00", b"", 0, 300),
            Err(VerifyError::Malformed)
        );
        // RFC 4231 test case 2, as a check of the primitive.
        let Ok(mut mac) = HmacSha256::new_from_slice(b"Jefe") else {
            panic!("key")
        };
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
