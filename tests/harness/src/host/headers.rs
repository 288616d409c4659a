//! Header map imports (spec, "HTTP fields":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#http-fields>).
//!
//! Which map is in reach follows Envoy's `Context::getMap`/`getConstMap`:
//! - request (response) headers: from `proxy_on_request_headers` (`_response_headers`)
//!   until the filter lets them go; after that a single-value read or any write is
//!   `BAD_ARGUMENT` (so a response header changed from a body callback is refused), and a
//!   read of all pairs is an empty map;
//! - trailers: from their own callback, or *added* from the last body callback when the
//!   stream has none;
//! - in `proxy_on_log` the final request and response headers are readable, nothing is
//!   writable, and a missing map reads as `NOT_FOUND`;
//! - HTTP call response headers/trailers: only in `proxy_on_http_call_response`.

use wasmtime::{Caller, Linker};

use crate::headers::Headers;

use super::abi::{MapType, Status};
use super::{memory, pairs, status, HostError, HostState};

/// Registers the header map imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_get_header_map_size" => get_size(map, return_size));
    import!(linker, "proxy_get_header_map_pairs" => get_pairs(map, return_data, return_size));
    import!(linker, "proxy_set_header_map_pairs" => set_pairs(map, data, size));
    import!(linker, "proxy_get_header_map_value" =>
        get_value(map, key_data, key_size, return_data, return_size)
    );
    for (name, edit) in [
        ("proxy_add_header_map_value", Edit::Add),
        ("proxy_replace_header_map_value", Edit::Replace),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Caller<'_, HostState>,
                  map: u32,
                  key_data: u32,
                  key_size: u32,
                  value_data: u32,
                  value_size: u32| {
                let value = Some((value_data, value_size));
                status(mutate(&mut caller, map, key_data, key_size, value, edit))
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map: u32, key_data: u32, key_size: u32| {
            status(mutate(
                &mut caller,
                map,
                key_data,
                key_size,
                None,
                Edit::Remove,
            ))
        },
    )?;
    Ok(())
}

/// The result of looking a map up for reading.
enum Readable<'a> {
    /// The map.
    Map(&'a Headers),
    /// Not in reach in this phase (`BAD_ARGUMENT` for single reads).
    Missing,
    /// Not present in the access-log phase (`NOT_FOUND` for single reads).
    MissingInAccessLog,
}

/// Parses the map type: `BAD_ARGUMENT` when unknown.
fn map_type(raw: u32) -> Result<MapType, Status> {
    MapType::try_from(raw).map_err(|_| Status::BadArgument)
}

/// The map `map` as readable now.
fn readable(state: &HostState, map: MapType) -> Readable<'_> {
    match map {
        MapType::HttpCallResponseHeaders => {
            return state
                .call_response
                .as_ref()
                .map_or(Readable::Missing, |r| Readable::Map(&r.headers));
        }
        MapType::HttpCallResponseTrailers => {
            return state
                .call_response
                .as_ref()
                .map_or(Readable::Missing, |r| Readable::Map(&r.trailers));
        }
        MapType::GrpcCallInitialMetadata | MapType::GrpcCallTrailingMetadata => {
            return Readable::Missing;
        }
        _ => {}
    }
    let Some(stream) = state.stream() else {
        return Readable::Missing;
    };
    if stream.access_log {
        return match map {
            MapType::HttpRequestHeaders => Readable::Map(&stream.forwarded_request_headers),
            MapType::HttpResponseHeaders => Readable::Map(&stream.sent_response_headers),
            MapType::HttpResponseTrailers => stream
                .sent_response_trailers
                .as_ref()
                .map_or(Readable::MissingInAccessLog, Readable::Map),
            _ => Readable::MissingInAccessLog,
        };
    }
    let (open, headers) = match map {
        MapType::HttpRequestHeaders => (stream.request_headers_open, Some(&stream.request_headers)),
        MapType::HttpRequestTrailers => (
            stream.request_trailers_open,
            stream.request_trailers.as_ref(),
        ),
        MapType::HttpResponseHeaders => {
            (stream.response_headers_open, Some(&stream.response_headers))
        }
        MapType::HttpResponseTrailers => (
            stream.response_trailers_open,
            stream.response_trailers.as_ref(),
        ),
        _ => (false, None),
    };
    match (open, headers) {
        (true, Some(headers)) => Readable::Map(headers),
        _ => Readable::Missing,
    }
}

