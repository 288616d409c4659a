//! Properties (spec, "Properties":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#properties>; names
//! from Envoy's attributes,
//! <https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes>).
//!
//! A path is its segments joined by NUL (`["request", "path"]`). Served here:
//! - `request.{path,url_path,query,host,scheme,method,id,protocol,referer,useragent,time,size,total_size,headers[.name]}`
//!   and `response.{code,code_details,size,total_size,headers[.name]}` for a stream;
//! - `source.{address,port}`, `destination.{address,port}`, `connection_id`,
//!   `connection.mtls`, `route_name`, `cluster_name`;
//! - `plugin_name`, `plugin_root_id`, `plugin_vm_id`;
//! - anything the test set on the plugin or the request (by dotted name, checked first);
//! - filter state written with `proxy_set_property`.
//!
//! Strings are raw bytes, integers 8-byte little-endian, timestamps nanoseconds, a map is
//! a serialized header map, as Envoy's `serializeValue` does.
//!
//! `proxy_set_property` stores under the Envoy filter-state key `wasm.` + the raw path
//! (NULs included), and a read looks up `wasm.` + the *first* segment only, as Envoy's
//! `findValue`; so only single-segment names (e.g. `tollgate.cost`) read back, and only
//! those are printable by `%FILTER_STATE(wasm.tollgate.cost)%` in an access log. Outside a
//! stream `proxy_set_property` is `NOT_FOUND` (Envoy has no stream info there).

use wasmtime::{Caller, Linker};

use crate::headers::Headers;

use super::abi::Status;
use super::{memory, pairs, HostError, HostState, Stream};

/// Registers the property imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_get_property" => get(path_data, path_size, return_data, return_size));
    import!(linker, "proxy_set_property" => set(path_data, path_size, value_data, value_size));
    Ok(())
}

/// `proxy_get_property`.
fn get(
    caller: &mut Caller<'_, HostState>,
    path_data: u32,
    path_size: u32,
    return_data: u32,
    return_size: u32,
) -> Result<(), HostError> {
    if let Some(fault) = super::take_fault(caller.data(), "proxy_get_property") {
        return Err(fault.into());
    }
    let path = memory::read_string(caller, path_data, path_size)?;
    let segments: Vec<&str> = path.split('\0').collect();
    let value = lookup(caller.data(), &segments).ok_or(Status::NotFound)?;
    memory::hand_over(caller, &value, return_data, return_size)
}

/// `proxy_set_property`.
fn set(
    caller: &mut Caller<'_, HostState>,
    path_data: u32,
    path_size: u32,
    value_data: u32,
    value_size: u32,
) -> Result<(), HostError> {
    if let Some(fault) = super::take_fault(caller.data(), "proxy_set_property") {
        return Err(fault.into());
    }
    let path = memory::read_string(caller, path_data, path_size)?;
    let value = memory::read(caller, value_data, value_size)?;
    let stream = caller.data_mut().stream_mut().ok_or(Status::NotFound)?;
    stream.filter_state.insert(format!("wasm.{path}"), value);
    Ok(())
}

/// An integer attribute.
fn int(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// A string attribute.
fn text(value: &str) -> Vec<u8> {
    value.as_bytes().to_vec()
}

/// Resolves a property path.
fn lookup(state: &HostState, segments: &[&str]) -> Option<Vec<u8>> {
    let dotted = segments.join(".");
    if let Some(value) = state.plugin_properties.get(&dotted) {
        return Some(value.clone());
    }
    match segments {
        ["plugin_name"] => return Some(text(&state.plugin_name)),
        ["plugin_root_id"] => return Some(text(&state.root_id)),
        ["plugin_vm_id"] => return Some(text(&state.vm_id)),
        _ => {}
    }
    let stream = state.stream()?;
    if let Some(value) = stream.info.extra.get(&dotted) {
        return Some(value.clone());
    }
    stream_attribute(stream, segments).or_else(|| {
        // Unknown top-level name: Envoy looks in filter state under `wasm.<first segment>`;
        // a value there is plain bytes, so a longer path finds nothing.
        match segments {
            [name] => stream.filter_state.get(&format!("wasm.{name}")).cloned(),
            _ => None,
        }
    })
}

/// The request headers a property reads: the live map while the filter holds it, else
/// what was forwarded.
fn request_headers(stream: &Stream) -> &Headers {
    if stream.request_headers_open {
        &stream.request_headers
    } else {
        &stream.forwarded_request_headers
    }
}

/// The response headers a property reads.
fn response_headers(stream: &Stream) -> &Headers {
    if stream.response_headers_open {
        &stream.response_headers
    } else {
        &stream.sent_response_headers
    }
}

/// Attributes of a stream.
fn stream_attribute(stream: &Stream, segments: &[&str]) -> Option<Vec<u8>> {
    let request = request_headers(stream);
    let header = |name: &str| request.get(name).map(text);
    let path = request.get(":path").unwrap_or_default();
    let (url_path, query) = path.split_once('?').unwrap_or((path, ""));
    match segments {
        ["request", "path"] => header(":path"),
        ["request", "url_path"] => Some(text(url_path)),
        ["request", "query"] => Some(text(query)),
        ["request", "host"] => header(":authority"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "method"] => header(":method"),
        ["request", "referer"] => header("referer"),
        ["request", "useragent"] => header("user-agent"),
        ["request", "id"] => Some(text(&stream.info.request_id)),
        ["request", "protocol"] => Some(text("HTTP/1.1")),
        ["request", "time"] => Some(int(stream.info.start_nanos)),
        ["request", "size"] => Some(int(stream.info.request_bytes)),
        ["request", "total_size"] => {
            Some(int(stream.info.request_bytes + request.byte_size() as u64))
        }
        ["request", "headers"] => Some(pairs::serialize(request)),
        ["request", "headers", name] => header(name),
        ["response", "code"] => stream.info.response_code.map(|c| int(u64::from(c))),
        ["response", "code_details"] => stream.info.response_code_details.as_deref().map(text),
        ["response", "size"] => Some(int(stream.info.response_bytes)),
        ["response", "total_size"] => Some(int(
            stream.info.response_bytes + response_headers(stream).byte_size() as u64
        )),
        ["response", "headers"] => Some(pairs::serialize(response_headers(stream))),
        ["response", "headers", name] => response_headers(stream).get(name).map(text),
        ["source", "address"] => Some(text("127.0.0.1:52000")),
        ["source", "port"] => Some(int(52000)),
        ["destination", "address"] => Some(text("127.0.0.1:10000")),
        ["destination", "port"] => Some(int(10000)),
        ["connection_id"] => Some(int(stream.info.connection_id)),
        ["connection", "mtls"] => Some(vec![0]),
        ["route_name"] => Some(text("default")),
        ["cluster_name"] => Some(text("upstream")),
        _ => None,
    }
}
