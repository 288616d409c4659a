//! One VM: a wasmtime `Store` holding one instance of a plugin's module.
//!
//! Envoy runs one VM per worker thread (and one on the main thread for a singleton
//! service); each keeps its in-VM state across the requests it serves. A [`Vm`] is that:
//! instantiated once from the plugin's `InstancePre`, called for every callback, replaced
//! only by a FAIL_RELOAD.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::host::{HostState, Process};
use crate::outcome::{GuestTrap, Phase};
use crate::plugin::{Plugin, EPOCH_TICK};
use crate::VmId;

/// `proxy_on_http_call_response(context_id, token, headers, body_size, trailers)`.
pub(crate) type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The callbacks a module exports (each optional, as the spec says).
#[derive(Clone)]
pub(crate) struct Exports {
    pub on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    pub on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    pub on_configure: Option<TypedFunc<(u32, u32), u32>>,
    pub on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    pub on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    pub on_done: Option<TypedFunc<u32, u32>>,
    pub on_log: Option<TypedFunc<u32, ()>>,
    pub on_delete: Option<TypedFunc<u32, ()>>,
    pub on_tick: Option<TypedFunc<u32, ()>>,
    pub on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    pub on_http_call_response: Option<CallResponseFn>,
    pub initialize: Option<TypedFunc<(), ()>>,
    pub main: Option<TypedFunc<(u32, u32), u32>>,
    pub start: Option<TypedFunc<(), ()>>,
}

/// Looks up an optional export with the signature the spec gives it.
fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => Ok(Some(
            func.typed::<P, R>(&*store)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("export {name} does not have the ABI's signature"))?,
        )),
    }
}

/// A running VM.
pub(crate) struct Vm {
    /// The plugin it runs.
    pub plugin: Plugin,
    /// The store with the instance and the host state.
    pub store: Store<HostState>,
    /// The module's callbacks.
    /// Shared so a call can borrow a callback while the host is borrowed mutably
    /// (cloning a `TypedFunc` clones its registered type: too slow for the hot path).
    pub exports: Arc<Exports>,
    /// The next context id to hand out (root is 1).
    pub next_context_id: u32,
    /// Set once the VM has trapped.
    pub failed: Option<GuestTrap>,
    /// When `proxy_on_tick` is due next (virtual monotonic ns).
    pub next_tick: Option<u64>,
    /// The epoch ticks a callback may take.
    deadline_ticks: u64,
    /// Fuel used by each kind of callback (only when the plugin counts fuel).
    pub fuel_by_phase: std::collections::BTreeMap<Phase, u64>,
}

