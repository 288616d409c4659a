//! The sync service role: the singleton `envoy.bootstrap.wasm` service of one Envoy.
//!
//! Every `sync_interval` it drains the usage queue, `GET`s what changed in the snapshot since
//! the version it holds (a delta: `If-None-Match` names that version, see
//! `tollgate_core::snapshot::sections`), publishes the sections that moved to shared data (the
//! sections, then the manifest naming the version, so workers never see a version without its
//! sections), acknowledges the local spend the snapshot now includes, and posts the next usage
//! batch. Before its first post it enrolls as a reporter (`POST /v1/reporters`, the
//! path next to `usage_path`), and then puts the reporter secret it got in each usage batch's
//! body and names its reporter on snapshot polls; the data-plane token on every call is the
//! control-plane cluster's to inject (see `tollgate_core::sync_protocol` on reporter identity). The decisions live in
//! `tollgate_core::sync_protocol`; this is the I/O around them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use tollgate_core::config::Config;
use tollgate_core::local_spend::budget_key;
use tollgate_core::snapshot::sections::{Changed, Held, DELTA_MEDIA_TYPE};
use tollgate_core::sync_protocol::{
    QueuedUsage, SyncCall, SyncState, BUDGETS_KEY, FRESH_KEY, KEYS_PREFIX, PRICES_KEY,
    PUBLISHED_KEY, QUEUE_NAME, SPEND_KEY, VERSION_KEY,
};

use crate::gauges::SyncGauges;
use crate::host;

/// What an outstanding call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Snapshot,
    Usage,
    Enroll,
}

/// The sync service.
pub struct SyncService {
    config: Config,
    state: SyncState,
    queue: u32,
    /// Outstanding calls: what for, and the credential generation they were sent with
    /// (`None`: the data-plane token).
    calls: HashMap<u32, (CallKind, Option<u32>)>,
    /// `POST` path of enrollment: `usage_path` with its last segment `reporters`.
    enroll_path: String,
    gauges: SyncGauges,
    /// The snapshot held, by sections (deltas apply to it).
    held: Held,
    /// Budgets whose local state exists in shared data.
    known_budgets: HashSet<String>,
    /// When the control plane last confirmed the snapshot held (Unix seconds).
    fresh_at: Option<i64>,
}

impl SyncService {
    /// Registers the usage queue and starts the timer; `None` (plugin refused) when the queue
    /// cannot be registered.
    pub fn start(config: Config) -> Option<SyncService> {
        let Ok(queue) = hostcalls::register_shared_queue(QUEUE_NAME) else {
            host::log(
                LogLevel::Critical,
                "tollgate: sync: cannot register the usage queue",
            );
            return None;
        };
        // Unique per service instance, so a restarted service never reuses event ids.
        let node = hostcalls::get_property(vec!["node", "id"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .unwrap_or_else(|| "envoy".to_string());
        let state = SyncState::new(
            node,
            config.limits.max_queue_events,
            config.control_plane.batch_max_events,
        );
        let _ = hostcalls::set_tick_period(Duration::from_millis(
            config.control_plane.sync_interval_ms,
        ));
        host::log(
            LogLevel::Info,
            "tollgate: sync service started; enrolling as a reporter",
        );
        let usage_path = config.control_plane.usage_path.as_str();
        let enroll_path = match usage_path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/reporters"),
            None => "/v1/reporters".to_string(),
        };
        Some(SyncService {
            enroll_path,
            config,
            state,
            queue,
            calls: HashMap::new(),
            gauges: SyncGauges::define(),
            held: Held::default(),
            known_budgets: HashSet::new(),
            fresh_at: None,
        })
    }

    /// Moves every queued usage item into the pending batch.
    pub fn drain_queue(&mut self) {
        // Bounded: at most twice the queue limit per call, so a flood cannot stall the tick.
        for _ in 0..self.config.limits.max_queue_events.saturating_mul(2) {
            let Ok(Some(item)) = hostcalls::dequeue_shared_queue(self.queue) else {
                return;
            };
            let (records, error) = QueuedUsage::decode_all(&item);
            for u in records {
                self.state.push(u);
            }
            if let Some(e) = error {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: sync: unreadable rest of a queue item dropped: {e}"),
                );
            }
        }
    }

