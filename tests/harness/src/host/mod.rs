//! The host side of the proxy-wasm ABI 0.2.1: every import a module may ask for.
//!
//! Spec: <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1>. Where the spec
//! leaves room, the behaviour follows Envoy's `source/extensions/common/wasm/context.cc`
//! (the proxy Tollgate ships in), and each module says which Envoy rule it models.
//!
//! Layout:
//! - [`HostState`] is the per-VM state living in the wasmtime `Store`; host functions
//!   reach it through `Caller::data`, so nothing is global and tests run in parallel.
//! - [`Process`] is what one Envoy process shares between its VMs (workers, the singleton
//!   service): the virtual clock, shared data and queues keyed by `vm_id`, metrics,
//!   clusters and the events waiting to be delivered. VMs hold it behind an
//!   `Arc<Mutex<_>>`.
//! - [`linker`] registers every import once on a `Linker`; the per-domain modules
//!   ([`headers`], [`buffers`], ...) each add their functions.

/// Registers the import `$name` as `$f(&mut caller, args…)` with every argument a `u32` (the
/// ABI's pointers, sizes, ids and enums) unless it names its type (`delta: i64`), the result
/// turned into the ABI's answer by `$wrap`: `status` for proxy-wasm's `env` imports (the short
/// form), `errno` for WASI's. Imports with a body of their own call `func_wrap` themselves.
macro_rules! import {
    ($linker:ident, $name:literal => $f:ident($($arg:ident $(: $ty:ty)?),* $(,)?)) => {
        import!($linker, "env", $name, $crate::host::status => $f($($arg $(: $ty)?),*))
    };
    ($linker:ident, $module:expr, $name:literal, $wrap:path => $f:ident($($arg:ident $(: $ty:ty)?),* $(,)?)) => {
        $linker.func_wrap(
            $module,
            $name,
            |mut caller: ::wasmtime::Caller<'_, $crate::host::HostState>,
             $($arg: import!(@type $($ty)?)),*| {
                $wrap($f(&mut caller, $($arg),*))
            },
        )?;
    };
    // An argument is a `u32` (a pointer, a size, an enum) unless it says otherwise.
    (@type) => { u32 };
    (@type $ty:ty) => { $ty };
}

pub mod abi;
mod buffers;
mod headers;
mod http_call;
mod logging;
pub(crate) mod memory;
mod metrics;
pub(crate) mod pairs;
mod properties;
pub(crate) mod queues;
pub(crate) mod shared_data;
mod stream;
mod wasi;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Engine, Linker, Memory, TypedFunc};

use crate::headers::Headers;
use crate::outcome::{LocalReply, LogLine, MetricValue, Phase, QueueItem};
use crate::plugin::Settings;
use crate::upstream::{HttpCall, HttpResponse, Upstream};
use crate::VmId;
use abi::{LogLevel, MetricType, Status};

/// Hashes a context id as itself: ids are small sequential integers, and SipHash showed
/// up in the per-request profile.
#[derive(Default, Clone, Copy)]
pub(crate) struct ContextIdHasher(u64);

impl std::hash::Hasher for ContextIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value);
    }
}

/// Live streams of a VM by context id.
pub(crate) type Streams = HashMap<u32, Stream, std::hash::BuildHasherDefault<ContextIdHasher>>;

