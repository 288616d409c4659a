//! What a plugin did with one request: the transcript a harness test asserts on.
//!
//! An [`Outcome`] records, phase by phase, the action each callback returned, what reached
//! the upstream (headers and body as the filter left them), the local reply it sent if
//! any, the response the client got, and the side effects of the request: HTTP calls,
//! queue items, metrics touched, log lines and filter state.

use std::collections::BTreeMap;
use std::fmt;

use crate::headers::Headers;
use crate::host::abi::{Action, LogLevel};
use crate::upstream::HttpCall;
use crate::VmId;

/// A callback of the proxy-wasm lifecycle, as named in the ABI spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// `_initialize` / `_start` / `main`: module start-up.
    Start,
    /// `proxy_on_context_create`.
    ContextCreate,
    /// `proxy_on_vm_start`.
    VmStart,
    /// `proxy_on_configure`.
    Configure,
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
    /// `proxy_on_log`.
    Log,
    /// `proxy_on_done`.
    Done,
    /// `proxy_on_delete`.
    Delete,
    /// `proxy_on_tick`.
    Tick,
    /// `proxy_on_queue_ready`.
    QueueReady,
    /// `proxy_on_http_call_response`.
    HttpCallResponse,
}

impl Phase {
    /// The guest export called for this phase.
    pub fn export_name(self) -> &'static str {
        match self {
            Phase::Start => "_initialize",
            Phase::ContextCreate => "proxy_on_context_create",
            Phase::VmStart => "proxy_on_vm_start",
            Phase::Configure => "proxy_on_configure",
            Phase::RequestHeaders => "proxy_on_request_headers",
            Phase::RequestBody => "proxy_on_request_body",
            Phase::RequestTrailers => "proxy_on_request_trailers",
            Phase::ResponseHeaders => "proxy_on_response_headers",
            Phase::ResponseBody => "proxy_on_response_body",
            Phase::ResponseTrailers => "proxy_on_response_trailers",
            Phase::Log => "proxy_on_log",
            Phase::Done => "proxy_on_done",
            Phase::Delete => "proxy_on_delete",
            Phase::Tick => "proxy_on_tick",
            Phase::QueueReady => "proxy_on_queue_ready",
            Phase::HttpCallResponse => "proxy_on_http_call_response",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.export_name())
    }
}

/// One stream callback and what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseAction {
    /// Which callback.
    pub phase: Phase,
    /// The header count or body size the callback was given.
    pub size: usize,
    /// The `end_of_stream` flag it was given (false for trailers).
    pub end_of_stream: bool,
    /// What it returned.
    pub action: Action,
}

/// What reached the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Request headers as the filter left them.
    pub headers: Headers,
    /// Request body bytes forwarded, in order.
    pub body: Vec<u8>,
    /// Request trailers, if any were forwarded.
    pub trailers: Option<Headers>,
    /// Whether the whole request (end of stream) was forwarded.
    pub complete: bool,
}

impl UpstreamRequest {
    /// The first value of a forwarded header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The forwarded body as UTF-8 (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A `proxy_send_local_response` call, as the guest made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// The callback that sent it.
    pub phase: Phase,
    /// HTTP status.
    pub status: u32,
    /// `status_code_details` (Envoy's `%RESPONSE_CODE_DETAILS%`).
    pub details: String,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Headers,
    /// gRPC status (`-1` when unset).
    pub grpc_status: i32,
}

/// What the downstream client received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers as sent downstream (`:status` included).
    pub headers: Headers,
    /// Body bytes sent downstream, in order.
    pub body: Vec<u8>,
    /// Trailers sent downstream, if any.
    pub trailers: Option<Headers>,
    /// Whether this is a local reply (from the filter, or Envoy's 503 after a trap).
    pub local: bool,
}

impl DownstreamResponse {
    /// The first value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body as UTF-8 (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A trap (panic, `unreachable`, out-of-bounds access, runaway guest) inside a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestTrap {
    /// The callback that trapped.
    pub phase: Phase,
    /// wasmtime's description of the trap.
    pub message: String,
}

/// An item a plugin put on a shared queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    /// The `vm_id` the queue belongs to.
    pub vm_id: String,
    /// The queue name.
    pub queue: String,
    /// The bytes enqueued.
    pub data: Vec<u8>,
}

