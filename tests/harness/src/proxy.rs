//! [`Host`]: one simulated Envoy process running proxy-wasm VMs.
//!
//! A host owns the VMs (one per worker, plus any singleton service), the state they share
//! (virtual clock, shared data and queues keyed by `vm_id`, metrics, clusters) and the
//! events waiting for delivery (HTTP call responses, queue notifications). Everything is
//! driven from the test's thread, deterministically:
//!
//! - [`Host::send`] runs one request through a VM (see `lifecycle.rs`);
//! - [`Host::advance`] moves the virtual clock and fires the ticks that fall due;
//! - events produced by a callback are delivered right after it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use wasmtime::{TypedFunc, WasmParams, WasmResults};

use crate::host::abi::Status;
use crate::host::{lock, shared_data, Event, Process};
use crate::outcome::{GuestTrap, LogLine, MetricValue, Phase, QueueItem};
use crate::plugin::Plugin;
use crate::upstream::{HttpCall, Reply, Upstream};
use crate::vm::Vm;
use crate::VmId;

/// Most events delivered in a row before the host assumes plugins are ping-ponging.
const MAX_EVENTS: usize = 10_000;

/// Where the virtual clock starts unless told otherwise: 2025-01-01T00:00:00Z.
const DEFAULT_START_SECS: u64 = 1_735_689_600;

/// What the VMs did since the host last took stock.
#[derive(Default)]
pub(crate) struct Collected {
    pub logs: Vec<LogLine>,
    pub calls: Vec<HttpCall>,
    pub queue_items: Vec<QueueItem>,
    pub metrics: Vec<String>,
    pub traps: Vec<GuestTrap>,
}

/// Why a VM failed to start.
#[derive(Debug)]
pub struct StartError {
    /// `plugin_config.name`.
    pub plugin: String,
    /// The callback that failed.
    pub phase: Phase,
    /// The trap message, or `None` when the callback returned `false`.
    pub trap: Option<String>,
    /// What the guest logged while starting.
    pub logs: Vec<LogLine>,
}

