//! Helpers shared by the integration tests: usage events, a fixed instant, app state.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use rust_decimal::Decimal;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::http::auth::Tokens;
use tollgate_control_plane::http::AppState;
use tollgate_control_plane::store::Store;
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::{Charge, UsageEvent};
use tollgate_core::identity::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::Usage;

/// 2024-03-15 12:00:00 UTC, a Friday.
pub const NOW: i64 = 1_710_504_000;
/// 2024-03-15 00:00:00 UTC.
pub const TODAY: i64 = 1_710_460_800;
pub const DAY: i64 = 86_400;

pub const ADMIN: &str = "admin-token-for-tests-0123";
pub const DATAPLANE: &str = "dataplane-token-for-tests-0123";

pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn principal(
    org: &str,
    project: Option<&str>,
    user: Option<&str>,
    key: Option<&str>,
) -> Principal {
    Principal {
        key: key.map(str::to_string),
        user: user.map(str::to_string),
        project: project.map(str::to_string),
        org: org.into(),
    }
}

/// An event costing `usd` (as an actual charge: 1 input token × usd, so buckets add up).
pub fn event(id: &str, reporter: &str, seq: u64, ts: i64, p: &Principal, usd: &str) -> UsageEvent {
    let total = d(usd);
    UsageEvent {
        id: id.into(),
        reporter: reporter.into(),
        seq,
        ts,
        principal: p.clone(),
        model: "gpt-4o".into(),
        api: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 1000,
            output: 10,
            ..Usage::default()
        },
        cost: CostBreakdown {
            input: total,
            total,
            ..CostBreakdown::default()
        },
        price_version: 1,
        charge: Charge::Actual,
        uncharged: None,
        status: 200,
        stream: false,
        requested_model: None,
    }
}

pub fn tokens() -> Tokens {
    Tokens::new(ADMIN, DATAPLANE).unwrap()
}

/// App state over `store` with a clock fixed at `NOW`, first snapshot built.
pub async fn state(store: Store) -> (AppState, Clock) {
    let clock = Clock::fixed(NOW);
    let state = AppState::new(store, tokens(), clock.clone());
    state.snapshots.rebuild().await.unwrap();
    (state, clock)
}
