//! Who a request is charged to: the chain key → user → project → org.
//!
//! The filter resolves a virtual key (Tollgate's `tg-…`, in whichever header the client's SDK
//! puts API keys; looked up by its SHA-256 in the snapshot) or a trusted principal header set
//! by an earlier Envoy filter to a [`Principal`] ([`identify`]); budgets attach to any link of
//! the chain. The caller's credentials never go upstream: every header in
//! [`CREDENTIAL_HEADERS`] is removed, and each provider's cluster injects its own key.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::budget::Scope;
use crate::reply::{self, Reply};
use crate::snapshot::KeyLookup;

/// The chain a request is charged to. Only `org` is required; a request made with a bare
/// trusted principal header may name only some links.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Virtual key id (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Organisation id.
    pub org: String,
}

impl Principal {
    /// The links of the chain that are set, most specific first: key, user, project, org.
    pub fn chain(&self) -> impl Iterator<Item = (Scope, &str)> {
        [
            (Scope::Key, self.key.as_deref()),
            (Scope::User, self.user.as_deref()),
            (Scope::Project, self.project.as_deref()),
            (Scope::Org, Some(self.org.as_str())),
        ]
        .into_iter()
        .filter_map(|(scope, id)| id.map(|id| (scope, id)))
    }

    /// Parses the trusted principal header: `org=acme;project=web;user=alice;key=k1`
    /// (any order, `org` required). Returns `None` for anything malformed, so a bad header
    /// is refused rather than charged to a guess.
    pub fn from_header(value: &str) -> Option<Principal> {
        let mut p = Principal::default();
        let mut org = None;
        for part in value.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = part.split_once('=')?;
            let v = v.trim();
            if v.is_empty() || v.len() > 256 {
                return None;
            }
            let slot = match k.trim() {
                "org" => &mut org,
                "project" => &mut p.project,
                "user" => &mut p.user,
                "key" => &mut p.key,
                _ => return None,
            };
            if slot.replace(v.to_string()).is_some() {
                return None;
            }
        }
        p.org = org?;
        Some(p)
    }
}

/// Prefix of Tollgate virtual keys.
pub const KEY_PREFIX: &str = "tg-";

/// Headers clients put API keys in, in the order [`find_virtual_key`] reads them:
/// `Authorization: Bearer` (OpenAI SDKs, Azure with Entra tokens), `x-api-key` (Anthropic),
/// `x-goog-api-key` (Gemini), `api-key` (Azure OpenAI).
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "x-amz-security-token",
];

/// The Tollgate virtual key (`tg-…`) in the value of the credential header `name`, if it
/// holds one: `Bearer tg-…` for `authorization`, or an AWS SDK's SigV4 signature whose access
/// key id is the virtual key (`AWS4-HMAC-SHA256 Credential=tg-…/date/region/bedrock/…`: every
/// AWS SDK signs, over plain HTTP too, where boto3 refuses to send a bearer; the signature
/// itself, made with whatever secret the client holds, is not what identifies it, and the
/// bedrock cluster signs anew).
pub fn key_in<'a>(name: &str, value: &'a str) -> Option<&'a str> {
    let key = if name == "authorization" {
        let (scheme, token) = value.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            token.trim()
        } else if scheme == "AWS4-HMAC-SHA256" {
            let credential = token.trim().strip_prefix("Credential=")?;
            credential.split_once('/')?.0
        } else {
            return None;
        }
    } else {
        value.trim()
    };
    (key.starts_with(KEY_PREFIX) && key.len() > KEY_PREFIX.len()).then_some(key)
}

/// The first virtual key in the [`CREDENTIAL_HEADERS`], reading headers lazily through `get`
/// (borrowed: the filter reads every request header once, and copying the key on every
/// request showed in its profile).
pub fn find_virtual_key<'h>(
    mut get: impl FnMut(&'static str) -> Option<&'h str>,
) -> Option<&'h str> {
    CREDENTIAL_HEADERS
        .into_iter()
        .find_map(|h| get(h).and_then(|v| key_in(h, v)))
}

