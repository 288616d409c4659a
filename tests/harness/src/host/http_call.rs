//! `proxy_http_call` (spec, "HTTP calls":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#http-calls>).
//!
//! As Envoy's `Context::httpCall`: the cluster must be one the host knows, and the headers
//! must carry `:path`, `:method` and `:authority`, else `BAD_ARGUMENT`. The call is answered
//! by the cluster's [`Upstream`](crate::Upstream); the answer reaches the guest's
//! `proxy_on_http_call_response` after the current callback returns, or later when the
//! upstream holds it.

use wasmtime::{Caller, Linker};

use crate::upstream::{HttpCall, Reply};

use super::abi::Status;
use super::{lock, memory, pairs, status, CallResponse, Event, HeldCall, HostError, HostState};

/// Registers `proxy_http_call` and the gRPC stand-ins.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         upstream_data: u32,
         upstream_size: u32,
         headers_data: u32,
         headers_size: u32,
         body_data: u32,
         body_size: u32,
         trailers_data: u32,
         trailers_size: u32,
         timeout_ms: u32,
         return_token: u32| {
            let request = RawCall {
                upstream: (upstream_data, upstream_size),
                headers: (headers_data, headers_size),
                body: (body_data, body_size),
                trailers: (trailers_data, trailers_size),
                timeout_ms,
                return_token,
            };
            status(http_call(&mut caller, &request))
        },
    )?;
    // gRPC is not offered: an unknown cluster is PARSE_FAILURE (Envoy's answer), a known
    // one INTERNAL_FAILURE ("failed to send"); both are errors the Rust SDK returns rather
    // than panics on.
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut caller: Caller<'_, HostState>,
         upstream_data: u32,
         upstream_size: u32,
         _service_data: u32,
         _service_size: u32,
         _method_data: u32,
         _method_size: u32,
         _metadata_data: u32,
         _metadata_size: u32,
         _message_data: u32,
         _message_size: u32,
         _timeout_ms: u32,
         _return_token: u32| {
            status(grpc_refused(&mut caller, upstream_data, upstream_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut caller: Caller<'_, HostState>,
         upstream_data: u32,
         upstream_size: u32,
         _service_data: u32,
         _service_size: u32,
         _method_data: u32,
         _method_size: u32,
         _metadata_data: u32,
         _metadata_size: u32,
         _return_token: u32| {
            status(grpc_refused(&mut caller, upstream_data, upstream_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Caller<'_, HostState>, _token: u32, _data: u32, _size: u32, _end: u32| {
            Status::NotFound as u32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_: Caller<'_, HostState>, _token: u32| Status::NotFound as u32,
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_: Caller<'_, HostState>, _token: u32| Status::NotFound as u32,
    )?;
    Ok(())
}

/// The raw arguments of `proxy_http_call`.
struct RawCall {
    upstream: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    return_token: u32,
}

/// `proxy_http_call`.
fn http_call(caller: &mut Caller<'_, HostState>, raw: &RawCall) -> Result<(), HostError> {
    let cluster = memory::read_string(caller, raw.upstream.0, raw.upstream.1)?;
    let headers = pairs::deserialize(&memory::read(caller, raw.headers.0, raw.headers.1)?)?;
    let body = memory::read(caller, raw.body.0, raw.body.1)?;
    let trailers = pairs::deserialize(&memory::read(caller, raw.trailers.0, raw.trailers.1)?)?;
    // Envoy takes the timeout as a signed int and refuses negative values.
    if i32::try_from(raw.timeout_ms).is_err() {
        return Err(Status::BadArgument.into());
    }
    for required in [":path", ":method", ":authority"] {
        if !headers.contains(required) {
            return Err(Status::BadArgument.into());
        }
    }

    let state = caller.data_mut();
    let mut process = lock(&state.process);
    if !process.upstreams.contains_key(&cluster) {
        return Err(Status::BadArgument.into());
    }
    let token = state.next_call_token;
    state.next_call_token = state.next_call_token.wrapping_add(1).max(1);
    let call = HttpCall {
        vm: state.vm,
        context_id: state.effective_context,
        token,
        cluster,
        headers,
        body,
        trailers,
        timeout_ms: raw.timeout_ms,
        at_nanos: process.realtime_nanos,
    };
    let upstream = process
        .upstreams
        .get_mut(&call.cluster)
        .ok_or(Status::BadArgument)?;
    let reply = upstream.reply(&call);
    process.calls.push(call.clone());
    match reply {
        Reply::Respond(response) => process.events.push_back(Event::CallResponse {
            vm: call.vm,
            context_id: call.context_id,
            token,
            response: CallResponse::ok(&response),
        }),
        Reply::Fail => process.events.push_back(Event::CallResponse {
            vm: call.vm,
            context_id: call.context_id,
            token,
            response: CallResponse::failure(),
        }),
        Reply::Hold => process.held.push(HeldCall { call: call.clone() }),
    }
    drop(process);
    state.journal.calls.push(call);
    memory::write_u32(caller, raw.return_token, token)?;
    Ok(())
}

/// The gRPC answer: `PARSE_FAILURE` for an unknown cluster, else `INTERNAL_FAILURE`.
fn grpc_refused(
    caller: &mut Caller<'_, HostState>,
    upstream_data: u32,
    upstream_size: u32,
) -> Result<(), HostError> {
    let cluster = memory::read_string(caller, upstream_data, upstream_size)?;
    let known = caller.data().process().upstreams.contains_key(&cluster);
    Err(if known {
        Status::InternalFailure
    } else {
        Status::ParseFailure
    }
    .into())
}
