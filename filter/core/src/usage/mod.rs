//! Usage extraction: one normalised [`Usage`] from every provider response format Tollgate
//! meters, JSON bodies and incremental SSE streams alike.
//!
//! Conventions follow the providers' own docs and LiteLLM's `cost_per_token`: `output` includes
//! reasoning tokens; the cache buckets are disjoint from `input_uncached`. Reasoning above
//! output is clamped to output; cached above prompt is an error ([`UsageError::Inconsistent`]).
//! The field mapping per provider API, with links to each provider's docs, is in its module
//! under [`crate::provider`]; this module holds the engines they share.
//!
//! - [`from_json`]: a whole response body. Only the usage object is parsed; the rest of the
//!   body is walked, not decoded (`scan.rs`), so a 1 KB chat completion costs well under 1 µs.
//! - [`SseUsage`]: a streamed response, chunk by chunk, in memory bounded by one event
//!   (`sse.rs`); [`from_sse`] runs it over a whole stream at once.
//! - [`from_usage_object`]: a bare usage object whose provider is recognised from its keys.
//!
//! No input makes any of them panic; every failure is a [`UsageError`] naming the field.
//!
//! Tests: `cargo test -p tollgate-core --lib usage` (unit and property tests) and
//! `cargo test -p tollgate-core --test usage_golden` (provider payloads in
//! `tests/fixtures/usage/`, each stream split at every byte). Bench:
//! `cargo bench -p tollgate-core --bench usage`.

use serde::{Deserialize, Serialize};

use crate::pricing::{SearchContext, ServiceTier};
use crate::provider::ApiFormat;

mod error;
pub mod eventstream;
pub(crate) mod fields;
mod json;
pub(crate) mod scan;
mod sse;
mod stream;

pub use error::{UsageError, MAX_TOKENS};
pub use eventstream::EventStreamUsage;
pub use fields::UsageValue;
pub(crate) use json::{find_member, usage_in, usage_of};
pub use json::{from_json, from_usage_object, served_json, Served};
pub use scan::Key;
pub use sse::SseUsage;
pub use stream::{StreamOutcome, StreamRead};

/// Token counts of one request, normalised across providers. Every bucket is disjoint except
/// `reasoning`, which is the part of `output` spent on reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Prompt tokens neither read from nor written to the cache.
    #[serde(default)]
    pub input_uncached: u64,
    /// Prompt tokens served from the cache.
    #[serde(default)]
    pub cache_read: u64,
    /// Prompt tokens written to a cache entry that lives 5 minutes (Anthropic's default).
    #[serde(default)]
    pub cache_write_5m: u64,
    /// Prompt tokens written to a cache entry that lives 1 hour.
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Completion tokens, reasoning included.
    #[serde(default)]
    pub output: u64,
    /// The part of `output` spent on reasoning (never more than `output`).
    #[serde(default)]
    pub reasoning: u64,
    // The kinds below are absent from an event that has none of them, so events without them
    // encode (and hash, `content_sha256` in the ledger) exactly as before they existed.
    /// The part of `input_uncached` that was audio.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_audio: u64,
    /// The part of `input_uncached` that was images.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_image: u64,
    /// The part of `output` that was audio.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_audio: u64,
    /// The part of `output` that was images.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_image: u64,
    /// Web searches the provider ran for the request.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_searches: u64,
    /// How much context each web search gathered (what the request asked for).
    #[serde(default, skip_serializing_if = "SearchContext::is_medium")]
    pub search_context: SearchContext,
    /// The service tier the provider says served the request.
    #[serde(default, skip_serializing_if = "ServiceTier::is_standard")]
    pub service_tier: ServiceTier,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Usage {
    /// No tokens of any kind, standard tier (a `const` [`Usage::default`]).
    pub const ZERO: Usage = Usage {
        input_uncached: 0,
        cache_read: 0,
        cache_write_5m: 0,
        cache_write_1h: 0,
        output: 0,
        reasoning: 0,
        input_audio: 0,
        input_image: 0,
        output_audio: 0,
        output_image: 0,
        web_searches: 0,
        search_context: SearchContext::Medium,
        service_tier: ServiceTier::Standard,
    };

    /// The counts by their serialized names.
    pub fn named_counts(&self) -> [(&'static str, u64); 11] {
        [
            ("input_uncached", self.input_uncached),
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("output", self.output),
            ("reasoning", self.reasoning),
            ("input_audio", self.input_audio),
            ("input_image", self.input_image),
            ("output_audio", self.output_audio),
            ("output_image", self.output_image),
            ("web_searches", self.web_searches),
        ]
    }

    /// All prompt tokens, cached ones included: what long-context tiers are measured against.
    pub fn prompt_total(&self) -> u64 {
        self.input_uncached
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
    }
}

/// Whether an answer whose `content-encoding` header is `header` can be metered. Usage is read
/// from the bytes as they pass, so only an answer without a coding (header absent, empty or
/// `identity`) is readable; the filter asks the provider for `identity` and Envoy's
/// decompressor filters (between Tollgate and the router in the shipped configs) inflate
/// gzip, br and zstd, so any other coding left here is counted as its own reason.
pub fn readable_encoding(header: Option<&str>) -> bool {
    // A list of codings ("identity, gzip") is as unreadable as its last one: not split.
    header.is_none_or(|v| v.is_empty() || v.eq_ignore_ascii_case("identity"))
}

/// Reads a whole SSE stream held in memory (tests, the CLI, replayed traffic); the filter feeds
/// [`SseUsage`] chunk by chunk instead.
pub fn from_sse(format: ApiFormat, stream: &[u8], max_event_bytes: usize) -> StreamOutcome {
    let mut sse = SseUsage::new(format, max_event_bytes);
    sse.push(stream);
    sse.finish()
}

#[cfg(test)]
mod tests {
    use super::readable_encoding;

    #[test]
    fn only_an_answer_without_coding_is_readable() {
        for h in [None, Some(""), Some("identity"), Some("Identity")] {
            assert!(readable_encoding(h), "{h:?}");
        }
        for h in [
            "gzip",
            "br",
            "zstd",
            "deflate",
            "x-gzip",
            "identity, gzip",
            "gzip, identity",
        ] {
            assert!(!readable_encoding(Some(h)), "{h}");
        }
    }
}
