//! Alerts: webhook subscriptions that warn budget owners before the wall (issue 16 part 3).
//!
//! - [`webhooks`]: the subscriptions (URL, signing secret, which budgets or scopes, which events
//!   and thresholds, payload format), audited like every management change.
//! - [`evaluate`]: which events a change of a budget's window spend fires (pure).
//! - [`outbox`]: the events, recorded once per (subject, window, kind) in the transaction that
//!   caused them (ingestion's, for spend), with one delivery per matching subscription; and
//!   the sweep for what no write causes (a window reset, a stale reporter, a new price book).
//! - [`deliveries`]: the delivery log: claimed under a lease, retried with backoff.
//! - [`payload`], [`signature`]: what is sent and how it is signed.
//! - [`targets`]: where it may be sent (public addresses and the ranges an operator allows).
//! - [`dispatch`]: the task that sends: woken by ingestion right after a commit that fired an
//!   alert, and polling (retries, rows written by other replicas, the sweep).
//!
//! Tests: `cargo test -p tollgate-control-plane --test alerts` (both backends, a real local
//! receiver) and `--lib alerts`.

pub mod deliveries;
pub mod dispatch;
pub mod evaluate;
pub mod outbox;
pub mod payload;
pub mod signature;
pub mod targets;
pub mod webhooks;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an alert is about. The wire name ([`EventKind::as_str`]) is the `kind` of the event
/// row and the `event` of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// The window's spend reached this percentage of the hard limit.
    Threshold(u32),
    /// The window's spend reached the soft limit.
    SoftLimit,
    /// The budget refused its first request in a window (the filter's denial records; see
    /// [`evaluate::crossings`] for why not spend).
    HardLimit,
    /// A budget's new window began.
    WindowReset,
    /// A price revision was written.
    PriceBookChanged,
    /// A reporter (an Envoy) sent nothing for longer than the configured time.
    FleetStale,
}

impl EventKind {
    /// The stored and sent name: `threshold_80`, `soft_limit`, `hard_limit`, `window_reset`,
    /// `price_book_changed`, `fleet_stale`.
    pub fn as_str(self) -> String {
        match self {
            EventKind::Threshold(p) => format!("threshold_{p}"),
            other => other.class().as_str().to_string(),
        }
    }

    /// The class a subscription names in its `events`.
    pub fn class(self) -> EventClass {
        match self {
            EventKind::Threshold(_) => EventClass::Threshold,
            EventKind::SoftLimit => EventClass::SoftLimit,
            EventKind::HardLimit => EventClass::HardLimit,
            EventKind::WindowReset => EventClass::WindowReset,
            EventKind::PriceBookChanged => EventClass::PriceBookChanged,
            EventKind::FleetStale => EventClass::FleetStale,
        }
    }
}

/// The events a subscription asks for (a threshold event is one per configured threshold).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Each configured utilization threshold crossed.
    Threshold,
    /// The soft limit crossed.
    SoftLimit,
    /// The hard limit reached.
    HardLimit,
    /// A new window began.
    WindowReset,
    /// The price book changed.
    PriceBookChanged,
    /// A reporter went quiet (subscriptions of no organisation only: the fleet is nobody's).
    FleetStale,
}

impl EventClass {
    /// Every class: what a subscription gets when it names none.
    pub const ALL: [EventClass; 6] = [
        EventClass::Threshold,
        EventClass::SoftLimit,
        EventClass::HardLimit,
        EventClass::WindowReset,
        EventClass::PriceBookChanged,
        EventClass::FleetStale,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Threshold => "threshold",
            EventClass::SoftLimit => "soft_limit",
            EventClass::HardLimit => "hard_limit",
            EventClass::WindowReset => "window_reset",
            EventClass::PriceBookChanged => "price_book_changed",
            EventClass::FleetStale => "fleet_stale",
        }
    }

    /// Whether events of this class are about one budget.
    pub fn is_budget(self) -> bool {
        matches!(
            self,
            EventClass::Threshold
                | EventClass::SoftLimit
                | EventClass::HardLimit
                | EventClass::WindowReset
        )
    }
}

/// The body a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Tollgate's JSON event (see `payload.rs`).
    #[default]
    Tollgate,
    /// A Slack incoming-webhook message: `{"text": …, "blocks": […]}`.
    Slack,
}

impl Format {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Tollgate => "tollgate",
            Format::Slack => "slack",
        }
    }
}

/// The utilization thresholds of a subscription that names none, percent of the hard limit.
pub const DEFAULT_THRESHOLDS: [u32; 4] = [50, 80, 95, 100];

/// How deliveries are sent and retried, and when a reporter counts as stale (`tollgate serve`
/// flags `--alert-…`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The slow poll: retries due, deliveries other replicas recorded, the sweep.
    pub poll: Duration,
    /// First retry after this long; each next one after twice as long.
    pub backoff_base: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// A delivery still failing this long after its event is marked `failed`.
    pub give_up_after: Duration,
    /// A claimed delivery is another replica's to retry after this long (longer than
    /// `timeout`, so a live sender always finishes first).
    pub lease: Duration,
    /// Whole-request timeout of one attempt.
    pub timeout: Duration,
    /// A reporter that sent nothing for this long fires `fleet_stale`.
    pub stale_after: Duration,
    /// Deliveries sent at once by one replica.
    pub concurrency: usize,
    /// Non-public address ranges deliveries may reach (`targets.rs`); none by default.
    pub allow_targets: Vec<ipnet::IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll: Duration::from_secs(2),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            stale_after: Duration::from_secs(300),
            concurrency: 8,
            allow_targets: Vec::new(),
        }
    }
}

/// Now, Unix milliseconds, from the system clock: delivery scheduling follows real time even
/// when a test fixes the app's clock (which dates events and windows).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
