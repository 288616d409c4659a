//! Stream control, contexts, timers and the clock.
//!
//! - `proxy_send_local_response` (spec, "HTTP"): recorded on the stream and acted on once
//!   the callback returns, as Envoy defers `sendLocalReply`; only the first reply counts.
//! - `proxy_continue_stream` / `proxy_close_stream` (spec, "Common stream operations"):
//!   resume a paused request/response, or reset the stream. `UPSTREAM` continuation is
//!   `UNIMPLEMENTED`, as in Envoy.
//! - `proxy_set_effective_context`, `proxy_done` (spec, "Context lifecycle"):
//!   `proxy_done` is `NOT_FOUND` unless a context is pending finalization, which never
//!   happens here (Envoy does not wait on `proxy_on_done` for HTTP streams).
//! - `proxy_set_tick_period_milliseconds` and `proxy_get_current_time_nanoseconds`
//!   (spec, "Timers", "Clocks"): ticks and time follow the harness's virtual clock.

use wasmtime::{Caller, Linker};

use crate::outcome::{LocalReply, Phase};

use super::abi::{Status, StreamType};
use super::{memory, pairs, status, HostError, HostState};

/// Registers the stream, context, timer and clock imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status_code: u32,
         details_data: u32,
         details_size: u32,
         body_data: u32,
         body_size: u32,
         headers_data: u32,
         headers_size: u32,
         grpc_status: i32| {
            let raw = RawReply {
                status_code,
                details: (details_data, details_size),
                body: (body_data, body_size),
                headers: (headers_data, headers_size),
                grpc_status,
            };
            status(send_local_response(&mut caller, &raw))
        },
    )?;
    import!(linker, "proxy_continue_stream" => continue_stream(stream));
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, stream: u32| status(close_stream(&mut caller, stream)),
    )?;
    import!(linker, "proxy_get_status" =>
        get_status(return_code, return_message_data, return_message_size)
    );
    linker.func_wrap("env", "proxy_done", |_: Caller<'_, HostState>| {
        Status::NotFound as u32
    })?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context_id: u32| {
            let state = caller.data_mut();
            if context_id == state.root_context_id || state.streams.contains_key(&context_id) {
                state.effective_context = context_id;
                Status::Ok as u32
            } else {
                Status::BadArgument as u32
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period_ms: u32| {
            let state = caller.data_mut();
            state.tick_period_ms = period_ms;
            state.tick_changed = true;
            Status::Ok as u32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, return_time: u32| {
            let now = caller.data().process().realtime_nanos;
            status(memory::write_u64(&mut caller, return_time, now).map_err(HostError::from))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Caller<'_, HostState>,
         _name_data: u32,
         _name_size: u32,
         _args_data: u32,
         _args_size: u32,
         _return_data: u32,
         _return_size: u32| Status::NotFound as u32,
    )?;
    Ok(())
}

/// The raw arguments of `proxy_send_local_response`.
struct RawReply {
    status_code: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
    grpc_status: i32,
}

/// `proxy_send_local_response`.
fn send_local_response(
    caller: &mut Caller<'_, HostState>,
    raw: &RawReply,
) -> Result<(), HostError> {
    let details = memory::read_string(caller, raw.details.0, raw.details.1)?;
    let body = memory::read(caller, raw.body.0, raw.body.1)?;
    let headers = pairs::deserialize(&memory::read(caller, raw.headers.0, raw.headers.1)?)?;
    let state = caller.data_mut();
    let phase = state.active.unwrap_or(Phase::RequestHeaders);
    // Envoy only acts when the context has a stream (decoder callbacks); either way OK.
    if let Some(stream) = state.stream_mut() {
        if stream.local_reply.is_none() {
            stream.local_reply = Some(LocalReply {
                phase,
                status: raw.status_code,
                details,
                body,
                headers,
                grpc_status: raw.grpc_status,
            });
        }
    }
    Ok(())
}

/// Parses the stream type: `BAD_ARGUMENT` when unknown.
fn stream_type(raw: u32) -> Result<StreamType, Status> {
    StreamType::try_from(raw).map_err(|_| Status::BadArgument)
}

/// `proxy_continue_stream`.
fn continue_stream(caller: &mut Caller<'_, HostState>, stream: u32) -> Result<(), HostError> {
    match stream_type(stream)? {
        StreamType::HttpRequest => {
            if let Some(stream) = caller.data_mut().stream_mut() {
                stream.continue_request = true;
            }
        }
        StreamType::HttpResponse => {
            if let Some(stream) = caller.data_mut().stream_mut() {
                stream.continue_response = true;
            }
        }
        StreamType::Downstream => {}
        StreamType::Upstream => return Err(Status::Unimplemented.into()),
    }
    Ok(())
}

/// `proxy_close_stream`.
fn close_stream(caller: &mut Caller<'_, HostState>, stream: u32) -> Result<(), HostError> {
    match stream_type(stream)? {
        StreamType::HttpRequest | StreamType::HttpResponse => {
            if let Some(stream) = caller.data_mut().stream_mut() {
                stream.close_requested = true;
            }
        }
        StreamType::Downstream | StreamType::Upstream => {}
    }
    Ok(())
}

/// `proxy_get_status`: in `proxy_on_http_call_response`, 0 for a response and Envoy's
/// `BrokenConnection` (5, "reset") for a failed call.
fn get_status(
    caller: &mut Caller<'_, HostState>,
    return_code: u32,
    return_message_data: u32,
    return_message_size: u32,
) -> Result<(), HostError> {
    let (code, message): (u32, &[u8]) = match &caller.data().call_response {
        Some(response) if response.failed => (5, b"reset"),
        _ => (0, b""),
    };
    memory::write_u32(caller, return_code, code)?;
    memory::hand_over(caller, message, return_message_data, return_message_size)
}
