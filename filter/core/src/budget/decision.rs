//! The admission decision: may this request spend its worst-case estimate against every
//! budget on its principal's chain?
//!
//! All-or-nothing (DESIGN.md, "Data flow" step 3): an `enforce` budget denies when
//! `spent + unsynced + reserved + estimate > limit`; landing exactly on the limit is allowed.
//! The request is denied if any enforce budget denies, and the reply names the binding budget:
//! the most specific scope that denies (key, then user, project, org), first in the given order
//! within a scope. `shadow` budgets, and every budget when the filter runs in global shadow
//! mode, never deny: they report a would-deny for the metrics instead. A crossed soft limit
//! allows the request with a warning.
//!
//! [`decide`] runs once per request, so it allocates nothing: budgets are borrowed, ids are
//! `&str` into the snapshot, and the soft-limit and would-deny lists are iterators recomputed
//! on demand. Money is checked arithmetic: a sum that overflows `Decimal` (only a corrupt
//! snapshot gets there) denies with [`DenyReason::Overflow`] instead of panicking.
//!
//! Tests: `cargo test -p tollgate-core --lib budget::decision`; bench:
//! `cargo bench -p tollgate-core --bench decision`.

use rust_decimal::Decimal;

use super::{Mode, Scope};

/// One budget on the chain as the filter sees it at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState<'a> {
    /// Budget id, borrowed from the snapshot.
    pub id: &'a str,
    /// The scope it applies to.
    pub scope: Scope,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Hard limit in USD for the current window.
    pub limit: Decimal,
    /// Soft limit in USD: crossing it allows the request with a warning.
    pub soft_limit: Option<Decimal>,
    /// Spend in the current window according to the snapshot (zero when the window reset
    /// after the snapshot was taken).
    pub spent: Decimal,
    /// Spend settled by this Envoy since the snapshot, not yet reflected in it.
    pub unsynced: Decimal,
    /// Worst-case estimates of requests in flight.
    pub reserved: Decimal,
    /// When the current window ends (`None` for a `total` budget).
    pub resets_at: Option<i64>,
}

impl<'a> BudgetState<'a> {
    /// A snapshot budget with the snapshot's `spent` in the window ending at `resets_at`, and
    /// nothing unsynced or reserved yet (the filter adds this Envoy's own from shared data).
    pub fn of(
        b: &'a crate::snapshot::SnapshotBudget,
        spent: Decimal,
        resets_at: Option<i64>,
    ) -> BudgetState<'a> {
        BudgetState {
            id: &b.id,
            scope: b.scope,
            mode: b.mode,
            limit: b.limit_usd,
            soft_limit: b.soft_limit_usd,
            spent,
            unsynced: Decimal::ZERO,
            reserved: Decimal::ZERO,
            resets_at,
        }
    }

    /// `spent + unsynced + reserved`, or `None` if the sum overflows.
    pub fn committed(&self) -> Option<Decimal> {
        self.spent
            .checked_add(self.unsynced)
            .and_then(|s| s.checked_add(self.reserved))
    }
}

/// Why a budget denies (or would deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// `spent + unsynced + reserved + estimate` is above the limit.
    OverLimit,
    /// The sum does not fit a `Decimal`: the snapshot or the local counters are corrupt, and a
    /// budget that cannot be checked does not admit spend.
    Overflow,
}

impl DenyReason {
    /// A stable label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::OverLimit => "over_limit",
            DenyReason::Overflow => "overflow",
        }
    }
}

/// A budget the request exceeds: what a `429` names, or what a would-deny reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation<'a> {
    /// Budget id.
    pub id: &'a str,
    /// Its scope.
    pub scope: Scope,
    /// Its own mode (a would-deny of an enforce budget comes from global shadow mode).
    pub mode: Mode,
    /// Its hard limit.
    pub limit: Decimal,
    /// `spent + unsynced + reserved` before this request (saturated on overflow).
    pub spent: Decimal,
    /// When its window ends (`None` for `total`).
    pub resets_at: Option<i64>,
    /// Over the limit, or unverifiable.
    pub reason: DenyReason,
}

