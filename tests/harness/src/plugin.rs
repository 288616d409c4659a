//! A compiled proxy-wasm module plus the Envoy settings it runs with.
//!
//! [`Plugin`] is what an Envoy `wasm` filter config names: the module (compiled once with
//! wasmtime, imports resolved once with `instantiate_pre`), its `plugin_config`
//! (`name`, `root_id`, `configuration`, `failure_policy`) and its `vm_config`
//! (`vm_id`, `configuration`, `environment_variables`). Starting it gives a
//! [`Host`](crate::Host), the simulated Envoy process its VMs run in:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tollgate_harness::{FailurePolicy, Plugin};
//! let wasm = std::fs::read("tollgate_filter.wasm")?;
//! let mut host = Plugin::builder(wasm)
//!     .configuration(r#"{"mode":"enforce"}"#)
//!     .vm_id("tollgate")
//!     .failure_policy(FailurePolicy::FailReload)
//!     .start()?;
//! # let _ = &mut host;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Module, OptLevel,
    PoolingAllocationConfig, Store,
};

use crate::host::abi::LogLevel;
use crate::host::{self, HostState, Process};
use crate::upstream::Upstream;
use crate::{Host, VmId};

/// How often the epoch that bounds a guest call advances.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What Envoy does once a VM has trapped (`failure_policy` of the plugin config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Envoy's default: every later request on that VM gets a 503 local reply.
    #[default]
    FailClosed,
    /// Later requests pass through untouched: enforcement silently stops.
    FailOpen,
    /// The request that trapped gets a 503; the next request runs on a fresh VM.
    FailReload,
}

/// Settings shared by every VM of a plugin.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `plugin_config.name`.
    pub name: String,
    /// `plugin_config.root_id`.
    pub root_id: String,
    /// `vm_config.vm_id`.
    pub vm_id: String,
    /// `plugin_config.configuration`.
    pub configuration: Arc<[u8]>,
    /// `vm_config.configuration`.
    pub vm_configuration: Arc<[u8]>,
    /// `vm_config.environment_variables`.
    pub environment: Arc<[(String, String)]>,
    /// Extra properties, by dotted name.
    pub properties: Arc<BTreeMap<String, Vec<u8>>>,
    /// `plugin_config.failure_policy`.
    pub failure_policy: FailurePolicy,
    /// The log level reported to and applied on the guest.
    pub log_level: LogLevel,
    /// How long one guest callback may run before it is interrupted.
    pub call_timeout: Duration,
    /// Every VM counts wasmtime fuel (the wasm operators it runs): deterministic work units
    /// for the fuel gate ([`crate::fuel`]), at some cost in speed.
    pub count_fuel: bool,
    /// Every VM times its host calls ([`crate::Host::host_time`]), at the cost of two clock
    /// reads per call.
    pub time_host_calls: bool,
}

impl Settings {
    /// Defaults: name `tollgate`, empty `root_id` and `vm_id`, empty configurations,
    /// FAIL_CLOSED, log level TRACE (everything is recorded), 1 s per callback.
    pub fn defaults() -> Self {
        Self {
            name: "tollgate".to_owned(),
            root_id: String::new(),
            vm_id: String::new(),
            configuration: Arc::from(Vec::new()),
            vm_configuration: Arc::from(Vec::new()),
            environment: Arc::from(Vec::new()),
            properties: Arc::new(BTreeMap::new()),
            failure_policy: FailurePolicy::FailClosed,
            log_level: LogLevel::Trace,
            call_timeout: Duration::from_secs(1),
            count_fuel: false,
            time_host_calls: false,
        }
    }
}

/// The compiled module and its settings.
pub(crate) struct Compiled {
    /// The engine the module was compiled for (one per plugin, with its epoch thread).
    pub engine: Engine,
    /// Imports resolved once; each VM instantiates from this.
    pub pre: InstancePre<HostState>,
    /// Imports the host does not offer, linked as traps.
    pub unprovided_imports: Vec<String>,
}