    /// Timer: drain, then make the calls the state asks for.
    pub fn on_tick(&mut self) {
        self.drain_queue();
        let now_ms = host::now_ms();
        for call in self.state.on_tick(now_ms) {
            self.dispatch(call, now_ms);
        }
        // The age is since the control plane last confirmed the snapshot (a 200 or a 304), as
        // the workers' stale_policy counts it: an idle fleet's snapshot is old but current.
        // Before the first snapshot there is no age to speak of: report 0 with version 0.
        let m = &self.held.manifest;
        let (version, age) = match (m.version, self.fresh_at) {
            (0, _) | (_, None) => (m.version, 0),
            (v, Some(at)) => (v, host::now_s().saturating_sub(at).max(0)),
        };
        self.gauges.record(
            version,
            u64::try_from(age).unwrap_or(0),
            self.state.reporter().is_some(),
            self.state.stats(),
        );
    }

    fn dispatch(&mut self, call: SyncCall, now_ms: u64) {
        let cp = &self.config.control_plane;
        // Every call carries the data-plane token: none here when the control-plane cluster
        // injects it after routing (`token_injected`, shipped), so no header this VM sets holds
        // a secret (Envoy's router prints them at debug). The reporter secret travels in the
        // usage batch's body; a snapshot poll names the reporter (not secret) for its own
        // acknowledgement.
        let token = cp.token.expose();
        let bearer = (!token.is_empty()).then(|| format!("Bearer {token}"));
        let (secret, generation) = self.state.credential();
        let generation = match &call {
            SyncCall::PostUsage { .. } if secret.is_some() => Some(generation),
            _ => None,
        };
        let reporter = match &call {
            SyncCall::FetchSnapshot { .. } => self.state.reporter(),
            _ => None,
        };
        let (kind, path, body, etag) = match &call {
            SyncCall::Enroll { body } => (
                CallKind::Enroll,
                self.enroll_path.as_str(),
                Some(body.as_slice()),
                None,
            ),
            SyncCall::FetchSnapshot { if_none_match } => (
                CallKind::Snapshot,
                cp.snapshot_path.as_str(),
                None,
                if_none_match.as_deref(),
            ),
            SyncCall::PostUsage { body, .. } => (
                CallKind::Usage,
                cp.usage_path.as_str(),
                Some(body.as_slice()),
                None,
            ),
        };
        let mut headers = vec![
            (":method", if body.is_some() { "POST" } else { "GET" }),
            (":path", path),
            (":authority", cp.authority.as_str()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        if let Some(reporter) = reporter {
            headers.push(("x-tollgate-reporter", reporter));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(tag) = etag {
            headers.push(("if-none-match", tag));
        }
        if kind == CallKind::Snapshot {
            headers.push(("accept", DELTA_MEDIA_TYPE));
        }
        let timeout = Duration::from_millis(cp.timeout_ms);
        match hostcalls::dispatch_http_call(&cp.cluster, headers, body, vec![], timeout) {
            Ok(token) => {
                self.calls.insert(token, (kind, generation));
            }
            Err(status) => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "tollgate: sync: call to cluster {:?} refused: {status:?}",
                        cp.cluster
                    ),
                );
                self.failed(kind, now_ms);
            }
        }
    }

    fn failed(&mut self, kind: CallKind, now_ms: u64) {
        match kind {
            CallKind::Snapshot => self.state.snapshot_failed(),
            CallKind::Usage => self.state.usage_answered(0, now_ms),
            CallKind::Enroll => {
                let _ = self.state.enroll_answered(0, b"", now_ms);
            }
        }
    }

