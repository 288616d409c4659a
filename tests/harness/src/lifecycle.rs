//! One HTTP stream through a VM, callback by callback, with Envoy's semantics.
//!
//! The order is Envoy's: `proxy_on_context_create`, request headers, each request body
//! chunk, request trailers, then (if the request reached the upstream) response headers,
//! body chunks and trailers, and finally `proxy_on_log`, `proxy_on_done`,
//! `proxy_on_delete` (Envoy runs the access log, which is when `proxy_on_log` comes,
//! before it destroys the filter; the spec lists `proxy_on_done` first).
//!
//! What each returned action does (proxy-wasm-cpp-host `convertVmCallResultTo*`):
//! - `Pause` from a headers callback stops everything (StopAllIterationAndWatermark):
//!   unless an HTTP call response resumes the stream, it stalls;
//! - `Pause` from a body callback before the end of stream buffers (StopIterationAndBuffer):
//!   the next callback sees the whole body so far; at the end of stream it stalls too;
//! - a local reply from the request side goes back through this filter's response
//!   callbacks (Envoy encodes local replies through the filter chain); from response
//!   headers it replaces the response without them; once the response headers went out it
//!   can only reset the stream;
//! - a trap fails the VM: FAIL_CLOSED/FAIL_RELOAD answer 503 `wasm_fail_stream` (or reset
//!   if the response started) and skip the VM from then on; FAIL_OPEN lets the stream go on
//!   as if every later callback returned `Continue`.

use anyhow::Result;

use crate::headers::Headers;
use crate::host::abi::Action;
use crate::host::{lock, Stream, StreamInfo};
use crate::outcome::{
    DownstreamResponse, LocalReply, Outcome, Phase, PhaseAction, UpstreamRequest,
};
use crate::plugin::FailurePolicy;
use crate::proxy::{len_u32, Host};
use crate::request::{Request, UpstreamResponse};
use crate::VmId;

/// How the stream goes on after a callback.
enum Flow {
    /// Forward what was seen.
    Continue,
    /// Stopped and not resumed.
    Pause,
    /// The filter sent a local reply.
    LocalReply,
    /// The VM trapped (and the policy is not FAIL_OPEN).
    Trap,
    /// The filter called `proxy_close_stream`.
    Close,
}

/// How the request side ended.
enum RequestEnd {
    /// The whole request reached the upstream.
    Upstream,
    /// The filter answered locally.
    LocalReply(LocalReply),
    /// Nothing more happens (stall, reset, failure reply).
    Stop,
}

impl Host {
    /// Runs `request` through the first VM (worker 0).
    pub fn send(&mut self, request: &Request) -> Result<Outcome> {
        self.send_to(VmId(0), request)
    }

    /// Runs `request` through `vm` and reports what the plugin did.
    pub fn send_to(&mut self, vm: VmId, request: &Request) -> Result<Outcome> {
        let index = self.index(vm)?;
        self.flush();
        let mut out = empty_outcome(vm);
        if self.vms[index].failed.is_some() {
            match self.vms[index].plugin.settings.failure_policy {
                FailurePolicy::FailClosed => {
                    out.vm_failed = true;
                    out.response = Some(fail_stream_reply());
                }
                FailurePolicy::FailOpen => {
                    out.vm_failed = true;
                    let headers = self.with_request_id(request.headers.clone());
                    pass_through(request, headers, &mut out);
                }
                FailurePolicy::FailReload => {
                    self.reload(index)?;
                    out.vm_reloaded = true;
                    self.run_stream(index, request, &mut out)?;
                }
            }
        } else {
            self.run_stream(index, request, &mut out)?;
        }
        self.finish_outcome(&mut out);
        Ok(out)
    }

    /// Adds Envoy's generated `x-request-id` when the request has none.
    fn with_request_id(&mut self, mut headers: Headers) -> Headers {
        if !headers.contains("x-request-id") {
            headers.add(
                "x-request-id",
                format!("00000000-0000-4000-8000-{:012x}", self.next_request),
            );
            self.next_request += 1;
        }
        headers
    }

