//! A proxy-wasm HTTP filter that does nothing.
//!
//! It sets a root context and an HTTP context whose every callback returns
//! `Continue`, so the wasmtime harness (`tests/harness`) can measure what a filter costs
//! on top of the bare proxy-wasm ABI round trips. Build it with
//! `cargo build -p tollgate-noop --target wasm32-wasip1 --release`; the module lands in
//! `$CARGO_TARGET_DIR/wasm32-wasip1/release/tollgate_noop.wasm`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// The module's start function: the SDK's `main!` exports it as `_initialize`, which the
/// host calls once after instantiation (spec, "Integration"). The module is private so the
/// generated export needs no public docs.
mod entry {
    use super::NoopRoot;
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
    }}
}

/// The plugin (root) context: accepts any configuration and hands out [`NoopHttp`] streams.
struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: every phase lets the data through untouched.
struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }
}