    /// A control-plane call answered (or failed: then there is no `:status`).
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let Some((kind, generation)) = self.calls.remove(&token) else {
            return;
        };
        let now_ms = host::now_ms();
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let status: u32 = header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        if matches!(status, 401 | 403) {
            match generation {
                None => host::log(
                    LogLevel::Error,
                    "tollgate: sync: the control plane refused the data-plane token",
                ),
                Some(g) => {
                    host::log(
                        LogLevel::Warn,
                        "tollgate: sync: the control plane refused the reporter secret; enrolling again",
                    );
                    self.state.credential_refused(g, now_ms);
                }
            }
        }
        match (kind, status) {
            (CallKind::Enroll, _) => {
                let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match self.state.enroll_answered(status, &body, now_ms) {
                    Ok(reporter) => host::log(
                        LogLevel::Info,
                        &format!("tollgate: sync: enrolled as reporter {reporter}"),
                    ),
                    Err(why) => host::log(
                        LogLevel::Warn,
                        &format!("tollgate: sync: enrollment failed, retrying: {why}"),
                    ),
                }
            }
            (CallKind::Usage, _) => {
                self.state.usage_answered(status, now_ms);
                self.drain_queue();
                if let Some(call) = self.state.next_full_batch(now_ms) {
                    self.dispatch(call, now_ms);
                }
            }
            (CallKind::Snapshot, 304) => {
                self.mark_fresh();
                self.state.snapshot_unchanged();
            }
            (CallKind::Snapshot, 200) => {
                let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match self.held.apply(&body) {
                    Ok(changed) => self.publish(&changed, header("etag")),
                    Err(e) => {
                        host::log(
                            LogLevel::Error,
                            &format!(
                                "tollgate: sync: snapshot refused, keeping the previous one: {e}"
                            ),
                        );
                        self.state.snapshot_failed();
                    }
                }
            }
            (CallKind::Snapshot, other) => {
                host::log(
                    LogLevel::Warn,
                    &format!("tollgate: sync: snapshot call answered {other}"),
                );
                self.state.snapshot_failed();
            }
        }
    }

    /// Records that the control plane just confirmed the snapshot.
    fn mark_fresh(&mut self) {
        let now = host::now_s();
        self.fresh_at = Some(now);
        host::set_shared(FRESH_KEY, now.to_string().as_bytes(), None);
    }

    /// Publishes the sections that changed to the workers, then the manifest, and
    /// acknowledges the spend the snapshot includes.
    fn publish(&mut self, changed: &Changed, etag: Option<String>) {
        let held = &self.held;
        if changed.budgets {
            // Every budget's local state exists before workers can see the budget, so their
            // get-modify-set always has a CAS to compare (a write without one cannot detect
            // a race).
            // Only budgets still held are remembered (deleted ones would grow the set forever).
            self.known_budgets
                .retain(|id| held.budgets.contains_key(id));
            for id in held.budgets.keys() {
                if !self.known_budgets.contains(id) {
                    let key = budget_key(id);
                    if host::shared(&key).1.is_none() {
                        host::set_shared(&key, b"", None);
                    }
                    self.known_budgets.insert(id.clone());
                }
            }
            host::set_shared(BUDGETS_KEY, &held.budgets_json(), None);
        }
        if changed.spend {
            host::set_shared(SPEND_KEY, &held.spend_bytes(), None);
        }
        if changed.prices {
            host::set_shared(PRICES_KEY, held.prices_json().as_bytes(), None);
        }
        for name in &changed.buckets {
            host::set_shared(
                &format!("{KEYS_PREFIX}{name}"),
                held.bucket(name).as_bytes(),
                None,
            );
        }
        host::set_shared(VERSION_KEY, held.manifest.encode().as_bytes(), None);
        host::set_shared(PUBLISHED_KEY, b"", None);
        // After publishing: for a moment both the snapshot and the local spend count the same
        // events (an overcount, the safe side), never neither.
        for c in self.state.snapshot_stored(etag, &held.reporters) {
            host::BudgetSlot::at(budget_key(&c.budget).into())
                .update(|s| s.ack(c.window, c.amount));
        }
        self.mark_fresh();
    }
}
