//! The sliver of WASI (`wasi_snapshot_preview1`) a proxy-wasm module imports.
//!
//! A proxy-wasm 0.2.5 module built for wasm32-wasip1 imports `fd_write`, `environ_get`,
//! `environ_sizes_get` and `proc_exit`; std may add `clock_time_get` and `random_get`.
//! The spec says what each must do (sections "Logging", "Clocks", "Randomness",
//! "Environment variables", "Unimplemented WASI functions"):
//! - `fd_write` to stdout logs at INFO, to stderr at ERROR, anything else is `BADF`;
//! - clocks read the harness's virtual clock, so a test controls time;
//! - `random_get` is a seeded generator, so runs repeat;
//! - the environment is the plugin's `vm_config.environment_variables`, never the host's;
//! - `proc_exit` traps.
//!
//! A few file-descriptor calls answer `BADF`; any other WASI import a module names is
//! linked as a trap (`Linker::define_unknown_imports_as_traps`) so such a module still
//! loads and fails loudly only if it really calls one.

use wasmtime::{Caller, Linker};

use super::abi::{ClockId, LogLevel, WasiErrno};
use super::{memory, HostState};

/// The WASI module name.
const WASI: &str = "wasi_snapshot_preview1";

/// The return value of a WASI call.
fn errno(result: Result<(), WasiErrno>) -> u32 {
    match result {
        Ok(()) => WasiErrno::Success as u32,
        Err(errno) => errno as u32,
    }
}

/// Registers the WASI shim.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, WASI, "fd_write", errno => fd_write(fd, iovs, iovs_len, nwritten));
    import!(linker, WASI, "environ_sizes_get", errno => environ_sizes_get(count_ptr, size_ptr));
    import!(linker, WASI, "environ_get", errno => environ_get(environ_ptr, buf_ptr));
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut caller: Caller<'_, HostState>, argc_ptr: u32, size_ptr: u32| {
            // Zero arguments, so `args_get` is never called (spec).
            errno(
                memory::write_u32(&mut caller, argc_ptr, 0)
                    .and_then(|()| memory::write_u32(&mut caller, size_ptr, 0))
                    .map_err(|_| WasiErrno::Fault),
            )
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |_: Caller<'_, HostState>, _argv: u32, _buf: u32| WasiErrno::Success as u32,
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, HostState>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "guest called proc_exit({code})"
            )))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, clock: u32, _precision: u64, time_ptr: u32| {
            errno(clock_time_get(&mut caller, clock, time_ptr))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, clock: u32, res_ptr: u32| {
            errno(match ClockId::try_from(clock) {
                Ok(_) => memory::write_u64(&mut caller, res_ptr, 1).map_err(|_| WasiErrno::Fault),
                Err(_) => Err(WasiErrno::Notsup),
            })
        },
    )?;
    import!(linker, WASI, "random_get", errno => random_get(buf, len));
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, HostState>| {
        WasiErrno::Success as u32
    })?;
    // No file system: descriptor calls std may make answer "bad file descriptor".
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, HostState>, _fd: u32| {
        WasiErrno::Badf as u32
    })?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |_: Caller<'_, HostState>, _fd: u32, _buf: u32| WasiErrno::Badf as u32,
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, HostState>, _fd: u32, _buf: u32| WasiErrno::Badf as u32,
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, HostState>, _fd: u32, _path: u32, _len: u32| WasiErrno::Badf as u32,
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, HostState>, _fd: u32, _offset: i64, _whence: u32, _new_offset: u32| {
            WasiErrno::Badf as u32
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |_: Caller<'_, HostState>, _fd: u32, _iovs: u32, _iovs_len: u32, _nread: u32| {
            WasiErrno::Badf as u32
        },
    )?;
    Ok(())
}