/// Per-VM state, owned by the wasmtime `Store`.
pub(crate) struct HostState {
    /// What the VM shares with the other VMs of the process.
    pub process: Arc<Mutex<Process>>,
    /// Which VM of the process this is.
    pub vm: VmId,
    /// Envoy's `vm_config.vm_id`: the namespace of shared data and queues.
    pub vm_id: String,
    /// Envoy's plugin `name` (property `plugin_name`).
    pub plugin_name: String,
    /// Envoy's plugin `root_id` (property `plugin_root_id`).
    pub root_id: String,
    /// `plugin_config.configuration`, readable in `proxy_on_configure`.
    pub plugin_configuration: Arc<[u8]>,
    /// `vm_config.configuration`, readable any time.
    pub vm_configuration: Arc<[u8]>,
    /// `vm_config.environment_variables`, served by `environ_get`.
    pub environment: Arc<[(String, String)]>,
    /// Properties the test set on the plugin (e.g. `node.metadata...`).
    pub plugin_properties: Arc<BTreeMap<String, Vec<u8>>>,
    /// The level `proxy_get_log_level` reports; lines below it are dropped, as Envoy does.
    pub log_level: LogLevel,
    /// The guest's exported linear memory.
    pub memory: Option<Memory>,
    /// `proxy_on_memory_allocate` (or the deprecated `malloc`).
    pub allocate: Option<TypedFunc<u32, u32>>,
    /// The root context id of this VM.
    pub root_context_id: u32,
    /// The callback being run, if any.
    pub active: Option<Phase>,
    /// The context host calls act on: the called context, or the one chosen with
    /// `proxy_set_effective_context`.
    pub effective_context: u32,
    /// Live HTTP streams of this VM by context id.
    pub streams: Streams,
    /// The HTTP call response being delivered (`proxy_on_http_call_response` only).
    pub call_response: Option<CallResponse>,
    /// The tick period asked for with `proxy_set_tick_period_milliseconds` (0 = off).
    pub tick_period_ms: u32,
    /// Set when the period changed, so the scheduler re-arms the timer.
    pub tick_changed: bool,
    /// Next `proxy_http_call` token; tokens are unique per VM (the SDK panics on reuse).
    pub next_call_token: u32,
    /// Metric ids handed to this VM, to the process-wide metric names.
    pub metric_ids: HashMap<u32, (String, MetricType)>,
    /// Next metric sequence number (ids carry the type in their low bits, as Envoy's do).
    pub next_metric: u32,
    /// State of the deterministic `random_get` generator.
    pub rng: u64,
    /// What happened since the journal was last taken.
    pub journal: Journal,
    /// Host calls the guest made (counted only when the plugin counts fuel or times its host
    /// calls): each crosses the VM boundary, which costs in Envoy and which fuel does not see.
    pub host_calls: u64,
    /// Time spent inside host calls (measured only when the plugin times them): what the
    /// harness's own stand-in for Envoy costs a request, as against the guest's work.
    pub host_time: std::time::Duration,
    /// When the host call under way began.
    pub host_since: Option<std::time::Instant>,
}

/// What one VM did since the journal was last taken: the raw material of an `Outcome`.
#[derive(Default)]
pub(crate) struct Journal {
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// HTTP calls dispatched.
    pub calls: Vec<HttpCall>,
    /// Queue items enqueued.
    pub queue_items: Vec<QueueItem>,
    /// Names of metrics touched.
    pub metrics: Vec<String>,
}

/// One HTTP stream as the host sees it between callbacks.
///
/// The `*_open` flags follow Envoy: a header map is readable and writable from its own
/// callback until the filter lets it go (`Continue`, or `proxy_continue_stream` after a
/// `Pause`); after that Envoy drops its pointer and a host call on it gets
/// `BAD_ARGUMENT` (reads of the whole map get an empty map).
#[derive(Default)]
pub(crate) struct Stream {
    /// Request headers (current, mutable while open).
    pub request_headers: Headers,
    /// Whether request headers are in reach.
    pub request_headers_open: bool,
    /// The request body buffer: the current chunk, or everything buffered since a `Pause`.
    pub request_body: Vec<u8>,
    /// Whether the request body is in reach.
    pub request_body_open: bool,
    /// Request trailers.
    pub request_trailers: Option<Headers>,
    /// Whether request trailers are in reach.
    pub request_trailers_open: bool,
    /// Response headers.
    pub response_headers: Headers,
    /// Whether response headers are in reach.
    pub response_headers_open: bool,
    /// The response body buffer.
    pub response_body: Vec<u8>,
    /// Whether the response body is in reach.
    pub response_body_open: bool,
    /// Response trailers.
    pub response_trailers: Option<Headers>,
    /// Whether response trailers are in reach.
    pub response_trailers_open: bool,
    /// `end_of_stream` of the body callback being run (trailers may be added then).
    pub end_of_stream: bool,
    /// In `proxy_on_log`: Envoy's access-log phase, where the final headers are
    /// readable and nothing is writable.
    pub access_log: bool,
    /// The request headers as forwarded (for the access-log phase and properties).
    pub forwarded_request_headers: Headers,
    /// The response headers as sent downstream (for the access-log phase).
    pub sent_response_headers: Headers,
    /// Whether `sent_response_headers` went downstream (as opposed to a direct reply).
    pub response_headers_sent: bool,
    /// The response trailers as sent downstream (for the access-log phase).
    pub sent_response_trailers: Option<Headers>,
    /// The first local reply asked for.
    pub local_reply: Option<LocalReply>,
    /// `proxy_continue_stream(HTTP_REQUEST)` was called.
    pub continue_request: bool,
    /// `proxy_continue_stream(HTTP_RESPONSE)` was called.
    pub continue_response: bool,
    /// `proxy_close_stream` was called on the request or response.
    pub close_requested: bool,
    /// Filter state by Envoy key (`wasm.` + path).
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// Stream facts served as properties.
    pub info: StreamInfo,
}

