//! Host calls wrapped for the phases they are used in, returning values rather than
//! panicking where Envoy can refuse (the SDK's trait methods unwrap every status).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, Status};
use tollgate_core::config::{Config, Role};
use tollgate_core::local_spend::LocalBudget;

/// Logs, ignoring a refused log call (there is nowhere to report it).
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Host time in Unix milliseconds (0 if the host cannot say).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Host time in Unix seconds.
pub fn now_s() -> i64 {
    i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)
}

/// The plugin configuration, validated for the module's `role`: every problem is logged (one
/// line each, naming its field, in Envoy's log) and the plugin refused (`None`).
pub fn configuration(role: Role) -> Option<Config> {
    let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    // The data-plane token comes from Envoy's environment (`host_env_keys`), read through
    // WASI `environ_get`; the config only names the variable.
    let env = |name: &str| std::env::var(name).ok();
    let problems = match tollgate_load::configuration(&bytes, &env) {
        Ok(config) if config.role == role => return Some(config),
        Ok(_) => {
            let (asked, module) = match role {
                Role::Filter => ("sync", "tollgate_sync.wasm"),
                Role::Sync => ("filter", "tollgate_filter.wasm"),
            };
            vec![format!(
                "role: \"{asked}\" runs in {module}, a module of its own"
            )]
        }
        Err(e) => {
            e.0.iter()
                .map(|p| format!("{}: {}", p.field, p.problem))
                .collect()
        }
    };
    for p in problems {
        log(
            LogLevel::Critical,
            &format!("tollgate: invalid config: {p}"),
        );
    }
    None
}

/// Reads shared data (value, cas).
pub fn shared(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Writes shared data; `false` on a CAS mismatch.
pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

/// Most attempts of one get-modify-set before giving up (each retry means another worker
/// wrote in between; a handful suffices even under heavy contention).
const CAS_ATTEMPTS: usize = 32;

/// One budget's local state in shared data: its key, shared with the worker's snapshot (made
/// once per budget definition; every read and write of the budget in a request uses it).
pub struct BudgetSlot(Arc<str>);

impl BudgetSlot {
    /// The slot at `key`: [`tollgate_core::local_spend::budget_key`] of the budget's id,
    /// which a worker's snapshot makes once per budget (`snapshot::BudgetNames::local_key`).
    pub fn at(key: Arc<str>) -> BudgetSlot {
        BudgetSlot(key)
    }

    /// Its shared-data key.
    pub fn key(&self) -> &Arc<str> {
        &self.0
    }

    /// The state with its CAS. Corrupt state reads as zero (and is logged): refusing every
    /// request over a bad value would be worse than a lost local delta.
    pub fn read(&self) -> (LocalBudget, Option<u32>) {
        let (bytes, cas) = shared(&self.0);
        let state = match bytes.map(LocalBudget::decode) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                log(LogLevel::Error, &format!("tollgate: {}: {e}", self.0));
                LocalBudget::default()
            }
            None => LocalBudget::default(),
        };
        (state, cas)
    }

    /// Writes the state if nobody wrote since `cas`.
    pub fn write(&self, state: &LocalBudget, cas: Option<u32>) -> bool {
        set_shared(&self.0, state.encoded(), cas)
    }

    /// Applies `change` to the state atomically (get-modify-set on the CAS).
    pub fn update(&self, mut change: impl FnMut(&mut LocalBudget)) -> bool {
        for _ in 0..CAS_ATTEMPTS {
            let (mut state, cas) = self.read();
            change(&mut state);
            if self.write(&state, cas) {
                return true;
            }
        }
        log(
            LogLevel::Error,
            &format!("tollgate: {}: update lost to contention", self.0),
        );
        false
    }
}

/// Puts an item on a shared queue.
pub fn enqueue(queue: u32, item: &[u8]) -> Result<(), Status> {
    hostcalls::enqueue_shared_queue(queue, Some(item))
}