/// `fd_write`: gathers the iovecs and logs them.
fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> Result<(), WasiErrno> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Err(WasiErrno::Badf),
    };
    let table_len = iovs_len.checked_mul(8).ok_or(WasiErrno::Fault)?;
    let table = memory::read(caller, iovs, table_len).map_err(|_| WasiErrno::Fault)?;
    let mut text = Vec::new();
    for iovec in table.chunks_exact(8) {
        let (ptr, len) = iovec.split_at(4);
        let ptr = u32::from_le_bytes(ptr.try_into().map_err(|_| WasiErrno::Fault)?);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| WasiErrno::Fault)?);
        text.extend(memory::read(caller, ptr, len).map_err(|_| WasiErrno::Fault)?);
    }
    let written = u32::try_from(text.len()).map_err(|_| WasiErrno::Inval)?;
    let message = String::from_utf8_lossy(&text);
    let message = message.trim_end_matches('\n');
    if !message.is_empty() {
        caller.data_mut().log(level, message.to_owned());
    }
    memory::write_u32(caller, nwritten, written).map_err(|_| WasiErrno::Fault)
}

/// The environment as `KEY=VALUE\0` strings.
fn environment(state: &HostState) -> Vec<Vec<u8>> {
    state
        .environment
        .iter()
        .map(|(key, value)| format!("{key}={value}\0").into_bytes())
        .collect()
}

/// `environ_sizes_get`.
fn environ_sizes_get(
    caller: &mut Caller<'_, HostState>,
    count_ptr: u32,
    size_ptr: u32,
) -> Result<(), WasiErrno> {
    let entries = environment(caller.data());
    let count = u32::try_from(entries.len()).map_err(|_| WasiErrno::Inval)?;
    let size =
        u32::try_from(entries.iter().map(Vec::len).sum::<usize>()).map_err(|_| WasiErrno::Inval)?;
    memory::write_u32(caller, count_ptr, count).map_err(|_| WasiErrno::Fault)?;
    memory::write_u32(caller, size_ptr, size).map_err(|_| WasiErrno::Fault)
}

/// `environ_get`: pointers at `environ_ptr`, strings from `buf_ptr` on.
fn environ_get(
    caller: &mut Caller<'_, HostState>,
    environ_ptr: u32,
    buf_ptr: u32,
) -> Result<(), WasiErrno> {
    let entries = environment(caller.data());
    let mut slot = environ_ptr;
    let mut at = buf_ptr;
    for entry in entries {
        memory::write_u32(caller, slot, at).map_err(|_| WasiErrno::Fault)?;
        memory::write(caller, at, &entry).map_err(|_| WasiErrno::Fault)?;
        slot = slot.checked_add(4).ok_or(WasiErrno::Fault)?;
        let len = u32::try_from(entry.len()).map_err(|_| WasiErrno::Fault)?;
        at = at.checked_add(len).ok_or(WasiErrno::Fault)?;
    }
    Ok(())
}

/// `clock_time_get` on the virtual clocks.
fn clock_time_get(
    caller: &mut Caller<'_, HostState>,
    clock: u32,
    time_ptr: u32,
) -> Result<(), WasiErrno> {
    let now = {
        let process = caller.data().process();
        match ClockId::try_from(clock) {
            Ok(ClockId::Realtime) => process.realtime_nanos,
            Ok(ClockId::Monotonic) => process.monotonic_nanos,
            Err(_) => return Err(WasiErrno::Notsup),
        }
    };
    memory::write_u64(caller, time_ptr, now).map_err(|_| WasiErrno::Fault)
}

/// `random_get` from a splitmix64 stream seeded per VM: repeatable, never the OS's.
fn random_get(caller: &mut Caller<'_, HostState>, buf: u32, len: u32) -> Result<(), WasiErrno> {
    let len_usize = usize::try_from(len).map_err(|_| WasiErrno::Inval)?;
    if len_usize > 1 << 20 {
        return Err(WasiErrno::Inval);
    }
    let mut bytes = Vec::with_capacity(len_usize);
    let state = caller.data_mut();
    while bytes.len() < len_usize {
        state.rng = state.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        bytes.extend_from_slice(&z.to_le_bytes());
    }
    bytes.truncate(len_usize);
    memory::write(caller, buf, &bytes).map_err(|_| WasiErrno::Fault)
}