/// The enforce budget with the least room left, before this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining<'a> {
    /// Budget id.
    pub id: &'a str,
    /// Its scope.
    pub scope: Scope,
    /// `limit - (spent + unsynced + reserved)` before this request, never below zero.
    pub remaining: Decimal,
    /// When its window ends (`None` for `total`).
    pub resets_at: Option<i64>,
}

/// The request is refused: reply `429` naming `binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deny<'a> {
    /// The denying budget with the most specific scope (first in chain order within it).
    pub binding: Violation<'a>,
    /// How many enforce budgets deny (at least one).
    pub denied_by: u32,
    /// How many shadow budgets would deny too.
    pub would_deny_count: u32,
}

/// The request may go upstream: reserve the estimate on every budget of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow<'a> {
    /// The enforce budget that binds and its room before this request, for the
    /// `x-tollgate-budget-remaining` header; `None` when no enforce budget is on the chain.
    pub remaining: Option<Remaining<'a>>,
    /// The most specific would-deny, if any: a shadow budget over its limit, or any budget
    /// over its limit under global shadow mode.
    pub would_deny: Option<Violation<'a>>,
    /// How many budgets would deny.
    pub would_deny_count: u32,
    /// How many enforce budgets cross their soft limit with this request.
    pub soft_count: u32,
    budgets: &'a [BudgetState<'a>],
    estimate: Decimal,
    global: Mode,
}

