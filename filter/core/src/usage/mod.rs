//! Usage extraction: one normalised [`Usage`] from every provider response format Tollgate
//! meters, JSON bodies and incremental SSE streams alike.
//!
//! Conventions follow the providers' own docs and LiteLLM's `cost_per_token`: `output` includes
//! reasoning tokens; the cache buckets are disjoint from `input_uncached`. Reasoning above
//! output is clamped to output; cached above prompt is an error ([`UsageError::Inconsistent`]).
//! The field mapping per provider, with links to each provider's docs, is in `provider.rs`.
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

mod error;
mod json;
mod provider;
mod scan;
mod sse;

pub use error::{UsageError, MAX_TOKENS};
pub use json::{from_json, from_usage_object, served_json};
pub use sse::{SseUsage, StreamOutcome};

/// Token counts of one request, normalised across providers. Every bucket is disjoint except
/// `reasoning`, which is the part of `output` spent on reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Usage {
    /// The six counts by their serialized names.
    pub fn named_counts(&self) -> [(&'static str, u64); 6] {
        [
            ("input_uncached", self.input_uncached),
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("output", self.output),
            ("reasoning", self.reasoning),
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

/// The provider API a request or response speaks, recognised from the request path or the
/// shape of a usage object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFormat {
    /// OpenAI `POST /v1/chat/completions` (and `/v1/completions`).
    OpenAiChat,
    /// OpenAI `POST /v1/responses`.
    OpenAiResponses,
    /// OpenAI `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Gemini `models/*:generateContent` and `:streamGenerateContent`.
    GeminiGenerateContent,
}

/// Reads a whole SSE stream held in memory (tests, the CLI, replayed traffic); the filter feeds
/// [`SseUsage`] chunk by chunk instead.
pub fn from_sse(format: ApiFormat, stream: &[u8], max_event_bytes: usize) -> StreamOutcome {
    let mut sse = SseUsage::new(format, max_event_bytes);
    sse.push(stream);
    sse.finish()
}