    /// The stream of `context_id` on VM `index`.
    fn stream(&mut self, index: usize, context_id: u32) -> Option<&mut Stream> {
        self.vms[index]
            .store
            .data_mut()
            .streams
            .get_mut(&context_id)
    }

    /// Whether the VM's failure policy is FAIL_OPEN.
    fn fail_open(&self, index: usize) -> bool {
        self.vms[index].plugin.settings.failure_policy == FailurePolicy::FailOpen
    }

    /// The whole stream.
    fn run_stream(&mut self, index: usize, request: &Request, out: &mut Outcome) -> Result<()> {
        let context_id = self.vms[index].new_context_id();
        out.context_id = context_id;
        let headers = self.with_request_id(request.headers.clone());
        let info = {
            let mut process = lock(&self.process);
            let connection_id = process.next_connection_id;
            process.next_connection_id += 1;
            StreamInfo {
                request_id: headers.get("x-request-id").unwrap_or_default().to_owned(),
                start_nanos: process.realtime_nanos,
                connection_id,
                extra: request.properties.clone(),
                ..StreamInfo::default()
            }
        };
        self.vms[index].store.data_mut().streams.insert(
            context_id,
            Stream {
                request_headers: headers,
                info,
                ..Stream::default()
            },
        );

        let root = self.vms[index].root_context_id();
        let exports = self.vms[index].exports.clone();
        if let Some(create) = &exports.on_context_create {
            // A trap here fails the VM; the first stream callback then applies the policy.
            let _ = self.run(
                index,
                Phase::ContextCreate,
                context_id,
                create,
                (context_id, root),
            );
        }

        match self.request_side(index, context_id, request, out)? {
            RequestEnd::Upstream => {
                self.response_side(index, context_id, &request.response, false, out)?
            }
            RequestEnd::LocalReply(reply) => {
                let response = local_reply_response(&reply);
                if let Some(stream) = self.stream(index, context_id) {
                    stream.info.response_code_details = Some(reply.details.clone());
                }
                self.response_side(index, context_id, &response, true, out)?;
            }
            RequestEnd::Stop => {}
        }
        self.end_stream(index, context_id, out)
    }