/// The hash a virtual key is stored and looked up by: SHA-256, lowercase hex. The control
/// plane stores only this; the filter hashes each incoming key to find its principal.
pub fn key_hash(key: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        for nibble in [b >> 4, b & 0xf] {
            s.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

/// Who is calling: the principal in the `trusted_header` an earlier filter set (when the
/// configuration names one and the request has it), else the virtual key's, looked up in the
/// snapshot's keys. `header` reads a request header (a host call in the filter).
pub fn identify<'h>(
    trusted_header: Option<&str>,
    mut header: impl FnMut(&str) -> Option<&'h str>,
    keys: &impl KeyLookup,
) -> Result<Arc<Principal>, Reply> {
    if let Some(value) = trusted_header.and_then(&mut header) {
        return Principal::from_header(value).map(Arc::new).ok_or_else(|| {
            reply::error(
                401,
                "invalid_principal",
                "the principal header set by the trusted filter is malformed",
            )
        });
    }
    let Some(key) = find_virtual_key(header) else {
        return Err(reply::error(
            401,
            "missing_api_key",
            "a Tollgate virtual key (tg-...) is required",
        ));
    };
    keys.principal_for_virtual_key(key).ok_or_else(|| {
        reply::error(
            401,
            "invalid_api_key",
            "unknown or revoked Tollgate virtual key",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_lowercase_hex_sha256() {
        // printf 'tg-abc' | sha256sum
        assert_eq!(
            key_hash("tg-abc"),
            "1c212bc5e4906469f3786f19f643ed91db5ef5b2db019a0ca681ca31aa0271ff"
        );
    }

    #[test]
    fn virtual_keys() {
        assert_eq!(key_in("authorization", "Bearer tg-abc"), Some("tg-abc"));
        assert_eq!(key_in("authorization", "bearer  tg-abc "), Some("tg-abc"));
        assert_eq!(key_in("x-api-key", "tg-k"), Some("tg-k"));
        assert_eq!(key_in("api-key", " tg-azure"), Some("tg-azure"));
        assert_eq!(key_in("x-goog-api-key", "tg-g"), Some("tg-g"));
        assert_eq!(key_in("authorization", "Bearer sk-real"), None);
        assert_eq!(key_in("authorization", "Basic tg-x"), None);
        assert_eq!(key_in("authorization", "Bearer tg-"), None);
        let sigv4 = "AWS4-HMAC-SHA256 Credential=tg-aws/20261203/us-east-1/bedrock/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=abcd";
        assert_eq!(key_in("authorization", sigv4), Some("tg-aws"));
        let real = sigv4.replace("tg-aws", "AKIAREAL");
        assert_eq!(key_in("authorization", &real), None);
        assert_eq!(
            key_in("authorization", "AWS4-HMAC-SHA256 Credential=tg-x"),
            None
        );
        assert_eq!(key_in("x-api-key", "Bearer tg-k"), None);
        assert_eq!(
            find_virtual_key(|h| match h {
                "authorization" => Some("Bearer sk-real"),
                "x-api-key" => Some("tg-k"),
                _ => None,
            }),
            Some("tg-k")
        );
        assert_eq!(
            find_virtual_key(|h| (h == "api-key").then_some("tg-azure")),
            Some("tg-azure")
        );
        let mut read = Vec::new();
        let found = find_virtual_key(|h| {
            read.push(h);
            (h == "authorization").then_some("Bearer tg-first")
        });
        assert_eq!(found, Some("tg-first"));
        assert_eq!(read, ["authorization"], "stops at the first key");
        assert_eq!(
            find_virtual_key(|h| (h == "x-goog-api-key").then_some("tg-g")),
            Some("tg-g")
        );
    }

    #[test]
    fn chain_is_most_specific_first() {
        let p = Principal::from_header("org=acme; user=alice ;project=web").unwrap();
        let chain: Vec<_> = p.chain().collect();
        assert_eq!(
            chain,
            [
                (Scope::User, "alice"),
                (Scope::Project, "web"),
                (Scope::Org, "acme")
            ]
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "user=a",
            "org=",
            "org=a;org=b",
            "org=a;team=x",
            "org",
            "org=a;user",
        ] {
            assert_eq!(Principal::from_header(bad), None, "{bad:?}");
        }
    }
}
