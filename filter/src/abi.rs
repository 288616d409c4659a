//! The few proxy-wasm calls the filter makes without the SDK (ABI 0.2.1), each on every
//! metered request, and the filter's only `unsafe` code.
//!
//! - `proxy_get_header_map_pairs`: the SDK turns the host's buffer into a `String` and a `Vec`
//!   per header (two allocations and two frees each, plus a UTF-8 check of every name); the
//!   filter keeps the buffer and searches it ([`crate::headers`]).
//! - `proxy_get_property` / `proxy_set_property`: the SDK takes the path as a `Vec<&str>` and
//!   serializes it into a second `Vec` on every call, and panics (aborting the VM) on a status
//!   it does not expect. Here the path is the serialized bytes themselves (a constant, or a
//!   filter-state name, whose one segment *is* its serialization), and any refusal is `None`.
//!
//! Each call is the host call and, when the host hands bytes back, taking ownership of its
//! buffer: the same two steps the SDK takes.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use proxy_wasm::types::MapType;

#[cfg(target_family = "wasm")]
#[link(wasm_import_module = "env")]
extern "C" {
    // Declared with plain integers: a status the host invents must not be a Rust enum's
    // invalid value.
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

// Native builds (clippy, docs, unit tests) have no host: every call is refused.
#[cfg(not(target_family = "wasm"))]
#[allow(clippy::missing_safety_doc)]
unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
    1
}
#[cfg(not(target_family = "wasm"))]
#[allow(clippy::missing_safety_doc)]
unsafe fn proxy_get_property(_: *const u8, _: usize, _: *mut *mut u8, _: *mut usize) -> u32 {
    1
}
#[cfg(not(target_family = "wasm"))]
#[allow(clippy::missing_safety_doc)]
unsafe fn proxy_set_property(_: *const u8, _: usize, _: *const u8, _: usize) -> u32 {
    1
}

/// Takes ownership of a buffer the host returned with a success status.
///
/// # Safety
/// On success the host wrote `size` bytes into a buffer it obtained from this module's
/// `proxy_on_memory_allocate(size)` (the SDK's: a boxed `[u8]` of exactly `size` bytes from
/// the global allocator) and handed its ownership to the caller. A `Vec` with length and
/// capacity `size` has that same layout.
unsafe fn owned(status: u32, data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if status != 0 || data.is_null() {
        return None;
    }
    Some(Vec::from_raw_parts(data, size, size))
}

/// Every pair of `map` as the host serialized it, in one call; `None` when it refuses.
pub fn header_map_pairs(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers point at live locals of the right types; `owned`'s contract
    // is the host's on success.
    unsafe {
        let status = proxy_get_header_map_pairs(map as u32, &mut data, &mut size);
        owned(status, data, size)
    }
}

/// The name of the upstream cluster the request is routed to, `None` when the host has none
/// or refuses. Request-header phase and later.
pub fn cluster_name() -> Option<Vec<u8>> {
    property(b"xds\0cluster_name")
}

/// Sets a filter-state property for the access log (`%FILTER_STATE(wasm.NAME)%` in Envoy):
/// a one-segment path is its own serialization. A refusal is ignored (the SDK's call would
/// abort the VM on it): the log is all that reads these.
pub fn set_filter_state(name: &str, value: &str) {
    let _ = set_property(name.as_bytes(), value.as_bytes());
}

/// The property at `path` (its segments joined by NUL); `None` when the host has none or
/// refuses.
fn property(path: &[u8]) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `path` is live for the call; the out-pointers point at live locals of the right
    // types; `owned`'s contract is the host's on success.
    unsafe {
        let status = proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size);
        owned(status, data, size)
    }
}

/// Sets the property at `path` (segments joined by NUL) to `value`; whether the host took it.
fn set_property(path: &[u8], value: &[u8]) -> bool {
    // SAFETY: both slices are live for the call and the host only reads them.
    unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) == 0 }
}