/// A compiled proxy-wasm module with its Envoy settings. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) settings: Settings,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.settings.name)
            .field("root_id", &self.settings.root_id)
            .field("vm_id", &self.settings.vm_id)
            .field("failure_policy", &self.settings.failure_policy)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Starts describing a plugin around a `.wasm` module.
    pub fn builder(wasm: impl Into<Vec<u8>>) -> PluginBuilder {
        PluginBuilder::new(wasm.into())
    }

    /// Compiles `wasm`, starts one VM with these configurations (as Envoy starts a worker)
    /// and returns the host: the short form of [`Plugin::builder`].
    pub fn load(
        wasm: impl Into<Vec<u8>>,
        configuration: impl Into<Vec<u8>>,
        vm_configuration: impl Into<Vec<u8>>,
    ) -> Result<Host> {
        Plugin::builder(wasm)
            .configuration(configuration)
            .vm_configuration(vm_configuration)
            .start()
    }

    /// A new host (process) with one VM of this plugin.
    pub fn start(&self) -> Result<Host> {
        let mut host = Host::new();
        host.add_vm(self)?;
        Ok(host)
    }

    /// The same module with another plugin configuration (e.g. the singleton service
    /// sharing the filter's `vm_id`). Nothing is recompiled, which is why tests compile a
    /// module once and derive each case with the `with_*` methods.
    pub fn with_configuration(&self, configuration: impl Into<Vec<u8>>) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.configuration = configuration.into().into();
        plugin
    }

    /// The same module under another `root_id`.
    pub fn with_root_id(&self, root_id: &str) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.root_id = root_id.to_owned();
        plugin
    }

    /// The same module with another failure policy.
    pub fn with_failure_policy(&self, policy: FailurePolicy) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.failure_policy = policy;
        plugin
    }

    /// The same module under another `vm_id` (another shared-data and queue namespace).
    pub fn with_vm_id(&self, vm_id: &str) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.vm_id = vm_id.to_owned();
        plugin
    }

    /// The same module with another VM configuration.
    pub fn with_vm_configuration(&self, configuration: impl Into<Vec<u8>>) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.vm_configuration = configuration.into().into();
        plugin
    }

    /// The same module with another per-callback time budget.
    pub fn with_call_timeout(&self, timeout: Duration) -> Plugin {
        let mut plugin = self.clone();
        plugin.settings.call_timeout = timeout;
        plugin
    }

    /// `plugin_config.name`.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// `vm_config.vm_id`.
    pub fn vm_id(&self) -> &str {
        &self.settings.vm_id
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.settings.failure_policy
    }

    /// Imports of the module that the harness does not offer (`module.name`); they are
    /// linked as traps, so the module loads and fails only if it calls one. Empty for any
    /// module built with proxy-wasm 0.2.x for wasm32-wasip1.
    pub fn unprovided_imports(&self) -> &[String] {
        &self.compiled.unprovided_imports
    }
}

/// Builder for a [`Plugin`]; defaults match an Envoy config that sets nothing.
pub struct PluginBuilder {
    wasm: Vec<u8>,
    settings: Settings,
    environment: Vec<(String, String)>,
    properties: BTreeMap<String, Vec<u8>>,
    upstreams: Vec<(String, Upstream)>,
    start_time: Option<SystemTime>,
}

impl PluginBuilder {
    /// A builder with [`Settings::defaults`].
    fn new(wasm: Vec<u8>) -> Self {
        Self {
            wasm,
            settings: Settings::defaults(),
            environment: Vec::new(),
            properties: BTreeMap::new(),
            upstreams: Vec::new(),
            start_time: None,
        }
    }

    /// `plugin_config.configuration` (what `proxy_on_configure` reads).
    pub fn configuration(mut self, configuration: impl Into<Vec<u8>>) -> Self {
        self.settings.configuration = configuration.into().into();
        self
    }

    /// `vm_config.configuration` (what `proxy_on_vm_start` reads).
    pub fn vm_configuration(mut self, configuration: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_configuration = configuration.into().into();
        self
    }

    /// `plugin_config.name`.
    pub fn name(mut self, name: &str) -> Self {
        self.settings.name = name.to_owned();
        self
    }

