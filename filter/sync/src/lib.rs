//! `tollgate-sync`: the sync service Envoy runs once per process (plugin configuration
//! `"role": "sync"`, a singleton `envoy.bootstrap.wasm` service with the filter's `vm_id`).
//! It pulls the snapshot by deltas, publishes it to Envoy shared data by sections, posts the
//! usage the workers queue and acknowledges their local spend ([`service`]). The HTTP filter
//! on the workers is the other module, `tollgate_filter.wasm` (`filter/`); the host glue both
//! use is one file, compiled into each.
//!
//! Build: `cargo build -p tollgate-sync --target wasm32-wasip1 --release`
//! → `target/wasm32-wasip1/release/tollgate_sync.wasm`.

// The filter's host glue; the sync service uses part of it.
#[allow(dead_code)]
#[path = "../../src/host.rs"]
mod host;

mod gauges;
mod service;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

/// The module's start function (`_initialize`, spec "Integration").
mod entry {
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(super::Plugin(None)) });
    }}
}

/// The root context: the service, once configured.
struct Plugin(Option<Box<service::SyncService>>);

impl Context for Plugin {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        if let Some(s) = &mut self.0 {
            s.on_http_call_response(token, body);
        }
    }
}

impl RootContext for Plugin {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.0 = host::configuration(tollgate_core::config::Role::Sync)
            .and_then(service::SyncService::start)
            .map(Box::new);
        self.0.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(s) = &mut self.0 {
            s.on_tick();
        }
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        if let Some(s) = &mut self.0 {
            s.drain_queue();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // A service never sees HTTP streams.
        None
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
