//! A proxy-wasm guest built to exercise the harness's host faithfully.
//!
//! The harness's own tests load it (`cargo build -p tollgate-harness-probe --target
//! wasm32-wasip1 --release`) and steer it two ways:
//!
//! - the **plugin configuration** is a list of words for the root context:
//!   `reject` (refuse the configuration), `tick=<ms>` (set a tick period), `tick-dispatch`
//!   (call `GET /v1/snapshot` on cluster `control` every tick and store the answer in shared
//!   data `snapshot`), `tick-trap` (panic in `on_tick`), `queue-owner` (register queue
//!   `usage` and log each `on_queue_ready`), `drain` (dequeue everything when notified);
//! - the request header **`x-probe`** is a comma-separated list of commands for that
//!   stream; each is documented at [`Probe`]'s callbacks.
//!
//! It uses only the SDK's safe API, so a host status the SDK does not expect makes it
//! panic, and with `panic = "abort"` the VM traps, exactly as a real filter would in Envoy.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType, Status};

/// The start function (`_initialize`); private so the generated export needs no docs.
mod entry {
    use super::ProbeRoot;
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Trace);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
    }}
}

/// The cluster the probe calls.
const CLUSTER: &str = "control";

/// Root-context switches parsed from the plugin configuration.
#[derive(Default)]
struct ProbeRoot {
    tick_dispatch: bool,
    tick_trap: bool,
    drain: bool,
    ticks: u64,
}

