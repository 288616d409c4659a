//! Why a response's usage could not be read: one error type for the JSON and the SSE paths.
//!
//! Variants are small (field names are `&'static str` paths such as `usage.prompt_tokens`) so
//! an error costs nothing on the hot path and can be kept in a [`super::StreamOutcome`].
//! [`UsageError::reason`] gives a stable label for the filter's `uncharged{reason}` metric.

use thiserror::Error;

/// The largest token count accepted in any field: 10¹² tokens. No request comes near it (the
/// largest context windows are ~10⁷), so anything above is a corrupt or hostile body, and the
/// bound keeps every sum of a few fields far from `u64` overflow.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// Why usage could not be extracted from a response body, a stream event or a usage object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsageError {
    /// The body (or the usage object inside it) is not valid JSON.
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// The body is valid JSON but carries no usage: no `usage` / `usageMetadata` key, or its
    /// value is `null` (an error body, or a stream chunk before the final one).
    #[error("no usage in body")]
    NoUsage,
    /// The usage key holds something other than an object (a string, a number, an array).
    #[error("field `{0}` is not an object")]
    NotAnObject(&'static str),
    /// A field the provider always sends is absent (or `null`).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A token count is a string, a boolean, an object or an array instead of a number.
    #[error("field `{0}` is not a number")]
    NotANumber(&'static str),
    /// A token count has a fractional part.
    #[error("field `{0}` is not an integer")]
    NotAnInteger(&'static str),
    /// A token count is below zero.
    #[error("field `{0}` is negative")]
    Negative(&'static str),
    /// A token count does not fit `u64` or exceeds [`MAX_TOKENS`].
    #[error("field `{0}` is too large (over 1000000000000 tokens)")]
    TooLarge(&'static str),
    /// One count is documented as part of another but exceeds it (cached > prompt).
    #[error("field `{part}` ({part_value}) exceeds `{whole}` ({whole_value})")]
    Inconsistent {
        /// The field that should be a part, e.g. `usage.prompt_tokens_details.cached_tokens`.
        part: &'static str,
        /// Its value.
        part_value: u64,
        /// The field that should contain it, e.g. `usage.prompt_tokens`.
        whole: &'static str,
        /// Its value.
        whole_value: u64,
    },
    /// A usage object whose keys match no provider this crate knows
    /// ([`super::from_usage_object`]).
    #[error("usage object matches no known provider format")]
    UnknownFormat,
    /// A stream event's data was longer than the configured `max_event_bytes`; it was skipped
    /// without being buffered.
    #[error("stream event over {0} bytes skipped")]
    EventTooLarge(usize),
    /// A binary event stream's framing is broken (a length out of bounds, a checksum that
    /// does not match): what follows cannot be framed, so the stream is read no further.
    #[error("event stream framing: {0}")]
    BadFrame(&'static str),
    /// The provider ended the stream with an exception message instead of its last event.
    #[error("the stream carried an exception")]
    StreamException,
}

impl UsageError {
    /// A short, stable, lowercase label for metrics and logs (`malformed_json`, `no_usage`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            UsageError::MalformedJson(_) => "malformed_json",
            UsageError::NoUsage => "no_usage",
            UsageError::NotAnObject(_) => "not_an_object",
            UsageError::MissingField(_) => "missing_field",
            UsageError::NotANumber(_) => "not_a_number",
            UsageError::NotAnInteger(_) => "not_an_integer",
            UsageError::Negative(_) => "negative",
            UsageError::TooLarge(_) => "too_large",
            UsageError::Inconsistent { .. } => "inconsistent",
            UsageError::UnknownFormat => "unknown_format",
            UsageError::EventTooLarge(_) => "event_too_large",
            UsageError::BadFrame(_) => "bad_frame",
            UsageError::StreamException => "stream_exception",
        }
    }
}
