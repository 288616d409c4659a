//! Who a request is charged to: the chain key → user → project → org.
//!
//! The filter resolves a virtual key (Tollgate's `tg-…`, in whichever header the client's SDK
//! puts API keys; looked up by its SHA-256 in the snapshot) or a trusted principal header set
//! by an earlier Envoy filter to a [`Principal`] ([`identify`]); budgets attach to any link of
//! the chain. The caller's credentials never go upstream: every header in
//! [`CREDENTIAL_HEADERS`] is removed, and each provider's cluster injects its own key.

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::budget::Scope;
use crate::reply::{self, Reply};
use crate::snapshot::SnapshotIndex;

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

/// The virtual key a client sent: `Authorization: Bearer tg-…` (OpenAI SDKs), `x-api-key:
/// tg-…` (Anthropic SDKs) or `x-goog-api-key: tg-…` (Gemini). `None` when none is a Tollgate key.
pub fn virtual_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    x_goog_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    });
    [
        bearer,
        x_api_key.map(str::trim),
        x_goog_api_key.map(str::trim),
    ]
    .into_iter()
    .flatten()
    .find(|k| k.starts_with(KEY_PREFIX) && k.len() > KEY_PREFIX.len())
}

/// Headers clients put API keys in, in the order [`find_virtual_key`] reads them.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// Like [`virtual_key`], reading headers lazily through `get` and stopping at the first that
/// carries a Tollgate key (each header read is a host call in the filter).
pub fn find_virtual_key(mut get: impl FnMut(&'static str) -> Option<String>) -> Option<String> {
    let [auth, x_api, x_goog] = CREDENTIAL_HEADERS;
    if let Some(k) = get(auth)
        .as_deref()
        .and_then(|v| virtual_key(Some(v), None, None))
    {
        return Some(k.to_string());
    }
    if let Some(k) = get(x_api)
        .as_deref()
        .and_then(|v| virtual_key(None, Some(v), None))
    {
        return Some(k.to_string());
    }
    get(x_goog)
        .as_deref()
        .and_then(|v| virtual_key(None, None, Some(v)))
        .map(str::to_string)
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
/// snapshot. `header` reads a request header (a host call in the filter).
pub fn identify(
    trusted_header: Option<&str>,
    mut header: impl FnMut(&str) -> Option<String>,
    snapshot: &SnapshotIndex,
) -> Result<Principal, Reply> {
    if let Some(value) = trusted_header.and_then(&mut header) {
        return Principal::from_header(&value).ok_or_else(|| {
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
    snapshot
        .principal_for_key(&key_hash(&key))
        .cloned()
        .ok_or_else(|| {
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
        assert_eq!(
            virtual_key(Some("Bearer tg-abc"), None, None),
            Some("tg-abc")
        );
        assert_eq!(
            virtual_key(Some("bearer  tg-abc "), None, None),
            Some("tg-abc")
        );
        assert_eq!(virtual_key(None, Some("tg-k"), None), Some("tg-k"));
        assert_eq!(
            virtual_key(Some("Bearer sk-real"), Some("tg-k"), None),
            Some("tg-k")
        );
        assert_eq!(virtual_key(None, None, Some("tg-g")), Some("tg-g"));
        assert_eq!(virtual_key(Some("Bearer sk-real"), None, None), None);
        assert_eq!(virtual_key(Some("Basic tg-x"), None, None), None);
        assert_eq!(virtual_key(Some("Bearer tg-"), None, None), None);
        let mut read = Vec::new();
        let found = find_virtual_key(|h| {
            read.push(h);
            (h == "authorization").then(|| "Bearer tg-first".to_string())
        });
        assert_eq!(found.as_deref(), Some("tg-first"));
        assert_eq!(read, ["authorization"], "stops at the first key");
        assert_eq!(
            find_virtual_key(|h| (h == "x-goog-api-key").then(|| "tg-g".into())).as_deref(),
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
