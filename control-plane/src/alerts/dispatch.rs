//! The dispatcher: one task per control plane (`tollgate serve` starts it). It waits for
//! ingestion's wake-up (sent right after a commit that recorded an alert: the alert leaves
//! within milliseconds of the batch) or for the next retry due, at most one slow poll
//! (`--alert-poll-ms`), which also picks up deliveries recorded by other replicas and runs the
//! sweep (window resets, stale reporters, a new price book).
//!
//! Each pass claims due deliveries under a lease, sends them at once (bounded), and records
//! each outcome: a 2xx delivers; anything else is retried after `base · 2^(attempts-1)`,
//! capped at `backoff_max`, until `give_up_after` has passed since the event, then `failed`.
//! The HTTP client has a whole-request timeout and follows a redirect only to the same host
//! (a subscription cannot be bounced to a host nobody configured), and connects only to the
//! addresses `targets.rs` permits (public ones and the ranges the operator allows). Logs name the subscription
//! and the URL's host, never its path or query (a Slack hook's path is its credential) nor the
//! secret; an error is logged and stored without its URL.

use std::time::Duration;

use std::sync::Arc;

use reqwest::redirect::Policy;

use super::deliveries::{Claimed, Outcome};
use super::payload::{render, Ids};
use super::targets::{GuardedResolver, Targets};
use super::{now_ms, signature, Config};
use crate::clock::Clock;
use crate::keys::random_base62;
use crate::store::{Store, StoreError};

/// Most rounds of claiming in one pass (each up to `concurrency` deliveries): bounds a pass;
/// what is left is due at once and taken by the next.
const MAX_ROUNDS: usize = 100;

/// Sends alert deliveries (see the module doc).
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Store,
    clock: Clock,
    config: Config,
    client: reqwest::Client,
    targets: Arc<Targets>,
}

/// Budgets and subscriptions are read again for window resets at least this often even when
/// no watched window ends sooner (a new budget or subscription may watch one that does).
const WINDOW_RECHECK: Duration = Duration::from_secs(60);

/// What the sweep has seen.
#[derive(Debug, Clone, Copy)]
struct Swept {
    /// The app clock at the last sweep.
    at: i64,
    /// The price-book version then.
    prices_version: Option<i64>,
    /// The app clock at the last window-reset check.
    windows_at: i64,
    /// The earliest end of a watched window then.
    next_boundary: Option<i64>,
    /// When that check ran.
    windows_checked: Option<tokio::time::Instant>,
}

