//! OpenAI Embeddings (`POST /v1/embeddings`).
//!
//! - Request: `model` and `input` (the prompt); nothing is generated, so no output cap.
//! - Usage: `prompt_tokens` (some OpenAI-compatible servers send only `total_tokens`, which
//!   for embeddings is the same number), no output.
//! - Embeddings never stream; a stream in this format is read like a chat stream.

use super::{openai_chat, ApiFormat, ProviderApi, RequestField, Route};
use crate::usage::fields::{read_count, Count, Fields};
use crate::usage::{StreamRead, Usage, UsageError, UsageValue};

/// OpenAI Embeddings.
pub struct OpenAiEmbeddings;

impl ProviderApi for OpenAiEmbeddings {
    fn format(&self) -> ApiFormat {
        ApiFormat::OpenAiEmbeddings
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        (path == "/v1/embeddings").then(|| Route::plain(ApiFormat::OpenAiEmbeddings))
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "model" => RequestField::Model,
            "input" => RequestField::Prompt,
            _ => RequestField::Other,
        }
    }

    fn generates(&self) -> bool {
        false
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, EmbeddingsUsage::meaning)
    }

    fn read_event(&self, st: &mut StreamRead, _name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        openai_chat::read_chunk(self, st, data)
    }

    fn oversized_event(&self, _st: &mut StreamRead, _name: &[u8], tail: &[u8]) -> bool {
        openai_chat::ends_with_null_usage(tail)
    }
}

/// Embeddings' `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EmbeddingsUsage {
    prompt_tokens: Count,
    total_tokens: Count,
}

impl Fields for EmbeddingsUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"prompt_tokens" => &mut self.prompt_tokens,
            b"total_tokens" => &mut self.total_tokens,
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

impl EmbeddingsUsage {
    fn meaning(&self) -> Result<Usage, UsageError> {
        let prompt = match self.prompt_tokens.optional("usage.prompt_tokens")? {
            Some(p) => p,
            None => self
                .total_tokens
                .optional("usage.total_tokens")?
                .ok_or(UsageError::MissingField("usage.prompt_tokens"))?,
        };
        Ok(Usage {
            input_uncached: prompt,
            ..Usage::default()
        })
    }
}
