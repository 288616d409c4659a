//! Buffer imports (spec, "Buffers":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#buffers>).
//!
//! What is in reach follows Envoy's `Context::getBuffer` and `Buffer::copyFrom`:
//! - the request (response) body is the current chunk in its own callback, or everything
//!   buffered since the filter returned `Pause` (Envoy's StopIterationAndBuffer); outside
//!   that it reads as empty and cannot be written;
//! - the plugin configuration is readable in `proxy_on_configure` only, the VM
//!   configuration always, the HTTP call response body in `proxy_on_http_call_response`;
//!   none of them is writable;
//! - a write may prepend (`start=0, size=0`), replace everything (`start=0, size>=len`) or
//!   append (`start>=len`); anything else is `BAD_ARGUMENT`.

use wasmtime::{Caller, Linker};

use super::abi::{BufferType, Status};
use super::{memory, status, HostError, HostState};
use crate::outcome::Phase;

/// Registers the buffer imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         buffer: u32,
         start: u32,
         max_size: u32,
         return_data: u32,
         return_size: u32| {
            if let Some(fault) = super::take_fault(caller.data(), "proxy_get_buffer_bytes") {
                return Ok(fault as u32);
            }
            status(get_bytes(
                &mut caller,
                buffer,
                start,
                max_size,
                return_data,
                return_size,
            ))
        },
    )?;
    import!(linker, "proxy_set_buffer_bytes" => set_bytes(buffer, start, size, data, data_size));
    import!(linker, "proxy_get_buffer_status" => get_status(buffer, return_size, return_flags));
    Ok(())
}

/// Parses the buffer type: `BAD_ARGUMENT` when unknown.
fn buffer_type(raw: u32) -> Result<BufferType, Status> {
    BufferType::try_from(raw).map_err(|_| Status::BadArgument)
}

/// The bytes of a buffer as readable now, or `NOT_FOUND`.
fn readable(state: &HostState, buffer: BufferType) -> Result<&[u8], Status> {
    const EMPTY: &[u8] = &[];
    match buffer {
        BufferType::HttpRequestBody => Ok(state
            .stream()
            .filter(|s| s.request_body_open)
            .map_or(EMPTY, |s| s.request_body.as_slice())),
        BufferType::HttpResponseBody => Ok(state
            .stream()
            .filter(|s| s.response_body_open)
            .map_or(EMPTY, |s| s.response_body.as_slice())),
        BufferType::DownstreamData | BufferType::UpstreamData | BufferType::GrpcCallMessage => {
            Ok(EMPTY)
        }
        BufferType::HttpCallResponseBody => state
            .call_response
            .as_ref()
            .map(|r| r.body.as_slice())
            .ok_or(Status::NotFound),
        BufferType::VmConfiguration => Ok(&state.vm_configuration),
        BufferType::PluginConfiguration => match state.active {
            Some(Phase::Configure) => Ok(&state.plugin_configuration),
            _ => Err(Status::NotFound),
        },
        BufferType::ForeignFunctionArguments => Err(Status::NotFound),
    }
}

/// `proxy_get_buffer_bytes`.
fn get_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer: u32,
    start: u32,
    max_size: u32,
    return_data: u32,
    return_size: u32,
) -> Result<(), HostError> {
    let buffer = buffer_type(buffer)?;
    let bytes = readable(caller.data(), buffer)?;
    let start = usize::try_from(start).map_err(|_| Status::BadArgument)?;
    let max_size = usize::try_from(max_size).map_err(|_| Status::BadArgument)?;
    if start > bytes.len() {
        return Err(Status::BadArgument.into());
    }
    let end = start.saturating_add(max_size).min(bytes.len());
    let chunk = bytes.get(start..end).ok_or(Status::BadArgument)?.to_vec();
    if chunk.is_empty() {
        // As proxy-wasm-cpp-host: nothing to copy, `OK` and the out-pointers untouched.
        return Ok(());
    }
    memory::hand_over(caller, &chunk, return_data, return_size)
}

/// `proxy_set_buffer_bytes`.
fn set_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer: u32,
    start: u32,
    size: u32,
    data: u32,
    data_size: u32,
) -> Result<(), HostError> {
    let buffer = buffer_type(buffer)?;
    let value = memory::read(caller, data, data_size)?;
    let state = caller.data_mut();
    let target = match buffer {
        BufferType::HttpRequestBody => state
            .stream_mut()
            .filter(|s| s.request_body_open)
            .map(|s| &mut s.request_body),
        BufferType::HttpResponseBody => state
            .stream_mut()
            .filter(|s| s.response_body_open)
            .map(|s| &mut s.response_body),
        other => {
            // Immutable or absent: NOT_FOUND where Envoy has no buffer at all.
            readable(state, other)?;
            None
        }
    };
    let target = target.ok_or(Status::BadArgument)?;
    let start = usize::try_from(start).map_err(|_| Status::BadArgument)?;
    let size = usize::try_from(size).map_err(|_| Status::BadArgument)?;
    if start == 0 && size == 0 {
        target.splice(0..0, value);
    } else if start == 0 && size >= target.len() {
        *target = value;
    } else if start >= target.len() {
        target.extend_from_slice(&value);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// `proxy_get_buffer_status`: the buffer's size; flags are always 0.
fn get_status(
    caller: &mut Caller<'_, HostState>,
    buffer: u32,
    return_size: u32,
    return_flags: u32,
) -> Result<(), HostError> {
    let buffer = buffer_type(buffer)?;
    let size = readable(caller.data(), buffer)?.len();
    let size = u32::try_from(size).map_err(|_| Status::InternalFailure)?;
    memory::write_u32(caller, return_size, size)?;
    memory::write_u32(caller, return_flags, 0)?;
    Ok(())
}
