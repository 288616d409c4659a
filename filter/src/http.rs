//! One HTTP stream through the filter.
//!
//! Request headers: classify the request (metered, free model list, or refused), check a
//! metered request is routed to its provider's cluster, identify the caller (trusted
//! principal header or virtual key → snapshot) and strip the caller's credentials (each
//! provider cluster injects its own key upstream). Request body (buffered until complete): estimate the worst-case cost, decide against every budget on the chain
//! and reserve (or reply 429), inject `stream_options.include_usage` where needed. Response:
//! add the budget headers, meter the body as it passes (never held back), and settle at the
//! end — or in `on_log` when the stream ended early, charged by policy and counted.

use std::rc::Rc;
use std::sync::Arc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use rust_decimal::Decimal;
use tollgate_core::admission::{self, Priced};
use tollgate_core::budget::{decide, BudgetState, Decision, Mode, Scope};
use tollgate_core::denials::Refusal;
use tollgate_core::endpoint::{classify, Endpoint, METERED_ACCEPT_ENCODING};
use tollgate_core::event::UsageEvent;
use tollgate_core::identity::{self, Principal, CREDENTIAL_HEADERS};
use tollgate_core::local_spend::{BudgetCharge, ALL_TIME};
use tollgate_core::provider::{ApiFormat, Route};
use tollgate_core::reply::{self, Reply};
use tollgate_core::settlement::{self, Meter};
use tollgate_core::snapshot::{BudgetNames, BudgetRef, SnapshotIndex};
use tollgate_core::sync_protocol::QueuedUsage;

use crate::abi;
use crate::headers::Headers;
use crate::host::{self, BudgetSlot};
use crate::root::Shared;

/// Most passes of decide-and-reserve when other workers keep changing the same budgets.
const RESERVE_ATTEMPTS: usize = 8;

/// The request headers the header phase reads, picked in one walk: these four, then the
/// [`CREDENTIAL_HEADERS`] in their order (a unit test holds the two lists together).
const REQUEST_HEADERS: [&str; 9] = [
    ":method",
    ":path",
    "x-envoy-original-path",
    "content-length",
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "x-amz-security-token",
];

/// A metered request after its headers.
struct Identified {
    format: ApiFormat,
    path_model: Option<String>,
    path_stream: bool,
    principal: Arc<Principal>,
    snapshot: Rc<SnapshotIndex>,
}

impl Identified {
    fn route(&self) -> Route<'_> {
        Route {
            format: self.format,
            path_model: self.path_model.as_deref(),
            path_stream: self.path_stream,
        }
    }
}

/// One budget reserved on, and the window its spend goes to.
struct Reserved {
    id: Arc<str>,
    slot: BudgetSlot,
    window: i64,
}

/// A request let through, with what settling it needs.
struct Admitted {
    priced: Priced,
    reserved: Vec<Reserved>,
    remaining: Option<(Scope, String, Decimal)>,
    soft: Vec<String>,
    shadow_denied: bool,
}

/// One stream's state.
pub struct Stream {
    shared: Rc<Shared>,
    request: Option<Identified>,
    admitted: Option<Admitted>,
    status: Option<u32>,
    meter: Option<Meter>,
    settled: bool,
}

impl Stream {
    /// A new stream of this worker.
    pub fn new(shared: Rc<Shared>) -> Stream {
        Stream {
            shared,
            request: None,
            admitted: None,
            status: None,
            meter: None,
            settled: false,
        }
    }

    /// The label of `p` for the access log: the worker's last one when `p` is the principal it
    /// names (the key cache hands the same `Arc` to every request with that key), so a
    /// caller's requests after its first make none.
    fn principal_label(&self, p: &Arc<Principal>) -> Rc<str> {
        let mut last = self.shared.last_label.borrow_mut();
        if let Some((held, label)) = last.as_ref() {
            if Arc::ptr_eq(held, p) {
                return Rc::clone(label);
            }
        }
        let label: Rc<str> = Rc::from(label_of(p));
        *last = Some((Arc::clone(p), Rc::clone(&label)));
        label
    }

