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

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tollgate_core::budget::{decide, window_at, BudgetState, Decision, Mode, Period, Scope};
use tollgate_core::config::{MissingUsage, UnknownModel};
use tollgate_core::cost::{priced, CostBreakdown};
use tollgate_core::endpoint::{classify, Endpoint, METERED_ACCEPT_ENCODING};
use tollgate_core::estimate::{summarize, worst_case, EstimateError};
use tollgate_core::event::{Charge, UnchargedReason, UsageEvent};
use tollgate_core::gate::{self, Reply};
use tollgate_core::local::{BudgetCharge, ALL_TIME};
use tollgate_core::pricing::{ModelPrice, SearchContext};
use tollgate_core::principal::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::snapshot::{SnapshotBudget, SnapshotIndex};
use tollgate_core::sync::QueuedUsage;
use tollgate_core::usage::{readable_encoding, served_json, SseUsage, Usage};

use crate::host::{self, Headers};
use crate::root::Shared;

/// Most passes of decide-and-reserve when other workers keep changing the same budgets.
const RESERVE_ATTEMPTS: usize = 8;

/// A metered request after its headers.
struct Identified {
    format: ApiFormat,
    path_model: Option<String>,
    path_stream: bool,
    principal: Principal,
    snapshot: Rc<SnapshotIndex>,
}

/// One budget reserved on, and the window its spend goes to.
struct Reserved {
    id: String,
    window: i64,
}

/// A request let through, with what settling it needs.
struct Admitted {
    model: String,
    /// The model the request named, when the provider said another one served it.
    requested_model: Option<String>,
    price: Option<ModelPrice>,
    price_version: u64,
    estimate: Decimal,
    reserved: Vec<Reserved>,
    remaining: Option<(Scope, String, Decimal)>,
    soft: Vec<String>,
    shadow_denied: bool,
    stream: bool,
    /// The web-search context size the request asked for: the answer does not repeat it.
    search_context: SearchContext,
}

/// How the response body is being metered.
enum Meter {
    Json {
        body: Vec<u8>,
        overflow: bool,
    },
    Sse(Box<SseUsage>),
    /// A `content-encoding` the filter cannot read: nothing is buffered, the request is
    /// charged by policy under its own reason.
    Encoded,
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

