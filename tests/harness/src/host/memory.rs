//! Bounds-checked access to guest linear memory.
//!
//! Every pointer/size pair a guest hands over is checked with slice `get`, never trusted:
//! an access outside memory is `INVALID_MEMORY_ACCESS` for the guest, not undefined
//! behaviour in the host (the workspace forbids `unsafe`). Data going back to the guest is
//! copied into a buffer the guest allocates with `proxy_on_memory_allocate`, and the
//! pointer and size are written where the guest asked (`return_*_data`/`return_*_size`),
//! as the spec's "Functions exposed by the host" section describes.

use wasmtime::Caller;

use super::abi::Status;
use super::{HostError, HostState};

/// The guest's memory and the `start..end` range, or `INVALID_MEMORY_ACCESS`.
fn range(ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Status> {
    let start = usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?;
    let len = usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(caller)
        .get(range(ptr, len)?)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Reads a string (invalid UTF-8 is replaced, as header names and keys are ASCII in practice).
pub(crate) fn read_string(
    caller: &Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<String, Status> {
    let bytes = read(caller, ptr, len)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    })
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let len = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    memory
        .data_mut(caller)
        .get_mut(range(ptr, len)?)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` (a wasm32 `size_t` or pointer) at `ptr`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u32,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u64,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: allocates a guest buffer, copies into it, and writes its
/// pointer and size at `ptr_ptr`/`size_ptr`. Empty data is a null pointer and size 0,
/// as proxy-wasm-cpp-host's `copyToPointerSize` does (the Rust SDK reads that as "none").
pub(crate) fn hand_over(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<(), HostError> {
    let size = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let mut pointer = 0;
    if size > 0 {
        let allocate = caller
            .data()
            .allocate
            .clone()
            .ok_or(Status::InvalidMemoryAccess)?;
        pointer = allocate.call(&mut *caller, size)?;
        if pointer == 0 {
            return Err(Status::InvalidMemoryAccess.into());
        }
        write(caller, pointer, bytes)?;
    }
    write_u32(caller, ptr_ptr, pointer)?;
    write_u32(caller, size_ptr, size)?;
    Ok(())
}
