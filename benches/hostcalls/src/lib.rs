//! Host-call probe: the body-reading floor (`tests/floor-filter`) plus `times` repetitions of one
//! family of proxy-wasm host calls per request, in the phase where Tollgate makes that call.
//!
//! One call costs too little to see in Envoy's CPU per request on a noisy machine; 32 of them
//! do not. `benches/load/compare.sh --hostcalls` runs this module with `times: 0` and with each
//! family in the same shipped Envoy, rounds interleaved, and divides each difference by
//! `times`: what one call of each family costs inside Envoy, which the harness (which runs its
//! own host) cannot tell. Configuration: the plugin configuration string `FAMILY:TIMES`, e.g.
//! `set_property:32` (unknown family: the plugin refuses to start). Build with
//! `cargo build -p tollgate-hostcalls --target wasm32-wasip1 --release`.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// The module's start function (the SDK's `main!` exports `_initialize`).
mod entry {
    use super::{Probe, ProbeRoot};
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;
    use std::rc::Rc;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(ProbeRoot { probe: Rc::new(Probe::default()) })
        });
    }}
}

/// Each family of host calls Tollgate makes per metered request, by the phase it makes it in.
#[derive(Clone, Copy, Default, PartialEq)]
enum Family {
    /// None: the floor itself (the baseline of a run).
    #[default]
    Nothing,
    /// `proxy_get_current_time_nanoseconds` (request headers).
    Time,
    /// `proxy_get_header_map_pairs` of the request headers (request headers).
    RequestHeaders,
    /// `proxy_get_property(xds.cluster_name)`: the routed cluster (request headers).
    Property,
    /// `proxy_replace_header_map_value` on the request headers (request headers); Envoy clears
    /// the route cache after each.
    SetRequestHeader,
    /// `proxy_set_property` of a new filter-state object, a name of its own each time (request body).
    SetProperty,
    /// `proxy_set_property` of the three values envoy/tollgate.yaml's access log prints
    /// (`tollgate.decision`, `tollgate.principal`, `tollgate.cost`, Tollgate-shaped), once per
    /// request whatever `times` is: what those values cost with the log and without it.
    LogState,
    /// `proxy_get_shared_data` (request body).
    SharedGet,
    /// `proxy_get_shared_data` then `proxy_set_shared_data` with its CAS: one pair (request body).
    SharedCas,
    /// `proxy_add_header_map_value` on the response headers (response headers).
    AddResponseHeader,
    /// `proxy_increment_metric` (response body).
    Metric,
}

impl Family {
    fn parse(name: &str) -> Option<Family> {
        Some(match name {
            "nothing" => Family::Nothing,
            "time" => Family::Time,
            "request_headers" => Family::RequestHeaders,
            "property" => Family::Property,
            "set_request_header" => Family::SetRequestHeader,
            "set_property" => Family::SetProperty,
            "log_state" => Family::LogState,
            "shared_get" => Family::SharedGet,
            "shared_cas" => Family::SharedCas,
            "add_response_header" => Family::AddResponseHeader,
            "metric" => Family::Metric,
            _ => return None,
        })
    }
}

/// What to repeat, how often, and the names made once at configuration.
#[derive(Default)]
struct Probe {
    family: Family,
    times: usize,
    names: Vec<String>,
    metric: u32,
}

impl Probe {
    /// Makes the calls of `family` if it is this probe's.
    fn run(&self, family: Family, sink: &mut usize) {
        if self.family != family {
            return;
        }
        for (i, name) in self.names.iter().enumerate().take(self.times) {
            *sink = sink.wrapping_add(match family {
                Family::Nothing => 0,
                Family::Time => hostcalls::get_current_time().map_or(0, |_| 1),
                Family::RequestHeaders => {
                    hostcalls::get_map(MapType::HttpRequestHeaders).map_or(0, |h| h.len())
                }
                Family::Property => hostcalls::get_property(vec!["xds", "cluster_name"])
                    .ok()
                    .flatten()
                    .map_or(0, |v| v.len()),
                Family::SetRequestHeader => {
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe", Some(name))
                        .map_or(0, |()| 1)
                }
                Family::SetProperty => {
                    hostcalls::set_property(vec![name.as_str()], Some(b"allow")).map_or(0, |()| 1)
                }
                Family::LogState if i > 0 => 0,
                Family::LogState => [
                    ("tollgate.decision", &b"allow"[..]),
                    ("tollgate.principal", b"org-1/project-1/user-1/key-1"),
                    ("tollgate.cost", b"0.0000126"),
                ]
                .into_iter()
                .map(|(k, v)| hostcalls::set_property(vec![k], Some(v)).map_or(0, |()| 1))
                .sum(),
                Family::SharedGet => hostcalls::get_shared_data("tollgate-probe")
                    .ok()
                    .and_then(|(v, _)| v)
                    .map_or(0, |v| v.len()),
                Family::SharedCas => {
                    let (value, cas) =
                        hostcalls::get_shared_data("tollgate-probe").unwrap_or((None, None));
                    let mut value = value.unwrap_or_default();
                    value.truncate(15);
                    value.push(u8::try_from(i % 200).unwrap_or(0));
                    hostcalls::set_shared_data("tollgate-probe", Some(&value), cas)
                        .map_or(0, |()| 1)
                }
                Family::AddResponseHeader => {
                    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, "1")
                        .map_or(0, |()| 1)
                }
                Family::Metric => hostcalls::increment_metric(self.metric, 1).map_or(0, |()| 1),
            });
        }
    }
}

/// The plugin (root) context: reads `FAMILY:TIMES` and hands out [`ProbeHttp`] streams.
struct ProbeRoot {
    probe: Rc<Probe>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let parsed = config.trim().split_once(':').and_then(|(f, n)| {
            Some((
                Family::parse(f)?,
                n.parse::<usize>().ok().filter(|n| *n <= 1024)?,
            ))
        });
        let Some((family, times)) = parsed else {
            let _ = hostcalls::log(
                LogLevel::Critical,
                &format!("tollgate-hostcalls: configuration {config:?} is not FAMILY:TIMES"),
            );
            return false;
        };
        // A budget's state is always there when Tollgate reads it: the value read must exist
        // (a missing key answers without handing the guest any bytes).
        let _ = hostcalls::set_shared_data("tollgate-probe", Some(&[0; 16]), None);
        self.probe = Rc::new(Probe {
            family,
            times,
            names: (0..times).map(|i| format!("x-probe-{i}")).collect(),
            metric: hostcalls::define_metric(MetricType::Counter, "tollgate_probe_total")
                .unwrap_or(0),
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            probe: Rc::clone(&self.probe),
            read: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: the floor's reads, plus the probe's calls.
struct ProbeHttp {
    probe: Rc<Probe>,
    read: usize,
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.read = self
            .read
            .wrapping_add(self.get_http_request_headers().len());
        for f in [
            Family::Time,
            Family::RequestHeaders,
            Family::Property,
            Family::SetRequestHeader,
        ] {
            self.probe.run(f, &mut self.read);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.read = self.read.wrapping_add(body.len());
        for f in [
            Family::SetProperty,
            Family::LogState,
            Family::SharedGet,
            Family::SharedCas,
        ] {
            self.probe.run(f, &mut self.read);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.read = self
            .read
            .wrapping_add(self.get_http_response_headers().len());
        self.probe.run(Family::AddResponseHeader, &mut self.read);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let chunk = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        self.read = self.read.wrapping_add(chunk.len());
        self.probe.run(Family::Metric, &mut self.read);
        Action::Continue
    }
}