impl Dispatcher {
    /// A dispatcher over `store`; `clock` dates events and windows (the app's clock).
    pub fn new(store: Store, clock: Clock, config: Config) -> Result<Dispatcher, reqwest::Error> {
        let targets = Arc::new(Targets::new(config.allow_targets.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(targets.clone())))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(Policy::custom(|attempt| {
                let same_host = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.host_str() == attempt.url().host_str());
                if same_host && attempt.previous().len() < 3 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .user_agent(concat!("tollgate-alerts/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            store,
            clock,
            config,
            client,
            targets,
        })
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let poll = self.config.poll.max(Duration::from_millis(10));
        let start = self.clock.now() - i64::try_from(poll.as_secs()).unwrap_or(0);
        let mut swept = Swept {
            at: start,
            prices_version: self.store.meta().await.ok().map(|m| m.prices_version),
            windows_at: start,
            next_boundary: None,
            windows_checked: None,
        };
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if last_sweep.elapsed() >= poll {
                last_sweep = tokio::time::Instant::now();
                swept = self.sweep(swept).await;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "alert deliveries: a pass failed");
            }
            let wait = match self.store.next_delivery_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis(u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0))
                }
                _ => poll,
            }
            .min(poll.saturating_sub(last_sweep.elapsed()));
            tokio::select! {
                () = self.store.alert_wake().notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Records what no write causes: windows that began, reporters that went quiet, a new
    /// price book. Failures are logged; the next sweep covers the same span again.
    async fn sweep(&self, last: Swept) -> Swept {
        let now = self.clock.now();
        let mut fired = false;
        let mut ok = true;
        let mut next = last;
        // Windows only begin at a boundary: between two, reading every budget is for nothing.
        let recheck = last.next_boundary.is_some_and(|b| now >= b)
            || last
                .windows_checked
                .is_none_or(|t| t.elapsed() >= WINDOW_RECHECK);
        if recheck {
            match self.store.record_window_resets(last.windows_at, now).await {
                Ok(w) => {
                    fired |= w.fired;
                    next.windows_at = now;
                    next.next_boundary = w.next_boundary;
                    next.windows_checked = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "alerts: window reset sweep failed"),
            }
        }
        let stale = self.config.stale_after.as_secs();
        match self.store.record_stale_reporters(last.at, now, stale).await {
            Ok(f) => fired |= f,
            Err(e) => {
                ok = false;
                tracing::warn!(error = %e, "alerts: stale reporter sweep failed");
            }
        }
        let mut prices_version = last.prices_version;
        if let Ok(meta) = self.store.meta().await {
            if last
                .prices_version
                .is_some_and(|v| v != meta.prices_version)
            {
                match self
                    .store
                    .record_price_book_change(meta.prices_version, now)
                    .await
                {
                    Ok(f) => {
                        fired |= f;
                        prices_version = Some(meta.prices_version);
                    }
                    Err(e) => tracing::warn!(error = %e, "alerts: price book sweep failed"),
                }
            } else {
                prices_version = Some(meta.prices_version);
            }
        }
        if fired {
            self.store.wake_alerts();
        }
        Swept {
            at: if ok { now } else { last.at },
            prices_version,
            ..next
        }
    }

    /// Sends every delivery due now; returns how many attempts were made.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let token =
            random_base62(24).map_err(|e| StoreError::Corrupt(format!("lease token: {e}")))?;
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let batch = u32::try_from(self.config.concurrency.max(1)).unwrap_or(8);
        let mut sent = 0;
        for _ in 0..MAX_ROUNDS {
            let claimed = self
                .store
                .claim_deliveries(&token, now_ms(), lease_ms, batch)
                .await?;
            if claimed.is_empty() {
                break;
            }
            sent += claimed.len();
            let results = futures_util::future::join_all(
                claimed.into_iter().map(|c| self.attempt(c, &token)),
            )
            .await;
            for r in results {
                r?;
            }
        }
        Ok(sent)
    }

    /// One attempt at one delivery, its outcome recorded.
    async fn attempt(&self, c: Claimed, token: &str) -> Result<(), StoreError> {
        let host = reqwest::Url::parse(&c.webhook.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = match self.send(&c).await {
            Ok(code) => {
                tracing::info!(
                    webhook = %c.webhook.id, delivery = c.id, event = c.event_id, %host,
                    status = code, attempts = c.attempts, "alert delivered"
                );
                Outcome::Delivered(code)
            }
            Err((status, error)) => {
                let now = now_ms();
                let give_up =
                    i64::try_from(self.config.give_up_after.as_millis()).unwrap_or(i64::MAX);
                let outcome = if now.saturating_sub(c.created_ms) >= give_up {
                    Outcome::Failed {
                        status,
                        error: error.clone(),
                    }
                } else {
                    Outcome::Retry {
                        status,
                        error: error.clone(),
                        next_attempt_ms: now.saturating_add(backoff_ms(&self.config, c.attempts)),
                    }
                };
                tracing::warn!(
                    webhook = %c.webhook.id, delivery = c.id, %host, status, %error,
                    attempts = c.attempts, gave_up = matches!(outcome, Outcome::Failed { .. }),
                    "alert delivery failed"
                );
                outcome
            }
        };
        self.store
            .finish_delivery(c.id, token, &outcome, now_ms())
            .await
    }

    /// POSTs the delivery: its HTTP status on a 2xx, else the status (if any) and the error.
    async fn send(&self, c: &Claimed) -> Result<u16, (Option<u16>, String)> {
        let url = reqwest::Url::parse(&c.webhook.url).map_err(|e| (None, format!("url: {e}")))?;
        self.targets.check_url(&url).map_err(|why| (None, why))?;
        let payload: serde_json::Value =
            serde_json::from_str(&c.payload).map_err(|e| (None, format!("stored payload: {e}")))?;
        let ids = Ids {
            event_id: c.event_id,
            delivery_id: c.id,
            webhook_id: &c.webhook.id,
        };
        let body = serde_json::to_vec(&render(c.webhook.format, &payload, ids))
            .map_err(|e| (None, format!("body: {e}")))?;
        // The receiver checks `t` against its own clock: the system's, not the app's.
        let t = crate::store::unix_now();
        let kind = payload
            .get("event")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let answer = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signature::sign(&c.secret, t, &body))
            .header("tollgate-event", kind)
            .header("tollgate-delivery", c.id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| (None, describe(e)))?;
        let status = answer.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err((Some(status.as_u16()), format!("HTTP {status}")))
        }
    }
}

/// The wait after the `attempts`-th failed attempt: `base · 2^(attempts-1)`, at most
/// `backoff_max`.
pub fn backoff_ms(config: &Config, attempts: i64) -> i64 {
    let base = i64::try_from(config.backoff_base.as_millis()).unwrap_or(i64::MAX);
    let max = i64::try_from(config.backoff_max.as_millis()).unwrap_or(i64::MAX);
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
    base.saturating_mul(2_i64.saturating_pow(doublings))
        .min(max)
}

/// A send error with its causes (`connection refused`, `timed out`), without the URL.
fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_up_to_max() {
        let config = Config {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            ..Config::default()
        };
        let waits: Vec<i64> = (1..=12).map(|n| backoff_ms(&config, n)).collect();
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
                600_000, 600_000
            ]
        );
        assert_eq!(backoff_ms(&config, 0), 1_000);
        assert_eq!(backoff_ms(&config, i64::MAX), 600_000);
    }
}