    fn reply(&self, r: &Reply, decision: &str) -> Action {
        if decision != "deny" {
            self.shared.metrics.refused();
        }
        host::set_filter_state("tollgate.decision", decision);
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
        // A client's `x-envoy-original-path` would show in logs as a path nobody judged.
        if headers.has("x-envoy-original-path") {
            let _ =
                hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-envoy-original-path");
        }
        let method = headers.get(":method").unwrap_or("");
        let path = headers.get(":path").unwrap_or("");
        let r = match classify(method, path) {
            Endpoint::Refused(why) => {
                return Err(gate::error(
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
            // The provider key is injected by the cluster Envoy routes to; a metered request
            // must go to its own provider's cluster, or another provider's key would carry it.
            let providers = &cfg.identity.providers;
            let name = r.format.provider();
            if !providers.is_empty() {
                let want = providers.get(name).map(|p| p.cluster.as_bytes());
                let got = host::property(&["xds", "cluster_name"]);
                if want.is_none() || want != got.as_deref() {
                    return Err(gate::error(
                        404,
                        "provider_route_mismatch",
                        &format!(
                            "Tollgate: {method} {} speaks the {name} API but is not routed to \
                             the {name} cluster; refused",
                            path.split_once('?').map_or(path, |(p, _)| p)
                        ),
                    ));
                }
            }
        }
        let snapshot = self.shared.snapshot.borrow().clone();
        let Some(snapshot) = snapshot else {
            return Err(gate::error(
                503,
                "budget_snapshot_unavailable",
                "Tollgate has no budget snapshot yet; retry shortly",
            ));
        };
        let age = now.saturating_sub(self.shared.fresh_at(&snapshot));
        if age > i64::try_from(cfg.max_staleness_s).unwrap_or(i64::MAX)
            && cfg.stale_policy == tollgate_core::config::StalePolicy::Deny
        {
            return Err(gate::error(
                503,
                "budget_snapshot_stale",
                "Tollgate's budget snapshot is stale and policy denies; retry later",
            ));
        }
        let principal = self.principal(&headers, &snapshot)?;
        self.swap_keys(&headers);
        let Some(r) = r else {
            host::set_filter_state("tollgate.decision", "free");
            host::set_filter_state("tollgate.principal", &principal_label(&principal));
            return Ok(None);
        };
        if r.format.api().needs_include_usage()
            && cfg.inject_include_usage
            && headers.has("content-length")
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

    fn principal(&self, headers: &Headers, snapshot: &SnapshotIndex) -> Result<Principal, Reply> {
        if let Some(name) = &self.shared.config.identity.trusted_principal_header {
            if let Some(value) = headers.get(name) {
                return Principal::from_header(value).ok_or_else(|| {
                    gate::error(
                        401,
                        "invalid_principal",
                        "the principal header set by the trusted filter is malformed",
                    )
                });
            }
        }
        let Some(key) = gate::find_virtual_key(|name| headers.get(name).map(str::to_string)) else {
            return Err(gate::error(
                401,
                "missing_api_key",
                "a Tollgate virtual key (tg-...) is required",
            ));
        };
        let hash = hex(&Sha256::digest(key.as_bytes()));
        snapshot.principal_for_key(&hash).cloned().ok_or_else(|| {
            gate::error(
                401,
                "invalid_api_key",
                "unknown or revoked Tollgate virtual key",
            )
        })
    }

    /// Removes the caller's credentials (the virtual key), so none leaves Envoy. The provider
    /// key is added upstream by the route's cluster (`credential_injector`), never here.
    fn swap_keys(&self, headers: &Headers) {
        for h in gate::CREDENTIAL_HEADERS {
            if headers.has(h) {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, h);
            }
        }
    }

    /// Request body complete: estimate, decide, reserve, rewrite.
    fn admit(&mut self, body: &[u8], now: i64) -> Result<Admitted, (Reply, &'static str)> {
        let refuse = |r: Reply| (r, "refused");
        let Some(req) = &self.request else {
            return Err(refuse(gate::error(
                500,
                "internal_error",
                "no request state",
            )));
        };
        let cfg = &self.shared.config;
        let summary = summarize(
            body,
            req.format,
            req.path_model.as_deref(),
            &self.shared.estimate,
        )
        .map_err(|e| {
            let status = if matches!(e, EstimateError::BodyTooLarge { .. }) {
                413
            } else {
                400
            };
            refuse(gate::error(
                status,
                "invalid_request_error",
                &format!("Tollgate: {e}"),
            ))
        })?;
        let book = &req.snapshot.snapshot.prices;
        let found = book.lookup(&summary.model, Some(req.format.provider()));
        let (model, price) = match (found, &cfg.unknown_model) {
            (Some((key, p)), _) => (key.to_string(), Some(p.clone())),
            (None, UnknownModel::Deny) => {
                return Err(refuse(gate::error(
                    400,
                    "model_not_priced",
                    &format!("Tollgate has no price for model {:?}", summary.model),
                )))
            }
            (None, UnknownModel::AllowUnpriced) => (summary.model.to_string(), None),
            (None, UnknownModel::DefaultPrice(p)) => {
                (summary.model.to_string(), Some((**p).clone()))
            }
        };
        let estimate = match &price {
            Some(p) => {
                worst_case(&summary, p, &self.shared.estimate)
                    .map_err(|e| {
                        refuse(gate::error(
                            400,
                            "invalid_request_error",
                            &format!("Tollgate: {e}"),
                        ))
                    })?
                    .cost
            }
            None => Decimal::ZERO,
        };
        let stream = summary.stream || req.path_stream;
        let mut admitted = self.reserve(req, estimate, now)?;
        admitted.model = model;
        admitted.price = price;
        admitted.price_version = book.version;
        admitted.stream = stream;
        admitted.search_context = summary.web_search.map(|w| w.context).unwrap_or_default();
        if cfg.inject_include_usage {
            if let Some(new_body) = summary.usage_rewrite(body) {
                let _ =
                    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body.len(), &new_body);
            }
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
                host::set_filter_state(
                    "tollgate.decision",
                    if adm.shadow_denied {
                        "shadow_deny"
                    } else {
                        "allow"
                    },
                );
                self.admitted = Some(adm);
                Action::Continue
            }
            Err((reply, decision)) => {
                self.request = None;
                self.reply(&reply, decision)
            }
        }
    }

    fn refuse_too_large(&mut self) -> Action {
        self.request = None;
        let limit = self.shared.config.limits.max_request_body_bytes;
        let r = gate::error(
            413,
            "request_too_large",
            &format!("Tollgate: request body over {limit} bytes"),
        );
        self.reply(&r, "refused")
    }

    /// Decides against every budget on the chain and reserves the estimate on each, retrying
    /// the whole decision when another worker changed a budget in between (CAS).
    fn reserve(
        &self,
        req: &Identified,
        estimate: Decimal,
        now: i64,
    ) -> Result<Admitted, (Reply, &'static str)> {
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
            let budgets: Vec<&SnapshotBudget> = snapshot.budgets_for(&req.principal).collect();
            let mut reads = Vec::with_capacity(budgets.len());
            let mut states = Vec::with_capacity(budgets.len());
            for b in &budgets {
                let (spent, resets_at, window) = match b.spent_at(now) {
                    Some((spent, resets)) => (spent, resets, window_key(b, now)),
                    None if cfg.stale_policy == tollgate_core::config::StalePolicy::Deny => {
                        return Err((
                            gate::error(
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
                let (local, cas) = host::read_budget(&b.id);
                states.push(BudgetState {
                    id: &b.id,
                    scope: b.scope,
                    mode: b.mode,
                    limit: b.limit_usd,
                    soft_limit: b.soft_limit_usd,
                    spent,
                    unsynced: local.unsynced_in(window),
                    reserved: local.reserved,
                    resets_at,
                });
                reads.push((local, cas, window));
            }
            if self.shared.load_newer_snapshot() {
                continue;
            }
            let allow = match decide(&states, estimate, global) {
                Decision::Deny(d) => {
                    self.shared.metrics.denied(d.binding.scope);
                    return Err((gate::budget_exceeded(&d, now), "deny"));
                }
                Decision::Allow(a) => a,
            };
            let mut done: Vec<usize> = Vec::new();
            for (i, (b, (local, cas, _))) in budgets.iter().zip(reads.iter_mut()).enumerate() {
                if local.reserve(estimate).is_none() || !host::write_budget(&b.id, local, *cas) {
                    break;
                }
                done.push(i);
            }
            if done.len() < budgets.len() {
                for i in done {
                    if let Some(b) = budgets.get(i) {
                        host::update_budget(&b.id, |s| s.release(estimate));
                    }
                }
                continue;
            }
            self.shared
                .metrics
                .allowed(allow.would_deny_count, allow.soft_count);
            return Ok(Admitted {
                model: String::new(),
                requested_model: None,
                price: None,
                price_version: 0,
                estimate,
                reserved: budgets
                    .iter()
                    .zip(reads.iter())
                    .map(|(b, (_, _, window))| Reserved {
                        id: b.id.clone(),
                        window: *window,
                    })
                    .collect(),
                remaining: allow
                    .remaining
                    .map(|r| (r.scope, r.id.to_string(), r.remaining)),
                soft: allow.soft_warnings().map(|b| b.id.to_string()).collect(),
                shadow_denied: allow.would_deny_count > 0,
                stream: false,
                search_context: SearchContext::default(),
            });
        }
        self.shared.metrics.contention();
        Err((
            gate::error(
                503,
                "budget_contention",
                "Tollgate could not reserve budget under contention; retry",
            ),
            "refused",
        ))
    }

    /// The request is over: price what it used (or charge by policy), settle the
    /// reservations, queue the usage event.
    fn settle(&mut self, ended: bool) {
        if self.settled {
            return;
        }
        self.settled = true;
        let measured = self.measured(ended);
        let (Some(mut adm), Some(req)) = (self.admitted.take(), self.request.take()) else {
            return;
        };
        let shared = Rc::clone(&self.shared);
        let metrics = &shared.metrics;
        let usage = measured.map(|(usage, served)| {
            if let Some(served) = served {
                self.price_served(&mut adm, &req, &served);
            }
            usage
        });
        let (usage, cost_breakdown, charge, uncharged) = match (usage, &adm.price) {
            (Ok(mut u), Some(p)) => {
                u.search_context = adm.search_context;
                match priced(p, &u) {
                    Ok((c, fallbacks)) => {
                        metrics.fallbacks(fallbacks);
                        (u, c, Charge::Actual, None)
                    }
                    Err(_) => self.by_policy(&adm, u, UnchargedReason::NoUsage),
                }
            }
            (Ok(u), None) => (
                u,
                CostBreakdown::default(),
                Charge::Zero,
                Some(UnchargedReason::Unpriced),
            ),
            (Err(reason), _) => self.by_policy(&adm, Usage::default(), reason),
        };
        if let Some(r) = uncharged {
            metrics.uncharged(r);
        }
        let total = cost_breakdown.total;
        let mut charges = Vec::with_capacity(adm.reserved.len());
        for r in &adm.reserved {
            host::update_budget(&r.id, |s| {
                s.release(adm.estimate);
                s.add_unsynced(r.window, total);
            });
            charges.push(BudgetCharge {
                budget: r.id.clone(),
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
        host::set_filter_state("tollgate.cost", &total.normalize().to_string());
        let event = UsageEvent {
            id: String::new(),
            reporter: String::new(),
            seq: 0,
            ts: host::now_s(),
            principal: req.principal,
            model: adm.model,
            api: req.format,
            usage,
            cost: cost_breakdown,
            price_version: adm.price_version,
            charge,
            uncharged,
            status: u16::try_from(self.status.unwrap_or(0)).unwrap_or(0),
            stream: adm.stream,
            requested_model: adm.requested_model,
        };
        self.shared.send_usage(&QueuedUsage { event, charges });
    }

    /// Usage from the response and the model it says served the request, or why there is
    /// no usage.
    fn measured(&mut self, ended: bool) -> Result<(Usage, Option<String>), UnchargedReason> {
        let Some(status) = self.status else {
            return Err(UnchargedReason::ClientDisconnect);
        };
        if let Some(reason) = UnchargedReason::for_status(status) {
            return Err(reason);
        }
        let format = self.request.as_ref().map(|r| r.format);
        match (self.meter.take(), format) {
            (Some(Meter::Json { overflow: true, .. }), _) => Err(UnchargedReason::TooLarge),
            (Some(Meter::Encoded), _) => Err(UnchargedReason::EncodedAnswer),
            (Some(Meter::Json { body, .. }), Some(f)) if ended => {
                served_json(f, &body).map_err(|_| UnchargedReason::NoUsage)
            }
            (Some(Meter::Sse(p)), _) => {
                let out = p.finish();
                match (out.usage, out.complete || ended && out.usage.is_some()) {
                    (Some(u), true) => Ok((u, out.model)),
                    (Some(_), false) | (None, _) if !ended => Err(UnchargedReason::Truncated),
                    _ => Err(UnchargedReason::NoUsage),
                }
            }
            _ => Err(UnchargedReason::Truncated),
        }
    }

    /// The provider names the model that served the request: when it differs from the one
    /// priced at admission and the book prices it, settle on it (OpenAI answers `gpt-4o` with
    /// `gpt-4o-2024-08-06`, a router or an alias may serve another model altogether).
    fn price_served(&self, adm: &mut Admitted, req: &Identified, served: &str) {
        if served == adm.model {
            return;
        }
        let book = &req.snapshot.snapshot.prices;
        let Some((key, price)) = book.lookup(served, Some(req.format.provider())) else {
            return;
        };
        if key == adm.model {
            return;
        }
        adm.requested_model = Some(std::mem::replace(&mut adm.model, key.to_string()));
        adm.price = Some(price.clone());
    }

    fn by_policy(
        &self,
        adm: &Admitted,
        usage: Usage,
        reason: UnchargedReason,
    ) -> (Usage, CostBreakdown, Charge, Option<UnchargedReason>) {
        let cfg = &self.shared.config;
        let policy = if reason.is_provider_refusal() {
            cfg.provider_errors
        } else {
            cfg.missing_usage
        };
        match policy {
            MissingUsage::ChargeEstimate => (
                usage,
                CostBreakdown {
                    total: adm.estimate,
                    ..CostBreakdown::default()
                },
                Charge::Estimate,
                Some(reason),
            ),
            MissingUsage::ChargeZero => {
                (usage, CostBreakdown::default(), Charge::Zero, Some(reason))
            }
        }
    }
}

/// The window key local spend is kept under for `b` at `now`.
fn window_key(b: &SnapshotBudget, now: i64) -> i64 {
    if b.window.period() == Period::Total {
        return ALL_TIME;
    }
    window_at(&b.window, now).map_or(ALL_TIME, |w| w.start)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            s.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
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
                host::set_filter_state("tollgate.principal", &principal_label(&req.principal));
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
        self.status = headers.get(":status").and_then(|s| s.parse().ok());
        // Response headers may be changed only here, before they go downstream.
        if let Some((scope, id, remaining)) = &adm.remaining {
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-budget-remaining",
                &gate::remaining_header(*remaining),
            );
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-budget",
                &gate::budget_header(*scope, id),
            );
        }
        if !adm.soft.is_empty() {
            let _ = hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-tollgate-soft-limit",
                &adm.soft.join(","),
            );
        }
        let sse = headers
            .get("content-type")
            .is_some_and(|c| c.contains("text/event-stream"));
        let format = self
            .request
            .as_ref()
            .map_or(ApiFormat::OpenAiChat, |r| r.format);
        let max = self.shared.config.limits.max_response_event_bytes;
        self.meter = Some(if !readable_encoding(headers.get("content-encoding")) {
            Meter::Encoded
        } else if sse {
            Meter::Sse(Box::new(SseUsage::new(format, max)))
        } else {
            Meter::Json {
                body: Vec::new(),
                overflow: false,
            }
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
            let max = self.shared.config.limits.max_response_event_bytes;
            let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            match &mut self.meter {
                Some(Meter::Sse(p)) => p.push(&chunk),
                Some(Meter::Json { body, overflow }) => {
                    if body.len().saturating_add(chunk.len()) > max {
                        *overflow = true;
                        body.clear();
                    } else if !*overflow {
                        body.extend_from_slice(&chunk);
                    }
                }
                Some(Meter::Encoded) | None => {}
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

fn principal_label(p: &Principal) -> String {
    let part = |o: &Option<String>| o.as_deref().unwrap_or("-").to_string();
    format!(
        "{}/{}/{}/{}",
        p.org,
        part(&p.project),
        part(&p.user),
        part(&p.key)
    )
}
