//! `tollgate-filter`: the proxy-wasm HTTP filter Envoy runs on every worker (plugin
//! configuration `"role": "filter"`, [`http`]): identifies the caller, estimates the request's
//! worst-case cost, decides against every budget on the caller's chain, reserves, meters the
//! response and settles. Its companion `tollgate_sync.wasm` (`filter/sync/`, `"role": "sync"`,
//! a singleton `envoy.bootstrap.wasm` service with the same `vm_id`) pulls the snapshot, posts
//! usage batches and acknowledges local spend; the two meet in Envoy shared data and the usage
//! queue (`tollgate_core::sync_protocol`'s names). Two modules, so that the code every request
//! runs stays small and the sync service's is never loaded on a worker.
//!
//! Every callback reads from the host, calls `tollgate-core`, applies the result. A panic
//! would abort the VM (`panic = "abort"`), so nothing here unwraps request data, and host
//! calls are made only in phases where Envoy accepts them (the SDK panics on any other status).
//!
//! Build: `cargo build -p tollgate-filter --target wasm32-wasip1 --release`
//! → `target/wasm32-wasip1/release/tollgate_filter.wasm`, already through binaryen's
//! `wasm-opt` (the linker wrapper `scripts/wasm-link.sh`, set in `.cargo/config.toml`).

mod abi;
mod headers;
mod host;
mod http;
mod memcmp;
mod metrics;
mod root;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

/// The module's start function (`_initialize`, spec "Integration").
mod entry {
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(super::Plugin::Unconfigured) });
    }}
}

/// The root context.
enum Plugin {
    /// Before `on_configure`.
    Unconfigured,
    /// HTTP filter on a worker.
    Filter(root::FilterRoot),
}

impl Context for Plugin {
    fn on_done(&mut self) -> bool {
        if let Plugin::Filter(f) = self {
            f.on_done();
        }
        true
    }
}

impl RootContext for Plugin {
    fn on_configure(&mut self, _size: usize) -> bool {
        match host::configuration(tollgate_core::config::Role::Filter) {
            Some(config) => {
                *self = Plugin::Filter(root::FilterRoot::new(config));
                true
            }
            None => false,
        }
    }

    fn on_tick(&mut self) {
        if let Plugin::Filter(f) = self {
            f.on_tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self {
            Plugin::Filter(f) => Some(Box::new(http::Stream::new(f.shared()))),
            Plugin::Unconfigured => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