    /// Calls one stream callback and decides how the stream goes on.
    fn callback(
        &mut self,
        index: usize,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
        out: &mut Outcome,
    ) -> Result<Flow> {
        if self.vms[index].failed.is_some() {
            // CHECK_FAIL_HTTP: a failed VM is not called.
            return Ok(if self.fail_open(index) {
                Flow::Continue
            } else {
                Flow::Trap
            });
        }
        if let Some(stream) = self.stream(index, context_id) {
            stream.continue_request = false;
            stream.continue_response = false;
        }
        let exports = self.vms[index].exports.clone();
        let (n, eos) = (len_u32(size), u32::from(end_of_stream));
        let result = match phase {
            Phase::RequestHeaders => exports
                .on_request_headers
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n, eos))),
            Phase::RequestBody => exports
                .on_request_body
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n, eos))),
            Phase::RequestTrailers => exports
                .on_request_trailers
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n))),
            Phase::ResponseHeaders => exports
                .on_response_headers
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n, eos))),
            Phase::ResponseBody => exports
                .on_response_body
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n, eos))),
            Phase::ResponseTrailers => exports
                .on_response_trailers
                .as_ref()
                .map(|f| self.run(index, phase, context_id, f, (context_id, n))),
            _ => None,
        };
        let action = match result {
            None => Action::Continue,
            Some(Ok(raw)) => Action::try_from(raw).unwrap_or(Action::Pause),
            Some(Err(_trap)) => {
                return Ok(if self.fail_open(index) {
                    Flow::Continue
                } else {
                    Flow::Trap
                });
            }
        };
        out.actions.push(PhaseAction {
            phase,
            size,
            end_of_stream,
            action,
        });
        // HTTP call responses and queue notifications arrive after the callback returns;
        // one of them may resume the stream or answer it.
        self.pump()?;
        let request_side = matches!(
            phase,
            Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers
        );
        let Some(stream) = self.stream(index, context_id) else {
            return Ok(Flow::Close);
        };
        Ok(if stream.local_reply.is_some() {
            Flow::LocalReply
        } else if stream.close_requested {
            Flow::Close
        } else if action == Action::Continue
            || (request_side && stream.continue_request)
            || (!request_side && stream.continue_response)
        {
            Flow::Continue
        } else {
            Flow::Pause
        })
    }

    /// Request headers, body and trailers.
    fn request_side(
        &mut self,
        index: usize,
        context_id: u32,
        request: &Request,
        out: &mut Outcome,
    ) -> Result<RequestEnd> {
        let chunks = &request.body;
        let trailers = &request.trailers;
        let headers_end = chunks.is_empty() && trailers.is_none();

        let count = match self.stream(index, context_id) {
            Some(stream) => {
                stream.request_headers_open = true;
                stream.end_of_stream = headers_end;
                stream.request_headers.len()
            }
            None => 0,
        };
        match self.callback(
            index,
            context_id,
            Phase::RequestHeaders,
            count,
            headers_end,
            out,
        )? {
            Flow::Continue => {}
            other => {
                return Ok(self.stop_request(index, context_id, Phase::RequestHeaders, other, out))
            }
        }
        if let Some(stream) = self.stream(index, context_id) {
            stream.request_headers_open = false;
            // Moved, not copied: nothing can change them any more. The outcome gets them
            // when the stream ends.
            stream.forwarded_request_headers = std::mem::take(&mut stream.request_headers);
            out.upstream = Some(UpstreamRequest {
                complete: headers_end,
                ..UpstreamRequest::default()
            });
        }

        let mut buffering = false;
        for (position, chunk) in chunks.iter().enumerate() {
            let end = position + 1 == chunks.len() && trailers.is_none();
            let size = match self.stream(index, context_id) {
                Some(stream) => {
                    if !buffering {
                        stream.request_body.clear();
                    }
                    stream.request_body.extend_from_slice(chunk);
                    stream.request_body_open = true;
                    stream.end_of_stream = end;
                    stream.info.request_bytes += chunk.len() as u64;
                    stream.request_body.len()
                }
                None => 0,
            };
            match self.callback(index, context_id, Phase::RequestBody, size, end, out)? {
                Flow::Continue => {
                    buffering = false;
                    self.forward_request_body(index, context_id, end, out);
                }
                Flow::Pause if !end => buffering = true,
                other => {
                    return Ok(self.stop_request(index, context_id, Phase::RequestBody, other, out))
                }
            }
        }

        if let Some(trailers) = trailers {
            let count = match self.stream(index, context_id) {
                Some(stream) => {
                    stream.request_trailers = Some(trailers.clone());
                    stream.request_trailers_open = true;
                    stream.end_of_stream = true;
                    trailers.len()
                }
                None => 0,
            };
            match self.callback(index, context_id, Phase::RequestTrailers, count, false, out)? {
                // Trailers release whatever body was still buffered.
                Flow::Continue => self.forward_request_body(index, context_id, true, out),
                other => {
                    return Ok(self.stop_request(
                        index,
                        context_id,
                        Phase::RequestTrailers,
                        other,
                        out,
                    ))
                }
            }
        }
        Ok(RequestEnd::Upstream)
    }

    /// Forwards the request body buffer; at the end of stream, trailers too.
    fn forward_request_body(
        &mut self,
        index: usize,
        context_id: u32,
        end: bool,
        out: &mut Outcome,
    ) {
        let Some(stream) = self.stream(index, context_id) else {
            return;
        };
        let body = std::mem::take(&mut stream.request_body);
        stream.request_body_open = false;
        let trailers = if end {
            stream.request_trailers_open = false;
            stream.request_trailers.clone()
        } else {
            None
        };
        if let Some(upstream) = out.upstream.as_mut() {
            append(&mut upstream.body, body);
            if end {
                upstream.trailers = trailers;
                upstream.complete = true;
            }
        }
    }

    /// Ends the request side on anything but `Continue`.
    fn stop_request(
        &mut self,
        index: usize,
        context_id: u32,
        phase: Phase,
        flow: Flow,
        out: &mut Outcome,
    ) -> RequestEnd {
        match flow {
            Flow::Continue => RequestEnd::Upstream,
            Flow::Pause => {
                out.stalled = Some(phase);
                RequestEnd::Stop
            }
            Flow::LocalReply => match self
                .stream(index, context_id)
                .and_then(|s| s.local_reply.take())
            {
                Some(reply) => {
                    out.local_reply = Some(reply.clone());
                    RequestEnd::LocalReply(reply)
                }
                None => RequestEnd::Stop,
            },
            Flow::Trap => {
                // failStream(Request): a 503 that this (failed) VM never sees.
                out.response = Some(fail_stream_reply());
                RequestEnd::Stop
            }
            Flow::Close => {
                out.reset = true;
                RequestEnd::Stop
            }
        }
    }

    /// Response headers, body and trailers of the upstream's answer or of a local reply.
    fn response_side(
        &mut self,
        index: usize,
        context_id: u32,
        response: &UpstreamResponse,
        local: bool,
        out: &mut Outcome,
    ) -> Result<()> {
        let chunks = &response.body;
        let headers_end = chunks.is_empty() && response.trailers.is_none();
        let count = match self.stream(index, context_id) {
            Some(stream) => {
                stream.response_headers = response.wire_headers();
                stream.response_headers_open = true;
                stream.end_of_stream = headers_end;
                stream.info.response_code = Some(response.status);
                if stream.info.response_code_details.is_none() {
                    stream.info.response_code_details = Some("via_upstream".to_owned());
                }
                stream.response_headers.len()
            }
            None => 0,
        };
        match self.callback(
            index,
            context_id,
            Phase::ResponseHeaders,
            count,
            headers_end,
            out,
        )? {
            Flow::Continue => {}
            Flow::Pause => {
                // Envoy hangs here (DESIGN.md: Pause from response headers never resumes).
                out.stalled = Some(Phase::ResponseHeaders);
                return Ok(());
            }
            Flow::LocalReply => {
                // Headers not sent yet: the local reply replaces the response directly.
                if let Some(reply) = self
                    .stream(index, context_id)
                    .and_then(|s| s.local_reply.take())
                {
                    out.response = Some(direct_reply(&reply));
                    out.local_reply.get_or_insert(reply);
                }
                return Ok(());
            }
            Flow::Trap => {
                out.response = Some(fail_stream_reply());
                return Ok(());
            }
            Flow::Close => {
                out.reset = true;
                return Ok(());
            }
        }
        if let Some(stream) = self.stream(index, context_id) {
            stream.response_headers_open = false;
            stream.sent_response_headers = std::mem::take(&mut stream.response_headers);
            stream.response_headers_sent = true;
            let status = stream
                .sent_response_headers
                .get(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(response.status);
            stream.info.response_code = Some(status);
            out.response = Some(DownstreamResponse {
                status,
                // Filled from the stream when it ends (see `end_stream`).
                headers: Headers::new(),
                body: Vec::new(),
                trailers: None,
                local,
            });
        }

        let mut buffering = false;
        for (position, chunk) in chunks.iter().enumerate() {
            let end = position + 1 == chunks.len() && response.trailers.is_none();
            let size = match self.stream(index, context_id) {
                Some(stream) => {
                    if !buffering {
                        stream.response_body.clear();
                    }
                    stream.response_body.extend_from_slice(chunk);
                    stream.response_body_open = true;
                    stream.end_of_stream = end;
                    stream.info.response_bytes += chunk.len() as u64;
                    stream.response_body.len()
                }
                None => 0,
            };
            match self.callback(index, context_id, Phase::ResponseBody, size, end, out)? {
                Flow::Continue => {
                    buffering = false;
                    self.forward_response_body(index, context_id, end, out);
                }
                Flow::Pause if !end => buffering = true,
                other => {
                    self.stop_response(index, context_id, Phase::ResponseBody, other, out);
                    return Ok(());
                }
            }
        }

        if let Some(trailers) = &response.trailers {
            let count = match self.stream(index, context_id) {
                Some(stream) => {
                    stream.response_trailers = Some(trailers.clone());
                    stream.response_trailers_open = true;
                    stream.end_of_stream = true;
                    trailers.len()
                }
                None => 0,
            };
            match self.callback(
                index,
                context_id,
                Phase::ResponseTrailers,
                count,
                false,
                out,
            )? {
                Flow::Continue => self.forward_response_body(index, context_id, true, out),
                other => self.stop_response(index, context_id, Phase::ResponseTrailers, other, out),
            }
        }
        Ok(())
    }

    /// Sends the response body buffer downstream; at the end of stream, trailers too.
    fn forward_response_body(
        &mut self,
        index: usize,
        context_id: u32,
        end: bool,
        out: &mut Outcome,
    ) {
        let Some(stream) = self.stream(index, context_id) else {
            return;
        };
        let body = std::mem::take(&mut stream.response_body);
        stream.response_body_open = false;
        let trailers = if end {
            stream.response_trailers_open = false;
            stream.sent_response_trailers = stream.response_trailers.clone();
            stream.response_trailers.clone()
        } else {
            None
        };
        if let Some(response) = out.response.as_mut() {
            append(&mut response.body, body);
            if end {
                response.trailers = trailers;
            }
        }
    }

    /// Ends the response side after the headers went out: only a reset is left.
    fn stop_response(
        &mut self,
        index: usize,
        context_id: u32,
        phase: Phase,
        flow: Flow,
        out: &mut Outcome,
    ) {
        match flow {
            Flow::Continue => {}
            Flow::Pause => out.stalled = Some(phase),
            Flow::LocalReply => {
                if let Some(reply) = self
                    .stream(index, context_id)
                    .and_then(|s| s.local_reply.take())
                {
                    out.local_reply.get_or_insert(reply);
                }
                out.reset = true;
            }
            Flow::Trap | Flow::Close => out.reset = true,
        }
    }

    /// `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`, then forgets the stream.
    fn end_stream(&mut self, index: usize, context_id: u32, out: &mut Outcome) -> Result<()> {
        if let Some(stream) = self.stream(index, context_id) {
            stream.request_headers_open = false;
            stream.request_body_open = false;
            stream.request_trailers_open = false;
            stream.response_headers_open = false;
            stream.response_body_open = false;
            stream.response_trailers_open = false;
            stream.access_log = true;
            // The access log sees the request as it ended up, forwarded or not, and the
            // response the client got, whoever made it.
            if stream.forwarded_request_headers.is_empty() {
                stream.forwarded_request_headers = std::mem::take(&mut stream.request_headers);
            }
            if !stream.response_headers_sent {
                if let Some(response) = &out.response {
                    stream.sent_response_headers = response.headers.clone();
                }
            }
        }
        let exports = self.vms[index].exports.clone();
        if self.vms[index].failed.is_none() {
            if let Some(on_log) = &exports.on_log {
                let _ = self.run(index, Phase::Log, context_id, on_log, context_id);
            }
        }
        if let Some(stream) = self.stream(index, context_id) {
            stream.access_log = false;
        }
        if self.vms[index].failed.is_none() {
            if let Some(on_done) = &exports.on_done {
                let _ = self.run(index, Phase::Done, context_id, on_done, context_id);
            }
        }
        if self.vms[index].failed.is_none() {
            if let Some(on_delete) = &exports.on_delete {
                let _ = self.run(index, Phase::Delete, context_id, on_delete, context_id);
            }
        }
        if let Some(stream) = self.vms[index].store.data_mut().streams.remove(&context_id) {
            out.filter_state = stream.filter_state;
            if let Some(upstream) = out.upstream.as_mut() {
                upstream.headers = stream.forwarded_request_headers;
            }
            if stream.response_headers_sent {
                if let Some(response) = out.response.as_mut() {
                    response.headers = stream.sent_response_headers;
                }
            }
        }
        self.forget_context(VmId(index), context_id);
        self.pump()
    }

    /// Fills the outcome with what the VMs did while the request ran.
    fn finish_outcome(&mut self, out: &mut Outcome) {
        let collected = std::mem::take(&mut self.collected);
        out.http_calls = collected.calls;
        out.queue_items = collected.queue_items;
        out.trap = collected.traps.into_iter().next();
        {
            let process = lock(&self.process);
            for name in collected.metrics {
                if let Some(metric) = process.metrics.get(&name) {
                    out.metrics.insert(name, metric.value());
                }
            }
        }
        self.logs.extend(collected.logs.iter().cloned());
        out.logs = collected.logs;
    }
}

