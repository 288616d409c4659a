//! `tollgate-filter`: the proxy-wasm module Envoy loads. One `.wasm`, two roles chosen by the
//! plugin configuration's `role`:
//! - `filter` (HTTP filter on every worker, [`http`]): identifies the caller, estimates the
//!   request's worst-case cost, decides against every budget on the caller's chain, reserves,
//!   meters the response and settles;
//! - `sync` (singleton `envoy.bootstrap.wasm` service with the same `vm_id`, [`service`]):
//!   pulls the snapshot, posts usage batches, acknowledges local spend.
//!
//! Every callback reads from the host, calls `tollgate-core`, applies the result. A panic
//! would abort the VM (`panic = "abort"`), so nothing here unwraps request data, and host
//! calls are made only in phases where Envoy accepts them (the SDK panics on any other status).
//!
//! Build: `cargo build -p tollgate-filter --target wasm32-wasip1 --release`
//! → `target/wasm32-wasip1/release/tollgate_filter.wasm`, already through binaryen's
//! `wasm-opt` (the linker wrapper `scripts/wasm-link.sh`, set in `.cargo/config.toml`).

mod host;
mod http;
mod metrics;
mod root;
mod service;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

/// The module's start function (`_initialize`, spec "Integration").
mod entry {
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(super::Plugin::Unconfigured) });
    }}
}

/// The root context: which role this VM plays once configured.
enum Plugin {
    /// Before `on_configure`.
    Unconfigured,
    /// HTTP filter on a worker.
    Filter(root::FilterRoot),
    /// The singleton sync service.
    Sync(Box<service::SyncService>),
}

impl Context for Plugin {
    fn on_done(&mut self) -> bool {
        if let Plugin::Filter(f) = self {
            f.on_done();
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        if let Plugin::Sync(s) = self {
            s.on_http_call_response(token, body);
        }
    }
}

impl RootContext for Plugin {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = host::plugin_configuration();
        // The data-plane token comes from Envoy's environment (`host_env_keys`), read through
        // WASI `environ_get`; the config only names the variable.
        let env = |name: &str| std::env::var(name).ok();
        match tollgate_core::config::Config::parse_with_env(&bytes, &env) {
            Ok(config) => {
                *self = match config.role {
                    tollgate_core::config::Role::Filter => {
                        Plugin::Filter(root::FilterRoot::new(config))
                    }
                    tollgate_core::config::Role::Sync => {
                        match service::SyncService::start(config) {
                            Some(s) => Plugin::Sync(Box::new(s)),
                            None => return false,
                        }
                    }
                };
                true
            }
            Err(e) => {
                // One line per problem so each names its field in Envoy's log.
                for p in &e.0 {
                    host::log(
                        LogLevel::Critical,
                        &format!("tollgate: invalid config: {}: {}", p.field, p.problem),
                    );
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        match self {
            Plugin::Filter(f) => f.on_tick(),
            Plugin::Sync(s) => s.on_tick(),
            Plugin::Unconfigured => {}
        }
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        if let Plugin::Sync(s) = self {
            s.drain_queue();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self {
            Plugin::Filter(f) => Some(Box::new(http::Stream::new(f.shared()))),
            // A sync-role plugin never sees HTTP streams; pass-through if misplaced.
            _ => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