impl Context for ProbeRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        log::info!("root call {token_id} answered: status={status:?} headers={num_headers} body={body_size}");
        if num_headers == 0 {
            log::warn!("root call {token_id} failed");
            return;
        }
        let (_, cas) = self.get_shared_data("snapshot");
        if let Err(status) = self.set_shared_data("snapshot", Some(&body), cas) {
            log::warn!("snapshot store refused: {status:?}");
        }
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::debug!("vm start");
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        for word in config.split_whitespace() {
            match word.split_once('=') {
                Some(("tick", ms)) => match ms.parse::<u64>() {
                    Ok(ms) => self.set_tick_period(Duration::from_millis(ms)),
                    Err(_) => {
                        log::error!("bad tick period {ms:?}");
                        return false;
                    }
                },
                _ => match word {
                    "reject" => {
                        log::error!("probe: configuration rejected on purpose");
                        return false;
                    }
                    "tick-dispatch" => self.tick_dispatch = true,
                    "tick-trap" => self.tick_trap = true,
                    "drain" => self.drain = true,
                    "queue-owner" => {
                        let token = self.register_shared_queue("usage");
                        log::info!("registered queue usage as {token}");
                    }
                    other => log::warn!("unknown probe word {other:?}"),
                },
            }
        }
        log::info!("configured with {config:?}");
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        log::info!("tick {} at {now}", self.ticks);
        if self.tick_trap {
            panic!("probe: trap in on_tick");
        }
        if self.tick_dispatch {
            let headers = vec![
                (":method", "GET"),
                (":path", "/v1/snapshot"),
                (":authority", CLUSTER),
            ];
            match self.dispatch_http_call(CLUSTER, headers, None, vec![], Duration::from_secs(1)) {
                Ok(token) => log::info!("tick dispatched call {token}"),
                Err(status) => log::warn!("tick dispatch refused: {status:?}"),
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        log::info!("queue ready {queue_id}");
        if self.drain {
            let mut drained = 0;
            while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
                drained += 1;
                log::info!("dequeued {}", String::from_utf8_lossy(&item));
            }
            log::info!("drained {drained}");
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            context_id,
            commands: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One stream, steered by its `x-probe` header.
struct Probe {
    context_id: u32,
    commands: Vec<String>,
}

impl Probe {
    /// Whether the stream was asked to `command`.
    fn wants(&self, command: &str) -> bool {
        self.commands.iter().any(|c| c == command)
    }

    /// Denies the request with a JSON 429.
    fn deny(&self) {
        self.send_http_response(
            429,
            vec![
                ("content-type", "application/json"),
                ("x-probe-denied", "1"),
            ],
            Some(br#"{"error":{"message":"budget exceeded","type":"insufficient_quota"}}"#),
        );
    }
}

impl Context for Probe {
    /// `dispatch`: the answer to the call made from request headers is written into the
    /// (still paused) request headers, then the request resumes.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        log::info!(
            "stream {} call {token_id}: status={status} headers={num_headers} body={}",
            self.context_id,
            String::from_utf8_lossy(&body)
        );
        self.set_http_request_header("x-probe-call-status", Some(&status));
        if self.wants("deny-after-call") {
            self.deny();
        } else {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Probe {
    /// (`read-request-header-late` reads a request header from response headers.)
    ///
    /// Commands acted on here: `add-request-header`, `replace-path`, `deny`, `trap-request`,
    /// `loop` (runaway guest), `close`, `dispatch` (pause until the call answers),
    /// `dispatch-missing-authority`, `dispatch-unknown-cluster`, `pause-headers`,
    /// `property`, `metrics`, `stale-cas`, `counter`, `time`.
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.commands = self
            .get_http_request_header("x-probe")
            .unwrap_or_default()
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        log::debug!(
            "stream {} request headers: {num_headers} headers, end_of_stream={end_of_stream}, commands={:?}",
            self.context_id,
            self.commands
        );
        if self.wants("trap-request") {
            panic!("probe: trap in on_http_request_headers");
        }
        if self.wants("loop") {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        if self.wants("add-request-header") {
            self.add_http_request_header("x-probe-added", "1");
        }
        if self.wants("replace-path") {
            self.set_http_request_header(":path", Some("/rewritten"));
        }
        if self.wants("time") {
            let now = self
                .get_current_time()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            log::info!("time {now}");
        }
        if self.wants("property") {
            let text =
                |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
            log::info!(
                "property request.path={:?}",
                text(self.get_property(vec!["request", "path"]))
            );
            log::info!(
                "property request.id={:?}",
                text(self.get_property(vec!["request", "id"]))
            );
            log::info!(
                "property plugin_vm_id={:?}",
                text(self.get_property(vec!["plugin_vm_id"]))
            );
            self.set_property(vec!["probe.decision"], Some(b"allow"));
            log::info!(
                "property probe.decision={:?}",
                text(self.get_property(vec!["probe.decision"]))
            );
        }
        if self.wants("metrics") {
            if let Ok(counter) =
                proxy_wasm::hostcalls::define_metric(MetricType::Counter, "probe_requests")
            {
                let _ = proxy_wasm::hostcalls::increment_metric(counter, 1);
            }
            if let Ok(gauge) =
                proxy_wasm::hostcalls::define_metric(MetricType::Gauge, "probe_gauge")
            {
                let _ = proxy_wasm::hostcalls::record_metric(gauge, 7);
            }
            if let Ok(histogram) =
                proxy_wasm::hostcalls::define_metric(MetricType::Histogram, "probe_latency")
            {
                let _ = proxy_wasm::hostcalls::record_metric(histogram, 42);
            }
        }
        if self.wants("stale-cas") {
            let (value, cas) = self.get_shared_data("stale");
            log::info!("stale get: value={value:?} cas={cas:?}");
            let first = self.set_shared_data("stale", Some(b"first"), cas);
            let second = self.set_shared_data("stale", Some(b"second"), cas);
            log::info!("stale first={first:?} second={second:?}");
        }
        if self.wants("counter") {
            for _attempt in 0..10 {
                let (value, cas) = self.get_shared_data("counter");
                let current: u64 = value
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                match self.set_shared_data(
                    "counter",
                    Some((current + 1).to_string().as_bytes()),
                    cas,
                ) {
                    Ok(()) => break,
                    Err(Status::CasMismatch) => log::info!("counter cas mismatch, retrying"),
                    Err(status) => log::warn!("counter write failed: {status:?}"),
                }
            }
        }
        if self.wants("close") {
            self.reset_http_request();
            return Action::Pause;
        }
        if self.wants("deny") {
            self.deny();
            return Action::Pause;
        }
        if self.wants("dispatch-missing-authority") {
            let headers = vec![(":method", "GET"), (":path", "/v1/check")];
            match self.dispatch_http_call(CLUSTER, headers, None, vec![], Duration::from_secs(1)) {
                Ok(token) => log::info!("dispatched {token}"),
                Err(status) => log::warn!("dispatch refused: {status:?}"),
            }
        }
        if self.wants("dispatch-unknown-cluster") {
            let headers = vec![
                (":method", "GET"),
                (":path", "/v1/check"),
                (":authority", "nowhere"),
            ];
            match self.dispatch_http_call("nowhere", headers, None, vec![], Duration::from_secs(1))
            {
                Ok(token) => log::info!("dispatched {token}"),
                Err(status) => log::warn!("dispatch refused: {status:?}"),
            }
        }
        if self.wants("dispatch") || self.wants("deny-after-call") {
            let headers = vec![
                (":method", "POST"),
                (":path", "/v1/check"),
                (":authority", CLUSTER),
            ];
            match self.dispatch_http_call(
                CLUSTER,
                headers,
                Some(b"check"),
                vec![],
                Duration::from_secs(1),
            ) {
                Ok(token) => {
                    log::info!("dispatched {token}");
                    return Action::Pause;
                }
                Err(status) => log::warn!("dispatch refused: {status:?}"),
            }
        }
        if self.wants("pause-headers") {
            return Action::Pause;
        }
        Action::Continue
    }

    /// `buffer-request`: pause until the end of stream, then log the whole body and append
    /// `+probe` to it; `deny-in-body`: deny at the end of stream.
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        log::debug!(
            "stream {} request body: {body_size} bytes, end_of_stream={end_of_stream}",
            self.context_id
        );
        if self.wants("buffer-request") || self.wants("deny-in-body") {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            log::info!(
                "request body {body_size} bytes: {}",
                String::from_utf8_lossy(&body)
            );
            if self.wants("deny-in-body") {
                self.deny();
                return Action::Pause;
            }
            let mut new_body = body;
            new_body.extend_from_slice(b"+probe");
            self.set_http_request_body(0, body_size, &new_body);
        }
        Action::Continue
    }

    /// `response-header`: adds `x-probe-response: 1`; `local-in-response-headers`: a 418
    /// instead of the upstream's answer; `pause-response-headers`: hang (as Envoy does).
    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        log::debug!(
            "stream {} response headers: status={status} {num_headers} headers, end_of_stream={end_of_stream}",
            self.context_id
        );
        if self.wants("response-header") {
            self.add_http_response_header("x-probe-response", "1");
        }
        if self.wants("read-request-header-late") {
            // Envoy let go of the request headers when they were forwarded: BAD_ARGUMENT.
            let value = self.get_http_request_header("x-probe");
            log::info!("late read {value:?}");
        }
        if self.wants("local-in-response-headers") && status != "418" {
            self.send_http_response(418, vec![("x-probe-teapot", "1")], Some(b"teapot"));
            return Action::Pause;
        }
        if self.wants("pause-response-headers") {
            return Action::Pause;
        }
        Action::Continue
    }

    /// `late-response-header`: sets a response header from the body callback (Envoy
    /// refuses with BAD_ARGUMENT, the SDK panics); `buffer-response`: pause until the end of
    /// stream and replace the body; `trap-response-body`: panic; `deny-in-response-body`:
    /// a local reply once the headers went out (Envoy resets the stream).
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        log::debug!(
            "stream {} response body: {body_size} bytes, end_of_stream={end_of_stream}",
            self.context_id
        );
        if self.wants("late-response-header") {
            self.set_http_response_header("x-probe-late", Some("1"));
        }
        if self.wants("trap-response-body") {
            panic!("probe: trap in on_http_response_body");
        }
        if self.wants("deny-in-response-body") {
            self.deny();
            return Action::Pause;
        }
        if self.wants("buffer-response") {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            log::info!("response body {body_size} bytes");
            let mut new_body = b"probe:".to_vec();
            new_body.extend_from_slice(&body);
            self.set_http_response_body(0, body_size, &new_body);
        }
        Action::Continue
    }

    /// `enqueue`: puts `usage:<request id>` on queue `usage` of this VM's `vm_id`;
    /// `log-headers`: logs the final `:path` and `:status` (Envoy's access-log view).
    fn on_log(&mut self) {
        log::debug!("stream {} log", self.context_id);
        if self.wants("log-headers") {
            let path = self.get_http_request_header(":path");
            let status = self.get_http_response_header(":status");
            log::info!("log phase: path={path:?} status={status:?}");
        }
        if self.wants("enqueue") {
            let id = self
                .get_property(vec!["request", "id"])
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            match self.resolve_shared_queue("", "usage") {
                Some(queue) => {
                    let item = format!("usage:{id}");
                    if let Err(status) = self.enqueue_shared_queue(queue, Some(item.as_bytes())) {
                        log::warn!("enqueue failed: {status:?}");
                    }
                }
                None => log::warn!("queue usage not found"),
            }
        }
    }
}