impl Vm {
    /// Instantiates the plugin's module (not yet started: see `Host::boot`).
    pub fn instantiate(plugin: &Plugin, process: Arc<Mutex<Process>>, vm: VmId) -> Result<Vm> {
        let settings = &plugin.settings;
        let state = HostState::new(process, vm, settings);
        let mut store = Store::new(&plugin.compiled.engine, state);
        store.epoch_deadline_trap();
        if settings.count_fuel || settings.time_host_calls {
            // One hook per store: it counts host calls and, when asked, times them.
            let timed = settings.time_host_calls;
            store.call_hook(move |mut store, hook| {
                let state = store.data_mut();
                match hook {
                    wasmtime::CallHook::CallingHost => {
                        state.host_calls += 1;
                        if timed {
                            state.host_since = Some(std::time::Instant::now());
                        }
                    }
                    wasmtime::CallHook::ReturningFromHost => {
                        if let Some(since) = state.host_since.take() {
                            state.host_time += since.elapsed();
                        }
                    }
                    _ => {}
                }
                Ok(())
            });
        }
        if settings.count_fuel {
            store
                .set_fuel(u64::MAX)
                .map_err(anyhow::Error::from)
                .context("setting the VM's fuel")?;
        }
        let instance = plugin
            .compiled
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .context("instantiating the module")?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("the module exports no memory")?;
        let allocate = match export::<u32, u32>(&instance, &mut store, "proxy_on_memory_allocate")?
        {
            Some(f) => f,
            None => export::<u32, u32>(&instance, &mut store, "malloc")?
                .context("the module exports no allocator")?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);

        let exports = Exports {
            on_context_create: export(&instance, &mut store, "proxy_on_context_create")?,
            on_vm_start: export(&instance, &mut store, "proxy_on_vm_start")?,
            on_configure: export(&instance, &mut store, "proxy_on_configure")?,
            on_request_headers: export(&instance, &mut store, "proxy_on_request_headers")?,
            on_request_body: export(&instance, &mut store, "proxy_on_request_body")?,
            on_request_trailers: export(&instance, &mut store, "proxy_on_request_trailers")?,
            on_response_headers: export(&instance, &mut store, "proxy_on_response_headers")?,
            on_response_body: export(&instance, &mut store, "proxy_on_response_body")?,
            on_response_trailers: export(&instance, &mut store, "proxy_on_response_trailers")?,
            on_done: export(&instance, &mut store, "proxy_on_done")?,
            on_log: export(&instance, &mut store, "proxy_on_log")?,
            on_delete: export(&instance, &mut store, "proxy_on_delete")?,
            on_tick: export(&instance, &mut store, "proxy_on_tick")?,
            on_queue_ready: export(&instance, &mut store, "proxy_on_queue_ready")?,
            on_http_call_response: export(&instance, &mut store, "proxy_on_http_call_response")?,
            initialize: export(&instance, &mut store, "_initialize")?,
            main: export(&instance, &mut store, "main")?,
            start: export(&instance, &mut store, "_start")?,
        };
        let tick_ms = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(10).max(1);
        let timeout_ms = u64::try_from(settings.call_timeout.as_millis()).unwrap_or(u64::MAX);
        Ok(Vm {
            plugin: plugin.clone(),
            store,
            exports: Arc::new(exports),
            next_context_id: 2,
            failed: None,
            next_tick: None,
            deadline_ticks: timeout_ms.div_ceil(tick_ms).max(1),
            fuel_by_phase: std::collections::BTreeMap::new(),
        })
    }

    /// The root context id.
    pub fn root_context_id(&self) -> u32 {
        self.store.data().root_context_id
    }

    /// Hands out a stream context id.
    pub fn new_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id = self.next_context_id.wrapping_add(1).max(2);
        id
    }

    /// Calls a guest export for `phase` on `context_id`, bounded by the call timeout.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        phase: Phase,
        context_id: u32,
        func: &TypedFunc<P, R>,
        args: P,
    ) -> Result<R, GuestTrap> {
        {
            let state = self.store.data_mut();
            state.active = Some(phase);
            state.effective_context = context_id;
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        let before = self.plugin.settings.count_fuel.then(|| self.fuel_used());
        let result = func.call(&mut self.store, args);
        if let Some(before) = before {
            let used = self.fuel_used().saturating_sub(before);
            *self.fuel_by_phase.entry(phase).or_default() += used;
        }
        let state = self.store.data_mut();
        state.active = None;
        state.effective_context = 0;
        result.map_err(|error| {
            let interrupted = matches!(
                error.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            );
            let mut message = format!("{error:?}");
            if interrupted {
                message.push_str(&format!(
                    " (callback ran past its {:?} budget)",
                    self.plugin.settings.call_timeout
                ));
            }
            GuestTrap { phase, message }
        })
    }

    /// Fuel this VM has used since it was instantiated (0 unless its plugin counts fuel).
    pub fn fuel_used(&self) -> u64 {
        match self.store.get_fuel() {
            Ok(left) if self.plugin.settings.count_fuel => u64::MAX - left,
            _ => 0,
        }
    }

    /// Re-arms the tick timer after a callback changed its period (first tick one period
    /// after it was set, as in Envoy).
    pub fn rearm_tick(&mut self, now_monotonic: u64) {
        let state = self.store.data_mut();
        if state.tick_changed {
            state.tick_changed = false;
            self.next_tick = match state.tick_period_ms {
                0 => None,
                ms => Some(now_monotonic.saturating_add(u64::from(ms) * 1_000_000)),
            };
        }
    }

    /// The tick period in ns, if ticking.
    pub fn tick_period_nanos(&self) -> Option<u64> {
        match self.store.data().tick_period_ms {
            0 => None,
            ms => Some(u64::from(ms) * 1_000_000),
        }
    }
}
