//! Constants of the proxy-wasm ABI 0.2.1 and of the WASI subset it relies on.
//!
//! Every value here is taken from the "Types" section of the spec:
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#types>.
//! The host functions convert the raw `u32`s a guest passes with the `TryFrom` impls
//! below; an unknown value is answered with `BAD_ARGUMENT`, as the spec asks.

use std::fmt;

/// `proxy_status_t`: what every host function returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `OK`.
    Ok = 0,
    /// `NOT_FOUND`: the key, queue, metric, property or buffer does not exist (here).
    NotFound = 1,
    /// `BAD_ARGUMENT`: unknown enum value, missing pseudo-header, or a map/buffer that
    /// the current phase may not touch (Envoy's answer to a late header mutation).
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE`.
    SerializationFailure = 3,
    /// `PARSE_FAILURE`.
    ParseFailure = 4,
    /// `INVALID_MEMORY_ACCESS`: a pointer/size pair outside guest memory.
    InvalidMemoryAccess = 6,
    /// `EMPTY`: nothing to dequeue.
    Empty = 7,
    /// `CAS_MISMATCH`: another writer updated the shared data first.
    CasMismatch = 8,
    /// `INTERNAL_FAILURE`.
    InternalFailure = 10,
    /// `UNIMPLEMENTED`.
    Unimplemented = 12,
}

/// `proxy_log_level_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `TRACE`.
    Trace = 0,
    /// `DEBUG`.
    Debug = 1,
    /// `INFO`.
    Info = 2,
    /// `WARN`.
    Warn = 3,
    /// `ERROR`.
    Error = 4,
    /// `CRITICAL`: the Rust SDK's panic hook logs the panic message at this level.
    Critical = 5,
}

/// `proxy_action_t`: what a stream callback returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `CONTINUE`: forward what was seen.
    Continue = 0,
    /// `PAUSE`: stop iteration. From a body callback Envoy buffers (StopIterationAndBuffer);
    /// from a headers callback Envoy stops everything (StopAllIterationAndWatermark).
    Pause = 1,
}

/// `proxy_buffer_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// `HTTP_REQUEST_BODY`.
    HttpRequestBody = 0,
    /// `HTTP_RESPONSE_BODY`.
    HttpResponseBody = 1,
    /// `DOWNSTREAM_DATA` (TCP streams; always empty here).
    DownstreamData = 2,
    /// `UPSTREAM_DATA` (TCP streams; always empty here).
    UpstreamData = 3,
    /// `HTTP_CALL_RESPONSE_BODY`: readable in `proxy_on_http_call_response`.
    HttpCallResponseBody = 4,
    /// `GRPC_CALL_MESSAGE` (no gRPC here; always empty).
    GrpcCallMessage = 5,
    /// `VM_CONFIGURATION`.
    VmConfiguration = 6,
    /// `PLUGIN_CONFIGURATION`: readable in `proxy_on_configure` only.
    PluginConfiguration = 7,
    /// `FOREIGN_FUNCTION_ARGUMENTS`.
    ForeignFunctionArguments = 8,
}

/// `proxy_map_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// `HTTP_REQUEST_HEADERS`.
    HttpRequestHeaders = 0,
    /// `HTTP_REQUEST_TRAILERS`.
    HttpRequestTrailers = 1,
    /// `HTTP_RESPONSE_HEADERS`.
    HttpResponseHeaders = 2,
    /// `HTTP_RESPONSE_TRAILERS`.
    HttpResponseTrailers = 3,
    /// `GRPC_CALL_INITIAL_METADATA`.
    GrpcCallInitialMetadata = 4,
    /// `GRPC_CALL_TRAILING_METADATA`.
    GrpcCallTrailingMetadata = 5,
    /// `HTTP_CALL_RESPONSE_HEADERS`.
    HttpCallResponseHeaders = 6,
    /// `HTTP_CALL_RESPONSE_TRAILERS`.
    HttpCallResponseTrailers = 7,
}

/// `proxy_stream_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// `HTTP_REQUEST`.
    HttpRequest = 0,
    /// `HTTP_RESPONSE`.
    HttpResponse = 1,
    /// `DOWNSTREAM`.
    Downstream = 2,
    /// `UPSTREAM`.
    Upstream = 3,
}

/// `proxy_metric_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `COUNTER`: only grows.
    Counter = 0,
    /// `GAUGE`: set or moved either way.
    Gauge = 1,
    /// `HISTOGRAM`: recorded samples.
    Histogram = 2,
}

/// `wasi_errno_t`: what the WASI shim returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WasiErrno {
    /// `SUCCESS`.
    Success = 0,
    /// `BADF`: unknown file descriptor.
    Badf = 8,
    /// `FAULT`: pointer outside guest memory.
    Fault = 21,
    /// `INVAL`: invalid argument.
    Inval = 28,
    /// `NOSYS`: a WASI function this host does not offer (filesystem and the like).
    Nosys = 52,
    /// `NOTSUP`: unsupported clock.
    Notsup = 58,
}

/// `wasi_clock_id_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockId {
    /// `REALTIME`: the harness's virtual wall clock.
    Realtime = 0,
    /// `MONOTONIC`: the harness's virtual monotonic clock.
    Monotonic = 1,
}

/// The error for a raw value that names no variant of an ABI enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue(pub u32);

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown ABI value {}", self.0)
    }
}

impl std::error::Error for UnknownValue {}

/// Implements `TryFrom<u32>` for a `#[repr(u32)]` enum from its variant list.
macro_rules! try_from_u32 {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl TryFrom<u32> for $ty {
            type Error = UnknownValue;

            fn try_from(raw: u32) -> Result<Self, UnknownValue> {
                $(
                    if raw == $ty::$variant as u32 {
                        return Ok($ty::$variant);
                    }
                )+
                Err(UnknownValue(raw))
            }
        }
    };
}

try_from_u32!(Status {
    Ok,
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
});
try_from_u32!(LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical
});
try_from_u32!(Action { Continue, Pause });
try_from_u32!(BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcCallMessage,
    VmConfiguration,
    PluginConfiguration,
    ForeignFunctionArguments,
});
try_from_u32!(MapType {
    HttpRequestHeaders,
    HttpRequestTrailers,
    HttpResponseHeaders,
    HttpResponseTrailers,
    GrpcCallInitialMetadata,
    GrpcCallTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
});
try_from_u32!(StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream
});
try_from_u32!(MetricType {
    Counter,
    Gauge,
    Histogram
});
try_from_u32!(ClockId {
    Realtime,
    Monotonic
});

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_spec_table() {
        assert_eq!(Status::CasMismatch as u32, 8);
        assert_eq!(Status::Unimplemented as u32, 12);
        assert_eq!(BufferType::PluginConfiguration as u32, 7);
        assert_eq!(MapType::HttpCallResponseHeaders as u32, 6);
        assert_eq!(WasiErrno::Fault as u32, 21);
    }

    #[test]
    fn unknown_values_are_refused() {
        assert_eq!(MapType::try_from(8), Err(UnknownValue(8)));
        assert_eq!(Status::try_from(5), Err(UnknownValue(5)));
        assert_eq!(Action::try_from(1), Ok(Action::Pause));
    }
}