/// Facts about a stream that `proxy_get_property` serves.
#[derive(Clone, Default)]
pub(crate) struct StreamInfo {
    /// `request.id` (`x-request-id`).
    pub request_id: String,
    /// `request.time`, ns since the epoch.
    pub start_nanos: u64,
    /// `connection.id`.
    pub connection_id: u64,
    /// `request.size` so far.
    pub request_bytes: u64,
    /// `response.size` so far.
    pub response_bytes: u64,
    /// `response.code` once known.
    pub response_code: Option<u16>,
    /// `response.code_details` once known.
    pub response_code_details: Option<String>,
    /// Properties the test attached to this request.
    pub extra: BTreeMap<String, Vec<u8>>,
}

/// The response (or failure) handed to `proxy_on_http_call_response`.
pub(crate) struct CallResponse {
    /// Headers with `:status`; empty for a failed call.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: Headers,
    /// Whether the call failed (`proxy_get_status` then reports it).
    pub failed: bool,
}

impl CallResponse {
    /// The delivery of `response`.
    pub fn ok(response: &HttpResponse) -> Self {
        Self {
            headers: response.wire_headers(),
            body: response.body.clone(),
            trailers: response.trailers.clone(),
            failed: false,
        }
    }

    /// The delivery of a failure: zero headers, as Envoy's `onHttpCallFailure`.
    pub fn failure() -> Self {
        Self {
            headers: Headers::new(),
            body: Vec::new(),
            trailers: Headers::new(),
            failed: true,
        }
    }
}

/// Something to deliver to a VM once the callback running now has returned.
pub(crate) enum Event {
    /// `proxy_on_http_call_response`.
    CallResponse {
        /// Target VM.
        vm: VmId,
        /// The context that made the call.
        context_id: u32,
        /// The call token.
        token: u32,
        /// What to deliver.
        response: CallResponse,
    },
    /// `proxy_on_queue_ready`.
    QueueReady {
        /// The VM that registered the queue.
        vm: VmId,
        /// Its root context.
        context_id: u32,
        /// The queue token.
        token: u32,
    },
}

impl Event {
    /// The VM the event is for.
    pub fn vm(&self) -> VmId {
        match self {
            Event::CallResponse { vm, .. } | Event::QueueReady { vm, .. } => *vm,
        }
    }
}

/// A shared queue (`proxy_register_shared_queue`).
pub(crate) struct Queue {
    /// The `vm_id` it belongs to.
    pub vm_id: String,
    /// Its name.
    pub name: String,
    /// Items waiting.
    pub items: VecDeque<Vec<u8>>,
    /// The last registrant (VM, root context): it gets `proxy_on_queue_ready`.
    pub owner: (VmId, u32),
}

/// A metric of the process.
pub(crate) struct Metric {
    /// Its type.
    pub kind: MetricType,
    /// Counter or gauge value.
    pub value: u64,
    /// Histogram samples.
    pub samples: Vec<u64>,
}

impl Metric {
    /// The public view.
    pub fn value(&self) -> MetricValue {
        match self.kind {
            MetricType::Counter => MetricValue::Counter(self.value),
            MetricType::Gauge => MetricValue::Gauge(self.value),
            MetricType::Histogram => MetricValue::Histogram(self.samples.clone()),
        }
    }
}

/// A call whose reply the test gives later (`Reply::Hold`).
pub(crate) struct HeldCall {
    /// The call.
    pub call: HttpCall,
}

/// What the VMs of one simulated Envoy process share.
pub(crate) struct Process {
    /// Virtual wall clock, ns since the Unix epoch.
    pub realtime_nanos: u64,
    /// Virtual monotonic clock, ns.
    pub monotonic_nanos: u64,
    /// Shared data: vm_id -> key -> (value, cas).
    pub shared_data: HashMap<String, HashMap<String, (Vec<u8>, u32)>>,
    /// The next CAS value; grows on every write and skips 0 (proxy-wasm-cpp-host's
    /// `SharedData::nextCas`).
    pub next_cas: u32,
    /// Queue tokens by (vm_id, name).
    pub queue_tokens: HashMap<(String, String), u32>,
    /// Queues by token.
    pub queues: HashMap<u32, Queue>,
    /// The next queue token.
    pub next_queue_token: u32,
    /// Metrics by name (Envoy's stats are process-wide).
    pub metrics: BTreeMap<String, Metric>,
    /// Clusters by name.
    pub upstreams: HashMap<String, Upstream>,
    /// Every call ever dispatched, in order.
    pub calls: Vec<HttpCall>,
    /// Calls waiting for [`Host::answer`](crate::Host::answer).
    pub held: Vec<HeldCall>,
    /// Deliveries waiting for the current callback to return.
    pub events: VecDeque<Event>,
    /// The next connection id handed to a stream.
    pub next_connection_id: u64,
    /// Injected faults: import name -> (status to return, calls left). Tests use them to
    /// drive a guest into the paths Envoy's refusals take (the Rust SDK panics on any status
    /// it does not expect, which traps the VM).
    pub faults: HashMap<String, (Status, u32)>,
}

