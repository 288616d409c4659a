//! Shared queues (spec, "Shared Queues":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#shared-queues>).
//!
//! As in proxy-wasm-cpp-host's `SharedQueue`: a queue is named by `(vm_id, name)` and
//! identified by a process-wide token; registering an existing name reopens it and makes the
//! caller its owner. Each enqueue schedules `proxy_on_queue_ready` on the owner's root
//! context, delivered after the current callback returns (Envoy posts it to the owner's
//! thread). `proxy_resolve_shared_queue` with an empty `vm_id` means the caller's own.

use wasmtime::{Caller, Linker};

use crate::outcome::QueueItem;

use super::abi::Status;
use super::{memory, Event, HostError, HostState, Process, Queue};

/// Registers the queue imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_register_shared_queue" => register(name_data, name_size, return_id));
    import!(linker, "proxy_resolve_shared_queue" =>
        resolve(vm_id_data, vm_id_size, name_data, name_size, return_id)
    );
    import!(linker, "proxy_enqueue_shared_queue" => enqueue(token, value_data, value_size));
    import!(linker, "proxy_dequeue_shared_queue" => dequeue(token, return_data, return_size));
    Ok(())
}

/// `proxy_register_shared_queue`: the owner is this VM's root context (a stream context
/// registers on behalf of its root, as in cpp-host).
fn register(
    caller: &mut Caller<'_, HostState>,
    name_data: u32,
    name_size: u32,
    return_id: u32,
) -> Result<(), HostError> {
    let name = memory::read_string(caller, name_data, name_size)?;
    let token = {
        let state = caller.data();
        let owner = (state.vm, state.root_context_id);
        let mut process = state.process();
        register_queue(&mut process, &state.vm_id, &name, owner)
    };
    memory::write_u32(caller, return_id, token)?;
    Ok(())
}

/// Creates or reopens a queue and makes `owner` the one notified.
pub(crate) fn register_queue(
    process: &mut Process,
    vm_id: &str,
    name: &str,
    owner: (crate::VmId, u32),
) -> u32 {
    let key = (vm_id.to_owned(), name.to_owned());
    let token = match process.queue_tokens.get(&key) {
        Some(token) => *token,
        None => {
            let token = process.next_queue_token;
            process.next_queue_token = process.next_queue_token.wrapping_add(1).max(1);
            process.queue_tokens.insert(key, token);
            token
        }
    };
    let queue = process.queues.entry(token).or_insert_with(|| Queue {
        vm_id: vm_id.to_owned(),
        name: name.to_owned(),
        items: Default::default(),
        owner,
    });
    queue.owner = owner;
    token
}

/// `proxy_resolve_shared_queue`.
fn resolve(
    caller: &mut Caller<'_, HostState>,
    vm_id_data: u32,
    vm_id_size: u32,
    name_data: u32,
    name_size: u32,
    return_id: u32,
) -> Result<(), HostError> {
    let mut vm_id = memory::read_string(caller, vm_id_data, vm_id_size)?;
    let name = memory::read_string(caller, name_data, name_size)?;
    let token = {
        let state = caller.data();
        if vm_id.is_empty() {
            vm_id.clone_from(&state.vm_id);
        }
        let process = state.process();
        process
            .queue_tokens
            .get(&(vm_id, name))
            .copied()
            .ok_or(Status::NotFound)?
    };
    memory::write_u32(caller, return_id, token)?;
    Ok(())
}

/// `proxy_enqueue_shared_queue`.
fn enqueue(
    caller: &mut Caller<'_, HostState>,
    token: u32,
    value_data: u32,
    value_size: u32,
) -> Result<(), HostError> {
    let value = memory::read(caller, value_data, value_size)?;
    let item = {
        let state = caller.data();
        let mut process = state.process();
        push(&mut process, token, value)?
    };
    caller.data_mut().journal.queue_items.push(item);
    Ok(())
}

/// Appends to a queue and schedules `proxy_on_queue_ready` for its owner.
pub(crate) fn push(process: &mut Process, token: u32, value: Vec<u8>) -> Result<QueueItem, Status> {
    let queue = process.queues.get_mut(&token).ok_or(Status::NotFound)?;
    queue.items.push_back(value.clone());
    let item = QueueItem {
        vm_id: queue.vm_id.clone(),
        queue: queue.name.clone(),
        data: value,
    };
    let (vm, context_id) = queue.owner;
    process.events.push_back(Event::QueueReady {
        vm,
        context_id,
        token,
    });
    Ok(item)
}

/// `proxy_dequeue_shared_queue`: `EMPTY` when there is nothing.
fn dequeue(
    caller: &mut Caller<'_, HostState>,
    token: u32,
    return_data: u32,
    return_size: u32,
) -> Result<(), HostError> {
    let value = {
        let state = caller.data();
        let mut process = state.process();
        let queue = process.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)?
    };
    memory::hand_over(caller, &value, return_data, return_size)
}