impl<'a> Allow<'a> {
    /// The enforce budgets whose soft limit this request crosses
    /// (`spent + unsynced + reserved + estimate > soft_limit`), in chain order. Shadow
    /// budgets are left out: they change nothing a client sees. Recomputed on each call, so
    /// the decision itself allocates nothing.
    pub fn soft_warnings(&self) -> impl Iterator<Item = &'a BudgetState<'a>> + 'a {
        let estimate = self.estimate;
        // Every admitted request asks; most cross no soft limit.
        let budgets = if self.soft_count == 0 {
            &[]
        } else {
            self.budgets
        };
        budgets.iter().filter(move |b| {
            b.mode == Mode::Enforce && b.soft_limit.is_some() && assess(b, estimate).soft_crossed
        })
    }

    /// Every budget that would deny, in chain order (see [`Allow::would_deny`]).
    pub fn would_denies(&self) -> impl Iterator<Item = Violation<'a>> + 'a {
        let (estimate, global) = (self.estimate, self.global);
        self.budgets.iter().filter_map(move |b| {
            let a = assess(b, estimate);
            let reason = a.deny?;
            is_shadowed(b, global).then(|| violation(b, a.committed, reason))
        })
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward the request.
    Allow(Allow<'a>),
    /// Refuse it with a local `429`.
    Deny(Deny<'a>),
}

impl Decision<'_> {
    /// Whether the request may go upstream.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decides one request with worst-case cost `estimate` against every budget on its chain.
///
/// `budgets` is the chain in order, key → user → project → org (any subset, several budgets
/// per scope allowed); the binding budget is chosen by scope first, so a different order only
/// changes ties within a scope. `global` is the filter's mode: [`Mode::Shadow`] turns every
/// deny into a would-deny. A negative estimate counts as zero. An empty chain allows.
pub fn decide<'a>(budgets: &'a [BudgetState<'a>], estimate: Decimal, global: Mode) -> Decision<'a> {
    let estimate = estimate.max(Decimal::ZERO);
    let mut deny: Option<Violation<'a>> = None;
    let mut denied_by = 0u32;
    let mut would_deny: Option<Violation<'a>> = None;
    let mut would_deny_count = 0u32;
    let mut remaining: Option<Remaining<'a>> = None;
    let mut soft_count = 0u32;

    for b in budgets {
        let a = assess(b, estimate);
        if let Some(reason) = a.deny {
            let v = violation(b, a.committed, reason);
            if is_shadowed(b, global) {
                would_deny_count = would_deny_count.saturating_add(1);
                keep_most_specific(&mut would_deny, v);
            } else {
                denied_by = denied_by.saturating_add(1);
                keep_most_specific(&mut deny, v);
            }
        }
        if b.mode != Mode::Enforce {
            continue;
        }
        if a.soft_crossed {
            soft_count = soft_count.saturating_add(1);
        }
        // Room before this request. When `committed` is below the limit the difference cannot
        // overflow unless `committed` is hugely negative, so saturating is only a guard.
        let room = b
            .limit
            .checked_sub(a.committed)
            .unwrap_or(Decimal::MAX)
            .max(Decimal::ZERO);
        let tighter = remaining.is_none_or(|r| {
            room < r.remaining
                || (room == r.remaining && b.scope.chain_rank() < r.scope.chain_rank())
        });
        if tighter {
            remaining = Some(Remaining {
                id: b.id,
                scope: b.scope,
                remaining: room,
                resets_at: b.resets_at,
            });
        }
    }

    match deny {
        Some(binding) => Decision::Deny(Deny {
            binding,
            denied_by,
            would_deny_count,
        }),
        None => Decision::Allow(Allow {
            remaining,
            would_deny,
            would_deny_count,
            soft_count,
            budgets,
            estimate,
            global,
        }),
    }
}

/// One budget checked against one estimate.
struct Assessment {
    /// `spent + unsynced + reserved`, saturated when it overflows.
    committed: Decimal,
    /// Why it denies, if it does (whatever its mode).
    deny: Option<DenyReason>,
    /// `committed + estimate > soft_limit`.
    soft_crossed: bool,
}

fn assess(b: &BudgetState<'_>, estimate: Decimal) -> Assessment {
    let Some(committed) = b.committed() else {
        return Assessment {
            committed: b
                .spent
                .saturating_add(b.unsynced)
                .saturating_add(b.reserved),
            deny: Some(DenyReason::Overflow),
            soft_crossed: false,
        };
    };
    let Some(after) = committed.checked_add(estimate) else {
        return Assessment {
            committed,
            deny: Some(DenyReason::Overflow),
            soft_crossed: false,
        };
    };
    Assessment {
        committed,
        deny: (after > b.limit).then_some(DenyReason::OverLimit),
        soft_crossed: b.soft_limit.is_some_and(|s| after > s),
    }
}

fn is_shadowed(b: &BudgetState<'_>, global: Mode) -> bool {
    b.mode == Mode::Shadow || global == Mode::Shadow
}

fn violation<'a>(b: &BudgetState<'a>, committed: Decimal, reason: DenyReason) -> Violation<'a> {
    Violation {
        id: b.id,
        scope: b.scope,
        mode: b.mode,
        limit: b.limit,
        spent: committed,
        resets_at: b.resets_at,
        reason,
    }
}

/// Keeps the violation with the most specific scope; the earlier one on a tie (chain order).
fn keep_most_specific<'a>(slot: &mut Option<Violation<'a>>, v: Violation<'a>) {
    if slot.is_none_or(|s| v.scope.chain_rank() < s.scope.chain_rank()) {
        *slot = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn budget(id: &'static str, scope: Scope, limit: &str, spent: &str) -> BudgetState<'static> {
        BudgetState {
            id,
            scope,
            mode: Mode::Enforce,
            limit: d(limit),
            soft_limit: None,
            spent: d(spent),
            unsynced: Decimal::ZERO,
            reserved: Decimal::ZERO,
            resets_at: Some(1_700_000_000),
        }
    }

    fn allow<'a>(dec: Decision<'a>) -> Allow<'a> {
        match dec {
            Decision::Allow(a) => a,
            Decision::Deny(d) => panic!("expected allow, got {d:?}"),
        }
    }

    fn deny<'a>(dec: Decision<'a>) -> Deny<'a> {
        match dec {
            Decision::Deny(d) => d,
            Decision::Allow(a) => panic!("expected deny, got {a:?}"),
        }
    }

    /// One budget, one estimate: the arithmetic of the rule, case by case.
    #[test]
    fn the_rule_table() {
        struct Case {
            name: &'static str,
            limit: &'static str,
            spent: &'static str,
            unsynced: &'static str,
            reserved: &'static str,
            estimate: &'static str,
            allowed: bool,
        }
        #[rustfmt::skip]
        let cases = [
            Case { name: "well under", limit: "10", spent: "1", unsynced: "0", reserved: "0", estimate: "1", allowed: true },
            Case { name: "exactly at limit", limit: "10", spent: "9", unsynced: "0", reserved: "0", estimate: "1", allowed: true },
            Case { name: "one cent over", limit: "10", spent: "9", unsynced: "0", reserved: "0", estimate: "1.01", allowed: false },
            Case { name: "tiny over", limit: "10", spent: "9.999999999", unsynced: "0", reserved: "0", estimate: "0.000000002", allowed: false },
            Case { name: "unsynced counts", limit: "10", spent: "5", unsynced: "4.5", reserved: "0", estimate: "0.51", allowed: false },
            Case { name: "reservations count", limit: "10", spent: "5", unsynced: "0", reserved: "4.5", estimate: "0.51", allowed: false },
            Case { name: "all three at limit", limit: "10", spent: "3", unsynced: "3", reserved: "3", estimate: "1", allowed: true },
            Case { name: "already over, zero estimate", limit: "10", spent: "10.01", unsynced: "0", reserved: "0", estimate: "0", allowed: false },
            Case { name: "at limit, zero estimate", limit: "10", spent: "10", unsynced: "0", reserved: "0", estimate: "0", allowed: true },
            Case { name: "zero limit, zero estimate", limit: "0", spent: "0", unsynced: "0", reserved: "0", estimate: "0", allowed: true },
            Case { name: "zero limit, any estimate", limit: "0", spent: "0", unsynced: "0", reserved: "0", estimate: "0.000001", allowed: false },
            Case { name: "negative estimate is zero", limit: "10", spent: "10", unsynced: "0", reserved: "0", estimate: "-5", allowed: true },
            Case { name: "credit in unsynced", limit: "10", spent: "12", unsynced: "-3", reserved: "0", estimate: "1", allowed: true },
        ];
        for c in cases {
            let b = [BudgetState {
                unsynced: d(c.unsynced),
                reserved: d(c.reserved),
                ..budget("b", Scope::Key, c.limit, c.spent)
            }];
            let dec = decide(&b, d(c.estimate), Mode::Enforce);
            assert_eq!(dec.is_allow(), c.allowed, "{}: {dec:?}", c.name);
        }
    }

    #[test]
    fn empty_chain_allows_with_no_remaining() {
        let a = allow(decide(&[], d("1000"), Mode::Enforce));
        assert_eq!(a.remaining, None);
        assert_eq!(a.would_deny, None);
        assert_eq!((a.would_deny_count, a.soft_count), (0, 0));
        assert_eq!(a.soft_warnings().count(), 0);
    }

    #[test]
    fn deny_names_the_most_specific_denying_budget() {
        let chain = [
            budget("key-d", Scope::Key, "100", "1"),
            budget("user-d", Scope::User, "5", "4.5"),
            budget("proj-d", Scope::Project, "100", "1"),
            budget("org-m", Scope::Org, "5", "4.9"),
        ];
        let dn = deny(decide(&chain, d("1"), Mode::Enforce));
        assert_eq!(dn.binding.id, "user-d");
        assert_eq!(dn.binding.scope, Scope::User);
        assert_eq!(dn.binding.limit, d("5"));
        assert_eq!(dn.binding.spent, d("4.5"));
        assert_eq!(dn.binding.resets_at, Some(1_700_000_000));
        assert_eq!(dn.binding.reason, DenyReason::OverLimit);
        assert_eq!(dn.denied_by, 2);

        // Given in another order, the scope still decides.
        let reversed = [chain[3], chain[2], chain[1], chain[0]];
        assert_eq!(
            deny(decide(&reversed, d("1"), Mode::Enforce)).binding.id,
            "user-d"
        );
    }

    #[test]
    fn several_budgets_per_scope() {
        // A daily and a monthly budget on the same key: the monthly one denies.
        let chain = [
            budget("key-daily", Scope::Key, "10", "2"),
            budget("key-monthly", Scope::Key, "100", "99.5"),
        ];
        let dn = deny(decide(&chain, d("1"), Mode::Enforce));
        assert_eq!(dn.binding.id, "key-monthly");
        // Both deny: the first in the given order is named.
        let chain = [
            budget("key-daily", Scope::Key, "10", "9.5"),
            budget("key-monthly", Scope::Key, "100", "99.5"),
        ];
        let dn = deny(decide(&chain, d("1"), Mode::Enforce));
        assert_eq!(dn.binding.id, "key-daily");
        assert_eq!(dn.denied_by, 2);
        // Both allow: the tighter one binds.
        let chain = [
            budget("key-daily", Scope::Key, "10", "2"),
            budget("key-monthly", Scope::Key, "100", "95"),
        ];
        let r = allow(decide(&chain, d("1"), Mode::Enforce))
            .remaining
            .unwrap();
        assert_eq!((r.id, r.remaining), ("key-monthly", d("5")));
    }

    #[test]
    fn remaining_is_the_least_room_before_the_request() {
        let chain = [
            BudgetState {
                reserved: d("1"),
                unsynced: d("0.5"),
                ..budget("key", Scope::Key, "10", "2")
            },
            budget("user", Scope::User, "20", "11"),
            budget("org", Scope::Org, "1000", "0"),
        ];
        let a = allow(decide(&chain, d("3"), Mode::Enforce));
        let r = a.remaining.unwrap();
        assert_eq!((r.id, r.scope, r.remaining), ("key", Scope::Key, d("6.5")));
        assert_eq!(r.resets_at, Some(1_700_000_000));

        // On a tie the most specific scope binds.
        let chain = [
            budget("org", Scope::Org, "10", "5"),
            budget("user", Scope::User, "7", "2"),
        ];
        let r = allow(decide(&chain, d("1"), Mode::Enforce))
            .remaining
            .unwrap();
        assert_eq!(r.id, "user");
    }

    #[test]
    fn remaining_clamps_at_zero_and_ignores_shadow_budgets() {
        let chain = [
            BudgetState {
                mode: Mode::Shadow,
                ..budget("shadow", Scope::Key, "1", "0.9")
            },
            budget("user", Scope::User, "10", "10"),
        ];
        let a = allow(decide(&chain, d("0"), Mode::Enforce));
        let r = a.remaining.unwrap();
        assert_eq!((r.id, r.remaining), ("user", d("0")));
        // A budget already over its limit, in global shadow: remaining is zero, not negative.
        let chain = [budget("key", Scope::Key, "10", "12")];
        let a = allow(decide(&chain, d("1"), Mode::Shadow));
        assert_eq!(a.remaining.unwrap().remaining, d("0"));
    }

    #[test]
    fn shadow_budgets_never_deny_but_report() {
        let chain = [
            BudgetState {
                mode: Mode::Shadow,
                ..budget("key-trial", Scope::Key, "1", "1")
            },
            budget("user", Scope::User, "100", "1"),
            BudgetState {
                mode: Mode::Shadow,
                ..budget("org-trial", Scope::Org, "1", "5")
            },
        ];
        let a = allow(decide(&chain, d("0.5"), Mode::Enforce));
        let w = a.would_deny.unwrap();
        assert_eq!(
            (w.id, w.mode, w.reason),
            ("key-trial", Mode::Shadow, DenyReason::OverLimit)
        );
        assert_eq!(a.would_deny_count, 2);
        let ids: Vec<_> = a.would_denies().map(|v| v.id).collect();
        assert_eq!(ids, ["key-trial", "org-trial"]);
        assert_eq!(a.remaining.unwrap().id, "user");
    }

    #[test]
    fn shadow_would_denies_are_counted_on_a_deny_too() {
        let chain = [
            BudgetState {
                mode: Mode::Shadow,
                ..budget("key-trial", Scope::Key, "1", "1")
            },
            budget("user", Scope::User, "1", "1"),
        ];
        let dn = deny(decide(&chain, d("0.5"), Mode::Enforce));
        assert_eq!(dn.binding.id, "user");
        assert_eq!((dn.denied_by, dn.would_deny_count), (1, 1));
    }

    #[test]
    fn global_shadow_turns_every_deny_into_a_would_deny() {
        let chain = [
            budget("key", Scope::Key, "100", "1"),
            budget("project", Scope::Project, "1", "1"),
            budget("org", Scope::Org, "1", "1"),
        ];
        assert!(!decide(&chain, d("0.5"), Mode::Enforce).is_allow());
        let a = allow(decide(&chain, d("0.5"), Mode::Shadow));
        let w = a.would_deny.unwrap();
        assert_eq!((w.id, w.mode), ("project", Mode::Enforce));
        assert_eq!(a.would_deny_count, 2);
        assert_eq!(a.would_denies().count(), 2);
    }

    #[test]
    fn soft_limit_crossed_warns_and_allows() {
        let chain = [
            BudgetState {
                soft_limit: Some(d("8")),
                ..budget("key", Scope::Key, "10", "7")
            },
            BudgetState {
                soft_limit: Some(d("80")),
                ..budget("user", Scope::User, "100", "7")
            },
            BudgetState {
                soft_limit: Some(d("7.5")),
                ..budget("org", Scope::Org, "10", "7")
            },
            BudgetState {
                soft_limit: Some(d("1")),
                mode: Mode::Shadow,
                ..budget("org-trial", Scope::Org, "10", "7")
            },
        ];
        // 7 + 1 = 8 is not above the soft limit of 8; it is above 7.5.
        let a = allow(decide(&chain, d("1"), Mode::Enforce));
        assert_eq!(a.soft_count, 1);
        let ids: Vec<_> = a.soft_warnings().map(|b| b.id).collect();
        assert_eq!(ids, ["org"]);
        // A cent more crosses the key's soft limit too.
        let a = allow(decide(&chain, d("1.01"), Mode::Enforce));
        let ids: Vec<_> = a.soft_warnings().map(|b| b.id).collect();
        assert_eq!(ids, ["key", "org"]);
        assert_eq!(a.soft_count, 2);
    }

    #[test]
    fn overflow_denies_with_a_typed_reason() {
        let chain = [
            budget("key", Scope::Key, "10", "0"),
            BudgetState {
                unsynced: Decimal::MAX,
                ..budget("user", Scope::User, "10", "1")
            },
        ];
        let dn = deny(decide(&chain, d("0"), Mode::Enforce));
        assert_eq!(dn.binding.id, "user");
        assert_eq!(dn.binding.reason, DenyReason::Overflow);
        assert_eq!(dn.binding.spent, Decimal::MAX);

        // The estimate itself overflowing the sum.
        let chain = [budget("key", Scope::Key, "10", "1")];
        let dn = deny(decide(&chain, Decimal::MAX, Mode::Enforce));
        assert_eq!(dn.binding.reason, DenyReason::Overflow);

        // Global shadow: reported, not denied.
        let chain = [BudgetState {
            reserved: Decimal::MAX,
            ..budget("key", Scope::Key, "10", "1")
        }];
        let a = allow(decide(&chain, d("0"), Mode::Shadow));
        assert_eq!(a.would_deny.unwrap().reason, DenyReason::Overflow);

        // Extreme but representable values never panic.
        let chain = [BudgetState {
            limit: Decimal::MAX,
            soft_limit: Some(Decimal::MIN),
            ..budget("key", Scope::Key, "0", "0")
        }];
        let _ = decide(&chain, Decimal::MAX, Mode::Enforce);
        let chain = [BudgetState {
            limit: Decimal::MAX,
            spent: Decimal::MIN,
            ..budget("key", Scope::Key, "0", "0")
        }];
        let a = allow(decide(&chain, d("1"), Mode::Enforce));
        assert_eq!(a.remaining.unwrap().remaining, Decimal::MAX);
    }

    #[test]
    fn labels() {
        assert_eq!(DenyReason::OverLimit.as_str(), "over_limit");
        assert_eq!(DenyReason::Overflow.as_str(), "overflow");
    }
}