impl QueueItem {
    /// The item as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// One `proxy_log` (or WASI `fd_write`) line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Which VM logged it.
    pub vm: VmId,
    /// Level.
    pub level: LogLevel,
    /// Message.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}][{}] {}", self.vm, self.level, self.message)
    }
}

/// The value of a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(u64),
    /// The samples recorded into a histogram.
    Histogram(Vec<u64>),
}

impl MetricValue {
    /// The counter or gauge value; the sample count for a histogram.
    pub fn value(&self) -> u64 {
        match self {
            MetricValue::Counter(v) | MetricValue::Gauge(v) => *v,
            MetricValue::Histogram(samples) => samples.len() as u64,
        }
    }
}

/// Everything one request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The VM that handled it.
    pub vm: VmId,
    /// The stream context id (0 if the VM had failed and was not called).
    pub context_id: u32,
    /// Every stream callback in order with what it returned.
    pub actions: Vec<PhaseAction>,
    /// What reached the upstream; `None` when not even the headers did.
    pub upstream: Option<UpstreamRequest>,
    /// The local reply the filter asked for, if any.
    pub local_reply: Option<LocalReply>,
    /// What the client received; `None` if the stream stalled.
    pub response: Option<DownstreamResponse>,
    /// Whether the stream was reset: `proxy_close_stream`, or a local reply or trap once
    /// the response headers had gone downstream.
    pub reset: bool,
    /// The phase the stream hung in: a `Pause` nothing resumed (Envoy would wait for a
    /// timeout there).
    pub stalled: Option<Phase>,
    /// A trap that happened while serving this request.
    pub trap: Option<GuestTrap>,
    /// Whether the VM had failed before this request and the failure policy decided it
    /// (FAIL_CLOSED: 503, FAIL_OPEN: untouched pass-through).
    pub vm_failed: bool,
    /// Whether a FAIL_RELOAD policy created a fresh VM for this request.
    pub vm_reloaded: bool,
    /// HTTP calls dispatched while serving it (callbacks it triggered included).
    pub http_calls: Vec<HttpCall>,
    /// Items enqueued on shared queues.
    pub queue_items: Vec<QueueItem>,
    /// Metrics touched, with their value afterwards.
    pub metrics: BTreeMap<String, MetricValue>,
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// Filter state set with `proxy_set_property`, by Envoy key (`wasm.` + path).
    pub filter_state: BTreeMap<String, Vec<u8>>,
}

impl Outcome {
    /// The status the client got (`None` if the stream stalled).
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// Whether the request went through to the upstream and its response came back
    /// without a local reply.
    pub fn allowed(&self) -> bool {
        self.upstream.as_ref().is_some_and(|u| u.complete)
            && self.response.as_ref().is_some_and(|r| !r.local)
            && !self.reset
            && self.stalled.is_none()
    }

    /// A header of the response the client got.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response.as_ref().and_then(|r| r.header(name))
    }

    /// A header of the request the upstream got.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream.as_ref().and_then(|u| u.header(name))
    }

    /// The response body the client got, as UTF-8 (lossy).
    pub fn body_text(&self) -> String {
        self.response
            .as_ref()
            .map(DownstreamResponse::body_text)
            .unwrap_or_default()
    }

    /// The action the first callback of `phase` returned.
    pub fn action(&self, phase: Phase) -> Option<Action> {
        self.actions
            .iter()
            .find(|a| a.phase == phase)
            .map(|a| a.action)
    }

    /// The value set with `proxy_set_property(name)`, read back by its Envoy filter-state
    /// key `wasm.<name>` (a multi-segment path keeps its NUL separators, as in Envoy).
    pub fn filter_state(&self, name: &str) -> Option<&[u8]> {
        self.filter_state
            .get(&format!("wasm.{name}"))
            .map(Vec::as_slice)
    }

    /// Log lines containing `needle`.
    pub fn logs_containing<'a>(
        &'a self,
        needle: &'a str,
    ) -> impl Iterator<Item = &'a LogLine> + 'a {
        self.logs.iter().filter(move |l| l.message.contains(needle))
    }
}
