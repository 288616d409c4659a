//! Shared key-value store (spec, "Shared Key-Value Store":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#shared-key-value-store>).
//!
//! As in proxy-wasm-cpp-host's `SharedData`: values are process-wide but namespaced by
//! `vm_id`, so every worker VM of a plugin (and a singleton service with the same `vm_id`)
//! sees the same store. Each write takes the next value of one process-wide CAS counter; a
//! write with a non-zero CAS that does not match the stored one is `CAS_MISMATCH` (a write
//! with a CAS to a key that does not exist yet succeeds).

use wasmtime::{Caller, Linker};

use super::abi::Status;
use super::{memory, HostError, HostState};

/// Registers the shared data imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_get_shared_data" =>
        get(key_data, key_size, return_data, return_size, return_cas)
    );
    import!(linker, "proxy_set_shared_data" =>
        set(key_data, key_size, value_data, value_size, cas)
    );
    Ok(())
}

/// `proxy_get_shared_data`.
fn get(
    caller: &mut Caller<'_, HostState>,
    key_data: u32,
    key_size: u32,
    return_data: u32,
    return_size: u32,
    return_cas: u32,
) -> Result<(), HostError> {
    let key = memory::read_string(caller, key_data, key_size)?;
    let (value, cas) = {
        let state = caller.data();
        let process = state.process();
        process
            .shared_data
            .get(&state.vm_id)
            .and_then(|map| map.get(&key))
            .cloned()
            .ok_or(Status::NotFound)?
    };
    memory::hand_over(caller, &value, return_data, return_size)?;
    memory::write_u32(caller, return_cas, cas)?;
    Ok(())
}

/// `proxy_set_shared_data`.
fn set(
    caller: &mut Caller<'_, HostState>,
    key_data: u32,
    key_size: u32,
    value_data: u32,
    value_size: u32,
    cas: u32,
) -> Result<(), HostError> {
    let key = memory::read_string(caller, key_data, key_size)?;
    let value = memory::read(caller, value_data, value_size)?;
    let state = caller.data();
    let mut process = state.process();
    write(&mut process, &state.vm_id, key, value, cas)?;
    Ok(())
}

/// One compare-and-swap write into the process store.
pub(crate) fn write(
    process: &mut super::Process,
    vm_id: &str,
    key: String,
    value: Vec<u8>,
    cas: u32,
) -> Result<(), Status> {
    let stored_cas = process
        .shared_data
        .get(vm_id)
        .and_then(|map| map.get(&key))
        .map(|(_, cas)| *cas);
    if let Some(stored) = stored_cas {
        if cas != 0 && cas != stored {
            return Err(Status::CasMismatch);
        }
    }
    let next = process.take_cas();
    process
        .shared_data
        .entry(vm_id.to_owned())
        .or_default()
        .insert(key, (value, next));
    Ok(())
}