impl StartError {
    /// Whether `proxy_on_configure` returned `false`: the plugin refused its configuration
    /// (in Envoy: "Unable to create Wasm plugin", start-up aborts).
    pub fn config_rejected(&self) -> bool {
        self.phase == Phase::Configure && self.trap.is_none()
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.trap, self.phase) {
            (Some(trap), phase) => {
                write!(f, "plugin `{}` trapped in {phase}: {trap}", self.plugin)?
            }
            (None, Phase::Configure) => write!(
                f,
                "plugin `{}` rejected its configuration: proxy_on_configure returned false",
                self.plugin
            )?,
            (None, phase) => write!(
                f,
                "plugin `{}` failed to start: {phase} returned false",
                self.plugin
            )?,
        }
        if self.logs.is_empty() {
            write!(f, " (the guest logged nothing)")
        } else {
            write!(f, "; guest log:")?;
            for line in &self.logs {
                write!(f, "\n  {line}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for StartError {}

/// One simulated Envoy process.
pub struct Host {
    pub(crate) process: Arc<Mutex<Process>>,
    pub(crate) vms: Vec<Vm>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) collected: Collected,
    pub(crate) next_request: u64,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("vms", &self.vms.len())
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

/// Nanoseconds since the epoch of `time` (0 before the epoch).
fn nanos_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Host {
    /// An empty process whose clock starts at 2025-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at(UNIX_EPOCH + Duration::from_secs(DEFAULT_START_SECS))
    }

    /// An empty process whose clock starts at `time`.
    pub fn starting_at(time: SystemTime) -> Self {
        Self {
            process: Arc::new(Mutex::new(Process::new(nanos_since_epoch(time)))),
            vms: Vec::new(),
            logs: Vec::new(),
            collected: Collected::default(),
            next_request: 1,
        }
    }

    /// Starts a VM of `plugin` in this process, as Envoy starts one per worker:
    /// instantiate, `_initialize`, `proxy_on_context_create` for the root context,
    /// `proxy_on_vm_start`, `proxy_on_configure`. A `false` or a trap is a [`StartError`].
    pub fn add_vm(&mut self, plugin: &Plugin) -> Result<VmId> {
        let id = VmId(self.vms.len());
        let vm = Vm::instantiate(plugin, self.process.clone(), id)?;
        self.vms.push(vm);
        if let Err(error) = self.boot(id.0) {
            self.vms.pop();
            self.forget_vm(id);
            self.flush();
            return Err(error);
        }
        self.flush();
        Ok(id)
    }

    /// Starts another worker VM of the first plugin.
    pub fn new_vm(&mut self) -> Result<VmId> {
        let plugin = self
            .vms
            .first()
            .context("the host has no VM yet")?
            .plugin
            .clone();
        self.add_vm(&plugin)
    }

    /// Fuel (wasm operators run) `vm` has used since it started; 0 unless its plugin was
    /// built with [`crate::PluginBuilder::count_fuel`]. Deterministic: the harness's clocks and
    /// random numbers are its own, so the same module doing the same work uses the same fuel.
    pub fn fuel_used(&self, vm: VmId) -> u64 {
        self.vms.get(vm.0).map_or(0, Vm::fuel_used)
    }

    /// [`Host::fuel_used`] by the callback that used it (`proxy_on_request_body`, ...).
    pub fn fuel_by_callback(&self, vm: VmId) -> BTreeMap<&'static str, u64> {
        self.vms.get(vm.0).map_or_else(BTreeMap::new, |v| {
            v.fuel_by_phase
                .iter()
                .map(|(phase, fuel)| (phase.export_name(), *fuel))
                .collect()
        })
    }

    /// Host calls `vm` made since it started (proxy-wasm and WASI imports alike); 0 unless its
    /// plugin counts fuel or times its host calls.
    pub fn host_calls(&self, vm: VmId) -> u64 {
        self.vms.get(vm.0).map_or(0, |v| v.store.data().host_calls)
    }

    /// Time `vm` spent inside host calls since it started; zero unless its plugin times them
    /// ([`crate::PluginBuilder::time_host_calls`]).
    pub fn host_time(&self, vm: VmId) -> std::time::Duration {
        self.vms
            .get(vm.0)
            .map_or(std::time::Duration::ZERO, |v| v.store.data().host_time)
    }

    /// The VMs, in the order they were added.
    pub fn vms(&self) -> impl Iterator<Item = VmId> {
        (0..self.vms.len()).map(VmId)
    }

    /// The trap that failed `vm`, if it failed.
    pub fn vm_failure(&self, vm: VmId) -> Option<&GuestTrap> {
        self.vms.get(vm.0).and_then(|v| v.failed.as_ref())
    }

    /// Makes `cluster` callable with `proxy_http_call`, answered by `upstream`.
    pub fn upstream(&mut self, cluster: &str, upstream: Upstream) -> &mut Self {
        lock(&self.process)
            .upstreams
            .insert(cluster.to_owned(), upstream);
        self
    }

    /// Answers `cluster` with a closure (shorthand for [`Upstream::script`]).
    pub fn respond(
        &mut self,
        cluster: &str,
        responder: impl FnMut(&HttpCall) -> Reply + Send + 'static,
    ) -> &mut Self {
        self.upstream(cluster, Upstream::script(responder))
    }

    /// The virtual wall-clock time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(lock(&self.process).realtime_nanos)
    }

    /// Sets the virtual wall clock (timers run on the monotonic clock and do not fire).
    pub fn set_time(&mut self, time: SystemTime) {
        lock(&self.process).realtime_nanos = nanos_since_epoch(time);
    }

    /// Makes the next `times` calls of the import named `import` (e.g.
    /// `proxy_get_buffer_bytes`) return `status` instead of doing their work: a way to drive
    /// a guest into the paths Envoy's refusals take. Supported for `proxy_get_buffer_bytes`.
    pub fn inject_fault(&mut self, import: &str, status: Status, times: u32) {
        lock(&self.process)
            .faults
            .insert(import.to_owned(), (status, times.max(1)));
    }

    /// Moves the virtual clocks forward by `by`, firing every `proxy_on_tick` that falls due
    /// on the way, in time order across VMs, and delivering what they cause.
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        let target = lock(&self.process)
            .monotonic_nanos
            .saturating_add(nanos(by));
        loop {
            let due = self
                .vms
                .iter()
                .enumerate()
                .filter(|(_, vm)| vm.failed.is_none())
                .filter_map(|(index, vm)| vm.next_tick.filter(|t| *t <= target).map(|t| (t, index)))
                .min();
            let Some((at, index)) = due else { break };
            self.move_clock_to(at);
            let vm = &mut self.vms[index];
            vm.next_tick = vm
                .tick_period_nanos()
                .map(|period| at.saturating_add(period));
            self.fire_tick(index)?;
        }
        self.move_clock_to(target);
        self.flush();
        Ok(())
    }

