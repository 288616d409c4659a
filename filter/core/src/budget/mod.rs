//! Budgets: who a budget applies to ([`Scope`]), when it resets ([`Period`], [`window`]) and
//! whether a request may spend against it ([`decide`]).
//!
//! - [`calendar`]: civil-date arithmetic (core has no chrono).
//! - [`window`]: calendar windows in an IANA zone behind the [`TimeZone`] trait, and the
//!   precomputed [`WindowBounds`] the snapshot carries so the filter needs no tz database.
//! - [`decision`]: the all-or-nothing check of one request against every budget on its
//!   principal's chain (key → user → project → org).
//!
//! Run the tests with `cargo test -p tollgate-core --lib budget` and
//! `cargo test -p tollgate-core --test budget_windows`; the decision bench with
//! `cargo bench -p tollgate-core --bench decision`.

pub mod calendar;
pub mod decision;
pub mod window;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use decision::{decide, Allow, BudgetState, Decision, Deny, DenyReason, Remaining, Violation};
pub use window::{
    window, window_at, FixedOffset, TimeZone, Window, WindowBounds, WindowBoundsError,
};

/// Who a budget applies to. A request is checked against every scope of its principal's
/// chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// An organisation: every project in it.
    Org,
    /// A project: every user and key in it.
    Project,
    /// One user: every key they hold.
    User,
    /// One virtual key.
    Key,
}

impl Scope {
    /// Position in the chain, most specific first: key 0, user 1, project 2, org 3. A deny
    /// names the most specific budget that denies, the one its owner can act on soonest.
    pub const fn chain_rank(self) -> u8 {
        match self {
            Scope::Key => 0,
            Scope::User => 1,
            Scope::Project => 2,
            Scope::Org => 3,
        }
    }

    /// The snake_case name, as in JSON and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::Project => "project",
            Scope::User => "user",
            Scope::Key => "key",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a budget resets: calendar periods in the budget's timezone, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Local midnight to the next local midnight.
    Daily,
    /// Monday 00:00 local to the next Monday 00:00 local.
    Weekly,
    /// The 1st 00:00 local to the next 1st 00:00 local.
    Monthly,
    /// Never resets.
    Total,
}

impl Period {
    /// The snake_case name, as in JSON and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a budget denies requests or only reports that it would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny requests that would exceed the limit.
    #[default]
    Enforce,
    /// Decide and count, never deny: for trying a budget out before enforcing it.
    Shadow,
}

impl Mode {
    /// The snake_case name, as in JSON and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_snake_case() {
        for (s, json) in [
            (Scope::Org, "\"org\""),
            (Scope::Project, "\"project\""),
            (Scope::User, "\"user\""),
            (Scope::Key, "\"key\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
            assert_eq!(serde_json::from_str::<Scope>(json).unwrap(), s);
            assert_eq!(format!("\"{s}\""), json);
        }
        for (p, json) in [
            (Period::Daily, "\"daily\""),
            (Period::Weekly, "\"weekly\""),
            (Period::Monthly, "\"monthly\""),
            (Period::Total, "\"total\""),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), json);
            assert_eq!(serde_json::from_str::<Period>(json).unwrap(), p);
            assert_eq!(format!("\"{p}\""), json);
        }
        for (m, json) in [(Mode::Enforce, "\"enforce\""), (Mode::Shadow, "\"shadow\"")] {
            assert_eq!(serde_json::to_string(&m).unwrap(), json);
            assert_eq!(serde_json::from_str::<Mode>(json).unwrap(), m);
            assert_eq!(format!("\"{m}\""), json);
        }
        assert!(serde_json::from_str::<Period>("\"yearly\"").is_err());
    }

    #[test]
    fn chain_rank_is_most_specific_first() {
        let mut scopes = [Scope::Org, Scope::Key, Scope::Project, Scope::User];
        scopes.sort_by_key(|s| s.chain_rank());
        assert_eq!(
            scopes,
            [Scope::Key, Scope::User, Scope::Project, Scope::Org]
        );
    }
}
