//! The body-reading floor: a proxy-wasm HTTP filter that reads everything a metering filter
//! must read through the ABI — the request headers, the whole request body (held until it is
//! complete, as a budget gate must before deciding), the response headers and every response
//! chunk as it passes — and does nothing with any of it.
//!
//! It is the baseline for what Tollgate's own work costs (issue 17): the difference between
//! the no-op filter and this module is the price of reading bodies through proxy-wasm at all;
//! the difference between this module and Tollgate is Tollgate's. Build it with
//! `cargo build -p tollgate-floor --target wasm32-wasip1 --release`
//! (`$CARGO_TARGET_DIR/wasm32-wasip1/release/tollgate_floor.wasm`).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// The module's start function (the SDK's `main!` exports `_initialize`).
mod entry {
    use super::FloorRoot;
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
    }}
}

/// The plugin (root) context: accepts any configuration and hands out [`FloorHttp`] streams.
struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorHttp { read: 0 }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: reads, keeps only a byte count (so nothing is optimised away).
struct FloorHttp {
    read: usize,
}

impl Context for FloorHttp {}

impl HttpContext for FloorHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.read = self
            .read
            .wrapping_add(self.get_http_request_headers().len());
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Held until complete, as a gate must before it decides.
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.read = self.read.wrapping_add(body.len());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.read = self
            .read
            .wrapping_add(self.get_http_response_headers().len());
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let chunk = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        self.read = self.read.wrapping_add(chunk.len());
        Action::Continue
    }
}
