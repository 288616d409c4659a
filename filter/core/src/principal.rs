//! Who a request is charged to: the chain key → user → project → org.
//!
//! The filter resolves a virtual key (through the snapshot) or a trusted principal header to a
//! [`Principal`]; budgets attach to any link of the chain.

use serde::{Deserialize, Serialize};

use crate::budget::Scope;

/// The chain a request is charged to. Only `org` is required; a request made with a bare
/// trusted principal header may name only some links.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