/// Appends `chunk` to `body`, moving it when `body` is still empty.
fn append(body: &mut Vec<u8>, chunk: Vec<u8>) {
    if body.is_empty() {
        *body = chunk;
    } else {
        body.extend_from_slice(&chunk);
    }
}

/// An outcome with nothing in it yet.
fn empty_outcome(vm: VmId) -> Outcome {
    Outcome {
        vm,
        context_id: 0,
        actions: Vec::with_capacity(8),
        upstream: None,
        local_reply: None,
        response: None,
        stalled: None,
        reset: false,
        trap: None,
        vm_failed: false,
        vm_reloaded: false,
        http_calls: Vec::new(),
        queue_items: Vec::new(),
        metrics: Default::default(),
        logs: Vec::new(),
        filter_state: Default::default(),
    }
}

/// Envoy's answer on a failed VM (`failStream`): 503, empty body, details
/// `wasm_fail_stream`.
fn fail_stream_reply() -> DownstreamResponse {
    DownstreamResponse {
        status: 503,
        headers: Headers::from_pairs([(":status", "503")]),
        body: Vec::new(),
        trailers: None,
        local: true,
    }
}

/// The response a local reply becomes (Envoy's `Utility::sendLocalReply`): the filter's
/// headers, `content-length` and, when the body is non-empty and the filter named no
/// content type, `content-type: text/plain`.
fn local_reply_response(reply: &LocalReply) -> UpstreamResponse {
    let mut headers = reply.headers.clone();
    if !reply.body.is_empty() {
        headers.replace("content-length", reply.body.len().to_string());
        if !headers.contains("content-type") {
            headers.add("content-type", "text/plain");
        }
    }
    UpstreamResponse {
        status: u16::try_from(reply.status).unwrap_or(500),
        headers,
        body: if reply.body.is_empty() {
            Vec::new()
        } else {
            vec![reply.body.clone()]
        },
        trailers: None,
    }
}

/// A local reply sent straight downstream, bypassing the filter.
fn direct_reply(reply: &LocalReply) -> DownstreamResponse {
    let response = local_reply_response(reply);
    DownstreamResponse {
        status: response.status,
        headers: response.wire_headers(),
        body: reply.body.clone(),
        trailers: None,
        local: true,
    }
}

/// What a FAIL_OPEN VM does: nothing; the request and response pass untouched.
fn pass_through(request: &Request, headers: Headers, out: &mut Outcome) {
    out.upstream = Some(UpstreamRequest {
        headers,
        body: request.body.concat(),
        trailers: request.trailers.clone(),
        complete: true,
    });
    out.response = Some(DownstreamResponse {
        status: request.response.status,
        headers: request.response.wire_headers(),
        body: request.response.body.concat(),
        trailers: request.response.trailers.clone(),
        local: false,
    });
}