    /// `plugin_config.root_id`.
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.settings.root_id = root_id.to_owned();
        self
    }

    /// `vm_config.vm_id`: the namespace of shared data and queues.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.settings.vm_id = vm_id.to_owned();
        self
    }

    /// `plugin_config.failure_policy`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.settings.failure_policy = policy;
        self
    }

    /// One of `vm_config.environment_variables`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A property the plugin can read with `proxy_get_property`, by dotted name
    /// (e.g. `node.metadata.region`).
    pub fn property(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The level `proxy_get_log_level` reports; lines below it are dropped.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Counts the fuel (wasm operators run) of every VM, read with [`crate::Host::fuel_used`].
    pub fn count_fuel(mut self, count: bool) -> Self {
        self.settings.count_fuel = count;
        self
    }

    /// Times every VM's host calls, read with [`crate::Host::host_time`].
    pub fn time_host_calls(mut self, time: bool) -> Self {
        self.settings.time_host_calls = time;
        self
    }

    /// How long one callback may run before the epoch deadline interrupts it (a trap).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.settings.call_timeout = timeout;
        self
    }

    /// A cluster the plugin can call, known from the first callback on (used by
    /// [`PluginBuilder::start`]).
    pub fn upstream(mut self, cluster: &str, upstream: Upstream) -> Self {
        self.upstreams.push((cluster.to_owned(), upstream));
        self
    }

    /// The virtual wall-clock time the host starts at (used by [`PluginBuilder::start`]).
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start_time = Some(time);
        self
    }

    /// Compiles the module and checks it speaks proxy-wasm ABI 0.2.x.
    pub fn build(self) -> Result<Plugin> {
        self.build_parts().map(|(plugin, _, _)| plugin)
    }

    /// Builds the plugin, creates a host with its clusters and start time, and starts one VM.
    pub fn start(self) -> Result<Host> {
        let (plugin, upstreams, start_time) = self.build_parts()?;
        let mut host = match start_time {
            Some(time) => Host::starting_at(time),
            None => Host::new(),
        };
        for (cluster, upstream) in upstreams {
            host.upstream(&cluster, upstream);
        }
        host.add_vm(&plugin)?;
        Ok(host)
    }

    /// Compiles and splits off what belongs to the host.
    #[allow(clippy::type_complexity)]
    fn build_parts(mut self) -> Result<(Plugin, Vec<(String, Upstream)>, Option<SystemTime>)> {
        self.settings.environment = self.environment.into();
        self.settings.properties = Arc::new(self.properties);
        let compiled = compile(&self.wasm, self.settings.count_fuel)?;
        let plugin = Plugin {
            compiled: Arc::new(compiled),
            settings: self.settings,
        };
        Ok((plugin, self.upstreams, self.start_time))
    }
}

/// Compiles `wasm` on a fresh engine and pre-resolves its imports.
fn compile(wasm: &[u8], count_fuel: bool) -> Result<Compiled> {
    let mut config = Config::new();
    config.cranelift_opt_level(OptLevel::Speed);
    config.consume_fuel(count_fuel);
    // A runaway guest is stopped by an epoch deadline (cheaper than fuel on every call).
    config.epoch_interruption(true);
    // `perf record` can name guest functions when asked (TOLLGATE_HARNESS_PERFMAP=1).
    if std::env::var_os("TOLLGATE_HARNESS_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    // The pooling allocator makes a fresh VM (worker, FAIL_RELOAD) cheap; the limits keep
    // the reserved address space modest when many tests run in parallel.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(128)
        .total_memories(128)
        .total_tables(128)
        .max_memory_size(512 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;

    let module = Module::new(&engine, wasm)
        .map_err(anyhow::Error::from)
        .context("compiling the wasm module")?;
    let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
    let has = |name: &str| exports.iter().any(|e| e == name);
    if !has("proxy_abi_version_0_2_1") && !has("proxy_abi_version_0_2_0") {
        bail!("the module exports neither proxy_abi_version_0_2_1 nor proxy_abi_version_0_2_0: not a proxy-wasm ABI 0.2 module");
    }
    if !has("memory") {
        bail!("the module exports no memory");
    }
    if !has("proxy_on_memory_allocate") && !has("malloc") {
        bail!("the module exports neither proxy_on_memory_allocate nor malloc");
    }

    let mut linker = host::linker(&engine)?;
    let provided: HashSet<(String, String)> = {
        // A detached state, only to list what the linker defines.
        let settings = Settings::defaults();
        let state = HostState::new(Arc::new(Mutex::new(Process::new(0))), VmId(0), &settings);
        let mut store = Store::new(&engine, state);
        linker
            .iter(&mut store)
            .map(|(module, name, _)| (module.to_owned(), name.to_owned()))
            .collect()
    };
    let unprovided_imports: Vec<String> = module
        .imports()
        .filter(|i| !provided.contains(&(i.module().to_owned(), i.name().to_owned())))
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    // Anything else the module imports is linked as a trap, so it still loads.
    linker.define_unknown_imports_as_traps(&module)?;
    let pre = linker.instantiate_pre(&module)?;

    spawn_epoch_ticker(&engine)?;
    Ok(Compiled {
        engine,
        pre,
        unprovided_imports,
    })
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("harness-epoch".to_owned())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })
        .context("spawning the epoch thread")?;
    Ok(())
}