/// The map `map` as writable now, or `BAD_ARGUMENT`.
fn writable(state: &mut HostState, map: MapType) -> Result<&mut Headers, Status> {
    let stream = state.stream_mut().ok_or(Status::BadArgument)?;
    if stream.access_log {
        return Err(Status::BadArgument);
    }
    match map {
        MapType::HttpRequestHeaders if stream.request_headers_open => {
            Ok(&mut stream.request_headers)
        }
        MapType::HttpResponseHeaders if stream.response_headers_open => {
            Ok(&mut stream.response_headers)
        }
        MapType::HttpRequestTrailers => trailers(
            &mut stream.request_trailers,
            &mut stream.request_trailers_open,
            stream.request_body_open,
            stream.end_of_stream,
        ),
        MapType::HttpResponseTrailers => trailers(
            &mut stream.response_trailers,
            &mut stream.response_trailers_open,
            stream.response_body_open,
            stream.end_of_stream,
        ),
        _ => Err(Status::BadArgument),
    }
}

/// A trailer map of a stream: Envoy adds one to a stream that has none from the last body
/// callback (`addDecodedTrailers`, `addEncodedTrailers`); `BAD_ARGUMENT` when it is not open.
fn trailers<'a>(
    trailers: &'a mut Option<Headers>,
    open: &mut bool,
    body_open: bool,
    end_of_stream: bool,
) -> Result<&'a mut Headers, Status> {
    if !*open && body_open && end_of_stream && trailers.is_none() {
        *trailers = Some(Headers::new());
        *open = true;
    }
    match (trailers, *open) {
        (Some(trailers), true) => Ok(trailers),
        _ => Err(Status::BadArgument),
    }
}

/// `proxy_get_header_map_size`: Envoy answers from the mutable map only.
fn get_size(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    return_size: u32,
) -> Result<(), HostError> {
    let map = map_type(map)?;
    let size = writable(caller.data_mut(), map)?.byte_size();
    let size = u32::try_from(size).map_err(|_| Status::InternalFailure)?;
    memory::write_u32(caller, return_size, size)?;
    Ok(())
}

/// `proxy_get_header_map_pairs`: a map out of reach reads as empty.
fn get_pairs(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    return_data: u32,
    return_size: u32,
) -> Result<(), HostError> {
    let map = map_type(map)?;
    let bytes = match readable(caller.data(), map) {
        Readable::Map(headers) => pairs::serialize(headers),
        Readable::Missing | Readable::MissingInAccessLog => pairs::serialize(&Headers::new()),
    };
    memory::hand_over(caller, &bytes, return_data, return_size)
}

/// `proxy_set_header_map_pairs`: replaces the whole map.
fn set_pairs(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    data: u32,
    size: u32,
) -> Result<(), HostError> {
    let map = map_type(map)?;
    let new = pairs::deserialize(&memory::read(caller, data, size)?)?;
    *writable(caller.data_mut(), map)? = new;
    Ok(())
}

/// `proxy_get_header_map_value`: the first value of the key.
fn get_value(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    key_data: u32,
    key_size: u32,
    return_data: u32,
    return_size: u32,
) -> Result<(), HostError> {
    let map = map_type(map)?;
    let key = memory::read_string(caller, key_data, key_size)?;
    let value = match readable(caller.data(), map) {
        Readable::Map(headers) => headers
            .get(&key)
            .map(str::to_owned)
            .ok_or(Status::NotFound)?,
        Readable::Missing => return Err(Status::BadArgument.into()),
        Readable::MissingInAccessLog => return Err(Status::NotFound.into()),
    };
    memory::hand_over(caller, value.as_bytes(), return_data, return_size)
}

/// A single-key edit.
#[derive(Clone, Copy)]
enum Edit {
    /// `proxy_add_header_map_value`.
    Add,
    /// `proxy_replace_header_map_value`.
    Replace,
    /// `proxy_remove_header_map_value`.
    Remove,
}

/// Adds, replaces or removes one key.
fn mutate(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    key_data: u32,
    key_size: u32,
    value: Option<(u32, u32)>,
    edit: Edit,
) -> Result<(), HostError> {
    let map = map_type(map)?;
    let key = memory::read_string(caller, key_data, key_size)?;
    let value = match value {
        Some((data, size)) => memory::read_string(caller, data, size)?,
        None => String::new(),
    };
    let headers = writable(caller.data_mut(), map)?;
    match edit {
        Edit::Add => headers.add(&key, value),
        Edit::Replace => headers.replace(&key, value),
        Edit::Remove => headers.remove(&key),
    }
    Ok(())
}
