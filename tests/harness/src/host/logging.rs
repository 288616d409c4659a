//! `proxy_log` and `proxy_get_log_level` (spec, "Logging":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#logging>).
//!
//! Lines go to the VM's journal and end up in `Outcome::logs` and `Host::logs`. Lines below
//! the plugin's log level are dropped, as Envoy's logger drops them.

use wasmtime::{Caller, Linker};

use super::abi::{LogLevel, Status};
use super::{memory, status, HostError, HostState};

/// Registers the logging imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_log" => log(level, data, size));
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, return_level: u32| {
            let level = caller.data().log_level as u32;
            status(memory::write_u32(&mut caller, return_level, level).map_err(HostError::from))
        },
    )?;
    Ok(())
}

/// `proxy_log`: `BAD_ARGUMENT` for an unknown level.
fn log(
    caller: &mut Caller<'_, HostState>,
    level: u32,
    data: u32,
    size: u32,
) -> Result<(), HostError> {
    let level = LogLevel::try_from(level).map_err(|_| Status::BadArgument)?;
    let message = memory::read_string(caller, data, size)?;
    caller.data_mut().log(level, message);
    Ok(())
}