    /// Filter state for the access log, unless the configuration turned it off (the value is
    /// then not even made).
    fn note<V: AsRef<str>>(&self, name: &str, value: impl FnOnce() -> V) {
        if self.shared.config.filter_state {
            abi::set_filter_state(name, value().as_ref());
        }
    }

    fn reply(&self, r: &Reply, decision: &str) -> Action {
        if decision != "deny" {
            self.shared.metrics.refused();
        }
        self.note("tollgate.decision", || decision);
        // Bedrock's SDKs read errors the AWS way. Past the header phase Envoy no longer lends
        // the request headers: the route judged then says which API it was.
        let bedrock = match &self.request {
            Some(req) => req.format.provider() == "bedrock",
            None => Headers::request()
                .get(":path")
                .is_some_and(|p| p.starts_with("/model/")),
        };
        let aws;
        let r = if bedrock {
            aws = reply::for_aws(r.clone());
            &aws
        } else {
            r
        };
        let mut headers: Vec<(&str, &str)> =
            r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("x-tollgate-decision", decision));
        let _ = hostcalls::send_http_response(r.status, headers, Some(r.body.as_bytes()));
        Action::Pause
    }

    /// Request headers: what endpoint, who is calling, and is there a snapshot to judge them
    /// by. `Ok(None)` is a free endpoint (a model list) for a known caller: forwarded, counted,
    /// not charged. Every other request that is not metered is refused here: the provider
    /// clusters inject the provider key upstream, so nothing may pass unjudged.
    fn identify(&mut self, now: i64) -> Result<Option<Identified>, Reply> {
        let headers = Headers::request();
        let [method, path, original_path, content_length, credentials @ ..] =
            headers.pick(REQUEST_HEADERS);
        // A client's `x-envoy-original-path` would show in logs as a path nobody judged.
        if original_path.is_some() {
            let _ =
                hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-envoy-original-path");
        }
        let method = Headers::text(method).unwrap_or("");
        let path = Headers::text(path).unwrap_or("");
        let r = match classify(method, path) {
            Endpoint::Refused(why) => {
                return Err(reply::error(
                    why.status(),
                    why.as_str(),
                    &why.message(method, path),
                ))
            }
            Endpoint::Free => None,
            Endpoint::Metered(r) => Some(r),
        };
        let cfg = &self.shared.config;
        if let Some(r) = &r {
            let cluster = abi::cluster_name();
            admission::check_cluster(r, &cfg.identity.providers, cluster.as_deref(), method, path)?;
        }
        let snapshot = admission::usable_snapshot(
            self.shared.snapshot.borrow().clone(),
            |s| now.saturating_sub(self.shared.fresh_at(s)),
            cfg,
        )?;
        let principal = identity::identify(
            cfg.identity.trusted_principal_header.as_deref(),
            |name| match CREDENTIAL_HEADERS.iter().position(|h| *h == name) {
                Some(i) => Headers::text(credentials.get(i).copied().flatten()),
                None => headers.get(name),
            },
            &*self.shared,
        )?;
        // The caller's credentials stay here; each provider cluster injects its own key.
        for (h, value) in CREDENTIAL_HEADERS.iter().zip(credentials) {
            if value.is_some() {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, h);
            }
        }
        let Some(r) = r else {
            self.note("tollgate.decision", || "free");
            self.note("tollgate.principal", || self.principal_label(&principal));
            return Ok(None);
        };
        if r.format.api().needs_include_usage()
            && cfg.inject_include_usage
            && content_length.is_some()
        {
            // The body may grow when usage is requested; Envoy recomputes the framing.
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "content-length");
        }
        // Usage is read from the answer's bytes: ask the provider not to compress them.
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "accept-encoding",
            Some(METERED_ACCEPT_ENCODING),
        );
        Ok(Some(Identified {
            format: r.format,
            path_model: r.path_model.map(str::to_string),
            path_stream: r.path_stream,
            principal,
            snapshot,
        }))
    }

    /// Request body complete: judge, decide, reserve, rewrite.
    fn admit(&mut self, body: &[u8], now: i64) -> Result<Admitted, (Reply, &'static str)> {
        let refuse = |r: Reply| (r, "refused");
        let Some(req) = &self.request else {
            return Err(refuse(reply::error(
                500,
                "internal_error",
                "no request state",
            )));
        };
        let judged = admission::judge(
            body,
            &req.route(),
            &self.shared.prices.over(&req.snapshot.snapshot.prices),
            &self.shared.config,
            &self.shared.estimate,
        )
        .map_err(refuse)?;
        let admitted = self.reserve(req, judged.priced, now)?;
        if let Some(new_body) = judged.new_body {
            let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body.len(), &new_body);
        }
        Ok(admitted)
    }

    /// The request body is complete (end of stream, or trailers): read up to `max_bytes` of
    /// it, decide, and let the request go on or answer it locally.
    fn judge(&mut self, max_bytes: usize) -> Action {
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max_bytes)
            .ok()
            .flatten()
            .unwrap_or_default();
        if body.len() > self.shared.config.limits.max_request_body_bytes {
            return self.refuse_too_large();
        }
        match self.admit(&body, host::now_s()) {
            Ok(adm) => {
                let decision = if adm.shadow_denied {
                    "shadow_deny"
                } else {
                    "allow"
                };
                self.note("tollgate.decision", || decision);
                self.admitted = Some(adm);
                Action::Continue
            }
            Err((reply, decision)) => {
                let action = self.reply(&reply, decision);
                self.request = None;
                action
            }
        }
    }

    fn refuse_too_large(&mut self) -> Action {
        let limit = self.shared.config.limits.max_request_body_bytes;
        let r = reply::error(
            413,
            "request_too_large",
            &format!("Tollgate: request body over {limit} bytes"),
        );
        let action = self.reply(&r, "refused");
        self.request = None;
        action
    }

    /// Decides against every budget on the chain and reserves the estimate on each, retrying
    /// the whole decision when another worker changed a budget in between (CAS).
    fn reserve(
        &self,
        req: &Identified,
        priced: Priced,
        now: i64,
    ) -> Result<Admitted, (Reply, &'static str)> {
        let estimate = priced.estimate;
        let cfg = &self.shared.config;
        let global = if cfg.shadow {
            Mode::Shadow
        } else {
            Mode::Enforce
        };
        for _ in 0..RESERVE_ATTEMPTS {
            // The sync service removes local unsynced spend right after it publishes a snapshot
            // that includes it. Deciding with an older snapshot (workers otherwise refresh on
            // their tick) and the already-acknowledged local state would count that spend
            // nowhere, so: after reading the local state, check that the snapshot decided with
            // is still the newest published one (the version is written before any
            // acknowledgement), else load the newer one and decide again.
            let snapshot = self
                .shared
                .snapshot
                .borrow()
                .clone()
                .unwrap_or_else(|| Rc::clone(&req.snapshot));
            let budgets: Vec<(BudgetRef<'_>, &BudgetNames)> =
                snapshot.budgets_for(&req.principal).collect();
            let mut reads = Vec::with_capacity(budgets.len());
            let mut states = Vec::with_capacity(budgets.len());
            for (b, names) in &budgets {
                let (spent, resets_at, window) = match b.window_spend(now) {
                    Some(w) => (w.spent, w.resets_at, w.local_key),
                    None if cfg.stale_policy == tollgate_core::config::StalePolicy::Deny => {
                        return Err((
                            reply::error(
                                503,
                                "budget_snapshot_stale",
                                "budget windows unknown: snapshot too old",
                            ),
                            "refused",
                        ));
                    }
                    // Past the windows the snapshot knows: a new window, spend unknown.
                    None => (
                        Decimal::ZERO,
                        None,
                        b.window.valid_until().unwrap_or(ALL_TIME),
                    ),
                };
                let slot = BudgetSlot::at(Arc::clone(&names.local_key));
                let (mut local, cas) = slot.read();
                self.shared.with_owed(&names.local_key, &mut local);
                states.push(BudgetState {
                    unsynced: local.unsynced_in(window),
                    reserved: local.reserved(),
                    ..BudgetState::of(b, spent, resets_at)
                });
                reads.push((slot, local, cas, window));
            }
            if self.shared.load_newer_snapshot() {
                continue;
            }
            let allow = match decide(&states, estimate, global) {
                Decision::Deny(d) => {
                    self.shared.metrics.denied(d.binding.scope);
                    self.shared.refused(Refusal {
                        budget: d.binding.id,
                        principal: &req.principal,
                        model: &priced.model,
                        api: req.format,
                        price_version: priced.price_version,
                        stream: priced.stream,
                        now,
                    });
                    return Err((reply::budget_exceeded(&d, now), "deny"));
                }
                Decision::Allow(a) => a,
            };
            let mut done = 0;
            for (slot, local, cas, _) in reads.iter_mut() {
                if local.reserve(estimate).is_none() || !slot.write(local, *cas) {
                    break;
                }
                self.shared.owed_written(slot.key());
                done += 1;
            }
            if done < budgets.len() {
                for (slot, ..) in reads.iter().take(done) {
                    slot.update(|s| s.release(estimate));
                }
                continue;
            }
            self.shared
                .metrics
                .allowed(allow.would_deny_count, allow.soft_count);
            return Ok(Admitted {
                priced,
                reserved: budgets
                    .iter()
                    .zip(reads)
                    .map(|((_, names), (slot, _, _, window))| Reserved {
                        id: Arc::clone(&names.id),
                        slot,
                        window,
                    })
                    .collect(),
                remaining: allow
                    .remaining
                    .map(|r| (r.scope, r.id.to_string(), r.remaining)),
                soft: allow.soft_warnings().map(|b| b.id.to_string()).collect(),
                shadow_denied: allow.would_deny_count > 0,
            });
        }
        self.shared.metrics.contention();
        Err((
            reply::error(
                503,
                "budget_contention",
                "Tollgate could not reserve budget under contention; retry",
            ),
            "refused",
        ))
    }

    /// The request is over: price what it used (or charge by policy), owe the budgets the
    /// settled reservations (written later, `Shared::owe`), collect the usage event.
    fn settle(&mut self, ended: bool) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (Some(mut adm), Some(req)) = (self.admitted.take(), self.request.take()) else {
            return;
        };
        let measured = settlement::measure(req.format, self.status, self.meter.take(), ended);
        let settled = settlement::settle(
            req.format,
            &mut adm.priced,
            measured,
            &self.shared.prices.over(&req.snapshot.snapshot.prices),
            &self.shared.config,
        );
        let metrics = &self.shared.metrics;
        metrics.fallbacks(settled.fallbacks);
        if let Some(r) = settled.uncharged {
            metrics.uncharged(r);
        }
        let total = settled.cost.total;
        let mut charges = Vec::with_capacity(adm.reserved.len());
        for r in adm.reserved {
            // Written with the next admission on the budget or on the tick (`Shared::owe`).
            self.shared
                .owe(r.slot.key(), adm.priced.estimate, r.window, total);
            charges.push(BudgetCharge {
                budget: r.id,
                window: r.window,
                amount: total,
            });
        }
        let micro = total
            .checked_mul(Decimal::from(1_000_000))
            .map(|m| m.round());
        metrics.cost(
            micro
                .and_then(|m| i64::try_from(m.mantissa()).ok())
                .unwrap_or(0),
        );
        self.note("tollgate.cost", || reply::plain(total));
        let Priced {
            model,
            requested_model,
            price_version,
            stream,
            ..
        } = adm.priced;
        let event = UsageEvent {
            id: String::new(),
            reporter: String::new(),
            seq: 0,
            ts: host::now_s(),
            principal: req.principal,
            model,
            api: req.format,
            usage: settled.usage,
            cost: settled.cost,
            price_version,
            charge: settled.charge,
            uncharged: settled.uncharged,
            status: u16::try_from(self.status.unwrap_or(0)).unwrap_or(0),
            stream,
            requested_model,
            soft_warned: adm.soft,
            denied: None,
        };
        self.shared.send_usage(&QueuedUsage { event, charges });
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let now = host::now_s();
        match self.identify(now) {
            Ok(None) => {
                self.shared.metrics.unmetered();
                Action::Continue
            }
            Ok(Some(req)) => {
                self.note("tollgate.principal", || {
                    self.principal_label(&req.principal)
                });
                self.request = Some(req);
                if end_of_stream {
                    // A metered route without a body cannot name a model.
                    return self.on_http_request_body(0, true);
                }
                // Headers go on now: proxy-wasm's `Pause` here would stop the body callbacks
                // too (Envoy's StopAllIteration). The body is held in the body phase until the
                // decision, and Envoy's `buffer` filter placed between Tollgate and the router
                // (shipped configs) holds the headers until the body is complete, so nothing
                // of a request, headers and provider key included, reaches the upstream before
                // Tollgate admitted it, however the body ends (end of stream, trailers, reset).
                Action::Continue
            }
            Err(reply) => self.reply(&reply, "refused"),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.request.is_none() || self.admitted.is_some() {
            return Action::Continue;
        }
        if body_size > self.shared.config.limits.max_request_body_bytes {
            return self.refuse_too_large();
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.judge(body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends with trailers (HTTP/2, gRPC-style clients) never reaches the body
        // callback with `end_of_stream`: the trailers are its end. Judge the buffered body now,
        // or it would go upstream with the provider key unjudged.
        if self.request.is_none() || self.admitted.is_some() {
            return Action::Continue;
        }
        let limit = self.shared.config.limits.max_request_body_bytes;
        self.judge(limit.saturating_add(1))
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(adm) = &self.admitted else {
            return Action::Continue;
        };
        let headers = Headers::response();
        let [status, content_type, content_encoding] =
            headers.pick([":status", "content-type", "content-encoding"]);
        self.status = Headers::text(status).and_then(|s| s.parse().ok());
        // Response headers may be changed only here, before they go downstream.
        if let Some((scope, id, remaining)) = &adm.remaining {
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-budget-remaining",
                &reply::remaining_header(*remaining),
            );
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-budget",
                &reply::budget_header(*scope, id),
            );
        }
        if !adm.soft.is_empty() {
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-soft-limit",
                &adm.soft.join(","),
            );
        }
        let format = self.request.as_ref().map(|r| r.format);
        self.meter = format.map(|f| {
            Meter::start(
                f,
                Headers::text(content_type),
                Headers::text(content_encoding),
                self.shared.config.limits.max_response_event_bytes,
            )
        });
        if end_of_stream {
            self.settle(true);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.admitted.is_none() || self.settled {
            return Action::Continue;
        }
        if body_size > 0 {
            if let Some(meter) = &mut self.meter {
                let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                meter.push_owned(chunk);
            }
        }
        if end_of_stream {
            self.settle(true);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end a complete answer and the body callbacks never see `end_of_stream`:
        // Envoy's decompressor adds its byte counts as trailers, an HTTP/2 upstream may too.
        self.settle(true);
        Action::Continue
    }

    fn on_log(&mut self) {
        // The stream ended without a complete response (client gone, upstream reset).
        self.settle(false);
    }
}

/// `org/project/user/key`, `-` for a missing part (concatenated, not formatted).
fn label_of(p: &Principal) -> String {
    fn part(o: &Option<String>) -> &str {
        o.as_deref().unwrap_or("-")
    }
    [
        p.org.as_str(),
        "/",
        part(&p.project),
        "/",
        part(&p.user),
        "/",
        part(&p.key),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_picked_request_headers_end_with_every_credential_header() {
        assert_eq!(super::REQUEST_HEADERS[4..], super::CREDENTIAL_HEADERS);
    }
}