impl Process {
    /// A process whose clocks start at `realtime_nanos`.
    pub fn new(realtime_nanos: u64) -> Self {
        Self {
            realtime_nanos,
            monotonic_nanos: 1_000_000_000,
            shared_data: HashMap::new(),
            next_cas: 1,
            queue_tokens: HashMap::new(),
            queues: HashMap::new(),
            next_queue_token: 1,
            faults: HashMap::new(),
            metrics: BTreeMap::new(),
            upstreams: HashMap::new(),
            calls: Vec::new(),
            held: Vec::new(),
            events: VecDeque::new(),
            next_connection_id: 1,
        }
    }

    /// Hands out the next CAS value.
    pub fn take_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        cas
    }
}

/// Locks the process, recovering from a poisoned lock (a panicking test thread must not
/// turn every later host call into a second panic).
pub(crate) fn lock(process: &Mutex<Process>) -> MutexGuard<'_, Process> {
    process
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HostState {
    /// The state of a new VM of a plugin with `settings` in `process`.
    pub fn new(process: Arc<Mutex<Process>>, vm: VmId, settings: &Settings) -> Self {
        Self {
            process,
            vm,
            vm_id: settings.vm_id.clone(),
            plugin_name: settings.name.clone(),
            root_id: settings.root_id.clone(),
            plugin_configuration: settings.configuration.clone(),
            vm_configuration: settings.vm_configuration.clone(),
            environment: settings.environment.clone(),
            plugin_properties: settings.properties.clone(),
            log_level: settings.log_level,
            memory: None,
            allocate: None,
            root_context_id: 1,
            active: None,
            effective_context: 0,
            streams: Streams::default(),
            call_response: None,
            tick_period_ms: 0,
            tick_changed: false,
            next_call_token: 1,
            metric_ids: HashMap::new(),
            next_metric: 0,
            rng: 0x5EED_0000_0000_0000 ^ vm.0 as u64,
            journal: Journal::default(),
            host_calls: 0,
            host_time: std::time::Duration::ZERO,
            host_since: None,
        }
    }

    /// Locks the process.
    pub fn process(&self) -> MutexGuard<'_, Process> {
        lock(&self.process)
    }

    /// The stream the effective context names, if it is a stream.
    pub fn stream(&self) -> Option<&Stream> {
        self.streams.get(&self.effective_context)
    }

    /// The stream the effective context names, mutably.
    pub fn stream_mut(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective_context)
    }

    /// Records a log line if it passes the level.
    pub fn log(&mut self, level: LogLevel, message: String) {
        if level >= self.log_level {
            self.journal.logs.push(LogLine {
                vm: self.vm,
                level,
                message,
            });
        }
    }
}

/// An import's failure: either a status for the guest, or a trap that ends the callback.
pub(crate) enum HostError {
    /// Return this status to the guest.
    Status(Status),
    /// Trap (e.g. the guest's allocator trapped while the host copied data in).
    Trap(wasmtime::Error),
}

impl From<Status> for HostError {
    fn from(status: Status) -> Self {
        HostError::Status(status)
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(error: wasmtime::Error) -> Self {
        HostError::Trap(error)
    }
}

/// The injected fault for `import`, if one is armed (counting it down).
pub(crate) fn take_fault(state: &HostState, import: &str) -> Option<Status> {
    let mut process = state
        .process
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (status, left) = process.faults.get_mut(import)?;
    let status = *status;
    *left = left.saturating_sub(1);
    if *left == 0 {
        process.faults.remove(import);
    }
    Some(status)
}

/// The value an import returns: `OK`, the status, or a trap.
pub(crate) fn status(result: Result<(), HostError>) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(HostError::Status(status)) => Ok(status as u32),
        Err(HostError::Trap(error)) => Err(error),
    }
}

/// Builds the linker with every import, once per plugin: `instantiate_pre` then makes
/// each VM cheap to create.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    logging::add_to_linker(&mut linker)?;
    headers::add_to_linker(&mut linker)?;
    buffers::add_to_linker(&mut linker)?;
    shared_data::add_to_linker(&mut linker)?;
    queues::add_to_linker(&mut linker)?;
    http_call::add_to_linker(&mut linker)?;
    metrics::add_to_linker(&mut linker)?;
    properties::add_to_linker(&mut linker)?;
    stream::add_to_linker(&mut linker)?;
    wasi::add_to_linker(&mut linker)?;
    Ok(linker)
}