    /// Calls `proxy_on_tick` on `vm` now, whatever its timer says.
    pub fn tick(&mut self, vm: VmId) -> Result<()> {
        let index = self.index(vm)?;
        self.fire_tick(index)?;
        self.flush();
        Ok(())
    }

    /// Runs `proxy_on_tick` on a VM and delivers what it caused.
    fn fire_tick(&mut self, index: usize) -> Result<()> {
        let vm = &self.vms[index];
        if vm.failed.is_some() {
            return Ok(());
        }
        let exports = vm.exports.clone();
        let root = vm.root_context_id();
        if let Some(on_tick) = &exports.on_tick {
            // A trap is recorded on the VM; the next request sees the failure policy.
            let _ = self.run(index, Phase::Tick, root, on_tick, root);
        }
        self.pump()
    }

    /// Moves both virtual clocks so that the monotonic one reads `monotonic`.
    fn move_clock_to(&mut self, monotonic: u64) {
        let mut process = lock(&self.process);
        if monotonic > process.monotonic_nanos {
            let delta = monotonic - process.monotonic_nanos;
            process.monotonic_nanos = monotonic;
            process.realtime_nanos = process.realtime_nanos.saturating_add(delta);
        }
    }

    /// Every HTTP call dispatched so far, in order.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        lock(&self.process).calls.clone()
    }

    /// Calls whose upstream answered [`Reply::Hold`] and that are still pending.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        lock(&self.process)
            .held
            .iter()
            .map(|h| h.call.clone())
            .collect()
    }

    /// Answers a held call and delivers the answer. Meant for calls made outside a request
    /// (ticks, start-up): [`Host::send`] runs a request to its end, so a stream that paused
    /// for a held call has stalled by the time a test could answer it.
    pub fn answer(&mut self, vm: VmId, token: u32, reply: Reply) -> Result<()> {
        {
            let mut process = lock(&self.process);
            let position = process
                .held
                .iter()
                .position(|h| h.call.vm == vm && h.call.token == token)
                .with_context(|| format!("no pending call {token} on {vm}"))?;
            let response = match reply {
                Reply::Respond(response) => crate::host::CallResponse::ok(&response),
                Reply::Fail => crate::host::CallResponse::failure(),
                Reply::Hold => return Ok(()),
            };
            let held = process.held.remove(position);
            process.events.push_back(Event::CallResponse {
                vm,
                context_id: held.call.context_id,
                token,
                response,
            });
        }
        self.pump()?;
        self.flush();
        Ok(())
    }

    /// The shared data value and CAS under `key` in the `vm_id` namespace.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.process)
            .shared_data
            .get(vm_id)
            .and_then(|map| map.get(key))
            .cloned()
    }

    /// Writes shared data as another worker would (CAS 0: unconditional); returns the new CAS.
    pub fn set_shared_data(&mut self, vm_id: &str, key: &str, value: impl Into<Vec<u8>>) -> u32 {
        let mut process = lock(&self.process);
        // An unconditional write cannot mismatch.
        let _ = shared_data::write(&mut process, vm_id, key.to_owned(), value.into(), 0);
        process
            .shared_data
            .get(vm_id)
            .and_then(|map| map.get(key))
            .map_or(0, |(_, cas)| *cas)
    }

    /// The items waiting in a queue, oldest first (left in place).
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Vec<Vec<u8>> {
        let process = lock(&self.process);
        process
            .queue_tokens
            .get(&(vm_id.to_owned(), name.to_owned()))
            .and_then(|token| process.queues.get(token))
            .map(|queue| queue.items.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes every item waiting in a queue, oldest first.
    pub fn drain_queue(&mut self, vm_id: &str, name: &str) -> Vec<Vec<u8>> {
        let mut process = lock(&self.process);
        let Some(token) = process
            .queue_tokens
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
        else {
            return Vec::new();
        };
        process
            .queues
            .get_mut(&token)
            .map(|queue| queue.items.drain(..).collect())
            .unwrap_or_default()
    }

    /// Enqueues an item on an existing queue, as another plugin would, and delivers the
    /// owner's `proxy_on_queue_ready`.
    pub fn enqueue(&mut self, vm_id: &str, name: &str, item: impl Into<Vec<u8>>) -> Result<()> {
        {
            let mut process = lock(&self.process);
            let token = process
                .queue_tokens
                .get(&(vm_id.to_owned(), name.to_owned()))
                .copied()
                .with_context(|| format!("no queue {name:?} in vm_id {vm_id:?}"))?;
            crate::host::queues::push(&mut process, token, item.into())
                .map_err(|status| anyhow::anyhow!("enqueue failed: {status:?}"))?;
        }
        self.pump()?;
        self.flush();
        Ok(())
    }

    /// The value of a metric, by the name the plugin defined it with.
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        lock(&self.process).metrics.get(name).map(|m| m.value())
    }

    /// Every metric of the process.
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        lock(&self.process)
            .metrics
            .iter()
            .map(|(name, metric)| (name.clone(), metric.value()))
            .collect()
    }

    /// Every log line so far (requests, ticks, start-up), in order.
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    /// Takes the log lines gathered so far.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }

    /// The index of `vm`, or an error.
    pub(crate) fn index(&self, vm: VmId) -> Result<usize> {
        if vm.0 < self.vms.len() {
            Ok(vm.0)
        } else {
            bail!("{vm} does not exist (the host has {} VMs)", self.vms.len())
        }
    }

    /// Calls a guest export and takes stock: re-arms the timer, records a trap (the VM is
    /// failed from then on), collects the journal.
    pub(crate) fn run<P: WasmParams, R: WasmResults>(
        &mut self,
        index: usize,
        phase: Phase,
        context_id: u32,
        func: &TypedFunc<P, R>,
        args: P,
    ) -> Result<R, GuestTrap> {
        let now = lock(&self.process).monotonic_nanos;
        let vm = &mut self.vms[index];
        let result = vm.call(phase, context_id, func, args);
        vm.rearm_tick(now);
        if let Err(trap) = &result {
            vm.failed = Some(trap.clone());
            self.collected.traps.push(trap.clone());
        }
        self.collect(index);
        result
    }

    /// Moves a VM's journal into the host's collection.
    fn collect(&mut self, index: usize) {
        let journal = std::mem::take(&mut self.vms[index].store.data_mut().journal);
        self.collected.logs.extend(journal.logs);
        self.collected.calls.extend(journal.calls);
        self.collected.queue_items.extend(journal.queue_items);
        for name in journal.metrics {
            if !self.collected.metrics.contains(&name) {
                self.collected.metrics.push(name);
            }
        }
    }

    /// Ends an operation that is not a request: keeps the logs, drops the rest.
    pub(crate) fn flush(&mut self) {
        let collected = std::mem::take(&mut self.collected);
        self.logs.extend(collected.logs);
    }

    /// Delivers waiting events until there are none.
    pub(crate) fn pump(&mut self) -> Result<()> {
        for _ in 0..MAX_EVENTS {
            let event = lock(&self.process).events.pop_front();
            let Some(event) = event else { return Ok(()) };
            self.deliver(event);
        }
        bail!("more than {MAX_EVENTS} events delivered in a row: plugins keep waking each other up")
    }

    /// Delivers one event to its VM (dropped if the VM failed or the context is gone,
    /// as Envoy cancels a destroyed context's calls).
    fn deliver(&mut self, event: Event) {
        let index = event.vm().0;
        let Some(vm) = self.vms.get(index) else {
            return;
        };
        if vm.failed.is_some() {
            return;
        }
        let root = vm.root_context_id();
        let exports = vm.exports.clone();
        match event {
            Event::CallResponse {
                context_id,
                token,
                response,
                ..
            } => {
                let live = context_id == root || vm.store.data().streams.contains_key(&context_id);
                let Some(on_response) = exports.on_http_call_response.as_ref().filter(|_| live)
                else {
                    return;
                };
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                let args = (
                    context_id,
                    token,
                    count(response.headers.len()),
                    count(response.body.len()),
                    count(response.trailers.len()),
                );
                self.vms[index].store.data_mut().call_response = Some(response);
                let _ = self.run(
                    index,
                    Phase::HttpCallResponse,
                    context_id,
                    on_response,
                    args,
                );
                self.vms[index].store.data_mut().call_response = None;
            }
            Event::QueueReady {
                context_id, token, ..
            } => {
                if let Some(on_queue_ready) = &exports.on_queue_ready {
                    let _ = self.run(
                        index,
                        Phase::QueueReady,
                        context_id,
                        on_queue_ready,
                        (context_id, token),
                    );
                }
            }
        }
    }

    /// Drops the events and held calls of a VM that is going away.
    fn forget_vm(&mut self, vm: VmId) {
        let mut process = lock(&self.process);
        process.events.retain(|event| event.vm() != vm);
        process.held.retain(|held| held.call.vm != vm);
    }

    /// Drops the events and held calls of a stream context that ended (Envoy cancels a
    /// destroyed context's HTTP calls).
    pub(crate) fn forget_context(&mut self, vm: VmId, context_id: u32) {
        let mut process = lock(&self.process);
        process.events.retain(|event| {
            !matches!(event, Event::CallResponse { vm: v, context_id: c, .. } if *v == vm && *c == context_id)
        });
        process
            .held
            .retain(|held| !(held.call.vm == vm && held.call.context_id == context_id));
    }

    /// Replaces a failed VM with a fresh one of the same plugin (FAIL_RELOAD).
    pub(crate) fn reload(&mut self, index: usize) -> Result<()> {
        let id = VmId(index);
        self.forget_vm(id);
        let plugin = self.vms[index].plugin.clone();
        self.vms[index] = Vm::instantiate(&plugin, self.process.clone(), id)?;
        self.boot(index)
    }

    /// Runs a new VM's start-up callbacks.
    fn boot(&mut self, index: usize) -> Result<()> {
        let exports = self.vms[index].exports.clone();
        let root = self.vms[index].root_context_id();
        let plugin = self.vms[index].plugin.settings.name.clone();
        let vm_config_len = len_u32(self.vms[index].plugin.settings.vm_configuration.len());
        let plugin_config_len = len_u32(self.vms[index].plugin.settings.configuration.len());
        let fail = |host: &mut Host, phase: Phase, trap: Option<GuestTrap>| -> anyhow::Error {
            let logs = std::mem::take(&mut host.collected.logs);
            host.logs.extend(logs.iter().cloned());
            StartError {
                plugin: plugin.clone(),
                phase,
                trap: trap.map(|t| t.message),
                logs,
            }
            .into()
        };

        // Module start: `_initialize` then `main` (reactor), else `_start` (spec, "Integration").
        if let Some(initialize) = &exports.initialize {
            self.run(index, Phase::Start, 0, initialize, ())
                .map_err(|t| fail(self, Phase::Start, Some(t)))?;
            if let Some(main) = &exports.main {
                self.run(index, Phase::Start, 0, main, (0, 0))
                    .map_err(|t| fail(self, Phase::Start, Some(t)))?;
            }
        } else if let Some(start) = &exports.start {
            self.run(index, Phase::Start, 0, start, ())
                .map_err(|t| fail(self, Phase::Start, Some(t)))?;
        }
        if let Some(create) = &exports.on_context_create {
            self.run(index, Phase::ContextCreate, root, create, (root, 0))
                .map_err(|t| fail(self, Phase::ContextCreate, Some(t)))?;
        }
        if let Some(vm_start) = &exports.on_vm_start {
            let accepted = self
                .run(index, Phase::VmStart, root, vm_start, (root, vm_config_len))
                .map_err(|t| fail(self, Phase::VmStart, Some(t)))?;
            if accepted == 0 {
                return Err(fail(self, Phase::VmStart, None));
            }
        }
        if let Some(configure) = &exports.on_configure {
            let accepted = self
                .run(
                    index,
                    Phase::Configure,
                    root,
                    configure,
                    (root, plugin_config_len),
                )
                .map_err(|t| fail(self, Phase::Configure, Some(t)))?;
            if accepted == 0 {
                return Err(fail(self, Phase::Configure, None));
            }
        }
        self.pump()
    }
}

/// A length as a wasm32 `size_t`.
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
